"""Exceptions of the fuzz package: one small hierarchy, values in messages.

Every error a fuzzer raises on purpose is a :class:`FuzzError` (a
``FoliodiffError``, so the CLI reports it cleanly).  :class:`FindingError` is
apart: it is how the Hypothesis state machine fails on a finding (an
``AssertionError``, which Hypothesis shrinks and reports), and it carries
the :class:`Finding`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine import FoliodiffError, Program


class FuzzError(FoliodiffError):
    """Base of every error the fuzzers raise on purpose."""


class NotInterestingError(FuzzError, ValueError):
    """The program to minimize is not interesting to begin with."""

    def __init__(self, what: str) -> None:
        super().__init__(f"program: not interesting to begin with ({what})")


class ExhaustiveStateError(FuzzError, ValueError):
    """A saved exploration state that does not fit this program or version."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"state.{field}: {reason} (got {value!r})")


@dataclass
class Finding:
    """A program that broke the state machine's invariant, with what it broke."""

    program: Program
    engines: tuple[str, str]
    signature: str
    signature_id: str
    kind: str
    classification: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"program": self.program.to_dict(), "engines": list(self.engines),
                "signature": self.signature, "signature_id": self.signature_id,
                "kind": self.kind, "classification": self.classification,
                "message": self.message}


class FindingError(AssertionError):
    """The invariant failed: carries the :class:`Finding`; the message names program and signature."""

    def __init__(self, finding: Finding) -> None:
        self.finding = finding
        super().__init__(f"{finding.kind} ({finding.classification}): {finding.signature} "
                         f"[{finding.signature_id}] {finding.message}\n"
                         f"program: {finding.program.to_json(None)}")
