"""The seed benchmarks on real kernels, beside the model's figures for the same workloads.

``foliodiff seed-bench`` boots each kernel once with both workloads of
:mod:`service.conform.seed` and holds every figure against the model of
that kernel (:attr:`KernelSpec.engine`):

- the counter the patch changes (``split_deferred`` for 3/4,
  ``thp_split_pmd`` for 4/4) and ``pglazyfreed``, as the model predicts
  them for the workload's own program (map, write, MADV_FREE, for 4/4 one
  write in each THP, MADV_PAGEOUT): the delta over the MADV_PAGEOUT, as the
  C program reads it; the run has no swap, as the qemu kernels have none;
- the time: the model's bench-c unmap time of the workload on that engine
  (:func:`engine.unmap_once`, every ``try_to_unmap()`` of the
  isolated folios, setup untimed), beside the kernel's MADV_PAGEOUT time.

The counters must agree exactly.  The times are not comparable across the
two sides: a real kernel's are measured under TCG, an emulated CPU, and are
indicative only; the model's measure Python.  Only each side's old/new ratio
(the first kernel's time over each kernel's) says anything, and loosely.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable
from typing import Any

from engine import PAGE_SIZE, WORKLOAD_BASE, Program, parse_program, predict, unmap_once
from service.conform.errors import BenchmarkError, BootError
from service.conform.kernels import KernelSpec, kernel_spec
from service.conform.seed import SeedFigure, SeedWorkload, seed_figures, seed_sources
from service.conform.suite import KernelBoot, run_suite

#: Printed with every table, saved with every result.
TIMES_NOTE = ("PAGEOUT times are measured under qemu TCG (an emulated CPU): indicative only. "
              "Model times are bench-c's unmap of the same workload on the kernel's engine "
              "(Python). Neither compares with the other; only each side's old/new ratio "
              "means anything, and loosely. Counters are exact.")

_PMD_PAGES = 512


def _mapping(workload: SeedWorkload, *, mthp_mib: int, pmd_thps: int) -> tuple[int, int]:
    """The pages @workload maps, and the order of its folios."""
    if workload is SeedWorkload.MTHP:
        return mthp_mib * (1 << 20) // PAGE_SIZE, 4
    return pmd_thps * _PMD_PAGES, 9


def workload_program(workload: SeedWorkload, *, mthp_mib: int, pmd_thps: int) -> Program:
    """The program of @workload as its C program runs it (c/seed_mthp.c, c/seed_pmd.c).

    Return: the :class:`Program`; its last operation is the timed MADV_PAGEOUT.
    """
    pages, order = _mapping(workload, mthp_mib=mthp_mib, pmd_thps=pmd_thps)
    base = WORKLOAD_BASE
    ops = [{"thread": "T0", "op": "mmap", "addr": base, "pages": pages, "order": order},
           {"thread": "T0", "op": "write", "addr": base, "pages": pages, "value": 1},
           {"thread": "T0", "op": "madvise", "addr": base, "pages": pages, "advice": "MADV_FREE"}]
    if workload is SeedWorkload.PMD:
        # one byte of each THP written again: its PMD is dirty
        ops += [{"thread": "T0", "op": "write", "addr": base + i * _PMD_PAGES * PAGE_SIZE,
                 "pages": 1, "value": 2} for i in range(pmd_thps)]
    ops.append({"thread": "T0", "op": "madvise", "addr": base, "pages": pages,
                "advice": "MADV_PAGEOUT"})
    return parse_program({"version": 2, "threads": [{"name": "T0", "kind": "task", "mm": 0}],
                          "ops": ops, "schedule": []})


@dataclasses.dataclass(frozen=True)
class ModelFigure:
    """The model's figures for one seed workload on one engine.

    @engine: the engine that models the kernel.
    @workload: which benchmark.
    @folios: large folios bench-c's run of the workload isolated.
    @counter: the predicted delta of the workload's counter over MADV_PAGEOUT.
    @pglazyfreed: the predicted delta of pglazyfreed over MADV_PAGEOUT.
    @unmap_ms: bench-c's unmap time of the workload, median of @runs passes.
    """

    engine: str
    workload: SeedWorkload
    runs: int
    folios: int
    counter: int
    pglazyfreed: int
    unmap_ms: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, the counter under its own name."""
        return {"engine": self.engine, "workload": self.workload.value, "runs": self.runs,
                "folios": self.folios, self.workload.counter: self.counter,
                "pglazyfreed": self.pglazyfreed, "unmap_ms": round(self.unmap_ms, 3)}


def model_figure(engine: str, workload: SeedWorkload, *, mthp_mib: int, pmd_thps: int,
                 repeat: int) -> ModelFigure:
    """What @engine predicts for @workload, and bench-c's time of it (median of @repeat).

    Context: runs the workload program twice (without and with its
    MADV_PAGEOUT) and bench-c's unmap @repeat times; about a second on v6.12
    for the 128 MiB of 3/4.  Return: the :class:`ModelFigure`.  Raises
    :class:`engine.PredictionError` when the model run does not finish.
    """
    program = workload_program(workload, mthp_mib=mthp_mib, pmd_thps=pmd_thps)
    before_pageout = program.model_copy(update={"ops": program.ops[:-1]})
    obs = [predict(p, engine, check=False, per_step_oracles=False)
           for p in (before_pageout, program)]
    delta = {key: obs[1][key] - obs[0][key] for key in (workload.observable, "vmstat.pglazyfreed")}
    pages, order = _mapping(workload, mthp_mib=mthp_mib, pmd_thps=pmd_thps)
    runs = [unmap_once(engine, pages, order, workload is SeedWorkload.PMD) for _ in range(repeat)]
    return ModelFigure(engine=engine, workload=workload, runs=repeat, folios=runs[0]["folios"],
                       counter=delta[workload.observable], pglazyfreed=delta["vmstat.pglazyfreed"],
                       unmap_ms=statistics.median(r["ns"] for r in runs) / 1e6)


@dataclasses.dataclass(frozen=True)
class SeedRow:
    """One workload on one kernel: the kernel's figures and its model's.

    @real_ratio, @real_cpu_ratio, @model_ratio: the first kernel's time over
    this kernel's (PAGEOUT wall and CPU time; the model's unmap time); None
    where either side has no time.
    """

    real: SeedFigure
    model: ModelFigure | None
    real_ratio: float | None = None
    real_cpu_ratio: float | None = None
    model_ratio: float | None = None

    @property
    def counter_matches(self) -> bool | None:
        """Whether the kernel's counter is the predicted one; None when there is nothing to hold
        against each other (the kernel cannot run the workload or does not export the counter)."""
        if self.model is None or self.real.counter is None:
            return None
        return self.real.counter == self.model.counter

    def to_dict(self) -> dict[str, Any]:
        return {"kernel": self.real.kernel, "engine": self.real.engine,
                "real": self.real.to_dict(),
                "model": self.model.to_dict() if self.model is not None else None,
                "counter_matches": self.counter_matches,
                "real_ratio": self.real_ratio, "real_cpu_ratio": self.real_cpu_ratio,
                "model_ratio": self.model_ratio}


@dataclasses.dataclass
class SeedKernel(KernelBoot):
    """One kernel's boot for the seed benchmarks.

    @boot: how the boot ended; @detail: why there are no figures (the boot
    did not complete, or a workload failed), else empty.
    """

    figures: tuple[SeedFigure, ...] = ()
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**self.boot_dict(), "detail": self.detail}


def _ratio(old: float | None, new: float | None) -> float | None:
    return round(old / new, 3) if old and new else None


@dataclasses.dataclass(frozen=True)
class SeedBench:
    """The seed benchmarks on several kernels, each beside its model.

    @kernels: every kernel asked for, in order, booted or not.
    @rows: per workload, one row per kernel that gave figures, in kernel order.
    """

    kernels: tuple[SeedKernel, ...]
    rows: dict[SeedWorkload, tuple[SeedRow, ...]]
    repeat: int
    mthp_mib: int
    pmd_thps: int

    @property
    def complete(self) -> bool:
        """Every kernel gave figures."""
        return all(k.figures for k in self.kernels)

    @property
    def mismatches(self) -> list[SeedRow]:
        """The rows whose real counter is not the model's."""
        return [r for rows in self.rows.values() for r in rows if r.counter_matches is False]

    def to_dict(self) -> dict[str, Any]:
        return {"note": TIMES_NOTE, "repeat": self.repeat, "mthp_mib": self.mthp_mib,
                "pmd_thps": self.pmd_thps, "complete": self.complete,
                "counters_match": not self.mismatches,
                "kernels": [k.to_dict() for k in self.kernels],
                "workloads": {w.value: {"counter": w.counter, "rows": [r.to_dict() for r in rows]}
                              for w, rows in self.rows.items()}}


def _boot(spec: KernelSpec, sources: dict[str, str], timeout: float) -> SeedKernel:
    suite = run_suite(spec, sources, timeout=timeout)
    kernel = SeedKernel.of(spec, suite)
    try:
        return dataclasses.replace(kernel, figures=tuple(seed_figures(suite)))
    except (BootError, BenchmarkError) as exc:
        return dataclasses.replace(kernel, detail=str(exc))


def seed_bench(kernels: Iterable[str | KernelSpec] = ("deb-6.12", "deb-6.16"), *,
               repeat: int = 5, mthp_mib: int = 128, pmd_thps: int = 64,
               timeout: float = 600.0) -> SeedBench:
    """Run both seed workloads on each of @kernels, one boot each, and the model beside them.

    @repeat: runs of each workload in the boot, and bench-c passes of the model.
    @mthp_mib, @pmd_thps: the workloads' sizes (see :func:`seed_sources`).
    @timeout: seconds allowed for each boot.

    Context: boots one kernel at a time, then runs the model once per engine
    and workload.  Return: the :class:`SeedBench`; a kernel that does not boot
    or whose workload fails is in it without figures.  Raises
    :class:`UnknownKernelError` (before any boot), :class:`InvalidTestError`
    for a bad size, and the errors of :func:`run_suite`.
    """
    specs = [kernel_spec(k) for k in kernels]
    sources = seed_sources(repeat=repeat, mthp_mib=mthp_mib, pmd_thps=pmd_thps)
    booted = tuple(_boot(spec, sources, timeout) for spec in specs)
    models: dict[tuple[str, SeedWorkload], ModelFigure] = {}
    rows: dict[SeedWorkload, tuple[SeedRow, ...]] = {}
    for w in SeedWorkload:
        figures = [f for k in booted for f in k.figures if f.workload is w]
        for f in figures:
            if f.unsupported is None and (f.engine, w) not in models:
                models[f.engine, w] = model_figure(f.engine, w, mthp_mib=mthp_mib,
                                                   pmd_thps=pmd_thps, repeat=repeat)
        timed = [f for f in figures if f.pageout_ms is not None]
        old = timed[0] if timed else None
        old_model = models.get((old.engine, w)) if old is not None else None
        out = []
        for f in figures:
            model = models.get((f.engine, w))
            out.append(SeedRow(
                real=f, model=model,
                real_ratio=_ratio(old.pageout_ms, f.pageout_ms) if old else None,
                real_cpu_ratio=_ratio(old.pageout_cpu_ms, f.pageout_cpu_ms) if old else None,
                model_ratio=(_ratio(old_model.unmap_ms, model.unmap_ms)
                             if old_model is not None and model is not None else None)))
        rows[w] = tuple(out)
    return SeedBench(booted, rows, repeat, mthp_mib, pmd_thps)
