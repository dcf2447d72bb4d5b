"""``/programs``: stored programs by id (intended rules' samples, reproducers), read-only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from service.api import views
from service.api.deps import StoreDep
from service.api.routers.common import READ, errors
from service.api.schemas import MAX_ID, ProgramOut

router = APIRouter(prefix="/programs", tags=["programs"])


@router.get("/{program_id}", response_model=ProgramOut, responses=READ | errors(404),
            summary="One stored program (format 2 JSON, as `foliodiff run` reads it)")
def get_program(store: StoreDep, program_id: Annotated[
        int, Path(ge=1, le=MAX_ID, description="program id")]) -> ProgramOut:
    return views.program(store, program_id)
