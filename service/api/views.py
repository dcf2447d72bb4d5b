"""What the triage API serves and the ``foliodiff triage`` command prints, built once.

Each function takes a :class:`Store` and ids or filters, and returns the
pydantic schema of :mod:`service.api.schemas` that the API route answers;
the CLI prints the same object (``--json`` is its JSON), so the two edges
show the same data for the same divergence.  Errors are the store's own
(:class:`NotFoundError`, :class:`InvalidValueError`, ...), which each edge
turns into its 4xx or its one-line message.
"""

from __future__ import annotations

import json
from typing import Any

from engine import RULES, Classification, Kind, UnknownEngineError, rules_between
from engine.kernels import PLUGINS, plugins
from service.api.schemas import (
    DivergenceDetail,
    DivergencePage,
    DivergenceSummary,
    FieldRow,
    History,
    IntendedList,
    IntendedRule,
    NoteOut,
    PartingOp,
    ProgramOut,
    RuleOut,
    RunOf,
    RunOut,
    TriageEventOut,
)
from service.errors import InvalidValueError, NotFoundError
from service.models import Campaign, Divergence, TriageStatus
from service.store import MAX_LIMIT, Store
from service.triage import corpus_file_name

#: Columns of a divergence row a summary shows as they are stored.
_ROW_FIELDS = ("id", "signature", "signature_id", "seq", "engine_a", "engine_b", "kind",
               "classification", "field", "function", "first_seen", "last_seen", "hit_count",
               "status", "duplicate_of", "reopened_from", "came_in", "went")


def _flatten(outcome: dict[str, Any]) -> dict[str, Any]:
    """An outcome as ``field -> value``: verdict, results, state fields, crash site."""
    out: dict[str, Any] = {"verdict": outcome.get("verdict")}
    for i, r in enumerate(outcome.get("results") or []):
        out[f"result[{i}]"] = r
    out.update(outcome.get("state") or {})
    crash = outcome.get("crash")
    if isinstance(crash, dict):
        out["crash.field"], out["crash.function"] = crash.get("field"), crash.get("function")
        out["crash.message"] = crash.get("message")
    out["warnings"] = outcome.get("warnings") or []
    return out


def side_by_side(a: dict[str, Any], b: dict[str, Any]) -> list[FieldRow]:
    """Two outcomes field by field, the differing fields first (what a triager reads first)."""
    fa, fb = _flatten(a), _flatten(b)
    keys = list(fa) + [k for k in fb if k not in fa]
    rows = [FieldRow(field=k, a=fa.get(k), b=fb.get(k), differs=fa.get(k) != fb.get(k))
            for k in keys]
    return sorted(rows, key=lambda r: not r.differs)


def run_of(d: Divergence) -> RunOf:
    """Whose run a view of @d shows: the minimized program's when it is stored."""
    return RunOf.MINIMIZED if d.minimized_run else RunOf.ORIGINAL


def divergence_summary(d: Divergence) -> DivergenceSummary:
    """@d in a list: its reproducer's detail and parting operation (see :func:`run_of`)."""
    minimized = run_of(d) is RunOf.MINIMIZED
    return DivergenceSummary.model_validate(
        {**{name: getattr(d, name) for name in _ROW_FIELDS},
         "detail": d.minimized_detail if minimized else d.detail,
         "first_op": d.minimized_first_op if minimized else d.first_op,
         "minimized": d.minimized_program_id is not None, "run_of": run_of(d)})


def divergence_page(store: Store, *, status: TriageStatus | str | None = None,
                    kind: Kind | str | None = None,
                    classification: Classification | str | None = None,
                    engines: tuple[str, str] | None = None, text: str | None = None,
                    came_in: str | None = None, went: str | None = None,
                    sort: str = "-last_seen", limit: int = 50, offset: int = 0) -> DivergencePage:
    """A page of divergences (:meth:`Store.list_divergences`, the same filters)."""
    items, total = store.list_divergences(status=status, kind=kind,
                                          classification=classification, engines=engines,
                                          text=text, came_in=came_in, went=went, sort=sort,
                                          limit=limit, offset=offset)
    return DivergencePage(items=[divergence_summary(d) for d in items], total=total,
                          limit=limit, offset=offset)


def _parting(program: dict[str, Any], first_op: int | None) -> PartingOp | None:
    """Operation @first_op of @program (JSON as stored), where a run parted."""
    if first_op is None:
        return None
    ops = program.get("ops")
    op = ops[first_op] if isinstance(ops, list) and 0 <= first_op < len(ops) else None
    return PartingOp(index=first_op, op=op if isinstance(op, dict) else None)


def pair_rules(engine_a: str, engine_b: str) -> list[RuleOut]:
    """The intended changes between the versions two engines model, with their patches."""
    try:
        rules = rules_between(engine_a, engine_b)
    except UnknownEngineError:
        # An engine this process does not register (a mutant of a benchmark run).
        return []
    return [RuleOut(name=r.name, older=r.older, newer=r.newer, patch=r.patch,
                    description=r.description) for r in rules]


def divergence_detail(store: Store, divergence_id: int) -> DivergenceDetail:
    """Everything a triager reads of one divergence.

    The top-level detail, parting operation and outcomes are its
    reproducer's run (:func:`run_of`); ``original_run`` is the original
    program's when those are the minimized program's.
    Return: the :class:`DivergenceDetail`; :class:`NotFoundError` for an unknown id.
    """
    d = store.get_divergence(divergence_id)
    original = json.loads(store.get_program(d.original_program_id).json)
    minimized = (json.loads(store.get_program(d.minimized_program_id).json)
                 if d.minimized_program_id is not None else None)
    summary = divergence_summary(d)
    original_run = RunOut(program=RunOf.ORIGINAL, first_op=d.first_op, detail=d.detail,
                          parting_op=_parting(original, d.first_op), outcome_a=d.outcome_a,
                          outcome_b=d.outcome_b,
                          side_by_side=side_by_side(d.outcome_a, d.outcome_b))
    if summary.run_of is RunOf.MINIMIZED:
        assert minimized is not None           # a minimized run comes with its program
        a, b = d.minimized_outcome_a or {}, d.minimized_outcome_b or {}
        shown = RunOut(program=RunOf.MINIMIZED, first_op=d.minimized_first_op,
                       detail=d.minimized_detail or "",
                       parting_op=_parting(minimized, d.minimized_first_op), outcome_a=a,
                       outcome_b=b, side_by_side=side_by_side(a, b))
    else:
        shown = original_run
    name = corpus_file_name(d)
    return DivergenceDetail(
        **summary.model_dump(), outcome_a=shown.outcome_a, outcome_b=shown.outcome_b,
        side_by_side=shown.side_by_side, parting_op=shown.parting_op,
        original_run=original_run if shown is not original_run else None,
        original_program=original, minimized_program=minimized,
        pair_rules=pair_rules(d.engine_a, d.engine_b), bisection=d.bisection,
        events=[TriageEventOut.model_validate(e) for e in store.history(d.id)],
        notes=[NoteOut.model_validate(n) for n in store.notes(d.id)],
        corpus_file=name, replay_command=f"foliodiff run {name} --engines {d.engine_a},{d.engine_b}")


def divergence_history(store: Store, divergence_id: int) -> History:
    """A divergence's state, triage events and notes, oldest first."""
    d = store.get_divergence(divergence_id)
    return History(divergence_id=d.id, status=d.status,
                   events=[TriageEventOut.model_validate(e) for e in store.history(d.id)],
                   notes=[NoteOut.model_validate(n) for n in store.notes(d.id)])


def transition(store: Store, divergence_id: int, to: TriageStatus | str, *, note: str = "",
               author: str, duplicate_of: int | None = None) -> DivergenceSummary:
    """Move a divergence to state @to (:meth:`Store.transition`).

    Return: its summary after the move.  A @duplicate_of that names no
    divergence is an :class:`InvalidValueError` of that field, not a
    :class:`NotFoundError`: the record itself exists.
    """
    try:
        d = store.transition(divergence_id, to, note=note, author=author,
                             duplicate_of=duplicate_of)
    except NotFoundError as exc:
        if exc.ident == divergence_id:
            raise
        raise InvalidValueError("duplicate_of", exc.ident, "no such divergence") from None
    return divergence_summary(d)


def add_note(store: Store, divergence_id: int, text: str, author: str) -> NoteOut:
    """Attach a note to a divergence (:meth:`Store.add_note`)."""
    return NoteOut.model_validate(store.add_note(divergence_id, text, author))


def _campaigns(store: Store, campaign_id: int | None) -> list[Campaign]:
    if campaign_id is not None:
        return [store.get_campaign(campaign_id)]
    out: list[Campaign] = []
    while True:
        page, total = store.list_campaigns(limit=MAX_LIMIT, offset=len(out))
        out += page
        if not page or len(out) >= total:
            return out


def intended(store: Store, campaign_id: int | None = None) -> IntendedList:
    """Intended divergences per rule and campaign (of one campaign, or of all).

    Campaigns count them instead of storing them
    (:meth:`Store.upsert_divergences`); each rule comes with its patch when
    this foliodiff knows it (a plugin's when the plugin is registered), and
    its sample programs' ids.
    Return: the :class:`IntendedList`, by rule then campaign;
    :class:`NotFoundError` for an unknown campaign.
    """
    # The built-in rules, and those of the plugins registered in this process.
    known = {r.name: r for r in [*RULES, *(r for e in PLUGINS for r in plugins.rules_of(e))]}
    items = []
    for c in _campaigns(store, campaign_id):
        for name, entry in c.intended.items():
            rule = known.get(name)
            items.append(IntendedRule(
                rule=name, patch=rule.patch if rule else None,
                description=rule.description if rule else None, campaign_id=c.id,
                engine_a=c.engine_a, engine_b=c.engine_b, count=int(entry.get("count", 0)),
                samples=[int(p) for p in entry.get("samples", [])]))
    items.sort(key=lambda i: (i.rule, i.campaign_id))
    return IntendedList(items=items, total=sum(i.count for i in items))


def program(store: Store, program_id: int) -> ProgramOut:
    """A stored program (an intended rule's sample, a divergence's reproducer)."""
    p = store.get_program(program_id)
    return ProgramOut(id=p.id, sha256=p.sha256, program=json.loads(p.json))
