"""The C twins of v6.14, v6.15 and v6.16: the lazyfree PTE leg of
try_to_unmap_one() and __discard_anon_folio_pmd_locked() run in engine/native/cpath.c.

Each twin subclasses its Python version and overrides only ``ttu_clear``
(pick the batch, clear it), ``ttu_lazyfree`` (discard or restore, after the
yield), ``pmd_discard_check`` and ``pmd_discard_decide`` (the tests before
and after the PMD's clear); the walk, the yields, the PMD clear, the rmap
and reference updates and every folio flag stay in the shared Python code.
The C code works on the page tables' own ``array('Q')`` buffers.  A run on a
twin must therefore equal a run on its Python version, field for field.
"""

from __future__ import annotations

import ctypes

from engine.errors import HarnessError
from engine.kernels.v6_14 import V6_14
from engine.kernels.v6_15 import PMD_LAZYFREE_ABORT_DIRTY, PMD_LAZYFREE_ABORT_REF, V6_15
from engine.kernels.v6_16 import V6_16
from engine.mm.events import (
    TTU_LAZYFREE_ABORT_DIRTY,
    TTU_LAZYFREE_ABORT_REF,
    TTU_LAZYFREE_ABORT_REF_SWAPBACKED,
    TTU_LAZYFREE_DISCARD,
)
from engine.mm.flags import TTU, VM_DROPPABLE
from engine.mm.folio import (
    Folio,
    folio_mapcount,
    folio_set_dirty,
    folio_set_swapbacked,
    folio_test_anon,
    folio_test_dirty,
    folio_test_swapbacked,
)
from engine.mm.mm_types import MM_ANONPAGES, VmArea
from engine.mm.pgtable import PAGE_SHIFT, PageTable, ptep_get
from engine.mm.rmap import Pvmw, pvmw_table
from engine.mm.state import KernelMixin
from engine.native.loader import (
    CPathFolioFlags,
    CPathKernel,
    PmdDiscardOut,
    PmdLazyfreeAction,
    TtuClearOut,
    TtuDecideOut,
    TtuLazyfreeAction,
    load,
)

_ANON, _SWAPBACKED = int(CPathFolioFlags.CPATH_FOLIO_ANON), int(CPathFolioFlags.CPATH_FOLIO_SWAPBACKED)

#: ttu_decide()'s action -> (event, the folio becomes swapbacked), indexed by value.
_TTU_ACTION = {
    TtuLazyfreeAction.TTU_LAZYFREE_DISCARD: (TTU_LAZYFREE_DISCARD, False),
    TtuLazyfreeAction.TTU_LAZYFREE_ABORT_DIRTY: (TTU_LAZYFREE_ABORT_DIRTY, True),
    TtuLazyfreeAction.TTU_LAZYFREE_ABORT_REF_SWAPBACKED: (TTU_LAZYFREE_ABORT_REF_SWAPBACKED, True),
    TtuLazyfreeAction.TTU_LAZYFREE_ABORT_REF: (TTU_LAZYFREE_ABORT_REF, False),
}
_TTU_ACTIONS = tuple(_TTU_ACTION[a] for a in sorted(_TTU_ACTION))
_TTU_DISCARD = int(TtuLazyfreeAction.TTU_LAZYFREE_DISCARD)

#: A PMD discard test's refusal -> the event v6.15 notes (v6.14's refusal notes none).
_PMD_EVENT = {
    PmdLazyfreeAction.PMD_LAZYFREE_ABORT_DIRTY: PMD_LAZYFREE_ABORT_DIRTY,
    PmdLazyfreeAction.PMD_LAZYFREE_ABORT_REF: PMD_LAZYFREE_ABORT_REF,
}


def _fault(pt: PageTable, idx: int) -> HarnessError:
    """The PageTableOutOfBounds the Python model raises for ``idx``: the C code
    stopped before the access, the model's own ptep_get() makes the report."""
    ptep_get(pt, idx)
    return HarnessError(f"C path reported a fault at index {idx} of {pt!r}, which is inside it")


class CPathMixin(KernelMixin):
    """The C PTE leg and PMD discard.  Put before the Python version in the bases."""

    #: The Python version this engine is the twin of (rules and corpus answer as it).
    BASE_VERSION: str
    CPATH_KERNEL: CPathKernel

    def __init__(self) -> None:
        super().__init__()
        lib = load()
        self._ttu_clear = lib.ttu_clear
        self._ttu_decide = lib.ttu_decide
        self._pmd_check = lib.pmd_discard_check
        self._pmd_decide = lib.pmd_discard_decide
        self._kernel = int(self.CPATH_KERNEL)
        self._clear_out = TtuClearOut()
        self._clear_ptr = ctypes.pointer(self._clear_out)
        self._decide_out = TtuDecideOut()
        self._decide_ptr = ctypes.pointer(self._decide_out)
        self._pmd_out = PmdDiscardOut()
        self._pmd_ptr = ctypes.pointer(self._pmd_out)

    def ttu_clear(self, folio: Folio, pvmw: Pvmw, flags: TTU) -> tuple[int, int]:
        """ttu_clear() in C: the version's batch, cleared by get_and_clear_full_ptes().

        Context: PTL held.  Return: (nr_pages, merged pteval); a scan off the
        table raises PageTableOutOfBounds like the Python model.
        """
        pt = pvmw_table(pvmw)
        entries = pt.entries
        out = self._clear_out
        folio_flags = ((_ANON if folio_test_anon(folio) else 0)
                       | (_SWAPBACKED if folio_test_swapbacked(folio) else 0))
        vma_nr = (pvmw.vma.vm_end - pvmw.address) >> PAGE_SHIFT
        nr = self._ttu_clear(entries.buffer_info()[0], len(entries), pvmw.idx, folio.pfn, folio.nr,
                             folio_flags, vma_nr, flags, self._kernel, self._clear_ptr)
        if out.pte_reads:
            self.cost["pte_reads"] += out.pte_reads
        if nr < 0:
            raise _fault(pt, out.fault_idx)
        self.cost["pte_clears"] += nr
        return nr, out.pteval

    def ttu_lazyfree(self, folio: Folio, vma: VmArea, pvmw: Pvmw, nr_pages: int,
                     pteval: int) -> bool:
        """ttu_decide() in C; the folio-side effects are applied here.

        Context: PTL held, after the yield.  Return: True to discard the batch.
        """
        pt = pvmw_table(pvmw)
        entries = pt.entries
        action = self._ttu_decide(entries.buffer_info()[0], len(entries), pvmw.idx, nr_pages,
                                  pteval, folio.ref, folio_mapcount(folio), folio_test_dirty(folio),
                                  bool(vma.vm_flags & VM_DROPPABLE), self._kernel,
                                  self._decide_ptr)
        if action < 0:
            raise _fault(pt, self._decide_out.fault_idx)
        if action == _TTU_DISCARD:
            vma.mm.rss[MM_ANONPAGES] += self._decide_out.anon_delta
        event, swapbacked = _TTU_ACTIONS[action]
        if swapbacked:
            folio_set_swapbacked(folio)
        self.event(event, folio)
        return action == _TTU_DISCARD

    def _pmd_action(self, folio: Folio, code: int) -> PmdLazyfreeAction:
        """The C decision @code as its enum, its side effects and event applied."""
        out = self._pmd_out
        if out.set_dirty:
            folio_set_dirty(folio)
        if out.set_swapbacked:
            folio_set_swapbacked(folio)
        action = PmdLazyfreeAction(code)
        event = _PMD_EVENT.get(action)
        if event is not None:
            self.event(event, folio)
        return action

    def pmd_discard_check(self, vma: VmArea, folio: Folio, pmd: int) -> bool:
        """pmd_discard_check() in C: the version's dirty test before the clear."""
        action = self._pmd_check(pmd, folio_test_dirty(folio), bool(vma.vm_flags & VM_DROPPABLE),
                                 self._kernel, self._pmd_ptr)
        return self._pmd_action(folio, action) is PmdLazyfreeAction.PMD_LAZYFREE_CLEAR

    def pmd_discard_decide(self, vma: VmArea, folio: Folio, cleared: int, ref_count: int,
                           map_count: int) -> bool:
        """pmd_discard_decide() in C: the tests on the cleared word and the refcount."""
        action = self._pmd_decide(cleared, ref_count, map_count, folio_test_dirty(folio),
                                  bool(vma.vm_flags & VM_DROPPABLE), self._kernel, self._pmd_ptr)
        return self._pmd_action(folio, action) is PmdLazyfreeAction.PMD_LAZYFREE_DISCARD


class V6_14C(CPathMixin, V6_14):
    """v6.14 per PTE, in C."""

    VERSION = "v6.14-c"
    BASE_VERSION = V6_14.VERSION
    COMMIT = V6_14.COMMIT
    CPATH_KERNEL = CPathKernel.CPATH_V6_14


class V6_15C(CPathMixin, V6_15):
    """v6.15's can_batch_unmap_folio_ptes() batches and 4/4 PMD path, in C."""

    VERSION = "v6.15-c"
    BASE_VERSION = V6_15.VERSION
    COMMIT = V6_15.COMMIT
    CPATH_KERNEL = CPathKernel.CPATH_V6_15


class V6_16C(CPathMixin, V6_16):
    """v6.16's folio_unmap_pte_batch() partial batches, in C."""

    VERSION = "v6.16-c"
    BASE_VERSION = V6_16.VERSION
    COMMIT = V6_16.COMMIT
    CPATH_KERNEL = CPathKernel.CPATH_V6_16
