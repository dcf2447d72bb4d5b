"""The fuzz benchmark's targets recognise their scenario and nothing near it."""

from __future__ import annotations

import pathlib
from dataclasses import replace

import pytest

from engine.corpus.entries import load_any
from engine.diff.differential import differential
from engine.program.format import Program, parse_program
from fuzz.bench import TARGETS, Target, Trial, _why_it_ended
from service.bench import reduce_and_replay

CORPUS = pathlib.Path(__file__).resolve().parents[2] / "corpus"


def corpus(name: str) -> Program:
    return load_any(str(CORPUS / f"{name}.json"))


def matches(target: Target, program: Program) -> bool:
    spec = TARGETS[target]
    return spec.match(program, differential(program, spec.engine_a, spec.engine_b)) is not None


@pytest.mark.parametrize("target, scenario", [
    (Target.DMA_DATA_LOSS, "h5-dma-into-lazyfree"),
    (Target.SHRINKER_SWAPBACKED, "h2-shrinker-ref-between-ptes"),
    (Target.PMD_REDIRTY_SPLIT, "h8-pmd-thp-redirty"),
    (Target.OOB_BATCH, "h12-mremap-straddle"),
    (Target.VMA_BOUND, "h12-vma-boundary-pinned-mthp"),
    (Target.VMA_BOUND, "h12-vma-boundary-lazyfree-mthp"),
])
def test_target_recognises_its_scenario(target: Target, scenario: str) -> None:
    assert matches(target, corpus(scenario))


@pytest.mark.parametrize("target, scenario", [
    # an extra reference by a pin, not the shrinker's: the same rule, another cause
    (Target.SHRINKER_SWAPBACKED, "vmsplice-style-extra-ref"),
    # a pinned clean PMD THP (H9): split on v6.14 too, but not because it was dirty
    (Target.PMD_REDIRTY_SPLIT, "h9-pmd-thp-pinned"),
    (Target.PMD_REDIRTY_SPLIT, "h10-pmd-thp-clean"),
    (Target.DMA_DATA_LOSS, "h1-clean-mthp-reclaim"),
    # batches that stay inside one table and one VMA
    (Target.OOB_BATCH, "h1-clean-mthp-reclaim"),
    (Target.VMA_BOUND, "h1-clean-mthp-reclaim"),
    (Target.VMA_BOUND, "h13-partial-madv-free"),
    # the straddle is a page-table end, not a VMA end: v6.16 bounds it either way
    (Target.VMA_BOUND, "h12-mremap-straddle"),
])
def test_target_rejects_neighbours(target: Target, scenario: str) -> None:
    assert not matches(target, corpus(scenario))


def test_dma_loss_without_reclaim_is_not_a_detection() -> None:
    data = corpus("h5-dma-into-lazyfree").to_dict()
    data["ops"] = [op for op in data["ops"] if op["op"] not in ("reclaim", "madvise")
                   or op.get("advice") == "MADV_FREE"]
    assert not matches(Target.DMA_DATA_LOSS, parse_program(data))


@pytest.mark.parametrize("target, scenario", [
    (Target.DMA_DATA_LOSS, "h5-dma-into-lazyfree"),
    (Target.PMD_REDIRTY_SPLIT, "h8-pmd-thp-redirty"),
])
def test_stored_reproducer_replays(tmp_path, target: Target, scenario: str) -> None:
    """Stored through a campaign's sink (minimized), read back, same signature, still the target."""
    trial = Trial("test", target.value, 0, True, 0.0, 1, program=corpus(scenario).to_dict())
    reduce_and_replay(trial, f"sqlite:///{tmp_path}/b.db")
    assert trial.error is None
    assert trial.replay_same_signature is True
    assert trial.ops_minimized is not None and trial.ops_minimized <= trial.ops_found


def test_summary_censors_trials_that_hit_the_cap() -> None:
    from fuzz.bench import summarize
    trials = [Trial("pct", "t", s, found, secs, 10) for s, (found, secs) in
              enumerate([(True, 3.0), (True, 5.0), (False, 60.0), (True, 1.0), (False, 60.0)])]
    row = summarize(trials, 60.0)["t"]["pct"]
    assert row["found"] == "3/5"
    assert row["median_s"] == 5.0 and row["min_s"] == 1.0 and row["max_s"] == "> 60"
    assert row["failed"] == 0
    trials[0] = Trial("pct", "t", 0, False, 60.0, 10)
    assert summarize(trials, 60.0)["t"]["pct"]["median_s"] == "> 60"
    trials[1] = Trial("pct", "t", 1, False, 60.0, 0, error="atheris exited 77")
    assert summarize(trials, 60.0)["t"]["pct"]["failed"] == 1


def test_bench_fuzz_fails_when_a_trial_failed(monkeypatch, tmp_path) -> None:
    """A trial that died is foliodiff's error: printed with why, and the command fails."""
    from typer.testing import CliRunner

    import service.bench
    from fuzz.bench import summarize
    from service.cli import app
    trials = [Trial("random", "vma-bound", 0, True, 2.0, 9),
              Trial("random", "vma-bound", 1, False, 30.0, 0, error="KeyError: 'x'")]

    def fake(fuzzers, targets, seeds, cap, *, seed_corpus, reduce, on_trial):
        for t in trials:
            on_trial(t)
        return {"summary": summarize(trials, cap), "minimized_ops_median_all": None,
                "replays_same_signature_all": "-",
                "trials": [{"error": t.error} for t in trials]}
    monkeypatch.setattr(service.bench, "bench_fuzz", fake)
    res = CliRunner().invoke(app, ["bench-fuzz", "--fuzzers", "random", "--targets", "vma-bound",
                                   "--seeds", "2", "--seed-corpus", "none",
                                   "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 4, res.output
    assert "KeyError: 'x'" in res.output and "1 of 2 trials failed" in res.output
    assert (tmp_path / "r.json").is_file()          # the figures are kept all the same


def test_bench_fuzz_names_a_bad_fuzzer() -> None:
    from typer.testing import CliRunner

    from service.cli import app
    res = CliRunner().invoke(app, ["bench-fuzz", "--fuzzers", "pct,afl"])
    assert res.exit_code != 0
    assert "--fuzzers" in res.output and "afl" in res.output


def test_dma_loss_without_a_lazyfree_discard_is_not_the_lazyfree_target() -> None:
    """A v5.17 loss of DMA data that no lazyfree discard caused is another bug than H5.

    A fuzzer once found such a loss: reclaim swapped out a pinned small page.  The
    model was wrong there (feb889fb40fa keeps a maybe-pinned folio out of the swap
    cache on every modelled version; corpus pinned-anon-not-swapped), so the case
    is built from H5's own run with its discard events taken out.
    """
    program = corpus("h5-dma-into-lazyfree")
    spec = TARGETS[Target.DMA_DATA_LOSS]
    report = differential(program, spec.engine_a, spec.engine_b)
    assert report.a.verdict.value == "data_loss" and spec.match(program, report) is not None
    report.a = replace(report.a, events=[(i, ev) for i, ev in report.a.events
                                         if ev != "ttu_lazyfree_discard"])
    assert spec.match(program, report) is None


def test_the_layout_targets_leave_out_the_seeds_that_build_their_layout() -> None:
    """oob-batch starts from no mremap; vma-bound from no batch that crosses a VMA end."""
    from fuzz.bench import target_seeds
    from fuzz.codec import decode
    oob = [decode(d) for d in target_seeds(Target.OOB_BATCH, CORPUS)]
    assert oob and not any(op.op == "mremap" for p in oob for op in p.ops)
    kept = {decode(d).to_json() for d in target_seeds(Target.VMA_BOUND, CORPUS)}
    for scenario in ("h12-vma-boundary-pinned-mthp", "h12-vma-boundary-lazyfree-mthp"):
        assert corpus(scenario).to_json() not in kept
    assert corpus("h1-clean-mthp-reclaim").to_json() in kept


def test_the_vma_bound_mutant_is_v6_16_inside_one_vma() -> None:
    """The mutant differs from v6.16 only where a batch would cross a VMA end."""
    from engine.execution.runner import run
    for name in ("h1-clean-mthp-reclaim", "h12-mremap-straddle", "h13-partial-madv-free"):
        program = corpus(name)
        assert (run(program, "v6.16-no-vma-bound").comparable()
                == run(program, "v6.16").comparable())


def test_an_atheris_trial_that_dies_says_of_what():
    """atheris prints the exception it did not catch on stdout; libFuzzer's report
    on stderr ends with the input's bytes, which say nothing of why."""
    stdout = ("=== Uncaught Python exception: ===\n"
              "CauseServerError: cause_of('v6.16-no-vma-bound') failed in the cause process:\n"
              "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
              "engine.errors.UnknownEngineError: engines: unknown engine 'v6.16-no-vma-bound'\n")
    stderr = "==1== ERROR: libFuzzer: fuzz target exited\n\\001\\000\\000\\001\n"
    assert _why_it_ended(stdout, stderr) == (
        "CauseServerError: cause_of('v6.16-no-vma-bound') failed in the cause process: ... "
        "engine.errors.UnknownEngineError: engines: unknown engine 'v6.16-no-vma-bound'")
    assert _why_it_ended("", stderr) == stderr
