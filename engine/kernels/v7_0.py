"""v7.0: 29f40594a281 "mm/rmap: fix incorrect pte restoration for lazyfree folios"
(Dev Jain; Fixes 354dffd29575, Cc stable).

folio_unmap_pte_batch() batches with folio_pte_batch_flags(...,
FPB_RESPECT_WRITE | FPB_RESPECT_SOFT_DIRTY) instead of folio_pte_batch(): a
batch ends where the write (or soft-dirty) bit changes, so a lazyfree batch
that has to be restored (the dirty or the extra-reference abort, which write
the first PTE's value into every PTE of the batch with set_ptes()) no longer
makes read-only PTEs writable.  Read in Debian's 7.2.12 (D72 mm/rmap.c :1948)
and 7.3.4 (D73 :1954); the fix was queued for 6.19-stable in March 2026, so it
is mainline by 7.0-rc (docs/kernel-notes.md sections 20 and 22; [I] that 7.0
final has it).

Debian's 6.19.14 carries the 6.19-stable backport: the real kernel showed it
(corpus ``conform-wp-reuse-lazyfree-write-bit``; engine/kernels/v6_19_y.py).

Which programs see it: a folio whose PTEs in one VMA differ in the write bit.
In the model (and on 6.15+ kernels with CONFIG_MM_ID) a write fault reuses a
large anon folio that fork() had shared once the other MM unmapped it
(do_wp_page(): that one PTE becomes writable, the others stay read-only), so
fork, the child's munmap, a store to one page, MADV_FREE and reclaim give a
batch of that PTE alone and then one of the rest: the first discard leaves the
folio partially mapped (deferred_split_folio(): mTHP split_deferred +1,
thp_deferred_split_page for a PMD-sized one), where v6.15-v6.19 discard the
folio in one batch.  Corpus ``conform-wp-reuse-lazyfree-write-bit``; on a
restore only the writable first batch is written back, where v6.16 made PTEs 1-15
writable (tests/unit/test_ladder.py).

Soft-dirty is not modelled (no soft-dirty bit, no clear_refs): passing
FPB_RESPECT_SOFT_DIRTY changes nothing the model compares.  The same 7.x
function also batches file folios and refuses a uffd-wp VMA; the model has
neither.  Everything else of 7.0 the model covers is the v6.19 engine: the 7.0.0
copy read (julianw1010/linux-7.0.0 mm/huge_memory.c) has 6.19's
deferred_split_scan() with its retry.
"""

from __future__ import annotations

from engine.kernels.v6_19 import V6_19
from engine.mm.events import Event
from engine.mm.flags import FPB
from engine.mm.folio import Folio
from engine.mm.pgtable import PTE_BATCH_IGNORE, pte_advance_pfn, pte_pfn, ptep_get
from engine.mm.rmap import Pvmw, pvmw_table

TTU_BATCH_WRITE_BOUNDARY = Event(
    "ttu_batch_write_boundary",
    "folio_unmap_pte_batch() ended a batch where the next PTE differs only in the write "
    "bit (29f40594a281)")


class LazyfreeBatchRespectsWrite(V6_19):
    """v6.19 with 29f40594a281's folio_unmap_pte_batch(): the code mainline v7.0
    and the 6.19.y backport (engine/kernels/v6_19_y.py) both run, written once.
    Not a version itself (not registered)."""

    #: What folio_unmap_pte_batch() passes to folio_pte_batch_flags().
    UNMAP_PTE_BATCH_FLAGS = FPB.FPB_RESPECT_WRITE | FPB.FPB_RESPECT_SOFT_DIRTY

    def unmap_pte_batch_ended(self, folio: Folio, pvmw: Pvmw, pte: int, nr: int,
                              max_nr: int) -> None:
        """Note a batch the write bit ended: the next PTE matched as v6.16-v6.19
        compare (for the rule's event only: no cost counted)."""
        if nr < min(max_nr, folio.pfn + folio.nr - pte_pfn(pte)):
            pt = pvmw_table(pvmw)
            expected = pte_advance_pfn(pte, nr) & ~PTE_BATCH_IGNORE
            if ptep_get(pt, pvmw.idx + nr) & ~PTE_BATCH_IGNORE == expected:
                self.event(TTU_BATCH_WRITE_BOUNDARY, folio)


class V7_0(LazyfreeBatchRespectsWrite):
    """Mainline v7.0: v6.19 whose lazyfree unmap batches respect the write bit."""

    VERSION = "v7.0"
    COMMIT = "29f40594a281"
    PARENT = "v6.19"
