"""v7.3: Debian's 7.3.4, whose try_to_unmap_one() no longer discards a lazyfree
THP at PMD level: the stable commit "mm/rmap: don't discard lazyfree THPs at
PMD level" of 7.3.2 (and of 6.12.117), shared with the v6.12 engine
(:class:`~engine.kernels.pmd_split_only.LazyfreePmdSplitOnly`).

Read in Debian's ``linux-source-7.3`` 7.3.4-1~bpo13+1 (D73; docs/kernel-notes.md
section 22): mm/rmap.c try_to_unmap_one() :2205 holds only the
TTU_SPLIT_HUGE_PMD split in its ``!pvmw.pte`` block; nothing under mm/ calls
unmap_huge_pmd_locked() (mm/huge_memory.c :3624 still defines it, and
__discard_anon_folio_pmd_locked() :3561); the 7.3.3-1 changelog lists the
commit among those of 7.3.2.  7.2.13 (D7213, mm/rmap.c :2076) still calls it.

A clean PMD-mapped lazyfree THP is split (thp_split_pmd +1); its 512 PTEs
carry the PMD's bits alike, so folio_unmap_pte_batch() takes them in one
batch and the folio is discarded whole (PGLAZYFREED +512) without ever being
partially mapped: no split_deferred / thp_deferred_split_page, which 6.12.117,
discarding page by page, counts.  No PMD-lock windows (section 19).

Everything else read in 7.3.4 that the model covers is the v7.2 engine: the
lazyfree decision moved into ttu_anon_lazyfree_folio() :2078 with the same tests
in the same order, folio_unmap_pte_batch() :1954 keeps FPB_RESPECT_WRITE |
FPB_RESPECT_SOFT_DIRTY, deferred_split_scan() :4649 is 7.2's list_lru walk,
madvise :352/:663 and shrink_folio_list() :1057 as 7.2.
"""

from __future__ import annotations

from engine.kernels.pmd_split_only import LazyfreePmdSplitOnly
from engine.kernels.v7_2 import V7_2


class V7_3(LazyfreePmdSplitOnly, V7_2):
    """Debian 7.3.4: v7.2 whose try_to_unmap_one() splits a PMD-mapped lazyfree THP."""

    VERSION = "v7.3"
    COMMIT = "7.3.2 stable: mm/rmap: don't discard lazyfree THPs at PMD level"
    #: 7.3.y branched from mainline v7.3, which on everything modelled is the v7.2
    #: engine (section 22 found nothing else of 7.3 the model covers): the branch
    #: edge v7.2 -> v7.3 carries the one 7.3.y change, as v6.14 -> v6.12 does.
    PARENT = "v7.2"
    BRANCH = "7.3.y"
