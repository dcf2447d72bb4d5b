"""The places where a thread may stop and another run: what a schedule names.

A preemption of a program (:class:`engine.program.format.Preemption`) names
a place by its kind and occurrence; the kernel paths of the model
(engine/mm/) yield these kinds, and the scheduler (engine/mm/sched.py,
engine/execution/runner.py) switches threads there.  They sit with the
program format because the format is the lowest layer: the model reads
programs, programs never read the model.
"""

from __future__ import annotations

import enum


class YieldPoint(str, enum.Enum):
    """The kind of place where a thread stopped and another may run.

    The values are what programs spell in their schedule.  A kernel path
    yields one of the kinds from ``BETWEEN_PAGES`` on;
    ``START``, ``OP_END`` and ``WAIT`` are the scheduler's own places.
    """

    #: before the first segment of the program (no operation)
    START = "start"
    #: the operation finished; its thread has not begun its next one
    OP_END = "op_end"
    #: the thread blocked: on a lock, a folio lock, or a gate (a fork, a pin, a DMA)
    WAIT = "wait"
    #: a CPU access, a GUP, a DMA or an unpin between two pages
    BETWEEN_PAGES = "between_pages"
    #: shrink_folio_list() or a madvise page-table walk between two folios
    BETWEEN_FOLIOS = "between_folios"
    #: gup-fast read the PTE (PMD) locklessly and has not grabbed the folio yet
    GUP_FAST_READ = "gup_fast_read"
    #: gup-fast grabbed the folio (a full barrier) and has not rechecked the PTE
    GUP_FAST_GRABBED = "gup_fast_grabbed"
    #: try_to_unmap_one() cleared the PTE(s) and has not read the refcount
    PTE_CLEARED = "pte_cleared"
    #: try_to_unmap_one() unmapped a PTE (batch) and more of the folio stays mapped
    BETWEEN_PTES = "between_ptes"
    #: deferred_split_scan() holds its speculative reference on a folio
    SHRINKER_REF_HELD = "shrinker_ref_held"
    #: shrink_folio_list() unmapped the folio and has not frozen its refcount
    BEFORE_FREEZE = "before_freeze"
    #: shrink_inactive_list() isolated its folios and has not shrunk them
    ISOLATED = "isolated"
    #: __discard_anon_folio_pmd_locked() tested the PMD's and the folio's dirty
    #: bits and has not cleared the PMD (a store may still dirty it: the MMU
    #: needs no lock)
    PMD_CHECKED = "pmd_checked"
    #: __discard_anon_folio_pmd_locked() cleared the PMD and has not read the
    #: refcount (the barrier that pairs with GUP-fast)
    PMD_CLEARED = "pmd_cleared"


#: The yield points a kernel path may yield (what a schedule can name inside an operation).
KERNEL_YIELD_POINTS = tuple(y for y in YieldPoint
                            if y not in (YieldPoint.START, YieldPoint.OP_END, YieldPoint.WAIT))
