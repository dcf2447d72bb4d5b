"""Dependencies of the routers: the store, the settings, and the write token."""

from __future__ import annotations

import secrets
import threading
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.errors import ApiError
from service.settings import Settings, env_name
from service.store import Store

_open_lock = threading.Lock()


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    """The app's store, opened (and migrated) on first use.

    Context: takes a lock for the first open only; the app's lifespan closes it.
    """
    state = request.app.state
    store = getattr(state, "store", None)
    if store is None:
        with _open_lock:
            store = getattr(state, "store", None)
            if store is None:
                store = state.store = Store.open(state.settings.db_url)
    return store


_bearer = HTTPBearer(auto_error=False,
                     description=f"required on writes when {env_name('token')} is set")


def require_token(settings: Annotated[Settings, Depends(get_settings)],
                  credentials: Annotated[HTTPAuthorizationCredentials | None,
                                         Depends(_bearer)]) -> None:
    """Refuse a write without the configured bearer token (401)."""
    if settings.token is None:
        return
    want = settings.token.get_secret_value().encode()
    got = credentials.credentials.encode() if credentials is not None else b""
    if credentials is None or not secrets.compare_digest(got, want):
        raise ApiError(401, "Authorization", None,
                       "missing or wrong bearer token" if credentials else
                       "write endpoints need 'Authorization: Bearer <token>'",
                       headers={"WWW-Authenticate": "Bearer"})


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
WriteAccess = Depends(require_token)
