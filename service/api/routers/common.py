"""What the routers share: OpenAPI ``responses=`` for every status a route can answer,
and the response of a C reproducer."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Query
from fastapi.responses import PlainTextResponse

from engine import PinMechanism, Reproducer
from service.api.schemas import ErrorBody
from service.settings import env_name

_TEXT = {
    400: "Malformed request (body not parseable, bad Content-Length)",
    401: f"Write endpoint without the bearer token (when {env_name('token')} is set)",
    404: "No row with that id",
    409: "Triage transition not allowed from the current state",
    413: "Request body over the size limit",
    422: "A field is invalid: the body names it and the value sent",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for ``codes``, all with the :class:`ErrorBody` schema."""
    return {code: {"model": ErrorBody, "description": _TEXT[code]} for code in codes}


#: Every route can be refused for its body size and, with query or path
#: parameters, for a bad value.
READ = errors(400, 413, 422)
WRITE = errors(400, 401, 413, 422)


class CSourceResponse(PlainTextResponse):
    """A C source file."""

    media_type = "text/x-csrc"


#: The query parameter of a C reproducer: how its ``pin`` operations take references.
PinQuery = Annotated[PinMechanism, Query(description="io_uring (FOLL_PIN | FOLL_LONGTERM) or "
                                                     "vmsplice (plain references)")]

#: ``responses=`` of a route that answers a C reproducer: the source, or a 422
#: naming the operation user space cannot express (or the bad parameter).
C_SOURCE: dict[int | str, dict[str, Any]] = {
    200: {"description": "a static C reproducer (engine.repro.reproducer): build with "
                         "gcc -static -O2, run as root on the kernel under test",
          "content": {CSourceResponse.media_type: {"schema": {"type": "string"}}}},
    422: {"model": ErrorBody,
          "description": "A parameter is invalid, or the program does not translate: "
                         "the body names the operation (ops[i]) and why"},
}


def c_source(r: Reproducer) -> CSourceResponse:
    """@r's source as a download called ``<name>.c``."""
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", r.name) + ".c"
    return CSourceResponse(r.source,
                           headers={"Content-Disposition": f'attachment; filename="{filename}"'})
