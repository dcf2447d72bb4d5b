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
    model behaviour a real kernel would not reproduce (see engine/reproducer.py).
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


class UnknownCorpusProgramError(FoliodiffError, LookupError):
    """A corpus program name that no file of the corpus directory carries."""

    def __init__(self, name: str, directory: str, known: list[str]) -> None:
        self.name = name
        self.directory = directory
        super().__init__(f"corpus: no program {name!r} in {directory} "
                         f"(known: {', '.join(known) or 'none'})")


class KernelBug(Exception):
    """Raised inside a kernel model where the kernel would BUG() or KASAN would report.

    Not a harness error: the runner turns it into a CRASH outcome.
    """


class PageTableOutOfBounds(KernelBug):
    """A page-table access outside its 512-entry table (what KASAN would report)."""

    def __init__(self, index: int, table: str) -> None:
        self.index = index
        super().__init__(f"page-table access out of bounds: index {index} of {table}")


class CPathError(FoliodiffError):
    """The C batched path's library is missing, unloadable or stale: names its path."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"C path library {path}: {reason}")
