"""OpenAPI ``responses=`` shared by the routers: every status a route can answer."""

from __future__ import annotations

from typing import Any

from service.api.schemas import ErrorBody

_TEXT = {
    400: "Malformed request (body not parseable, bad Content-Length)",
    401: "Write endpoint without the bearer token (when FOLIODIFF_TOKEN is set)",
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
