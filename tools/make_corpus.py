"""Write corpus/*.json: the scenarios of kernel-semantics.md section H and more.

Expectations are written here by hand from the kernel behaviour each
scenario documents (section H of ../shared/kernel-semantics.md, section J
for what real kernels showed), never copied from a model run.  Run:
``python tools/make_corpus.py`` then ``pytest tests/corpus``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

A = 0x200000            # 2 MiB aligned
P = 4096
TH = [{"name": "T0", "kind": "task", "mm": 0}, {"name": "R", "kind": "kthread", "mm": None},
      {"name": "S", "kind": "kthread", "mm": None}, {"name": "D", "kind": "device", "mm": None}]
ALL = ("v5.17", "v5.18", "v6.12", "v6.14", "v6.15", "v6.16")
#: v6.12 (Debian 6.12.117) and v6.14 unmap PTE by PTE alike; only a lazyfree PMD-mapped THP
#: that v6.14 would discard whole under the PMD lock tells them apart (engine/kernels/v6_12.py).
OLD = ("v6.12", "v6.14")
OUT = pathlib.Path(__file__).resolve().parent.parent / "corpus"


def op(thread, kind, **kw):
    return {"thread": thread, "op": kind, **kw}


def mthp16(value=7):
    return [op("T0", "mmap", addr=A, pages=16, order=4),
            op("T0", "write", addr=A, pages=16, value=value),
            op("T0", "madvise", addr=A, pages=16, advice="MADV_FREE")]


def thp(value=7, droppable=False):
    return [op("T0", "mmap", addr=A, pages=512, order=9, droppable=droppable),
            op("T0", "write", addr=A, pages=512, value=value),
            op("T0", "madvise", addr=A, pages=512, advice="MADV_FREE")]


PAGEOUT16 = op("T0", "madvise", addr=A, pages=16, advice="MADV_PAGEOUT")
PAGEOUT512 = op("T0", "madvise", addr=A, pages=512, advice="MADV_PAGEOUT")


def each(versions, **fields):
    return {v: dict(fields) for v in versions}


def merge(*dicts):
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out.setdefault(k, {}).update(v)
    return out


SCENARIOS: list[dict[str, Any]] = []


def scenario(name, sid, description, ops, expect, divergences=None, schedule=(), threads=TH):
    """One corpus file; @schedule holds (op, yield point, occurrence, thread) places."""
    SCENARIOS.append({"name": name, "scenario": sid, "description": description,
                      "program": {"version": 2, "threads": threads, "ops": ops,
                                  "schedule": [dict(zip(("op", "at", "nth", "thread"), s, strict=True))
                                               for s in schedule]},
                      "expect": expect, "divergences": divergences or {}})


# H1: a clean fully mapped lazyfree mTHP, no other reference.
scenario("h1-clean-mthp-reclaim", "H1",
         "Clean 16-page lazyfree mTHP reclaimed: v6.14 unmaps it PTE by PTE and queues a "
         "deferred split (split_deferred +1); v6.15 unmaps it in one batch (+0). Both free it.",
         mthp16() + [PAGEOUT16, op("T0", "read", addr=A, pages=16)],
         merge(each(ALL, **{"verdict": "ok", "counter.PGLAZYFREED": 16, "result[4]": [0] * 16,
                            "mm0.MM_ANONPAGES": 0}),
               each(OLD, **{"mthp.split_deferred[4]": 1}),
               each(("v6.15", "v6.16", "v5.17", "v5.18"), **{"mthp.split_deferred[4]": 0})),
         {"v6.12..v6.14": {"classification": "equal"},
          "v6.14..v6.15": {"classification": "intended", "kind": "state",
                           "rules": ["batched-lazyfree-unmap"]},
          "v6.15..v6.16": {"classification": "equal"}})

# H2: the shrinker's speculative reference lands between two PTEs of the unmap.
scenario("h2-shrinker-ref-between-ptes", "H2",
         "The deferred-split shrinker takes its speculative reference after PTE0 was discarded "
         "(v6.14 queued the folio on that discard). v6.14 then sees ref != 1 + mapcount at PTE1 and "
         "makes the clean folio swapbacked (nr_lazyfree_fail +16); the shrinker later splits it. "
         "v6.15 unmaps the whole folio in one batch: nothing is queued, the folio is freed.",
         mthp16() + [PAGEOUT16, op("S", "deferred_split_scan")],
         merge(each(ALL, verdict="ok"),
               each(OLD, **{"counter.nr_lazyfree_fail": 16, "counter.PGLAZYFREED": 0,
                            "mthp.split_deferred[4]": 1, "mthp.split[4]": 1}),
               each(("v6.15", "v6.16"), **{"counter.nr_lazyfree_fail": 0, "counter.PGLAZYFREED": 16,
                                           "mthp.split_deferred[4]": 0})),
         {"v6.12..v6.14": {"classification": "equal"},
          "v6.14..v6.15": {"classification": "intended", "kind": "state",
                           "rules": ["swapbacked-only-if-dirty"]}},
         # the shrinker runs once the PAGEOUT's try_to_unmap_one() is between PTE0 and PTE1
         schedule=[(3, "between_ptes", 1, "S")])

# H3: redirtied through PTE k after MADV_FREE.
for k in (0, 3):
    reads = [7] * 16
    reads[k] = 9
    lost = [0] * k + reads[k:]
    scenario(f"h3-redirty-pte{k}", "H3",
             f"16-page lazyfree mTHP redirtied through PTE {k}. "
             + ("Every version aborts at the first PTE, makes the folio swapbacked and discards "
                "nothing; v6.15 restores all 16 PTEs with the merged dirty and young bits."
                if k == 0 else
                "v6.14 discards PTEs 0..k-1 (they read back as zero, allowed after MADV_FREE), "
                "then aborts with swapbacked set and split_deferred +1; v6.15's batch sees the merged "
                "dirty bit, restores all 16 PTEs dirty and discards nothing."),
             mthp16() + [op("T0", "write", addr=A + k * P, value=9), PAGEOUT16,
                         op("T0", "read", addr=A, pages=16)],
             merge(each(ALL, verdict="ok"),
                   each(("v6.15", "v6.16"), **{"folio.f0.flags": "anon,swapbacked,dirty,lru,active",
                                               "mm0.pte[0x20f000]": "f0+15:dyw"}),
                   each(OLD + ("v6.15", "v6.16"), **{"counter.nr_lazyfree_fail": 16,
                                                     "counter.PGLAZYFREED": 0}),
                   each(OLD, **{"result[5]": lost, "mthp.split_deferred[4]": 1 if k else 0,
                                "folio.f0.flags": "anon,swapbacked,dirty,lru,active"
                                + (",partially_mapped" if k else "")}),
                   each(("v6.15", "v6.16"), **{"result[5]": reads, "mthp.split_deferred[4]": 0})),
             {"v6.12..v6.14": {"classification": "equal"},
              "v6.14..v6.15": {"classification": "intended", "rules": ["batched-lazyfree-unmap"]}})

# H4: a small lazyfree folio written after MADV_FREE.
scenario("h4-small-redirty", "H4",
         "A small lazyfree folio written after MADV_FREE: every version restores the PTE, sets "
         "swapbacked and aborts.",
         [op("T0", "mmap", addr=A, pages=1), op("T0", "write", addr=A, value=7),
          op("T0", "madvise", addr=A, pages=1, advice="MADV_FREE"), op("T0", "lru_add_drain"),
          op("T0", "write", addr=A, value=8), op("T0", "madvise", addr=A, pages=1, advice="MADV_PAGEOUT"),
          op("T0", "read", addr=A)],
         each(ALL, **{"verdict": "ok", "counter.nr_lazyfree_fail": 1, "counter.PGLAZYFREED": 0,
                      "result[6]": [8], "folio.f0.flags": "anon,swapbacked,dirty,lru,active"}),
         {"v5.17..v6.16": {"classification": "equal"}})

# H5: GUP pin + DMA on a clean small lazyfree folio, reclaim before unpin.
scenario("h5-dma-into-lazyfree", "H5",
         "pin_user_pages_fast(FOLL_WRITE) on a clean small lazyfree folio, reclaim before the device "
         "writes and before unpin. v5.17 discards the PTE anyway: the device writes into an orphaned "
         "page and the user reads zero (data loss, fixed by 6c8e2a256915). v5.18/v6.14 keep it and "
         "make it swapbacked; v6.15 keeps it lazyfree until unpin dirties it, and the next reclaim "
         "makes it swapbacked then.",
         [op("T0", "mmap", addr=A, pages=1), op("T0", "write", addr=A, value=7),
          op("T0", "madvise", addr=A, pages=1, advice="MADV_FREE"), op("T0", "lru_add_drain"),
          op("T0", "pin", addr=A, pin="p0"), op("R", "reclaim"),
          op("D", "dma_write", pin="p0", value=42), op("T0", "unpin", pin="p0", dirty=True),
          op("T0", "madvise", addr=A, pages=1, advice="MADV_PAGEOUT"), op("T0", "read", addr=A)],
         merge(each(("v5.17",), verdict="data_loss"),
               each(("v5.18",) + OLD, **{"verdict": "ok", "counter.nr_lazyfree_fail": 1,
                                          "result[5]": 0, "result[9]": [42]}),
               each(("v6.15", "v6.16"), **{"verdict": "ok", "counter.nr_lazyfree_fail": 1,
                                            "counter.nr_unmap_fail": 2, "result[9]": [42]})),
         {"v5.17..v5.18": {"classification": "unexpected", "kind": "data_loss"},
          "v5.17..v6.14": {"classification": "unexpected", "kind": "data_loss"},
          "v6.12..v6.14": {"classification": "equal"},
          "v6.14..v6.15": {"classification": "intended", "rules": ["swapbacked-only-if-dirty"]}})

# H7: VM_DROPPABLE, redirtied.
scenario("h7-droppable-small-dirty", "H7",
         "A dirty VM_DROPPABLE small folio is discarded by reclaim (never swapbacked) on v6.11+; "
         "MAP_DROPPABLE does not exist before (-EINVAL).",
         [op("T0", "mmap", addr=A, pages=1, droppable=True), op("T0", "write", addr=A, value=7),
          op("T0", "madvise", addr=A, pages=1, advice="MADV_PAGEOUT"), op("T0", "read", addr=A)],
         merge(each(OLD + ("v6.15", "v6.16"), **{"verdict": "ok", "result[0]": 0, "result[3]": [0],
                                                 "counter.nr_lazyfree_fail": 0,
                                                 "mm0.MM_ANONPAGES": 0}),
               each(("v5.17", "v5.18"), **{"verdict": "ok", "result[0]": -22, "result[1]": -14})),
         {"v6.14..v6.15": {"classification": "equal"},
          "v6.12..v6.14": {"classification": "equal"},
          "v5.18..v6.12": {"classification": "intended", "rules": ["map-droppable"]},
          "v5.18..v6.14": {"classification": "intended", "rules": ["map-droppable"]}})

scenario("h7-droppable-mthp-dirty", "H7",
         "A dirty 16-page VM_DROPPABLE mTHP: v6.14 discards it PTE by PTE (split_deferred +1), "
         "v6.15 in one batch (+0).",
         [op("T0", "mmap", addr=A, pages=16, order=4, droppable=True),
          op("T0", "write", addr=A, pages=16, value=7), PAGEOUT16,
          op("T0", "read", addr=A, pages=16)],
         merge(each(OLD + ("v6.15", "v6.16"), **{"verdict": "ok", "result[3]": [0] * 16,
                                                 "counter.nr_lazyfree_fail": 0}),
               each(OLD, **{"mthp.split_deferred[4]": 1}),
               each(("v6.15", "v6.16"), **{"mthp.split_deferred[4]": 0})),
         {"v6.12..v6.14": {"classification": "equal"},
          "v6.14..v6.15": {"classification": "intended", "rules": ["batched-lazyfree-unmap"]}})

# H8: PMD-mapped lazyfree THP, redirtied.
scenario("h8-pmd-thp-redirty", "H8",
         "A redirtied lazyfree PMD-mapped THP: v6.14 refuses the PMD discard, splits the PMD "
         "(thp_split_pmd +1), finds PTE0 dirty and sets swapbacked; v6.12 (Debian 6.12.117) splits "
         "without trying the PMD discard and ends the same; v6.15 sets swapbacked in "
         "__discard_anon_folio_pmd_locked and leaves the PMD alone. Data is kept on all.",
         thp() + [op("T0", "write", addr=A, value=8), PAGEOUT512, op("T0", "read", addr=A, pages=2)],
         merge(each(OLD + ("v6.15", "v6.16"), **{"verdict": "ok", "result[5]": [8, 7],
                                                 "counter.PGLAZYFREED": 0}),
               each(OLD, **{"counter.THP_SPLIT_PMD": 1, "counter.nr_lazyfree_fail": 512,
                            "mm0.pmd[0x200000]": None}),
               each(("v6.15", "v6.16"), **{"counter.THP_SPLIT_PMD": 0, "counter.nr_lazyfree_fail": 512,
                                           "mm0.pmd[0x200000]": "f0:dyw"})),
         {"v6.12..v6.14": {"classification": "equal"},
          "v6.12..v6.15": {"classification": "intended", "rules": ["no-pmd-split-for-lazyfree"]},
          "v6.14..v6.15": {"classification": "intended", "rules": ["no-pmd-split-for-lazyfree"]}})

# H9: PMD-mapped clean lazyfree THP with an extra reference (a GUP pin on one page).
scenario("h9-pmd-thp-pinned", "H9",
         "A clean lazyfree PMD-mapped THP with a GUP pin: v6.14 clears and restores the PMD, splits "
         "it, then finds the extra reference at PTE0 and sets swapbacked; v6.12 splits at once and "
         "ends the same; v6.15 restores the PMD and aborts: no split, still lazyfree.",
         thp() + [op("T0", "pin", addr=A, pin="p0"), PAGEOUT512, op("T0", "unpin", pin="p0", dirty=False)],
         merge(each(OLD + ("v6.15", "v6.16"), **{"verdict": "ok", "counter.PGLAZYFREED": 0}),
               each(OLD, **{"counter.THP_SPLIT_PMD": 1, "counter.nr_lazyfree_fail": 512,
                            "folio.f0.flags": "anon,swapbacked,lru,active"}),
               each(("v6.15", "v6.16"), **{"counter.THP_SPLIT_PMD": 0, "counter.nr_lazyfree_fail": 0,
                                           "folio.f0.flags": "anon,lru,active"})),
         {"v6.12..v6.14": {"classification": "equal"},
          "v6.14..v6.15": {"classification": "intended", "rules": ["no-pmd-split-for-lazyfree"]}})

# H10: PMD-mapped clean lazyfree THP, no extra references.
scenario("h10-pmd-thp-clean", "H10",
         "A clean unreferenced lazyfree PMD-mapped THP is discarded whole under the PMD lock on "
         "mainline v6.11+ (no split, PGLAZYFREED +512). Before 735ecdfaf4e8 reclaim split it first. "
         "v6.12 (Debian 6.12.117, whose stable update dropped the PMD discard from "
         "try_to_unmap_one) splits the PMD (thp_split_pmd +1), discards page by page, which "
         "queues a deferred split once (thp_deferred_split_page +1), and frees the folio "
         "(PGLAZYFREED +512), as the real kernel did (kernel-semantics.md section J).",
         thp() + [PAGEOUT512, op("T0", "read", addr=A)],
         merge(each(ALL, **{"verdict": "ok", "counter.PGLAZYFREED": 512, "result[4]": [0],
                            "mm0.MM_ANONPAGES": 0}),
               each(("v6.14", "v6.15", "v6.16"), **{"counter.THP_SPLIT_PMD": 0,
                                                    "counter.THP_DEFERRED_SPLIT_PAGE": 0,
                                                    "mthp.split_deferred[9]": 0}),
               each(("v6.12",), **{"counter.THP_SPLIT_PMD": 1, "counter.THP_DEFERRED_SPLIT_PAGE": 1,
                                   "mthp.split_deferred[9]": 1, "counter.nr_lazyfree_fail": 0,
                                   "mm0.pmd[0x200000]": None}),
               # v5.17 splits the lazyfree THP in shrink_page_list() before the unmap (its
               # freeze splits the PMD); from v5.18 (820c4e2e6f51) only try_to_unmap_one()
               # splits the PMD and the THP is freed whole.  PGLAZYFREED counts pages from
               # 64daa5d818ae (v5.19; the v5.18 engine stands for 5.18-6.1, docs/kernel-notes.md
               # section 17).
               each(("v5.17", "v5.18"), **{"counter.THP_SPLIT_PMD": 1,
                                           "counter.THP_DEFERRED_SPLIT_PAGE": 1}),
               each(("v5.17",), **{"counter.THP_SPLIT_PAGE": 1}),
               each(("v5.18", "v6.12", "v6.14", "v6.15", "v6.16"), **{"counter.THP_SPLIT_PAGE": 0})),
         {"v5.17..v5.18": {"classification": "intended",
                           "rules": ["lazyfree-thp-not-split-in-reclaim"]},
          "v6.12..v6.14": {"classification": "intended", "kind": "state",
                           "rules": ["lazyfree-pmd-discard"]},
          "v6.12..v6.15": {"classification": "intended", "rules": ["lazyfree-pmd-discard"]},
          "v6.14..v6.15": {"classification": "equal"}})

# H11: PMD-mapped VM_DROPPABLE THP, dirty.
scenario("h11-pmd-droppable-dirty", "H11",
         "A dirty PMD-mapped VM_DROPPABLE THP: v6.14 refuses the dirty PMD, splits it and discards "
         "page by page; v6.12 splits it at once and ends the same; v6.15 discards it whole.",
         [op("T0", "mmap", addr=A, pages=512, order=9, droppable=True),
          op("T0", "write", addr=A, pages=512, value=7), PAGEOUT512, op("T0", "read", addr=A)],
         merge(each(OLD + ("v6.15", "v6.16"), **{"verdict": "ok", "result[3]": [0]}),
               each(OLD, **{"counter.THP_SPLIT_PMD": 1}),
               each(("v6.15", "v6.16"), **{"counter.THP_SPLIT_PMD": 0})),
         {"v6.12..v6.14": {"classification": "equal"},
          "v6.14..v6.15": {"classification": "intended", "rules": ["no-pmd-split-for-lazyfree"]}})

# H12: a lazyfree mTHP moved by mremap so that it straddles two page tables.
B = 0x40000000
STRADDLE = B + 0x200000 - 8 * P
scenario("h12-mremap-straddle", "H12",
         "A lazyfree 16-page mTHP moved by mremap across a page-table boundary, then reclaimed by "
         "kswapd: v6.15's can_batch_unmap_folio_ptes() scans past the end of the PTE table "
         "(out-of-bounds, fixed by ddd05742b45b); v6.12, v6.14 and v6.16 discard it.",
         mthp16() + [op("T0", "mmap", addr=B, pages=1024),
                     op("T0", "mremap", addr=A, pages=16, new_addr=STRADDLE), op("R", "reclaim")],
         merge(each(OLD + ("v6.16",), **{"verdict": "ok", "counter.PGLAZYFREED": 16}),
               each(("v6.15",), **{"verdict": "crash", "crash.field": "PageTableOutOfBounds",
                                   "crash.function": "ptep_get"})),
         {"v6.12..v6.14": {"classification": "equal"},
          "v6.14..v6.15": {"classification": "unexpected", "kind": "crash"},
          "v6.15..v6.16": {"classification": "unexpected", "kind": "crash"}})

# H13: MADV_FREE over part of a large folio.
scenario("h13-partial-madv-free", "H13",
         "MADV_FREE of pages 4-11 of a 16-page mTHP splits it (not shared, trylock succeeds) and "
         "lazyfrees the 8 small folios in range. The split's unmap_folio() takes the PTEs off one "
         "by one, so the folio is briefly partially mapped and queued: split_deferred +1 "
         "(6.12.117 and 6.16.12 count it too).",
         [op("T0", "mmap", addr=A, pages=16, order=4), op("T0", "write", addr=A, pages=16, value=7),
          op("T0", "madvise", addr=A + 4 * P, pages=8, advice="MADV_FREE"), op("T0", "lru_add_drain")],
         each(OLD + ("v6.15", "v6.16"), **{"verdict": "ok", "mthp.split[4]": 1,
                                           "mthp.split_deferred[4]": 1,
                                           "counter.PGLAZYFREE": 8}),
         {"v6.14..v6.15": {"classification": "equal"}})

# H14: small folios reclaimed before the per-CPU lazyfree batch drains.
scenario("h14-lazyfree-batch-not-drained", "H14",
         "Small folios MADV_FREE'd sit in the per-CPU lazyfree batch, still swapbacked, with the "
         "batch's reference. From v6.11 (33dfe9204f29) folio_mark_lazyfree() clears PG_lru as it "
         "queues them, so kswapd cannot isolate them; after the drain it frees them as lazyfree. "
         "v5.x and 6.12.117 (which carries the 2025 revert) leave PG_lru set: kswapd isolates "
         "the swapbacked folios from the anon LRU and swaps them out, the batch's reference "
         "makes __remove_mapping() fail so they are kept in the swap cache, the drain skips "
         "them (folio_test_swapcache in lru_lazyfree()), and the second reclaim frees them "
         "from the swap cache: no lazyfree at all, 4 swap entries.",
         [op("T0", "mmap", addr=A, pages=4), op("T0", "write", addr=A, pages=4, value=7),
          op("T0", "madvise", addr=A, pages=4, advice="MADV_FREE"), op("R", "reclaim"),
          op("T0", "lru_add_drain"), op("R", "reclaim")],
         merge(each(ALL, **{"verdict": "ok", "result[3]": 0, "result[5]": 4,
                            "mm0.MM_ANONPAGES": 0}),
               each(("v6.14", "v6.15", "v6.16"), **{"counter.PGLAZYFREE": 4,
                                                    "counter.PGLAZYFREED": 4,
                                                    "counter.PSWPOUT": 0,
                                                    "mm0.MM_SWAPENTS": 0}),
               each(("v5.17", "v5.18", "v6.12"), **{"counter.PGLAZYFREE": 0,
                                                    "counter.PGLAZYFREED": 0,
                                                    "counter.PSWPOUT": 4,
                                                    "mm0.MM_SWAPENTS": 4})),
         {"v5.17..v5.18": {"classification": "equal"}, "v5.18..v6.12": {"classification": "equal"},
          "v6.12..v6.14": {"classification": "intended", "rules": ["lazyfree-queue-clears-lru"]},
          "v6.14..v6.16": {"classification": "equal"}})

# Real-kernel companions (issue 6 conformance list).
scenario("fork-shared-mthp", "J",
         "A 16-page mTHP shared with a forked child (its PTEs still dirty): the parent's MADV_FREE "
         "cleans only the parent's PTEs and makes the folio lazyfree; MADV_PAGEOUT then leaves it "
         "alone, as madvise_cold_or_pageout_pte_range() skips a folio mapped anywhere else "
         "(folio_mapcount != folio_nr_pages): both processes keep it mapped, the parent's 64 kB "
         "count as LazyFree. Nothing is lost in either process.",
         [op("T0", "mmap", addr=A, pages=16, order=4), op("T0", "write", addr=A, pages=16, value=7),
          op("T0", "fork", child=1), op("T0", "madvise", addr=A, pages=16, advice="MADV_FREE"),
          op("T0", "madvise", addr=A, pages=16, advice="MADV_PAGEOUT"),
          op("T1", "read", addr=A, pages=16)],
         each(OLD + ("v6.15", "v6.16"), **{"verdict": "ok", "result[5]": [7] * 16,
                                           "counter.PGLAZYFREED": 0, "counter.nr_lazyfree_fail": 0,
                                           "mm0.MM_ANONPAGES": 16, "mm1.MM_ANONPAGES": 16}),
         {"v6.14..v6.15": {"classification": "equal"}})
SCENARIOS[-1]["program"]["threads"] = TH + [{"name": "T1", "kind": "task", "mm": 1}]

# H12 without the out-of-bounds read: the folio crosses a VMA end inside one page table.
scenario("h12-vma-boundary-pinned-mthp", "H12",
         "A pinned clean lazyfree 16-page mTHP whose page 0 mprotect() made read-only: page 0 "
         "is in one VMA, pages 1-15 in the next. v6.15's can_batch_unmap_folio_ptes() batches "
         "from page 0 over all 16 PTEs (folio_pte_batch ignores the write bit and is not bounded "
         "by the VMA), the pin makes the refcount check fail, and set_ptes() restores all 16 from "
         "PTE 0's value: pages 1-15 lose their write bit. v6.16 bounds the batch by the VMA end "
         "(one PTE), v6.14 goes PTE by PTE; both abort on page 0 and leave pages 1-15 writable. "
         "v6.14 also makes the folio swapbacked (nr_lazyfree_fail +16); v6.15 and v6.16 do not.",
         [op("T0", "mmap", addr=A, pages=16, order=4), op("T0", "pin", addr=A, pin="p0"),
          op("T0", "madvise", addr=A, pages=16, advice="MADV_FREE"),
          op("T0", "mprotect", addr=A, pages=1, prot="r"), op("R", "reclaim")],
         merge(each(OLD + ("v6.15", "v6.16"), **{"verdict": "ok", "mm0.pte[0x200000]": "f0+0:"}),
               each(OLD + ("v6.16",), **{"mm0.pte[0x201000]": "f0+1:w", "mm0.pte[0x20f000]": "f0+15:w"}),
               each(("v6.15",), **{"mm0.pte[0x201000]": "f0+1:", "mm0.pte[0x20f000]": "f0+15:"}),
               each(OLD, **{"counter.nr_lazyfree_fail": 16}),
               each(("v6.15", "v6.16"), **{"counter.nr_lazyfree_fail": 0})),
         {"v6.14..v6.15": {"classification": "intended", "rules": ["swapbacked-only-if-dirty"]},
          "v6.15..v6.16": {"classification": "intended", "kind": "state",
                           "rules": ["bounded-partial-batches"]}})

# H12, lazyfree and unpinned: the same VMA end inside the folio, reached by kswapd
# (docs/kernel-notes.md section 15).
RO_HALF = op("T0", "mprotect", addr=A + 8 * P, pages=8, prot="r")
ZEROS16 = [0] * 16
VMA_END_ZERO = {"mm0.vmas": ["0x200000-0x208000:w", "0x208000-0x210000:r"],
                "mm0.pte[0x200000]": "zero", "mm0.pte[0x207000]": "zero",
                "mm0.pte[0x208000]": "zero", "mm0.pte[0x20f000]": "zero"}
scenario("h12-vma-boundary-lazyfree-mthp", "H12",
         "A clean lazyfree 16-page mTHP whose pages 8-15 mprotect() made read-only, so pages "
         "0-7 are in one VMA and 8-15 in the next (one page table), reclaimed by kswapd. "
         "v6.15's can_batch_unmap_folio_ptes() batches from page 0 over all 16 PTEs "
         "(folio_pte_batch ignores the write bit, max_nr is folio_nr_pages): one batch clears "
         "the next VMA's PTEs too, discards the whole folio and ends the walk, so the folio "
         "is never partially mapped (split_deferred 0). v6.16's folio_unmap_pte_batch() stops "
         "at pmd_addr_end(addr, vma->vm_end): a partial batch of 8 in each VMA, the first "
         "leaving the folio partially mapped (split_deferred +1, as v6.14's per-PTE unmap). "
         "Every version discards all 16 pages (PGLAZYFREED +16, MM_ANONPAGES 0) and the reads "
         "map the zero page. v5.x have no mTHP: 16 small folios (lru_add_drain empties the "
         "per-CPU lazyfree batch first), discarded one by one.",
         mthp16() + [op("T0", "lru_add_drain"), RO_HALF, op("R", "reclaim"),
                     op("T0", "read", addr=A, pages=16)],
         merge(each(ALL, **{"verdict": "ok", "counter.PGLAZYFREE": 16, "counter.PGLAZYFREED": 16,
                            "counter.nr_lazyfree_fail": 0, "mm0.MM_ANONPAGES": 0,
                            "result[6]": ZEROS16, "deferred_split_queue": [], **VMA_END_ZERO}),
               each(OLD + ("v6.15", "v6.16"), **{"mthp.split[4]": 0,
                                                 "mthp.nr_anon_partially_mapped[4]": 0}),
               each(OLD + ("v6.16",), **{"mthp.split_deferred[4]": 1}),
               each(("v6.15",), **{"mthp.split_deferred[4]": 0})),
         {"v5.17..v5.18": {"classification": "equal"},
          "v5.18..v6.12": {"classification": "intended", "rules": ["anon-mthp-faults"]},
          "v6.12..v6.14": {"classification": "equal"},
          "v6.14..v6.15": {"classification": "intended", "kind": "state",
                           "rules": ["batched-lazyfree-unmap"]},
          "v6.15..v6.16": {"classification": "intended", "kind": "state",
                           "rules": ["bounded-partial-batches"]},
          "v6.14..v6.16": {"classification": "equal"}})

# Issue 15, item 6 (docs/kernel-notes.md section 20): the same VMA end, pinned.  v6.15's
# restore writes PTE 0's value, write bit and all, into the read-only VMA's PTEs.
ESCALATED = "mm0.pte[0x208000].page_table_check.vma_write"
scenario("h12-vma-boundary-write-escalation", "H12",
         "A pinned clean lazyfree 16-page mTHP whose pages 8-15 mprotect() made read-only "
         "(pages 0-7 in a writable VMA, 8-15 in a PROT_READ one, one page table), reclaimed by "
         "kswapd, then a store to page 8. v6.15's can_batch_unmap_folio_ptes() batches from "
         "page 0 over all 16 PTEs (folio_pte_batch() ignores the write bit, max_nr is "
         "folio_nr_pages, no VMA bound), the pin fails the refcount check, and "
         "set_ptes(mm, address, pvmw.pte, pteval, nr_pages) writes PTE 0's value (writable, "
         "clean, old) with advancing pfns into all 16: pages 8-15 are writable in a VMA "
         "without VM_WRITE. The page-table check reports it when reclaim drops the PTL (an "
         "invariant: a v6.15 bug; without the check the store goes through the PTE, result 0). "
         "v6.16 (ddd05742b45b) bounds the batch by the VMA end (8 PTEs, all in the writable "
         "VMA); v6.12 and v6.14 unmap PTE by PTE and abort at page 0 (swapbacked: "
         "nr_lazyfree_fail +16). On those the store faults on a read-only PTE in a VMA without "
         "VM_WRITE: SIGSEGV (-14), and page 8 still reads 7. v5.x have small folios: the "
         "pinned page 0 is discarded (v5.17) or kept (v5.18, swapbacked) and pages 1-15 are "
         "discarded, so page 8 reads 0.",
         [op("T0", "mmap", addr=A, pages=16, order=4), op("T0", "write", addr=A, pages=16, value=7),
          op("T0", "pin", addr=A, pin="p0"), op("T0", "madvise", addr=A, pages=16, advice="MADV_FREE"),
          op("T0", "lru_add_drain"), RO_HALF, op("R", "reclaim"),
          op("T0", "write", addr=A + 8 * P, value=9), op("T0", "read", addr=A + 8 * P)],
         merge(each(("v6.15",), **{"verdict": "invariant", "crash.field": ESCALATED,
                                   "crash.function": "shrink_folio_list",
                                   "mm0.pte[0x200000]": "f0+0:w", "mm0.pte[0x208000]": "f0+8:w",
                                   "mm0.pte[0x20f000]": "f0+15:w", "counter.nr_lazyfree_fail": 0,
                                   "result[7]": None, "result[8]": None}),
               each(OLD + ("v6.16",), **{"verdict": "ok", "mm0.pte[0x200000]": "f0+0:w",
                                         "mm0.pte[0x208000]": "f0+8:y", "mm0.pte[0x20f000]": "f0+15:",
                                         "result[7]": -14, "result[8]": [7],
                                         "counter.PGLAZYFREED": 0}),
               each(OLD, **{"counter.nr_lazyfree_fail": 16}),
               each(("v6.16",), **{"counter.nr_lazyfree_fail": 0}),
               each(("v5.17", "v5.18"), **{"verdict": "ok", "result[7]": -14, "result[8]": [0],
                                           "counter.PGLAZYFREED": 15}),
               each(("v5.17",), **{"counter.nr_lazyfree_fail": 0}),
               each(("v5.18",), **{"counter.nr_lazyfree_fail": 1, "mm0.pte[0x200000]": "f0+0:w"})),
         {"v5.17..v5.18": {"classification": "intended",
                           "rules": ["refcount-check-before-lazyfree-discard"]},
          "v5.18..v6.12": {"classification": "intended", "rules": ["anon-mthp-faults"]},
          "v6.12..v6.14": {"classification": "equal"},
          "v6.14..v6.15": {"classification": "unexpected", "kind": "invariant"},
          "v6.15..v6.16": {"classification": "unexpected", "kind": "invariant"},
          "v6.14..v6.16": {"classification": "intended", "rules": ["swapbacked-only-if-dirty"]}})

scenario("conform-vma-boundary-lazyfree-pageout", "H12",
         "h12-vma-boundary-lazyfree-mthp with MADV_PAGEOUT instead of kswapd, for real kernels. "
         "MADV_PAGEOUT walks one VMA at a time, so madvise_folio_pte_batch() sees 8 of the "
         "folio's 16 PTEs and madvise_cold_or_pageout_pte_range() splits the folio (not "
         "shared, trylock succeeds) before any reclaim: no version reaches the batched unmap "
         "here. The split's unmap_folio() leaves the folio partially mapped on the way "
         "(split_deferred +1, split +1); the 16 small lazyfree folios are discarded "
         "(PGLAZYFREED +16) and read back as zero.",
         mthp16() + [RO_HALF, PAGEOUT16, op("T0", "read", addr=A, pages=16)],
         merge(each(ALL, **{"verdict": "ok", "counter.PGLAZYFREE": 16, "counter.PGLAZYFREED": 16,
                            "counter.nr_lazyfree_fail": 0, "mm0.MM_ANONPAGES": 0,
                            "result[5]": ZEROS16, **VMA_END_ZERO}),
               each(OLD + ("v6.15", "v6.16"), **{"mthp.split[4]": 1, "mthp.split_deferred[4]": 1,
                                                 "mthp.nr_anon_partially_mapped[4]": 0})),
         {"v5.17..v5.18": {"classification": "equal"},
          "v5.18..v6.12": {"classification": "intended", "rules": ["anon-mthp-faults"]},
          "v6.12..v6.14": {"classification": "equal"},
          "v6.14..v6.15": {"classification": "equal"},
          "v6.15..v6.16": {"classification": "equal"}})

scenario("vmsplice-style-extra-ref", "J",
         "A clean lazyfree 16-page mTHP with extra references held across reclaim (as vmsplice "
         "or io_uring do): v6.12 and v6.14 make it swapbacked and a later reclaim cannot free it; v6.15 "
         "keeps it lazyfree and frees it once the references are gone (section J). The model has a "
         "swap device, so the swapbacked folio is swapped out instead of staying resident.",
         mthp16() + [op("T0", "pin", addr=A, pages=16, pin="p0"), PAGEOUT16,
                     op("T0", "unpin", pin="p0", dirty=False), PAGEOUT16],
         merge(each(OLD + ("v6.15", "v6.16"), verdict="ok"),
               # the swapbacked mTHP is split for swap-out (or, without swap, by the
               # fallback split): unmap_folio() leaves it partially mapped on the way
               each(OLD, **{"counter.PGLAZYFREED": 0, "counter.nr_lazyfree_fail": 16,
                            "counter.PSWPOUT": 16, "mthp.split[4]": 1,
                            "mthp.split_deferred[4]": 1}),
               each(("v6.15", "v6.16"), **{"counter.PGLAZYFREED": 16, "mm0.MM_ANONPAGES": 0,
                                           "mthp.split_deferred[4]": 0})),
         {"v6.14..v6.15": {"classification": "intended", "rules": ["swapbacked-only-if-dirty"]}})

# Issue 15, item 8: madvise_walk_vmas() stops at the first VMA an advice refuses.
scenario("madv-pageout-locked-vma", "L",
         "MADV_PAGEOUT over an unlocked page and a VM_LOCKED one after it: "
         "madvise_walk_vmas() visits the VMAs in order and returns the first error at once; "
         "madvise_pageout() pages the unlocked page out (swapbacked and dirty: written to "
         "swap, PSWPOUT +1), then can_madv_lru_vma() refuses the locked VMA with -EINVAL. "
         "The reads fault the first page back from swap. The same on every version "
         "(can_madv_lru_vma() since MADV_PAGEOUT came, v5.4).",
         [op("T0", "mmap", addr=A, pages=1), op("T0", "mmap", addr=A + P, pages=1, locked=True),
          op("T0", "write", addr=A, pages=2, value=7),
          op("T0", "madvise", addr=A, pages=2, advice="MADV_PAGEOUT"),
          op("T0", "read", addr=A, pages=2)],
         each(ALL, **{"verdict": "ok", "result[3]": -22, "counter.PSWPOUT": 1,
                      "result[4]": [7, 7], "mm0.MM_ANONPAGES": 2}),
         {"v5.17..v5.18": {"classification": "equal"}, "v5.18..v6.12": {"classification": "equal"},
          "v6.12..v6.14": {"classification": "equal"}, "v6.14..v6.15": {"classification": "equal"},
          "v6.15..v6.16": {"classification": "equal"}})

# Issue 15, item 9: split_huge_page_to_list_to_order() counts every attempt at its exit.
scenario("split-failed-pinned-thp", "L",
         "A PMD-mapped THP pinned at page 0 (pin_user_pages_fast) and MADV_FREE'd in part: "
         "madvise_free_huge_pmd() splits a THP the range covers only in part, and "
         "split_folio() fails (can_split_folio(): the pin is an extra reference), which the "
         "split counts at its common exit: THP_SPLIT_PAGE_FAILED +1 (and the mTHP stat "
         "split_failed[9] +1 on v6.11+; the model keeps that stat on every version). The PMD "
         "stays huge: pte_offset_map_lock() finds no page table under it, so nothing is "
         "lazyfreed. The same on every version (v5.x split_huge_page_to_list() counted it "
         "the same way).",
         [op("T0", "mmap", addr=A, pages=512, order=9),
          op("T0", "write", addr=A, pages=512, value=7),
          op("T0", "pin", addr=A, pin="p0"),
          op("T0", "madvise", addr=A, pages=16, advice="MADV_FREE"),
          op("T0", "unpin", pin="p0", dirty=False),
          op("T0", "read", addr=A + 15 * P)],
         each(ALL, **{"verdict": "ok", "result[3]": 0, "counter.THP_SPLIT_PAGE_FAILED": 1,
                      "counter.THP_SPLIT_PAGE": 0, "mthp.split_failed[9]": 1,
                      "mthp.split[9]": 0, "counter.THP_SPLIT_PMD": 0, "counter.PGLAZYFREE": 0,
                      "folio.f0.order": 9, "result[5]": [7]}),
         {"v5.17..v5.18": {"classification": "equal"},
          "v5.18..v6.12": {"classification": "intended", "rules": ["underused-thp-queued"]},
          "v6.12..v6.14": {"classification": "equal"}, "v6.14..v6.15": {"classification": "equal"},
          "v6.15..v6.16": {"classification": "equal"}})

scenario("split-failed-pinned-mthp", "L",
         "The mTHP form of split-failed-pinned-thp: a 16-page mTHP pinned at page 0, MADV_FREE "
         "of pages 4-11. madvise_free_pte_range() (v6.10+) splits a large folio the range "
         "covers in part; the split fails on the pin (split_failed[4] +1, not a PMD-order "
         "folio so no THP_SPLIT_PAGE_FAILED) and the walk skips the folio's PTEs: nothing is "
         "lazyfreed, the folio stays whole. v5.x have no mTHP: 16 small folios, pages 4-11 "
         "are lazyfreed one by one (PGLAZYFREE +8 once lru_add_drain moves them).",
         [op("T0", "mmap", addr=A, pages=16, order=4),
          op("T0", "write", addr=A, pages=16, value=7),
          op("T0", "pin", addr=A, pin="p0"),
          op("T0", "madvise", addr=A + 4 * P, pages=8, advice="MADV_FREE"),
          op("T0", "lru_add_drain"),
          op("T0", "unpin", pin="p0", dirty=False)],
         merge(each(ALL, **{"verdict": "ok", "result[3]": 0, "counter.THP_SPLIT_PAGE_FAILED": 0,
                            "mthp.split[4]": 0}),
               each(OLD + ("v6.15", "v6.16"), **{"mthp.split_failed[4]": 1,
                                                 "counter.PGLAZYFREE": 0, "folio.f0.order": 4}),
               each(("v5.17", "v5.18"), **{"mthp.split_failed[4]": 0, "counter.PGLAZYFREE": 8})),
         {"v5.17..v5.18": {"classification": "equal"},
          "v5.18..v6.12": {"classification": "intended", "rules": ["anon-mthp-faults"]},
          "v6.12..v6.14": {"classification": "equal"}, "v6.14..v6.15": {"classification": "equal"},
          "v6.15..v6.16": {"classification": "equal"}})

# Issue 15, item 1: feb889fb40fa (v5.11) keeps a maybe-pinned folio out of the swap cache.
scenario("pinned-anon-not-swapped", "L",
         "A small swapbacked anon page pinned (pin_user_pages_fast) and MADV_PAGEOUT'd with a "
         "swap area on: shrink_folio_list()'s swap block tests folio_maybe_dma_pinned() before "
         "add_to_swap() (feb889fb40fa \"mm: don't put pinned pages into the swap cache\", "
         "v5.11, so every modelled version) and goes to keep_locked: no swap slot, no unmap "
         "attempt, not activated. The PTE stays; the read returns the data.",
         [op("T0", "mmap", addr=A, pages=1),
          op("T0", "write", addr=A, value=7),
          op("T0", "pin", addr=A, pin="p0"),
          op("T0", "madvise", addr=A, pages=1, advice="MADV_PAGEOUT"),
          op("T0", "unpin", pin="p0", dirty=False),
          op("T0", "read", addr=A)],
         each(ALL, **{"verdict": "ok", "result[3]": 0, "swap.slots": 0, "counter.PSWPOUT": 0,
                      "counter.nr_unmap_fail": 0, "mm0.MM_ANONPAGES": 1, "mm0.MM_SWAPENTS": 0,
                      "folio.f0.flags": "anon,swapbacked,lru",
                      "folio.f0.lru": "LRU_INACTIVE_ANON", "result[5]": [7]}),
         {"v5.17..v5.18": {"classification": "equal"}, "v5.18..v6.12": {"classification": "equal"},
          "v6.12..v6.14": {"classification": "equal"}, "v6.14..v6.15": {"classification": "equal"},
          "v6.15..v6.16": {"classification": "equal"}})

# Issue 15, item 12: PAGEVEC_SIZE was 15 until 9cecde80aae0 (v6.9) made it 31.
scenario("lazyfree-batch-size", "H14",
         "15 small folios MADV_FREE'd, then kswapd, then reads. v5.x (PAGEVEC_SIZE 15, "
         "mark_page_lazyfree() moves the pagevec when pagevec_add() fills it): the 15th page "
         "moves all 15 to the file LRU during the call (PGLAZYFREE +15); kswapd discards them "
         "clean (PGLAZYFREED +15) and the reads fault in zero-filled pages. From v6.9 the batch "
         "holds 31: the 15 folios stay queued. v6.14-v6.16 cleared PG_lru at queue time, so "
         "kswapd isolates nothing and the data stays. 6.12.117 (the revert of 33dfe9204f29) "
         "leaves them on the anon LRU: kswapd swaps the still-swapbacked folios out, the batch's "
         "reference keeps them in the swap cache, and the reads map them back from it.",
         [op("T0", "mmap", addr=A, pages=15), op("T0", "write", addr=A, pages=15, value=7),
          op("T0", "madvise", addr=A, pages=15, advice="MADV_FREE"), op("R", "reclaim"),
          op("T0", "read", addr=A, pages=15)],
         merge(each(ALL, **{"verdict": "ok", "result[2]": 0, "counter.PSWPIN": 0}),
               each(("v5.17", "v5.18"), **{"counter.PGLAZYFREE": 15, "counter.PGLAZYFREED": 15,
                                           "counter.PSWPOUT": 0, "result[4]": [0] * 15}),
               each(("v6.12",), **{"counter.PGLAZYFREE": 0, "counter.PGLAZYFREED": 0,
                                   "counter.PSWPOUT": 15, "result[4]": [7] * 15,
                                   "mm0.MM_ANONPAGES": 15, "mm0.MM_SWAPENTS": 0}),
               each(("v6.14", "v6.15", "v6.16"), **{"counter.PGLAZYFREE": 0,
                                                    "counter.PGLAZYFREED": 0,
                                                    "counter.PSWPOUT": 0, "result[3]": 0,
                                                    "result[4]": [7] * 15})),
         {"v5.17..v5.18": {"classification": "equal"},
          "v5.18..v6.12": {"classification": "intended", "rules": ["folio-batch-31"]},
          "v6.12..v6.14": {"classification": "intended", "rules": ["lazyfree-queue-clears-lru"]},
          "v6.14..v6.16": {"classification": "equal"}})

# Issue 15, item 4: v5.x MADV_FREE splits every PTE-mapped THP, even one it covers whole.
TH2 = TH + [{"name": "T1", "kind": "task", "mm": 1}]
scenario("madv-free-pte-mapped-thp-whole", "L",
         "A THP pinned, then fork(): copy_huge_pmd() splits the parent's pinned PMD and the child "
         "gets copies of the pages, so the parent keeps a PTE-mapped THP it maps alone. After "
         "the unpin, MADV_FREE of the whole 2 MiB. v6.10+ (K10) batches all 512 PTEs of the "
         "folio, covered whole, and lazyfrees it whole (PGLAZYFREE +512, no split). v5.x "
         "madvise_free_pte_range() splits every PTE-mapped THP it meets (page_mapcount 1, "
         "trylock): THP_SPLIT_PAGE +1, the split's unmap queues it on the deferred list on the "
         "way (THP_DEFERRED_SPLIT_PAGE +1), and the 512 small folios are lazyfreed one by one "
         "(PGLAZYFREE +512 once the drain has moved the last pagevec).",
         [op("T0", "mmap", addr=A, pages=512, order=9),
          op("T0", "write", addr=A, pages=512, value=7),
          op("T0", "pin", addr=A, pin="p0"),
          op("T0", "fork", child=1),
          op("T0", "unpin", pin="p0", dirty=False),
          op("T0", "madvise", addr=A, pages=512, advice="MADV_FREE"),
          op("T0", "lru_add_drain")],
         merge(each(ALL, **{"verdict": "ok", "result[5]": 0, "counter.THP_SPLIT_PMD": 1,
                            "counter.PGLAZYFREE": 512, "counter.THP_SPLIT_PAGE_FAILED": 0}),
               each(OLD + ("v6.15", "v6.16"), **{"counter.THP_SPLIT_PAGE": 0,
                                                 "folio.f0.order": 9,
                                                 "folio.f0.flags": "anon,lru"}),
               each(("v5.17", "v5.18"), **{"counter.THP_SPLIT_PAGE": 1,
                                           "counter.THP_DEFERRED_SPLIT_PAGE": 1,
                                           "folio.f0.order": 0})),
         {"v5.17..v5.18": {"classification": "equal"},
          "v6.12..v6.14": {"classification": "equal"}, "v6.14..v6.15": {"classification": "equal"},
          "v6.15..v6.16": {"classification": "equal"}}, threads=TH2)

# Issue 15, item 5: v6.15's MM-owner tracking says "shared" where 6.12's guess from page 0 did not.
scenario("mapped-shared-disjoint-halves", "L",
         "A 16-page mTHP shared by fork(); the parent MADV_DONTNEEDs pages 8-15 and the child "
         "pages 0-7, so each page is mapped once but by two MMs. The parent's MADV_FREE of pages "
         "0-3 covers the folio in part and splits it unless it is shared. v6.12-v6.14 "
         "folio_likely_mapped_shared() guesses from page 0 (mapped once): not shared, so the "
         "split runs (split +1; its unmap leaves the folio partially mapped on the way, "
         "split_deferred +1) and pages 0-3 are lazyfreed. v6.15+ folio_maybe_mapped_shared() "
         "reads the MM-owner bit, set since the child's fork took the second slot: shared, "
         "skipped; nothing is lazyfreed. v5.x have no mTHP: pages 0-3 are small and mapped "
         "only by the parent.",
         [op("T0", "mmap", addr=A, pages=16, order=4),
          op("T0", "write", addr=A, pages=16, value=7),
          op("T0", "fork", child=1),
          op("T0", "madvise", addr=A + 8 * P, pages=8, advice="MADV_DONTNEED"),
          op("T1", "madvise", addr=A, pages=8, advice="MADV_DONTNEED"),
          op("T0", "madvise", addr=A, pages=4, advice="MADV_FREE"),
          op("T0", "lru_add_drain")],
         merge(each(ALL, **{"verdict": "ok", "result[5]": 0}),
               each(OLD, **{"mthp.split[4]": 1, "mthp.split_deferred[4]": 1,
                            "counter.PGLAZYFREE": 4}),
               each(("v6.15", "v6.16"), **{"mthp.split[4]": 0, "mthp.split_deferred[4]": 0,
                                           "counter.PGLAZYFREE": 0, "folio.f0.order": 4}),
               each(("v5.17", "v5.18"), **{"counter.PGLAZYFREE": 4})),
         {"v5.17..v5.18": {"classification": "equal"},
          "v6.12..v6.14": {"classification": "equal"},
          "v6.14..v6.15": {"classification": "intended", "rules": ["mm-id-mapped-shared"]},
          "v6.15..v6.16": {"classification": "equal"}}, threads=TH2)

# Issue 15, item 2: folio_referenced() counts referenced mappings (VMAs), not young PTEs.
scenario("referenced-mthp-one-vma", "L",
         "A lazyfree 16-page mTHP whose first two pages are read again before kswapd runs: two "
         "young PTEs in one VMA. folio_referenced_one() adds one to pra->referenced per VMA "
         "that had any young PTE, so folio_referenced() returns 1; PG_referenced was clear "
         "(lru_lazyfree() clears it), so folio_check_references() sets it and keeps the folio "
         "(FOLIOREF_KEEP): it stays whole, inactive on the file LRU, not discarded. v5.x have no "
         "mTHP: of 16 small folios the two read ones are kept the same way and the other 14 "
         "are discarded.",
         mthp16() + [op("T0", "lru_add_drain"), op("T0", "read", addr=A, pages=2),
                     op("R", "reclaim"), op("T0", "read", addr=A, pages=16)],
         merge(each(ALL, **{"verdict": "ok"}),
               each(OLD + ("v6.15", "v6.16"), **{"counter.PGLAZYFREED": 0, "mm0.MM_ANONPAGES": 16,
                                                 "folio.f0.order": 4,
                                                 "folio.f0.flags": "anon,lru,referenced",
                                                 "folio.f0.lru": "LRU_INACTIVE_FILE",
                                                 "result[6]": [7] * 16}),
               each(("v5.17", "v5.18"), **{"counter.PGLAZYFREED": 14, "mm0.MM_ANONPAGES": 2,
                                           "result[6]": [7, 7] + [0] * 14})),
         {"v5.17..v5.18": {"classification": "equal"},
          "v6.12..v6.14": {"classification": "equal"}, "v6.14..v6.15": {"classification": "equal"},
          "v6.15..v6.16": {"classification": "equal"}})

# Issue 15, item 7: the slow GUP path dirties a PMD it pins for write (touch_pmd()).
TH_T1 = TH + [{"name": "T1", "kind": "task", "mm": 0}]
scenario("gup-slow-touch-pmd", "L",
         "A clean lazyfree PMD-mapped THP pinned for write by another thread with "
         "pin_user_pages_fast(): between gup-fast's grab and its recheck, T0 reads the THP, "
         "which sets the PMD's young bit, so the recheck sees another PMD value, backs off and "
         "falls back to the slow path. follow_huge_pmd() with FOLL_TOUCH calls touch_pmd(), "
         "which sets young and, for FOLL_WRITE, dirty in the PMD. MADV_PAGEOUT then meets a "
         "dirty PMD. v6.15+ __discard_anon_folio_pmd_locked() moves the dirty bit to the folio "
         "and sets swapbacked; the walk aborts, the THP stays PMD-mapped (no split). v6.14 "
         "refuses the dirty PMD and splits it, v6.12 and v5.18 split it at once: the PTEs "
         "inherit the dirty bit, PTE0 makes the folio swapbacked and the walk aborts. v5.17 "
         "splits the lazyfree THP before unmapping it, which the pin makes fail: kept. Nothing "
         "is lost anywhere.",
         [op("T0", "mmap", addr=A, pages=512, order=9),
          op("T0", "write", addr=A, pages=512, value=7),
          op("T0", "madvise", addr=A, pages=512, advice="MADV_FREE"),
          op("T1", "pin", addr=A, pin="p0"),
          op("T0", "read", addr=A),
          PAGEOUT512,
          op("T1", "unpin", pin="p0", dirty=False),
          op("T0", "read", addr=A)],
         merge(each(ALL, **{"verdict": "ok", "result[3]": 1, "result[7]": [7],
                            "counter.PGLAZYFREED": 0}),
               each(("v6.15", "v6.16"), **{"counter.THP_SPLIT_PMD": 0,
                                           "counter.nr_lazyfree_fail": 512,
                                           "mm0.pmd[0x200000]": "f0:dyw"}),
               each(OLD + ("v5.18",), **{"counter.THP_SPLIT_PMD": 1,
                                         "counter.nr_lazyfree_fail": 512,
                                         "mm0.pte[0x200000]": "f0+0:dyw"}),
               each(("v5.17",), **{"counter.THP_SPLIT_PMD": 0, "counter.THP_SPLIT_PAGE_FAILED": 1,
                                   "counter.nr_lazyfree_fail": 0})),
         {"v6.12..v6.14": {"classification": "equal"},
          "v6.14..v6.15": {"classification": "intended", "rules": ["no-pmd-split-for-lazyfree"]},
          "v6.15..v6.16": {"classification": "equal"}},
         schedule=[(3, "gup_fast_grabbed", 1, "T0")], threads=TH_T1)

# Issue 15, item 10: a store between the PMD discard's first dirty test and its clear.
scenario("pmd-discard-store-before-clear", "L",
         "kswapd reclaims a clean lazyfree PMD-mapped THP; __discard_anon_folio_pmd_locked() "
         "finds the folio and the PMD clean, and before pmdp_huge_clear_flush() another CPU "
         "stores 9 into page 0 through the still-present PMD (the MMU sets its dirty bit; no "
         "lock is needed). The clear returns the dirtied word and the second test sees it. "
         "v6.14 refuses, restores the cleared (dirty) word and falls back to the PMD split: "
         "the PTEs inherit the dirty bit, PTE0 makes the folio swapbacked, the walk aborts. "
         "v6.15+ dirties the folio from the cleared word, makes it swapbacked, restores the "
         "PMD and aborts, with no split. Both keep the data. v6.12 and v5.x have no such "
         "place (6.12.117 does not call the PMD discard): the preemption falls at the "
         "reclaim's end, every page is discarded clean, and the store faults in a new THP.",
         thp() + [op("R", "reclaim"), op("T0", "write", addr=A, value=9),
                  op("T0", "read", addr=A, pages=2)],
         merge(each(ALL, **{"verdict": "ok"}),
               each(("v6.14",), **{"counter.THP_SPLIT_PMD": 1, "counter.nr_lazyfree_fail": 512,
                                   "counter.PGLAZYFREED": 0, "result[5]": [9, 7],
                                   "mm0.pte[0x200000]": "f0+0:dyw"}),
               each(("v6.15", "v6.16"), **{"counter.THP_SPLIT_PMD": 0,
                                           "counter.nr_lazyfree_fail": 512,
                                           "counter.PGLAZYFREED": 0, "result[5]": [9, 7],
                                           "mm0.pmd[0x200000]": "f0:dyw"}),
               each(("v5.17", "v5.18", "v6.12"), **{"counter.PGLAZYFREED": 512,
                                                    "result[5]": [9, 0]})),
         {"v6.14..v6.15": {"classification": "intended", "rules": ["no-pmd-split-for-lazyfree"]},
          "v6.15..v6.16": {"classification": "equal"}},
         schedule=[(3, "pmd_checked", 1, "T0")])

# Issue 15, item 12: with PG_lru kept while queued, a second MADV_FREE queues the folio again.
scenario("lazyfree-requeue-other-cpu", "H14",
         "One small page MADV_FREE'd by two threads of one process on two CPUs before either "
         "lazyfree batch moves. v5.x and 6.12.117 (PG_lru still set while queued: no "
         "33dfe9204f29, or its revert) let the second folio_mark_lazyfree() queue the folio "
         "again in the other CPU's batch, another reference (refcount 3: the mapping and two "
         "batches); v6.14+ cleared PG_lru at the first queueing, so the second call leaves it "
         "alone (refcount 2). Nothing moves yet (a batch of one), so PGLAZYFREE is 0.",
         [op("T0", "mmap", addr=A, pages=1), op("T0", "write", addr=A, value=7),
          op("T0", "madvise", addr=A, pages=1, advice="MADV_FREE"),
          op("T1", "madvise", addr=A, pages=1, advice="MADV_FREE")],
         merge(each(ALL, **{"verdict": "ok", "result[2]": 0, "result[3]": 0,
                            "counter.PGLAZYFREE": 0}),
               each(("v5.17", "v5.18", "v6.12"), **{"folio.f0.ref": 3}),
               each(("v6.14", "v6.15", "v6.16"), **{"folio.f0.ref": 2})),
         {"v5.17..v5.18": {"classification": "equal"}, "v5.18..v6.12": {"classification": "equal"},
          "v6.12..v6.14": {"classification": "intended", "rules": ["lazyfree-queue-clears-lru"]},
          "v6.14..v6.16": {"classification": "equal"}}, threads=TH_T1)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for sc in SCENARIOS:
        path = OUT / f"{sc['name']}.json"
        path.write_text(json.dumps(sc, indent=2) + "\n")
    print(f"wrote {len(SCENARIOS)} corpus files to {OUT}")


if __name__ == "__main__":
    main()
