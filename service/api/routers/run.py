"""``/run``: run a submitted program through an engine pair."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from engine import differential, upgrade_program
from service.api.deps import SettingsDep, WriteAccess
from service.api.routers.common import WRITE
from service.api.schemas import RunIn
from service.triage import check_run_budget, engine_pair

router = APIRouter(tags=["programs"])


@router.post("/run", dependencies=[WriteAccess], responses=WRITE,
             summary="Run a program on two engines and return the differential report",
             response_description="engine.diff.differential.Report.to_dict(), and under 'upgrade' what "
                                  "reading a format-1 program took (null for format 2)")
def run_program(settings: SettingsDep, body: Annotated[RunIn, Body()]) -> dict[str, Any]:
    a, b = engine_pair(body.engines, ",", "engines")
    # Before any run: reading a format-1 schedule runs the program once.
    check_run_budget(body.program.get("ops"), settings.max_run_pages, settings.max_run_work)
    # A format-1 schedule is read on the first engine, as `foliodiff run` does.
    up = upgrade_program(body.program, a)
    upgrade = ({"reading": up.reading, "dropped": list(up.dropped), "note": up.note}
               if up.note else None)
    return {**differential(up.program, a, b).to_dict(), "upgrade": upgrade}
