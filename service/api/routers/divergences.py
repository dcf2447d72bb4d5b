"""``/divergences``: list, inspect, triage, replay and export divergences (corpus file, C)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query

from engine import Classification, Kind, PinMechanism
from service.api import views
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
    History,
    NoteIn,
    NoteOut,
    ReplayIn,
    ReplayOut,
    Sort,
    TransitionIn,
)
from service.models import TriageStatus
from service.store import MAX_LIMIT
from service.triage import bisect_stored, corpus_entry, divergence_c, engine_pair, replay

router = APIRouter(prefix="/divergences", tags=["divergences"])

DivergenceId = Annotated[int, Path(ge=1, le=MAX_ID, description="divergence id")]


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
    came_in: Annotated[str | None, Query(max_length=64, description=(
        "an edge of the version tree where bisection saw it come in"),
        examples=["v6.14->v6.15"])] = None,
    went: Annotated[str | None, Query(max_length=64, description=(
        "an edge where bisection saw it go"), examples=["v6.15->v6.16"])] = None,
    sort: Annotated[Sort, Query()] = "-last_seen",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> DivergencePage:
    pair = engine_pair(engines, "..", "engines") if engines is not None else None
    return views.divergence_page(store, status=status, kind=kind, classification=classification,
                                 engines=pair, text=q, came_in=came_in, went=went, sort=sort,
                                 limit=limit, offset=offset)


@router.get("/{divergence_id}", response_model=DivergenceDetail, responses=READ | errors(404),
            summary="One divergence: its reproducer's outcomes side by side and where they "
                    "parted, the original's run, programs, rules, history, replay command")
def get_divergence(store: StoreDep, divergence_id: DivergenceId) -> DivergenceDetail:
    return views.divergence_detail(store, divergence_id)


@router.post("/{divergence_id}/transitions", response_model=DivergenceSummary,
             dependencies=[WriteAccess], responses=WRITE | errors(404, 409),
             summary="Move a divergence to another triage state")
def transition(store: StoreDep, divergence_id: DivergenceId,
               body: Annotated[TransitionIn, Body()]) -> DivergenceSummary:
    return views.transition(store, divergence_id, body.to, note=body.note, author=body.author,
                            duplicate_of=body.duplicate_of)


@router.post("/{divergence_id}/notes", response_model=NoteOut, status_code=201,
             dependencies=[WriteAccess], responses=WRITE | errors(404),
             summary="Attach a note to a divergence")
def add_note(store: StoreDep, divergence_id: DivergenceId,
             body: Annotated[NoteIn, Body()]) -> NoteOut:
    return views.add_note(store, divergence_id, body.text, body.author)


@router.get("/{divergence_id}/history", response_model=History, responses=READ | errors(404),
            summary="Triage events and notes of a divergence, oldest first")
def history(store: StoreDep, divergence_id: DivergenceId) -> History:
    return views.divergence_history(store, divergence_id)


@router.post("/{divergence_id}/replay", response_model=ReplayOut, dependencies=[WriteAccess],
             responses=WRITE | errors(404),
             summary="Re-run the stored reproducer; verify a fix or reopen")
def replay_divergence(store: StoreDep, divergence_id: DivergenceId,
                      body: Annotated[ReplayIn | None, Body()] = None) -> ReplayOut:
    body = body or ReplayIn()
    r = replay(store, divergence_id, author=body.author, engines=body.engines)
    return ReplayOut(divergence_id=r.divergence_id, engines=r.engines, reproduces=r.reproduces,
                     signatures=r.signatures, status_before=r.status_before,
                     status_after=r.status_after, reopened_as=r.reopened_as,
                     harness_errors=r.harness_errors, report=r.report.to_dict())


@router.post("/{divergence_id}/bisect", response_model=DivergenceDetail,
             dependencies=[WriteAccess], responses=WRITE | errors(404),
             summary="Bisect the reproducer along the version tree and keep the result")
def bisect_divergence(store: StoreDep, divergence_id: DivergenceId) -> DivergenceDetail:
    bisect_stored(store, divergence_id)
    return views.divergence_detail(store, divergence_id)


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
