"""v5.18 (stands for v5.18–v6.7): 6c8e2a256915 "mm: fix race between MADV_FREE
reclaim and blkdev direct IO read" added the refcount check.

Older than everything the series touched: no anonymous mTHP (faults of an
order-4 VMA allocate small folios), no VM_DROPPABLE (MAP_DROPPABLE is
-EINVAL), the PMD is split at function entry with split_huge_pmd_address(),
shrink_folio_list splits lazyfree THPs before unmapping them, and every PTE
unmap of a THP page queues it for deferred split (deferred_split_huge_page).
As the engine stands for the whole range, it keeps a maybe-pinned anon page
mapped instead of swapping it out (PG_anon_exclusive, 6c287605fd56, v5.19).
"""

from __future__ import annotations

from engine.errors import KernelBug
from engine.kernels.base import Kernel
from engine.mm.events import (
    DEFERRED_SPLIT_PARTIALLY_MAPPED,
    TTU_LAZYFREE_ABORT_DIRTY,
    TTU_LAZYFREE_ABORT_REF_SWAPBACKED,
    TTU_LAZYFREE_DISCARD,
    TTU_PMD_SPLIT,
)
from engine.mm.flags import TTU, TTU_SPLIT_HUGE_PMD, LockedLargeRef
from engine.mm.folio import (
    Folio,
    folio_mapcount,
    folio_ref_count,
    folio_set_swapbacked,
    folio_test_anon,
    folio_test_dirty,
    folio_test_pmd_mappable,
    folio_test_swapbacked,
    folio_test_swapcache,
)
from engine.mm.mm_types import MM_ANONPAGES, VmArea
from engine.mm.pgtable import pmd_index, pte_pfn, ptep_get, set_pte_at
from engine.mm.rmap import Pvmw, pvmw_table
from engine.mm.sched import YieldPoint, Yields


class V5_18(Kernel):
    VERSION = "v5.18"
    COMMIT = "6c8e2a256915"
    PARENT: str | None = "v5.17"
    HAS_MTHP = False
    HAS_DROPPABLE = False
    FOLIO_BATCH_SIZE = 15                 # PAGEVEC_SIZE before v6.9
    LAZYFREE_QUEUE_CLEARS_LRU = False     # before 33dfe9204f29 (v6.11)
    MADVISE_SPLITS_EVERY_PTE_MAPPED_THP = True
    LOCKED_LARGE_REF = LockedLargeRef.COUNTED

    def madvise_folio_shared(self, folio: Folio, page: int) -> bool:
        """v5.x madvise_free_pte_range() / madvise_cold_or_pageout_pte_range():
        ``page_mapcount(page) != 1`` of the page the PTE maps."""
        return folio.mapcount[page] + folio.entire_mapcount != 1
    split_underused_thp = False
    # remap_page() maps zero-filled pages to the zero page only from v6.12 (b1f202060afe)
    SPLIT_MAPS_UNUSED_TO_ZEROPAGE = False

    def deferred_split_on_rmap_removal(self, folio: Folio, unmapped: int,
                                       partially_mapped: bool) -> None:
        """page_remove_rmap(): a THP page that lost its last mapping queues the THP."""
        if unmapped:
            self.deferred_split_huge_page(folio)

    def deferred_split_huge_page(self, folio: Folio) -> None:
        if folio_test_swapcache(folio) or folio.on_deferred_list:
            return
        folio.on_deferred_list = True
        self.deferred_split_queue[folio] = None
        if folio_test_pmd_mappable(folio):
            self.count("THP_DEFERRED_SPLIT_PAGE")
        self.count_mthp("split_deferred", folio.order)
        self.event(DEFERRED_SPLIT_PARTIALLY_MAPPED, folio)

    def new_pmd_thp(self, folio: Folio) -> None:
        """No underused-THP queueing before v6.12."""

    def thp_underused(self, folio: Folio) -> bool:
        return True           # before v6.12 every queued THP is split by the shrinker

    def try_to_unmap_one(self, folio: Folio, vma: VmArea, address: int,
                         flags: TTU) -> Yields[bool]:
        """try_to_unmap_one() of v5.18 (page-based in the kernel; folio names here)."""
        if flags & TTU_SPLIT_HUGE_PMD:
            # split_huge_pmd_address() at function entry
            pmd_idx = pmd_index(address)
            word = vma.mm.pmd_huge.get(pmd_idx)
            if word is not None and pte_pfn(word) == folio.pfn:
                yield from self.split_huge_pmd(vma, pmd_idx)
                self.event(TTU_PMD_SPLIT, folio)
        mm = vma.mm
        pvmw = Pvmw(folio, vma, address)
        ret = True
        while (yield from self.page_vma_mapped_walk(pvmw)):
            if self.ttu_vma_locked(folio, vma, flags):
                ret = False
                break
            if not pvmw.pte:
                raise KernelBug("try_to_unmap_one: unexpected PMD-mapped THP")
            pt, idx = pvmw_table(pvmw), pvmw.idx
            pteval = ptep_get(pt, idx)
            page = pte_pfn(pteval) - folio.pfn
            set_pte_at(pt, idx, 0)
            self.cost["pte_clears"] += 1
            self.ttu_flush_pte(flags)
            self.ttu_harvest_dirty(folio, pteval)
            if folio_test_anon(folio) and not folio_test_swapbacked(folio):
                yield YieldPoint.PTE_CLEARED
                if self.lazyfree_can_discard(folio):
                    mm.rss[MM_ANONPAGES] -= 1
                    self.event(TTU_LAZYFREE_DISCARD, folio)
                else:
                    set_pte_at(pt, idx, pteval)
                    folio_set_swapbacked(folio)
                    self.event(TTU_LAZYFREE_ABORT_DIRTY if folio_test_dirty(folio)
                               else TTU_LAZYFREE_ABORT_REF_SWAPBACKED, folio)
                    ret = False
                    break
            elif folio_test_anon(folio):
                if not self.ttu_swap_pte(folio, vma, pvmw, page, pteval):
                    ret = False
                    break
                yield from self.ttu_between_ptes(pvmw, 1)
                continue
            self.folio_remove_rmap_pte(folio, page, 1, vma)
            self.folio_put(folio)
            yield from self.ttu_between_ptes(pvmw, 1)
        self.page_vma_mapped_walk_done(pvmw)
        return ret

    def lazyfree_can_discard(self, folio: Folio) -> bool:
        """The only refs must be one from isolation plus the rmap(s) (6c8e2a256915)."""
        ref_count = folio_ref_count(folio)
        map_count = folio_mapcount(folio)
        return ref_count == 1 + map_count and not folio_test_dirty(folio)
