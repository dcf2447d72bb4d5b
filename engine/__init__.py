"""foliodiff's engine: executable models of Linux lazyfree reclaim, by kernel version.

This module is the engine's public surface: the fuzzers (``fuzz/``), the
service (``service/``) and the tools (``tools/``) import what they need of
the engine from here and from :mod:`engine.kernels`, never from the
subpackages, whose layout may change (``lint-imports`` holds everything
outside the engine to that; tests may reach inside).  By topic:

- Programs (``engine.program``): :class:`Program` and its parts
  (:class:`Thread`, :class:`ThreadKind`, :class:`Preemption`, the operation
  types of :data:`OP_TYPES` from :class:`Mmap` to :class:`LruAddDrain`,
  :class:`Advice`, :class:`Prot`), :func:`check_schedule`,
  :func:`parse_program`, :func:`renumber_schedule`,
  :func:`program_json_schema`, the format's limits (:data:`PROGRAM_VERSION`,
  :data:`PAGE_SIZE`, :data:`PAGE_SHIFT`, :data:`TASK_SIZE`, :data:`MAX_PAGES`,
  :data:`MAX_THREADS`, :data:`MAX_OPS`, :data:`MAX_VALUE`).  The byte codec
  of programs is the byte fuzzers' (``fuzz.codec``).
- Runs (``engine.execution``): :func:`run` and :class:`Runner` (one program
  on one engine), the :class:`Outcome` with its :data:`COUNTERS` and
  :data:`Place` of a preemption, the oracles' :class:`Verdict`; the places
  a preemption can name, :class:`YieldPoint`, and those each operation's
  kernel path reaches, :data:`YIELD_POINTS`.
- Differentials (``engine.diff``): :func:`differential` of two engines,
  its :class:`Report` of :class:`Divergence` s by :class:`Kind` and
  :class:`Classification` (any two engines, adjacent or not); the intended
  differences, :data:`RULES` (each naming its patch), and
  :func:`rules_between` two versions.
- Bisection (``engine.diff.bisect``): :func:`bisect` of a program over the
  version tree (:func:`engine.kernels.version_tree`), its
  :class:`Bisection` of :class:`NodeRun` s and :class:`EdgeChange` s (the
  edges where the behaviour :class:`Change` s, with their rules; every
  rule of an edge, :func:`edge_rules`), and
  :func:`defect_key` (:class:`DefectKey`, :data:`DEFECT_KINDS`): what "the
  same defect" is at each version.
- The corpus (``engine.corpus``): :data:`CORPUS_DIR`, :func:`corpus_index`,
  :func:`corpus_program`, :func:`program_data`, :func:`load_any`,
  :func:`load_entry`, :func:`check_entry`; format-1 programs:
  :func:`read_program`, :func:`upgrade_program` and its :class:`Upgrade`,
  read on :data:`DEFAULT_READING` unless told otherwise.
- Reproducers and real kernels (``engine.repro``): :func:`translate` to a
  C :class:`Reproducer` (pins by :class:`PinMechanism`),
  :func:`missing_features`; what a real kernel shows, :func:`predict` and
  :func:`compare` (:class:`FieldDifference`), and the conformance
  :class:`Scenario` s, :func:`conformance`.
- Benchmarks (``engine.bench``): :func:`bench_differential`,
  :func:`bench_page_cost`, :func:`typical_program`; the C batched path's
  :func:`bench_c` and :func:`unmap_once` of a workload mapped at
  :data:`WORKLOAD_BASE`.
- Mutants (``engine.kernels.mutants``): :data:`MUTANTS` and
  :func:`register_mutants`, which makes them engines in the calling process
  (the fuzz benchmark's).
- Errors: the exceptions a caller catches are exported here, defined in
  ``engine.errors``:
  :class:`FoliodiffError` (the base of every error foliodiff raises on
  purpose), :class:`ProgramError`, :class:`NotTranslatable`,
  :class:`UnknownEngineError`, :class:`UnknownCorpusProgramError`,
  :class:`VersionTreeError`, :class:`PredictionError`, :class:`ReproducerBuildError`,
  :class:`WorkloadError`, :class:`ChooserError`, :class:`HarnessError`,
  :class:`CPathError`; and :class:`KernelBug`, the model's kernel reports.
  ``engine.errors`` itself is private: import them from here.

The kernel versions and their registry (``KERNELS``, ``ORDER``, ``ALIASES``,
``C_TWINS``, :func:`engine.kernels.resolve_engine`) are the second public
surface, :mod:`engine.kernels`.
"""

from engine.bench.differential import bench_differential, bench_page_cost, typical_program
from engine.bench.native import WORKLOAD_BASE, bench_c, unmap_once
from engine.corpus.entries import (
    CORPUS_DIR,
    check_entry,
    corpus_index,
    corpus_program,
    load_any,
    load_entry,
    program_data,
)
from engine.corpus.upgrade import DEFAULT_READING, Upgrade, read_program, upgrade_program
from engine.diff.bisect import (
    DEFECT_KINDS,
    Bisection,
    Change,
    DefectKey,
    EdgeChange,
    NodeRun,
    bisect,
    defect_key,
    edge_rules,
)
from engine.diff.differential import (
    CauseOf,
    Classification,
    Divergence,
    Kind,
    Report,
    differential,
)
from engine.diff.rules import RULES, rules_between
from engine.errors import (
    ChooserError,
    CPathError,
    FoliodiffError,
    HarnessError,
    KernelBug,
    NotTranslatable,
    PluginError,
    PredictionError,
    ProgramError,
    ReproducerBuildError,
    UnknownCorpusProgramError,
    UnknownEngineError,
    VersionTreeError,
    WorkloadError,
)
from engine.execution.oracle import Verdict
from engine.execution.outcome import COUNTERS, Crash, Outcome, Place
from engine.execution.provenance import Cause, cause_of
from engine.execution.runner import YIELD_POINTS, Runner, run
from engine.kernels.mutants import MUTANTS
from engine.kernels.mutants import register as register_mutants
from engine.program.format import (
    MAX_OPS,
    MAX_PAGES,
    MAX_THREADS,
    MAX_VALUE,
    OP_TYPES,
    PAGE_SHIFT,
    PAGE_SIZE,
    PROGRAM_VERSION,
    TASK_SIZE,
    Advice,
    DeferredSplitScan,
    DmaWrite,
    FolioPut,
    FolioTryGet,
    Fork,
    LruAddDrain,
    Madvise,
    Mmap,
    Mprotect,
    Mremap,
    Munmap,
    Pin,
    Preemption,
    Program,
    Prot,
    Read,
    Reclaim,
    Thread,
    ThreadKind,
    Unpin,
    Write,
    check_schedule,
    parse_program,
    program_json_schema,
    renumber_schedule,
)
from engine.program.places import YieldPoint
from engine.repro.realobs import FieldDifference, Scenario, compare, conformance, predict
from engine.repro.reproducer import PinMechanism, Reproducer, missing_features, translate

__all__ = [
    # programs
    "Program", "Preemption", "ThreadKind", "Advice", "parse_program", "renumber_schedule",
    "program_json_schema", "PROGRAM_VERSION", "PAGE_SIZE", "PAGE_SHIFT", "TASK_SIZE",
    "MAX_PAGES", "MAX_THREADS", "MAX_VALUE", "MAX_OPS", "OP_TYPES", "Thread", "Prot", "Mmap",
    "Munmap", "Mremap", "Mprotect", "Fork", "Read", "Write", "Madvise", "Pin", "Unpin", "DmaWrite",
    "Reclaim", "DeferredSplitScan", "FolioTryGet", "FolioPut", "LruAddDrain", "check_schedule",
    # runs
    "run", "Runner", "Outcome", "COUNTERS", "Place", "Crash", "Verdict", "YieldPoint", "YIELD_POINTS",
    "Cause", "cause_of", "CauseOf",
    # differentials
    "differential", "Report", "Divergence", "Kind", "Classification", "RULES", "rules_between",
    # bisection
    "bisect", "Bisection", "NodeRun", "EdgeChange", "Change", "edge_rules", "defect_key",
    "DefectKey", "DEFECT_KINDS",
    # the corpus
    "CORPUS_DIR", "corpus_index", "corpus_program", "program_data", "load_any", "load_entry",
    "check_entry", "read_program", "upgrade_program", "Upgrade", "DEFAULT_READING",
    # reproducers and real kernels
    "translate", "Reproducer", "PinMechanism", "missing_features", "predict", "compare",
    "FieldDifference", "Scenario", "conformance",
    # benchmarks
    "bench_differential", "bench_page_cost", "typical_program", "bench_c", "unmap_once",
    "WORKLOAD_BASE",
    # mutants
    "MUTANTS", "register_mutants",
    # errors
    "FoliodiffError", "ProgramError", "NotTranslatable", "UnknownEngineError", "VersionTreeError",
    "PluginError",
    "UnknownCorpusProgramError", "PredictionError", "ReproducerBuildError", "WorkloadError",
    "ChooserError", "HarnessError", "CPathError", "KernelBug",
]
