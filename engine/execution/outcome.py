"""The outcome of one run, and the kernel-visible state it is compared on.

The state is flattened into ``field -> value`` so that two outcomes compare
field by field.  Folios are named by first appearance (``f0``, ``f1``, ...)
walking mms and addresses in order, not by pfn: two versions that allocate
differently but map the same things look the same.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from engine.execution.oracle import Verdict
from engine.mm.events import Event
from engine.mm.folio import FOLIO_FLAGS, Folio
from engine.mm.memory import ZERO_PFN
from engine.mm.pgtable import (
    PAGE_SHIFT,
    PMD_SHIFT,
    is_swap_pte,
    present_slots,
    pte_dirty,
    pte_pfn,
    pte_present,
    pte_write,
    pte_young,
)
from engine.mm.sched import YieldPoint

#: A place of a run: (operation, kind of yield point, its occurrence in the operation).
Place = tuple[int | None, YieldPoint, int]

#: Exported counters every outcome reports, present or not.
COUNTERS = ("PGLAZYFREE", "PGLAZYFREED", "nr_unmap_fail", "nr_lazyfree_fail", "nr_reclaimed",
            "THP_SPLIT_PMD", "THP_SPLIT_PAGE", "THP_SPLIT_PAGE_FAILED", "THP_DEFERRED_SPLIT_PAGE",
            "PSWPOUT", "PSWPIN")
MTHP_ORDERS = (4, 9)


@dataclass
class Crash:
    """Where a run stopped: an oracle violation or an exception in the engine."""

    kind: Verdict
    field: str
    message: str
    op_index: int | None
    thread: str | None
    step: int
    function: str | None = None
    # dataclasses.field: the class's own ``field`` shadows the name here
    stack: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "field": self.field, "message": self.message,
                "op_index": self.op_index, "thread": self.thread, "step": self.step,
                "function": self.function, "stack": self.stack}


@dataclass(slots=True)
class TraceEntry:
    """The state of a traced run after one operation completed: where the
    differential looks for the operation after which two runs parted."""

    #: The operation that completed.
    op: int
    #: The kernel-visible state then (:func:`observe`).
    state: dict[str, Any]
    #: Every operation's result then (None: not completed).
    results: list[Any]
    #: The operations other threads had begun and not completed then.
    inflight: list[int]


@dataclass
class Outcome:
    """What one engine made of one program."""

    engine: str
    verdict: Verdict
    results: list[Any]
    state: dict[str, Any]
    cost: dict[str, int]
    steps: int
    crash: Crash | None = None
    warnings: list[str] = field(default_factory=list)
    #: (operation, event) as the kernel noted them; an Event is its name as a str
    events: list[tuple[int, Event]] = field(default_factory=list)
    trace: list[TraceEntry] | None = None     # state after each op, when traced
    #: The scheduling step each event happened in, and the step each operation
    #: finished in (None: it never did).  Where a race could cut in, for
    #: :mod:`fuzz.hints`; neither is behaviour, so neither is compared or stored.
    event_steps: list[int] = field(default_factory=list)
    op_ends: list[int | None] = field(default_factory=list)
    #: The place each step ended at (what a schedule names; see engine.program.format.Preemption).
    places: list[Place] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "verdict": self.verdict.value, "results": self.results,
                "state": self.state, "cost": self.cost, "steps": self.steps,
                "crash": self.crash.to_dict() if self.crash else None,
                "warnings": self.warnings,
                "events": [[i, str(ev)] for i, ev in self.events]}

    def comparable(self) -> dict[str, Any]:
        """The fields differential runs compare: behaviour, not cost."""
        out = dict(self.state)
        out["verdict"] = self.verdict.value
        for i, r in enumerate(self.results):
            out[f"result[{i}]"] = r
        if self.crash is not None:
            out["crash.field"] = self.crash.field
            out["crash.function"] = self.crash.function
        out["warnings"] = tuple(self.warnings)
        return out


def _flags(folio: Folio) -> str:
    """The folio's flags; ``lru`` means on an LRU list.  A folio queued for the
    lazyfree move keeps its list whether or not its PG_lru bit was cleared at
    queue time (33dfe9204f29, v6.11, reverted in 2025): that bit alone would
    part every MADV_FREE of small folios between 6.12.117 and v6.14, and the
    first parting hides what comes after it.  Where the bit matters - reclaim
    isolating a queued folio - the runs part there."""
    return ",".join(n for n in FOLIO_FLAGS
                    if (folio.lru_list is not None if n == "lru" else getattr(folio, n))) or "-"


def observe(k) -> dict[str, Any]:
    """Flatten the kernel-visible state of kernel ``k``."""
    names: dict[int, str] = {}

    def name(folio: Folio) -> str:
        n = names.get(id(folio))
        if n is None:
            n = names[id(folio)] = f"f{len(names)}"
        return n

    st: dict[str, Any] = {}
    for mm_id in sorted(k.mms):
        mm = k.mms[mm_id]
        if not mm.alive:
            continue
        p = f"mm{mm_id}"
        st[f"{p}.vmas"] = tuple(f"{v.vm_start:#x}-{v.vm_end:#x}:{'w' if v.writable else 'r'}"
                                for v in mm.vmas)
        st[f"{p}.MM_ANONPAGES"] = mm.rss["MM_ANONPAGES"]
        st[f"{p}.MM_SWAPENTS"] = mm.rss["MM_SWAPENTS"]
        for pmd_idx in sorted(set(mm.pte_tables) | set(mm.pmd_huge)):
            word = mm.pmd_huge.get(pmd_idx)
            if word is not None:
                folio = k.pfn_folio(pte_pfn(word))
                st[f"{p}.pmd[{pmd_idx << PMD_SHIFT:#x}]"] = (
                    f"{name(folio)}:{'d' if pte_dirty(word) else ''}{'y' if pte_young(word) else ''}"
                    f"{'w' if pte_write(word) else ''}")
                continue
            e = mm.pte_tables[pmd_idx].entries
            base = pmd_idx << PMD_SHIFT
            for i in present_slots(e):
                w = e[i]
                key = f"{p}.pte[{base + (i << PAGE_SHIFT):#x}]"
                if pte_present(w):
                    pfn = pte_pfn(w)
                    if pfn == ZERO_PFN:
                        st[key] = "zero"
                        continue
                    folio = k.pfn_folio(pfn)
                    st[key] = (f"{name(folio)}+{pfn - folio.pfn}:{'d' if pte_dirty(w) else ''}"
                               f"{'y' if pte_young(w) else ''}{'w' if pte_write(w) else ''}")
                elif is_swap_pte(w):
                    st[key] = "swap"
    # folios nothing maps: in LRU order, then the rest by pfn
    rest = [f for lst in k.lruvec.values() for f in lst] + sorted(k.folios.values(), key=lambda f: f.pfn)
    for folio in rest:
        name(folio)
    by_name = {}
    for folio in list(k.folios.values()):
        by_name[name(folio)] = folio
    for n in sorted(by_name, key=lambda s: int(s[1:])):
        folio = by_name[n]
        p = f"folio.{n}"
        st[f"{p}.order"] = folio.order
        st[f"{p}.flags"] = _flags(folio)
        st[f"{p}.ref"] = folio.ref
        st[f"{p}.mapcount"] = sum(folio.mapcount) + folio.entire_mapcount
        st[f"{p}.pincount"] = folio.pincount
        st[f"{p}.lru"] = folio.lru_list.name if folio.lru_list is not None else None
        st[f"{p}.deferred"] = folio.on_deferred_list
    st["deferred_split_queue"] = tuple(name(f) for f in k.deferred_split_queue)
    for c in COUNTERS:
        st[f"counter.{c}"] = k.counters.get(c, 0)
    for o in MTHP_ORDERS:
        for stat in ("split_deferred", "nr_anon_partially_mapped", "split", "split_failed"):
            st[f"mthp.{stat}[{o}]"] = k.mthp.get(f"{stat}[{o}]", 0)
    st["swap.slots"] = k.swap.in_use()
    return st
