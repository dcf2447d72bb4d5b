"""v6.12: Debian's 6.12.117 (trixie), v6.14 but a lazyfree PMD-mapped THP is always split.

This is the "OLD" kernel the real-kernel conformance runs boot
(linux-image-6.12.117+deb13-amd64-unsigned 6.12.117-1).  It is v6.14 except
for one thing: try_to_unmap_one() does not call unmap_huge_pmd_locked(),
the stable commit "mm/rmap: don't discard lazyfree THPs at PMD level"
removed the call.  A PMD-mapped lazyfree THP reached by reclaim with
TTU_SPLIT_HUGE_PMD is always split (split_huge_pmd_locked(), thp_split_pmd
+1), then unmapped PTE by PTE with the v6.11-v6.14 lazyfree rule.  A clean
unreferenced THP is therefore discarded page by page: the first discard
leaves it partially mapped and queues it (thp_deferred_split_page +1,
split_deferred +1 for order 9), and shrink_folio_list() frees it whole
(pglazyfreed +512).  Mainline v6.11-v6.14 discard it whole under the PMD
lock instead (735ecdfaf4e8, the v6.14 engine).

Where the difference comes from - the 6.12.y stable series, not mainline:

- 735ecdfaf4e8 "mm/vmscan: avoid split lazyfree THP during
  shrink_folio_list()" added the call in v6.11-rc1, after 29e847d2ade3
  "mm/rmap: integrate PMD-mapped folio splitting into pagewalk loop" had
  moved the PMD split into the walk loop (both in the 6.11-rc1 MM pull;
  docs/kernel-notes.md K3, K4).
- Debian's ``linux-source-6.12`` 6.12.116-1 still has the call in
  try_to_unmap_one(); 6.12.117-1 does not.  Between the two tarballs the
  ``!pvmw.pte`` block of mm/rmap.c lost exactly the unmap_huge_pmd_locked()
  call; mm/huge_memory.c (which still defines unmap_huge_pmd_locked() and
  __discard_anon_folio_pmd_locked(), now without a caller) and
  include/linux/huge_mm.h are unchanged.
- 6.12.117-1's changelog.Debian.gz lists, under "New upstream stable update:
  ChangeLog-6.12.117", the stable commit "mm/rmap: don't discard lazyfree
  THPs at PMD level".  Its upstream id and changelog text were not found.
  Mainline v6.15+ still discard at PMD level (2f9b43d617e2; the 6.16.12
  probe saw unmap_huge_pmd_locked() fire).
- Observed (../shared/real-kernel-probe.md): no call site of
  unmap_huge_pmd_locked() in the 6.12.117 vmlinux, a kprobe on it never
  fired, and 2 clean lazyfree THPs gave thp_split_pmd +2,
  thp_deferred_split_page +2, pglazyfreed +1024.

Everything else read in the 6.12.117 source matches the v6.14 engine: the
PTE leg (6c8e2a256915's refcount check, VM_DROPPABLE), __folio_remove_rmap()
queueing with deferred_split_folio(folio, true) once per folio,
split_underused_thp, folio_pte_batch() in madvise_free_pte_range(),
TTU_SYNC for large folios and folio_unqueue_deferred_split() in
shrink_folio_list(), and no lazyfree split in shrink_folio_list().
"""

from __future__ import annotations

from engine.kernels.pmd_split_only import LazyfreePmdSplitOnly
from engine.kernels.v6_14 import V6_14


class V6_12(LazyfreePmdSplitOnly, V6_14):
    """Debian 6.12.117: v6.14 whose try_to_unmap_one() always splits a PMD-mapped lazyfree THP."""

    VERSION = "v6.12"
    COMMIT = "6.12.117 stable: mm/rmap: don't discard lazyfree THPs at PMD level"
    #: 6.12.y branched from mainline v6.12, which on everything modelled is the
    #: v6.14 engine (mainline v6.11-v6.14 did not change it): the branch point is
    #: v6.14, and the branch edge carries the two 6.12.y changes below
    #: (engine/kernels/tree.py).
    PARENT = "v6.14"
    BRANCH = "6.12.y"
    # The stable commit took unmap_huge_pmd_locked() out of try_to_unmap_one():
    # DISCARDS_LAZYFREE_PMD = False, from LazyfreePmdSplitOnly (shared with v7.3).
    #: 6.12.117 carries the revert of 33dfe9204f29 (Hugh Dickins, 2025)
    LAZYFREE_QUEUE_CLEARS_LRU = False
