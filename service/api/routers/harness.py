"""``/harness-errors``: defects of foliodiff itself that runs hit, read-only.

A run that raised an exception which is no modelled kernel report ended in
``Verdict.HARNESS``.  It is not a divergence and is never triaged as one:
the campaigns keep one row per signature here, for whoever fixes foliodiff.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query

from service.api.deps import StoreDep
from service.api.routers.common import READ, errors
from service.api.schemas import (
    MAX_ID,
    HarnessErrorDetail,
    HarnessErrorPage,
    HarnessErrorSummary,
    HarnessSort,
)
from service.store import MAX_LIMIT

router = APIRouter(prefix="/harness-errors", tags=["harness errors"])


@router.get("", response_model=HarnessErrorPage, responses=READ,
            summary="List harness errors (defects of foliodiff, not kernel findings)")
def list_harness_errors(
    store: StoreDep,
    engine: Annotated[str | None, Query(max_length=32, description="the engine that raised",
                                        examples=["v6.15"])] = None,
    campaign_id: Annotated[int | None, Query(ge=1, le=MAX_ID,
                                             description="the campaign that saw it first")] = None,
    sort: Annotated[HarnessSort, Query()] = "-last_seen",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> HarnessErrorPage:
    items, total = store.list_harness_errors(engine=engine, campaign_id=campaign_id, sort=sort,
                                             limit=limit, offset=offset)
    return HarnessErrorPage(items=[HarnessErrorSummary.model_validate(h) for h in items],
                            total=total, limit=limit, offset=offset)


@router.get("/{harness_error_id}", response_model=HarnessErrorDetail,
            responses=READ | errors(404),
            summary="One harness error: its stack, the program and how to run it again")
def get_harness_error(store: StoreDep, harness_error_id: Annotated[
        int, Path(ge=1, le=MAX_ID, description="harness error id")]) -> HarnessErrorDetail:
    h = store.get_harness_error(harness_error_id)
    return HarnessErrorDetail(
        **HarnessErrorSummary.model_validate(h).model_dump(), stack=h.stack,
        program=json.loads(store.get_program(h.program_id).json),
        replay_command=f"foliodiff run harness-error-{h.id}.json --engines {h.engine} "
                       "(the program saved as that file; exit code 3 while the defect is there)")
