"""The stable commit "mm/rmap: don't discard lazyfree THPs at PMD level", shared by
the versions that carry it: Debian's 6.12.117 (engine/kernels/v6_12.py) and
7.3.4 (engine/kernels/v7_3.py).

The same kernel.org stable commit went into 6.12.117 and 7.3.2 (the Debian
changelogs of 6.12.117-1 and 7.3.3-1 list it by title; its mainline id was not
found: docs/kernel-notes.md sections 1 and 22).  In both trees
try_to_unmap_one()'s ``!pvmw.pte`` block keeps only the TTU_SPLIT_HUGE_PMD
split: nothing under mm/ calls unmap_huge_pmd_locked() any more, though
mm/huge_memory.c still defines it and __discard_anon_folio_pmd_locked().
A PMD-mapped lazyfree THP that reclaim reaches is split (thp_split_pmd +1)
and unmapped by its PTEs with the version's PTE leg: page by page on 6.12.117
(the v6.11-v6.14 form), in batches on 7.3 (folio_unmap_pte_batch()).
"""

from __future__ import annotations


class LazyfreePmdSplitOnly:
    """Mixin, listed before the version class it changes: try_to_unmap_one() of
    that version (the v6.14 or the v6.15+ form, both read
    ``DISCARDS_LAZYFREE_PMD``) never offers a PMD mapping to
    unmap_huge_pmd_locked(); it splits it."""

    #: try_to_unmap_one() calls unmap_huge_pmd_locked() at a PMD hit (735ecdfaf4e8,
    #: v6.11): not after the stable commit.
    DISCARDS_LAZYFREE_PMD = False
