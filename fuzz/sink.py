"""Where a fuzz worker's results go: dedup, minimization, batched store writes.

Every fuzzer, whatever generates its programs, hands each differential
report to a :class:`FindingSink`.  An unexpected divergence whose signature
the campaign has not stored yet is stored with the program that found it,
and, when the sink minimizes (delta debugging that keeps the signature),
with its minimized program too; a campaign stores at once and minimizes in
a process of its own instead.  One already known only counts a hit.  Intended divergences are
counted per rule on the campaign with a few sample programs, never stored
one by one (the store does that part).  Intended divergences are not
minimized here: a pair of distant versions shows dozens of intended
signatures, and minimizing each would take a short campaign's whole time;
a caller that minimized a program itself hands it in (``minimized``) and
the store keeps it as the rule's sample.

A report with a run that ended in a harness error (``Verdict.HARNESS``: an
exception of foliodiff itself, not a kernel report) holds no divergence
and says nothing about either kernel: it never reaches the divergence
store.  It goes to the store's harness-error table, as the run had it (not
minimized: a defect of the harness is fixed in the harness), and the sink
counts it apart from the kernel findings.

Writes are batched: the sink flushes when its batch is full, when
``flush_every`` seconds passed since the last flush, and when the worker
stops.  Only a flush that committed reports anything as stored, so a
campaign killed at any instant never claims a finding it did not keep; and
only a finding whose record its own batch inserted, so that of several
workers (processes, machines) finding one signature at once, one says so.
Each batch carries an idempotency key (the sink's token and the batch's
number): a write that failed with the connection is sent again with the
same key, and the store applies it once, whether or not the first try
committed.

The sink writes through :class:`FindingStore`, the two batch upserts of
the records of :mod:`fuzz.records`; the service's store implements it, so
the fuzzers need nothing of the service (which imports them, not the other
way round).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from engine import Classification, Program, Report, differential
from fuzz.errors import NotInterestingError
from fuzz.minimize import minimize_divergence
from fuzz.records import (
    DivergenceRecord,
    HarnessRecord,
    harness_records_from_report,
    minimized_run,
    records_from_report,
)

#: Attempts at a batch whose write fails transiently, and the seconds before the
#: first retry (doubling each time).
RETRIES = 4
RETRY_AFTER = 0.5

_Result = TypeVar("_Result")


class Upserted(Protocol):
    """What a batch of records did: the record id of each signature id, and the
    signature ids this batch stored a record of (the others were stored already,
    by this writer or another)."""

    @property
    def ids(self) -> Mapping[str, int]: ...

    @property
    def new(self) -> AbstractSet[str]: ...


class FindingStore(Protocol):
    """Where a sink writes: each batch in one transaction, all of it or nothing.

    ``service.store.Store`` implements it (its methods say how signatures are
    deduplicated and intended divergences counted).
    """

    def upsert_divergences(self, records: Iterable[DivergenceRecord], *,
                           campaign_id: int | None = None, key: str | None = None) -> Upserted:
        """Store the unexpected divergences of @records, count the intended ones
        on campaign @campaign_id."""
        ...

    def upsert_harness_errors(self, records: Iterable[HarnessRecord], *,
                              campaign_id: int | None = None,
                              key: str | None = None) -> Upserted:
        """Store @records, one row per signature, found by campaign @campaign_id."""
        ...


@dataclass
class Stored:
    """One unexpected divergence a flush stored for the first time by this worker."""

    divergence_id: int
    signature: str
    kind: str
    ops_original: int
    #: None: stored as found, not minimized (by this sink; a campaign's minimizer may)
    ops_minimized: int | None


@dataclass
class HarnessStored:
    """A harness error a flush stored, the first time this worker stored its signature.

    @new: the store held no record of the signature before (else its hits grew).
    """

    harness_error_id: int
    signature: str
    engine: str
    exception: str
    message: str
    op: str | None
    function: str | None
    new: bool


@dataclass
class SinkStats:
    """What a sink saw: reports, unique signatures by kind, minimization cost.

    Harness errors are no kind of divergence: ``harness`` counts the runs
    that ended in one, ``harness_signatures`` their signature ids.
    """

    reports: int = 0
    intended: int = 0
    unexpected: int = 0
    signatures: dict[str, set[str]] = field(default_factory=dict)   # kind -> signature ids
    minimize_runs: int = 0
    stored: int = 0
    harness: int = 0
    harness_signatures: set[str] = field(default_factory=set)

    def by_kind(self) -> dict[str, int]:
        return {kind: len(ids) for kind, ids in sorted(self.signatures.items())}


class FindingSink:
    """Collects one worker's divergences and harness errors and writes them to the
    store in batches.

    @store: where the records go (the campaign's store).
    @campaign_id: where intended divergences are counted.
    @known: signature ids already stored for the pair (not minimized again).
    @minimize: minimize new unexpected divergences before storing them, within
        ``max_minimize_runs`` runs, ``minimize_seconds`` and the campaign's
        ``deadline`` (monotonic).  Campaigns do not: they store at once and
        minimize in a process of their own (:mod:`service.minimizer`).
    @on_stored: called after each commit with what it stored for the first time.
    @on_harness: called after each commit with the harness errors whose
        signatures this sink stored for the first time.
    """

    def __init__(self, store: FindingStore, campaign_id: int, *, known: set[str],
                 minimize: bool = True, max_minimize_runs: int = 500,
                 minimize_seconds: float = 30.0, deadline: float | None = None,
                 batch: int = 200, flush_every: float = 1.0,
                 on_stored: Callable[[list[Stored]], None] | None = None,
                 on_harness: Callable[[list[HarnessStored]], None] | None = None) -> None:
        self.store = store
        self.campaign_id = campaign_id
        self.known = set(known)
        self.minimize = minimize
        self.max_minimize_runs = max_minimize_runs
        self.minimize_seconds = minimize_seconds
        self.deadline = deadline
        self.batch = batch
        self.flush_every = flush_every
        self.on_stored = on_stored
        self.on_harness = on_harness
        self.stats = SinkStats()
        self._pending: list[DivergenceRecord] = []
        self._harness: list[HarnessRecord] = []
        self._fresh: dict[str, Stored] = {}          # signature id -> not yet committed
        self._last_flush = time.monotonic()
        # Idempotency keys: this sink's token and its batch number.
        self.token = secrets.token_hex(8)
        self._batches = 0

    def add(self, program: Program, report: Report, minimized: Program | None = None) -> list[str]:
        """Take ``report`` of ``program``; return the signature ids new to this sink.

        @minimized: a reproducer of ``report``'s divergences the caller already
            minimized (under a stricter predicate); the sink then spends no
            minimization of its own on them.

        A report with a harness error has no divergences: its runs go to the
        harness-error table, and no signature id comes back.
        """
        self.stats.reports += 1
        if report.harness:
            for harness in harness_records_from_report(report, program):
                self.stats.harness += 1
                self._harness.append(harness)
            self._maybe_flush()
            return []
        if not report.divergences:
            self._maybe_flush()
            return []
        new = []
        records = records_from_report(report, program)
        # The report of the caller's minimized program, run once if a new record needs it.
        given: list[Report] = []
        for d, rec in zip(report.divergences, records, strict=True):
            seen = self.stats.signatures.setdefault(d.kind.value, set())
            if d.signature_id not in seen:
                seen.add(d.signature_id)
                new.append(d.signature_id)
            if d.classification is Classification.INTENDED:
                self.stats.intended += 1
            else:
                self.stats.unexpected += 1
            small = minimized
            if d.classification is Classification.UNEXPECTED and d.signature_id not in self.known:
                self.known.add(d.signature_id)
                if minimized is not None:
                    if not given:
                        given.append(differential(minimized, report.a.engine, report.b.engine))
                    done: tuple[Program, Report] | None = (minimized, given[0])
                else:
                    done = self._minimize(program, report, d.signature_id)
                small = done[0] if done is not None else None
                if done is not None:
                    # Only a new record keeps it: a stored one has its own already.
                    rec = dataclasses.replace(rec, minimized=minimized_run(done[1],
                                                                           d.signature_id))
                self._fresh[d.signature_id] = Stored(0, rec.signature, rec.kind.value,
                                                     len(program.ops),
                                                     len(small.ops) if small else None)
            if small is not None:
                rec = dataclasses.replace(rec, minimized_program=small.to_json(indent=None))
            self._pending.append(rec)
        self._maybe_flush()
        return new

    def _minimize(self, program: Program, report: Report,
                  signature_id: str) -> tuple[Program, Report] | None:
        """``program`` delta-debugged within the sink's budgets, keeping
        ``signature_id``, and its report; None when the sink does not minimize."""
        if not self.minimize:
            return None
        until = time.monotonic() + self.minimize_seconds
        if self.deadline is not None:
            until = min(until, self.deadline)
        try:
            res = minimize_divergence(program, report.a.engine, report.b.engine, signature_id,
                                      until=until, max_runs=self.max_minimize_runs)
        except NotInterestingError:       # out of time before the first check
            return program, report
        self.stats.minimize_runs += res.runs
        assert res.report is not None     # minimize_divergence always sets it
        return res.program, res.report

    def _maybe_flush(self) -> None:
        waiting = len(self._pending) + len(self._harness)
        if (waiting >= self.batch
                or waiting and time.monotonic() - self._last_flush >= self.flush_every):
            self.flush()

    def flush(self) -> list[Stored]:
        """Write the pending records, divergences and harness errors each in one
        transaction; return the divergences it stored first."""
        self._last_flush = time.monotonic()
        self._flush_harness()
        if not self._pending:
            return []
        pending = self._pending
        result = self._write(lambda key: self.store.upsert_divergences(
            pending, campaign_id=self.campaign_id, key=key))
        self._pending = []
        stored = []
        for sid, found in self._fresh.items():
            # Another worker (another process, another machine) may have stored
            # it first: then this batch only counted a hit, and it is theirs to say.
            if sid in result.new:
                found.divergence_id = result.ids[sid]
                stored.append(found)
        self._fresh = {}
        self.stats.stored += len(stored)
        if stored and self.on_stored is not None:
            self.on_stored(stored)
        return stored

    def _write(self, write: Callable[[str], _Result]) -> _Result:
        """Run @write with the next batch's idempotency key, again with the same
        key while it fails transiently (an error whose ``transient`` is true: the
        connection was lost, maybe after the commit), :data:`RETRIES` times at most.
        The store applies a key once, so a batch that did commit is not counted
        twice, and one that did not is not lost."""
        self._batches += 1
        key = f"{self.token}/{self._batches}"
        for attempt in range(RETRIES):
            try:
                return write(key)
            except Exception as exc:
                if not getattr(exc, "transient", False) or attempt == RETRIES - 1:
                    raise
                time.sleep(RETRY_AFTER * 2 ** attempt)
        raise AssertionError("unreachable")

    def _flush_harness(self) -> None:
        if not self._harness:
            return
        harness = self._harness
        result = self._write(lambda key: self.store.upsert_harness_errors(
            harness, campaign_id=self.campaign_id, key=key))
        found = []
        for rec in self._harness:
            if rec.signature_id not in self.stats.harness_signatures:
                self.stats.harness_signatures.add(rec.signature_id)
                found.append(HarnessStored(result.ids[rec.signature_id], rec.signature,
                                           rec.engine, rec.exception, rec.message, rec.op,
                                           rec.function, rec.signature_id in result.new))
        self._harness = []
        if found and self.on_harness is not None:
            self.on_harness(found)
