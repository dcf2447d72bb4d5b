"""Time to first detection: how fast each fuzzer finds five known divergences.

The benchmark ClusterFuzz and the Hypothesis/atheris papers report: for each
(fuzzer, target) pair, several independent trials from different seeds, one
at a time on one core, each stopped at its first detection or at a cap.  A
trial that reaches the cap is *censored*: it counts as "not found within the
cap", and the median is only reported when more than half the trials found
the target.

The targets are the divergences the project was built to find:

1. :attr:`Target.DMA_DATA_LOSS`: v5.17 discards a clean lazyfree page that a
   device is writing through a GUP pin (kernel-semantics H5), against v6.14;
2. :attr:`Target.SHRINKER_SWAPBACKED`: v6.14 sets swapbacked on a clean
   lazyfree mTHP because the deferred-split shrinker's speculative reference
   showed up mid-walk (H2), against v6.15 (intended, rule
   ``swapbacked-only-if-dirty``);
3. :attr:`Target.PMD_REDIRTY_SPLIT`: v6.14 splits a redirtied lazyfree
   PMD-mapped THP (H8), against v6.15 (intended, rule
   ``no-pmd-split-for-lazyfree``);
4. :attr:`Target.OOB_BATCH`: the real bug of the seed series, v6.15's
   batch reading past the end of a PTE table when a lazyfree large folio
   straddles it (H12, fixed by ddd05742b45b), against v6.16; every seed
   with an mremap is left out, which is how the corpus makes that layout;
5. :attr:`Target.VMA_BOUND`: v6.16 with the VMA end taken out of its batch
   bound (:data:`engine.MUTANTS`) against v6.16's C twin: found
   when a run tells them apart, i.e. when a batch would cross a VMA end and
   that matters; every seed in which v6.15's batch crosses one is left out.

Each detection is then minimized (delta debugging that keeps the target and
the signature), stored through a :class:`fuzz.sink.FindingSink` into a real
SQLite store, read back from the store and replayed: the replay must show
the same signature and still be the target (that part needs the store:
``service.bench.bench_fuzz`` runs the trials and does it).

The in-process fuzzers (hypothesis, pct, exhaustive, random) time from their
first execution; atheris runs as its own libFuzzer process (as in a
campaign), which reports the time from its first execution too, so the
figures compare search speed, and atheris' start-up (instrumenting the
engine) is reported on its own.
"""

from __future__ import annotations

import enum
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import (
    MUTANTS,
    Classification,
    Divergence,
    Kind,
    Program,
    Report,
    Verdict,
    differential,
    register_mutants,
    run,
)
from engine.kernels import events
from fuzz.sources import Corpus, Fuzzer, Source, seed_inputs

#: v6.15 declares its PMD events itself (looked up by name: a name nobody
#: declared fails at import).
PMD_LAZYFREE_ABORT_DIRTY = events.event("pmd_lazyfree_abort_dirty")

#: Seconds a trial may search before it counts as not found.
DEFAULT_CAP = 60.0
#: What the atheris target prints when its bench target is found.
DETECTED = "foliodiff-detected "
#: What tells the atheris target it runs a trial (``python fuzz/atheris_target.py``):
#: the :class:`Target` value, and the cap in seconds.
BENCH_TARGET_ENV = "FOLIODIFF_BENCH_TARGET"
BENCH_CAP_ENV = "FOLIODIFF_BENCH_CAP"

# The VMA-bound target runs a mutant (in this process and in atheris').
register_mutants()


class Target(str, enum.Enum):
    """A divergence the benchmark times the fuzzers on."""

    DMA_DATA_LOSS = "dma-data-loss"
    SHRINKER_SWAPBACKED = "shrinker-swapbacked"
    PMD_REDIRTY_SPLIT = "pmd-redirty-split"
    OOB_BATCH = "oob-batch"
    VMA_BOUND = "vma-bound"


def _ops(program: Program) -> set[str]:
    return {op.op for op in program.ops}


def _dma_data_loss(program: Program, report: Report) -> Divergence | None:
    # The loss must be v5.17's (engine a), come through a device write, and
    # follow a lazyfree discard: v5.17 also loses DMA data when reclaim
    # unmaps a pinned page that is not lazyfree (fixed by PG_anon_exclusive,
    # 6c287605fd56), which is another bug than H5.
    if ("dma_write" not in _ops(program) or report.a.verdict is not Verdict.DATA_LOSS
            or not any(ev == events.TTU_LAZYFREE_DISCARD for _, ev in report.a.events)):
        return None
    return next((d for d in report.unexpected if d.kind is Kind.DATA_LOSS), None)


def _intended(report: Report, rule: str) -> Divergence | None:
    return next((d for d in report.divergences if d.classification is Classification.INTENDED
                 and any(r.name == rule for r in d.rules)), None)


def _shrinker_swapbacked(program: Program, report: Report) -> Divergence | None:
    # The shrinker's speculative reference must be the only extra one: no GUP
    # pin, no explicit folio_try_get (the pfn-walker stand-in).
    ops = _ops(program)
    if "deferred_split_scan" not in ops or ops & {"pin", "folio_try_get"}:
        return None
    return _intended(report, "swapbacked-only-if-dirty")


def _pmd_redirty_split(program: Program, report: Report) -> Divergence | None:
    # v6.15 must have refused the PMD discard because the THP was dirty
    # (not because of an extra reference, which is H9).
    if not any(ev == PMD_LAZYFREE_ABORT_DIRTY for _, ev in report.b.events):
        return None
    return _intended(report, "no-pmd-split-for-lazyfree")


def _oob_batch(program: Program, report: Report) -> Divergence | None:
    # v6.15's own report: a KASAN-style out-of-bounds read of a PTE table.
    crash = report.a.crash
    if crash is None or crash.kind is not Verdict.CRASH or "PageTableOutOfBounds" not in crash.field:
        return None
    return next((d for d in report.unexpected if d.kind is Kind.CRASH), None)


def _vma_bound(program: Program, report: Report) -> Divergence | None:
    # The mutant and the twin differ only in the VMA bound: any divergence is it.
    return next(iter(report.unexpected), None)


def _has_mremap(program: Program) -> bool:
    return "mremap" in _ops(program)


def _batch_crosses_vma(program: Program) -> bool:
    return any(ev == "ttu_batch_past_vma" for _, ev in run(program, "v6.15").events)


@dataclass(frozen=True)
class TargetSpec:
    """The engine pair a target shows on, and the predicate that recognises it.

    @leave_out: seeds to leave out besides those that show the target: those
        that already build the layout the target needs.
    """

    engine_a: str
    engine_b: str
    match: Callable[[Program, Report], Divergence | None]
    description: str
    leave_out: Callable[[Program], bool] = lambda program: False

    def shows(self, program: Program) -> tuple[Report, Divergence | None]:
        """Run ``program`` on the pair: the report, and the target's divergence in it."""
        report = differential(program, self.engine_a, self.engine_b)
        return report, self.match(program, report)


TARGETS: dict[Target, TargetSpec] = {
    Target.DMA_DATA_LOSS: TargetSpec(
        "v5.17", "v6.14", _dma_data_loss,
        "v5.17 loses a device write into a pinned lazyfree page (H5), unexpected"),
    Target.SHRINKER_SWAPBACKED: TargetSpec(
        "v6.14", "v6.15", _shrinker_swapbacked,
        "v6.14 sets swapbacked under the shrinker's speculative reference (H2), intended"),
    Target.PMD_REDIRTY_SPLIT: TargetSpec(
        "v6.14", "v6.15", _pmd_redirty_split,
        "v6.14 splits a redirtied lazyfree PMD-mapped THP (H8), intended"),
    Target.OOB_BATCH: TargetSpec(
        "v6.15", "v6.16", _oob_batch,
        "v6.15's lazyfree batch reads past the PTE table (H12, ddd05742b45b), unexpected",
        leave_out=_has_mremap),
    Target.VMA_BOUND: TargetSpec(
        "v6.16-no-vma-bound", "v6.16-c", _vma_bound,
        "v6.16 without its batch's VMA bound against its C twin, unexpected",
        leave_out=_batch_crosses_vma),
}


@dataclass
class Trial:
    """One search for one target by one fuzzer from one seed.

    @seconds: from the first execution to the detection, or the cap when
        ``found`` is false (censored).
    @startup: seconds before the first execution (atheris: process start and
        instrumentation; in-process fuzzers: 0).
    """

    fuzzer: str
    target: str
    seed: int
    found: bool
    seconds: float
    execs: int
    startup: float = 0.0
    ops_found: int | None = None
    ops_minimized: int | None = None
    minimize_runs: int | None = None
    replay_same_signature: bool | None = None
    signature: str | None = None
    program: dict[str, Any] | None = field(default=None, repr=False)
    error: str | None = None


def target_seeds(target: Target, directory: str | Path | None) -> list[bytes]:
    """The seed corpus in ``directory`` without any program that already shows ``target``
    or builds its layout (:attr:`TargetSpec.leave_out`); format-1 files are read on the
    target's first engine's version."""
    if directory is None:
        return []
    spec = TARGETS[target]
    return seed_inputs(directory,
                       keep=lambda p: not spec.leave_out(p) and spec.shows(p)[1] is None,
                       reading=MUTANTS.get(spec.engine_a, spec.engine_a))


def search(fuzzer: Fuzzer, target: Target, seed: int, cap: float,
           seeds: Sequence[bytes] = ()) -> Trial:
    """Run ``fuzzer`` from ``seed`` until it finds ``target`` or ``cap`` seconds passed.

    @seeds: the seed corpus (:func:`target_seeds`).
    """
    if fuzzer is Fuzzer.ATHERIS:
        return _search_atheris(target, seed, cap, seeds)
    spec = TARGETS[target]
    trial = Trial(fuzzer.value, target.value, seed, False, cap, 0)
    start = time.monotonic()
    deadline = start + cap

    def each(program: Program, report: Report) -> None:
        trial.execs += 1
        if not trial.found and spec.match(program, report) is not None:
            trial.found = True
            trial.seconds = time.monotonic() - start
            trial.program = program.to_dict()

    def go_on() -> bool:
        return not trial.found and time.monotonic() < deadline

    if fuzzer is Fuzzer.HYPOTHESIS:
        from fuzz.hypothesis_fuzzer import fuzz_with_hypothesis
        fuzz_with_hypothesis(_HypothesisConfig(seed, spec.engine_a, spec.engine_b, tuple(seeds)),
                             0, go_on, each)
        return trial
    source = Source(fuzzer, spec.engine_a, seed, 0, Corpus(None, seeds))
    for program in source:
        if not go_on():
            break
        report = differential(program, spec.engine_a, spec.engine_b)
        each(program, report)
        source.learn(program, report)
    return trial


@dataclass(frozen=True)
class _HypothesisConfig:
    """What :func:`fuzz.hypothesis_fuzzer.fuzz_with_hypothesis` reads of a campaign config."""

    seed: int
    engine_a: str
    engine_b: str
    seeds: tuple[bytes, ...] = ()

    def corpus_dir(self, worker: int) -> None:
        return None        # in-memory example database: every trial starts cold

    def seed_inputs(self) -> list[bytes]:
        return list(self.seeds)


def _search_atheris(target: Target, seed: int, cap: float, seeds: Sequence[bytes]) -> Trial:
    """One libFuzzer process on the atheris target, in bench mode, from ``seed``."""
    trial = Trial(Fuzzer.ATHERIS.value, target.value, seed, False, cap, 0)
    script = Path(__file__).with_name("atheris_target.py")
    with tempfile.TemporaryDirectory() as corpus, tempfile.TemporaryDirectory() as artifacts:
        for i, data in enumerate(seeds):
            Path(corpus, f"seed-{i}").write_bytes(data)
        # libFuzzer's own limit is whole seconds from its start; the target
        # itself stops at ``cap`` seconds after its first execution.
        args = [sys.executable, str(script), corpus, f"-seed={seed + 1}", "-max_len=256",
                f"-artifact_prefix={artifacts}/",
                f"-max_total_time={int(cap) + 60}", "-print_final_stats=1"]
        env = {**os.environ, BENCH_TARGET_ENV: target.value, BENCH_CAP_ENV: str(cap)}
        launched = time.monotonic()
        proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False,
                              timeout=cap + 120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(DETECTED)]
    if not lines:
        trial.error = (f"atheris exited {proc.returncode} without a bench line: "
                       + _why_it_ended(proc.stdout, proc.stderr))
        return trial
    got = json.loads(lines[-1][len(DETECTED):])
    trial.found = got["found"]
    trial.execs = got["execs"]
    trial.seconds = got["seconds"] if trial.found else cap
    trial.startup = (time.monotonic() - launched) - got["seconds"]
    trial.program = got.get("program")
    return trial


#: A line naming an exception: ``engine.errors.UnknownEngineError: engines: ...``.
_EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Exit|Interrupt): .*$", re.M)


def _why_it_ended(stdout: str, stderr: str) -> str:
    """What ended a libFuzzer process of the atheris target: the Python
    exception it did not catch (atheris prints it on @stdout), the first line
    of it and the last (that of an exception it carries, from the cause
    process), else the last 400 characters of libFuzzer's report on @stderr."""
    lines = [m.group(0) for m in _EXCEPTION_LINE.finditer(stdout)]
    if lines:
        return " ... ".join(dict.fromkeys((lines[0], lines[-1])))
    return stderr[-400:]


def atheris_bench_hook(target_name: str, cap: float) -> Callable[[Program, Report], None]:
    """The atheris target's per-input check in bench mode (see :mod:`fuzz.atheris_target`).

    Prints one :data:`DETECTED` line and exits the process at the first
    detection, or when ``cap`` seconds passed since the first input.
    """
    spec = TARGETS[Target(target_name)]
    execs = 0
    first = 0.0                     # when the first input ran

    def done(found: bool, program: Program | None) -> None:
        now = time.monotonic()
        line = {"found": found, "execs": execs, "seconds": now - first,
                "program": program.to_dict() if program is not None else None}
        print(DETECTED + json.dumps(line), file=sys.stderr, flush=True)
        os._exit(0)      # libFuzzer would otherwise go on fuzzing

    def check(program: Program, report: Report) -> None:
        nonlocal execs, first
        if not execs:
            first = time.monotonic()
        execs += 1
        if spec.match(program, report) is not None:
            done(True, program)
        elif time.monotonic() - first >= cap:
            done(False, None)

    return check


def summarize(trials: Iterable[Trial], cap: float) -> dict[str, Any]:
    """Median and spread of time to first detection per (target, fuzzer), and
    how many trials failed (an error of foliodiff's: neither a detection nor a
    miss; counted as not found in the times)."""
    groups: dict[tuple[str, str], list[Trial]] = {}
    for t in trials:
        groups.setdefault((t.target, t.fuzzer), []).append(t)
    out: dict[str, Any] = {}
    for (target, fuzzer), ts in groups.items():
        times = sorted(t.seconds if t.found else float("inf") for t in ts)
        found = sum(t.found for t in ts)
        med = statistics.median(times)
        row = {"found": f"{found}/{len(ts)}",
               "median_s": round(med, 2) if med != float("inf") else f"> {cap:g}",
               "min_s": round(times[0], 2) if times[0] != float("inf") else None,
               "max_s": round(times[-1], 2) if times[-1] != float("inf") else f"> {cap:g}",
               "execs_median": statistics.median(t.execs for t in ts),
               "failed": sum(t.error is not None for t in ts)}
        mins = [t.ops_minimized for t in ts if t.ops_minimized is not None]
        if mins:
            row["minimized_ops_median"] = statistics.median(mins)
            replayed = sum(bool(t.replay_same_signature) for t in ts if t.found)
            row["replays_same_signature"] = f"{replayed}/{found}"
        if fuzzer == Fuzzer.ATHERIS.value:
            row["startup_s_median"] = round(statistics.median(t.startup for t in ts), 2)
        out.setdefault(target, {})[fuzzer] = row
    return out
