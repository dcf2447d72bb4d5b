"""SQLAlchemy 2.0 models of the divergence store.

These are storage rows only; the pydantic schemas the API serves are kept
apart and built from them.  Enums are stored as their string values (not
native database enums) so that adding a state is a code change, not an
``ALTER TYPE``, and SQLite and PostgreSQL hold the same text.

The schema is created by the alembic migrations in :mod:`service.migrations`,
never by ``metadata.create_all``; a test checks that the two agree.
"""

from __future__ import annotations

import enum
import json
import zlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from engine import Classification, Kind
from fuzz.sources import CoverageUnit
from service.conform.verdict import Verdict


class TriageStatus(str, enum.Enum):
    """Where a divergence is in triage (the ClusterFuzz / syzbot states)."""

    NEW = "new"
    CONFIRMED = "confirmed"
    INTENDED = "intended"
    FIXED = "fixed"            # a fix is claimed, awaiting a replay that no longer reproduces
    VERIFIED = "verified"      # replayed after the fix and no longer reproduces
    INVALID = "invalid"
    DUPLICATE = "duplicate"


class CampaignStatus(str, enum.Enum):
    """Life of a fuzzing campaign."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    FAILED = "failed"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware.

    SQLite keeps no offset, so without this an aware datetime written would
    come back naive and compare unequal to what the clock returned.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store clock must return aware times")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Values, not member names, go to the database: "data_loss", not "DATA_LOSS".
    return Enum(cls, name=name, native_enum=False, create_constraint=False,
                values_callable=lambda e: [m.value for m in e],
                length=max(len(m.value) for m in cls))


#: Deterministic constraint names, so that migrations can refer to them.
NAMING = {"ix": "ix_%(table_name)s_%(column_0_N_name)s",
          "uq": "uq_%(table_name)s_%(column_0_N_name)s",
          "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
          "pk": "pk_%(table_name)s"}


#: Columns the list view filters on, and the sort keys it pages through
#: (see 0002_list_indexes.py and 0003_outcome_table.py).
#: Classification is not one: every stored divergence is unexpected (intended ones
#: are counted on their campaign), so the store answers that filter without SQL.
LIST_FILTERS: tuple[tuple[str, ...], ...] = (("status",), ("kind",), ("engine_a", "engine_b"))
LIST_SORTS = ("last_seen", "hit_count")


#: Signature search structures the migrations make outside the models (an FTS5
#: table and its shadow tables on SQLite, a trigram index on PostgreSQL).
SEARCH_OBJECTS = ("divergence_fts", "ix_divergence_signature_trgm")


def in_models(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic ``include_name`` hook: compare everything but :data:`SEARCH_OBJECTS`."""
    return name is None or not name.startswith(SEARCH_OBJECTS)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Campaign(Base):
    """One fuzzing campaign: an engine pair, a fuzzer and its configuration.

    ``intended`` counts intended divergences per rule instead of storing them:
    ``{rule: {"count": n, "samples": [program_id, ...]}}`` with at most
    :data:`service.store.INTENDED_SAMPLES` samples per rule.
    """

    __tablename__ = "campaign"

    id: Mapped[int] = mapped_column(primary_key=True)
    engine_a: Mapped[str] = mapped_column(String(32))
    engine_b: Mapped[str] = mapped_column(String(32))
    fuzzer: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]]
    status: Mapped[CampaignStatus] = mapped_column(_enum(CampaignStatus, "campaign_status"),
                                                   index=True)
    intended: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # The lease of the process that runs the campaign (see Store.take_lease):
    # who holds it and when it last said it is alive; all None when nobody does.
    lease_host: Mapped[str | None] = mapped_column(String(255))
    lease_pid: Mapped[int | None]
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_heartbeat: Mapped[datetime | None]


class StatsSnapshot(Base):
    """A campaign's counters at ``t`` seconds after it started.

    ``coverage`` counts ``coverage_unit`` (see :class:`fuzz.sources.CoverageUnit`):
    behaviour features, or libFuzzer edges for atheris.  Both are None in
    snapshots stored before foliodiff measured coverage: unknown, not zero.
    """

    __tablename__ = "stats_snapshot"
    __table_args__ = (Index(None, "campaign_id", "t"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    t: Mapped[float]
    execs: Mapped[int]
    exec_per_s: Mapped[float]
    corpus_size: Mapped[int]
    signatures: Mapped[dict[str, Any]]       # unique signatures by kind
    at: Mapped[datetime]
    coverage: Mapped[int | None]
    coverage_unit: Mapped[CoverageUnit | None] = mapped_column(
        _enum(CoverageUnit, "coverage_unit"))


class WriteKey(Base):
    """The idempotency key of a batch of findings the store has applied.

    A worker that lost its connection while its batch committed cannot know
    whether it did; it sends the batch again with the same key, and the
    store, finding the key, applies nothing (docs/distributed.md).  The key
    is written in the batch's own transaction, so it exists exactly when the
    batch was applied.
    """

    __tablename__ = "write_key"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)


class HypothesisExample(Base):
    """One entry of a fleet campaign's Hypothesis example database: a value saved
    under a key (Hypothesis' ``ExampleDatabase``), shared by the campaign's
    hypothesis workers as HypoFuzz workers share theirs.  Stored once per
    (campaign, key, value): ``digest`` is the sha1 of the two."""

    __tablename__ = "hypothesis_example"
    __table_args__ = (UniqueConstraint("campaign_id", "digest"), Index(None, "campaign_id", "key"))

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    key: Mapped[bytes] = mapped_column(LargeBinary)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    digest: Mapped[str] = mapped_column(String(40))


class CampaignShare(Base):
    """One share of a fleet campaign: the part one worker runs at a time.

    A fleet campaign (docs/distributed.md) is split into shares, each a
    fuzzing stream of its own (the worker number of its source).  A worker
    that takes a share's task raises ``generation`` and writes the share
    only while the generation is still its own, so a worker that lost the
    share (its task was taken over after its heartbeat stopped) cannot write
    over the one that runs it now.  ``position`` is where the share's source
    goes on from; ``elapsed`` the seconds it has fuzzed, over every worker
    that ran it; ``execs`` and ``coverage`` its counts; ``holder`` the
    worker that runs it now or ran it last.
    """

    __tablename__ = "campaign_share"
    __table_args__ = (UniqueConstraint("campaign_id", "share"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    share: Mapped[int]
    generation: Mapped[int]
    position: Mapped[dict[str, Any] | None]
    elapsed: Mapped[float]
    execs: Mapped[int]
    coverage: Mapped[int]
    holder: Mapped[str | None] = mapped_column(String(300))
    updated_at: Mapped[datetime]


class CorpusEntry(Base):
    """One input of a campaign's shared corpus, as a worker kept it.

    Workers of one campaign, on any machine, push the inputs they keep
    here and pull the ones the others kept (docs/distributed.md).  An input
    is stored once per campaign: ``sha1`` (of ``data``) is unique with the
    campaign, and a push of an input already there changes nothing.
    ``features`` are the behaviour features it showed when kept (atheris
    inputs: none, libFuzzer keeps their coverage); ``worker`` names the
    share that kept it first.  ``pruned``: a merge found every feature it
    showed in smaller inputs; workers no longer pull it, and it stays stored.
    """

    __tablename__ = "corpus_entry"
    __table_args__ = (UniqueConstraint("campaign_id", "sha1"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    sha1: Mapped[str] = mapped_column(String(40))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    features: Mapped[list[str]] = mapped_column(JSON)
    worker: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    pruned: Mapped[bool] = mapped_column(default=False)


class Program(Base):
    """A program, stored once per content (sha256 of its compact JSON)."""

    __tablename__ = "program"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    json: Mapped[str] = mapped_column(Text)


class OutcomeBlob(Base):
    """One run's outcome (``Outcome.to_dict()``), stored once per content.

    Outcomes are most of a divergence's bytes and nobody filters on them, so
    they live here, compressed, and the divergence table stays narrow: list
    pages, counts and signature searches scan ~300-byte rows, not 2 KiB ones.
    The divergences of one report share their two outcomes.
    """

    __tablename__ = "outcome"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)   # of the compact JSON
    packed: Mapped[bytes] = mapped_column(LargeBinary)              # zlib of the compact JSON

    @property
    def value(self) -> dict[str, Any]:
        return json.loads(zlib.decompress(self.packed))


class Divergence(Base):
    """One unexpected divergence, deduplicated by signature.

    ``seq`` numbers the records of one signature: 0 for the first, and one
    more each time the signature comes back after its last record was
    verified fixed (syzbot's ``Seq``); the new record points at the old one
    through ``reopened_from``.  Only the record with the highest ``seq`` of a
    signature receives hits.

    ``detail``, ``first_op`` and the two outcomes are the run of the original
    program, the one that found it; the ``minimized_*`` columns are the
    minimized program's own run (its divergence with this signature), kept
    beside them once minimized.
    """

    __tablename__ = "divergence"
    # The list view filters on one column and sorts on another: composite indexes
    # let it walk one index in order instead of sorting every matching row.
    __table_args__ = (UniqueConstraint("signature_id", "seq"),
                      *(Index(None, *f, s) for f in LIST_FILTERS for s in LIST_SORTS))

    id: Mapped[int] = mapped_column(primary_key=True)
    signature: Mapped[str] = mapped_column(String(512))
    signature_id: Mapped[str] = mapped_column(String(16))
    seq: Mapped[int]
    engine_a: Mapped[str] = mapped_column(String(32))
    engine_b: Mapped[str] = mapped_column(String(32))
    kind: Mapped[Kind] = mapped_column(_enum(Kind, "divergence_kind"))
    classification: Mapped[Classification] = mapped_column(
        _enum(Classification, "divergence_classification"))
    field: Mapped[str] = mapped_column(String(256))
    function: Mapped[str | None] = mapped_column(String(128))
    first_op: Mapped[int | None]
    detail: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime] = mapped_column(index=True)
    hit_count: Mapped[int] = mapped_column(index=True)
    original_program_id: Mapped[int] = mapped_column(ForeignKey("program.id"))
    minimized_program_id: Mapped[int | None] = mapped_column(ForeignKey("program.id"))
    outcome_a_id: Mapped[int] = mapped_column(ForeignKey("outcome.id"))
    outcome_b_id: Mapped[int] = mapped_column(ForeignKey("outcome.id"))
    # The minimized program's own run (0007): its divergence with this signature
    # parts elsewhere and says other values than the original's, and the
    # minimized program is what a triager replays.  All None until minimized,
    # and for programs minimized before 0007.
    minimized_outcome_a_id: Mapped[int | None] = mapped_column(ForeignKey("outcome.id"))
    minimized_outcome_b_id: Mapped[int | None] = mapped_column(ForeignKey("outcome.id"))
    minimized_first_op: Mapped[int | None]
    minimized_detail: Mapped[str | None] = mapped_column(Text)
    status: Mapped[TriageStatus] = mapped_column(_enum(TriageStatus, "triage_status"))
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("divergence.id"))
    reopened_from: Mapped[int | None] = mapped_column(ForeignKey("divergence.id"))
    # engine.Bisection.to_dict() of the reproducer, and the edges ("a->b", comma-
    # separated) where its defect or rule came in and went: see 0009_bisection.py.
    bisection: Mapped[dict[str, Any] | None]
    came_in: Mapped[str | None] = mapped_column(String(256))
    went: Mapped[str | None] = mapped_column(String(256))
    # Loaded only where asked for (Store.get_divergence); anywhere else reading raises.
    outcome_a_blob: Mapped[OutcomeBlob] = relationship(foreign_keys=[outcome_a_id], lazy="raise")
    outcome_b_blob: Mapped[OutcomeBlob] = relationship(foreign_keys=[outcome_b_id], lazy="raise")
    minimized_outcome_a_blob: Mapped[OutcomeBlob | None] = relationship(
        foreign_keys=[minimized_outcome_a_id], lazy="raise")
    minimized_outcome_b_blob: Mapped[OutcomeBlob | None] = relationship(
        foreign_keys=[minimized_outcome_b_id], lazy="raise")

    @property
    def outcome_a(self) -> dict[str, Any]:
        """The original program's run on ``engine_a``."""
        return self.outcome_a_blob.value

    @property
    def outcome_b(self) -> dict[str, Any]:
        """The original program's run on ``engine_b``."""
        return self.outcome_b_blob.value

    @property
    def minimized_run(self) -> bool:
        """Whether the minimized program's own run is stored (outcomes, detail, first op)."""
        return self.minimized_outcome_a_id is not None and self.minimized_detail is not None

    @property
    def minimized_outcome_a(self) -> dict[str, Any] | None:
        """The minimized program's run on ``engine_a``, if stored."""
        blob = self.minimized_outcome_a_blob
        return blob.value if blob is not None else None

    @property
    def minimized_outcome_b(self) -> dict[str, Any] | None:
        """The minimized program's run on ``engine_b``, if stored."""
        blob = self.minimized_outcome_b_blob
        return blob.value if blob is not None else None


class TriageEvent(Base):
    """One triage state change of a divergence; ``from_status`` is None at a reopen."""

    __tablename__ = "triage_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    divergence_id: Mapped[int] = mapped_column(
        ForeignKey("divergence.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[TriageStatus | None] = mapped_column(
        _enum(TriageStatus, "triage_status"))
    to_status: Mapped[TriageStatus] = mapped_column(_enum(TriageStatus, "triage_status"))
    note: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime]


class Note(Base):
    """A free-text note on a divergence."""

    __tablename__ = "note"

    id: Mapped[int] = mapped_column(primary_key=True)
    divergence_id: Mapped[int] = mapped_column(
        ForeignKey("divergence.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]


class HarnessError(Base):
    """One defect of foliodiff itself, by signature: a run that ended in ``Verdict.HARNESS``.

    An exception inside a model run that is no modelled kernel report says
    nothing about any kernel, so it is not a divergence: it has one engine
    (the run that raised), no triage state, and its program is kept as the
    run had it, never minimized.  The team fixes foliodiff; the signature
    groups the runs that hit the same defect (see
    :func:`fuzz.records.harness_records_from_report`).  ``campaign_id`` is
    the campaign that saw it first, if a campaign did.
    """

    __tablename__ = "harness_error"

    id: Mapped[int] = mapped_column(primary_key=True)
    signature: Mapped[str] = mapped_column(String(512))
    signature_id: Mapped[str] = mapped_column(String(16), unique=True)
    engine: Mapped[str] = mapped_column(String(32))
    exception: Mapped[str] = mapped_column(String(128))
    op: Mapped[str | None] = mapped_column(String(32))
    op_index: Mapped[int | None]
    function: Mapped[str | None] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    stack: Mapped[list[str]] = mapped_column(JSON)
    program_id: Mapped[int] = mapped_column(ForeignKey("program.id"))
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaign.id"))
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime] = mapped_column(index=True)
    hit_count: Mapped[int] = mapped_column(index=True)


class JobStatus(str, enum.Enum):
    """Life of a background job (a conformance run the API started)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ConformanceJob(Base):
    """A conformance run of a stored divergence on real kernels, started through the API.

    The request only stores the job; a separate process (``foliodiff conform
    --job ID``) claims it, boots the kernels and stores its results.  ``holder``
    is that process (``host:pid``), so that a job whose runner died is seen as failed.
    """

    __tablename__ = "conformance_job"

    id: Mapped[int] = mapped_column(primary_key=True)
    divergence_id: Mapped[int] = mapped_column(
        ForeignKey("divergence.id", ondelete="CASCADE"), index=True)
    kernels: Mapped[list[str]] = mapped_column(JSON)
    timeout: Mapped[float]
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(128))
    holder: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ConformanceResult(Base):
    """One scenario on one real kernel, against the engine that models it.

    ``kernel`` is the catalogue name (``deb-6.16``) or ``image:<file>``;
    ``kernel_version`` names the exact kernel: its Debian package version, or
    ``sha256:<hash>`` of an image given by path.  ``plugin`` is the engine's
    plugin identity (:func:`engine.kernels.identity`) when it is a plugin.
    ``differences`` are the fields that differ (model, kernel); ``sides``, for
    a divergence's program, the same against each engine of its pair.
    """

    __tablename__ = "conformance_result"
    __table_args__ = (Index("ix_conformance_result_scenario_kernel", "scenario", "kernel", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("conformance_job.id", ondelete="CASCADE"), index=True)
    divergence_id: Mapped[int | None] = mapped_column(
        ForeignKey("divergence.id", ondelete="CASCADE"), index=True)
    scenario: Mapped[str] = mapped_column(String(256))
    program_id: Mapped[int] = mapped_column(ForeignKey("program.id"))
    kernel: Mapped[str] = mapped_column(String(256))
    kernel_version: Mapped[str] = mapped_column(String(128))
    package: Mapped[str] = mapped_column(String(256))
    uname: Mapped[str | None] = mapped_column(String(128))
    engine: Mapped[str] = mapped_column(String(32))
    plugin: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    verdict: Mapped[Verdict] = mapped_column(_enum(Verdict, "conform_verdict"))
    differences: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    detail: Mapped[str] = mapped_column(Text)
    observed: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    sides: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(index=True)
