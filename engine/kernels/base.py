"""The kernel model's shared state and the paths every version shares.

A :class:`Kernel` is one booted machine running one program.  Version
classes (``engine/kernels/v*.py``) subclass it and override only what that
kernel did differently; each names its commit.  Concept mixins live in
modules named after the kernel file they model (memory, mmap, mremap,
mprotect, fork, rmap, huge_memory, vmscan, madvise, gup, lru).
"""

from __future__ import annotations

from collections import Counter

from engine.errors import HarnessError, KernelBug, RefcountUnderflow, UseAfterFree
from engine.mm.events import Event, UndeclaredEvent
from engine.mm.folio import Folio, folio_clear_lru, folio_mapcount, folio_ref_add, folio_ref_mod
from engine.mm.fork import ForkMixin
from engine.mm.gup import GupMixin
from engine.mm.huge_memory import HugeMemoryMixin
from engine.mm.lru import LruMixin
from engine.mm.madvise import MadviseMixin
from engine.mm.memory import MemoryMixin
from engine.mm.mm_types import MmStruct
from engine.mm.mmap import MmapMixin
from engine.mm.mprotect import MprotectMixin
from engine.mm.mremap import MremapMixin
from engine.mm.rmap import RmapMixin
from engine.mm.sched import Gate, KThread, Yields
from engine.mm.state import OracleHooks
from engine.mm.swapfile import SwapDevice
from engine.mm.vmscan import VmscanMixin
from engine.program.format import FolioPut, FolioTryGet

#: The branch name of mainline (Linus's tree) in the version tree.
MAINLINE = "mainline"


class Kernel(MemoryMixin, MmapMixin, MremapMixin, MprotectMixin, ForkMixin, RmapMixin,
             HugeMemoryMixin, VmscanMixin, MadviseMixin, GupMixin, LruMixin):
    """One kernel instance.  Class attributes describe the version's features."""

    VERSION = "base"
    COMMIT = ""
    #: Where the version stands in the version tree (engine/kernels/tree.py):
    #: the engine id it descends from, declared in each version's own class body
    #: (None for the root), and the line it is on, inherited.
    PARENT: str | None = None
    BRANCH: str = MAINLINE
    #: anonymous multi-size THP faults (19eaf44954df, v6.8)
    HAS_MTHP = True
    #: MAP_DROPPABLE / VM_DROPPABLE (9651fcedf7b9, v6.11)
    HAS_DROPPABLE = True
    #: shrink_folio_list splits large lazyfree folios before unmapping (before 735ecdfaf4e8)
    SPLITS_LAZYFREE_IN_RECLAIM = False
    #: PG_anon_exclusive (6c287605fd56, v5.19): a maybe-pinned exclusive anon page is
    #: never unmapped to swap, and a write fault reuses a pinned page instead of copying it
    HAS_ANON_EXCLUSIVE = True
    #: do_wp_page() reuses a large anon folio whose pages fork shared once the
    #: other MMs unmapped it (__wp_can_reuse_large_anon_folio(), CONFIG_MM_ID:
    #: David Hildenbrand's MM-owner tracking, v6.15 [I]); before, a large folio is
    #: reused only through PG_anon_exclusive, which fork cleared, so the write
    #: copies the page (6.12.117 mm/memory.c wp_can_reuse_anon_folio() :3586)
    WP_REUSES_SHARED_LARGE_ANON = False

    #: The thread running now: the runner sets it before every step, and kernel
    #: paths run only inside one.
    current: KThread
    #: The runner attaches its oracle before the first step.
    oracle: OracleHooks

    def __init__(self) -> None:
        self.mms: dict[int, MmStruct] = {}
        self.folios: dict[int, Folio] = {}     # head pfn -> live folio
        #: Folios the refcount oracle must look at again (see Folio.touched), and
        #: the count of folios entered so far (Folio.seq: their order in folios).
        self.folios_touched: dict[Folio, None] = {}
        self.folio_seq = 0
        self.next_pfn = 0x10000
        self.next_anon_vma = 0
        self.swap = SwapDevice()
        #: total_swap_pages: nonzero while a swap area is on.  The model's swap
        #: device never fills; :meth:`swapoff` models a machine with no swap.
        self.total_swap_pages = SwapDevice.PAGES
        self.counters: Counter[str] = Counter()
        self.mthp: Counter[str] = Counter()    # "split_deferred[4]" style keys
        self.cost: Counter[str] = Counter()
        self.deferred_split_queue: dict[Folio, None] = {}
        self.pins: dict[str, list[tuple[Folio, int]]] = {}
        self.spec_refs: dict[str, Folio | None] = {}
        self.current_op: int | None = None
        self.current_step = 0          # the scheduling step running now
        self.events: list[tuple[int, Event]] = []
        self.event_steps: list[int] = []
        self.warnings: list[str] = []
        self.tlb_flush_pending = False
        #: Spinlocks (page-table locks among them) and write-held mmap_locks
        #: released so far: page-table entries (but for the bits the MMU sets) and
        #: VMAs change only under those, so the page-table check need not look
        #: again while this stands still.
        self.unlocks = 0
        self._gates: dict[int, Gate] = {}
        self.lru_init()

    def swapoff(self) -> None:
        """Run without any swap area, as the qemu-booted kernels of the
        conformance runs do: folio_alloc_swap() finds no slot, so swapbacked
        anon folios stay resident (see VmscanMixin.shrink_anon_without_swap).

        Context: before the first operation; the swap device is still empty.
        """
        if self.swap.in_use():
            raise KernelBug(f"swapoff with {self.swap.in_use()} swap slots in use")
        self.total_swap_pages = 0

    # -- what the run reports besides state ---------------------------------
    def event(self, ev: Event, folio: Folio | None = None) -> None:
        """Note that a kernel path took a version-specific branch (rules read these).

        Context: inside an operation's step (the event is the operation's).
        Return: nothing; raises :class:`~engine.mm.events.UndeclaredEvent` (a
        harness defect) for anything but a declared :class:`Event`, so a
        misspelt event cannot pass unnoticed.
        """
        if type(ev) is not Event:
            raise UndeclaredEvent(ev)
        op = self.current_op
        if op is None:
            raise HarnessError(f"event {ev} noted outside any operation")
        self.events.append((op, ev))
        self.event_steps.append(self.current_step)

    def warn(self, message: str) -> None:
        """WARN_ON_ONCE(): reported in the outcome."""
        self.warnings.append(message)

    def mm_gate(self, mm_id: int) -> Gate:
        """What the tasks of mm ``mm_id`` wait on until fork creates it."""
        gate = self._gates.get(mm_id)
        if gate is None:
            gate = self._gates[mm_id] = Gate(f"mm{mm_id} forked")
        return gate

    # -- counters -------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        """count_vm_events(): add @n to exported counter @name."""
        self.counters[name] += n

    def count_mthp(self, stat: str, order: int, n: int = 1) -> None:
        """count_mthp_stat(): add @n to mTHP stat @stat of @order."""
        self.mthp[f"{stat}[{order}]"] += n

    # -- folio allocation and freeing -----------------------------------
    def folio_alloc(self, order: int) -> Folio:
        nr = 1 << order
        pfn = (self.next_pfn + nr - 1) & ~(nr - 1)
        self.next_pfn = pfn + nr
        folio = Folio(pfn, order)
        self.folio_register(folio)
        return folio

    def folio_register(self, folio: Folio) -> None:
        """Enter a new folio (an allocation, a split's tail) in the live folios."""
        self.folio_seq += 1
        folio.seq = self.folio_seq
        folio.touched = self.folios_touched
        self.folios[folio.pfn] = folio
        folio.touch()

    def pfn_folio(self, pfn: int) -> Folio:
        """The live folio containing ``pfn`` (page_folio(pfn_to_page(pfn)))."""
        for mask in (0, 15, 511):
            folio = self.folios.get(pfn & ~mask)
            if folio is not None and folio.pfn <= pfn < folio.pfn + folio.nr:
                return folio
        raise UseAfterFree(f"pfn {pfn:#x} maps no live folio (page table points at freed memory)")

    def free_folio(self, folio: Folio) -> None:
        """Free a folio whose count reached zero (__folio_put / free_unref_folios)."""
        if folio_mapcount(folio):
            raise KernelBug(f"freeing mapped folio pfn {folio.pfn:#x} (mapcount {folio_mapcount(folio)})")
        if folio.on_deferred_list:
            self.folio_unqueue_deferred_split(folio)
        self.lruvec_del_folio(folio)
        folio_clear_lru(folio)
        folio.freed = True
        self.folios.pop(folio.pfn, None)
        self.oracle.page_table_check_free(folio)

    # -- references with a named holder (what the refcount oracle accounts for) --
    def ref_get(self, folio: Folio, why: str, n: int = 1) -> None:
        if folio.freed:
            raise UseAfterFree(f"reference ({why}) on freed folio pfn {folio.pfn:#x}")
        folio_ref_add(folio, n)
        folio.set_holder(why, folio.extra.get(why, 0) + n)

    def ref_put(self, folio: Folio, why: str, n: int = 1) -> None:
        held = folio.extra.get(why, 0)
        if held < n:
            raise RefcountUnderflow(f"dropping {n} {why} reference(s) of folio pfn {folio.pfn:#x} "
                                    f"holding {held}")
        folio.set_holder(why, held - n)
        self.folio_put_refs(folio, n)

    def folio_put_refs(self, folio: Folio, n: int = 1) -> None:
        """folio_put_refs(): drop ``n`` references, freeing the folio at zero."""
        if folio.freed:
            raise UseAfterFree(f"folio_put on freed folio pfn {folio.pfn:#x} (use-after-free)")
        folio_ref_mod(folio, -n)
        if folio.ref < 0:
            raise RefcountUnderflow(f"refcount of folio pfn {folio.pfn:#x} underflows to {folio.ref}")
        if folio.ref == 0:
            self.free_folio(folio)

    def folio_put(self, folio: Folio) -> None:
        self.folio_put_refs(folio, 1)

    # -- the current thread's temporary references ------------------------
    def temp_get(self, folio: Folio) -> None:
        self.ref_get(folio, "temp")
        held = self.current.held
        held[folio] = held.get(folio, 0) + 1

    def temp_put(self, folio: Folio) -> None:
        held = self.current.held
        held[folio] -= 1
        if not held[folio]:
            del held[folio]
        self.ref_put(folio, "temp")

    # -- lockless pfn walkers (the program's folio_try_get / folio_put) ------
    def op_folio_try_get(self, op: FolioTryGet) -> Yields[int]:
        """A speculative folio_try_get() of whatever (mm, addr) maps, as a pfn
        walker (compaction, page_idle) would do.  Return: 0, or -ENOENT."""
        mm = self.mms.get(op.mm)
        hit = self.folio_at(mm, op.addr) if mm is not None and mm.alive else None
        if hit is None or not self.speculative_get(hit[0]):
            self.spec_refs[op.ref] = None
            return -2
        self.spec_refs[op.ref] = hit[0]
        return 0
        yield  # pragma: no cover - a one-step operation

    def op_folio_put(self, op: FolioPut) -> Yields[int]:
        folio = self.spec_refs.pop(op.ref, None)
        if folio is None:
            return -22
        self.speculative_put(folio)
        return 0
        yield  # pragma: no cover
