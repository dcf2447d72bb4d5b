"""The triage HTTP API (FastAPI) over :class:`service.store.Store`.

``create_app(settings)`` builds the app; ``serve(host, port, db_url)`` runs it
under uvicorn (what ``foliodiff serve`` calls).
"""

from __future__ import annotations

from service.api.app import create_app
from service.settings import Settings
from service.store import Store

__all__ = ["Settings", "create_app", "serve"]


def serve(host: str = "127.0.0.1", port: int = 8000, db_url: str | None = None,
          store: Store | None = None) -> None:
    """Serve the API with uvicorn until interrupted.

    ``db_url`` overrides ``FOLIODIFF_DB_URL``; the other settings (token,
    limits) come from the environment.  ``store``: that URL's store, opened
    by the caller (``foliodiff serve`` opens it first, so that a store that
    cannot be opened stops it before it listens); else the first request
    opens it.
    Context: blocks; uvicorn handles SIGINT/SIGTERM and shuts down cleanly.
    """
    import uvicorn

    settings = Settings() if db_url is None else Settings(db_url=db_url)
    app = create_app(settings)
    app.state.store = store
    uvicorn.run(app, host=host, port=port, log_level="info")
