"""Intended divergences: one rule per kernel change, each naming its patch.

A divergence is classified at the first operation where the two runs
parted: it is intended when a rule for the pair of versions recognises, in
what each kernel did during that operation (its events), the change the
patch made.  Later differences are consequences of that first one.  A data
loss, crash, broken invariant, leak or hang is never intended.

A rule's test is built from declared events (:mod:`engine.mm.events`) with
the matchers of :mod:`engine.kernels.rule` (:class:`Old`, :class:`New`,
:class:`Either`, :class:`OpIs`, combined with ``&``, ``|`` and ``~``): a
misspelt event is a NameError when this module is imported, and
:meth:`Rule.events` lists every event a rule reads.
"""

from __future__ import annotations

from engine.kernels import KERNELS, ORDER, base_version, plugins
from engine.kernels.rule import Either, Events, New, Old, OpIs, Rule, When
from engine.kernels.v6_15 import (
    PMD_LAZYFREE_ABORT_DIRTY,
    PMD_LAZYFREE_ABORT_REF,
    TTU_BATCH,
    TTU_BATCH_PARTIAL,
    TTU_BATCH_PAST_VMA,
)
from engine.kernels.v6_19 import DEFERRED_SPLIT_HELD_REQUEUED, DEFERRED_SPLIT_RETRY
from engine.kernels.v7_0 import TTU_BATCH_WRITE_BOUNDARY
from engine.mm.events import (
    ALLOC_MTHP,
    DEFERRED_SPLIT_PARTIALLY_MAPPED,
    DEFERRED_SPLIT_REF,
    DEFERRED_SPLIT_UNDERUSED,
    DISCARD_LAZYFREE_PMD,
    ISOLATE_QUEUED_LAZYFREE,
    LAZYFREE_REQUEUE,
    MADVISE_SKIP_SHARED,
    MMAP_DROPPABLE,
    RECLAIM_SPLIT_LAZYFREE,
    SPLIT_REMAP_ZEROPAGE,
    TTU_LAZYFREE_ABORT_DIRTY,
    TTU_LAZYFREE_ABORT_REF,
    TTU_LAZYFREE_ABORT_REF_SWAPBACKED,
    TTU_LAZYFREE_DISCARD,
    TTU_PINNED_ANON_STAYS_MAPPED,
    TTU_PMD_SPLIT,
    WP_COPY_SHARED_LARGE,
    WP_REUSE_PINNED,
    WP_REUSE_SHARED_LARGE,
    Event,
    folio_batch_full,
    place_event,
)
from engine.mm.sched import YieldPoint
from engine.program.format import DeferredSplitScan


def _only_new(ev: Event) -> When:
    """The newer run noted @ev and the older one did not."""
    return New(ev) & ~Old(ev)


_LAZYFREE_PER_PTE = (TTU_LAZYFREE_DISCARD, TTU_LAZYFREE_ABORT_DIRTY, TTU_LAZYFREE_ABORT_REF,
                     TTU_LAZYFREE_ABORT_REF_SWAPBACKED, DEFERRED_SPLIT_PARTIALLY_MAPPED)


RULES: list[Rule] = [
    # -- v5.17 -> v5.18 -------------------------------------------------------
    Rule("refcount-check-before-lazyfree-discard", "v5.17", "v5.18",
         "6c8e2a256915 mm: fix race between MADV_FREE reclaim and blkdev direct IO read",
         Old(TTU_LAZYFREE_DISCARD) & New(TTU_LAZYFREE_ABORT_REF_SWAPBACKED),
         "a clean lazyfree folio with an extra reference is kept (and made swapbacked), "
         "not discarded"),
    Rule("pinned-anon-stays-mapped", "v5.17", "v5.18",
         "6c287605fd56 mm: remember exclusively mapped anonymous pages with PG_anon_exclusive "
         "(v5.19; the v5.18 engine stands for v5.18-v6.7)",
         New(TTU_PINNED_ANON_STAYS_MAPPED, WP_REUSE_PINNED),
         "a possibly pinned exclusive anon page is not unmapped to swap, and a write fault "
         "reuses it rather than copying it away from its pin"),
    Rule("lazyfree-thp-not-split-in-reclaim", "v5.17", "v5.18",
         "820c4e2e6f51 mm/vmscan: Free non-shmem folios without splitting them (v5.18; "
         "735ecdfaf4e8, v6.11, avoided the PMD split, not this one)",
         Old(RECLAIM_SPLIT_LAZYFREE) & ~New(RECLAIM_SPLIT_LAZYFREE),
         "shrink_folio_list() no longer splits a lazyfree THP before unmapping it: only its "
         "PMD is split, in try_to_unmap_one(), and the THP is freed whole"),
    # -- v5.18 -> v6.12 -------------------------------------------------------
    Rule("folio-batch-31", "v5.18", "v6.12",
         "9cecde80aae0 mm: increase folio batch size (v6.9: PAGEVEC_SIZE 15 -> 31)",
         Old(folio_batch_full(15)) | New(folio_batch_full(31)),
         "a per-CPU folio batch (lru_add, lazyfree) is moved when it holds 31 folios, "
         "not 15"),
    Rule("anon-mthp-faults", "v5.18", "v6.12",
         "19eaf44954df mm: thp: support allocation of anonymous multi-size THP",
         _only_new(ALLOC_MTHP),
         "an order-4 VMA faults in 64 KiB mTHPs instead of small folios"),
    Rule("map-droppable", "v5.18", "v6.12",
         "9651fcedf7b9 mm: add MAP_DROPPABLE for designating always-droppable mappings",
         New(MMAP_DROPPABLE),
         "MAP_DROPPABLE is accepted"),
    Rule("underused-thp-queued", "v5.18", "v6.12",
         "dafff3f4c850 mm: split underused THPs",
         New(DEFERRED_SPLIT_UNDERUSED),
         "a new PMD THP is queued for deferred split as a possible underused THP"),
    Rule("deferred-split-partially-mapped", "v5.18", "v6.12",
         "mm: introduce a pageflag for partially mapped folios (Usama Arif, v6.12; mainline id not verified)",
         OpIs(DeferredSplitScan) | Either(DEFERRED_SPLIT_PARTIALLY_MAPPED),
         "only partially mapped folios are queued (once) and split by the shrinker; such a "
         "folio is flagged PG_partially_mapped and counted in the mTHP stat "
         "nr_anon_partially_mapped, which older kernels do not have"),
    Rule("split-maps-unused-to-zeropage", "v5.18", "v6.12",
         "b1f202060afe mm: remap unused subpages to shared zeropage when splitting isolated thp",
         New(SPLIT_REMAP_ZEROPAGE),
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
         New(place_event(YieldPoint.PMD_CHECKED), place_event(YieldPoint.PMD_CLEARED))
         | (Old(TTU_PMD_SPLIT) & New(DISCARD_LAZYFREE_PMD)),
         "a clean, unreferenced lazyfree PMD-mapped THP is discarded whole under the PMD lock "
         "instead of split and discarded page by page; the attempt holds the PMD lock with "
         "two windows other CPUs can act in, where 6.12.117 splits at once"),
    Rule("lazyfree-queue-clears-lru", "v6.12", "v6.14",
         "33dfe9204f29 mm/gup: clear the LRU flag of a page before adding to LRU batch (v6.11; "
         "its 2025 revert is in 6.12.117, which the v6.12 engine models)",
         Old(ISOLATE_QUEUED_LAZYFREE, LAZYFREE_REQUEUE),
         "a folio MADV_FREE queued for the lazyfree move is off limits to reclaim and to a "
         "second MADV_FREE until the batch moves it, where before reclaim could isolate it "
         "from its anon LRU list (and swap it out) while it waited, and another MADV_FREE "
         "queued it again"),
    # -- v6.14 -> v6.15: Barry Song's series ------------------------------------
    Rule("mm-id-mapped-shared", "v6.14", "v6.15",
         "David Hildenbrand's MM-owner tracking for large folios (CONFIG_MM_ID, v6.15): "
         "\"mm: convert folio_likely_mapped_shared() to folio_maybe_mapped_shared()\"",
         _only_new(MADVISE_SKIP_SHARED),
         "madvise leaves a large folio alone when its MM-owner tracking says another MM maps "
         "it, where the old estimate from page 0's mapcount called it exclusive and split it"),
    Rule("wp-reuse-large-anon", "v6.14", "v6.15",
         "David Hildenbrand's MM-owner tracking for large folios (CONFIG_MM_ID, v6.15 [I]): "
         "\"mm/memory: COW reuse support for PTE-mapped THP with CONFIG_MM_ID\" [I title]",
         Old(WP_COPY_SHARED_LARGE) | New(WP_REUSE_SHARED_LARGE),
         "a write fault reuses a large anon folio that fork shared once only this MM maps "
         "it (that PTE becomes writable), where before it copied the page into a new small "
         "folio and left the large one partially mapped"),
    Rule("swapbacked-only-if-dirty", "v6.14", "v6.15",
         "faeb2831b517 mm: set folio swapbacked iff folios are dirty in try_to_unmap_one (1/4)",
         Old(TTU_LAZYFREE_ABORT_REF_SWAPBACKED) & ~New(TTU_LAZYFREE_ABORT_REF_SWAPBACKED),
         "a clean lazyfree folio with an extra reference stays lazyfree: the reference "
         "holder, not reclaim, says whether it wrote (\"GUP users must mark the folio dirty "
         "if there was a modification\"), so a device write followed by an unpin without "
         "dirty may be discarded"),
    Rule("batched-lazyfree-unmap", "v6.14", "v6.15",
         "354dffd29575 mm: support batched unmap for lazyfree large folios during reclamation (3/4)",
         New(TTU_BATCH) & Old(*_LAZYFREE_PER_PTE),
         "a fully mapped lazyfree large folio is unmapped in one batch: no deferred split, "
         "no partial discard of a redirtied folio, PTE bits merged on restore"),
    Rule("no-pmd-split-for-lazyfree", "v6.14", "v6.15",
         "2f9b43d617e2 mm: avoid splitting pmd for lazyfree pmd-mapped THP in try_to_unmap (4/4)",
         Old(TTU_PMD_SPLIT) & New(PMD_LAZYFREE_ABORT_DIRTY, PMD_LAZYFREE_ABORT_REF, DISCARD_LAZYFREE_PMD),
         "a lazyfree PMD-mapped THP is never split by try_to_unmap_one"),
    # -- v6.15 -> v6.16 ----------------------------------------------------------
    Rule("bounded-partial-batches", "v6.15", "v6.16",
         "ddd05742b45b mm/rmap: fix potential out-of-bounds page table access during batched unmap",
         New(TTU_BATCH_PARTIAL) | Old(TTU_BATCH_PAST_VMA),
         "batches are bounded by the page table and the VMA and may be partial: a v6.15 "
         "batch no longer runs into the next VMA, clearing its PTEs and restoring them "
         "with the first PTE's bits (or reading past the page table)"),
    # -- v6.16 -> v6.19 ----------------------------------------------------------
    Rule("deferred-split-scan-retry", "v6.16", "v6.19",
         "the 6.19 split-queue rework of deferred_split_scan() (folio_batch, retry; "
         "mainline ids not found)",
         New(DEFERRED_SPLIT_RETRY, DEFERRED_SPLIT_HELD_REQUEUED)
         | (OpIs(DeferredSplitScan) & New(DEFERRED_SPLIT_REF)),
         "one shrinker call scans the queue again while nr_to_scan is left, so a partially "
         "mapped folio whose split fails (a pin) is tried, and counted split_failed, again; "
         "a folio the scan holds is off the queue (list_del_init(), where 6.12-6.18 keep it "
         "on their on-stack list), so deferred_split_folio() may queue it meanwhile, and the "
         "batch's references are dropped after the whole batch"),
    # -- v6.19 -> v6.19.y (Debian's 6.19.14) -> v7.0 --------------------------------
    # Mainline brings it in v7.0; 6.19.y has the backport, and so is v7.0 on
    # everything modelled (no rule between v6.19.y and v7.0).
    Rule("lazyfree-batch-respects-write", "v6.19", "v6.19.y",
         "29f40594a281 mm/rmap: fix incorrect pte restoration for lazyfree folios (v7.0; its "
         "6.19-stable backport is in Debian's 6.19.14)",
         New(TTU_BATCH_WRITE_BOUNDARY),
         "a lazyfree unmap batch ends where the write bit changes: a folio whose PTEs differ "
         "in it is unmapped in several batches (the first leaves it partially mapped and "
         "queued for deferred split), and a restore no longer makes read-only PTEs writable"),
    # -- v7.0 -> v7.2 -------------------------------------------------------------
    Rule("deferred-split-list-lru", "v7.0", "v7.2",
         "the list_lru deferred split queue (7.1 or 7.2; mainline ids not found)",
         Old(DEFERRED_SPLIT_RETRY) | (OpIs(DeferredSplitScan) & Either(DEFERRED_SPLIT_REF)),
         "the shrinker walks at most nr_to_scan queued folios once per call, in one list "
         "(no batches of 31), dropping each folio's reference after it: a folio whose split "
         "fails is tried (and counted split_failed) once, as before 6.19"),
    # -- v7.2 -> v7.3 (Debian's 7.3.4, the 7.3.y branch) --------------------------
    Rule("lazyfree-pmd-discard-removed", "v7.2", "v7.3",
         "7.3.2 stable: mm/rmap: don't discard lazyfree THPs at PMD level (the 6.12.117 "
         "commit; mainline id not found)",
         Old(place_event(YieldPoint.PMD_CHECKED), place_event(YieldPoint.PMD_CLEARED))
         | (Old(DISCARD_LAZYFREE_PMD, PMD_LAZYFREE_ABORT_DIRTY, PMD_LAZYFREE_ABORT_REF)
            & New(TTU_PMD_SPLIT)),
         "a PMD-mapped lazyfree THP is split and unmapped by its PTEs (in one batch when its "
         "PTEs are alike) instead of discarded whole under the PMD lock: thp_split_pmd "
         "counts it, and the PMD-lock windows are gone"),
]


def _on_ladder(version: str) -> tuple[str, list[str]]:
    """The nearest ancestor of @version on ``ORDER`` and the plugin versions
    between (@version first): a plugin stands below the version it descends from."""
    chain = []
    while version not in ORDER:
        chain.append(version)
        version = vars(KERNELS[version])["PARENT"]
    return version, chain


def _rank(version: str) -> tuple[int, int]:
    at, chain = _on_ladder(version)
    return ORDER.index(at), len(chain)


def rules_between(a: str, b: str) -> list[Rule]:
    """The rules of every adjacent pair on the way from version ``a`` to ``b``.

    Versions on ``ORDER`` take the rules of the ladder's pairs between them; a
    plugin version (engine/kernels/plugins.py) adds its own rules (from its
    parent to it) and those of the plugins between it and the ladder, and
    takes the ladder's rules from the version there.
    """
    a, b = base_version(a), base_version(b)
    (at_a, chain_a), (at_b, chain_b) = _on_ladder(a), _on_ladder(b)
    lo, hi = sorted((ORDER.index(at_a), ORDER.index(at_b)))
    span = set(ORDER[lo:hi + 1])
    # A plugin both sides descend from is no step of the way.
    steps = [v for v in dict.fromkeys(chain_a + chain_b) if (v in chain_a) != (v in chain_b)]
    return ([r for r in RULES if r.older in span and r.newer in span]
            + [r for v in steps for r in plugins.rules_of(v)])


def explain(a: str, b: str, events_a: Events, events_b: Events, op_kind: str) -> list[Rule]:
    """Rules that explain a parting with these events (``a``, ``b`` in any order)."""
    a, b = base_version(a), base_version(b)
    if _rank(a) > _rank(b):
        a, b, events_a, events_b = b, a, events_b, events_a
    return [r for r in rules_between(a, b) if r.matches(events_a, events_b, op_kind)]
