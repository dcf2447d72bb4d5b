"""The outcome of one run, and the kernel-visible state it is compared on.

The state is flattened into ``field -> value`` so that two outcomes compare
field by field.  Folios are named by first appearance (``f0``, ``f1``, ...)
walking mms and addresses in order, not by pfn: two versions that allocate
differently but map the same things look the same.
"""

from __future__ import annotations

import dataclasses
import re
from array import array
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from engine.errors import UseAfterFree
from engine.execution.oracle import Verdict
from engine.mm.events import Event
from engine.mm.folio import FOLIO_FLAGS, Folio
from engine.mm.memory import ZERO_PFN
from engine.mm.pgtable import (
    PAGE_SHIFT,
    PMD_SHIFT,
    PTE_BATCH_IGNORE,
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


class TraceEntry:
    """The state of a traced run after one operation completed: where the
    differential looks for the operation after which two runs parted."""

    __slots__ = ("op", "_state", "results", "inflight")

    def __init__(self, op: int, state: Snapshot | dict[str, Any], results: list[Any],
                 inflight: list[int]) -> None:
        #: The operation that completed.
        self.op = op
        self._state = state
        #: Every operation's result then (None: not completed).
        self.results = results
        #: The operations other threads had begun and not completed then.
        self.inflight = inflight

    @property
    def state(self) -> dict[str, Any]:
        """The kernel-visible state then (:func:`observe`), flattened when first read."""
        st = self._state
        if isinstance(st, Snapshot):
            st = self._state = st.render()
        return st

    def same_state(self, other: TraceEntry) -> bool:
        """Whether :attr:`state` is the same in both entries (see :func:`_equal_snapshots`)."""
        return self.same_snapshot(other) or self.state == other.state

    def same_snapshot(self, other: TraceEntry) -> bool:
        """Whether both entries copied the same state (then :attr:`state` is the
        same; when not, it may still be: see :func:`_equal_snapshots`)."""
        return _equal_snapshots(self._state, other._state)

    def values(self, fields: Fields) -> dict[str, Any]:
        """:attr:`state`'s items of @fields (a field it has not is left out),
        flattening only those when not flattened yet (:meth:`Snapshot.render`)."""
        st = self._state
        if isinstance(st, Snapshot):
            return st.render(only=fields)
        return {f: st[f] for f in fields.names if f in st}


@dataclass
class Outcome:
    """What one engine made of one program."""

    engine: str
    verdict: Verdict
    results: list[Any]
    #: The state the run ended in: flattened (:func:`observe`), or its
    #: :class:`Snapshot`, flattened when :attr:`state` is first read (a run
    #: whose outcome nobody compares or stores is never flattened).
    final: dict[str, Any] | Snapshot
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

    @property
    def state(self) -> dict[str, Any]:
        """The state the run ended in, flattened (see :func:`observe`)."""
        st = self.final
        if isinstance(st, Snapshot):
            st = self.final = st.render()
        return st

    def same_state(self, other: Outcome) -> bool:
        """Whether both runs ended in the same :attr:`state` (see :func:`_equal_snapshots`)."""
        return _equal_snapshots(self.final, other.final) or self.state == other.state

    def __getstate__(self) -> dict[str, Any]:
        # pickled flattened: a snapshot holds the kernel's folios
        return {**self.__dict__, "final": self.state}

    def to_dict(self) -> dict[str, Any]:
        from engine.kernels import plugins  # here: the kernels import this module
        return {"engine": self.engine, "verdict": self.verdict.value, "results": self.results,
                "state": self.state, "cost": self.cost, "steps": self.steps,
                "crash": self.crash.to_dict() if self.crash else None,
                "warnings": self.warnings,
                "events": [[i, str(ev)] for i, ev in self.events],
                # A plugin engine's spec and source hash: a finding never replays on
                # changed code under the same name (engine/kernels/plugins.py).
                **({"plugin": p} if (p := plugins.identity(self.engine)) else {})}

    def as_engine(self, engine: str) -> Outcome:
        """This outcome, reported as @engine's: for a run that is, step for step,
        also that engine's (:mod:`engine.diff.impact`).  Its containers are copies,
        so that neither outcome's reader can change the other."""
        return dataclasses.replace(
            self, engine=engine, results=list(self.results),
            final=self.final if isinstance(self.final, Snapshot) else dict(self.final),
            cost=dict(self.cost), warnings=list(self.warnings), events=list(self.events),
            trace=None if self.trace is None else list(self.trace),
            event_steps=list(self.event_steps), op_ends=list(self.op_ends),
            places=list(self.places))

    def comparable(self, state: bool = True) -> dict[str, Any]:
        """The fields differential runs compare: behaviour, not cost (without
        the :attr:`state`'s unless @state)."""
        out = dict(self.state) if state else {}
        out["verdict"] = self.verdict.value
        for i, r in enumerate(self.results):
            out[f"result[{i}]"] = r
        if self.crash is not None:
            out["crash.field"] = self.crash.field
            out["crash.function"] = self.crash.function
        out["warnings"] = tuple(self.warnings)
        return out


#: What a snapshot keeps of a folio, read in one call: identity, place, the
#: fields outcomes print and its flags in FOLIO_FLAGS order (``lru`` read as
#: "on an LRU list", see :func:`_flags`).
_FOLIO_FLAG_ATTRS = tuple("lru_list" if n == "lru" else n for n in FOLIO_FLAGS)
_folio_fields = attrgetter("pfn", "nr", "order", "ref", "entire_mapcount", "pincount",
                           "lru_list", "on_deferred_list", *_FOLIO_FLAG_ATTRS)


def _flags(flags: tuple[Any, ...]) -> str:
    """A folio's flags, as read by :data:`_folio_fields`; ``lru`` means on an LRU
    list.  A folio queued for the lazyfree move keeps its list whether or not
    its PG_lru bit was cleared at queue time (33dfe9204f29, v6.11, reverted in
    2025): that bit alone would part every MADV_FREE of small folios between
    6.12.117 and v6.14, and the first parting hides what comes after it.
    Where the bit matters - reclaim isolating a queued folio - the runs part
    there."""
    return ",".join(n for n, v in zip(FOLIO_FLAGS, flags, strict=True)
                    if (v is not None if n == "lru" else v)) or "-"


@dataclass(slots=True)
class Snapshot:
    """The kernel-visible state of a kernel at one moment, copied, not yet
    flattened: :meth:`render` flattens it into what :func:`observe` returns.

    A traced run takes one after every operation; the differential reads them
    only when the runs end differently, so the copy is cheap (table words as
    bytes, a folio's fields as a tuple) and the flattening waits.  Folios are
    held by reference for their identity: the names outcomes use are given
    when rendering.
    """

    #: Per live mm in id order: (id, VMAs as (start, end, writable), MM_ANONPAGES,
    #: MM_SWAPENTS, [(pmd index, huge PMD word or None, PTE table bytes or None)]).
    mms: list[tuple[int, tuple[tuple[int, int, bool], ...], int, int,
                    list[tuple[int, int | None, bytes | None]]]]
    #: The live folios in the kernel's order: (the folio, its fields by _folio_fields, mapcount).
    folios: list[tuple[Folio, tuple[Any, ...], int]]
    lru: list[Folio]
    deferred: tuple[Folio, ...]
    counters: tuple[int, ...]
    mthp: tuple[int, ...]
    swap_slots: int

    def key(self) -> tuple:
        """What :meth:`render` reads, with each folio named by its place in
        :attr:`folios` instead of its identity: two snapshots with equal keys
        render equal (the names are given in the same order), so snapshots of
        two runs compare without flattening.  A folio on a list but not live
        keys by identity (equal only to itself: such states are rendered)."""
        place = {id(f): i for i, (f, _, _) in enumerate(self.folios)}
        return (self.mms, [r[1:] for r in self.folios],
                [place.get(id(f), f) for f in self.lru],
                [place.get(id(f), f) for f in self.deferred],
                self.counters, self.mthp, self.swap_slots)

    def render(self, only: Fields | None = None) -> dict[str, Any]:
        """Flatten into ``field -> value`` (see :func:`observe`), or only the
        fields of @only (those the state has); a state that cannot be flattened
        (an entry mapping no live folio) renders as ``{"unobservable": why}``,
        as a run's final state does, whatever @only asks."""
        try:
            return _render(self, only)
        except Exception as exc:  # noqa: BLE001 - a state too broken to print is still an outcome
            return {"unobservable": f"{type(exc).__name__}: {exc}"}


def _equal_snapshots(a: Any, b: Any) -> bool:
    """Whether @a and @b are snapshots that copied the same words and fields:
    then they render equal, and neither need be flattened to know it."""
    return isinstance(a, Snapshot) and isinstance(b, Snapshot) and a.key() == b.key()


def snapshot(k) -> Snapshot:
    """Copy the kernel-visible state of kernel ``k`` (see :class:`Snapshot`)."""
    mms = []
    for mm_id in sorted(k.mms):
        mm = k.mms[mm_id]
        if not mm.alive:
            continue
        huge, tables = mm.pmd_huge, mm.pte_tables
        pmds = [(i, huge.get(i), None if i in huge else tables[i].entries.tobytes())
                for i in sorted(set(tables) | set(huge))]
        mms.append((mm_id, tuple((v.vm_start, v.vm_end, v.writable) for v in mm.vmas),
                    mm.rss["MM_ANONPAGES"], mm.rss["MM_SWAPENTS"], pmds))
    folios = [(f, _folio_fields(f), sum(f.mapcount)) for f in k.folios.values()]
    counters, mthp = k.counters, k.mthp
    return Snapshot(mms, folios, [f for lst in k.lruvec.values() for f in lst],
                    tuple(k.deferred_split_queue), tuple(counters.get(c, 0) for c in COUNTERS),
                    tuple(mthp.get(key, 0) for key in _MTHP_KEYS), k.swap.in_use())


#: The mTHP stats outcomes report, in the order they print.
_MTHP_KEYS = tuple(f"{stat}[{o}]" for o in MTHP_ORDERS
                   for stat in ("split_deferred", "nr_anon_partially_mapped", "split",
                                "split_failed"))


#: An entry's (a PTE's or a huge PMD's) dirty, young and write bits as outcomes
#: print them ("dyw", in that order).
_PTE_FLAGS = {bits: f"{'d' if pte_dirty(bits) else ''}{'y' if pte_young(bits) else ''}"
                    f"{'w' if pte_write(bits) else ''}"
              for bits in range(PTE_BATCH_IGNORE + 1) if bits & ~PTE_BATCH_IGNORE == 0}


def observe(k) -> dict[str, Any]:
    """Flatten the kernel-visible state of kernel ``k``.  Raises what
    rendering raises (a page table mapping freed memory)."""
    return _render(snapshot(k))


#: A page-table entry's field: ``mm0.pte[0x200000]``, ``mm1.pmd[0x40000000]``.
_ENTRY_FIELD = re.compile(r"^mm(\d+)\.(pte|pmd)\[(0x[0-9a-f]+)\]$")
#: The entries of a table a partial render prints when it names none of them.
_NO_ADDRESSES: frozenset[int] = frozenset()


class Fields:
    """Fields of a state to flatten (:meth:`Snapshot.render`'s @only), read once:
    the page-table entries they name and the folios."""

    __slots__ = ("names", "entries", "folios")

    def __init__(self, names: AbstractSet[str]) -> None:
        self.names = names
        #: (mm id, "pte" or "pmd") -> the entries' addresses
        self.entries: dict[tuple[int, str], set[int]] = {}
        for f in names:
            m = _ENTRY_FIELD.match(f)
            if m is not None:
                self.entries.setdefault((int(m[1]), m[2]), set()).add(int(m[3], 16))
        #: the folios' names (``f3``)
        self.folios = {f.split(".", 2)[1] for f in names if f.startswith("folio.")}


def _render(snap: Snapshot, only: Fields | None = None) -> dict[str, Any]:
    names: dict[int, str] = {}

    def name(folio: Folio) -> str:
        n = names.get(id(folio))
        if n is None:
            n = names[id(folio)] = f"f{len(names)}"
        return n

    # head pfn -> (folio, its number of pages then): a split since changed the object's
    by_pfn = {fields[0]: (folio, fields[1]) for folio, fields, _ in snap.folios}

    def pfn_folio(pfn: int) -> tuple[Folio, int]:
        """Kernel.pfn_folio() over the folios live then.  Return: (folio, its head pfn)."""
        for mask in (0, 15, 511):
            head = pfn & ~mask
            hit = by_pfn.get(head)
            if hit is not None and pfn < head + hit[1]:
                return hit[0], head
        raise UseAfterFree(f"pfn {pfn:#x} maps no live folio (page table points at freed memory)")

    # Which entries and folios to print: all, or those @only names.  Every entry
    # is read all the same: a folio's name is its place in the order of first
    # mention, and an entry mapping freed memory makes the state unobservable.
    entries = None if only is None else only.entries
    folios = None if only is None else only.folios
    st: dict[str, Any] = {}
    for mm_id, vmas, anon, swapents, pmds in snap.mms:
        p = f"mm{mm_id}"
        st[f"{p}.vmas"] = tuple(f"{start:#x}-{end:#x}:{'w' if w else 'r'}" for start, end, w in vmas)
        st[f"{p}.MM_ANONPAGES"] = anon
        st[f"{p}.MM_SWAPENTS"] = swapents
        want_pmd = None if entries is None else entries.get((mm_id, "pmd"), _NO_ADDRESSES)
        want_pte = None if entries is None else entries.get((mm_id, "pte"), _NO_ADDRESSES)
        last: Folio | None = None           # the folio the entry before mapped, and its name
        last_name = ""
        for pmd_idx, word, raw in pmds:
            if word is not None:
                folio, _ = pfn_folio(pte_pfn(word))
                n = name(folio)
                addr = pmd_idx << PMD_SHIFT
                if want_pmd is None or addr in want_pmd:
                    st[f"{p}.pmd[{addr:#x}]"] = f"{n}:{_PTE_FLAGS[word & PTE_BATCH_IGNORE]}"
                continue
            assert raw is not None
            e = array("Q", raw)
            base = pmd_idx << PMD_SHIFT
            for i in present_slots(e):
                w = e[i]
                addr = base + (i << PAGE_SHIFT)
                if pte_present(w):
                    pfn = pte_pfn(w)
                    if pfn == ZERO_PFN:
                        value = "zero"
                    else:
                        folio, head = pfn_folio(pfn)
                        if folio is not last:      # a large folio's entries name it once
                            last, last_name = folio, name(folio)
                        if want_pte is not None and addr not in want_pte:
                            continue
                        value = f"{last_name}+{pfn - head}:{_PTE_FLAGS[w & PTE_BATCH_IGNORE]}"
                elif is_swap_pte(w):
                    value = "swap"
                else:
                    continue
                if want_pte is None or addr in want_pte:
                    st[f"{p}.pte[{addr:#x}]"] = value
    # Folios nothing maps are named after all mapped ones: in LRU order, then the
    # rest by pfn.  No field of @only but a folio's and the queue's reads them.
    if only is None or folios or "deferred_split_queue" in only.names:
        for folio in snap.lru:
            name(folio)
        for folio, _, _ in sorted(snap.folios, key=lambda r: r[1][0]):
            name(folio)
        by_name = {name(folio): (fields, mapcount) for folio, fields, mapcount in snap.folios}
        for n in sorted(by_name, key=lambda s: int(s[1:])):
            if folios is not None and n not in folios:
                continue
            (_, _, order, ref, entire, pincount, lru_list, deferred, *flags), mapcount = by_name[n]
            p = f"folio.{n}"
            st[f"{p}.order"] = order
            st[f"{p}.flags"] = _flags(tuple(flags))
            st[f"{p}.ref"] = ref
            st[f"{p}.mapcount"] = mapcount + entire
            st[f"{p}.pincount"] = pincount
            st[f"{p}.lru"] = lru_list.name if lru_list is not None else None
            st[f"{p}.deferred"] = deferred
        st["deferred_split_queue"] = tuple(name(f) for f in snap.deferred)
    for c, v in zip(COUNTERS, snap.counters, strict=True):
        st[f"counter.{c}"] = v
    for key, v in zip(_MTHP_KEYS, snap.mthp, strict=True):
        st[f"mthp.{key}"] = v
    st["swap.slots"] = snap.swap_slots
    return st if only is None else {f: st[f] for f in only.names if f in st}
