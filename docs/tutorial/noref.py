"""A proposed patch, as a foliodiff plugin engine: no reference check for lazyfree folios.

The proposal, as a reviewer might read it on linux-mm: "try_to_unmap_one() has
cleared and flushed the lazyfree folio's PTEs, so nothing can reach it through
them any more; the ``ref_count != 1 + map_count`` abort only keeps the folio
mapped for a GUP user that will drop its reference soon.  Discard it anyway
and leave the rest to folio_ref_freeze() in shrink_folio_list()."

Its intended effect: a lazyfree folio with an extra reference is unmapped
anyway (and freed later, once the reference is gone) instead of staying mapped.
"""

from engine.kernels import V6_16, Event, New, Rule, folio, mm_types

#: Noted where the proposal discards a batch that v6.16 would have restored.
DISCARD_DESPITE_REF = Event("noref_discard_despite_ref",
                            "try_to_unmap_one() discarded a lazyfree batch of a folio "
                            "with an extra reference")


class NoRefCheck(V6_16):
    VERSION = "noref"
    COMMIT = "proposal: mm/rmap: drop the reference check of lazyfree folios"
    RULES = [
        Rule("noref-discard-referenced", "v6.16", "noref",
             "proposal: mm/rmap: drop the reference check of lazyfree folios",
             New(DISCARD_DESPITE_REF),
             "a lazyfree folio with an extra reference is unmapped anyway"),
    ]

    def ttu_lazyfree(self, folio_, vma, pvmw, nr_pages, pteval):
        """The lazyfree decision with the dirty test only."""
        if folio.folio_test_dirty(folio_) and not vma.droppable:
            return super().ttu_lazyfree(folio_, vma, pvmw, nr_pages, pteval)
        if folio.folio_ref_count(folio_) != 1 + folio.folio_mapcount(folio_):
            self.event(DISCARD_DESPITE_REF, folio_)
        vma.mm.rss[mm_types.MM_ANONPAGES] -= nr_pages
        return True
