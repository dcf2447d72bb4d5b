"""Store URLs for the service tests: a real SQLite file and a real PostgreSQL database.

Every test that asks for ``url`` runs once per backend.  The PostgreSQL
variant needs a server: ``FOLIODIFF_TEST_PG_URL`` names a database on it
that the tests use only as a maintenance connection (``.ci/run`` starts a
throwaway server on loopback and sets it).  Each test gets a database of its
own, created empty before and dropped after, so no test sees another's rows
and ids start at 1 as on a fresh SQLite file.

Without the variable the PostgreSQL variants are skipped, saying why; in CI
(``CI`` set to true) they fail instead, so CI cannot go green without them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

PG_URL_VAR = "FOLIODIFF_TEST_PG_URL"
BACKENDS = ("sqlite file", "postgresql")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="session")
def pg_admin():
    """An AUTOCOMMIT engine on ``$FOLIODIFF_TEST_PG_URL``, or skip (fail in CI)."""
    url = os.environ.get(PG_URL_VAR)
    if not url:
        message = (f"{PG_URL_VAR} is not set: PostgreSQL store tests need a server "
                   "(.ci/run starts one)")
        if _in_ci():
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)
    engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=1)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    name = f"foliodiff_t_{uuid.uuid4().hex[:16]}"
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield make_url(pg_admin.url).set(database=name).render_as_string(hide_password=False)
    with pg_admin.connect() as conn:
        # FORCE: a connection a failed test left open must not keep the database alive.
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL on an empty database of each backend."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path / 'store.db'}"
