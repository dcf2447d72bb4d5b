"""Intended divergences: one rule per kernel change, each naming its patch.

A divergence is classified at the first operation where the two runs
parted: it is intended when a rule for the pair of versions recognises, in
what each kernel did during that operation (its events), the change the
patch made.  Later differences are consequences of that first one.  A data
loss, crash, broken invariant, leak or hang is never intended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.kernels import ORDER, base_version

Events = frozenset[str]

_LAZYFREE_PER_PTE = frozenset({"ttu_lazyfree_discard", "ttu_lazyfree_abort_dirty",
                               "ttu_lazyfree_abort_ref", "ttu_lazyfree_abort_ref_swapbacked",
                               "deferred_split_partially_mapped"})


@dataclass(frozen=True)
class Rule:
    """An intended difference between ``older`` and the next version ``newer``."""

    name: str
    older: str
    newer: str
    patch: str
    explains: Callable[[Events, Events, str], bool]
    description: str

    def matches(self, old: Events, new: Events, op_kind: str) -> bool:
        return self.explains(old, new, op_kind)


RULES: list[Rule] = [
    # -- v5.17 -> v5.18 -------------------------------------------------------
    Rule("refcount-check-before-lazyfree-discard", "v5.17", "v5.18",
         "6c8e2a256915 mm: fix race between MADV_FREE reclaim and blkdev direct IO read",
         lambda o, n, k: "ttu_lazyfree_discard" in o and "ttu_lazyfree_abort_ref_swapbacked" in n,
         "a clean lazyfree folio with an extra reference is kept (and made swapbacked), "
         "not discarded"),
    Rule("pinned-anon-stays-mapped", "v5.17", "v5.18",
         "6c287605fd56 mm: remember exclusively mapped anonymous pages with PG_anon_exclusive "
         "(v5.19; the v5.18 engine stands for v5.18-v6.7)",
         lambda o, n, k: "ttu_pinned_anon_stays_mapped" in n or "wp_reuse_pinned" in n,
         "a possibly pinned exclusive anon page is not unmapped to swap, and a write fault "
         "reuses it rather than copying it away from its pin"),
    Rule("lazyfree-thp-not-split-in-reclaim", "v5.17", "v5.18",
         "820c4e2e6f51 mm/vmscan: Free non-shmem folios without splitting them (v5.18; "
         "735ecdfaf4e8, v6.11, avoided the PMD split, not this one)",
         lambda o, n, k: "reclaim_split_lazyfree" in o and "reclaim_split_lazyfree" not in n,
         "shrink_folio_list() no longer splits a lazyfree THP before unmapping it: only its "
         "PMD is split, in try_to_unmap_one(), and the THP is freed whole"),
    # -- v5.18 -> v6.12 -------------------------------------------------------
    Rule("folio-batch-31", "v5.18", "v6.12",
         "9cecde80aae0 mm: increase folio batch size (v6.9: PAGEVEC_SIZE 15 -> 31)",
         lambda o, n, k: "folio_batch_full_15" in o or "folio_batch_full_31" in n,
         "a per-CPU folio batch (lru_add, lazyfree) is moved when it holds 31 folios, "
         "not 15"),
    Rule("anon-mthp-faults", "v5.18", "v6.12",
         "19eaf44954df mm: thp: support allocation of anonymous multi-size THP",
         lambda o, n, k: "alloc_mthp" in n and "alloc_mthp" not in o,
         "an order-4 VMA faults in 64 KiB mTHPs instead of small folios"),
    Rule("map-droppable", "v5.18", "v6.12",
         "9651fcedf7b9 mm: add MAP_DROPPABLE for designating always-droppable mappings",
         lambda o, n, k: "mmap_droppable" in n,
         "MAP_DROPPABLE is accepted"),
    Rule("underused-thp-queued", "v5.18", "v6.12",
         "dafff3f4c850 mm: split underused THPs",
         lambda o, n, k: "deferred_split_underused" in n,
         "a new PMD THP is queued for deferred split as a possible underused THP"),
    Rule("deferred-split-partially-mapped", "v5.18", "v6.12",
         "mm: introduce a pageflag for partially mapped folios (Usama Arif, v6.12; mainline id not verified)",
         lambda o, n, k: k == "deferred_split_scan" or bool(
             {"deferred_split_partially_mapped"} & (o | n)),
         "only partially mapped folios are queued (once) and split by the shrinker; such a "
         "folio is flagged PG_partially_mapped and counted in the mTHP stat "
         "nr_anon_partially_mapped, which older kernels do not have"),
    Rule("split-maps-unused-to-zeropage", "v5.18", "v6.12",
         "b1f202060afe mm: remap unused subpages to shared zeropage when splitting isolated thp",
         lambda o, n, k: "split_remap_zeropage" in n,
         "a folio split maps each zero-filled page to the shared zero page (its small folio "
         "is freed)"),
    # -- v6.12 -> v6.14 -------------------------------------------------------
    # Not a mainline commit between the two: mainline has discarded at PMD level
    # since v6.11, and the 6.12.y stable series took the call out of 6.12.117
    # (engine/kernels/v6_12.py), which the v6.12 engine models.
    Rule("lazyfree-pmd-discard", "v6.12", "v6.14",
         "735ecdfaf4e8 mm/vmscan: avoid split lazyfree THP during shrink_folio_list() (its "
         "unmap_huge_pmd_locked() call in try_to_unmap_one, which the 6.12.117 stable commit "
         "\"mm/rmap: don't discard lazyfree THPs at PMD level\" removed from 6.12.y)",
         lambda o, n, k: bool(n & {"place:pmd_checked", "place:pmd_cleared"})
         or ("ttu_split_huge_pmd" in o and "discard_lazyfree_pmd" in n),
         "a clean, unreferenced lazyfree PMD-mapped THP is discarded whole under the PMD lock "
         "instead of split and discarded page by page; the attempt holds the PMD lock with "
         "two windows other CPUs can act in, where 6.12.117 splits at once"),
    Rule("lazyfree-queue-clears-lru", "v6.12", "v6.14",
         "33dfe9204f29 mm/gup: clear the LRU flag of a page before adding to LRU batch (v6.11; "
         "its 2025 revert is in 6.12.117, which the v6.12 engine models)",
         lambda o, n, k: bool(o & {"isolate_queued_lazyfree", "lazyfree_requeue"}),
         "a folio MADV_FREE queued for the lazyfree move is off limits to reclaim and to a "
         "second MADV_FREE until the batch moves it, where before reclaim could isolate it "
         "from its anon LRU list (and swap it out) while it waited, and another MADV_FREE "
         "queued it again"),
    # -- v6.14 -> v6.15: Barry Song's series ------------------------------------
    Rule("mm-id-mapped-shared", "v6.14", "v6.15",
         "David Hildenbrand's MM-owner tracking for large folios (CONFIG_MM_ID, v6.15): "
         "\"mm: convert folio_likely_mapped_shared() to folio_maybe_mapped_shared()\"",
         lambda o, n, k: "madvise_skip_shared" in n and "madvise_skip_shared" not in o,
         "madvise leaves a large folio alone when its MM-owner tracking says another MM maps "
         "it, where the old estimate from page 0's mapcount called it exclusive and split it"),
    Rule("swapbacked-only-if-dirty", "v6.14", "v6.15",
         "faeb2831b517 mm: set folio swapbacked iff folios are dirty in try_to_unmap_one (1/4)",
         lambda o, n, k: "ttu_lazyfree_abort_ref_swapbacked" in o
         and "ttu_lazyfree_abort_ref_swapbacked" not in n,
         "a clean lazyfree folio with an extra reference stays lazyfree: the reference "
         "holder, not reclaim, says whether it wrote (\"GUP users must mark the folio dirty "
         "if there was a modification\"), so a device write followed by an unpin without "
         "dirty may be discarded"),
    Rule("batched-lazyfree-unmap", "v6.14", "v6.15",
         "354dffd29575 mm: support batched unmap for lazyfree large folios during reclamation (3/4)",
         lambda o, n, k: "ttu_batch" in n and bool(o & _LAZYFREE_PER_PTE),
         "a fully mapped lazyfree large folio is unmapped in one batch: no deferred split, "
         "no partial discard of a redirtied folio, PTE bits merged on restore"),
    Rule("no-pmd-split-for-lazyfree", "v6.14", "v6.15",
         "2f9b43d617e2 mm: avoid splitting pmd for lazyfree pmd-mapped THP in try_to_unmap (4/4)",
         lambda o, n, k: "ttu_split_huge_pmd" in o and bool(
             n & {"pmd_lazyfree_abort_dirty", "pmd_lazyfree_abort_ref", "discard_lazyfree_pmd"}),
         "a lazyfree PMD-mapped THP is never split by try_to_unmap_one"),
    # -- v6.15 -> v6.16 ----------------------------------------------------------
    Rule("bounded-partial-batches", "v6.15", "v6.16",
         "ddd05742b45b mm/rmap: fix potential out-of-bounds page table access during batched unmap",
         lambda o, n, k: "ttu_batch_partial" in n or "ttu_batch_past_vma" in o,
         "batches are bounded by the page table and the VMA and may be partial: a v6.15 "
         "batch no longer runs into the next VMA, clearing its PTEs and restoring them "
         "with the first PTE's bits (or reading past the page table)"),
]


def rules_between(a: str, b: str) -> list[Rule]:
    """The rules of every adjacent pair on the way from version ``a`` to ``b``."""
    a, b = base_version(a), base_version(b)
    lo, hi = sorted((ORDER.index(a), ORDER.index(b)))
    span = set(ORDER[lo:hi + 1])
    return [r for r in RULES if r.older in span and r.newer in span]


def explain(a: str, b: str, events_a: Events, events_b: Events, op_kind: str) -> list[Rule]:
    """Rules that explain a parting with these events (``a``, ``b`` in any order)."""
    a, b = base_version(a), base_version(b)
    if ORDER.index(a) > ORDER.index(b):
        a, b, events_a, events_b = b, a, events_b, events_a
    return [r for r in rules_between(a, b) if r.matches(events_a, events_b, op_kind)]
