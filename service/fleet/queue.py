"""The fleet's job queue: procrastinate on the store's PostgreSQL database.

docs/distributed.md says why procrastinate.  Its tables (``procrastinate_*``)
live beside the store's; :func:`ensure_schema` creates them once, under an
advisory lock, so that workers starting together on a new database do not
race.  Jobs of a campaign go to its queue (:func:`campaign_queue`); a fuzz
share's jobs carry the share's lock (one runs at a time) and queueing lock
(one waits at a time), a minimization's the finding's.
"""

from __future__ import annotations

import psycopg
from procrastinate.schema import SchemaManager
from sqlalchemy.engine import make_url

from service.errors import InvalidValueError

#: Seconds between a worker's heartbeats, and without one after which its
#: jobs are taken over (procrastinate's ``update_heartbeat_interval`` and
#: ``stalled_worker_timeout``; a worker also prunes workers silent that long).
HEARTBEAT = 2.0
STALLED_AFTER = 10.0

#: Task names.
FUZZ_SHARE = "foliodiff:fuzz_share"
MINIMIZE = "foliodiff:minimize"
MERGE = "foliodiff:merge"
REPLAY = "foliodiff:replay"

#: The queue of replays (no campaign's): workers without ``--campaign`` take them.
REPLAY_QUEUE = "replay"

#: Who pushed the seed inputs into a campaign's shared corpus (a merge keeps them).
SEEDS = "seeds"

# Key of the advisory lock that serialises creating the queue's schema ("fdqueue").
_SCHEMA_LOCK = 0x6664717565756500


def conninfo(db_url: str) -> str:
    """The libpq connection string of store URL @db_url (``postgresql+psycopg://...``).

    Raises :class:`InvalidValueError` for a URL that is not PostgreSQL: a fleet
    needs a server every machine reaches (SQLite is the single-machine store).
    """
    url = make_url(db_url)
    if url.get_backend_name() != "postgresql":
        raise InvalidValueError("db", url.render_as_string(hide_password=True),
                                "a fleet runs on PostgreSQL (postgresql+psycopg://...); "
                                "SQLite is for one machine: foliodiff fuzz")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def campaign_queue(campaign_id: int) -> str:
    """The queue of campaign @campaign_id's jobs."""
    return f"campaign-{campaign_id}"


def share_lock(campaign_id: int, share: int) -> str:
    return f"campaign-{campaign_id}/share-{share}"


def minimize_lock(divergence_id: int) -> str:
    return f"minimize-{divergence_id}"


def merge_lock(campaign_id: int) -> str:
    return f"campaign-{campaign_id}/merge"


def replay_lock(divergence_id: int) -> str:
    return f"replay-{divergence_id}"


def ensure_schema(db_url: str) -> None:
    """Create procrastinate's tables in @db_url's database unless they exist."""
    with psycopg.connect(conninfo(db_url), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        try:
            if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone() == (None,):
                # No parameters: psycopg sends the text as it is.
                conn.execute(SchemaManager.get_schema())
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))
