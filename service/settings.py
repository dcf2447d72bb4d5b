"""The service's settings, read from ``FOLIODIFF_*`` environment variables, defined once.

One :class:`Settings` feeds the CLI and the triage API: where the store is
(``FOLIODIFF_DB_URL``, default :data:`DEFAULT_DB_URL`), the API's write token
(``FOLIODIFF_TOKEN``), the corpus it serves and its limits.  A command-line
option wins over the environment (``foliodiff fuzz --db URL``).  The fuzzers
read no settings: they are handed URLs and sinks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from engine import CORPUS_DIR

#: What every setting's environment variable starts with.
ENV_PREFIX = "FOLIODIFF_"
#: The store when neither ``--db`` nor ``FOLIODIFF_DB_URL`` names one: a SQLite
#: file in the working directory.
DEFAULT_DB_URL = "sqlite:///foliodiff.db"


class Settings(BaseSettings):
    """What the CLI and one API process need: where the store is, and the API's limits.

    ``token``: when set, every write endpoint requires ``Authorization:
    Bearer <token>``; reads stay open.  The run limits bound the engine work
    one request may ask for (see :func:`service.triage.check_run_budget`):
    the model's reclaim is quadratic in the pages mapped, so an unbounded
    program would hold a worker for minutes.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    db_url: str = DEFAULT_DB_URL
    #: The corpus files ``/corpus`` serves (default: the seed corpus, corpus/).
    corpus_dir: Path = CORPUS_DIR
    token: SecretStr | None = None
    #: Largest request body, in bytes (checked on Content-Length and on the bytes read).
    max_body_bytes: int = Field(default=1 << 20, ge=1)
    #: Most pages a submitted program may map, counting every forked copy.
    max_run_pages: int = Field(default=2048, ge=1)
    #: Most (pages mapped)^2 * ops a submitted program may cost (about 2 s per run pair).
    max_run_work: int = Field(default=1 << 24, ge=1)
    #: Plugin engines (``PATH.py:Class``, ``module:Class``) to register at start,
    #: comma-separated in ``FOLIODIFF_PLUGINS``: the API accepts no other plugin.
    plugins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Whether ``POST /divergences/{id}/conform`` starts ``foliodiff conform --job ID``
    #: at once; off, queued jobs wait for someone to run that command.
    conform_jobs: bool = True

    @field_validator("plugins", mode="before")
    @classmethod
    def _plugins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value


def env_name(setting: str) -> str:
    """The environment variable of @setting: ``db_url`` -> ``FOLIODIFF_DB_URL``.

    Raises :class:`KeyError` naming @setting when :class:`Settings` has no such field.
    """
    if setting not in Settings.model_fields:
        raise KeyError(f"no setting {setting!r} (settings: {', '.join(Settings.model_fields)})")
    return ENV_PREFIX + setting.upper()
