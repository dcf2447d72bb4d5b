"""The dashboard's routes: pages under ``/ui``, static files, the API documents.

:func:`install` adds them to the triage API's app.  The pages are a FastAPI
app of their own, mounted at ``/ui``, for one reason: their errors are HTML
pages (:func:`_error_page`), while the API's stay JSON.  Both share one
``state`` (settings, store, job queue), so a page reads the store the API
opened, through the API's own dependency and views (:mod:`service.api.views`).

Every page answers from the store alone, with bounded queries (a page of
50 divergences, a campaign's snapshots thinned for its plots): no page
request replays, bisects or boots anything.  The forms post back here; each
post checks the session and the CSRF token (:mod:`service.web.security`),
does one store write, or queues one job (:mod:`service.web.jobs`), and
redirects to the page it came from (post/redirect/get).
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import jinja2
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import Classification, Kind, PluginError, UnknownEngineError, corpus_index
from engine.kernels import ORDER, version_tree
from service.api import views
from service.api.deps import get_store
from service.api.schemas import MAX_ID, CampaignOut
from service.conform.jobs import start_job
from service.conform.kernels import KERNELS
from service.errors import IllegalTransitionError, InvalidValueError, NotFoundError
from service.models import CampaignStatus, ConformanceResult, TriageStatus
from service.settings import Settings
from service.store import SORT_KEYS, TRANSITIONS, Store
from service.triage import engine_pair
from service.web import charts
from service.web.errors import BadFormError, WebError
from service.web.jobs import JobKind, JobQueue, bisect_job, replay_job
from service.web.security import (
    AUTHOR_COOKIE,
    CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Guard,
)

HERE = Path(__file__).resolve().parent
#: The vendored browser assets (static/vendor/README.md: npm packages, licences).
VENDOR = {"uplot": "vendor/uplot-1.6.32", "swagger": "vendor/swagger-ui-dist-5.35.0",
          "redoc": "vendor/redoc-2.5.4"}
#: Where the pages are mounted.
PREFIX = "/ui"
#: Most divergences one list page shows.
PAGE_MAX = 200
#: Characters of a value a table cell shows before it is cut.
CELL_CHARS = 240

#: Every page: nothing but this host, no inline script, no framing.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
#: Swagger UI and ReDoc: FastAPI's pages start them with an inline script, and
#: both style themselves inline; ReDoc runs its search in a blob: worker.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
            "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'")
_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store"}
_NONCE = re.compile(r"[0-9a-f]{32}")
#: The navigation entry each page template lights up.
_SECTIONS = {"divergences.html": "divergences", "divergence.html": "divergences",
             "campaigns.html": "campaigns", "campaign.html": "campaigns", "corpus.html": "corpus"}

StoreDep = Annotated[Store, Depends(get_store)]
DivergenceId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="divergence id")]
CampaignId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="campaign id")]
Text = Annotated[str, Query(max_length=512)]
Short = Annotated[str, Query(max_length=64)]


# -- rendering -------------------------------------------------------------------------


def _cell(value: Any, limit: int = CELL_CHARS) -> str:
    """@value as a table cell shows it: text as is, anything else as compact JSON,
    cut after @limit characters (saying how long it was)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True,
                                                          separators=(",", ":"), default=str)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _templates() -> Jinja2Templates:
    # Autoescaped, and an undefined name fails the render (a test sees it) instead
    # of printing nothing.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    templates = Jinja2Templates(env=env)
    env.filters.update(cell=_cell, when=_when,
                       pretty=lambda v: json.dumps(v, indent=2, sort_keys=False),
                       compact=lambda v: json.dumps(v, separators=(",", ":")))
    env.globals.update(prefix=PREFIX, vendor=VENDOR, statuses=list(TriageStatus),
                       campaign_statuses=list(CampaignStatus))
    return templates


def _guard(request: Request) -> Guard:
    return request.app.state.guard


def _queue(request: Request) -> JobQueue:
    return request.app.state.jobs


def _render(request: Request, name: str, context: Mapping[str, Any],
            status: int = 200) -> HTMLResponse:
    """Template @name with @context and what every page shows (sign-in state, CSRF token).

    Sets the CSRF cookie when the browser has none (:mod:`service.web.security`).
    """
    guard = _guard(request)
    nonce = request.cookies.get(CSRF_COOKIE) or ""
    fresh = not _NONCE.fullmatch(nonce)
    if fresh:
        nonce = guard.new_nonce()
    templates: Jinja2Templates = request.app.state.templates
    response = templates.TemplateResponse(
        request, name, {**context, "section": _SECTIONS.get(name, ""),
                        "csrf": guard.form_token(nonce),
                        "needs_sign_in": guard.needs_sign_in,
                        "signed_in": guard.signed_in(request.cookies.get(SESSION_COOKIE)),
                        "author": unquote(request.cookies.get(AUTHOR_COOKIE, ""))[:128],
                        "here": request.url.path + (f"?{request.url.query}"
                                                    if request.url.query else "")},
        status_code=status, headers={**_HEADERS, "Content-Security-Policy": PAGE_CSP})
    if fresh:
        response.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="strict", path="/")
    return response


def _error_page(request: Request, status: int, field: str, value: Any, detail: str) -> HTMLResponse:
    return _render(request, "error.html", {"status": status, "field": field,
                                           "value": _cell(value), "detail": detail}, status)


def _install_errors(web: FastAPI) -> None:
    """The pages' errors as HTML pages with the status the API gives the same error."""
    # The store's and the engine's errors, as the API answers them: status, field, value.
    cases: list[tuple[type[Exception], int, Callable[[Any], tuple[str, Any, str]]]] = [
        (NotFoundError, 404, lambda e: ("id", e.ident, str(e))),
        (InvalidValueError, 422, lambda e: (e.field, e.value, e.reason)),
        (UnknownEngineError, 422, lambda e: ("engines", e.engine, str(e))),
        (IllegalTransitionError, 409, lambda e: ("to", e.to_status.value, str(e))),
        (PluginError, 409, lambda e: ("engines", e.spec, str(e)))]

    for cls, status, said in cases:
        def handler(request: Request, exc: Exception, status: int = status,
                    said: Callable[[Any], tuple[str, Any, str]] = said) -> HTMLResponse:
            return _error_page(request, status, *said(exc))
        web.add_exception_handler(cls, handler)

    @web.exception_handler(WebError)
    def _web(request: Request, exc: WebError) -> HTMLResponse:
        return _error_page(request, exc.status, exc.field, exc.value, exc.detail)

    @web.exception_handler(RequestValidationError)
    def _validation(request: Request, exc: RequestValidationError) -> HTMLResponse:
        first = (exc.errors() or [{}])[0]
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body")]
        return _error_page(request, 422, ".".join(loc) or "request", first.get("input"),
                           first.get("msg", "invalid value"))

    @web.exception_handler(StarletteHTTPException)
    def _http(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        return _error_page(request, exc.status_code, "request", request.url.path, str(exc.detail))


class ServerTiming:
    """ASGI middleware: a ``Server-Timing: app;dur=<ms>`` header on every page.

    The time from the request to the response's start: the page is rendered
    by then (a template response is built whole).  The page benchmark
    (:mod:`service.web.bench`) reads it; a browser's devtools show it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - t0) * 1000
                message["headers"] = [*message.get("headers", []),
                                      (b"server-timing", f"app;dur={ms:.2f}".encode())]
            await send(message)

        await self.app(scope, receive, timed)


# -- forms -----------------------------------------------------------------------------


async def _parse(request: Request, max_fields: int) -> dict[str, str]:
    """A posted urlencoded form, at most @max_fields fields.

    Parsed here rather than by FastAPI's ``Form``, which needs python-multipart
    for a body the standard library reads.  Return: field -> value (the last
    one of a field sent twice).
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise BadFormError("Content-Type", ctype, "a page's form posts "
                                                  "application/x-www-form-urlencoded")
    try:
        return dict(parse_qsl((await request.body()).decode(), keep_blank_values=True,
                              max_num_fields=max_fields))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadFormError("body", None, f"not a form: {exc}") from None


def _check_origin(request: Request, form: Mapping[str, str]) -> None:
    """The CSRF checks of a posted @form (:meth:`Guard.check_form`)."""
    _guard(request).check_form(request.cookies.get(CSRF_COOKIE), form.get("csrf"),
                               request.headers.get("origin"), request.headers.get("host"))


async def _form(request: Request, *, fields: Mapping[str, int]) -> dict[str, str]:
    """The fields of a posted write form, each at most its length in @fields, after
    the CSRF and session checks (:class:`Guard`).

    Return: field -> value; a field the form did not send is "".
    """
    form = await _parse(request, len(fields) + 2)
    _check_origin(request, form)
    _guard(request).require_session(request.cookies.get(SESSION_COOKIE))
    out = {}
    for name, limit in fields.items():
        value = form.get(name, "")
        if len(value) > limit:
            raise BadFormError(name, value, f"at most {limit} characters")
        out[name] = value
    return out


def _author(form: Mapping[str, str]) -> str:
    author = form.get("author", "").strip()
    if not author:
        raise BadFormError("author", author, "say who you are: the history names every author")
    return author


def _back(path: str, author: str | None = None, **query: str) -> RedirectResponse:
    """303 to @path (a page of ours), remembering @author for the next form."""
    url = path + (f"?{urlencode(query)}" if query else "")
    response = RedirectResponse(url, status_code=303)
    if author:
        # Percent-encoded: a cookie value is ASCII without ';' or spaces.
        response.set_cookie(AUTHOR_COOKIE, quote(author, safe=""), httponly=True,
                            samesite="strict", path="/", max_age=365 * 24 * 3600)
    return response


def _local(path: str) -> str:
    """@path if it is a page of ours to go back to, else the divergence list (no open
    redirect through ``next``)."""
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX + "/"):
        return f"{PREFIX}/divergences"
    return path


# -- the pages -------------------------------------------------------------------------


def _pairs() -> list[str]:
    """Engine pairs a filter suggests: every two versions, older first."""
    return [f"{a}..{b}" for i, a in enumerate(ORDER) for b in ORDER[i + 1:]]


def _corpus(directory: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """:func:`_read_corpus` of @directory, read again only when a file changed.

    The files rarely change while a server runs, and reading and decoding
    them is most of the page's time; a stat of each tells whether they did.
    """
    fingerprint = tuple((p.name, st.st_mtime_ns, st.st_size)
                        for p in sorted(directory.glob("*.json")) for st in (p.stat(),))
    return _read_corpus(directory, fingerprint)


@functools.lru_cache(maxsize=4)
def _read_corpus(directory: Path, fingerprint: tuple[tuple[str, int, int], ...]
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """The corpus files of @directory with what each expects per version and pair.

    @fingerprint: each file's name, mtime and size (the cache key).

    Return: (one dict per file, sorted by name: name, scenario, description,
    ``expect`` (engine -> fields), ``divergences`` (pair -> what the
    differential must say), ``error`` for a file that is no corpus file;
    the engines any file expects something of, in version order).
    """
    out: list[dict[str, Any]] = []
    for item in corpus_index(directory):
        name = item["name"] or ""
        try:
            entry = json.loads((directory / f"{name}.json").read_bytes())
        except (OSError, ValueError) as exc:
            out.append({**item, "expect": {}, "divergences": {}, "error": str(exc)})
            continue
        entry = entry if isinstance(entry, dict) else {}
        expect = entry["expect"] if isinstance(entry.get("expect"), dict) else {}
        pairs = entry["divergences"] if isinstance(entry.get("divergences"), dict) else {}
        out.append({**item, "expect": expect, "divergences": pairs,
                    "error": None if "program" in entry else "no program"})
    engines = {e for item in out for e in item["expect"]}
    order = [e for e in ORDER if e in engines] + sorted(engines - set(ORDER))
    return out, order


def _conformance_by_program(results: list[ConformanceResult], names: set[str]) -> tuple[
        dict[str, list[tuple[str, ConformanceResult]]], list[ConformanceResult]]:
    """The newest conformance result of each (scenario, kernel), by corpus program.

    A scenario is its corpus program's name, with ``+<pin>`` when the program
    runs with each pin mechanism (``h9-pmd-thp-pinned+io_uring``); a scenario
    of no corpus program (a divergence's or a file's, ``conform --program``)
    goes to the second list.
    Return: (program name -> its (scenario suffix, result) by scenario then
    kernel; the others).
    """
    by_program: dict[str, list[tuple[str, ConformanceResult]]] = {}
    others = []
    for r in results:
        name, plus, pin = r.scenario.partition("+")
        if name in names:
            by_program.setdefault(name, []).append((plus + pin, r))
        else:
            others.append(r)
    return by_program, others


def _page_links(path: str, params: Mapping[str, Any], total: int, limit: int,
                offset: int) -> dict[str, str | None]:
    """Links to the first, previous, next and last page of a list."""
    kept = {k: v for k, v in params.items() if v not in ("", None) and k != "offset"}

    def at(o: int) -> str:
        return f"{path}?{urlencode({**kept, 'offset': o})}"

    last = max(0, (total - 1) // limit * limit)
    return {"first": at(0) if offset > 0 else None,
            "prev": at(max(0, offset - limit)) if offset > 0 else None,
            "next": at(offset + limit) if offset + limit < total else None,
            "last": at(last) if offset < last else None}


def _build(web: FastAPI) -> None:
    @web.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/divergences", status_code=303)

    @web.get("/divergences", response_class=HTMLResponse)
    def divergences(request: Request, store: StoreDep, status: Short = "", kind: Short = "",
                    classification: Short = "", engines: Short = "", q: Text = "",
                    came_in: Short = "", went: Short = "", sort: Short = "-last_seen",
                    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 50,
                    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0) -> HTMLResponse:
        # Empty fields are what a filter form sends for "any": None, not a bad value.
        pair = engine_pair(engines, "..", "engines") if engines else None
        page = views.divergence_page(store, status=status or None, kind=kind or None,
                                     classification=classification or None, engines=pair,
                                     text=q or None, came_in=came_in or None,
                                     went=went or None, sort=sort, limit=limit, offset=offset)
        params = {"status": status, "kind": kind, "classification": classification,
                  "engines": engines, "q": q, "came_in": came_in, "went": went, "sort": sort,
                  "limit": limit}
        return _render(request, "divergences.html", {
            "page": page, "params": params, "groups": store.duplicates_of(
                [d.id for d in page.items]),
            "links": _page_links(f"{PREFIX}/divergences", params, page.total, limit, offset),
            "sort_keys": [k for key in SORT_KEYS for k in (f"-{key}", key)],
            "kinds": [k.value for k in Kind],
            "classifications": [c.value for c in Classification],
            "pairs": _pairs(), "edges": [e.name for e in version_tree().edges]})

    @web.get("/divergences/{divergence_id}", response_class=HTMLResponse)
    def divergence(request: Request, store: StoreDep,
                   divergence_id: DivergenceId) -> HTMLResponse:
        d = views.divergence_detail(store, divergence_id)
        history = sorted([("event", e.at, e.id, e) for e in d.events]
                         + [("note", n.at, n.id, n) for n in d.notes],
                         key=lambda h: (h[1], h[0], h[2]))
        return _render(request, "divergence.html", {
            "d": d, "history": history, "allowed": TRANSITIONS[d.status],
            "members": store.duplicates_of([d.id]).get(d.id, []),
            "jobs": _queue(request).pending(d.id), "queued": request.query_params.get("queued"),
            "pairs": _pairs(), "catalogue": KERNELS,
            "conformance": store.conformance_results(divergence_id=d.id, limit=50)[0]})

    @web.post("/divergences/{divergence_id}/transition")
    async def transition(request: Request, store: StoreDep,
                         divergence_id: DivergenceId) -> RedirectResponse:
        form = await _form(request, fields={"to": 32, "note": 10_000, "author": 128,
                                            "duplicate_of": 12})
        author = _author(form)
        dup = form["duplicate_of"].strip().lstrip("#")
        if dup and not (dup.isdigit() and 1 <= int(dup) <= MAX_ID):
            raise BadFormError("duplicate_of", dup, "a divergence id")
        views.transition(store, divergence_id, form["to"], note=form["note"], author=author,
                         duplicate_of=int(dup) if dup else None)
        return _back(f"{PREFIX}/divergences/{divergence_id}", author)

    @web.post("/divergences/{divergence_id}/note")
    async def note(request: Request, store: StoreDep,
                   divergence_id: DivergenceId) -> RedirectResponse:
        form = await _form(request, fields={"text": 10_000, "author": 128})
        author = _author(form)
        views.add_note(store, divergence_id, form["text"], author)
        return _back(f"{PREFIX}/divergences/{divergence_id}", author)

    @web.post("/divergences/{divergence_id}/replay")
    async def replay(request: Request, store: StoreDep,
                     divergence_id: DivergenceId) -> RedirectResponse:
        form = await _form(request, fields={"engines": 64, "author": 128})
        author = _author(form)
        store.get_divergence(divergence_id)          # a 404 now, not a note never written
        engines = form["engines"].strip() or None
        if engines is not None:
            engine_pair(engines, ",", "engines")     # a bad pair is a 422 now, not a failed job
        queued = _queue(request).submit(JobKind.REPLAY, divergence_id,
                                        replay_job(store, divergence_id, author, engines))
        return _back(f"{PREFIX}/divergences/{divergence_id}", author,
                     queued="replay" if queued else "replay-already")

    @web.post("/divergences/{divergence_id}/conform")
    async def conform(request: Request, store: StoreDep,
                      divergence_id: DivergenceId) -> RedirectResponse:
        """Queue a conformance job on the chosen catalogue kernels; a process of its
        own boots them (:func:`service.conform.jobs.start_job`), never this request."""
        form = await _form(request, fields={"kernel": 64, "author": 128})
        author = _author(form)
        known = {k.name for k in KERNELS}
        if form["kernel"] not in known:
            raise BadFormError("kernel", form["kernel"], f"a catalogue kernel ({', '.join(sorted(known))})")
        job = store.create_conformance_job(divergence_id, [form["kernel"]], timeout=300.0,
                                           author=author)
        settings: Settings = request.app.state.settings
        if settings.conform_jobs:
            start_job(job.id, settings.db_url, settings.plugins)
        return _back(f"{PREFIX}/divergences/{divergence_id}", author, queued="conform")

    @web.post("/divergences/{divergence_id}/bisect")
    async def bisect(request: Request, store: StoreDep,
                     divergence_id: DivergenceId) -> RedirectResponse:
        form = await _form(request, fields={"author": 128})
        author = _author(form)
        store.get_divergence(divergence_id)
        queued = _queue(request).submit(JobKind.BISECT, divergence_id,
                                        bisect_job(store, divergence_id))
        return _back(f"{PREFIX}/divergences/{divergence_id}", author,
                     queued="bisect" if queued else "bisect-already")

    @web.get("/campaigns", response_class=HTMLResponse)
    def campaigns(request: Request, store: StoreDep, status: Short = "",
                  limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 50,
                  offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0) -> HTMLResponse:
        items, total = store.list_campaigns(status=status or None, limit=limit, offset=offset)
        params = {"status": status, "limit": limit}
        return _render(request, "campaigns.html", {
            "items": [CampaignOut.model_validate(c) for c in items], "total": total,
            "params": params, "offset": offset,
            "links": _page_links(f"{PREFIX}/campaigns", params, total, limit, offset)})

    @web.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
    def campaign(request: Request, store: StoreDep, campaign_id: CampaignId) -> HTMLResponse:
        c = CampaignOut.model_validate(store.get_campaign(campaign_id))
        kept, total = store.stats_thinned(campaign_id, charts.MAX_POINTS)
        return _render(request, "campaign.html", {
            "c": c, "last": kept[-1] if kept else None, "snapshots": total,
            "series": charts.campaign_series(kept),
            "intended": views.intended(store, campaign_id)})

    @web.get("/corpus", response_class=HTMLResponse)
    def corpus(request: Request, store: StoreDep) -> HTMLResponse:
        settings: Settings = request.app.state.settings
        items, engines = _corpus(Path(settings.corpus_dir))
        runs, others = _conformance_by_program(store.latest_conformance(),
                                               {it["name"] for it in items})
        return _render(request, "corpus.html", {"items": items, "engines": engines,
                                                "directory": str(settings.corpus_dir),
                                                "runs": runs, "others": others})

    @web.get("/signin", response_class=HTMLResponse)
    def signin_form(request: Request, next: Text = "") -> HTMLResponse:
        return _render(request, "signin.html", {"next": _local(next), "failed": False})

    @web.post("/signin")
    async def signin(request: Request) -> Response:
        guard = _guard(request)
        form = await _parse(request, 4)
        _check_origin(request, form)
        target = _local(form.get("next", ""))
        if not guard.needs_sign_in:
            return _back(target)
        if not guard.token_matches(form.get("token", "")[:1024]):
            return _render(request, "signin.html", {"next": target, "failed": True}, 401)
        response = _back(target)
        response.set_cookie(SESSION_COOKIE, guard.new_session(), httponly=True,
                            samesite="strict", path="/", max_age=SESSION_SECONDS)
        return response

    @web.post("/signout")
    async def signout(request: Request) -> RedirectResponse:
        _check_origin(request, await _parse(request, 4))
        response = _back(f"{PREFIX}/divergences")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response


def _docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` on the vendored assets: they work offline."""
    openapi = app.openapi_url or "/openapi.json"
    headers = {**_HEADERS, "Content-Security-Policy": DOCS_CSP}

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"/static/{VENDOR['swagger']}/swagger-ui-bundle.js",
            swagger_css_url=f"/static/{VENDOR['swagger']}/swagger-ui.css",
            swagger_favicon_url=f"/static/{VENDOR['swagger']}/favicon-32x32.png",
            # No validator badge: it would send the document to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None})
        page.headers.update(headers)
        return page

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        page = get_redoc_html(openapi_url=openapi, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"/static/{VENDOR['redoc']}/redoc.standalone.js",
                              redoc_favicon_url=f"/static/{VENDOR['swagger']}/favicon-32x32.png",
                              with_google_fonts=False)
        page.headers.update(headers)
        return page


def install(app: FastAPI, settings: Settings) -> None:
    """Add the dashboard to the API's @app: pages at ``/ui`` (``/`` leads there),
    ``/static``, ``/docs`` and ``/redoc``.

    The app must have been made with ``docs_url=None, redoc_url=None`` (the
    defaults load Swagger UI and ReDoc from a CDN).  Adds ``app.state.jobs``,
    the page jobs' queue, which the app's shutdown closes.
    """
    app.state.guard = Guard(settings.token)
    app.state.jobs = JobQueue()
    app.state.templates = _templates()
    web = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    # One state for both apps: the pages read the settings, store and queue the
    # API's app holds (a mounted app's requests see its own ``app.state``).
    web.state = app.state
    _install_errors(web)
    _build(web)
    web.add_middleware(ServerTiming)
    app.mount(PREFIX, web, name="pages")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/divergences", status_code=303)

    _docs(app)

