"""Turning every error into a 4xx with a JSON body that names the field and value.

The body is always ``{"field": ..., "value": ..., "detail": ...}``
(:class:`service.api.schemas.ErrorBody`): domain errors of the engine and the
store carry their field and value already; FastAPI's own validation errors
are flattened to their first error.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import (
    NotTranslatable,
    PluginError,
    ProgramError,
    UnknownCorpusProgramError,
    UnknownEngineError,
)
from service.errors import IllegalTransitionError, InvalidValueError, NotFoundError

#: Longest rendering of an offending value echoed back (a 1 MiB program is not).
MAX_VALUE_CHARS = 200


class ApiError(Exception):
    """An error an endpoint raises on purpose with its status, field and value."""

    def __init__(self, status: int, field: str, value: Any, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.field = field
        self.value = value
        self.detail = detail
        self.headers = headers
        super().__init__(f"{field}: {detail} (got {value!r})")


def _safe(value: Any) -> Any:
    """``value`` if it is small JSON, else a truncated repr."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "..."
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    else:
        if len(text) <= MAX_VALUE_CHARS:
            return value
    return text[:MAX_VALUE_CHARS] + "..."


def error_response(status: int, field: str, value: Any, detail: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"field": field, "value": _safe(value), "detail": detail},
                        status_code=status, headers=headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "program", "ops", 0)`` as ``program.ops[0]``."""
    out = ""
    for part in list(loc)[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def install(app: FastAPI) -> None:
    """Register the handlers that give every error its 4xx JSON body."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.field, exc.value, exc.detail, exc.headers)

    @app.exception_handler(ProgramError)
    async def _program(_: Request, exc: ProgramError) -> JSONResponse:
        return error_response(422, exc.field, exc.value, exc.reason)

    @app.exception_handler(UnknownEngineError)
    async def _engine(_: Request, exc: UnknownEngineError) -> JSONResponse:
        return error_response(422, "engines", exc.engine, str(exc))

    @app.exception_handler(PluginError)
    async def _plugin(_: Request, exc: PluginError) -> JSONResponse:
        # A stored finding of a plugin whose source changed since (both hashes named).
        return error_response(409, "engines", exc.spec, str(exc))

    @app.exception_handler(NotTranslatable)
    async def _not_translatable(_: Request, exc: NotTranslatable) -> JSONResponse:
        # A valid program user space cannot run: name the operation and why.
        field = f"ops[{exc.index}]" if exc.index is not None else "program"
        return error_response(422, field, exc.op, str(exc))

    @app.exception_handler(UnknownCorpusProgramError)
    async def _unknown_corpus(_: Request, exc: UnknownCorpusProgramError) -> JSONResponse:
        return error_response(404, "name", exc.name,
                              "no corpus program of that name (GET /corpus lists them)")

    @app.exception_handler(InvalidValueError)
    async def _invalid(_: Request, exc: InvalidValueError) -> JSONResponse:
        return error_response(422, exc.field, exc.value, exc.reason)

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return error_response(404, "id", exc.ident, str(exc))

    @app.exception_handler(IllegalTransitionError)
    async def _illegal(_: Request, exc: IllegalTransitionError) -> JSONResponse:
        return error_response(409, "to", exc.to_status.value, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if not errors:
            return error_response(422, "body", None, "invalid request")
        first = errors[0]
        return error_response(422, _loc(first.get("loc", ())), first.get("input"),
                              first.get("msg", "invalid value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routing (404 of an unknown path, 405) and FastAPI's body parsing (400).
        return error_response(exc.status_code, "request", None, str(exc.detail),
                              getattr(exc, "headers", None))


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes.

    Checks the declared Content-Length first, then counts the bytes actually
    received (a chunked body declares none), buffering at most ``limit``
    bytes before the application sees any of them.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._reject(scope, receive, send, 400, value.decode("latin-1"),
                                       "Content-Length is not a number")
                    return
                if declared > self.limit:
                    await self._reject(scope, receive, send, 413, declared,
                                       f"body over {self.limit} bytes")
                    return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break   # the client went away; let the app see it
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._reject(scope, receive, send, 413, size,
                                   f"body over {self.limit} bytes")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, status: int, value: Any,
                      detail: str) -> None:
        response = error_response(status, "body", value, detail,
                                  {"Connection": "close"} if status == 413 else None)
        await response(scope, receive, send)
