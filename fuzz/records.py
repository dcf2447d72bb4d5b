"""Findings as a store takes them: the records a fuzz worker makes of a report.

A :class:`fuzz.sink.FindingSink` turns each differential report into
records here, outside the store's write lock (the outcomes serialised,
hashed and compressed once), and hands them to its store
(:class:`fuzz.sink.FindingStore`, which ``service.store.Store`` implements):
a :class:`DivergenceRecord` per divergence and a :class:`HarnessRecord` per
run that ended in a harness error.  What the records mean to the store
(deduplication by signature, intended divergences counted per rule) is the
store's business.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any

from engine import Classification, Kind, Program, Report


@dataclass(frozen=True)
class PackedOutcome:
    """An outcome serialised, hashed and compressed once, by its producer.

    A fuzz worker packs a report's two outcomes once, outside the store's
    write lock, and every divergence of that report shares them; the store's
    serialised section then only moves bytes.
    """

    sha256: str
    packed: bytes

    @classmethod
    def pack(cls, value: dict[str, Any]) -> PackedOutcome:
        """``value`` as compact JSON, hashed and compressed.

        Raise: ``TypeError`` or ``ValueError`` if ``value`` is not JSON.
        """
        text = json.dumps(value, separators=(",", ":")).encode()
        # Level 6 halves an outcome; level 9 costs 3x the time for 2% less.
        return cls(hashlib.sha256(text).hexdigest(), zlib.compress(text, 6))


@dataclass(frozen=True)
class MinimizedRun:
    """What a divergence's minimized program itself showed: its two outcomes,
    and the detail and parting operation of its divergence with the signature.

    The original program's run says other values and parts at other
    operation indices; the minimized program is the reproducer a triager
    replays, so its own run is kept beside the original's.
    """

    outcome_a: dict[str, Any] | PackedOutcome
    outcome_b: dict[str, Any] | PackedOutcome
    detail: str
    first_op: int | None


def minimized_run(report: Report, signature_id: str) -> MinimizedRun | None:
    """The run of ``report`` (of a minimized program) for its divergence ``signature_id``.

    Return: the :class:`MinimizedRun`, outcomes packed; None when the report
    holds no divergence with that signature (the minimized program no
    longer shows it).
    """
    for d in report.divergences:
        if d.signature_id == signature_id:
            return MinimizedRun(PackedOutcome.pack(report.a.to_dict()),
                                PackedOutcome.pack(report.b.to_dict()), d.detail, d.first_op)
    return None


@dataclass(frozen=True)
class DivergenceRecord:
    """One divergence as a fuzzer hands it to a store
    (:meth:`fuzz.sink.FindingStore.upsert_divergences`).

    Programs are their compact JSON text; outcomes are ``Outcome.to_dict()``,
    or that dict already packed (:func:`records_from_report` packs them).
    ``minimized`` is the minimized program's own run, when there is a
    minimized program and its run was kept (:func:`minimized_run`).
    """

    signature: str
    signature_id: str
    engine_a: str
    engine_b: str
    kind: Kind
    classification: Classification
    field: str
    function: str | None
    first_op: int | None
    detail: str
    rules: tuple[str, ...]
    outcome_a: dict[str, Any] | PackedOutcome
    outcome_b: dict[str, Any] | PackedOutcome
    original_program: str
    minimized_program: str | None = None
    minimized: MinimizedRun | None = None


def records_from_report(report: Report, original_program: Program,
                        minimized_program: Program | None = None) -> list[DivergenceRecord]:
    """Every divergence of ``report`` as a record, intended ones included.

    Return: one record per divergence; the store keeps the unexpected ones
    and counts the intended ones on the campaign
    (:meth:`fuzz.sink.FindingStore.upsert_divergences`).
    """
    original = original_program.to_json(indent=None)
    minimized = minimized_program.to_json(indent=None) if minimized_program is not None else None
    outcome_a, outcome_b = (PackedOutcome.pack(report.a.to_dict()),
                            PackedOutcome.pack(report.b.to_dict()))
    return [DivergenceRecord(signature=d.signature, signature_id=d.signature_id,
                             engine_a=report.a.engine, engine_b=report.b.engine, kind=d.kind,
                             classification=d.classification, field=d.field,
                             function=d.function, first_op=d.first_op, detail=d.detail,
                             rules=tuple(r.name for r in d.rules), outcome_a=outcome_a,
                             outcome_b=outcome_b, original_program=original,
                             minimized_program=minimized)
            for d in report.divergences]


@dataclass(frozen=True)
class HarnessRecord:
    """One run that ended in a harness error, as
    :meth:`fuzz.sink.FindingStore.upsert_harness_errors` takes it.

    ``program`` is the program's compact JSON text, as the run had it.
    """

    signature: str
    signature_id: str
    engine: str
    exception: str
    op: str | None
    op_index: int | None
    function: str | None
    message: str
    stack: tuple[str, ...]
    program: str


#: Stack frames of a harness error's signature (innermost first), like a crash's.
HARNESS_FRAMES = 3


def _text(value: str, limit: int | None = None) -> str:
    """@value storable on every backend: NUL spelled out (PostgreSQL text holds
    none), cut to @limit characters."""
    value = value.replace("\x00", "\\x00")
    return value if limit is None else value[:limit]


def harness_records_from_report(report: Report, program: Program) -> list[HarnessRecord]:
    """Every run of ``report`` that ended in ``Verdict.HARNESS``, as a record.

    The signature groups by what went wrong in foliodiff, not by kernel:
    the engine, the exception type, the operation kind and the function it
    was in, and the names of the top :data:`HARNESS_FRAMES` frames (no line
    numbers, which move with every edit).  Exception texts come from
    arbitrary code, so they are made storable here rather than refused by
    the store.
    Return: one record per such run (none for a report without one).
    """
    text = program.to_json(indent=None)
    out = []
    for o in report.harness:
        c = o.crash
        if c is None:
            continue
        op = (program.ops[c.op_index].op
              if c.op_index is not None and 0 <= c.op_index < len(program.ops) else None)
        frames = "<".join(f.split(" ")[0] for f in c.stack[:HARNESS_FRAMES])
        signature = _text(f"{o.engine}|harness|{c.field}|{op}|{c.function}|{frames}", 512)
        out.append(HarnessRecord(
            signature=signature,
            signature_id=hashlib.sha1(signature.encode()).hexdigest()[:16],
            engine=o.engine, exception=_text(c.field, 128), op=op, op_index=c.op_index,
            function=_text(c.function, 128) if c.function is not None else None,
            message=_text(c.message), stack=tuple(_text(f) for f in c.stack), program=text))
    return out


