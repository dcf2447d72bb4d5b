"""``/run``: run a submitted program through an engine pair."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from engine.diff import differential
from engine.program import parse_program
from service.api.deps import SettingsDep, WriteAccess
from service.api.routers.common import WRITE
from service.api.schemas import RunIn
from service.triage import check_run_budget, engine_pair

router = APIRouter(tags=["programs"])


@router.post("/run", dependencies=[WriteAccess], responses=WRITE,
             summary="Run a program on two engines and return the differential report",
             response_description="engine.diff.Report.to_dict()")
def run_program(settings: SettingsDep, body: Annotated[RunIn, Body()]) -> dict[str, Any]:
    a, b = engine_pair(body.engines, ",", "engines")
    program = parse_program(body.program)
    check_run_budget(program, settings.max_run_pages, settings.max_run_work)
    return differential(program, a, b).to_dict()
