"""Exceptions of the engine package: one small hierarchy, values in messages."""

from __future__ import annotations

import json
from typing import Any


class FoliodiffError(Exception):
    """Base of every error foliodiff raises on purpose."""


class ProgramError(FoliodiffError, ValueError):
    """A program is malformed: names the offending field and its value."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: {reason} (got {value!r})")


class NotTranslatable(FoliodiffError, ValueError):
    """A valid program that a user-space C reproducer cannot run faithfully.

    Names the operation (its index and JSON) and why: a fine-grained schedule
    user space cannot force, an operation with no user-space trigger, or a
    model behaviour a real kernel would not reproduce (see engine/repro/reproducer.py).
    ``index`` is None when the reason is the program as a whole.
    """

    def __init__(self, index: int | None, op: dict[str, Any] | None, reason: str) -> None:
        self.index = index
        self.op = op
        self.reason = reason
        where = f"ops[{index}] {json.dumps(op, sort_keys=True)}" if index is not None else "program"
        super().__init__(f"{where}: not translatable: {reason}")


class UnknownEngineError(FoliodiffError, ValueError):
    """An engine id that no kernel model answers to."""

    def __init__(self, engine: str, known: list[str]) -> None:
        self.engine = engine
        super().__init__(f"engines: unknown engine {engine!r} (known: {', '.join(known)})")


class VersionTreeError(FoliodiffError, ValueError):
    """A version's place in the version tree (engine/kernels/tree.py) is wrongly
    declared, or a version asked of the tree is none of its nodes: names the
    engine, the attribute and its value."""

    def __init__(self, engine: str, field: str, value: Any, reason: str) -> None:
        self.engine = engine
        self.field = field
        self.value = value
        super().__init__(f"{field} of {engine}: {reason} (got {value!r})")


class UnknownCorpusProgramError(FoliodiffError, LookupError):
    """A corpus program name that no file of the corpus directory carries."""

    def __init__(self, name: str, directory: str, known: list[str]) -> None:
        self.name = name
        self.directory = directory
        super().__init__(f"corpus: no program {name!r} in {directory} "
                         f"(known: {', '.join(known) or 'none'})")


class PredictionError(FoliodiffError):
    """The model run did not finish, so it predicts no real-kernel observables."""

    def __init__(self, engine: str, verdict: str, op_index: int | None, message: str) -> None:
        self.engine = engine
        self.verdict = verdict
        self.op_index = op_index
        super().__init__(f"engine {engine}: the model run ended {verdict} at op {op_index}: "
                         f"{message}; no real-kernel observables are predicted")


class ReproducerBuildError(FoliodiffError):
    """A C reproducer that did not compile: names the command, its exit status and
    the compiler's messages."""

    def __init__(self, command: list[str], returncode: int, messages: str) -> None:
        self.command = command
        self.returncode = returncode
        self.messages = messages
        super().__init__(f"{' '.join(command)}: exit {returncode}\n{messages}")


class WorkloadError(FoliodiffError):
    """A benchmark workload whose model run did not finish: names the engine, the
    verdict and the crash."""

    def __init__(self, engine: str, verdict: str, crash: Any) -> None:
        self.engine = engine
        self.verdict = verdict
        super().__init__(f"bench-c setup on {engine} ended {verdict}: {crash}")


class KernelBug(Exception):
    """A kernel report the model makes on purpose: where the kernel would BUG(),
    VM_BUG_ON() or WARN and stop, or where KASAN or lockdep would report.

    The runner turns these, and only these, into a CRASH outcome.  Every other
    exception inside a model is a defect of foliodiff (:class:`HarnessError`
    and the rest), never a kernel finding.  The reports:

    - ``KernelBug`` itself: BUG()/VM_BUG_ON() on an impossible state (a
      PMD-mapped folio where try_to_unmap_one() cannot take one, swapoff
      with slots in use, freeing a mapped folio);
    - :class:`PageTableOutOfBounds`: KASAN, an access outside a PTE table;
    - :class:`UseAfterFree`: KASAN, a reference taken or dropped on a freed
      folio, a page table pointing at freed memory;
    - :class:`RefcountUnderflow`: VM_BUG_ON_FOLIO on a refcount or mapcount
      below zero, or a named holder dropping references it does not hold;
    - :class:`RecursiveLocking`: lockdep, a thread taking a lock it holds.
    """


class PageTableOutOfBounds(KernelBug):
    """A page-table access outside its 512-entry table (what KASAN would report)."""

    def __init__(self, index: int, table: str) -> None:
        self.index = index
        super().__init__(f"page-table access out of bounds: index {index} of {table}")


class UseAfterFree(KernelBug):
    """A folio used after it was freed (what KASAN would report)."""


class RefcountUnderflow(KernelBug):
    """A refcount or mapcount below zero (VM_BUG_ON_FOLIO, page_ref underflow)."""


class RecursiveLocking(KernelBug):
    """A thread taking a lock it already holds (what lockdep would report)."""


class HarnessError(FoliodiffError):
    """An inconsistency foliodiff found in itself while a model ran: a yield
    point without a name, the C and Python paths disagreeing on a bound.

    Like any other exception that is not a :class:`KernelBug`, the runner
    gives it the HARNESS verdict, never a kernel finding.
    """


class CPathError(FoliodiffError):
    """The C batched path's library is missing, unloadable or stale: names its path."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"C path library {path}: {reason}")


class ChooserError(FoliodiffError, ValueError):
    """A chooser failed or returned a thread that cannot run at that step.

    A harness bug, never an outcome of the run: it propagates out of
    :meth:`engine.execution.runner.Runner.run`.
    """

    def __init__(self, step: int, chosen: Any, runnable: list[str],
                 reason: str = "is not runnable") -> None:
        self.step = step
        self.chosen = chosen
        super().__init__(f"chooser: step {step}: {chosen!r} {reason} "
                         f"(runnable: {', '.join(runnable)})")


class UndeclaredEvent(HarnessError, TypeError):
    """A kernel path noted, or a rule named, an event nobody declared: a
    defect of foliodiff, never a kernel finding."""

    def __init__(self, name: object, reason: str = "is not a declared Event") -> None:
        self.name = name
        super().__init__(f"event {name!r} {reason} (engine/mm/events.py)")


class PluginError(FoliodiffError, ValueError):
    """A plugin engine (engine/kernels/plugins.py) that cannot be registered, or whose
    source changed under a finding: names the plugin's spec and the reason."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec = spec
        self.reason = reason
        super().__init__(f"plugin {spec}: {reason}")
