"""The divergence store: campaigns, programs, deduplicated divergences and triage,
and apart from them the harness errors (defects of foliodiff itself) runs hit.

The one library the fuzzers and the API write through.  A SQLite file is the
default; any SQLAlchemy URL works.  On SQLite every write transaction starts
with ``BEGIN IMMEDIATE``: it takes the database's write lock up front, so a
batch that reads which signatures exist and then inserts or counts them
cannot interleave with another process doing the same (no lost divergence,
no double count), and a second writer waits ``busy_timeout`` instead of
failing half-way with ``SQLITE_BUSY`` on lock upgrade.  Reads start with a
plain ``BEGIN``: in WAL mode they see a consistent snapshot without taking
the write lock, so listing never waits behind a fuzzer's batch.

On PostgreSQL the writes a fleet makes all the time take no store-wide
lock: finding and harness-error upserts (``INSERT ... ON CONFLICT DO
UPDATE``, hit counts added on conflict; intended counts under the campaign
row's lock), corpus pushes, share saves and example-database writes, so
that many workers on many machines do not queue on one lock.  Every other
write transaction (triage, campaign status and leases, migrations) first
takes one transaction-level advisory lock (``pg_advisory_xact_lock``),
released at commit or rollback, and such writers run one at a time, as on
SQLite.  Readers take no lock and see a committed snapshot per statement
(READ COMMITTED).  Finding batches may carry an idempotency key
(``write_key``): a batch sent again after a lost connection is applied once.

Every method runs in its own transaction and returns detached rows
(``expire_on_commit=False``): they stay readable after the session closed.

:meth:`Store.open` creates a SQLite file that does not exist only when
asked to (``create=True``, what a campaign does); a command that only
reads or triages a store refuses a missing file by name instead of
creating an empty one beside the user.  Any URL that cannot be opened or
migrated is a :class:`service.errors.StoreOpenError` naming it and why.

A campaign is run by one process at a time: it holds the campaign's
lease (:meth:`Store.take_lease`) and renews it every few seconds; a lease
whose heartbeat is older than :data:`LEASE_EXPIRY`, or whose holder
process on this host is gone, may be taken over.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import json
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, cast

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Engine,
    Insert,
    Row,
    Select,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy import table as sql_table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from engine import Classification, Kind, UnknownEngineError
from engine.kernels import resolve_engine, version_tree
from fuzz.records import DivergenceRecord, HarnessRecord, MinimizedRun, PackedOutcome
from fuzz.sources import CoverageUnit
from service.conform.verdict import Verdict
from service.errors import (
    BatchError,
    IllegalTransitionError,
    InvalidValueError,
    LeaseHeldError,
    LeaseLostError,
    NotFoundError,
    ShareLostError,
    StoreMissingError,
    StoreOpenError,
)
from service.models import (
    Campaign,
    CampaignShare,
    CampaignStatus,
    ConformanceJob,
    ConformanceResult,
    CorpusEntry,
    Divergence,
    HarnessError,
    HypothesisExample,
    JobStatus,
    Note,
    OutcomeBlob,
    Program,
    StatsSnapshot,
    TriageEvent,
    TriageStatus,
    UTCDateTime,
    WriteKey,
)
from service.settings import DEFAULT_DB_URL

#: Sample programs kept per intended-divergence rule on a campaign.
INTENDED_SAMPLES = 3
#: Most rows one list call returns.
MAX_LIMIT = 1000
#: Columns a list may be sorted on ("-" in front for descending).
SORT_KEYS = ("id", "first_seen", "last_seen", "hit_count", "kind", "status", "signature")
#: Columns the list of harness errors may be sorted on ("-" in front for descending).
HARNESS_SORT_KEYS = ("id", "first_seen", "last_seen", "hit_count", "engine", "exception",
                     "signature")
MIGRATIONS = Path(__file__).with_name("migrations")
#: Seconds without a heartbeat after which a campaign's lease is taken over by
#: whoever asks for it.  A runner renews its lease every few seconds
#: (``service.campaign.SNAPSHOT_EVERY``); a minute leaves room for a slow
#: store or a parent busy stopping its workers.
LEASE_EXPIRY = 60.0

# Trigram hits above which a signature search scans instead of using the index.
_DENSE = 2000
# Ids in one IN (...) list: SQLite before 3.32 allowed 999 host parameters.
_CHUNK = 500
# Execution option that makes the "begin" hook take the write lock.
_WRITE = "foliodiff_write"
# A write whose statements are safe beside any other writer's (INSERT ... ON
# CONFLICT): on PostgreSQL it skips the advisory lock.
_LOCK_FREE = "foliodiff_lock_free"
# Key of the PostgreSQL advisory lock every write transaction holds ("foliodif").
# Advisory locks are per database, so stores in different databases never wait
# on each other.
_PG_WRITE_LOCK = 0x666F6C696F646966
_SIGNATURE_ID = re.compile(r"[0-9a-f]{16}")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default store clock."""
    return datetime.now(UTC)


def display_url(url: str) -> str:
    """@url as messages show it: the password hidden (as is, if it is no URL)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return url


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names, made absolute; None for another backend,
    an in-memory database, a ``file:`` URI, or no URL at all."""
    try:
        parsed = make_url(url)
    except SQLAlchemyError:
        return None
    database = parsed.database
    if (parsed.get_backend_name() != "sqlite" or not database or database == ":memory:"
            or database.startswith("file:") or parsed.query.get("uri")):
        return None
    return Path(database).absolute()


@dataclass(frozen=True)
class Lease:
    """Who runs a campaign: a process (@host, @pid) and the @token it took the lease with.

    @heartbeat: when the holder last renewed it (None in a holder not stored yet).
    """

    host: str
    pid: int
    token: str
    heartbeat: datetime | None = None

    @classmethod
    def mine(cls) -> Lease:
        """A new lease holder: this process, with a fresh random token."""
        return cls(host=socket.gethostname(), pid=os.getpid(), token=secrets.token_hex(16))


def holder_gone(host: str, pid: int) -> bool:
    """Whether lease holder (@host, @pid) is known to be dead: a process of this
    host that no longer exists.  A holder on another host is never known dead:
    only its heartbeat's age tells."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:          # alive, someone else's
        return False
    return False


#: Triage transitions: state -> states a triager may move it to.  Verified is
#: final: when its signature is seen again, the upsert opens a new record.
TRANSITIONS: dict[TriageStatus, tuple[TriageStatus, ...]] = {
    TriageStatus.NEW: (TriageStatus.CONFIRMED, TriageStatus.INTENDED, TriageStatus.INVALID,
                       TriageStatus.DUPLICATE),
    TriageStatus.CONFIRMED: (TriageStatus.INTENDED, TriageStatus.FIXED, TriageStatus.INVALID,
                             TriageStatus.DUPLICATE),
    # Back to confirmed when the replay after the fix still reproduces.
    TriageStatus.FIXED: (TriageStatus.CONFIRMED, TriageStatus.VERIFIED),
    TriageStatus.VERIFIED: (),
    TriageStatus.INTENDED: (TriageStatus.CONFIRMED,),
    TriageStatus.INVALID: (TriageStatus.CONFIRMED,),
    TriageStatus.DUPLICATE: (TriageStatus.CONFIRMED,),
}

CAMPAIGN_TRANSITIONS: dict[CampaignStatus, tuple[CampaignStatus, ...]] = {
    CampaignStatus.PENDING: (CampaignStatus.RUNNING, CampaignStatus.FAILED),
    CampaignStatus.RUNNING: (CampaignStatus.PAUSED, CampaignStatus.FINISHED,
                             CampaignStatus.FAILED),
    CampaignStatus.PAUSED: (CampaignStatus.RUNNING, CampaignStatus.FINISHED,
                            CampaignStatus.FAILED),
    CampaignStatus.FINISHED: (),
    CampaignStatus.FAILED: (),
}


@dataclass
class UpsertResult:
    """What one batch did: rows inserted, hits counted, records reopened."""

    inserted: int = 0
    updated: int = 0
    reopened: int = 0
    intended: int = 0
    ids: dict[str, int] = field(default_factory=dict)   # signature_id -> current record id
    #: The signatures this batch stored a record of (new, or reopened); the
    #: others were stored already, by this writer or another.
    new: set[str] = field(default_factory=set)


@dataclass
class HarnessUpsertResult:
    """What one batch of harness errors did: rows inserted, rows whose hits were counted."""

    inserted: int = 0
    updated: int = 0
    ids: dict[str, int] = field(default_factory=dict)   # signature_id -> row id
    new: set[str] = field(default_factory=set)          # signature ids stored for the first time


@dataclass(frozen=True)
class ConformanceRecord:
    """One scenario's result on one real kernel, as :meth:`Store.add_conformance` keeps it
    (:class:`service.models.ConformanceResult` has the meaning of each field).

    @program: the scenario's program, as JSON text.
    """

    scenario: str
    program: str
    kernel: str
    kernel_version: str
    package: str
    uname: str | None
    engine: str
    verdict: Verdict
    differences: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""
    observed: dict[str, Any] | None = None
    sides: dict[str, Any] = field(default_factory=dict)
    plugin: dict[str, Any] | None = None


def _check_conformance(i: int, r: Any) -> None:
    where = f"results[{i}]"
    if not isinstance(r, ConformanceRecord):
        raise InvalidValueError(where, r, "must be a ConformanceRecord")
    for name in ("scenario", "program", "kernel", "kernel_version", "engine"):
        value = getattr(r, name)
        if not isinstance(value, str) or not value:
            raise InvalidValueError(f"{where}.{name}", value, "must be a non-empty string")
        _check_no_nul(f"{where}.{name}", value)
    _coerce(Verdict, r.verdict, f"{where}.verdict")
    for name in ("differences", "observed", "sides", "plugin"):
        _check_json(getattr(r, name), f"{where}.{name}")


def _coerce(cls: type[enum.Enum], value: Any, name: str) -> Any:
    """``value`` as a member of enum ``cls``, or an error naming ``name``."""
    try:
        return cls(value)
    except ValueError:
        raise InvalidValueError(name, value, "must be one of "
                                + ", ".join(m.value for m in cls)) from None


def _engine_id(value: Any, name: str) -> str:
    try:
        return resolve_engine(value)
    except (UnknownEngineError, TypeError) as exc:
        raise InvalidValueError(name, value, str(exc)) from None


def _tree_edge(value: Any, name: str) -> str:
    """@value as an edge of the version tree (``parent->child``), or an error naming @name."""
    edges = {e.name for e in version_tree().edges}
    if value not in edges:
        raise InvalidValueError(name, value, "must be an edge of the version tree: "
                                + ", ".join(sorted(edges)))
    return cast(str, value)


def _check_json(value: Any, name: str) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(name, value, f"not JSON: {exc}") from None


def _check_no_nul(name: str, value: Any) -> None:
    """Refuse a NUL character in text: PostgreSQL text cannot hold one.

    SQLite could, but a store must keep the same data whatever its database.
    """
    if isinstance(value, str) and "\x00" in value:
        raise InvalidValueError(name, value, "must not contain a NUL character")


def _page_key(sort: Any, keys: Sequence[str], limit: Any, offset: Any) -> str:
    """Check a listing's ``sort`` (one of @keys, ``-`` for descending), ``limit`` and
    ``offset``.  Return: the column name to sort on."""
    key = sort.removeprefix("-") if isinstance(sort, str) else sort
    if key not in keys:
        raise InvalidValueError("sort", sort, "must be one of " + ", ".join(keys)
                                + " (prefix - for descending)")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidValueError("limit", limit, f"must be 1..{MAX_LIMIT}")
    if not isinstance(offset, int) or offset < 0:
        raise InvalidValueError("offset", offset, "must be >= 0")
    return key


def _hits_by_signature(records: Sequence[Any]) -> dict[str, tuple[Any, int]]:
    """Signature id -> (its first record, how many records have it).  Raises
    :class:`InvalidValueError` for two signatures that share an id."""
    groups: dict[str, tuple[Any, int]] = {}
    for r in records:
        first, hits = groups.get(r.signature_id, (r, 0))
        if first.signature != r.signature:
            raise InvalidValueError("signature_id", r.signature_id,
                                    f"shared by {first.signature!r} and {r.signature!r}")
        groups[r.signature_id] = (first, hits + 1)
    return groups


def _check_signed(i: int, r: Any, cls: type[Any]) -> str:
    """Check that record @i is a @cls with a storable signature and signature id.

    Return: the record's place in messages (``records[i]``).
    """
    where = f"records[{i}]"
    if not isinstance(r, cls):
        raise InvalidValueError(where, type(r).__name__, f"must be a {cls.__name__}")
    if not isinstance(r.signature, str) or not 0 < len(r.signature) <= 512:
        raise InvalidValueError(f"{where}.signature", r.signature, "must be 1..512 characters")
    if not isinstance(r.signature_id, str) or not _SIGNATURE_ID.fullmatch(r.signature_id):
        raise InvalidValueError(f"{where}.signature_id", r.signature_id,
                                "must be 16 lowercase hex digits")
    return where


def _check_record(i: int, r: Any) -> None:
    """Reject a record whose shape cannot be stored, naming its index and field.

    Outcomes are not serialised here: that would double the cost of every
    insert; a bad one fails the batch in the database, which rolls it back.
    """
    where = _check_signed(i, r, DivergenceRecord)
    for name in ("kind", "classification"):
        cls = Kind if name == "kind" else Classification
        if not isinstance(getattr(r, name), cls):
            raise InvalidValueError(f"{where}.{name}", getattr(r, name),
                                    f"must be an engine.diff.differential.{cls.__name__}")
    for name in ("engine_a", "engine_b", "original_program"):
        if not isinstance(getattr(r, name), str) or not getattr(r, name):
            raise InvalidValueError(f"{where}.{name}", getattr(r, name),
                                    "must be a non-empty string")
    for name in ("signature", "engine_a", "engine_b", "field", "function", "detail",
                 "original_program", "minimized_program"):
        _check_no_nul(f"{where}.{name}", getattr(r, name))
    if r.minimized is not None:
        if r.minimized_program is None:
            raise InvalidValueError(f"{where}.minimized", "MinimizedRun",
                                    "a minimized run needs its minimized_program")
        _check_minimized_run(f"{where}.minimized", r.minimized)
    if r.classification is Classification.INTENDED and not r.rules:
        raise InvalidValueError(f"{where}.rules", r.rules,
                                "an intended divergence names at least one rule")


def _check_minimized_run(where: str, run: Any) -> None:
    """Reject a minimized run whose shape cannot be stored, naming @where and the field."""
    if not isinstance(run, MinimizedRun):
        raise InvalidValueError(where, type(run).__name__, "must be a fuzz.records.MinimizedRun")
    if not isinstance(run.detail, str):
        raise InvalidValueError(f"{where}.detail", run.detail, "must be text")
    _check_no_nul(f"{where}.detail", run.detail)
    if run.first_op is not None and (not isinstance(run.first_op, int)
                                     or isinstance(run.first_op, bool) or run.first_op < 0):
        raise InvalidValueError(f"{where}.first_op", run.first_op,
                                "must be None or an operation index")


def _check_harness_record(i: int, r: Any) -> None:
    """Reject a harness record whose shape cannot be stored, naming its index and field."""
    where = _check_signed(i, r, HarnessRecord)
    for name, limit in (("engine", 32), ("exception", 128), ("program", None)):
        value = getattr(r, name)
        if not isinstance(value, str) or not value or limit is not None and len(value) > limit:
            raise InvalidValueError(f"{where}.{name}", value, "must be a non-empty string"
                                    + (f" of at most {limit} characters" if limit else ""))
    for name, limit in (("op", 32), ("function", 128)):
        value = getattr(r, name)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise InvalidValueError(f"{where}.{name}", value,
                                    f"must be None or at most {limit} characters")
    if not isinstance(r.message, str):
        raise InvalidValueError(f"{where}.message", r.message, "must be text")
    if not isinstance(r.stack, (tuple, list)) or not all(isinstance(f, str) for f in r.stack):
        raise InvalidValueError(f"{where}.stack", r.stack, "must be a list of frames (text)")
    for name in ("signature", "engine", "exception", "op", "function", "message", "program"):
        _check_no_nul(f"{where}.{name}", getattr(r, name))
    for k, frame in enumerate(r.stack):
        _check_no_nul(f"{where}.stack[{k}]", frame)


def _minimized_columns(run: MinimizedRun | None, outcomes: dict[int, int]) -> dict[str, Any]:
    """The divergence columns of minimized run @run, whose outcomes are stored
    as @outcomes (``id()`` of each value -> outcome row id); all None without one."""
    if run is None:
        return {"minimized_outcome_a_id": None, "minimized_outcome_b_id": None,
                "minimized_detail": None, "minimized_first_op": None}
    return {"minimized_outcome_a_id": outcomes[id(run.outcome_a)],
            "minimized_outcome_b_id": outcomes[id(run.outcome_b)],
            "minimized_detail": run.detail, "minimized_first_op": run.first_op}


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


class _UnstorableJSON(TypeError):
    """A value of a JSON column that cannot be serialised."""


def _compact_json(value: Any) -> str:
    # psycopg serialises inside the driver, where SQLAlchemy does not wrap the
    # error as it does for SQLite's bind processors: one type, caught as such.
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise _UnstorableJSON(str(exc)) from exc


def _table(model: type[Any]) -> Table:
    """The table of mapped class @model (typed as the Table it is, not a FromClause)."""
    return cast(Table, model.__table__)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _batch_error(count: int, exc: Exception) -> BatchError:
    """The :class:`BatchError` of a batch of @count records that failed with @exc:
    transient when the connection failed (the batch may be sent again)."""
    transient = isinstance(exc, OperationalError | DisconnectionError) or bool(
        getattr(exc, "connection_invalidated", False))
    return BatchError(count, str(getattr(exc, "orig", None) or exc), transient=transient)


def _check_key(key: Any) -> None:
    """A batch's idempotency key: None, or 1 to 100 characters."""
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 100):
        raise InvalidValueError("key", key, "an idempotency key of 1 to 100 characters")


def _example_digest(key: bytes, value: bytes) -> str:
    return hashlib.sha1(len(key).to_bytes(8, "little") + key + value).hexdigest()


def _insert_unless_there(dialect: str, table: Table) -> Any:
    """An insert into @table that can say ``on_conflict_do_nothing`` (PostgreSQL's or
    SQLite's); other databases are refused, naming the dialect."""
    if dialect == "postgresql":
        return pg_insert(table)
    if dialect == "sqlite":
        return sqlite_insert(table)
    raise InvalidValueError("url", dialect, "a store on SQLite or PostgreSQL")


def _insert_or_count(s: Session, table: Table,
                     key: list[str]) -> tuple[Insert, ColumnElement[bool]]:
    """An insert of finding rows (``hit_count``, ``last_seen``) unique on @key,
    and the expression that, returned, says whether the statement inserted a row.

    On PostgreSQL nobody holds a store-wide lock: another writer may have
    stored the same row since this transaction read which exist.  Then the
    row is theirs and the insert counts its hits on it (``ON CONFLICT DO
    UPDATE``; ``xmax = 0`` tells a row this statement inserted).  On SQLite
    ``BEGIN IMMEDIATE`` kept every other writer out since the read: every
    row is new.
    """
    if s.get_bind().dialect.name != "postgresql":
        return insert(table), literal(True)
    stmt = pg_insert(table)
    return (stmt.on_conflict_do_update(
                index_elements=key,
                set_={"hit_count": table.c.hit_count + stmt.excluded.hit_count,
                      "last_seen": func.greatest(table.c.last_seen, stmt.excluded.last_seen)}),
            literal_column("xmax = 0", Boolean))


def _sqlite_hooks(engine: Engine, busy_timeout_ms: int) -> None:
    """WAL, foreign keys, busy timeout, and ``BEGIN IMMEDIATE`` for writes.

    The pysqlite recipe from the SQLAlchemy SQLite dialect documentation:
    the driver's own transaction handling is switched off (it would emit a
    deferred BEGIN lazily, and not before DDL) and the "begin" event emits
    BEGIN itself.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # The timeout first: switching to WAL needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        # In WAL mode NORMAL cannot corrupt the file; a power cut may lose the
        # last commits, which a fuzzer finds again.  FULL costs an fsync per batch.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE)
                             else "BEGIN")


def _postgresql_hooks(engine: Engine) -> None:
    """The PostgreSQL counterpart of ``BEGIN IMMEDIATE``: one advisory lock per write.

    Every write transaction takes the same transaction-level advisory lock as
    its first statement, so writers are serialised exactly as on SQLite: an
    upsert's read of which signatures exist cannot be overtaken by another
    writer's insert (no unique-key failure, no lost or double-counted hit),
    and two processes migrating a new database do it one after the other.
    The lock goes with the transaction; reads never take it.
    """

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get(_WRITE) and not options.get(_LOCK_FREE):
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_WRITE_LOCK})")


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema of ``engine``'s database to migration ``revision`` (the newest).

    Context: runs in one write transaction, so concurrent openers of a new
    file migrate it once, one after the other.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.execution_options(**{_WRITE: True}).begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


class Store:
    """Campaigns, programs, divergences and their triage, and harness errors, in one database."""

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self.engine = engine
        self._clock = clock
        self._reader = sessionmaker(engine, expire_on_commit=False)
        self._writer = sessionmaker(engine.execution_options(**{_WRITE: True}),
                                    expire_on_commit=False)
        self._lock_free_writer = sessionmaker(
            engine.execution_options(**{_WRITE: True, _LOCK_FREE: True}), expire_on_commit=False)

    @classmethod
    def open(cls, url: str = DEFAULT_DB_URL, *, create: bool = True, clock: Clock = utc_now,
             busy_timeout_ms: int = 30_000) -> Store:
        """Connect to ``url`` and migrate its schema to the newest version.

        @create: whether a SQLite file that does not exist is created (an
            empty store); without it such a URL raises
            :class:`StoreMissingError`, naming the file.  Other backends'
            databases are never created here.
        Raises :class:`StoreOpenError` naming the URL (password hidden) and
        the reason when the database cannot be reached, is no database, or
        its schema cannot be migrated.
        Return: a store; :meth:`close` it when done.
        """
        shown = display_url(url)
        path = sqlite_file(url) if isinstance(url, str) else None
        if path is not None and not create and not path.is_file():
            raise StoreMissingError(shown, str(path))
        try:
            # Compact JSON: outcomes are most of a divergence row's bytes.
            engine = create_engine(url, json_serializer=_compact_json)
        except (SQLAlchemyError, ValueError, TypeError) as exc:
            raise StoreOpenError(shown, f"not a database URL: {exc}") from exc
        if engine.dialect.name == "sqlite":
            _sqlite_hooks(engine, busy_timeout_ms)
        elif engine.dialect.name == "postgresql":
            _postgresql_hooks(engine)
        try:
            upgrade(engine)
        except SQLAlchemyError as exc:
            engine.dispose()
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StoreOpenError(shown, reason) from exc
        except CommandError as exc:
            engine.dispose()
            raise StoreOpenError(shown, f"its schema cannot be migrated: {exc} (a store "
                                        f"written by a newer foliodiff?)") from exc
        return cls(engine, clock)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._writer() as session, session.begin():
            yield session

    @contextmanager
    def _write_lock_free(self) -> Iterator[Session]:
        """A write transaction for statements that are correct beside any other
        writer's (``INSERT ... ON CONFLICT``): PostgreSQL writers do not queue
        on the advisory lock for it; SQLite has one writer at a time anyway."""
        with self._lock_free_writer() as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._reader() as session:
            yield session

    # -- campaigns -------------------------------------------------------------

    def create_campaign(self, engine_a: str, engine_b: str, fuzzer: str,
                        config: dict[str, Any] | None = None) -> Campaign:
        """Record a new campaign of ``fuzzer`` on an engine pair, pending."""
        a, b = _engine_id(engine_a, "engine_a"), _engine_id(engine_b, "engine_b")
        if not isinstance(fuzzer, str) or not 0 < len(fuzzer) <= 64:
            raise InvalidValueError("fuzzer", fuzzer, "must be 1..64 characters")
        _check_no_nul("fuzzer", fuzzer)
        config = {} if config is None else config
        if not isinstance(config, dict):
            raise InvalidValueError("config", config, "must be a JSON object")
        _check_json(config, "config")
        now = self._clock()
        campaign = Campaign(engine_a=a, engine_b=b, fuzzer=fuzzer, config=config,
                            status=CampaignStatus.PENDING, intended={}, created_at=now,
                            updated_at=now)
        with self._write() as s:
            s.add(campaign)
        return campaign

    def get_campaign(self, campaign_id: int) -> Campaign:
        with self._read() as s:
            return self._campaign(s, campaign_id)

    def list_campaigns(self, *, status: CampaignStatus | str | None = None, limit: int = 50,
                       offset: int = 0) -> tuple[list[Campaign], int]:
        """A page of campaigns, newest first, and how many match.

        Return: ``(items, total)``.
        """
        where = []
        if status is not None:
            where.append(Campaign.status == _coerce(CampaignStatus, status, "status"))
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidValueError("limit", limit, f"must be 1..{MAX_LIMIT}")
        if not isinstance(offset, int) or offset < 0:
            raise InvalidValueError("offset", offset, "must be >= 0")
        with self._read() as s:
            total = s.scalar(select(func.count()).select_from(Campaign).where(*where))
            items = list(s.scalars(select(Campaign).where(*where)
                                   .order_by(Campaign.id.desc()).limit(limit).offset(offset)))
        return items, total or 0

    def set_campaign_status(self, campaign_id: int, status: CampaignStatus | str) -> Campaign:
        """Move a campaign along :data:`CAMPAIGN_TRANSITIONS`."""
        to = _coerce(CampaignStatus, status, "status")
        with self._write() as s:
            campaign = self._campaign(s, campaign_id)
            allowed = CAMPAIGN_TRANSITIONS[campaign.status]
            if to not in allowed:
                raise IllegalTransitionError("campaign", campaign_id, campaign.status, to,
                                             list(allowed))
            campaign.status = to
            campaign.updated_at = self._clock()
        return campaign

    def save_progress(self, campaign_id: int, progress: dict[str, Any]) -> Campaign:
        """Record where a campaign's workers are, for a resume: ``config["progress"]``."""
        if not isinstance(progress, dict):
            raise InvalidValueError("progress", progress, "must be a JSON object")
        _check_json(progress, "progress")
        with self._write() as s:
            campaign = self._campaign(s, campaign_id)
            campaign.config = {**campaign.config, "progress": progress}
            campaign.updated_at = self._clock()
        return campaign

    def take_lease(self, campaign_id: int, holder: Lease, *, expiry: float = LEASE_EXPIRY,
                   gone: Callable[[str, int], bool] = holder_gone) -> Lease | None:
        """Make @holder the runner of campaign @campaign_id.

        The lease is free when nobody holds it, when @holder holds it
        already (same token), when its heartbeat is more than @expiry seconds
        old, or when @gone says its holder is dead (:func:`holder_gone`: a
        process of this host that no longer exists).  Otherwise raises
        :class:`LeaseHeldError`, naming the holder and its last heartbeat.
        A finished or failed campaign cannot be run again
        (:class:`IllegalTransitionError`).

        Context: one write transaction: of two processes asking at once, one
        gets the lease and the other sees it held.
        Return: the other runner's lease taken over (expired, or its holder
        gone), or None when the lease was free.
        """
        if not isinstance(holder, Lease) or not holder.token:
            raise InvalidValueError("holder", holder, "must be a Lease with a token")
        with self._write() as s:
            campaign = self._campaign(s, campaign_id)
            # RUNNING already: killed, or held by another runner (below).
            if (campaign.status is not CampaignStatus.RUNNING
                    and CampaignStatus.RUNNING not in CAMPAIGN_TRANSITIONS[campaign.status]):
                allowed = CAMPAIGN_TRANSITIONS[campaign.status]
                raise IllegalTransitionError("campaign", campaign_id, campaign.status,
                                             CampaignStatus.RUNNING, list(allowed))
            now = self._clock()
            previous = None
            if campaign.lease_token is not None and campaign.lease_token != holder.token:
                previous = Lease(host=campaign.lease_host or "", pid=campaign.lease_pid or 0,
                                 token=campaign.lease_token, heartbeat=campaign.lease_heartbeat)
                beat = campaign.lease_heartbeat or now
                age = (now - beat).total_seconds()
                if age <= expiry and not gone(previous.host, previous.pid):
                    raise LeaseHeldError(campaign_id, previous.host, previous.pid, beat, age,
                                         expiry)
            campaign.lease_host, campaign.lease_pid = holder.host, holder.pid
            campaign.lease_token, campaign.lease_heartbeat = holder.token, now
        return previous

    def renew_lease(self, campaign_id: int, token: str) -> datetime:
        """Record a heartbeat of the runner holding campaign @campaign_id's lease with @token.

        Raises :class:`LeaseLostError` when another runner took the lease
        over (this one was silent too long): the caller must stop.
        Return: the heartbeat's time.
        """
        with self._write() as s:
            campaign = self._campaign(s, campaign_id)
            if campaign.lease_token != token:
                raise LeaseLostError(campaign_id, campaign.lease_host, campaign.lease_pid)
            campaign.lease_heartbeat = now = self._clock()
        return now

    def release_lease(self, campaign_id: int, token: str) -> bool:
        """Give up campaign @campaign_id's lease, if @token still holds it.

        Return: whether it did (False: another runner had taken it over).
        """
        with self._write() as s:
            campaign = self._campaign(s, campaign_id)
            if campaign.lease_token != token:
                return False
            campaign.lease_host = campaign.lease_pid = None
            campaign.lease_token = campaign.lease_heartbeat = None
        return True

    def known_signature_ids(self, engine_a: str, engine_b: str) -> set[str]:
        """Signature ids of every divergence stored for an engine pair."""
        a, b = _engine_id(engine_a, "engine_a"), _engine_id(engine_b, "engine_b")
        with self._read() as s:
            return set(s.scalars(select(Divergence.signature_id)
                                 .where(Divergence.engine_a == a, Divergence.engine_b == b)))

    def unminimized(self, engine_a: str, engine_b: str) -> list[int]:
        """Ids of the unexpected divergences of an engine pair stored without a
        minimized program (a campaign's minimizer had not got to them), oldest first."""
        a, b = _engine_id(engine_a, "engine_a"), _engine_id(engine_b, "engine_b")
        with self._read() as s:
            return list(s.scalars(select(Divergence.id).where(
                Divergence.engine_a == a, Divergence.engine_b == b,
                Divergence.classification == Classification.UNEXPECTED,
                Divergence.minimized_program_id.is_(None)).order_by(Divergence.id)))

    def count_by_kind(self, engine_a: str, engine_b: str) -> dict[str, int]:
        """How many divergences of each kind are stored for an engine pair."""
        a, b = _engine_id(engine_a, "engine_a"), _engine_id(engine_b, "engine_b")
        with self._read() as s:
            return {kind.value: n for kind, n in s.execute(
                select(Divergence.kind, func.count()).where(
                    Divergence.engine_a == a, Divergence.engine_b == b)
                .group_by(Divergence.kind))}

    def add_stats_snapshot(self, campaign_id: int, t: float, execs: int, exec_per_s: float,
                           corpus_size: int, signatures: dict[str, int],
                           coverage: int | None = None,
                           coverage_unit: CoverageUnit | str | None = None) -> StatsSnapshot:
        """Record a campaign's counters ``t`` seconds after it started.

        ``signatures`` counts unique signatures by kind (``engine.diff.differential.Kind`` values).
        ``coverage`` counts ``coverage_unit`` (:class:`fuzz.sources.CoverageUnit`):
        both given, or neither (not measured).
        """
        for name, value in (("t", t), ("execs", execs), ("exec_per_s", exec_per_s),
                            ("corpus_size", corpus_size)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise InvalidValueError(name, value, "must be a non-negative number")
        if (coverage is None) != (coverage_unit is None):
            raise InvalidValueError("coverage_unit" if coverage_unit is None else "coverage",
                                    None, "coverage and its unit go together, or neither")
        if coverage is not None and (not isinstance(coverage, int) or isinstance(coverage, bool)
                                     or coverage < 0):
            raise InvalidValueError("coverage", coverage, "must be a count")
        unit = None if coverage_unit is None else _coerce(CoverageUnit, coverage_unit,
                                                          "coverage_unit")
        if not isinstance(signatures, dict):
            raise InvalidValueError("signatures", signatures, "must map kind to count")
        for kind, count in signatures.items():
            _coerce(Kind, kind, "signatures")
            if not isinstance(count, int) or count < 0:
                raise InvalidValueError(f"signatures.{kind}", count, "must be a count")
        snap = StatsSnapshot(campaign_id=campaign_id, t=float(t), execs=execs,
                             exec_per_s=float(exec_per_s), corpus_size=corpus_size,
                             signatures=dict(signatures), at=self._clock(),
                             coverage=coverage, coverage_unit=unit)
        with self._write() as s:
            self._campaign(s, campaign_id)
            s.add(snap)
        return snap

    def stats(self, campaign_id: int) -> list[StatsSnapshot]:
        """A campaign's snapshots, oldest first."""
        with self._read() as s:
            self._campaign(s, campaign_id)
            return list(s.scalars(select(StatsSnapshot)
                                  .where(StatsSnapshot.campaign_id == campaign_id)
                                  .order_by(StatsSnapshot.t, StatsSnapshot.id)))

    def stats_thinned(self, campaign_id: int, max_points: int) -> tuple[list[StatsSnapshot], int]:
        """At most @max_points of a campaign's snapshots, evenly spread, for a plot.

        Every n-th snapshot, oldest first, n the least that leaves at most
        @max_points, and the newest one always (where the campaign is now).
        A campaign snapshots every 5 s, 17,280 times a day: a plot cannot
        show more points than it has pixels, and loading them all costs a
        page half a second.  The database numbers the rows along the
        (campaign_id, t) index and only the kept ones are loaded.
        Return: (the snapshots kept, oldest first; how many the campaign has).
        """
        if not isinstance(max_points, int) or isinstance(max_points, bool) or max_points < 2:
            raise InvalidValueError("max_points", max_points, "must be a count of at least 2")
        with self._read() as s:
            self._campaign(s, campaign_id)
            total = s.scalar(select(func.count()).select_from(StatsSnapshot)
                             .where(StatsSnapshot.campaign_id == campaign_id)) or 0
            step = max(1, -(-total // (max_points - 1)))
            numbered = (select(StatsSnapshot.id, func.row_number().over(
                order_by=(StatsSnapshot.t, StatsSnapshot.id)).label("n"))
                .where(StatsSnapshot.campaign_id == campaign_id).subquery())
            kept = select(numbered.c.id).where(((numbered.c.n - 1) % step == 0)
                                               | (numbered.c.n == total))
            items = list(s.scalars(select(StatsSnapshot).where(StatsSnapshot.id.in_(kept))
                                   .order_by(StatsSnapshot.t, StatsSnapshot.id)))
        return items, total

    # -- fleet campaigns: the shared Hypothesis example database -------------------

    def save_example(self, campaign_id: int, key: bytes, value: bytes) -> None:
        """Save @value under @key in campaign @campaign_id's example database (once)."""
        for name, v in (("key", key), ("value", value)):
            if not isinstance(v, bytes):
                raise InvalidValueError(name, v, "bytes")
        table = _table(HypothesisExample)
        stmt = _insert_unless_there(self.engine.dialect.name, table)
        with self._write_lock_free() as s:
            s.execute(stmt.on_conflict_do_nothing(index_elements=["campaign_id", "digest"]),
                      {"campaign_id": campaign_id, "key": key, "value": value,
                       "digest": _example_digest(key, value)})

    def fetch_examples(self, campaign_id: int, key: bytes) -> list[bytes]:
        """The values saved under @key in campaign @campaign_id's example database."""
        with self._read() as s:
            return list(s.scalars(select(HypothesisExample.value)
                                  .where(HypothesisExample.campaign_id == campaign_id,
                                         HypothesisExample.key == key)
                                  .order_by(HypothesisExample.id)))

    def delete_example(self, campaign_id: int, key: bytes, value: bytes) -> None:
        """Remove @value from under @key (nothing if it is not there)."""
        table = _table(HypothesisExample)
        with self._write_lock_free() as s:
            s.execute(table.delete().where(table.c.campaign_id == campaign_id,
                                           table.c.digest == _example_digest(key, value)))

    # -- fleet campaigns: shares --------------------------------------------------

    def create_shares(self, campaign_id: int, count: int) -> list[CampaignShare]:
        """Split campaign @campaign_id into shares 0 .. @count - 1, none started."""
        if not isinstance(count, int) or not 1 <= count <= 64:
            raise InvalidValueError("shares", count, "1 to 64")
        now = self._clock()
        with self._write() as s:
            self._campaign(s, campaign_id)
            rows = [CampaignShare(campaign_id=campaign_id, share=k, generation=0, position=None,
                                  elapsed=0.0, execs=0, coverage=0, holder=None, updated_at=now)
                    for k in range(count)]
            s.add_all(rows)
        return rows

    def shares(self, campaign_id: int) -> list[CampaignShare]:
        """The shares of campaign @campaign_id, by number (none: not a fleet campaign)."""
        with self._read() as s:
            self._campaign(s, campaign_id)
            return list(s.scalars(select(CampaignShare)
                                  .where(CampaignShare.campaign_id == campaign_id)
                                  .order_by(CampaignShare.share)))

    def take_share(self, campaign_id: int, share: int, holder: str) -> CampaignShare:
        """Give share @share of campaign @campaign_id to worker @holder: a new
        generation, whose writes (:meth:`save_share`) are the only ones kept from now.
        Return: the share as @holder goes on from it."""
        table = _table(CampaignShare)
        with self._write_lock_free() as s:
            row = s.execute(update(table)
                            .where(table.c.campaign_id == campaign_id, table.c.share == share)
                            .values(generation=table.c.generation + 1, holder=holder[:300],
                                    updated_at=self._clock())
                            .returning(table.c.id)).first()
            if row is None:
                raise NotFoundError("campaign share", f"{campaign_id}/{share}")
            return s.get_one(CampaignShare, row.id)

    def save_share(self, campaign_id: int, share: int, generation: int, *, position: Any,
                   elapsed: float, execs: int, coverage: int) -> None:
        """Record where share @share's source is and what it did, if generation
        @generation still holds it.

        Raises :class:`ShareLostError` when a newer generation took the share:
        nothing is written, and the caller stops running it.
        """
        table = _table(CampaignShare)
        with self._write_lock_free() as s:
            done = s.execute(update(table)
                             .where(table.c.campaign_id == campaign_id, table.c.share == share,
                                    table.c.generation == generation)
                             .values(position=position, elapsed=float(elapsed), execs=int(execs),
                                     coverage=int(coverage), updated_at=self._clock())
                             .returning(table.c.id)).first()
            if done is None:
                now = s.execute(select(table.c.generation, table.c.holder)
                                .where(table.c.campaign_id == campaign_id,
                                       table.c.share == share)).first()
                if now is None:
                    raise NotFoundError("campaign share", f"{campaign_id}/{share}")
                raise ShareLostError(campaign_id, share, generation, now.generation, now.holder)

    # -- the shared corpus --------------------------------------------------------

    def push_corpus(self, campaign_id: int, entries: Sequence[tuple[bytes, Sequence[str]]],
                    worker: str) -> int:
        """Add inputs a worker of campaign @campaign_id kept to the campaign's shared corpus.

        @entries: (input bytes, the behaviour features it showed) each.
        @worker: the share that kept them (at most 64 characters).
        An input the corpus holds already, pushed by any worker, is left as it
        is (``INSERT ... ON CONFLICT DO NOTHING``: concurrent pushes of one
        input store it once, and take no store-wide lock on PostgreSQL).
        Raises :class:`InvalidValueError` naming a malformed entry,
        :class:`NotFoundError` for an unknown campaign.
        Return: how many of @entries were new.
        """
        if not isinstance(worker, str) or not 0 < len(worker) <= 64:
            raise InvalidValueError("worker", worker, "a name of 1 to 64 characters")
        rows: dict[str, dict[str, Any]] = {}
        now = self._clock()
        for i, entry in enumerate(entries):
            if not isinstance(entry, tuple) or len(entry) != 2:
                raise InvalidValueError(f"entries[{i}]", entry, "a pair (data, features)")
            data, features = entry
            if not isinstance(data, bytes) or not data:
                raise InvalidValueError(f"entries[{i}].data", data, "non-empty bytes")
            if (not isinstance(features, list | tuple | set | frozenset)
                    or not all(isinstance(f, str) and "\x00" not in f for f in features)):
                raise InvalidValueError(f"entries[{i}].features", features,
                                        "a list of strings without NUL")
            sha1 = hashlib.sha1(data).hexdigest()
            rows.setdefault(sha1, {"campaign_id": campaign_id, "sha1": sha1, "data": data,
                                   "features": sorted(features), "worker": worker,
                                   "created_at": now, "pruned": False})
        if not rows:
            return 0
        table = _table(CorpusEntry)
        stmt = _insert_unless_there(self.engine.dialect.name, table)
        try:
            with self._write_lock_free() as s:
                self._campaign(s, campaign_id)
                inserted = s.execute(stmt.on_conflict_do_nothing(
                    index_elements=["campaign_id", "sha1"]).returning(table.c.id),
                    list(rows.values())).all()
        except SQLAlchemyError as exc:
            raise _batch_error(len(rows), exc) from exc
        return len(inserted)

    def pull_corpus(self, campaign_id: int, after: int = 0, limit: int = 1000, *,
                    pruned: bool = False) -> list[CorpusEntry]:
        """The entries of campaign @campaign_id's shared corpus with an id above
        @after, oldest first, at most @limit: a worker asks again with the last
        id it got until none come.  @pruned: the entries a merge pruned too."""
        if not isinstance(after, int) or after < 0:
            raise InvalidValueError("after", after, "an entry id >= 0")
        if not isinstance(limit, int) or not 0 < limit <= 10_000:
            raise InvalidValueError("limit", limit, "1 to 10000")
        query = select(CorpusEntry).where(CorpusEntry.campaign_id == campaign_id,
                                          CorpusEntry.id > after)
        if not pruned:
            query = query.where(CorpusEntry.pruned.is_(False))
        with self._read() as s:
            self._campaign(s, campaign_id)
            return list(s.scalars(query.order_by(CorpusEntry.id).limit(limit)))

    def corpus_size(self, campaign_id: int) -> int:
        """How many inputs campaign @campaign_id's shared corpus holds, pruned ones apart."""
        with self._read() as s:
            return int(s.scalar(select(func.count()).select_from(CorpusEntry).where(
                CorpusEntry.campaign_id == campaign_id, CorpusEntry.pruned.is_(False))) or 0)

    def prune_corpus(self, campaign_id: int, ids: Iterable[int]) -> int:
        """Mark entries @ids of campaign @campaign_id's corpus pruned (a merge
        found them redundant): workers stop pulling them; they stay stored.
        Return: how many were not pruned before."""
        ids = list(ids)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise InvalidValueError("ids", ids, "entry ids")
        table = _table(CorpusEntry)
        done = 0
        with self._write_lock_free() as s:
            self._campaign(s, campaign_id)
            for chunk in _chunks(ids):
                done += len(s.execute(update(table)
                                      .where(table.c.campaign_id == campaign_id,
                                             table.c.id.in_(chunk), table.c.pruned.is_(False))
                                      .values(pruned=True).returning(table.c.id)).all())
        return done

    # -- divergences -------------------------------------------------------------

    def upsert_divergences(self, records: Iterable[DivergenceRecord],
                           campaign_id: int | None = None, *,
                           key: str | None = None) -> UpsertResult:
        """Store a batch of divergences in one transaction.

        An unexpected signature seen for the first time becomes a new record;
        one already stored gets its hit count raised by the number of times
        the batch holds it and its last_seen moved; one whose newest record is
        verified opens a new record linked by ``reopened_from``.  Intended
        divergences are not stored: each of their rules is counted on campaign
        ``campaign_id`` with up to :data:`INTENDED_SAMPLES` sample programs.

        @key: the batch's idempotency key (a writer's token and batch number,
            at most 100 characters): a batch whose key the store holds was
            applied already, and is not applied again (its result has the
            record ids, nothing inserted, counted or new).

        Context: one write transaction; on any error nothing of the batch is
        stored.  On SQLite it starts with ``BEGIN IMMEDIATE``; on PostgreSQL
        it takes no store-wide lock: records go in with ``INSERT ... ON
        CONFLICT (signature_id, seq) DO UPDATE`` (two writers storing one new
        signature at once store one record with both hits), hits with
        row-locked updates, intended counts under the campaign row's lock.
        Return: counts of what happened, and the record id of every signature.
        """
        records = list(records)
        _check_key(key)
        for i, r in enumerate(records):
            _check_record(i, r)
        intended = [r for r in records if r.classification is Classification.INTENDED]
        if intended and campaign_id is None:
            raise InvalidValueError("campaign_id", None, f"{len(intended)} intended "
                                    "divergences need a campaign to be counted on")
        groups = _hits_by_signature(
            [r for r in records if r.classification is Classification.UNEXPECTED])
        now = self._clock()
        result = UpsertResult(intended=len(intended))
        try:
            with self._write_lock_free() as s:
                if key is not None and not self._first_use(s, key, now):
                    for sid, row in self._newest(s, list(groups)).items():
                        result.ids[sid] = row.id
                    return result
                self._upsert(s, groups, now, result)
                if intended:
                    self._count_intended(s, campaign_id, intended, now)
        except (SQLAlchemyError, _UnstorableJSON) as exc:
            raise _batch_error(len(records), exc) from exc
        return result

    def _upsert(self, s: Session, groups: dict[str, tuple[DivergenceRecord, int]],
                now: datetime, result: UpsertResult) -> None:
        current = self._newest(s, list(groups))
        bumps, new, reopen = [], [], []
        for sid, (rec, hits) in groups.items():
            cur = current.get(sid)
            if cur is not None and cur.signature != rec.signature:
                # 64 bits of sha1 collided; refuse rather than merge two bugs.
                raise InvalidValueError("signature_id", sid, f"stored for {cur.signature!r}, "
                                        f"not {rec.signature!r}")
            if cur is None:
                new.append((rec, hits))
            elif cur.status is TriageStatus.VERIFIED:
                reopen.append((rec, hits, cur))
            else:
                bumps.append({"b_id": cur.id, "b_hits": hits, "b_now": now})
                result.ids[sid] = cur.id
        table = _table(Divergence)
        if bumps:
            s.execute(update(table).where(table.c.id == bindparam("b_id"))
                      .values(hit_count=table.c.hit_count + bindparam("b_hits"),
                              last_seen=bindparam("b_now", type_=UTCDateTime())), bumps)
            result.updated += len(bumps)
        fresh = new + [(rec, hits) for rec, hits, _ in reopen]
        programs = self._programs(s, [p for rec, _ in fresh
                                      for p in (rec.original_program, rec.minimized_program)
                                      if p is not None])
        outcomes = self._outcomes(s, [o for rec, _ in fresh
                                      for o in (rec.outcome_a, rec.outcome_b)
                                      + ((rec.minimized.outcome_a, rec.minimized.outcome_b)
                                         if rec.minimized is not None else ())])
        rows = ([self._row(rec, hits, now, programs, outcomes, 0, None) for rec, hits in new]
                + [self._row(rec, hits, now, programs, outcomes, old.seq + 1, old.id)
                   for rec, hits, old in reopen])
        if not rows:
            return
        # Core, not ORM, bulk insert: no identity map to fill for rows nobody
        # reads.  With RETURNING, SQLAlchemy sends multi-row VALUES batches
        # ("insertmanyvalues"); rows come back keyed, so in any order.
        stmt, inserted = _insert_or_count(s, table, ["signature_id", "seq"])
        done = s.execute(stmt.returning(table.c.id, table.c.signature_id, inserted), rows).all()
        reopened = {rec.signature_id: old for rec, _, old in reopen}
        for rid, sid, was_inserted in done:
            result.ids[sid] = rid
            if not was_inserted:
                result.updated += 1
                continue
            result.new.add(sid)
            old = reopened.get(sid)
            if old is None:
                result.inserted += 1
            else:
                result.reopened += 1
                s.add(TriageEvent(divergence_id=rid, from_status=None, to_status=TriageStatus.NEW,
                                  note=f"reopened: seen again after #{old.id} was verified fixed",
                                  author="store", at=now))

    @staticmethod
    def _row(rec: DivergenceRecord, hits: int, now: datetime, programs: dict[str, int],
             outcomes: dict[int, int], seq: int, reopened_from: int | None) -> dict[str, Any]:
        return {"signature": rec.signature, "signature_id": rec.signature_id, "seq": seq,
                "engine_a": rec.engine_a, "engine_b": rec.engine_b, "kind": rec.kind,
                "classification": rec.classification, "field": rec.field,
                "function": rec.function, "first_op": rec.first_op, "detail": rec.detail,
                "first_seen": now, "last_seen": now, "hit_count": hits,
                "original_program_id": programs[rec.original_program],
                "minimized_program_id": (programs[rec.minimized_program]
                                         if rec.minimized_program is not None else None),
                "outcome_a_id": outcomes[id(rec.outcome_a)],
                "outcome_b_id": outcomes[id(rec.outcome_b)],
                **_minimized_columns(rec.minimized, outcomes),
                "status": TriageStatus.NEW, "duplicate_of": None,
                "reopened_from": reopened_from}

    @staticmethod
    def _first_use(s: Session, key: str, now: datetime) -> bool:
        """Record idempotency key @key in this transaction. Return: False when it
        was recorded before (its batch was applied; on PostgreSQL a concurrent
        transaction holding it is waited for)."""
        table = _table(WriteKey)
        stmt = _insert_unless_there(s.get_bind().dialect.name, table)
        return s.execute(stmt.on_conflict_do_nothing(index_elements=["key"])
                         .returning(table.c.key), {"key": key, "at": now}).first() is not None

    @staticmethod
    def _newest(s: Session, signature_ids: list[str]) -> dict[str, Row[Any]]:
        """The newest record (highest seq) of each signature that has one.

        Return: signature_id -> row of (id, signature_id, seq, status, signature).
        """
        newest: dict[str, Row[Any]] = {}
        for chunk in _chunks(signature_ids):
            for row in s.execute(select(Divergence.id, Divergence.signature_id, Divergence.seq,
                                        Divergence.status, Divergence.signature)
                                 .where(Divergence.signature_id.in_(chunk))):
                if row.signature_id not in newest or row.seq > newest[row.signature_id].seq:
                    newest[row.signature_id] = row
        return newest

    @staticmethod
    def _intern(s: Session, model: type[Program] | type[OutcomeBlob], payload: str,
                rows: dict[str, Any]) -> dict[str, int]:
        """Store each payload of ``rows`` (sha256 -> payload) once, in ``model``.

        Return: sha256 -> row id, for every row, stored before or now.
        """
        table = _table(model)
        ids: dict[str, int] = {}

        def look_up(shas: list[str]) -> None:
            for chunk in _chunks(shas):
                ids.update((sha, rid) for rid, sha in s.execute(
                    select(table.c.id, table.c.sha256).where(table.c.sha256.in_(chunk))))

        look_up(list(rows))
        missing = [{"sha256": sha, payload: p} for sha, p in rows.items() if sha not in ids]
        if missing:
            # Without a store-wide lock (PostgreSQL) another writer may store one
            # meanwhile: what this insert skips is theirs, committed before the
            # conflict.  (Under SQLite's BEGIN IMMEDIATE nothing is skipped.)
            ids.update((sha, rid) for rid, sha in s.execute(
                _insert_unless_there(s.get_bind().dialect.name, table)
                .on_conflict_do_nothing(index_elements=["sha256"])
                .returning(table.c.id, table.c.sha256), missing))
            look_up([m["sha256"] for m in missing if m["sha256"] not in ids])
        return ids

    def _programs(self, s: Session, texts: list[str]) -> dict[str, int]:
        """Store each program text once. Return: text -> program id."""
        shas = {t: _sha256(t) for t in texts}
        ids = self._intern(s, Program, "json", {sha: t for t, sha in shas.items()})
        return {t: ids[sha] for t, sha in shas.items()}

    def _outcomes(self, s: Session, values: list[dict[str, Any] | PackedOutcome]
                  ) -> dict[int, int]:
        """Store each outcome once, packing those not packed yet.

        Return: ``id()`` of each value -> outcome row id.
        """
        packed = {}
        for v in values:
            if id(v) not in packed:
                try:
                    packed[id(v)] = v if isinstance(v, PackedOutcome) else PackedOutcome.pack(v)
                except (TypeError, ValueError) as exc:
                    raise _UnstorableJSON(str(exc)) from exc
        ids = self._intern(s, OutcomeBlob, "packed",
                           {p.sha256: p.packed for p in packed.values()})
        return {key: ids[p.sha256] for key, p in packed.items()}

    def _count_intended(self, s: Session, campaign_id: int | None,
                        records: list[DivergenceRecord], now: datetime) -> None:
        # Read, count, write: under the campaign row's lock (FOR UPDATE; SQLite's
        # BEGIN IMMEDIATE holds the whole file), so no writer's count is lost.
        campaign = self._campaign(s, campaign_id, for_update=True)
        # A new dict, so that the JSON column is seen as changed.
        counts = copy.deepcopy(campaign.intended)
        need = [r for r in records for rule in r.rules
                if len(counts.get(rule, {}).get("samples", [])) < INTENDED_SAMPLES]
        # A sample is the smallest program the worker has for it.
        programs = self._programs(s, [r.minimized_program or r.original_program for r in need])
        for r in records:
            for rule in r.rules:
                entry = counts.setdefault(rule, {"count": 0, "samples": []})
                entry["count"] += 1
                pid = programs.get(r.minimized_program or r.original_program)
                if (pid is not None and pid not in entry["samples"]
                        and len(entry["samples"]) < INTENDED_SAMPLES):
                    entry["samples"].append(pid)
        campaign.intended = counts
        campaign.updated_at = now

    def get_divergence(self, divergence_id: int) -> Divergence:
        """One divergence with both outcomes, and both of its minimized run if stored."""
        with self._read() as s:
            return self._divergence(s, divergence_id, outcomes=True)

    def set_minimized(self, divergence_id: int, program: str,
                      run: MinimizedRun | None = None) -> None:
        """Keep @program (a program's JSON) as the minimized program of
        divergence @divergence_id: a campaign's minimizer, which works
        beside the search, found it after the divergence was stored.

        @run: the minimized program's own run (its outcomes, detail and
        parting operation), kept beside the original's; None leaves no
        minimized run (the views then show the original's, saying so).
        """
        if not isinstance(program, str) or not program:
            raise InvalidValueError("program", program, "must be a program's JSON text")
        _check_no_nul("program", program)
        if run is not None:
            _check_minimized_run("run", run)
        try:
            with self._write() as s:
                d = self._divergence(s, divergence_id)
                d.minimized_program_id = self._programs(s, [program])[program]
                outcomes = (self._outcomes(s, [run.outcome_a, run.outcome_b])
                            if run is not None else {})
                for column, value in _minimized_columns(run, outcomes).items():
                    setattr(d, column, value)
        except _UnstorableJSON as exc:
            raise InvalidValueError("run", "MinimizedRun", f"outcomes not JSON: {exc}") from exc

    def set_bisection(self, divergence_id: int, bisection: dict[str, Any]) -> Divergence:
        """Keep @bisection (:meth:`engine.Bisection.to_dict` of the divergence's
        reproducer) on divergence @divergence_id, replacing an earlier one, and
        the edges where its own defect or rule came in and went (the list's
        ``came_in`` and ``went`` filters)."""
        if not isinstance(bisection, dict) or not isinstance(bisection.get("edges"), list):
            raise InvalidValueError("bisection", bisection, "must be a Bisection.to_dict()")
        _check_json(bisection, "bisection")
        edges: dict[str, list[str]] = {"came_in": [], "went": []}
        for i, e in enumerate(bisection["edges"]):
            if not isinstance(e, dict) or not isinstance(e.get("edge"), str):
                raise InvalidValueError(f"bisection.edges[{i}]", e, "must name its edge")
            if e.get("target") and e.get("change") in edges:
                edges[e["change"]].append(e["edge"])
        with self._write() as s:
            d = self._divergence(s, divergence_id)
            d.bisection = bisection
            d.came_in = ",".join(edges["came_in"]) or None
            d.went = ",".join(edges["went"]) or None
        return d

    def get_program(self, program_id: int) -> Program:
        with self._read() as s:
            program = s.get(Program, program_id)
            if program is None:
                raise NotFoundError("program", program_id)
            return program

    def list_divergences(self, *, status: TriageStatus | str | None = None,
                         kind: Kind | str | None = None,
                         classification: Classification | str | None = None,
                         engines: tuple[str, str] | None = None, text: str | None = None,
                         came_in: str | None = None, went: str | None = None,
                         sort: str = "-last_seen", limit: int = 50,
                         offset: int = 0) -> tuple[list[Divergence], int]:
        """A page of divergences matching every given filter, and how many match.

        ``text`` matches anywhere in the signature, literally (no character
        is a wildcard) and case-sensitively, on every backend.  ``came_in`` and
        ``went`` name an edge of the version tree (``v6.14->v6.15``): the
        divergences whose bisection found their defect or rule coming in (or
        going) there; unbisected ones match neither.  ``sort`` is one
        of :data:`SORT_KEYS`, with ``-`` for descending; ties go by id in the
        same direction, so pages are stable.

        Return: ``(items, total)``; the items' outcomes are not loaded (use
        :meth:`get_divergence`), and reading them raises.
        """
        where = []
        if status is not None:
            where.append(Divergence.status == _coerce(TriageStatus, status, "status"))
        if kind is not None:
            where.append(Divergence.kind == _coerce(Kind, kind, "kind"))
        # Every stored divergence is unexpected: intended ones are only counted
        # on their campaign (upsert_divergences), so this filter is all or nothing.
        stored_class = (classification is None or _coerce(Classification, classification,
                                                           "classification")
                        is Classification.UNEXPECTED)
        if engines is not None:
            if not isinstance(engines, (tuple, list)) or len(engines) != 2:
                raise InvalidValueError("engines", engines, "must be a pair (engine_a, engine_b)")
            where += [Divergence.engine_a == _engine_id(engines[0], "engines"),
                      Divergence.engine_b == _engine_id(engines[1], "engines")]
        for name, value in (("came_in", came_in), ("went", went)):
            if value is not None:
                column = getattr(Divergence, name)
                where.append((literal(",") + column + literal(",")).contains(
                    f",{_tree_edge(value, name)},", autoescape=True))
        key = _page_key(sort, SORT_KEYS, limit, offset)
        if not stored_class or isinstance(text, str) and "\x00" in text:
            # Nothing matches.  No stored signature holds a NUL either (the
            # upsert refuses them), and PostgreSQL cannot even be asked.
            return [], 0
        column, tie = getattr(Divergence, key), Divergence.id
        order = (column.desc(), tie.desc()) if sort.startswith("-") else (column, tie)
        with self._read() as s:
            if text:
                where += self._signature_search(s, text)
            total = s.scalar(select(func.count()).select_from(Divergence).where(*where))
            items = list(s.scalars(select(Divergence)
                                   .where(*where).order_by(*order).limit(limit).offset(offset)))
        return items, total or 0

    def duplicates_of(self, divergence_ids: Iterable[int]) -> dict[int, list[int]]:
        """The records marked duplicates of each of @divergence_ids: a group's members.

        A record has ``duplicate_of`` only in the duplicate state
        (:meth:`transition`), so the status index finds the candidates and
        no index on ``duplicate_of`` is needed.
        Return: id -> its duplicates' ids, ascending; ids without any left out.
        """
        ids = [i for i in divergence_ids if isinstance(i, int) and not isinstance(i, bool)]
        out: dict[int, list[int]] = {}
        with self._read() as s:
            for chunk in _chunks(ids):
                for did, of in s.execute(select(Divergence.id, Divergence.duplicate_of).where(
                        Divergence.status == TriageStatus.DUPLICATE,
                        Divergence.duplicate_of.in_(chunk)).order_by(Divergence.id)):
                    out.setdefault(of, []).append(did)
        return out

    @staticmethod
    def _signature_search(s: Session, text: str) -> list[Any]:
        """Conditions for signatures that contain ``text``, using the trigram index.

        SQLite cannot weigh an FTS5 match against a scan, so the store does:
        a probe of at most :data:`_DENSE` trigram hits tells a rare text (its
        ids come from the index) from a common one (a scan in the list's
        order finds a page of it at once).  Texts shorter than a trigram
        always scan.  The GLOB on the signature itself is what decides a
        match either way.  PostgreSQL's planner makes the same choice for the
        ``pg_trgm`` index by itself.
        """
        if s.get_bind().dialect.name != "sqlite":
            return [Divergence.signature.contains(text, autoescape=True)]
        pattern = "*" + re.sub(r"([*?\[])", r"[\1]", text) + "*"
        conditions = [Divergence.signature.op("GLOB")(pattern)]
        if len(text) >= 3:
            fts: Select[Any] = (select(literal_column("rowid")).select_from(sql_table("divergence_fts"))
                   .where(literal_column("signature").op("GLOB")(pattern)))
            hits = s.scalar(select(func.count()).select_from(fts.limit(_DENSE).subquery()))
            if (hits or 0) < _DENSE:
                conditions.append(Divergence.id.in_(fts))
        return conditions

    # -- harness errors ----------------------------------------------------------

    def upsert_harness_errors(self, records: Iterable[HarnessRecord],
                              campaign_id: int | None = None, *,
                              key: str | None = None) -> HarnessUpsertResult:
        """Store a batch of harness errors in one transaction, one row per signature.

        A signature seen for the first time becomes a row, with its program
        (stored once, like every program) and ``campaign_id`` as the campaign
        that saw it first; one already stored gets its hit count raised by
        the number of times the batch holds it and its last_seen moved.
        @key: the batch's idempotency key, as in :meth:`upsert_divergences`.

        Context: one write transaction, without a store-wide lock on
        PostgreSQL (as :meth:`upsert_divergences`); on any error nothing of
        the batch is stored.
        Return: counts, the row id of every signature, and which ones are new.
        """
        records = list(records)
        _check_key(key)
        for i, r in enumerate(records):
            _check_harness_record(i, r)
        if campaign_id is not None and (not isinstance(campaign_id, int)
                                        or isinstance(campaign_id, bool)):
            raise InvalidValueError("campaign_id", campaign_id, "must be a campaign id or None")
        groups = _hits_by_signature(records)
        now = self._clock()
        result = HarnessUpsertResult()
        table = _table(HarnessError)
        try:
            with self._write_lock_free() as s:
                if campaign_id is not None:
                    self._campaign(s, campaign_id)
                current: dict[str, Row[Any]] = {}
                for chunk in _chunks(list(groups)):
                    current.update((row.signature_id, row) for row in s.execute(
                        select(table.c.id, table.c.signature_id, table.c.signature)
                        .where(table.c.signature_id.in_(chunk))))
                if key is not None and not self._first_use(s, key, now):
                    result.ids.update((sid, row.id) for sid, row in current.items())
                    return result
                bumps = []
                for sid, (rec, hits) in groups.items():
                    cur = current.get(sid)
                    if cur is not None and cur.signature != rec.signature:
                        raise InvalidValueError("signature_id", sid, f"stored for "
                                                f"{cur.signature!r}, not {rec.signature!r}")
                    if cur is not None:
                        bumps.append({"b_id": cur.id, "b_hits": hits, "b_now": now})
                        result.ids[sid] = cur.id
                if bumps:
                    s.execute(update(table).where(table.c.id == bindparam("b_id"))
                              .values(hit_count=table.c.hit_count + bindparam("b_hits"),
                                      last_seen=bindparam("b_now", type_=UTCDateTime())), bumps)
                    result.updated += len(bumps)
                new = [(rec, hits) for sid, (rec, hits) in groups.items() if sid not in current]
                if new:
                    programs = self._programs(s, [rec.program for rec, _ in new])
                    stmt, inserted = _insert_or_count(s, table, ["signature_id"])
                    rows = s.execute(stmt.returning(table.c.id, table.c.signature_id, inserted), [
                        {"signature": rec.signature, "signature_id": rec.signature_id,
                         "engine": rec.engine, "exception": rec.exception, "op": rec.op,
                         "op_index": rec.op_index, "function": rec.function,
                         "message": rec.message, "stack": list(rec.stack),
                         "program_id": programs[rec.program], "campaign_id": campaign_id,
                         "first_seen": now, "last_seen": now, "hit_count": hits}
                        for rec, hits in new])
                    for rid, sid, was_inserted in rows:
                        result.ids[sid] = rid
                        if was_inserted:
                            result.new.add(sid)
                            result.inserted += 1
                        else:
                            result.updated += 1
        except (SQLAlchemyError, _UnstorableJSON) as exc:
            raise _batch_error(len(records), exc) from exc
        return result

    def list_harness_errors(self, *, engine: str | None = None,
                            campaign_id: int | None = None, sort: str = "-last_seen",
                            limit: int = 50, offset: int = 0) -> tuple[list[HarnessError], int]:
        """A page of harness errors matching every given filter, and how many match.

        ``sort`` is one of :data:`HARNESS_SORT_KEYS`, with ``-`` for
        descending; ties go by id in the same direction, so pages are stable.
        Return: ``(items, total)``.
        """
        where = []
        if engine is not None:
            where.append(HarnessError.engine == _engine_id(engine, "engine"))
        if campaign_id is not None:
            if not isinstance(campaign_id, int) or isinstance(campaign_id, bool):
                raise InvalidValueError("campaign_id", campaign_id, "must be a campaign id")
            where.append(HarnessError.campaign_id == campaign_id)
        key = _page_key(sort, HARNESS_SORT_KEYS, limit, offset)
        column, tie = getattr(HarnessError, key), HarnessError.id
        order = (column.desc(), tie.desc()) if sort.startswith("-") else (column, tie)
        with self._read() as s:
            total = s.scalar(select(func.count()).select_from(HarnessError).where(*where))
            items = list(s.scalars(select(HarnessError).where(*where)
                                   .order_by(*order).limit(limit).offset(offset)))
        return items, total or 0

    def get_harness_error(self, harness_error_id: int) -> HarnessError:
        """One harness error."""
        with self._read() as s:
            row = (s.get(HarnessError, harness_error_id)
                   if isinstance(harness_error_id, int) else None)
            if row is None:
                raise NotFoundError("harness error", harness_error_id)
            return row

    # -- triage ------------------------------------------------------------------

    def transition(self, divergence_id: int, to_status: TriageStatus | str, note: str = "",
                   author: str = "", duplicate_of: int | None = None) -> Divergence:
        """Move a divergence along :data:`TRANSITIONS` and record it in its history.

        ``duplicate_of`` names the record a duplicate duplicates; it is
        required for, and only allowed with, the duplicate state.
        """
        to = _coerce(TriageStatus, to_status, "to_status")
        self._check_author(author)
        if not isinstance(note, str):
            raise InvalidValueError("note", note, "must be text")
        _check_no_nul("note", note)
        with self._write() as s:
            d = self._divergence(s, divergence_id)
            allowed = TRANSITIONS[d.status]
            if to not in allowed:
                raise IllegalTransitionError("divergence", divergence_id, d.status, to,
                                             list(allowed))
            if to is TriageStatus.DUPLICATE:
                self._check_duplicate_of(s, divergence_id, duplicate_of)
            elif duplicate_of is not None:
                raise InvalidValueError("duplicate_of", duplicate_of,
                                        f"only allowed with status 'duplicate', not {to.value!r}")
            s.add(TriageEvent(divergence_id=divergence_id, from_status=d.status, to_status=to,
                              note=note, author=author, at=self._clock()))
            d.status = to
            d.duplicate_of = duplicate_of
        return d

    def _check_duplicate_of(self, s: Session, divergence_id: int,
                            duplicate_of: int | None) -> None:
        if duplicate_of is None:
            raise InvalidValueError("duplicate_of", None, "required when marking a duplicate")
        if duplicate_of == divergence_id:
            raise InvalidValueError("duplicate_of", duplicate_of,
                                    "a divergence cannot duplicate itself")
        target = s.get(Divergence, duplicate_of)
        if target is None:
            raise NotFoundError("divergence", duplicate_of)
        # Point at the original, never at another duplicate: no chains, no cycles.
        if target.status is TriageStatus.DUPLICATE:
            raise InvalidValueError("duplicate_of", duplicate_of,
                                    f"#{duplicate_of} is itself a duplicate of "
                                    f"#{target.duplicate_of}")

    def repoint_duplicates(self, old_id: int, new_id: int, note: str, author: str) -> list[int]:
        """The records marked duplicates of @old_id become duplicates of @new_id, each
        with a triage event (@note): when a group is merged into another, its
        duplicates follow it, so that no duplicate points at another duplicate.

        Return: the ids moved.
        """
        self._check_author(author)
        _check_no_nul("note", note)
        with self._write() as s:
            self._divergence(s, new_id)
            moved = list(s.scalars(select(Divergence).where(Divergence.duplicate_of == old_id)
                                   .order_by(Divergence.id)))
            for d in moved:
                d.duplicate_of = new_id
                s.add(TriageEvent(divergence_id=d.id, from_status=d.status, to_status=d.status,
                                  note=note, author=author, at=self._clock()))
        return [d.id for d in moved]

    def add_note(self, divergence_id: int, text: str, author: str) -> Note:
        """Attach a note to a divergence."""
        self._check_author(author)
        if not isinstance(text, str) or not text.strip():
            raise InvalidValueError("text", text, "a note needs some text")
        _check_no_nul("text", text)
        note = Note(divergence_id=divergence_id, author=author, text=text, at=self._clock())
        with self._write() as s:
            self._divergence(s, divergence_id)
            s.add(note)
        return note

    def history(self, divergence_id: int) -> list[TriageEvent]:
        """A divergence's triage events, oldest first."""
        with self._read() as s:
            self._divergence(s, divergence_id)
            return list(s.scalars(select(TriageEvent)
                                  .where(TriageEvent.divergence_id == divergence_id)
                                  .order_by(TriageEvent.at, TriageEvent.id)))

    def notes(self, divergence_id: int) -> list[Note]:
        """A divergence's notes, oldest first."""
        with self._read() as s:
            self._divergence(s, divergence_id)
            return list(s.scalars(select(Note).where(Note.divergence_id == divergence_id)
                                  .order_by(Note.at, Note.id)))

    # -- helpers -----------------------------------------------------------------

    # -- conformance on real kernels ----------------------------------------------

    def add_conformance(self, results: Sequence[ConformanceRecord], *,
                        divergence_id: int | None = None,
                        job_id: int | None = None) -> list[int]:
        """Keep @results (one per scenario and kernel), of divergence @divergence_id's
        program or of job @job_id when given.  Return: the new rows' ids.

        Raises :class:`InvalidValueError` naming the first bad field before
        anything is written, :class:`NotFoundError` for an unknown divergence or job.
        """
        for i, r in enumerate(results):
            _check_conformance(i, r)
        now = self._clock()
        with self._write() as s:
            if divergence_id is not None:
                self._divergence(s, divergence_id)
            if job_id is not None:
                self._job(s, job_id)
            programs = self._programs(s, sorted({r.program for r in results}))
            rows = [ConformanceResult(
                job_id=job_id, divergence_id=divergence_id, scenario=r.scenario,
                program_id=programs[r.program], kernel=r.kernel, kernel_version=r.kernel_version,
                package=r.package, uname=r.uname, engine=r.engine, plugin=r.plugin,
                verdict=Verdict(r.verdict), differences=r.differences, detail=r.detail,
                observed=r.observed, sides=r.sides, created_at=now) for r in results]
            s.add_all(rows)
            s.flush()
            return [row.id for row in rows]

    def conformance_results(self, *, divergence_id: int | None = None,
                            job_id: int | None = None, scenario: str | None = None,
                            kernel: str | None = None, limit: int = 100,
                            offset: int = 0) -> tuple[list[ConformanceResult], int]:
        """A page of stored conformance results, newest first, and how many match."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidValueError("limit", limit, f"must be 1..{MAX_LIMIT}")
        if not isinstance(offset, int) or offset < 0:
            raise InvalidValueError("offset", offset, "must be >= 0")
        where = [column == value for column, value in (
            (ConformanceResult.divergence_id, divergence_id), (ConformanceResult.job_id, job_id),
            (ConformanceResult.scenario, scenario), (ConformanceResult.kernel, kernel))
            if value is not None]
        with self._read() as s:
            total = s.scalar(select(func.count()).select_from(ConformanceResult).where(*where))
            items = list(s.scalars(select(ConformanceResult).where(*where)
                                   .order_by(ConformanceResult.id.desc())
                                   .limit(limit).offset(offset)))
        return items, total or 0

    def latest_conformance(self) -> list[ConformanceResult]:
        """The newest stored result of each (scenario, kernel), by scenario then kernel."""
        newest = (select(func.max(ConformanceResult.id))
                  .group_by(ConformanceResult.scenario, ConformanceResult.kernel))
        with self._read() as s:
            return list(s.scalars(select(ConformanceResult)
                                  .where(ConformanceResult.id.in_(newest))
                                  .order_by(ConformanceResult.scenario, ConformanceResult.kernel)))

    def create_conformance_job(self, divergence_id: int, kernels: Sequence[str], *,
                               timeout: float, author: str) -> ConformanceJob:
        """Queue a conformance run of divergence @divergence_id's program on @kernels
        (catalogue names, checked by the caller), @timeout seconds per boot."""
        self._check_author(author)
        if (not isinstance(kernels, (list, tuple)) or not kernels
                or not all(isinstance(k, str) and k for k in kernels)):
            raise InvalidValueError("kernels", kernels, "must be a non-empty list of kernel names")
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise InvalidValueError("timeout", timeout, "must be a positive number of seconds")
        with self._write() as s:
            self._divergence(s, divergence_id)
            job = ConformanceJob(divergence_id=divergence_id, kernels=list(kernels),
                                 timeout=float(timeout), status=JobStatus.QUEUED, author=author,
                                 created_at=self._clock())
            s.add(job)
        return job

    def claim_conformance_job(self, job_id: int, holder: str) -> ConformanceJob:
        """Mark queued job @job_id running, held by @holder (``host:pid``).

        Raises :class:`IllegalTransitionError` if it is not queued (a second
        runner of one job is refused), :class:`NotFoundError` if there is none.
        """
        with self._write() as s:
            job = self._job(s, job_id)
            if job.status is not JobStatus.QUEUED:
                raise IllegalTransitionError("conformance job", job_id, job.status,
                                             JobStatus.RUNNING, [])
            job.status, job.holder, job.started_at = JobStatus.RUNNING, holder, self._clock()
        return job

    def finish_conformance_job(self, job_id: int, *, error: str | None = None) -> ConformanceJob:
        """Mark job @job_id done, or failed with @error."""
        with self._write() as s:
            job = self._job(s, job_id)
            job.status = JobStatus.FAILED if error else JobStatus.DONE
            job.error, job.finished_at = error, self._clock()
        return job

    def get_conformance_job(self, job_id: int) -> ConformanceJob:
        """Job @job_id; a running one whose runner process on this host is gone is
        marked failed first, saying so."""
        with self._read() as s:
            job = self._job(s, job_id)
        if job.status is JobStatus.RUNNING and job.holder and ":" in job.holder:
            host, _, pid = job.holder.rpartition(":")
            if pid.isdigit() and holder_gone(host, int(pid)):
                return self.finish_conformance_job(
                    job_id, error=f"its runner {job.holder} is gone (killed before it finished)")
        return job

    @staticmethod
    def _job(s: Session, job_id: Any) -> ConformanceJob:
        job = s.get(ConformanceJob, job_id) if isinstance(job_id, int) else None
        if job is None:
            raise NotFoundError("conformance job", job_id)
        return job

    @staticmethod
    def _check_author(author: Any) -> None:
        if not isinstance(author, str) or not 0 < len(author) <= 128:
            raise InvalidValueError("author", author, "must be 1..128 characters")
        _check_no_nul("author", author)

    @staticmethod
    def _campaign(s: Session, campaign_id: Any, *, for_update: bool = False) -> Campaign:
        campaign = (s.get(Campaign, campaign_id, with_for_update=for_update)
                    if isinstance(campaign_id, int) else None)
        if campaign is None:
            raise NotFoundError("campaign", campaign_id)
        return campaign

    @staticmethod
    def _divergence(s: Session, divergence_id: Any, outcomes: bool = False) -> Divergence:
        options = ((selectinload(Divergence.outcome_a_blob),
                    selectinload(Divergence.outcome_b_blob),
                    selectinload(Divergence.minimized_outcome_a_blob),
                    selectinload(Divergence.minimized_outcome_b_blob)) if outcomes else ())
        d = (s.get(Divergence, divergence_id, options=options)
             if isinstance(divergence_id, int) else None)
        if d is None:
            raise NotFoundError("divergence", divergence_id)
        return d
