"""The app factory: routers, error handlers, body limit, the dashboard; no work at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from engine.kernels import load_engine, load_entry_points
from service.api import errors
from service.api.routers import (
    campaigns,
    conformance,
    corpus,
    divergences,
    harness,
    intended,
    programs,
    run,
)
from service.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """A triage API over the store at ``settings.db_url``.

    The store is opened (and migrated) by the first request that needs it
    and closed when the app shuts down.
    The plugin engines of ``settings.plugins`` are registered here, before
    any request: a plugin that fails raises :class:`engine.PluginError`.
    Return: the ASGI app.
    """
    settings = settings if settings is not None else Settings()
    # The engines a request may name are those registered now: built-ins, the
    # entry points and the settings' plugins.  No request imports anything.
    for spec in settings.plugins:
        load_engine(spec)
    load_entry_points()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            jobs = getattr(app.state, "jobs", None)
            if jobs is not None:
                jobs.close()
            store = getattr(app.state, "store", None)
            if store is not None:
                store.close()
                app.state.store = None

    # docs_url, redoc_url: the dashboard serves both on local assets (no CDN).
    app = FastAPI(title="foliodiff triage API", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="Divergences found by differential fuzzing of lazyfree reclaim "
                              "models: triage, replay, corpus export; apart from them, the "
                              "harness errors (defects of foliodiff itself) runs hit.")
    app.state.settings = settings
    app.state.store = None
    errors.install(app)
    app.add_middleware(errors.BodyLimit, limit=settings.max_body_bytes)
    for module in (divergences, campaigns, intended, programs, harness, corpus, run, conformance):
        app.include_router(module.router)
    # Imported here: the pages use the API's views and dependencies, so a module-level
    # import would make importing service.web.pages first a circular import.
    from service.web.pages import install
    install(app, settings)
    return app
