"""Harness versus kernel: only a modelled kernel report is a CRASH; any other
exception inside a model is foliodiff's own defect (Verdict.HARNESS)."""

from __future__ import annotations

import pytest

from engine.corpus.entries import CORPUS_DIR, load_entry
from engine.diff.differential import differential
from engine.errors import HarnessError, KernelBug, RefcountUnderflow, UseAfterFree
from engine.execution.oracle import Verdict
from engine.execution.runner import run
from engine.kernels.v6_14 import V6_14
from engine.kernels.v6_15 import V6_15
from engine.mm.sched import YieldPoint

H1 = load_entry(str(CORPUS_DIR / "h1-clean-mthp-reclaim.json"))["program"]


def test_a_python_error_in_a_model_is_a_harness_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self, *args):
        return [][1]                       # an IndexError, as the DMA bug raised one
    monkeypatch.setattr(V6_15, "ttu_lazyfree", broken)
    out = run(H1, "v6.15")
    assert out.verdict is Verdict.HARNESS
    assert out.crash.field == "IndexError" and out.crash.op_index == 3
    # the stack keeps the scheduler's frames too: the defect may be there
    assert out.crash.stack[0].startswith("try_to_unmap_one (kernels/v6_15.py")
    assert out.crash.stack[-1].startswith("run (execution/runner.py")


def test_a_harness_verdict_is_never_a_kernel_divergence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(V6_15, "ttu_lazyfree", lambda self, *a: {}["missing"])
    report = differential(H1, "v6.14", "v6.15")
    assert report.divergences == [] and not report.unexpected
    assert [o.engine for o in report.harness] == ["v6.15"]
    assert not report.equal
    assert report.to_dict()["harness"][0]["field"] == "KeyError"


@pytest.mark.parametrize("report", [KernelBug, UseAfterFree, RefcountUnderflow])
def test_a_modelled_kernel_report_is_a_crash(monkeypatch: pytest.MonkeyPatch, report) -> None:
    def bug(self, *args):
        raise report("modelled")
    monkeypatch.setattr(V6_15, "ttu_lazyfree", bug)
    out = run(H1, "v6.15")
    assert out.verdict is Verdict.CRASH and out.crash.field == report.__name__
    [d] = differential(H1, "v6.14", "v6.15").divergences
    assert d.kind.value == "crash" and d.classification.value == "unexpected"


def test_an_out_of_bounds_page_table_access_is_a_crash() -> None:
    h12 = load_entry(str(CORPUS_DIR / "h12-mremap-straddle.json"))["program"]
    out = run(h12, "v6.15")
    assert out.verdict is Verdict.CRASH and out.crash.field == "PageTableOutOfBounds"


def test_a_yield_without_a_place_is_a_harness_error(monkeypatch: pytest.MonkeyPatch) -> None:
    original = V6_14.ttu_between_ptes

    def unnamed(self, pvmw, nr_pages):
        yield None                                  # not a YieldPoint
        yield from original(self, pvmw, nr_pages)
    monkeypatch.setattr(V6_14, "ttu_between_ptes", unnamed)
    out = run(H1, "v6.14")                           # per PTE: reaches it
    assert out.verdict is Verdict.HARNESS, out.crash
    assert out.crash.field == HarnessError.__name__ and "not a YieldPoint" in out.crash.message


def test_every_place_a_run_reaches_is_named() -> None:
    """No kernel path yields anything but a YieldPoint (a lock wait is WAIT)."""
    for path in sorted(CORPUS_DIR.glob("*.json")):
        program = load_entry(str(path))["program"]
        for engine in ("v5.17", "v6.14", "v6.15", "v6.16"):
            out = run(program, engine)
            assert out.verdict is not Verdict.HARNESS, (path.name, engine, out.crash)
            assert all(type(kind) is YieldPoint for _, kind, _ in out.places)
