"""Pydantic schemas the API reads and serves, kept apart from the storage rows.

Built from :mod:`service.models` rows with ``from_attributes``; the rows never
leave the store layer as such.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine import Classification, Kind
from fuzz.sources import CoverageUnit
from service.conform.verdict import Verdict
from service.models import CampaignStatus, JobStatus, TriageStatus
from service.store import HARNESS_SORT_KEYS, SORT_KEYS

#: Largest id or offset a request may name: ids are INTEGER columns, 32-bit
#: on PostgreSQL, so a larger one would fail in the driver instead of a 404.
MAX_ID = (1 << 31) - 1

if TYPE_CHECKING:
    # Literals built from the store's keys at run time, which mypy cannot read.
    Sort = str
    HarnessSort = str
else:
    Sort = Literal[tuple(SORT_KEYS) + tuple(f"-{k}" for k in SORT_KEYS)]
    HarnessSort = Literal[tuple(HARNESS_SORT_KEYS) + tuple(f"-{k}" for k in HARNESS_SORT_KEYS)]


class ErrorBody(BaseModel):
    """Every 4xx: which field was wrong, the value sent, and why."""

    field: str
    value: Any = None
    detail: str


class _Row(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RunOf(str, enum.Enum):
    """Which program's run a divergence view shows: its detail, where the runs
    parted, its outcomes."""

    MINIMIZED = "minimized"     # the reproducer's own run
    ORIGINAL = "original"       # the run of the program that found it


class DivergenceSummary(_Row):
    """One divergence in a list (no outcomes, no programs).

    ``detail`` and ``first_op`` are the run ``run_of`` names: the minimized
    program's when its run is stored, else the original program's (also
    when a program was minimized before its run was kept, migration 0007).
    """

    id: int
    signature: str
    signature_id: str
    seq: int
    engine_a: str
    engine_b: str
    kind: Kind
    classification: Classification
    field: str
    function: str | None
    first_op: int | None
    detail: str
    first_seen: datetime
    last_seen: datetime
    hit_count: int
    status: TriageStatus
    duplicate_of: int | None
    reopened_from: int | None
    minimized: bool = Field(description="a minimized program is stored (the reproducer)")
    run_of: RunOf = Field(description="whose run detail and first_op describe")
    came_in: str | None = Field(default=None, description=(
        "edges of the version tree ('a->b', comma-separated) where bisection saw it come in"))
    went: str | None = Field(default=None, description="edges where bisection saw it go")


class DivergencePage(BaseModel):
    items: list[DivergenceSummary]
    total: int
    limit: int
    offset: int


class FieldRow(BaseModel):
    """One outcome field of both runs, side by side."""

    field: str
    a: Any = None
    b: Any = None
    differs: bool


class PartingOp(BaseModel):
    """The operation after which the two runs parted, as its program has it."""

    index: int
    op: dict[str, Any] | None = Field(
        description="the operation (None when the stored program has no such index)")


class RunOut(BaseModel):
    """One program's differential run, as stored: where it parted, what it said,
    both outcomes side by side (differing fields first)."""

    program: RunOf
    first_op: int | None
    detail: str
    parting_op: PartingOp | None
    outcome_a: dict[str, Any]
    outcome_b: dict[str, Any]
    side_by_side: list[FieldRow]


class RuleOut(BaseModel):
    """An intended difference between two adjacent versions and its patch."""

    name: str
    older: str
    newer: str
    patch: str
    description: str


class NoteOut(_Row):
    id: int
    divergence_id: int
    author: str
    text: str
    at: datetime


class TriageEventOut(_Row):
    id: int
    divergence_id: int
    from_status: TriageStatus | None
    to_status: TriageStatus
    note: str
    author: str
    at: datetime


class DivergenceDetail(DivergenceSummary):
    """One divergence: its reproducer's run (both outcomes side by side, the
    operation where they parted), the original program's run when that is
    another, both programs, the pair's intended changes, its triage history,
    and how to replay it."""

    outcome_a: dict[str, Any]
    outcome_b: dict[str, Any]
    side_by_side: list[FieldRow]
    parting_op: PartingOp | None
    original_run: RunOut | None = Field(
        description="the original program's run, when the fields above are the minimized's")
    original_program: dict[str, Any]
    minimized_program: dict[str, Any] | None
    pair_rules: list[RuleOut] = Field(
        description="the intended changes between the pair's versions (engine RULES); a "
                    "stored divergence is one none of them explains")
    bisection: dict[str, Any] | None = Field(description=(
        "engine.Bisection.to_dict() of the reproducer on every version of the tree: each "
        "version's verdict, each edge where the behaviour changes with its rules and patches "
        "('target': the edges of this divergence); None until bisected"))
    events: list[TriageEventOut]
    notes: list[NoteOut]
    corpus_file: str
    replay_command: str


class TransitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: TriageStatus
    note: str = Field(default="", max_length=10_000)
    author: str = Field(min_length=1, max_length=128)
    duplicate_of: int | None = Field(default=None, ge=1, le=MAX_ID)


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=10_000, pattern=r"\S")
    author: str = Field(min_length=1, max_length=128)


class History(BaseModel):
    """A divergence's triage events and notes, oldest first."""

    divergence_id: int
    status: TriageStatus
    events: list[TriageEventOut]
    notes: list[NoteOut]


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    author: str = Field(default="replay", min_length=1, max_length=128)
    engines: str | None = Field(default=None, description=(
        "another engine pair to replay on, 'a,b' (a fix checked against another "
        "version): the record only gets a note; default its own pair"))


class ReplayOut(BaseModel):
    """What a replay of the stored reproducer found, and what it did to the record."""

    divergence_id: int
    engines: list[str]
    reproduces: bool
    signatures: list[str] = Field(description="unexpected signatures the replay produced")
    status_before: TriageStatus
    status_after: TriageStatus
    reopened_as: int | None = Field(
        default=None, description="new record opened because a verified divergence came back")
    harness_errors: list[int] = Field(
        default=[], description="harness errors the replay hit (GET /harness-errors/{id}): "
                                "defects of foliodiff, which leave the record's state as it was")
    report: dict[str, Any]


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    program: dict[str, Any] = Field(description="a program (format version 2, see "
                                                "`foliodiff schema`; format 1 is read on the "
                                                "first engine)")
    engines: str = Field(default="v6.14,v6.15", max_length=64,
                         description="two engines, comma separated", examples=["v6.14,v6.15"])


class HarnessErrorSummary(_Row):
    """One harness error in a list: a defect of foliodiff, not a kernel finding."""

    id: int
    signature: str
    signature_id: str
    engine: str
    exception: str = Field(description="the exception's type")
    op: str | None = Field(description="the kind of the operation that was running")
    op_index: int | None
    function: str | None = Field(description="the innermost function of the model or harness")
    message: str
    campaign_id: int | None = Field(description="the campaign that saw it first")
    first_seen: datetime
    last_seen: datetime
    hit_count: int


class HarnessErrorPage(BaseModel):
    items: list[HarnessErrorSummary]
    total: int
    limit: int
    offset: int


class HarnessErrorDetail(HarnessErrorSummary):
    """One harness error with its stack and the program whose run raised it."""

    stack: list[str] = Field(description="model and harness frames, innermost first")
    program: dict[str, Any]
    replay_command: str


class CampaignOut(_Row):
    id: int
    engine_a: str
    engine_b: str
    fuzzer: str
    config: dict[str, Any]
    status: CampaignStatus
    intended: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    lease_host: str | None = Field(None, description="host of the process running the "
                                                       "campaign, if one holds its lease")
    lease_pid: int | None = Field(None, description="its process id")
    lease_heartbeat: datetime | None = Field(None, description="when it last renewed the lease")


class CampaignPage(BaseModel):
    items: list[CampaignOut]
    total: int
    limit: int
    offset: int


class StatsSnapshotOut(_Row):
    t: float
    execs: int
    exec_per_s: float
    corpus_size: int
    signatures: dict[str, Any]
    at: datetime
    coverage: int | None = Field(None, description="the most coverage one worker reached, in "
                                                    "coverage_unit; null: not measured")
    coverage_unit: CoverageUnit | None = Field(
        None, description="features: behaviour features (kernel events, verdict pairs, "
                          "signatures seen); edges: libFuzzer's code edges of the model (atheris)")


class CampaignDetail(CampaignOut):
    stats: list[StatsSnapshotOut]


class IntendedRule(BaseModel):
    """One rule's intended divergences on one campaign: how many, and sample programs."""

    rule: str
    patch: str | None = Field(description="the patch that intended it (None for a rule this "
                                          "foliodiff does not know: stored by another version)")
    description: str | None
    campaign_id: int
    engine_a: str
    engine_b: str
    count: int
    samples: list[int] = Field(description="program ids (GET /programs/{id}): the smallest "
                                           "program the worker had for each")


class IntendedList(BaseModel):
    """Intended divergences per rule and campaign, by rule then campaign."""

    items: list[IntendedRule]
    total: int = Field(description="intended divergences counted, over the items")


class ProgramOut(BaseModel):
    """A stored program: its id, the sha256 of its text, and the program."""

    id: int
    sha256: str
    program: dict[str, Any]


class CorpusProgram(BaseModel):
    """One corpus file: its name, and what its scenario and description say
    (None when the file is not a readable corpus file)."""

    name: str
    scenario: str | None = None
    description: str | None = None


class CorpusList(BaseModel):
    items: list[CorpusProgram]
    total: int


class ConformIn(BaseModel):
    """A conformance run of a stored divergence on catalogue kernels, as a background job."""

    model_config = ConfigDict(extra="forbid")

    kernels: list[str] = Field(min_length=1, max_length=16, description=(
        "catalogue kernels (GET /conformance/kernels); never a path: a request boots "
        "only what the catalogue names"), examples=[["deb-6.16"]])
    timeout: float = Field(default=300.0, gt=0, le=3600, description="seconds per boot")
    author: str = Field(default="api", min_length=1, max_length=128)


class ConformanceResultOut(_Row):
    """One scenario on one real kernel (see service.models.ConformanceResult)."""

    id: int
    job_id: int | None
    divergence_id: int | None
    scenario: str
    program_id: int
    kernel: str
    kernel_version: str
    package: str
    uname: str | None
    engine: str
    plugin: dict[str, Any] | None
    verdict: Verdict
    differences: list[dict[str, Any]]
    detail: str
    observed: dict[str, Any] | None
    sides: dict[str, Any]
    created_at: datetime


class ConformancePage(BaseModel):
    items: list[ConformanceResultOut]
    total: int
    limit: int
    offset: int


class ConformanceJobOut(_Row):
    """A queued, running or finished conformance job, with the results it stored."""

    id: int
    divergence_id: int
    kernels: list[str]
    timeout: float
    status: JobStatus
    error: str | None
    author: str
    holder: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    results: list[ConformanceResultOut] = []


class CatalogueKernel(BaseModel):
    name: str
    series: str
    engine: str
