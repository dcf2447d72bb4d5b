"""Events: the version-specific branches a kernel path notes, declared once.

A kernel path that takes a branch some version does differently notes it with
``Kernel.event(EVENT)``; the intended-divergence rules (:mod:`engine.diff.rules`),
coverage features and fuzzing hints read what a run noted.  Every event is an
:class:`Event` declared here, or in the version module that alone emits it
(``engine/kernels/v6_15.py``), with a one-line meaning: ``Kernel.event()``
refuses anything else, and a rule naming an event that nobody declared fails
when its module is imported, not silently at match time.

An :class:`Event` is a ``str``: it equals, hashes and serialises as its name,
so outcomes, stored findings and signatures hold the same strings they held
when events were bare strings, and noting one costs what appending a string
did.  A version outside the tree declares its own the same way::

    MY_BRANCH = Event("my_branch", "what that kernel did here")

Parametrised events are made by a constructor that validates its argument
and declares each value once: :func:`folio_batch_full` (the per-CPU batch size
of the version) and :func:`place_event` (a yield-point kind the differential
finds in one run only).
"""

from __future__ import annotations

from typing import Any

from engine.errors import UndeclaredEvent
from engine.mm.sched import KERNEL_YIELD_POINTS, YieldPoint

#: Every declared event by name, in declaration order.
EVENTS: dict[str, Event] = {}


class Event(str):
    """One declared event: its name (the string outcomes carry) and its meaning.

    Constructing an Event declares it.  Declaring a name again returns the
    event already declared if the meaning is the same (a module imported
    twice), and raises :class:`UndeclaredEvent` otherwise: two meanings for
    one name would make rules read one kernel's branch as another's.
    """

    meaning: str

    def __new__(cls, name: str, meaning: str) -> Event:
        known = EVENTS.get(name)
        if known is not None:
            if known.meaning != meaning:
                raise UndeclaredEvent(name, f"is already declared as {known.meaning!r}")
            return known
        if not name or not meaning:
            raise UndeclaredEvent(name, "needs a name and a one-line meaning")
        ev = super().__new__(cls, name)
        ev.meaning = meaning
        EVENTS[name] = ev
        return ev

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Unpickled (a worker's outcome) as the declared constant itself.
        return (event, (str(self),))


def event(name: str) -> Event:
    """The declared event named @name.  Return: the Event; raises
    :class:`UndeclaredEvent` for a name nobody declared."""
    ev = EVENTS.get(name)
    if ev is None:
        raise UndeclaredEvent(name)
    return ev


def folio_batch_full(size: int) -> Event:
    """The event of a per-CPU folio batch (lru_add, lazyfree) moved because it
    holds @size folios: PAGEVEC_SIZE, 15 before 9cecde80aae0 (v6.9), 31 since.

    Return: ``folio_batch_full_<size>``; raises :class:`UndeclaredEvent` for a
    size that is not a positive int."""
    if type(size) is not int or size < 1:
        raise UndeclaredEvent(f"folio_batch_full_{size}", "needs a positive int batch size")
    return Event(f"folio_batch_full_{size}",
                 f"a per-CPU folio batch reached {size} folios and was moved to the LRU")


def place_event(kind: YieldPoint) -> Event:
    """The event the differential gives a run at a place of kind @kind that the
    other run never reached (engine/diff/differential.py).

    Return: ``place:<kind>``; raises :class:`UndeclaredEvent` for anything but
    a kernel yield point (the scheduler's own places are no window)."""
    if not isinstance(kind, YieldPoint) or kind not in KERNEL_YIELD_POINTS:
        raise UndeclaredEvent(f"place:{kind}", "needs a kernel YieldPoint")
    return Event(f"place:{kind.value}",
                 f"only this run switched threads at a {kind.value} place of the operation")


# -- mm/rmap.c: try_to_unmap_one() ---------------------------------------------------
TTU_LAZYFREE_DISCARD = Event(
    "ttu_lazyfree_discard", "try_to_unmap_one() discarded a clean lazyfree PTE (batch)")
TTU_LAZYFREE_ABORT_DIRTY = Event(
    "ttu_lazyfree_abort_dirty",
    "try_to_unmap_one() restored a lazyfree PTE of a dirty folio and made it swapbacked")
TTU_LAZYFREE_ABORT_REF = Event(
    "ttu_lazyfree_abort_ref",
    "try_to_unmap_one() restored a lazyfree PTE for an extra reference, the folio left lazyfree")
TTU_LAZYFREE_ABORT_REF_SWAPBACKED = Event(
    "ttu_lazyfree_abort_ref_swapbacked",
    "try_to_unmap_one() restored a clean lazyfree PTE for an extra reference and made the "
    "folio swapbacked (before faeb2831b517)")
#: Named apart from the TTU_SPLIT_HUGE_PMD flag that asks for the split.
TTU_PMD_SPLIT = Event(
    "ttu_split_huge_pmd", "try_to_unmap_one() split a PMD mapping (TTU_SPLIT_HUGE_PMD)")
TTU_PINNED_ANON_STAYS_MAPPED = Event(
    "ttu_pinned_anon_stays_mapped",
    "a maybe-pinned exclusive anon page stayed mapped instead of going to swap "
    "(PG_anon_exclusive, 6c287605fd56)")

# -- mm/memory.c, mm/mmap.c -----------------------------------------------------------
ALLOC_MTHP = Event("alloc_mthp", "an anonymous fault allocated a multi-size THP")
WP_REUSE_PINNED = Event(
    "wp_reuse_pinned", "a write fault reused a pinned exclusive page instead of copying it")
MMAP_DROPPABLE = Event("mmap_droppable", "mmap() accepted MAP_DROPPABLE")
WP_COPY_SHARED_LARGE = Event(
    "wp_copy_shared_large",
    "a write fault copied a page of a large folio that fork had shared and only this MM "
    "maps now (no PG_anon_exclusive; before v6.15)")
WP_REUSE_SHARED_LARGE = Event(
    "wp_reuse_shared_large",
    "a write fault reused a large folio that fork had shared and only this MM maps now "
    "(CONFIG_MM_ID, v6.15)")

# -- mm/huge_memory.c -------------------------------------------------------------------
DEFERRED_SPLIT_PARTIALLY_MAPPED = Event(
    "deferred_split_partially_mapped",
    "a partially mapped large folio was queued for deferred split (handed to the shrinker)")
DEFERRED_SPLIT_UNDERUSED = Event(
    "deferred_split_underused", "a new PMD THP was queued for deferred split as maybe underused")
DEFERRED_SPLIT_REF = Event(
    "deferred_split_ref", "deferred_split_scan() took its speculative reference on a folio")
SPLIT_HUGE_PMD = Event("split_huge_pmd", "a PMD mapping was remapped as PTEs")
DISCARD_LAZYFREE_PMD = Event(
    "discard_lazyfree_pmd", "a clean lazyfree PMD-mapped THP was discarded under the PMD lock")
SPLIT_FOLIO = Event("split_folio", "a large folio was split into small folios")
SPLIT_FAILED = Event("split_failed", "a folio split failed (-EAGAIN)")
SPLIT_REMAP_ZEROPAGE = Event(
    "split_remap_zeropage", "a split mapped a zero-filled page to the shared zero page")

# -- mm/vmscan.c --------------------------------------------------------------------------
RECLAIM_SPLIT_LAZYFREE = Event(
    "reclaim_split_lazyfree",
    "shrink_folio_list() split a lazyfree THP before unmapping it (before 820c4e2e6f51)")
RECLAIM_SPLIT_NO_SWAP = Event(
    "reclaim_split_no_swap", "shrink_folio_list() split a large swapbacked folio with no swap on")
LAZYFREE_FREED = Event("lazyfree_freed", "shrink_folio_list() freed a lazyfree folio")

# -- mm/swap.c (LRU batches) -----------------------------------------------------------
LAZYFREE_REQUEUE = Event(
    "lazyfree_requeue",
    "MADV_FREE queued a folio already waiting in a lazyfree batch (before 33dfe9204f29)")
ISOLATE_QUEUED_LAZYFREE = Event(
    "isolate_queued_lazyfree",
    "reclaim isolated a folio waiting in a lazyfree batch (before 33dfe9204f29)")

# -- mm/madvise.c ---------------------------------------------------------------------------
MADVISE_SKIP_SHARED = Event(
    "madvise_skip_shared", "a madvise walker left a large folio alone as mapped shared")
