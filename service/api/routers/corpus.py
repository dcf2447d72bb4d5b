"""``/corpus``: the corpus programs the server holds, and each as a C reproducer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from engine import PinMechanism, corpus_index
from service.api.deps import SettingsDep
from service.api.routers.common import (
    C_SOURCE,
    READ,
    CSourceResponse,
    PinQuery,
    c_source,
)
from service.api.schemas import CorpusList, CorpusProgram, ErrorBody
from service.triage import corpus_c

router = APIRouter(prefix="/corpus", tags=["corpus"])

CorpusName = Annotated[str, Path(max_length=200, description="corpus file name without .json",
                                 examples=["h1-clean-mthp-reclaim"])]
_NOT_FOUND = {404: {"model": ErrorBody, "description": "No corpus program with that name"}}


@router.get("", response_model=CorpusList, responses=READ,
            summary="The corpus programs, by name")
def list_corpus(settings: SettingsDep) -> CorpusList:
    items = [CorpusProgram(**entry) for entry in corpus_index(settings.corpus_dir)]
    return CorpusList(items=items, total=len(items))


@router.get("/{name}/reproducer.c", response_class=CSourceResponse,
            responses=READ | _NOT_FOUND | C_SOURCE,
            summary="A corpus program as a static C reproducer")
def export_c(settings: SettingsDep, name: CorpusName,
             pin: PinQuery = PinMechanism.IO_URING) -> CSourceResponse:
    return c_source(corpus_c(name, pin, settings.corpus_dir))
