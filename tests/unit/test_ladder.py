"""The engines after v6.16 (issue 19; docs/kernel-notes.md sections 22 and 23): the
deferred split scan's retry (v6.19) and its list_lru walk (v7.2), lazyfree batches that
respect the write bit (v7.0, v6.19.y), and 7.3.y's PMD split written once with 6.12.y's.
"""

from __future__ import annotations

import pytest

from engine.diff.differential import Classification, differential
from engine.execution.runner import run
from engine.kernels import KERNELS, version_tree
from engine.kernels.pmd_split_only import LazyfreePmdSplitOnly
from engine.kernels.v6_12 import V6_12
from engine.kernels.v7_3 import V7_3
from engine.program.format import parse_program

A = 0x200000
THREADS = [{"name": "T0", "kind": "task", "mm": 0}, {"name": "S", "kind": "kthread", "mm": None}]


def program(ops, threads=THREADS):
    return parse_program({"version": 2, "threads": threads, "ops": ops, "schedule": []})


def pinned_partial_mthps(n: int, nr_to_scan: int):
    """@n 16-page mTHPs, each pinned at page 0 and half unmapped (queued, unsplittable),
    then one deferred_split_scan(@nr_to_scan)."""
    ops = []
    for i in range(n):
        a = A + i * 0x10000
        ops += [{"thread": "T0", "op": "mmap", "addr": a, "pages": 16, "order": 4},
                {"thread": "T0", "op": "write", "addr": a, "pages": 16, "value": 7},
                {"thread": "T0", "op": "pin", "addr": a, "pin": f"p{i}"},
                {"thread": "T0", "op": "munmap", "addr": a + 0x8000, "pages": 8}]
    ops.append({"thread": "S", "op": "deferred_split_scan", "nr_to_scan": nr_to_scan})
    return program(ops)


@pytest.mark.parametrize(("engine", "failed"), [
    ("v6.16", 3), ("v6.19", 7), ("v6.19.y", 7), ("v7.0", 7), ("v7.2", 3), ("v7.3", 3)])
def test_each_scanned_folio_counts_against_nr_to_scan_and_6_19_retries(engine, failed):
    # 3 queued, nr_to_scan 7: 6.19 takes 3, 3 and 1 in three passes; the others try each once
    out = run(pinned_partial_mthps(3, 7), engine).comparable()
    assert out["mthp.split_failed[4]"] == failed
    assert len(out["deferred_split_queue"]) == 3           # every one back on the queue


def test_a_6_19_pass_takes_at_most_a_folio_batch():
    out = run(pinned_partial_mthps(33, 33), "v6.19").comparable()
    assert out["mthp.split_failed[4]"] == 33                # passes of 31 and 2, then nr_to_scan is 0
    assert run(pinned_partial_mthps(33, 40), "v6.19").comparable()["mthp.split_failed[4]"] == 40


def test_the_retry_is_intended_on_both_edges():
    p = pinned_partial_mthps(1, 4)
    for a, b, rule in (("v6.16", "v6.19", "deferred-split-scan-retry"),
                       ("v7.0", "v7.2", "deferred-split-list-lru")):
        d = differential(p, a, b).divergences[0]
        assert d.classification is Classification.INTENDED and [r.name for r in d.rules] == [rule]


def clean_pmd_thp():
    return program([{"thread": "T0", "op": "mmap", "addr": A, "pages": 512, "order": 9},
                    {"thread": "T0", "op": "write", "addr": A, "pages": 512, "value": 7},
                    {"thread": "T0", "op": "madvise", "addr": A, "pages": 512, "advice": "MADV_FREE"},
                    {"thread": "T0", "op": "madvise", "addr": A, "pages": 512,
                     "advice": "MADV_PAGEOUT"}])


def test_7_3_splits_a_lazyfree_pmd_thp_and_unmaps_it_in_one_batch():
    v72, v73, v612 = (run(clean_pmd_thp(), e).comparable() for e in ("v7.2", "v7.3", "v6.12"))
    assert (v72["counter.THP_SPLIT_PMD"], v72["counter.PGLAZYFREED"]) == (0, 512)
    assert (v73["counter.THP_SPLIT_PMD"], v73["counter.PGLAZYFREED"]) == (1, 512)
    # one batch of 512 alike PTEs: never partially mapped, unlike 6.12.117's PTE-by-PTE discard
    assert v73["counter.THP_DEFERRED_SPLIT_PAGE"] == 0 and v612["counter.THP_DEFERRED_SPLIT_PAGE"] == 1
    d = differential(clean_pmd_thp(), "v7.2", "v7.3").divergences[0]
    assert [r.name for r in d.rules] == ["lazyfree-pmd-discard-removed"]


def test_the_pmd_split_is_written_once_for_6_12_y_and_7_3_y():
    assert issubclass(V6_12, LazyfreePmdSplitOnly) and issubclass(V7_3, LazyfreePmdSplitOnly)
    assert "DISCARDS_LAZYFREE_PMD" not in vars(V6_12) and "DISCARDS_LAZYFREE_PMD" not in vars(V7_3)
    assert not V6_12.DISCARDS_LAZYFREE_PMD and not V7_3.DISCARDS_LAZYFREE_PMD
    assert V6_12.LAZYFREE_QUEUE_CLEARS_LRU is False           # 6.12.y's other change stays its own
    assert KERNELS["v7.2"].DISCARDS_LAZYFREE_PMD


def test_branches_after_v6_16():
    t = version_tree()
    assert t.parents["v6.19.y"] == "v6.19" and t.branches["v6.19.y"] == "6.19.y"
    assert t.parents["v7.3"] == "v7.2" and t.branches["v7.3"] == "7.3.y"
    assert t.parents["v7.0"] == "v6.19" and t.branches["v7.0"] == "mainline"


def test_a_restored_batch_keeps_read_only_ptes_read_only_from_29f40594a281():
    # fork, the child unmaps, the parent's write reuses the mTHP (v6.15+): PTE 0 writable,
    # PTEs 1-15 read-only; a pin across MADV_PAGEOUT makes reclaim restore the batch
    threads = [{"name": "T0", "kind": "task", "mm": 0}, {"name": "T1", "kind": "task", "mm": 1}]
    p = program([{"thread": "T0", "op": "mmap", "addr": A, "pages": 16, "order": 4},
                 {"thread": "T0", "op": "write", "addr": A, "pages": 16, "value": 7},
                 {"thread": "T0", "op": "fork", "child": 1},
                 {"thread": "T1", "op": "munmap", "addr": A, "pages": 16},
                 {"thread": "T0", "op": "write", "addr": A, "value": 9},
                 {"thread": "T0", "op": "madvise", "addr": A, "pages": 16, "advice": "MADV_FREE"},
                 {"thread": "T0", "op": "pin", "addr": A, "pin": "p0", "write": False},
                 {"thread": "T0", "op": "madvise", "addr": A, "pages": 16, "advice": "MADV_PAGEOUT"},
                 {"thread": "T0", "op": "unpin", "pin": "p0", "dirty": False}], threads)
    for engine, page1 in (("v6.16", "f0+1:w"), ("v6.19", "f0+1:w"), ("v6.19.y", "f0+1:"), ("v7.0", "f0+1:")):
        out = run(p, engine).comparable()
        assert (out["mm0.pte[0x200000]"], out["mm0.pte[0x201000]"]) == ("f0+0:w", page1), engine
    d = differential(p, "v6.19", "v6.19.y").divergences[0]
    assert [r.name for r in d.rules] == ["lazyfree-batch-respects-write"]
