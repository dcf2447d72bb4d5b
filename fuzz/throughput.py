"""Executions per second on the inputs a campaign really runs, and where the time goes.

``foliodiff bench`` measures generated programs of about 13 operations; a
campaign runs something else: the seed corpus first (libFuzzer's INITED
pass), then mutants of it as the random source makes them, with hand-off
and layout hints and their schedules.  :func:`campaign_inputs` records that
stream: a :class:`fuzz.sources.Source` of the random fuzzer, seeded, whose
programs run through the differential and are fed back (:meth:`Source.learn`)
exactly as a campaign's worker does, so that the corpus grows and hints fire
as they would.  Recording is not timed.

:func:`bench_campaign_inputs` then times passes over the recorded programs,
each pass measuring one layer on the same inputs:

- ``differential``: what a campaign's worker pays per program (both runs
  traced, compared, classified);
- ``traced``: the two runs with their trace (a state snapshot per
  operation, flattened only when read: by the differential, for runs that
  end differently), without the comparison;
- ``untraced``: the two runs, per-step oracles on, no trace;
- ``kernel``: the two runs with neither trace nor per-step oracles (the end
  of run oracles still check).

"The two runs" are those the differential makes: B's run only for the
programs whose run of A looked up something B does differently
(:mod:`engine.diff.impact`; the share it answers for B is reported).

The layers' costs are differences of medians from the same run: tracing
is traced - untraced, per-step oracles untraced - kernel, classification
differential - traced (flattening the snapshots of runs that differ
included).  Differences of noisy medians: a small layer can come out
negative.  Deterministic: the stream is a function of the pair,
the seed and the count.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import CORPUS_DIR, Program, differential, run
from engine.kernels import resolve_engine
from fuzz.sources import Corpus, Fuzzer, Source, seed_inputs

#: The collector's first threshold in a fuzzing process (CPython's is 700).
GC_GEN0_THRESHOLD = 10_000


def fuzzing_gc() -> None:
    """Set this process's garbage collector for fuzzing: what is loaded now
    (modules, the seed corpus) leaves the collector's view (``gc.freeze``),
    and a young collection waits for more allocations.

    Each run leaves a graph of cycles (the kernel and its oracle, threads and
    their generators, folios and the kernel's set of touched ones) that only
    the collector frees; with CPython's thresholds it took 13% of a
    differential on the campaign inputs, and each collection of the oldest
    generation walked every module object too.  Frozen and at 10,000:
    about 6%.  Process policy, so the fuzzing processes call it (campaign
    workers, the minimizer, the atheris worker, the benchmark), never the
    engine.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 10, 10)


def campaign_inputs(engine_a: str, engine_b: str, count: int, *, seed: int = 1,
                    seeds: str | Path = CORPUS_DIR) -> list[Program]:
    """The first @count programs a random campaign of @engine_a vs @engine_b runs.

    @seeds: the seed corpus the campaign starts from (``--seeds``).
    Return: the programs in the order the source yielded them: the seeds
    first, then mutants, hints and their schedules.
    """
    corpus = Corpus(None, seed_inputs(seeds, reading=engine_a))
    source = Source(Fuzzer.RANDOM, engine_a, seed, 0, corpus)
    out: list[Program] = []
    for program in source:
        out.append(program)
        source.learn(program, differential(program, engine_a, engine_b))
        if len(out) >= count:
            break
    return out


def _pass(n: int, one: Callable[[int], object]) -> float:
    """Seconds for one pass of @one over the programs 0..@n-1."""
    t0 = time.perf_counter()
    for i in range(n):
        one(i)
    return time.perf_counter() - t0


def bench_campaign_inputs(engine_a: str, engine_b: str, *, count: int = 300, repeat: int = 3,
                          seed: int = 1) -> dict[str, Any]:
    """Time the layers of a differential over :func:`campaign_inputs`.

    Return: the figures (exec/s are medians of @repeat passes; each layer's
    ``campaign_time_pct_*`` is its percentage of the differential's median time).
    """
    a, b = resolve_engine(engine_a), resolve_engine(engine_b)
    programs = campaign_inputs(a, b, count, seed=seed)
    b_runs = [not differential(p, a, b).b_from_a for p in programs]

    def both(trace: bool, per_step_oracles: bool = True) -> Callable[[int], object]:
        def one(i: int) -> object:
            p = programs[i]
            return (run(p, a, trace=trace, per_step_oracles=per_step_oracles),
                    b_runs[i] and run(p, b, trace=trace, per_step_oracles=per_step_oracles))
        return one

    layers: dict[str, Callable[[int], object]] = {
        "differential": lambda i: differential(programs[i], a, b),
        "traced": both(trace=True),
        "untraced": both(trace=False),
        "kernel": both(trace=False, per_step_oracles=False),
    }
    times: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(repeat):
        # Interleaved passes: a slow moment of a shared machine hits every layer alike.
        for name, one in layers.items():
            times[name].append(_pass(len(programs), one))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    n = len(programs)
    res: dict[str, Any] = {
        "campaign_inputs": n,
        "campaign_inputs_from_seeds": len(seed_inputs(CORPUS_DIR, reading=a)),
        "campaign_mean_ops_per_program": round(sum(len(p.ops) for p in programs) / n, 1),
        "campaign_differential_exec_per_s_median": n / med["differential"],
        "campaign_differential_exec_per_s_min": n / max(times["differential"]),
        "campaign_differential_exec_per_s_max": n / min(times["differential"]),
        # the differential's second run answered by its first (engine/diff/impact.py)
        "campaign_b_runs_answered_by_a_pct": round(100 * b_runs.count(False) / n, 1),
        "campaign_single_run_per_s_median": (n + sum(b_runs)) / med["untraced"],
        "campaign_single_run_without_step_oracles_per_s_median": (n + sum(b_runs)) / med["kernel"],
    }
    total = med["differential"]
    for name, cost in (("kernel", med["kernel"]),
                       ("per_step_oracles", med["untraced"] - med["kernel"]),
                       ("tracing", med["traced"] - med["untraced"]),
                       ("classification", med["differential"] - med["traced"])):
        res[f"campaign_time_pct_{name}"] = round(100 * cost / total, 1)
    return res
