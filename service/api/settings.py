"""Settings of the triage API, read from ``FOLIODIFF_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine import CORPUS_DIR


class Settings(BaseSettings):
    """What one API process needs: where the store is, and its limits.

    ``token``: when set, every write endpoint requires ``Authorization:
    Bearer <token>``; reads stay open.  The run limits bound the engine work
    one request may ask for (see :func:`service.triage.check_run_budget`):
    the model's reclaim is quadratic in the pages mapped, so an unbounded
    program would hold a worker for minutes.
    """

    model_config = SettingsConfigDict(env_prefix="FOLIODIFF_", extra="ignore")

    db_url: str = "sqlite:///foliodiff.db"
    #: The corpus files ``/corpus`` serves (default: the seed corpus, corpus/).
    corpus_dir: Path = CORPUS_DIR
    token: SecretStr | None = None
    #: Largest request body, in bytes (checked on Content-Length and on the bytes read).
    max_body_bytes: int = Field(default=1 << 20, ge=1)
    #: Most pages a submitted program may map, counting every forked copy.
    max_run_pages: int = Field(default=2048, ge=1)
    #: Most (pages mapped)^2 * ops a submitted program may cost (about 2 s per run pair).
    max_run_work: int = Field(default=1 << 24, ge=1)
