"""v6.16: ddd05742b45b "mm/rmap: fix potential out-of-bounds page table access
during batched unmap" (Lance Yang; also sent to 6.15 stable).

folio_unmap_pte_batch() replaces can_batch_unmap_folio_ptes(): the batch
starts at any page, is capped by the end of the page table and of the VMA,
and may be partial; the walk is done only after a full-folio batch.
"""

from __future__ import annotations

from engine.kernels.v6_15 import V6_15
from engine.mm.flags import FPB_NONE, TTU, TTU_HWPOISON
from engine.mm.folio import Folio, folio_test_anon, folio_test_swapbacked
from engine.mm.pgtable import PAGE_SHIFT, pmd_addr_end
from engine.mm.rmap import Pvmw, pvmw_table


class V6_16(V6_15):
    VERSION = "v6.16"
    COMMIT = "ddd05742b45b"
    PARENT = "v6.15"

    def unmap_pte_batch_end(self, pvmw: Pvmw) -> int:
        """folio_unmap_pte_batch()'s ``end_addr``: "We may only batch within a single
        VMA and a single page table"."""
        return pmd_addr_end(pvmw.address, pvmw.vma.vm_end)

    #: What folio_unmap_pte_batch() passes to folio_pte_batch(): nothing until
    #: 29f40594a281 (engine/kernels/v7_0.py).
    UNMAP_PTE_BATCH_FLAGS = FPB_NONE

    def unmap_pte_batch(self, folio: Folio, pvmw: Pvmw, flags: TTU, pte: int) -> int:
        """folio_unmap_pte_batch()."""
        if flags & TTU_HWPOISON or not folio.order:
            return 1
        max_nr = (self.unmap_pte_batch_end(pvmw) - pvmw.address) >> PAGE_SHIFT
        if not folio_test_anon(folio) or folio_test_swapbacked(folio):
            return 1
        nr = self.folio_pte_batch(folio, pvmw_table(pvmw), pvmw.idx, pte, max_nr,
                                  self.UNMAP_PTE_BATCH_FLAGS)
        if self.UNMAP_PTE_BATCH_FLAGS:
            self.unmap_pte_batch_ended(folio, pvmw, pte, nr, max_nr)
        return nr

    def unmap_pte_batch_ended(self, folio: Folio, pvmw: Pvmw, pte: int, nr: int,
                              max_nr: int) -> None:
        """Where a version notes why a flagged batch ended short (v7.0: the write bit)."""

    def batch_done(self, folio: Folio, nr_pages: int) -> bool:
        return nr_pages == folio.nr

    def discard_put(self, folio: Folio, nr_pages: int) -> None:
        """folio_put_refs(folio, nr_pages)."""
        self.folio_put_refs(folio, nr_pages)
