"""v6.15 ("new"): Barry Song's series "mm: batched unmap lazyfree large folios
during reclamation", exactly as merged (S6):

- faeb2831b517 (1/4) set swapbacked only when the folio is really dirty;
- 2f4ab3ac10e1 (2/4) tlbbatch flush of a PTE range (no behaviour change);
- 354dffd29575 (3/4) unmap a whole lazyfree large folio in one batch, found
  by can_batch_unmap_folio_ptes() - which does not bound its scan by the
  PMD or the VMA: the out-of-bounds read ddd05742b45b later fixed;
- 2f9b43d617e2 (4/4) never split a lazyfree PMD-mapped THP in try_to_unmap.
"""

from __future__ import annotations

from engine.errors import KernelBug
from engine.kernels.v6_14 import V6_14
from engine.mm.events import (
    TTU_LAZYFREE_ABORT_DIRTY,
    TTU_LAZYFREE_ABORT_REF,
    TTU_LAZYFREE_DISCARD,
    TTU_PMD_SPLIT,
    Event,
)
from engine.mm.flags import FPB, FPB_NONE, TTU, TTU_HWPOISON, TTU_SPLIT_HUGE_PMD, VM_DROPPABLE
from engine.mm.folio import (
    Folio,
    folio_mapcount,
    folio_ref_count,
    folio_ref_sub,
    folio_set_dirty,
    folio_set_swapbacked,
    folio_test_anon,
    folio_test_dirty,
    folio_test_swapbacked,
)
from engine.mm.mm_types import MM_ANONPAGES, VmArea
from engine.mm.pgtable import (
    PAGE_SHIFT,
    PTE_BATCH_IGNORE,
    PTE_DIRTY_YOUNG,
    PTE_WRITE,
    PageTable,
    pmd_dirty,
    pte_advance_pfn,
    pte_pfn,
    ptep_get,
    set_pte_at,
)
from engine.mm.rmap import Pvmw, pvmw_table
from engine.mm.sched import YieldPoint, Yields

# -- the series' own events (declared here: only v6.15 and its descendants emit them) --
TTU_BATCH = Event("ttu_batch", "try_to_unmap_one() cleared a whole large folio's PTEs in one batch")
TTU_BATCH_PARTIAL = Event(
    "ttu_batch_partial", "try_to_unmap_one() cleared a batch of part of a large folio (v6.16)")
TTU_BATCH_PAST_VMA = Event(
    "ttu_batch_past_vma", "a batch ran past the end of the VMA into the next one's PTEs")
PMD_LAZYFREE_ABORT_DIRTY = Event(
    "pmd_lazyfree_abort_dirty",
    "the PMD discard refused a dirty lazyfree THP and made it swapbacked (2f9b43d617e2)")
PMD_LAZYFREE_ABORT_REF = Event(
    "pmd_lazyfree_abort_ref", "the PMD discard refused a lazyfree THP for an extra reference")


class V6_15(V6_14):
    VERSION = "v6.15"
    COMMIT = "faeb2831b517 2f4ab3ac10e1 354dffd29575 2f9b43d617e2"
    PARENT = "v6.14"
    #: MM-owner tracking (CONFIG_MM_ID, v6.15) lets do_wp_page() reuse a large anon
    #: folio only this MM maps (:meth:`folio_maybe_mapped_shared` below).
    WP_REUSES_SHARED_LARGE_ANON = True

    def folio_maybe_mapped_shared(self, folio: Folio) -> bool:
        """folio_maybe_mapped_shared() with CONFIG_MM_ID (David Hildenbrand's
        MM-owner tracking, v6.15): a large folio mapped more than once is
        shared when its "maybe mapped shared" bit is set
        (:class:`~engine.mm.folio.MmIds`); a small one when mapped twice."""
        mapcount = folio_mapcount(folio)
        if not folio.order:
            return mapcount > 1
        if mapcount <= 1:
            return False
        assert folio.mm_ids is not None, "a large folio mapped has its MM slots"
        return folio.mm_ids.shared

    # -- 3/4: batching ----------------------------------------------------------
    def folio_pte_batch(self, folio: Folio, pt: PageTable, idx: int, pte: int, max_nr: int,
                        flags: FPB = FPB_NONE) -> int:
        """folio_pte_batch(FPB_IGNORE_DIRTY|FPB_IGNORE_SOFT_DIRTY) of 6.15/6.16, which
        is 6.17's folio_pte_batch(), folio_pte_batch_flags() with no flag: how many
        PTEs from ``idx`` map consecutive pages of ``folio``, comparing every bit but
        dirty, young and write; with FPB_RESPECT_WRITE the write bit too (the model
        has no soft-dirty bit).

        Reads through :func:`ptep_get`: a scan that runs off the table is caught.
        """
        ignore = PTE_BATCH_IGNORE & ~PTE_WRITE if flags & FPB.FPB_RESPECT_WRITE else PTE_BATCH_IGNORE
        max_nr = min(folio.pfn + folio.nr - pte_pfn(pte), max_nr)
        expected = pte_advance_pfn(pte & ~ignore, 1)
        nr = 1
        while nr < max_nr:
            cur = ptep_get(pt, idx + nr) & ~ignore
            self.cost["pte_reads"] += 1
            if cur != expected:
                break
            nr += 1
            expected = pte_advance_pfn(expected, 1)
        return nr

    #: folio_pte_batch_flags() (6.17+): one body with folio_pte_batch() above, so that
    #: a scan's frames are named as they were (crash signatures name them).
    folio_pte_batch_flags = folio_pte_batch

    def can_batch_unmap_folio_ptes(self, pvmw: Pvmw, folio: Folio, pte: int) -> bool:
        """can_batch_unmap_folio_ptes(): the whole folio, from page 0, in one batch.

        Not bounded by the end of the page table or of the VMA (fixed by ddd05742b45b).
        """
        if not folio_test_anon(folio) or folio_test_swapbacked(folio):
            return False
        if pte_pfn(pte) != folio.pfn:
            return False
        return self.folio_pte_batch(folio, pvmw_table(pvmw), pvmw.idx, pte, folio.nr) == folio.nr

    def unmap_pte_batch(self, folio: Folio, pvmw: Pvmw, flags: TTU, pte: int) -> int:
        if folio.order and not flags & TTU_HWPOISON and self.can_batch_unmap_folio_ptes(pvmw, folio, pte):
            return folio.nr
        return 1

    def batch_done(self, folio: Folio, nr_pages: int) -> bool:
        """After a discard: "We have already batched the entire folio"."""
        return nr_pages > 1

    def get_and_clear_full_ptes(self, pt: PageTable, idx: int, nr: int) -> int:
        """Clear ``nr`` PTEs; return the first with dirty and young OR-ed in from all."""
        pte = ptep_get(pt, idx)
        set_pte_at(pt, idx, 0)
        for i in range(1, nr):
            w = ptep_get(pt, idx + i)
            set_pte_at(pt, idx + i, 0)
            pte |= w & PTE_DIRTY_YOUNG
        self.cost["pte_clears"] += nr
        return pte

    def set_ptes(self, pt: PageTable, idx: int, pte: int, nr: int) -> None:
        """Restore ``nr`` PTEs from one value, advancing the pfn (set_ptes)."""
        for i in range(nr):
            set_pte_at(pt, idx + i, pte_advance_pfn(pte, i))

    # -- the PTE leg of try_to_unmap_one (the C twins override these two) ------
    def ttu_clear(self, folio: Folio, pvmw: Pvmw, flags: TTU) -> tuple[int, int]:
        """Pick the batch (unmap_pte_batch) and clear it with get_and_clear_full_ptes().

        Context: PTL held.  Return: (nr_pages, the first PTE with dirty and young
        merged in from the whole batch).
        """
        pt, idx = pvmw_table(pvmw), pvmw.idx
        pte = ptep_get(pt, idx)
        nr_pages = self.unmap_pte_batch(folio, pvmw, flags, pte)
        return nr_pages, self.get_and_clear_full_ptes(pt, idx, nr_pages)

    def ttu_lazyfree(self, folio: Folio, vma: VmArea, pvmw: Pvmw, nr_pages: int,
                     pteval: int) -> bool:
        """The lazyfree decision after 1/4 (faeb2831b517), for a batch of ``nr_pages``.

        Context: PTL held, after the yield.  Return: True to discard the batch.
        """
        ref_count = folio_ref_count(folio)
        map_count = folio_mapcount(folio)
        droppable = vma.vm_flags & VM_DROPPABLE
        if folio_test_dirty(folio) and not droppable:
            # redirtied through a PTE or a GUP reference obtained earlier
            self.set_ptes(pvmw_table(pvmw), pvmw.idx, pteval, nr_pages)
            folio_set_swapbacked(folio)
            self.event(TTU_LAZYFREE_ABORT_DIRTY, folio)
            return False
        if ref_count != 1 + map_count:
            # An extra reference: GUP or speculative.  Act as if nothing
            # happened; the folio is looked at again once it is gone.
            self.set_ptes(pvmw_table(pvmw), pvmw.idx, pteval, nr_pages)
            self.event(TTU_LAZYFREE_ABORT_REF, folio)
            return False
        vma.mm.rss[MM_ANONPAGES] -= nr_pages
        self.event(TTU_LAZYFREE_DISCARD, folio)
        return True

    # -- 4/4: the PMD path --------------------------------------------------------
    def pmd_discard_check(self, vma: VmArea, folio: Folio, pmd: int) -> bool:
        """__discard_anon_folio_pmd_locked() after 2f9b43d617e2, before the clear:
        a dirty PMD dirties the folio, and a dirty folio (not VM_DROPPABLE) is
        made swapbacked here, the PMD left alone.  Return: True to clear."""
        if pmd_dirty(pmd):
            folio_set_dirty(folio)
        if folio_test_dirty(folio) and not vma.vm_flags & VM_DROPPABLE:
            folio_set_swapbacked(folio)
            self.event(PMD_LAZYFREE_ABORT_DIRTY, folio)
            return False
        return True

    def pmd_discard_decide(self, vma: VmArea, folio: Folio, cleared: int, ref_count: int,
                           map_count: int) -> bool:
        """The same test on the cleared word after the clear, then the refcount.
        Return: True to discard."""
        if not self.pmd_discard_check(vma, folio, cleared):
            return False
        if ref_count != map_count + 1:
            self.event(PMD_LAZYFREE_ABORT_REF, folio)
            return False
        return True

    def try_to_unmap_one(self, folio: Folio, vma: VmArea, address: int,
                         flags: TTU) -> Yields[bool]:
        """try_to_unmap_one() of v6.15.

        Context: folio locked and isolated; PTL of each visited table.
        Return: False to stop the rmap walk (walk_abort).
        """
        pvmw = Pvmw(folio, vma, address)
        ret = True
        while (yield from self.page_vma_mapped_walk(pvmw)):
            if self.ttu_vma_locked(folio, vma, flags):
                ret = False
                break
            if not pvmw.pte:
                if (self.DISCARDS_LAZYFREE_PMD and folio_test_anon(folio)
                        and not folio_test_swapbacked(folio)):                   # folio_test_lazyfree()
                    if (yield from self.unmap_huge_pmd_locked(vma, pvmw.pmd_idx, folio)):
                        break                                         # walk_done
                    # unmap_huge_pmd_locked() set swapbacked if it had to
                    ret = False
                    break                                             # walk_abort
                if flags & TTU_SPLIT_HUGE_PMD:
                    self.split_huge_pmd_locked(vma, pvmw.pmd_idx, folio)
                    self.event(TTU_PMD_SPLIT, folio)
                    flags &= ~TTU_SPLIT_HUGE_PMD
                    self.page_vma_mapped_walk_restart(pvmw)
                    continue
                raise KernelBug("try_to_unmap_one: unexpected PMD-mapped folio")
            nr_pages, pteval = self.ttu_clear(folio, pvmw, flags)
            page = pte_pfn(pteval) - folio.pfn
            self.ttu_flush_pte(flags, nr_pages)                       # range flush (2/4)
            self.ttu_harvest_dirty(folio, pteval)
            if nr_pages > 1:
                self.event(TTU_BATCH if nr_pages == folio.nr else TTU_BATCH_PARTIAL, folio)
                if pvmw.address + (nr_pages << PAGE_SHIFT) > pvmw.vma.vm_end:
                    # can_batch_unmap_folio_ptes() ran into the next VMA: its PTEs are
                    # cleared, and restored with this VMA's bits (ddd05742b45b)
                    self.event(TTU_BATCH_PAST_VMA, folio)
            if folio_test_anon(folio) and not folio_test_swapbacked(folio):
                yield YieldPoint.PTE_CLEARED
                if not self.ttu_lazyfree(folio, vma, pvmw, nr_pages, pteval):
                    ret = False
                    break
            elif folio_test_anon(folio):
                if not self.ttu_swap_pte(folio, vma, pvmw, page, pteval):
                    ret = False
                    break
                yield from self.ttu_between_ptes(pvmw, 1)
                continue
            # discard:
            self.folio_remove_rmap_ptes(folio, page, nr_pages, vma)
            self.discard_put(folio, nr_pages)
            if self.batch_done(folio, nr_pages):
                break                                                 # walk_done
            yield from self.ttu_between_ptes(pvmw, nr_pages)
        self.page_vma_mapped_walk_done(pvmw)
        return ret

    def discard_put(self, folio: Folio, nr_pages: int) -> None:
        """folio_ref_sub(folio, nr_pages - 1); folio_put(folio)."""
        if nr_pages > 1:
            folio_ref_sub(folio, nr_pages - 1)
        self.folio_put(folio)

