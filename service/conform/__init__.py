"""Real kernels: fetch Debian's images, boot them under qemu with C test programs, read the results.

The library behind ``foliodiff conform`` (issue 6).  The model is only worth
what it predicts about real kernels; this package runs programs on them:

- :func:`fetch` a catalogue kernel (:data:`KERNELS`) with apt-get into a
  cache outside git, or take it from there;
- :func:`run_suite` boots it once under qemu (TCG) with an initramfs that
  runs each C test in order and returns a :class:`SuiteResult`: the boot's
  :class:`BootStatus`, and per test a :class:`CaseResult` with its status
  and the JSON of its ``FOLIODIFF {...}`` lines;
- :func:`seed_benchmarks` runs the seed series' 3/4 and 4/4 workloads on
  real kernels and returns :class:`SeedFigure` s;
  :func:`service.conform.seedbench.seed_bench` puts each kernel's model
  beside them (``foliodiff seed-bench``).

Host packages: qemu-system-x86, busybox-static, gcc and libc6-dev, apt and dpkg.
"""

from service.conform.console import BootStatus, CaseResult, CaseStatus, parse_console
from service.conform.errors import (
                                    BenchmarkError,
                                    BootError,
                                    BuildError,
                                    ConformError,
                                    FetchError,
                                    InvalidTestError,
                                    ToolMissingError,
                                    UnknownKernelError,
)
from service.conform.images import CACHE_ENV, KernelImage, cache_root, fetch
from service.conform.kernels import KERNELS, AptSource, KernelSpec, kernel_spec
from service.conform.seed import (
                                    SeedFigure,
                                    SeedWorkload,
                                    seed_benchmarks,
                                    seed_figures,
                                    seed_sources,
)
from service.conform.suite import SuiteResult, run_suite

__all__ = [
                                    "CACHE_ENV",
                                    "KERNELS",
                                    "AptSource",
                                    "BenchmarkError",
                                    "BootError",
                                    "BootStatus",
                                    "BuildError",
                                    "CaseResult",
                                    "CaseStatus",
                                    "ConformError",
                                    "FetchError",
                                    "InvalidTestError",
                                    "KernelImage",
                                    "KernelSpec",
                                    "SeedFigure",
                                    "SeedWorkload",
                                    "SuiteResult",
                                    "ToolMissingError",
                                    "UnknownKernelError",
                                    "cache_root",
                                    "fetch",
                                    "kernel_spec",
                                    "parse_console",
                                    "run_suite",
                                    "seed_benchmarks",
                                    "seed_figures",
                                    "seed_sources",
]
