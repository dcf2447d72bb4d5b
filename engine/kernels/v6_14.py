"""v6.14 ("old"): try_to_unmap_one as in v6.11–v6.14, one PTE at a time.

The lazyfree rules of 6c8e2a256915 (refcount check) and 9651fcedf7b9
(VM_DROPPABLE), the PMD discard of 735ecdfaf4e8 with the PMD split moved
into the walk loop by 29e847d2ade3, and the v6.12 deferred split with
PG_partially_mapped.  This is the code Barry Song's series replaced.
"""

from __future__ import annotations

from engine.errors import KernelBug
from engine.kernels.base import Kernel
from engine.mm.events import (
    TTU_LAZYFREE_ABORT_DIRTY,
    TTU_LAZYFREE_ABORT_REF,
    TTU_LAZYFREE_ABORT_REF_SWAPBACKED,
    TTU_LAZYFREE_DISCARD,
    TTU_PMD_SPLIT,
)
from engine.mm.flags import TTU, TTU_SPLIT_HUGE_PMD, VM_DROPPABLE
from engine.mm.folio import (
    Folio,
    folio_mapcount,
    folio_ref_count,
    folio_set_swapbacked,
    folio_test_anon,
    folio_test_dirty,
    folio_test_swapbacked,
)
from engine.mm.mm_types import MM_ANONPAGES, VmArea
from engine.mm.pgtable import pte_pfn, ptep_get, set_pte_at
from engine.mm.rmap import Pvmw, pvmw_table
from engine.mm.sched import YieldPoint, Yields


class V6_14(Kernel):
    VERSION = "v6.14"
    COMMIT = "v6.14 (mm/rmap.c before faeb2831b517)"
    #: The v5.18 engine stands for v5.18-v6.7 and no engine models v6.8-v6.10: the
    #: tree edge v5.18 -> v6.14 carries every change of v6.8-v6.14 the model has.
    PARENT = "v5.18"
    #: try_to_unmap_one() offers a PMD mapping to unmap_huge_pmd_locked() before it
    #: splits the PMD (735ecdfaf4e8, v6.11).  The 6.12.117 stable update took the
    #: call out again (engine/kernels/v6_12.py).  Read by this try_to_unmap_one only.
    DISCARDS_LAZYFREE_PMD = True

    # -- the PTE leg of try_to_unmap_one (the C twins override these two) ------
    def ttu_clear(self, folio: Folio, pvmw: Pvmw, flags: TTU) -> tuple[int, int]:
        """ptep_get_and_clear() of the PTE the walk stopped at, one PTE at a time.

        Context: PTL held.  Return: (nr_pages, pteval), here always (1, the old PTE).
        """
        pt, idx = pvmw_table(pvmw), pvmw.idx
        pteval = ptep_get(pt, idx)
        set_pte_at(pt, idx, 0)
        self.cost["pte_clears"] += 1
        return 1, pteval

    def ttu_lazyfree(self, folio: Folio, vma: VmArea, pvmw: Pvmw, nr_pages: int,
                     pteval: int) -> bool:
        """The lazyfree decision of v6.11–v6.14, after the PTE is cleared.

        A clean folio with only the isolation and mapping references is
        discarded (VM_DROPPABLE ones even when dirty); otherwise the PTE is
        restored and, unless droppable, the folio made swapbacked whatever the
        reason (faeb2831b517 later narrowed that to dirty folios).
        Context: PTL held, after the yield.  Return: True to discard.
        """
        # smp_mb(): pairs with GUP-fast's "inc ref; mb; reread PTE"
        ref_count = folio_ref_count(folio)
        map_count = folio_mapcount(folio)
        # smp_rmb(): read the refcount before PG_dirty
        droppable = vma.vm_flags & VM_DROPPABLE
        if ref_count == 1 + map_count and (not folio_test_dirty(folio) or droppable):
            vma.mm.rss[MM_ANONPAGES] -= 1
            self.event(TTU_LAZYFREE_DISCARD, folio)
            return True
        set_pte_at(pvmw_table(pvmw), pvmw.idx, pteval)
        if not droppable:
            folio_set_swapbacked(folio)
            self.event(TTU_LAZYFREE_ABORT_DIRTY if folio_test_dirty(folio)
                       else TTU_LAZYFREE_ABORT_REF_SWAPBACKED, folio)
        else:
            self.event(TTU_LAZYFREE_ABORT_REF, folio)
        return False

    def try_to_unmap_one(self, folio: Folio, vma: VmArea, address: int,
                         flags: TTU) -> Yields[bool]:
        """try_to_unmap_one() of v6.11–v6.14.

        Context: folio locked and isolated; takes the PTL of each table it
        visits.  Return: False to stop the rmap walk (walk_abort).
        """
        pvmw = Pvmw(folio, vma, address)
        ret = True
        while (yield from self.page_vma_mapped_walk(pvmw)):
            if self.ttu_vma_locked(folio, vma, flags):
                ret = False
                break
            if not pvmw.pte:
                if self.DISCARDS_LAZYFREE_PMD and (
                        yield from self.unmap_huge_pmd_locked(vma, pvmw.pmd_idx, folio)):
                    break                                             # walk_done
                if flags & TTU_SPLIT_HUGE_PMD:
                    # drop the PTL and restart to process the PTE-mapped THP
                    self.split_huge_pmd_locked(vma, pvmw.pmd_idx, folio)
                    self.event(TTU_PMD_SPLIT, folio)
                    flags &= ~TTU_SPLIT_HUGE_PMD
                    self.page_vma_mapped_walk_restart(pvmw)
                    continue
                raise KernelBug("try_to_unmap_one: unexpected PMD-mapped folio")
            nr_pages, pteval = self.ttu_clear(folio, pvmw, flags)
            page = pte_pfn(pteval) - folio.pfn
            self.ttu_flush_pte(flags)
            self.ttu_harvest_dirty(folio, pteval)
            if folio_test_anon(folio) and not folio_test_swapbacked(folio):
                # Another CPU may act between the PTE clear and the refcount read.
                yield YieldPoint.PTE_CLEARED
                if not self.ttu_lazyfree(folio, vma, pvmw, nr_pages, pteval):
                    ret = False
                    break                                             # walk_abort
            elif folio_test_anon(folio):
                if not self.ttu_swap_pte(folio, vma, pvmw, page, pteval):
                    ret = False
                    break
                yield from self.ttu_between_ptes(pvmw, 1)
                continue
            # discard:
            self.folio_remove_rmap_pte(folio, page, 1, vma)
            self.folio_put(folio)
            yield from self.ttu_between_ptes(pvmw, 1)
        self.page_vma_mapped_walk_done(pvmw)
        return ret
