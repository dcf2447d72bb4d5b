"""``/divergences``: list, inspect, triage, replay and export divergences (corpus file, C)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query

from engine import Classification, Kind, PinMechanism
from service.api.deps import StoreDep, WriteAccess
from service.api.routers.common import (
    C_SOURCE,
    READ,
    WRITE,
    CSourceResponse,
    PinQuery,
    c_source,
    errors,
)
from service.api.schemas import (
    MAX_ID,
    DivergenceDetail,
    DivergencePage,
    DivergenceSummary,
    FieldRow,
    History,
    NoteIn,
    NoteOut,
    ReplayIn,
    ReplayOut,
    Sort,
    TransitionIn,
)
from service.errors import InvalidValueError, NotFoundError
from service.models import Divergence, TriageStatus
from service.store import MAX_LIMIT
from service.triage import (
    corpus_entry,
    corpus_file_name,
    divergence_c,
    engine_pair,
    replay,
)

router = APIRouter(prefix="/divergences", tags=["divergences"])

DivergenceId = Annotated[int, Path(ge=1, le=MAX_ID, description="divergence id")]


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


def _side_by_side(a: dict[str, Any], b: dict[str, Any]) -> list[FieldRow]:
    fa, fb = _flatten(a), _flatten(b)
    keys = list(fa) + [k for k in fb if k not in fa]
    # Differing fields first: what a triager reads first.
    rows = [FieldRow(field=k, a=fa.get(k), b=fb.get(k), differs=fa.get(k) != fb.get(k))
            for k in keys]
    return sorted(rows, key=lambda r: not r.differs)


def _detail(store: Any, d: Divergence) -> DivergenceDetail:
    original = json.loads(store.get_program(d.original_program_id).json)
    minimized = (json.loads(store.get_program(d.minimized_program_id).json)
                 if d.minimized_program_id is not None else None)
    name = corpus_file_name(d)
    return DivergenceDetail(
        **DivergenceSummary.model_validate(d).model_dump(),
        outcome_a=d.outcome_a, outcome_b=d.outcome_b,
        side_by_side=_side_by_side(d.outcome_a, d.outcome_b),
        original_program=original, minimized_program=minimized, corpus_file=name,
        replay_command=f"foliodiff run {name} --engines {d.engine_a},{d.engine_b}")


@router.get("", response_model=DivergencePage, responses=READ,
            summary="List divergences with filters, sorting and pagination")
def list_divergences(
    store: StoreDep,
    status: Annotated[TriageStatus | None, Query()] = None,
    kind: Annotated[Kind | None, Query()] = None,
    classification: Annotated[Classification | None, Query()] = None,
    engines: Annotated[str | None, Query(max_length=64, description="engine pair 'a..b'",
                                         examples=["v6.14..v6.15"])] = None,
    q: Annotated[str | None, Query(max_length=512, description="text in the signature")] = None,
    sort: Annotated[Sort, Query()] = "-last_seen",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> DivergencePage:
    pair = engine_pair(engines, "..", "engines") if engines is not None else None
    items, total = store.list_divergences(status=status, kind=kind, classification=classification,
                                          engines=pair, text=q, sort=sort, limit=limit,
                                          offset=offset)
    return DivergencePage(items=[DivergenceSummary.model_validate(d) for d in items],
                          total=total, limit=limit, offset=offset)


@router.get("/{divergence_id}", response_model=DivergenceDetail, responses=READ | errors(404),
            summary="One divergence: both outcomes side by side, programs, replay command")
def get_divergence(store: StoreDep, divergence_id: DivergenceId) -> DivergenceDetail:
    return _detail(store, store.get_divergence(divergence_id))


@router.post("/{divergence_id}/transitions", response_model=DivergenceSummary,
             dependencies=[WriteAccess], responses=WRITE | errors(404, 409),
             summary="Move a divergence to another triage state")
def transition(store: StoreDep, divergence_id: DivergenceId,
               body: Annotated[TransitionIn, Body()]) -> DivergenceSummary:
    try:
        d = store.transition(divergence_id, body.to, note=body.note, author=body.author,
                             duplicate_of=body.duplicate_of)
    except NotFoundError as exc:
        if exc.ident == divergence_id:
            raise
        # The record itself exists: it is duplicate_of that names nothing.
        raise InvalidValueError("duplicate_of", exc.ident, "no such divergence") from None
    return DivergenceSummary.model_validate(d)


@router.post("/{divergence_id}/notes", response_model=NoteOut, status_code=201,
             dependencies=[WriteAccess], responses=WRITE | errors(404),
             summary="Attach a note to a divergence")
def add_note(store: StoreDep, divergence_id: DivergenceId,
             body: Annotated[NoteIn, Body()]) -> NoteOut:
    return NoteOut.model_validate(store.add_note(divergence_id, body.text, body.author))


@router.get("/{divergence_id}/history", response_model=History, responses=READ | errors(404),
            summary="Triage events and notes of a divergence, oldest first")
def history(store: StoreDep, divergence_id: DivergenceId) -> History:
    d = store.get_divergence(divergence_id)
    return History(divergence_id=d.id, status=d.status,
                   events=store.history(divergence_id), notes=store.notes(divergence_id))


@router.post("/{divergence_id}/replay", response_model=ReplayOut, dependencies=[WriteAccess],
             responses=WRITE | errors(404),
             summary="Re-run the stored reproducer; verify a fix or reopen")
def replay_divergence(store: StoreDep, divergence_id: DivergenceId,
                      body: Annotated[ReplayIn | None, Body()] = None) -> ReplayOut:
    r = replay(store, divergence_id, author=(body or ReplayIn()).author)
    return ReplayOut(divergence_id=r.divergence_id, engines=r.engines, reproduces=r.reproduces,
                     signatures=r.signatures, status_before=r.status_before,
                     status_after=r.status_after, reopened_as=r.reopened_as,
                     harness_errors=r.harness_errors, report=r.report.to_dict())


@router.get("/{divergence_id}/corpus", responses=READ | errors(404),
            summary="The divergence as a corpus file, ready for corpus/",
            response_description="a corpus file (see engine.corpus.entries)")
def export_corpus(store: StoreDep, divergence_id: DivergenceId) -> dict[str, Any]:
    return corpus_entry(store, store.get_divergence(divergence_id))


@router.get("/{divergence_id}/reproducer.c", response_class=CSourceResponse,
            responses=READ | errors(404) | C_SOURCE,
            summary="The divergence's reproducer (minimized if any) as a static C program")
def export_c(store: StoreDep, divergence_id: DivergenceId,
             pin: PinQuery = PinMechanism.IO_URING) -> CSourceResponse:
    return c_source(divergence_c(store, divergence_id, pin))
