"""Real kernels: stored conformance results, and conformance runs of a divergence as jobs.

A request never boots a kernel: ``POST /divergences/{id}/conform`` stores a
job and starts ``foliodiff conform --job ID`` in a process of its own
(:func:`service.conform.jobs.start_job`), unless the settings leave jobs to
be run by hand; ``GET /conformance/jobs/{id}`` reports it and its results.
Kernels are catalogue names only: a request never names a file to boot.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query

from service.api.deps import SettingsDep, StoreDep, WriteAccess
from service.api.errors import ApiError
from service.api.routers.common import READ, WRITE, errors
from service.api.schemas import (
    MAX_ID,
    CatalogueKernel,
    ConformanceJobOut,
    ConformancePage,
    ConformanceResultOut,
    ConformIn,
)
from service.conform.jobs import start_job
from service.conform.kernels import KERNELS
from service.store import MAX_LIMIT, Store

router = APIRouter(tags=["conformance"])


def _job_out(store: Store, job_id: int) -> ConformanceJobOut:
    job = store.get_conformance_job(job_id)
    results, _ = store.conformance_results(job_id=job_id, limit=MAX_LIMIT)
    out = ConformanceJobOut.model_validate(job)
    out.results = [ConformanceResultOut.model_validate(r) for r in reversed(results)]
    return out


@router.get("/conformance/kernels", response_model=list[CatalogueKernel], responses=READ,
            summary="The catalogue: the real kernels a conformance job may boot, and their engines")
def catalogue() -> list[CatalogueKernel]:
    return [CatalogueKernel(name=k.name, series=k.series, engine=k.engine) for k in KERNELS]


@router.post("/divergences/{divergence_id}/conform", response_model=ConformanceJobOut,
             status_code=202, dependencies=[WriteAccess], responses=WRITE | errors(404),
             summary="Queue a run of the divergence's reproducer on real kernels (a background job)")
def start_conformance(store: StoreDep, settings: SettingsDep,
                      divergence_id: Annotated[int, Path(ge=1, le=MAX_ID)],
                      body: Annotated[ConformIn, Body()]) -> ConformanceJobOut:
    known = {k.name for k in KERNELS}
    for i, name in enumerate(body.kernels):
        if name not in known:
            raise ApiError(422, f"kernels[{i}]", name,
                           f"not a catalogue kernel (known: {', '.join(sorted(known))})")
    job = store.create_conformance_job(divergence_id, body.kernels, timeout=body.timeout,
                                       author=body.author)
    if settings.conform_jobs:
        start_job(job.id, settings.db_url, settings.plugins)
    return _job_out(store, job.id)


@router.get("/conformance/jobs/{job_id}", response_model=ConformanceJobOut,
            responses=READ | errors(404),
            summary="A conformance job: queued, running, done or failed, and its results")
def get_job(store: StoreDep, job_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> ConformanceJobOut:
    return _job_out(store, job_id)


@router.get("/conformance", response_model=ConformancePage, responses=READ,
            summary="Stored conformance results, newest first")
def list_results(
    store: StoreDep,
    divergence_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    scenario: Annotated[str | None, Query(max_length=256)] = None,
    kernel: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> ConformancePage:
    items, total = store.conformance_results(divergence_id=divergence_id, scenario=scenario,
                                             kernel=kernel, limit=limit, offset=offset)
    return ConformancePage(items=[ConformanceResultOut.model_validate(r) for r in items],
                           total=total, limit=limit, offset=offset)
