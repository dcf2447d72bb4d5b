"""Findings grouped by cause (engine.execution.provenance): the kernel decision
that lost the data or broke the invariant, not where an oracle noticed it.

The programs in tests/data/causes are minimized findings of v6.14,v6.15
campaigns, which before grouping by cause were stored under one signature
per noticing operation: the reclaim PMD discard that puts a cleared PMD
back after a concurrent MADV_DONTNEED skipped it (noticed in reclaim, in
mprotect, by a fault; as lost data or as a mapping without a VMA), and
v6.15's batch restore past the VMA's end (noticed in reclaim or in fork).
"""

from __future__ import annotations

import pathlib

import pytest

from engine import Kind, differential, load_any
from engine.execution.provenance import DataSource, invariant_path, loss_cause
from engine.execution.runner import run

CAUSES = pathlib.Path(__file__).parent.parent / "data" / "causes"
PMD_RESTORE = "discard_anon_folio_pmd_locked<unmap_huge_pmd_locked<try_to_unmap_one"
BATCH_RESTORE = "set_ptes<ttu_lazyfree<try_to_unmap_one"


def _divergence(name: str):
    [d] = differential(load_any(str(CAUSES / f"{name}.json")), "v6.14", "v6.15").unexpected
    return d


@pytest.mark.parametrize("name", ["pmd-restore-loss-noticed-in-reclaim",
                                  "pmd-restore-loss-noticed-in-mprotect",
                                  "pmd-restore-loss-noticed-by-fault"])
def test_one_loss_decision_one_signature_whoever_noticed(name: str) -> None:
    d = _divergence(name)
    assert d.kind is Kind.DATA_LOSS
    assert d.signature == f"v6.14..v6.15|cause|{PMD_RESTORE}"
    assert d.cause is not None and d.cause.source is DataSource.ZERO
    assert d.function == "discard_anon_folio_pmd_locked"
    assert "lost by " + PMD_RESTORE in d.detail


@pytest.mark.parametrize("name", ["batch-restore-vma-write-in-reclaim",
                                  "batch-restore-vma-write-in-fork"])
def test_invariant_grouped_by_the_path_that_broke_it(name: str) -> None:
    d = _divergence(name)
    assert d.kind is Kind.INVARIANT and d.field == "mm.pte.page_table_check.vma_write"
    assert d.signature == f"v6.14..v6.15|cause|{BATCH_RESTORE}"


@pytest.mark.parametrize("name", ["pmd-restore-no-vma-in-reclaim",
                                  "pmd-restore-no-vma-in-mprotect"])
def test_first_breaking_write_not_the_paths_that_carried_it_on(name: str) -> None:
    # the restored PMD is split and its PTEs restored again later: the first
    # write that mapped the page where no VMA is stays the cause, the same
    # decision as the lost data above: one group
    d = _divergence(name)
    assert d.kind is Kind.INVARIANT and d.field == "mm.pte.page_table_check.no_vma"
    assert d.signature == f"v6.14..v6.15|cause|{PMD_RESTORE}"


def test_dma_into_a_page_already_taken_away() -> None:
    h5 = load_any("corpus/h5-dma-into-lazyfree.json")
    crash = run(h5, "v5.17").crash
    assert crash is not None
    cause = loss_cause(h5, "v5.17", crash)
    assert cause is not None and cause.detached
    assert cause.source is DataSource.DMA_WRITE
    assert cause.decision == "try_to_unmap_one<try_to_unmap<_shrink_one"
    assert cause.op_index == 5 and cause.source_op == 6


@pytest.mark.parametrize("name", ["dma-into-a-page-never-written",
                                  "dma-after-a-new-page-faulted-in"])
def test_a_discard_that_changes_no_contents_still_takes_the_page(name: str) -> None:
    # Campaigns' finds: the page was pinned (faulted in, zero), MADV_FREE'd,
    # discarded by v5.17's reclaim while still zero, then written by the
    # device through the pin.  The contents never changed at the address;
    # the page did, and the loss groups with H5's.  In the second, a read
    # faulted a new page in between: the cause is the change that took the
    # page the device wrote, not the last change of the mapping.
    program = load_any(str(CAUSES / f"{name}.json"))
    [d] = differential(program, "v5.17", "v6.14").unexpected
    h5 = load_any("corpus/h5-dma-into-lazyfree.json")
    [same] = differential(h5, "v5.17", "v6.14").unexpected
    assert d.signature == same.signature == (
        "v5.17..v6.14|cause|try_to_unmap_one<try_to_unmap<_shrink_one|dma_write")
    assert d.cause is not None and d.cause.detached and d.cause.wanted == 1


def test_no_cause_for_a_crash_it_does_not_describe() -> None:
    h5 = load_any("corpus/h5-dma-into-lazyfree.json")
    crash = run(h5, "v5.17").crash
    assert crash is not None
    assert invariant_path(h5, "v5.17", crash) is None
    crash.field = "mm0.data[0x400000]"      # a page the run never lost: no such end
    assert loss_cause(h5, "v5.17", crash) is None


def test_a_developer_s_profiler_runs_on_and_sees_the_same_cause() -> None:
    """Provenance profiles its replays with sys.setprofile; under cProfile (how a
    developer measures foliodiff) it hands the profiler back between the steps it
    watches and after, instead of failing on the C profiler it found."""
    import cProfile
    import pstats
    import sys

    program = load_any(str(CAUSES / "pmd-restore-loss-noticed-in-reclaim.json"))
    plain = [d.signature for d in differential(program, "v6.14", "v6.15").unexpected]
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        profiled = [d.signature for d in differential(program, "v6.14", "v6.15").unexpected]
        assert sys.getprofile() is profiler
    finally:
        profiler.disable()
    assert profiled == plain and plain[0].startswith("v6.14..v6.15|cause|")
    # The profiler saw the run, the replays' unprofiled steps included.
    seen = {key[2] for key in pstats.Stats(profiler).stats}   # type: ignore[attr-defined]
    assert {"differential", "cause_of", "step_end"} <= seen
