"""The seed series' own benchmarks, run on real kernels.

Two workloads, the ones the changelogs of the series measure (kernel-semantics.md G):

- 3/4, "Support batched unmap for lazyfree large folios": 128 MiB of 64 KiB
  mTHPs, MADV_FREE, timed MADV_PAGEOUT; the 64 KiB ``split_deferred``
  counter goes up by one per folio before the series and stays put after.
- 4/4, "Avoid splitting pmd for lazyfree pmd-mapped THP": PMD-mapped THPs,
  MADV_FREE, one byte of each written again, timed MADV_PAGEOUT;
  ``thp_split_pmd`` goes up by one per THP before the series, not after.

The programs are C (``c/seed_mthp.c``, ``c/seed_pmd.c`` with the helpers of
``c/foliodiff_kernel.h``); both run in one boot per kernel, each repeating
its measurement ``repeat`` times, and the figures are medians over those
runs.  Under TCG the times are indicative only: they measure an emulated
CPU, so only their ratio between kernels means anything, and even that
loosely.  The counters are exact.
"""

from __future__ import annotations

import dataclasses
import enum
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from service.conform.errors import BenchmarkError, InvalidTestError
from service.conform.kernels import KernelSpec
from service.conform.suite import SuiteResult, run_suite

_C = Path(__file__).with_name("c")


class SeedWorkload(enum.Enum):
    """The seed series' benchmarks, by the patch whose changelog gives them."""

    MTHP = "3/4"
    PMD = "4/4"

    @property
    def test(self) -> str:
        """The test name the workload runs under in a suite."""
        return {SeedWorkload.MTHP: "seed-mthp", SeedWorkload.PMD: "seed-pmd"}[self]

    @property
    def counter(self) -> str:
        """The counter whose delta the patch changes."""
        return {SeedWorkload.MTHP: "split_deferred", SeedWorkload.PMD: "thp_split_pmd"}[self]

    @property
    def observable(self) -> str:
        """That counter as :mod:`engine.repro.realobs` names it (the key the model predicts)."""
        return {SeedWorkload.MTHP: "mthp.64kB.split_deferred",
                SeedWorkload.PMD: "vmstat.thp_split_pmd"}[self]


@dataclasses.dataclass(frozen=True)
class SeedFigure:
    """One workload's figures on one kernel: medians over the runs of one boot.

    @kernel, @engine, @package_version, @uname: the kernel measured and the engine that models it.
    @workload: which benchmark.
    @runs: how many runs the medians are over.
    @folios: large folios the workload got (64 KiB mTHPs allocated, or 2 MiB THPs mapped).
    @counter: the delta of the workload's counter around MADV_PAGEOUT
        (``split_deferred`` for 3/4, ``thp_split_pmd`` for 4/4).
    @pglazyfreed: the delta of pglazyfreed around MADV_PAGEOUT.
    @pageout_ms: wall time of MADV_PAGEOUT (CLOCK_MONOTONIC), median.
    @pageout_cpu_ms: its CPU time (CLOCK_PROCESS_CPUTIME_ID, as the changelogs' clock()), median.
    @unsupported: why the kernel cannot run the workload (no mTHP before 6.8), else None.
    @samples: every run's record as the program printed it.

    Counters the kernel does not export are None.
    """

    kernel: str
    engine: str
    package_version: str
    uname: str
    workload: SeedWorkload
    runs: int
    folios: int | None
    counter: int | None
    pglazyfreed: int | None
    pageout_ms: float | None
    pageout_cpu_ms: float | None
    unsupported: str | None = None
    samples: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, the counter under its own name."""
        return {"kernel": self.kernel, "engine": self.engine,
                "package_version": self.package_version, "uname": self.uname,
                "workload": self.workload.value, "runs": self.runs, "folios": self.folios,
                self.workload.counter: self.counter, "pglazyfreed": self.pglazyfreed,
                "pageout_ms": self.pageout_ms, "pageout_cpu_ms": self.pageout_cpu_ms,
                "unsupported": self.unsupported,
                "pageout_ms_runs": [s.get("pageout_ms") for s in self.samples]}


def seed_sources(*, repeat: int = 5, mthp_mib: int = 128, pmd_thps: int = 64) -> dict[str, str]:
    """The C sources of both workloads, test name -> source, for :func:`run_suite`.

    @repeat: runs of each measurement inside the boot.
    @mthp_mib: MiB of 64 KiB mTHPs for 3/4 (the changelog's 128).
    @pmd_thps: 2 MiB THPs for 4/4 (the changelog's 128 MiB is 64).
    """
    for name, value, top in (("repeat", repeat, 100), ("mthp_mib", mthp_mib, 256),
                             ("pmd_thps", pmd_thps, 128)):
        if not isinstance(value, int) or not 1 <= value <= top:
            # 1 GiB of guest RAM holds one workload's mapping at a time, with room to spare.
            raise InvalidTestError("seed", f"{name} must be an int in 1..{top} (got {value!r})")
    header = (_C / "foliodiff_kernel.h").read_text()
    defines = {SeedWorkload.MTHP: f"#define MIB {mthp_mib}\n",
               SeedWorkload.PMD: f"#define THPS {pmd_thps}\n"}
    files = {SeedWorkload.MTHP: "seed_mthp.c", SeedWorkload.PMD: "seed_pmd.c"}
    return {w.test: f"#define REPEAT {repeat}\n{defines[w]}{header}\n{(_C / files[w]).read_text()}"
            for w in SeedWorkload}


def _count(values: list[Any]) -> int | None:
    """The median of counter deltas; None when the kernel does not export the counter (-1)."""
    if any(v is None or v < 0 for v in values):
        return None
    return int(statistics.median_low(values))


def _time(values: list[Any]) -> float | None:
    return round(float(statistics.median(values)), 3) if values and None not in values else None


def seed_figures(result: SuiteResult) -> list[SeedFigure]:
    """The figures of a suite that ran :func:`seed_sources` (other tests in it are ignored).

    Return: one :class:`SeedFigure` per workload.  Raises :class:`BootError`
    if the boot did not complete, :class:`BenchmarkError` if a workload
    crashed, printed an error or malformed figures.
    """
    result.require_ok()
    spec = result.spec
    kernel = result.image.name
    figures = []
    for w in SeedWorkload:
        case = result.test(w.test)
        if case.errors:
            raise BenchmarkError(kernel, w.test, "; ".join(case.errors))
        records = [r for r in case.records if isinstance(r, dict) and r.get("bench") == w.name.lower()]
        failed = [r["error"] for r in records if "error" in r]
        if failed or not case.ok:
            reason = "; ".join(failed) or (f"exit status {case.exit_status}: "
                                           + " / ".join(case.output[-5:]))
            raise BenchmarkError(kernel, w.test, reason)
        unsupported = next((r["unsupported"] for r in records if "unsupported" in r), None)
        runs = [r for r in records if "run" in r]
        if unsupported is None and not runs:
            raise BenchmarkError(kernel, w.test, "printed no figures")
        figures.append(SeedFigure(
            kernel=kernel, engine=spec.engine if spec else "", package_version=result.package_version,
            uname=result.uname or "", workload=w, runs=len(runs),
            folios=_count([r.get("folios") for r in runs]) if runs else None,
            counter=_count([r.get(w.counter) for r in runs]) if runs else None,
            pglazyfreed=_count([r.get("pglazyfreed") for r in runs]) if runs else None,
            pageout_ms=_time([r.get("pageout_ms") for r in runs]),
            pageout_cpu_ms=_time([r.get("pageout_cpu_ms") for r in runs]),
            unsupported=unsupported, samples=tuple(runs)))
    return figures


def seed_benchmarks(specs: Iterable[KernelSpec | str] = ("deb-6.12", "deb-6.16"), *,
                    repeat: int = 5, mthp_mib: int = 128, pmd_thps: int = 64,
                    timeout: float = 600.0) -> list[SeedFigure]:
    """Run both seed workloads on each kernel of @specs, one boot per kernel.

    @timeout: seconds allowed for each boot.
    Return: the figures, kernel by kernel, 3/4 before 4/4.  Raises
    :class:`BootError` for a kernel that does not boot or times out, and the
    errors of :func:`run_suite` and :func:`seed_figures`.
    """
    sources = seed_sources(repeat=repeat, mthp_mib=mthp_mib, pmd_thps=pmd_thps)
    figures: list[SeedFigure] = []
    for spec in specs:
        figures += seed_figures(run_suite(spec, sources, timeout=timeout))
    return figures
