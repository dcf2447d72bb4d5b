"""Triage work on stored divergences: replay, corpus and C export, bounded runs.

Library functions the HTTP and command-line edges call; each takes a
:class:`Store`, a program or a path, and raises the package's own errors
(with field and value).  Programs of format 1 are read into format 2 where
they come in (:mod:`engine.corpus.upgrade`): on the engine the caller runs first
when there is one, on :data:`engine.DEFAULT_READING` otherwise.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from engine import (
    CORPUS_DIR,
    DEFAULT_READING,
    Classification,
    PinMechanism,
    Program,
    Report,
    Reproducer,
    Upgrade,
    bisect,
    corpus_program,
    differential,
    program_data,
    read_program,
    translate,
    upgrade_program,
)
from engine.kernels import check_identity, resolve_engine
from fuzz.records import harness_records_from_report, records_from_report
from service.errors import InvalidValueError
from service.models import Divergence, TriageStatus
from service.store import Store

#: Records of a pair :func:`group_by_fix` looks through for the same fix.
MAX_GROUP_SCAN = 1000
#: Characters of an exception message a replay's note quotes.
NOTE_MESSAGE_CHARS = 500


def engine_pair(spec: str, sep: str, field_name: str) -> tuple[str, str]:
    """``"v6.14<sep>v6.15"`` as a pair of canonical engine ids.

    Return: (engine_a, engine_b); raises :class:`InvalidValueError` naming
    ``field_name`` for anything but two known engines.
    """
    parts = [p.strip() for p in spec.split(sep)] if isinstance(spec, str) else []
    if len(parts) != 2 or not all(parts):
        raise InvalidValueError(field_name, spec, f"give two engines as 'a{sep}b'")
    out = []
    for p in parts:
        try:
            out.append(resolve_engine(p))
        except ValueError as exc:   # UnknownEngineError
            raise InvalidValueError(field_name, spec, str(exc)) from None
    return out[0], out[1]


def run_cost(ops: list[Any]) -> tuple[int, int]:
    """Pages a program's operations map (each fork copies every mapping so far) and
    its work estimate.

    @ops: the operations as JSON, as submitted: the cost is known before the
    program is validated or a format-1 schedule is read (which runs it
    once).  A page count that is no count adds nothing here; validation
    refuses it.  The model's reclaim scans every mapped page for each page
    it isolates, so a run costs about pages^2 per op (measured: 4096 pages,
    40 ops take a minute on v5.17).
    Return: (pages, pages^2 * ops).
    """
    pages, copies = 0, 1
    for op in ops:
        kind = op.get("op") if isinstance(op, dict) else None
        if kind in ("mmap", "mremap") and type(op.get("pages")) is int and op["pages"] > 0:
            pages += op["pages"]
        elif kind == "fork":
            copies += 1
    pages *= copies
    return pages, pages * pages * max(1, len(ops))


def check_run_budget(ops: Any, max_pages: int, max_work: int) -> None:
    """Refuse a program whose run would take too long for a request.

    @ops: the program's ``ops`` as submitted (JSON); see :func:`run_cost`.
    """
    if not isinstance(ops, list):
        raise InvalidValueError("program.ops", ops, "must be a list of operations")
    pages, work = run_cost(ops)
    if pages > max_pages:
        raise InvalidValueError("program.ops", pages, f"maps {pages} pages (counting forked "
                                f"copies); at most {max_pages} per request")
    if work > max_work:
        raise InvalidValueError("program.ops", len(ops),
                                f"{len(ops)} ops over {pages} pages is too much work "
                                f"for a request (pages^2 * ops = {work} > {max_work})")


def load_program_file(path: str, reading: str = DEFAULT_READING) -> Upgrade:
    """A program file or a corpus file, of either format, and what reading it took.

    As :func:`engine.load_any`, but the caller also learns what the
    upgrade did to a format-1 program, which a user should be told: which
    engine's reading its schedule keeps, which operations it dropped.
    @reading: the engine a format-1 schedule is read on.
    Return: the :class:`engine.Upgrade` (its ``note`` is empty for
    format 2).  Raises :class:`ProgramError` naming the path, or the field.
    """
    return upgrade_program(program_data(path), reading)


def reproducer(store: Store, d: Divergence) -> Program:
    """The stored program to replay: the minimized one when there is one.

    Stored programs are format 2 since migration 0004; a format-1 one (from
    a worker of an older foliodiff writing to a shared store) is read on the
    divergence's first engine, as the migration reads them.
    """
    pid = d.minimized_program_id if d.minimized_program_id is not None else d.original_program_id
    return read_program(json.loads(store.get_program(pid).json), d.engine_a)


def check_plugins(d: Divergence) -> None:
    """Refuse to run @d again on a plugin engine whose source changed since it was
    found (:class:`engine.PluginError` naming both hashes): the same code, or no rerun."""
    for o in (d.outcome_a, d.outcome_b):
        if "plugin" in o:
            check_identity(o["plugin"])


def divergence_c(store: Store, divergence_id: int,
                 pin: PinMechanism | str = PinMechanism.IO_URING) -> Reproducer:
    """A stored divergence's reproducer (:func:`reproducer`) as C, named ``divergence-<id>``.

    @pin: how its ``pin`` operations take references.
    Return: the :class:`Reproducer`.  Raises :class:`NotFoundError` for an
    unknown id and :class:`NotTranslatable` naming the operation user space
    cannot express.
    """
    d = store.get_divergence(divergence_id)
    return translate(reproducer(store, d), name=f"divergence-{d.id}", pin=pin)


def corpus_c(name: str, pin: PinMechanism | str = PinMechanism.IO_URING,
             directory: str | os.PathLike = CORPUS_DIR) -> Reproducer:
    """Corpus program @name of @directory as C, named after it.

    @pin: how its ``pin`` operations take references.
    Return: the :class:`Reproducer`.  Raises :class:`UnknownCorpusProgramError`
    for a name no corpus file carries and :class:`NotTranslatable` naming the
    operation user space cannot express.
    """
    return translate(corpus_program(name, directory), name=name, pin=pin)


@dataclass
class ReplayResult:
    divergence_id: int
    reproduces: bool
    signatures: list[str]
    status_before: TriageStatus
    status_after: TriageStatus
    report: Report
    reopened_as: int | None = None
    engines: list[str] = field(default_factory=list)
    harness_errors: list[int] = field(default_factory=list)   # their ids in the store


def replay(store: Store, divergence_id: int, author: str = "replay",
           engines: str | None = None) -> ReplayResult:
    """Re-run a divergence's reproducer on its engine pair, or on @engines
    (``"a,b"``), and record the answer.

    It reproduces when the report holds an unexpected divergence with the
    same signature, the pair aside (on another pair the same defect signs
    with that pair's names).  On its own pair, a fixed record moves to
    verified when it no longer reproduces and back to confirmed when it
    does; a verified one that does comes back as a new record (the store's
    reopen); any other state only gets a note.  On another pair (a fix
    checked against another version) the record only gets a note.  A replay
    that ends in a harness error (a defect of foliodiff) says nothing about
    the kernels: the record keeps its state, gets a note, and the error goes
    to the store's harness-error table.

    Return: what the replay found and the record's state after it.
    """
    d = store.get_divergence(divergence_id)
    check_plugins(d)
    pair = (d.engine_a, d.engine_b) if engines is None else engine_pair(engines, ",", "engines")
    program = reproducer(store, d)
    report = differential(program, *pair)
    if report.harness:
        return _replay_harness(store, d, program, report, author, pair)
    signatures = [x.signature for x in report.divergences
                  if x.classification is Classification.UNEXPECTED]
    defect = d.signature.split("|", 1)[1]
    same = any(sig.split("|", 1)[1] == defect for sig in signatures)
    verdict = ("still reproduces" if same else
               "no longer reproduces" + (f" (now: {', '.join(signatures)})" if signatures else ""))
    note = f"replay on {pair[0]},{pair[1]}: {verdict}"
    result = ReplayResult(divergence_id, same, signatures, d.status, d.status, report,
                          engines=list(pair))
    if pair != (d.engine_a, d.engine_b):
        store.add_note(divergence_id, note, author)
        return result
    if d.status is TriageStatus.FIXED:
        to = TriageStatus.CONFIRMED if same else TriageStatus.VERIFIED
        result.status_after = store.transition(divergence_id, to, note=note, author=author).status
        return result
    store.add_note(divergence_id, note, author)
    if d.status is TriageStatus.VERIFIED and same:
        records = [r for r in records_from_report(report, program)
                   if r.signature == d.signature]
        upserted = store.upsert_divergences(records)
        result.reopened_as = upserted.ids.get(d.signature_id)
    return result


def bisect_stored(store: Store, divergence_id: int) -> Divergence:
    """Bisect divergence @divergence_id's reproducer along the version tree, keep
    the result on the record (:meth:`Store.set_bisection`) and group it with a
    record the same patch fixed (:func:`group_by_fix`).

    The target is the replay's divergence of the same signature; when the
    reproducer no longer shows it, the pair's first divergence (the
    bisection says which it bisected).
    """
    d = store.get_divergence(divergence_id)
    check_plugins(d)
    program = reproducer(store, d)
    return keep_bisection(store, d, program, differential(program, d.engine_a, d.engine_b))


def keep_bisection(store: Store, d: Divergence, program: Program,
                   report: Report | None) -> Divergence:
    """Bisect @program, @d's reproducer, whose differential on @d's pair is @report,
    keep the result on @d and group it with a record the same patch fixed.

    The target is @report's divergence of @d's signature; without one (or
    without @report), the pair's first divergence.
    Return: @d as it is now.
    """
    found = (next((x for x in report.divergences if x.signature_id == d.signature_id), None)
             if report is not None else None)
    kept = store.set_bisection(d.id, bisect(program, (d.engine_a, d.engine_b),
                                            divergence=found).to_dict())
    return group_by_fix(store, kept)


#: The author of the triage events :func:`group_by_fix` writes.
FIX_GROUPER = "bisection"


def _fix(d: Divergence) -> tuple[str, str, tuple[str, ...]] | None:
    """Where @d came in and went, and the rules (patches) of the edges it went at:
    None unless it went at an edge whose patch the runs name."""
    if not d.went or not d.bisection:
        return None
    rules = tuple(sorted({r["name"] for e in d.bisection.get("edges", [])
                          if e.get("target") and e.get("change") == "went"
                          for r in e.get("rules", [])}))
    return (d.came_in or "", d.went, rules) if rules else None


def group_by_fix(store: Store, d: Divergence) -> Divergence:
    """Mark new divergence @d a duplicate of the oldest record of its pair that came
    in at the same edges and went at the same edges by the same patches.

    Two decisions the kernel got wrong in one place (v6.15's batch reading
    past the PTE table, and restoring PTEs past the VMA) sign apart; one
    patch fixing both is what says they are one bug (ClusterFuzz groups by
    regression and fixed range too).  Only a record still new is moved, with
    a triage event saying why; a triager's decision is never overruled, and
    ``transition ID confirmed`` splits it off again.
    Return: @d as it is now.
    """
    fix = _fix(d)
    if fix is None or d.status is not TriageStatus.NEW:
        return d
    same, _ = store.list_divergences(engines=(d.engine_a, d.engine_b), went=fix[1].split(",")[0],
                                     sort="id", limit=MAX_GROUP_SCAN)
    for other in same:
        if other.id < d.id and other.status is not TriageStatus.DUPLICATE and _fix(other) == fix:
            rules = ", ".join(fix[2])
            why = (f"fixed by the same patch as #{other.id}: came in at {fix[0] or '-'}, "
                   f"went at {fix[1]} ({rules})")
            moved = store.transition(d.id, TriageStatus.DUPLICATE, author=FIX_GROUPER,
                                     duplicate_of=other.id, note=why)
            store.repoint_duplicates(d.id, other.id, f"#{d.id}, which this duplicated, was "
                                                     f"merged into #{other.id}: {why}",
                                     FIX_GROUPER)
            return moved
    return d


def _replay_harness(store: Store, d: Divergence, program: Program, report: Report,
                    author: str, pair: tuple[str, str]) -> ReplayResult:
    """A replay that hit a harness error: noted, kept as such, the record's state unchanged."""
    records = harness_records_from_report(report, program)
    stored = store.upsert_harness_errors(records)
    ids = list(dict.fromkeys(stored.ids[r.signature_id] for r in records))
    what = "; ".join(f"#{stored.ids[r.signature_id]} on {r.engine}: {r.exception}: "
                     f"{r.message[:NOTE_MESSAGE_CHARS]}" for r in records)
    store.add_note(d.id, f"replay on {pair[0]},{pair[1]}: a harness error, a defect of "
                         f"foliodiff that says nothing about either kernel (state unchanged; "
                         f"GET /harness-errors): {what}", author)
    return ReplayResult(d.id, False, [], d.status, d.status, report,
                        engines=list(pair), harness_errors=ids)


def corpus_file_name(d: Divergence) -> str:
    return f"fuzz-{d.id}-{d.signature_id}.json"


def corpus_entry(store: Store, d: Divergence) -> dict[str, Any]:
    """A corpus file (see :mod:`engine.corpus.entries`) pinning this divergence.

    Its program is the reproducer (:func:`reproducer`), and ``expect`` and
    the description come from that program's own run.  ``expect`` holds each
    engine's verdict and, for a crash or oracle failure, where it happened;
    ``divergences`` the pair's classification and kind, which ``foliodiff
    corpus`` checks on every replay.
    """
    program = reproducer(store, d)
    if d.minimized_program_id is None:
        outcomes, detail = (d.outcome_a, d.outcome_b), d.detail
    elif d.minimized_run:
        outcomes = (d.minimized_outcome_a or {}, d.minimized_outcome_b or {})
        detail = d.minimized_detail or ""
    else:
        # Minimized before its run was kept (migration 0007): the original's
        # outcomes are not the reproducer's, so run it.
        report = differential(program, d.engine_a, d.engine_b)
        outcomes = (report.a.to_dict(), report.b.to_dict())
        same = [x for x in report.divergences if x.signature_id == d.signature_id]
        detail = same[0].detail if same else d.detail
    expect: dict[str, dict[str, Any]] = {}
    for engine, outcome in zip((d.engine_a, d.engine_b), outcomes, strict=True):
        fields: dict[str, Any] = {"verdict": outcome.get("verdict")}
        crash = outcome.get("crash")
        if isinstance(crash, dict):
            fields["crash.field"] = crash.get("field")
            fields["crash.function"] = crash.get("function")
        expect[engine] = fields
    return {"name": corpus_file_name(d).removesuffix(".json"),
            "scenario": "fuzz",
            "description": f"divergence #{d.id} ({d.status.value}): {d.signature}. {detail}",
            "program": program.to_dict(),
            "expect": expect,
            "divergences": {f"{d.engine_a}..{d.engine_b}": {
                "classification": d.classification.value, "kind": d.kind.value}}}
