"""Fuzzing campaigns: N worker processes, one store, live progress, stop and resume.

A campaign is a row in the store (:class:`service.models.Campaign`) whose
``config`` holds a :class:`CampaignConfig` (its paths absolute, so that a
campaign resumes from any directory) and, under ``progress``, where each
worker was, how many seconds the campaign has run and its counts so far
(executions, minimization runs, findings, coverage, ...).  ``foliodiff
fuzz`` creates one and runs it; ``foliodiff fuzz --resume ID`` runs a
paused (Ctrl-C), or killed, campaign on from there for what is left of its
time, its counts going on from the stored ones.

One process runs a campaign at a time: it takes the campaign's lease
(:meth:`service.store.Store.take_lease`) before it starts and renews it
with every stats snapshot; a second runner is refused while the lease is
fresh, and takes over one whose heartbeat is older than
:data:`service.store.LEASE_EXPIRY` (or whose holder on this host is gone).

Coverage is the largest any worker has reached over the campaign (each
worker's is its own: the campaign's union is at least that), in the
fuzzer's unit (:class:`fuzz.sources.CoverageUnit`): behaviour features, or
libFuzzer's edges for atheris.

Each worker is its own process with its own store connection: it draws
programs from its source (:mod:`fuzz.sources`, or Hypothesis, or libFuzzer
through :mod:`fuzz.atheris_target` in ``service/atheris_worker.py``), runs
each through the engine pair, and hands every report to a
:class:`fuzz.sink.FindingSink` on the store, which writes in batches.
Workers tell the parent what they did through a queue; the parent draws
the progress table and stores a stats snapshot and the workers' positions
every few seconds.  A finding is reported as stored only after the
transaction that holds it committed.

A new unexpected divergence is stored as found; the parent hands it to the
campaign's minimizer (:mod:`service.minimizer`), a process of its own, so
that minimizing never holds up the search.  Its runs are counted apart
from the workers' executions.  Divergences still waiting for it when the
campaign stops are minimized by the next campaign of the pair (a resume
too) that minimizes.

A run that ended in a harness error (an exception of foliodiff itself) is
no finding: the sink keeps it in the store's harness-error table, and the
campaign says so loudly, once per signature, apart from the findings
(:func:`harness_message`).
"""

from __future__ import annotations

import importlib
import json
import multiprocessing as mp
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine import differential
from engine.kernels import load_identities, resolve_engine
from fuzz.sink import FindingSink, HarnessStored, Stored
from fuzz.sources import Corpus, Fuzzer, Source, seed_inputs
from fuzz.throughput import fuzzing_gc
from service.errors import FleetError, LeaseLostError, MissingDependencyError
from service.minimizer import minimizer
from service.models import CampaignStatus
from service.settings import Settings, env_name
from service.store import Lease, Store

#: Seconds between stats snapshots and progress saves.
SNAPSHOT_EVERY = 5.0
#: Seconds between a worker's progress messages.
REPORT_EVERY = 0.5
#: Seconds a worker gets after the time limit to finish its program and flush.
GRACE = 30.0
#: Where an atheris worker (``service/atheris_worker.py``) finds its campaign
#: (and its store: in the settings' variable).
CAMPAIGN_ENV = "FOLIODIFF_CAMPAIGN"
#: Lines of a failed atheris worker's stderr a campaign keeps to say why it failed.
FAILURE_LINES = 20

#: The package each fuzzer needs beyond what every install of foliodiff has,
#: and how to get it (pyproject.toml: hypothesis is in the ``test`` extra;
#: atheris is a dependency, but its wheel or build may be missing).
NEEDS: dict[Fuzzer, tuple[str, str]] = {
    Fuzzer.HYPOTHESIS: ("hypothesis", "pip install 'foliodiff[test]'"),
    Fuzzer.ATHERIS: ("atheris", "pip install 'atheris==2.3.0' (a foliodiff dependency; "
                                "building it needs clang)"),
}


def require_fuzzer(fuzzer: Fuzzer) -> None:
    """Raise :class:`MissingDependencyError`, naming the package and how to install it,
    when @fuzzer needs one that is not importable: checked before a campaign is
    created or resumed, so that none is left half-run by a worker that cannot start."""
    need = NEEDS.get(fuzzer)
    if need is None:
        return
    module, install = need
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"the {fuzzer.value} fuzzer", module, install,
                                     str(exc)) from exc


class CampaignConfig(BaseModel):
    """Everything a campaign needs to run, and to run on after a stop."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    #: The plugin engines of the pair, by identity (engine id, spec, source sha256):
    #: first, so that a worker (a spawned process, the atheris subprocess) or a
    #: resume registers them, unchanged, before the engines are resolved.
    plugins: list[dict[str, str]] = Field(default_factory=list)
    fuzzer: Fuzzer
    engine_a: str
    engine_b: str
    seconds: float = Field(gt=0)
    workers: int = Field(default=1, ge=1, le=64)
    corpus: str | None = None          # directory of kept inputs (and the hypothesis database)
    seeds: str | None = None           # directory of seed programs (*.json) for the byte fuzzers
    seed: int = 0
    pct_depth: int = Field(default=3, ge=1, le=10)
    preemption_bound: int = Field(default=2, ge=0, le=8)
    minimize: bool = True
    max_minimize_runs: int = Field(default=500, ge=1)
    #: A fleet campaign (service/fleet): run by ``foliodiff worker`` processes on
    #: any machine, ``workers`` shares of ``slice_seconds`` each at a time, with
    #: the model whose digest is ``model`` (engine.kernels.model_digest).
    fleet: bool = False
    slice_seconds: float = Field(default=60.0, gt=0)
    model: str | None = None

    @field_validator("plugins")
    @classmethod
    def _plugins(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        load_identities(value)
        return value

    @field_validator("engine_a", "engine_b")
    @classmethod
    def _engine(cls, value: str) -> str:
        return resolve_engine(value)

    @classmethod
    def stored(cls, config: dict[str, Any]) -> CampaignConfig:
        """The config of a campaign row (its ``progress`` is not config)."""
        return cls.model_validate({k: v for k, v in config.items() if k != "progress"})

    @field_validator("corpus")
    @classmethod
    def _corpus(cls, value: str | None) -> str | None:
        # Absolute: a campaign resumed from another directory keeps its corpus.
        return None if value is None else os.path.abspath(value)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not any(Path(value).glob("*.json")):
            raise ValueError(f"no seed programs (*.json) in {os.path.abspath(value)!r}")
        return os.path.abspath(value)

    def seed_inputs(self) -> list[bytes]:
        """The seed programs as byte inputs; a format-1 seed's schedule is read on
        ``engine_a``, the engine whose interleaving the campaign explores first."""
        return [] if self.seeds is None else seed_inputs(self.seeds, reading=self.engine_a)

    def corpus_dir(self, worker: int | str) -> Path | None:
        return None if self.corpus is None else Path(self.corpus) / f"{self.fuzzer.value}-{worker}"


@dataclass
class Progress:
    """The parent's view of a running campaign.

    The per-worker figures are this run's; the ``*_before`` ones what the
    campaign's earlier runs (before a stop or a kill) stored, which the
    totals go on from.
    """

    elapsed: float = 0.0                 # seconds run, over every resume
    execs: dict[int, int] = field(default_factory=dict)
    execs_before: int = 0
    stored_before: int = 0
    coverage_before: int = 0
    signatures_before: dict[str, int] = field(default_factory=dict)
    #: Ids of the harness errors earlier runs saw.
    harness_before: list[int] = field(default_factory=list)
    corpus: dict[int, int] = field(default_factory=dict)
    coverage: dict[int, int] = field(default_factory=dict)
    signatures: dict[int, dict[str, int]] = field(default_factory=dict)
    positions: dict[int, Any] = field(default_factory=dict)
    stored: list[dict[str, Any]] = field(default_factory=list)
    #: What the minimizer did, by divergence id, and the runs it took in all.
    minimized: dict[int, dict[str, Any]] = field(default_factory=dict)
    minimize_runs: int = 0
    #: Each worker's resident set size in bytes, as it last said.
    rss: dict[int, int] = field(default_factory=dict)
    #: Stored divergences handed to the minimizer and not minimized yet.
    pending: list[int] = field(default_factory=list)
    #: Harness errors by their row id in the store (one row per signature).
    harness: dict[int, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def restored(cls, saved: dict[str, Any]) -> Progress:
        """The progress a campaign row saved (:meth:`saved`), for its next run."""
        return cls(elapsed=float(saved.get("elapsed", 0.0)),
                   positions={int(k): v for k, v in saved.get("positions", {}).items()},
                   execs_before=int(saved.get("execs", 0)),
                   minimize_runs=int(saved.get("minimize_runs", 0)),
                   stored_before=int(saved.get("stored", 0)),
                   coverage_before=int(saved.get("coverage", 0)),
                   signatures_before=dict(saved.get("signatures", {})),
                   harness_before=list(saved.get("harness", [])))

    def saved(self) -> dict[str, Any]:
        """What a campaign row keeps of this progress (``config["progress"]``)."""
        return {"elapsed": self.elapsed,
                "positions": {str(k): v for k, v in self.positions.items()},
                "execs": self.total_execs(), "minimize_runs": self.minimize_runs,
                "stored": self.total_stored(), "coverage": self.total_coverage(),
                "signatures": self.by_kind(), "harness": sorted(self.harness_ids())}

    def total_execs(self) -> int:
        """Search executions over the campaign (minimization runs apart)."""
        return self.execs_before + sum(self.execs.values())

    def total_stored(self) -> int:
        """Findings the campaign stored, over every run."""
        return self.stored_before + len(self.stored)

    def total_coverage(self) -> int:
        """The most coverage one worker has reached over the campaign (a lower
        bound of the workers' union), in the fuzzer's :class:`fuzz.sources.CoverageUnit`."""
        return max([self.coverage_before, *self.coverage.values()])

    def harness_ids(self) -> set[int]:
        """The harness errors (row ids) the campaign saw, over every run."""
        return set(self.harness_before) | set(self.harness)

    def by_kind(self) -> dict[str, int]:
        # Workers count their own unique signatures; the largest is a lower bound
        # of the union.  The snapshot raises it to the store's exact count where
        # the store has one (unexpected divergences).
        out: dict[str, int] = dict(self.signatures_before)
        for kinds in self.signatures.values():
            for kind, n in kinds.items():
                out[kind] = max(out.get(kind, 0), n)
        return out


# -- workers -----------------------------------------------------------------------


def _worker(db_url: str, campaign_id: int, worker: int, deadline: float, position: Any,
            stop: Any, messages: Any) -> None:
    """A worker process: generate, run, sink, report, until stopped or out of time.

    An exception that ends it is sent to the parent (``failed``), which fails
    the campaign with it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the parent decides when to stop
    try:
        _work(db_url, campaign_id, worker, deadline, position, stop, messages)
    except BaseException:
        messages.put(("failed", worker, traceback.format_exc()))
        raise


def _work(db_url: str, campaign_id: int, worker: int, deadline: float, position: Any,
          stop: Any, messages: Any) -> None:
    parent = os.getppid()
    store = Store.open(db_url)

    def stored(found: list[Any]) -> None:
        messages.put(("stored", worker, [vars(f) for f in found]))

    def harness(found: list[Any]) -> None:
        messages.put(("harness", worker, [vars(f) for f in found]))

    sink, config = open_sink(store, campaign_id, stored, on_harness=harness)
    execs = 0
    last = 0.0
    seen: set[str] = set()               # the hypothesis fuzzer's behaviour features

    def report(source: Any, final: bool = False) -> None:
        messages.put(("stats", worker, {
            "execs": execs, "corpus": len(source.corpus.inputs) if source else 0,
            "coverage": len(source.corpus.seen) if source else len(seen),
            "signatures": sink.stats.by_kind(), "position": getattr(source, "position", None),
            "rss": _rss_bytes(), "final": final}))

    def go_on() -> bool:
        return not stop.is_set() and time.monotonic() < deadline and os.getppid() == parent

    source = None

    def each(program: Any, rep: Any) -> None:
        nonlocal execs, last
        execs += 1
        sink.add(program, rep)
        if source is not None:
            source.learn(program, rep)
        if time.monotonic() - last > REPORT_EVERY:
            last = time.monotonic()
            report(source)

    try:
        if config.fuzzer is Fuzzer.HYPOTHESIS:
            from fuzz.hypothesis_fuzzer import fuzz_with_hypothesis
            fuzzing_gc()
            fuzz_with_hypothesis(config, worker, go_on, each, seen)
        else:
            source = Source(config.fuzzer, config.engine_a, config.seed, worker,
                            Corpus(config.corpus_dir(worker), config.seed_inputs()), position,
                            pct_depth=config.pct_depth,
                            preemption_bound=config.preemption_bound)
            fuzzing_gc()
            for program in source:
                if not go_on():
                    break
                each(program, differential(program, config.engine_a, config.engine_b))
    finally:
        sink.flush()
        report(source, final=True)
        store.close()


def _rss_bytes() -> int:
    """This process's resident set size now (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def harness_to_stderr(found: list[HarnessStored]) -> None:
    """Write each harness error as a ``foliodiff-harness {json}`` line on stderr,
    which the parent of a fuzzer process that is not a worker (atheris) reads."""
    for f in found:
        print("foliodiff-harness " + json.dumps(vars(f)), file=sys.stderr, flush=True)


def open_sink(store: Store, campaign_id: int, on_stored: Callable[[list[Stored]], None], *,
              on_harness: Callable[[list[HarnessStored]], None] = harness_to_stderr,
              **kw: Any) -> tuple[FindingSink, CampaignConfig]:
    """The finding sink of one worker of campaign ``campaign_id``, and the campaign's config.

    The sink stores new unexpected divergences as found: the campaign
    minimizes them in a process of its own.  Signatures the store already
    holds for the pair are not stored again.  @on_harness: told of each new
    harness error after its commit (default: :func:`harness_to_stderr`).
    Other keyword arguments go to :class:`fuzz.sink.FindingSink`.
    """
    config = CampaignConfig.stored(store.get_campaign(campaign_id).config)
    sink = FindingSink(store, campaign_id, minimize=False, on_stored=on_stored,
                       on_harness=on_harness,
                       known=store.known_signature_ids(config.engine_a, config.engine_b), **kw)
    return sink, config


def atheris_env(db_url: str, campaign_id: int) -> dict[str, str]:
    """The environment that tells an atheris worker its store and campaign, and
    makes it import the foliodiff that started it.

    The worker is a script (``service/atheris_worker.py``): on its own it would
    import whichever foliodiff is installed, which may be another checkout
    with another schema.
    """
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {env_name("db_url"): db_url, CAMPAIGN_ENV: str(campaign_id), "PYTHONPATH": path}


def campaign_from_env() -> tuple[str, int]:
    """An atheris worker's store URL and campaign id (:func:`atheris_env`)."""
    return Settings().db_url, int(os.environ[CAMPAIGN_ENV])


# -- the parent --------------------------------------------------------------------


def create(store: Any, config: CampaignConfig) -> int:
    """Record a new campaign of ``config``; return its id."""
    campaign = store.create_campaign(config.engine_a, config.engine_b, config.fuzzer.value,
                                     config.model_dump(mode="json"))
    return campaign.id


def harness_message(found: dict[str, Any], db_url: str) -> str:
    """The line a campaign prints for a harness error: what it is, and how to see it."""
    where = " ".join(x for x in (found["op"], found["function"] and f"in {found['function']}")
                     if x)
    seen = "new" if found["new"] else "already stored"
    return (f"HARNESS ERROR #{found['harness_error_id']} ({seen}): a defect of foliodiff itself, "
            f"NOT a kernel finding: {found['exception']} on {found['engine']}"
            f"{' at ' + where if where else ''}: {found['message']}\n"
            f"  signature {found['signature']}\n"
            f"  see it: foliodiff serve --db {db_url}, then "
            f"GET /harness-errors/{found['harness_error_id']} (stack and program)")


#: libFuzzer's status lines: "#1865\tNEW    cov: 779 ft: 1604 corp: 65/..." and,
#: under -fork=N, "#1865: cov: 779 ft: 1604 corp: 65 exec/s 409 ...".
_LIBFUZZER_STATS = re.compile(r"#(\d+):?\s+(?:\w+\s+)?cov: (\d+).*?corp: (\d+)")


class Campaign:
    """Runs campaign ``campaign_id`` of the store at ``db_url`` to its time limit.

    @on_progress: called about every :data:`REPORT_EVERY` seconds with the
    :class:`Progress` (the CLI draws it); @on_stored with each finding the
    moment its commit is known; @on_minimized with what the minimizer did
    for each (see :func:`service.minimizer.minimize_stored`); @on_harness
    with each harness error (a
    dict of :class:`fuzz.sink.HarnessStored`), once per signature, the moment
    its commit is known (default: :func:`harness_message` on stderr).

    Raises :class:`service.errors.MissingDependencyError` when the
    campaign's fuzzer needs a package that is not installed.
    """

    def __init__(self, db_url: str, campaign_id: int, *, run_for: float | None = None,
                 on_progress: Any = None, on_stored: Any = None, on_minimized: Any = None,
                 on_harness: Any = None) -> None:
        self.db_url = db_url
        self.campaign_id = campaign_id
        self.store = Store.open(db_url)
        try:
            row = self.store.get_campaign(campaign_id)
            self.config = CampaignConfig.stored(row.config)
            if self.config.fleet:
                raise FleetError(f"campaign {campaign_id} is a fleet campaign: its workers "
                                 f"run it (foliodiff worker --campaign {campaign_id})")
            require_fuzzer(self.config.fuzzer)
        except BaseException:
            self.store.close()
            raise
        self.status = row.status
        self.progress = Progress.restored(row.config.get("progress", {}))
        #: This runner's lease of the campaign, once taken (:meth:`take_lease`).
        self.lease: Lease | None = None
        #: Why the campaign failed (a worker's exception), if it did.
        self.failure: str | None = None
        self.on_progress = on_progress
        self.on_stored = on_stored
        self.on_minimized = on_minimized
        self.on_harness = on_harness or (
            lambda found: print(harness_message(found, db_url), file=sys.stderr, flush=True))
        self.run_for = run_for
        self._last_snapshot = time.monotonic()
        self._scratch: tempfile.TemporaryDirectory | None = None   # atheris' seeds, artifacts
        self._minimizer: Any = None            # its process, while the campaign runs
        self._tasks: Any = None                # its queue of divergence ids, until closed
        self._stop: Any = None                 # the workers' stop event, while they run

    def remaining(self) -> float:
        """Seconds this run may take: what is left of the campaign, or ``run_for``."""
        left = max(0.0, self.config.seconds - self.progress.elapsed)
        return left if self.run_for is None else max(0.0, self.run_for)

    def take_lease(self) -> Lease | None:
        """Become the campaign's runner (:meth:`service.store.Store.take_lease`).

        Raises :class:`service.errors.LeaseHeldError` while another runner's
        lease is fresh.
        Return: the lease taken over (expired, or its holder gone), or None.
        """
        lease = Lease.mine()
        previous = self.store.take_lease(self.campaign_id, lease)
        self.lease = lease
        return previous

    def run(self) -> str:
        """Run until the time limit or Ctrl-C, holding the campaign's lease (taken
        now unless :meth:`take_lease` took it).

        A worker that dies of an exception fails the campaign (:attr:`failure`
        says why).  Raises :class:`service.errors.LeaseLostError`, leaving the
        campaign to its new runner, when another runner took the lease over.
        Return: the campaign's final status.
        """
        try:
            if self.lease is None:
                self.take_lease()
            status = self._run_leased()
        finally:
            self.store.close()
        return status.value

    def _run_leased(self) -> CampaignStatus:
        assert self.lease is not None
        if self.status is not CampaignStatus.RUNNING:        # RUNNING: killed, resumed now
            self.store.set_campaign_status(self.campaign_id, CampaignStatus.RUNNING)
        started = time.monotonic()
        base_elapsed = self.progress.elapsed
        interrupted = False
        try:
            try:
                if self.config.fuzzer is Fuzzer.ATHERIS:
                    self._run_atheris(started, base_elapsed)
                else:
                    self._run_workers(started, base_elapsed)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                self.progress.elapsed = base_elapsed + time.monotonic() - started
                self._snapshot()
        except LeaseLostError:
            raise                  # the campaign is another runner's now: write nothing
        except KeyboardInterrupt:
            self._finish(CampaignStatus.PAUSED)     # a second Ctrl-C while stopping
            raise
        except Exception as exc:
            # A defect of the campaign's own process: never left "running" or "paused".
            self.failure = self.failure or f"{type(exc).__name__}: {exc}"
            self._finish(CampaignStatus.FAILED)
            raise
        if self.failure is not None:
            status = CampaignStatus.FAILED
        elif not interrupted and self.config.seconds - self.progress.elapsed <= 0.5:
            status = CampaignStatus.FINISHED
        else:
            status = CampaignStatus.PAUSED
        self._finish(status)
        return status

    def _finish(self, status: CampaignStatus) -> None:
        """Leave the campaign in @status and give its lease up."""
        assert self.lease is not None
        self.store.set_campaign_status(self.campaign_id, status)
        self.store.release_lease(self.campaign_id, self.lease.token)

    # -- the minimizer: a process beside the workers (service/minimizer.py) -------------

    def _start_minimizer(self, ctx: Any, messages: Any, deadline: float) -> None:
        """Start the campaign's minimizer, with what earlier campaigns of the
        pair left it (killed, stopped, or told not to minimize).

        @deadline: the campaign's; a finding made just before it is still
        minimized, in the first half of the grace period.
        """
        if not self.config.minimize:
            return
        self._tasks = ctx.Queue()
        self._minimizer = ctx.Process(target=minimizer, daemon=True,
                                      args=(self.db_url, self._tasks, messages,
                                            self.config.max_minimize_runs, deadline + GRACE / 2,
                                            self.config.plugins))
        self._minimizer.start()
        self.progress.pending = self.store.unminimized(self.config.engine_a, self.config.engine_b)
        for divergence_id in self.progress.pending:
            self._tasks.put(divergence_id)

    def _close_minimizer(self) -> None:
        """No more findings come: the minimizer ends once it minimized those it has."""
        if self._tasks is not None:
            self._tasks.put(None)
            self._tasks = None

    def _minimizing(self) -> bool:
        return self._minimizer is not None and self._minimizer.is_alive()

    def _stop_minimizer(self) -> None:
        """Stop the minimizer, now; what it had not minimized stays pending."""
        self._close_minimizer()
        if self._minimizer is not None:
            self._minimizer.join(timeout=1)
            if self._minimizer.is_alive():
                self._minimizer.kill()

    def _run_workers(self, started: float, base_elapsed: float) -> None:
        ctx = mp.get_context("spawn")
        stop, messages = ctx.Event(), ctx.Queue()
        self._stop = stop
        deadline_in = self.remaining()
        procs = [ctx.Process(target=_worker, daemon=True,
                             args=(self.db_url, self.campaign_id, w,
                                   time.monotonic() + deadline_in,
                                   self.progress.positions.get(w), stop, messages))
                 for w in range(self.config.workers)]
        for p in procs:
            p.start()
        interrupted = False
        # CLOCK_MONOTONIC is system-wide on Linux: the workers' deadline is the parent's.
        deadline = time.monotonic() + deadline_in
        self._start_minimizer(ctx, messages, deadline)
        try:
            while (any(p.is_alive() for p in procs) or not messages.empty()
                   or self._minimizing()):
                if time.monotonic() > deadline:
                    stop.set()                      # workers check it between programs
                if not any(p.is_alive() for p in procs) and messages.empty():
                    self._close_minimizer()
                if time.monotonic() > deadline + GRACE:
                    break                           # one stuck in a program: killed below
                self._drain(messages, timeout=0.2)
                self._tick(base_elapsed + time.monotonic() - started)
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
            self._join(procs, 60)
            self._drain(messages, timeout=0.2)
            raise
        finally:
            stop.set()
            self._join(procs, 5, heartbeat=False)
            for p in procs:
                if p.is_alive():
                    p.kill()                        # stuck in a program: not a failure
                # Not after Ctrl-C: it may have reached a worker still starting up.
                elif p.exitcode and self.failure is None and not interrupted:
                    self.failure = f"worker {procs.index(p)} exited with code {p.exitcode}"
            self._stop_minimizer()
            self._drain(messages, timeout=0)

    def _join(self, procs: list[Any], timeout: float, heartbeat: bool = True) -> None:
        """Wait up to @timeout seconds for @procs to end, storing snapshots (and so
        renewing the lease) meanwhile if @heartbeat."""
        end = time.monotonic() + timeout
        while any(p.is_alive() for p in procs) and time.monotonic() < end:
            for p in procs:
                p.join(timeout=0.2)
            if heartbeat and time.monotonic() - self._last_snapshot > SNAPSHOT_EVERY:
                self._snapshot()

    def _tick(self, elapsed: float) -> None:
        """Show progress; store a snapshot every :data:`SNAPSHOT_EVERY` seconds."""
        self.progress.elapsed = elapsed
        if self.on_progress:
            self.on_progress(self)
        if time.monotonic() - self._last_snapshot > SNAPSHOT_EVERY:
            self._snapshot()

    def _drain(self, messages: Any, timeout: float) -> None:
        try:
            kind, worker, body = messages.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._take(kind, worker, body)
            try:
                kind, worker, body = messages.get_nowait()
            except queue.Empty:
                return

    def _take(self, kind: str, worker: int, body: Any) -> None:
        p = self.progress
        if kind == "stored":
            # Workers that found the same divergence each say they stored it (the
            # store kept one record): the campaign counts and minimizes it once.
            seen = {f["divergence_id"] for f in p.stored}
            body = [f for f in body if f["divergence_id"] not in seen]
            p.stored.extend(body)
            for found in body:
                if found["ops_minimized"] is None and self.config.minimize:
                    p.pending.append(found["divergence_id"])
                    if self._tasks is not None:
                        self._tasks.put(found["divergence_id"])
                if self.on_stored:
                    self.on_stored(found)
            return
        if kind == "minimized":
            p.minimized[body["divergence_id"]] = body
            p.minimize_runs += body["runs"]
            if body["ops_minimized"] is not None and body["divergence_id"] in p.pending:
                p.pending.remove(body["divergence_id"])
            if self.on_minimized:
                self.on_minimized(body)
            return
        if kind == "failed":
            # The first worker's exception fails the campaign; the others stop.
            if self.failure is None:
                self.failure = f"worker {worker} failed:\n{body}"
            if self._stop is not None:
                self._stop.set()
            return
        if kind == "harness":
            for found in body:
                # Each worker reports a signature once; the campaign says it once.
                if found["harness_error_id"] not in p.harness:
                    p.harness[found["harness_error_id"]] = found
                    self.on_harness(found)
            return
        p.execs[worker] = body["execs"]
        p.corpus[worker] = body["corpus"]
        p.coverage[worker] = body["coverage"]
        p.signatures[worker] = body["signatures"]
        p.rss[worker] = body["rss"]
        if body["position"] is not None:
            p.positions[worker] = body["position"]

    def _snapshot(self) -> None:
        """Renew the lease, then store a stats snapshot and the progress.

        Raises :class:`service.errors.LeaseLostError`, before writing
        anything, when another runner took the lease over.
        """
        self._last_snapshot = time.monotonic()
        if self.lease is not None:
            self.store.renew_lease(self.campaign_id, self.lease.token)
        p = self.progress
        t = max(p.elapsed, 1e-9)
        # Unique signatures by kind: the store's count of the pair is exact for
        # unexpected ones; the workers' own counts (each a lower bound of the
        # union) cover intended ones, which are not stored one by one.
        kinds = p.by_kind()
        for kind, n in self.store.count_by_kind(self.config.engine_a,
                                                self.config.engine_b).items():
            kinds[kind] = max(kinds.get(kind, 0), n)
        self.store.add_stats_snapshot(self.campaign_id, t=p.elapsed, execs=p.total_execs(),
                                      exec_per_s=p.total_execs() / t,
                                      corpus_size=sum(p.corpus.values()), signatures=kinds,
                                      coverage=p.total_coverage(),
                                      coverage_unit=self.config.fuzzer.coverage_unit)
        self.store.save_progress(self.campaign_id, p.saved())

    # -- atheris: libFuzzer drives, in its own process(es) --------------------------

    def _atheris_args(self) -> list[str]:
        """The command line of an atheris worker, less its ``-seed``.

        Context: makes the corpus directory, and a scratch directory (removed
        with the campaign) for the seeds and, without a corpus directory, the
        artifacts.
        """
        cfg = self.config
        corpus = cfg.corpus_dir("atheris")
        args = [sys.executable, str(Path(__file__).with_name("atheris_worker.py"))]
        if corpus is not None:
            corpus.mkdir(parents=True, exist_ok=True)
            args.append(str(corpus))
        seeds = cfg.seed_inputs()
        if seeds:
            # libFuzzer reads every corpus directory and writes only to the
            # first; the seeds go in a later one, removed with the campaign.
            self._scratch = tempfile.TemporaryDirectory(prefix="foliodiff-atheris-")
            scratch = Path(self._scratch.name)
            if corpus is None:
                (scratch / "corpus").mkdir()
                args.append(str(scratch / "corpus"))
            (scratch / "seeds").mkdir()
            for i, data in enumerate(seeds):
                (scratch / "seeds" / f"seed-{i}").write_bytes(data)
            args.append(str(scratch / "seeds"))
        # libFuzzer writes crash, timeout, slow-unit and leak files to its working
        # directory unless told otherwise: beside the corpus (the campaign's own
        # directory), or into the scratch directory; never the working directory.
        if corpus is not None:
            artifacts = corpus.absolute().parent / f"{corpus.name}-artifacts"
        else:
            if self._scratch is None:
                self._scratch = tempfile.TemporaryDirectory(prefix="foliodiff-atheris-")
            artifacts = Path(self._scratch.name) / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        return args + [f"-max_total_time={max(1, int(self.remaining()))}",
                       "-print_final_stats=1", f"-max_len={256}", f"-artifact_prefix={artifacts}/"]

    def _run_atheris(self, started: float, base_elapsed: float) -> None:
        cfg = self.config
        args = self._atheris_args()
        env = {**os.environ, **atheris_env(self.db_url, self.campaign_id)}
        # One libFuzzer process per worker, all on the same corpus directory
        # (libFuzzer's -jobs=N -workers=N: each reloads what the others add),
        # not -fork=N: a fork job lives for as many seconds as its number, and
        # every job starts Python and instruments the engine again, so two
        # forked workers ran fewer executions than one.
        procs = [subprocess.Popen(args + [f"-seed={cfg.seed + 1 + w}"], env=env,
                                  stderr=subprocess.PIPE, text=True)
                 for w in range(cfg.workers)]
        # CLOCK_MONOTONIC is system-wide: libFuzzer stops at this deadline too.
        deadline = time.monotonic() + self.remaining()
        ctx = mp.get_context("spawn")
        minimized = ctx.Queue()
        self._start_minimizer(ctx, minimized, deadline)
        lines: queue.Queue[tuple[int, str | None]] = queue.Queue()
        # What each worker said that is no status line: why it failed, if it does.
        said: list[deque[str]] = [deque(maxlen=FAILURE_LINES) for _ in procs]

        def pump(worker: int, stream: Any) -> None:
            for line in stream:
                lines.put((worker, line))
            lines.put((worker, None))

        for w, proc in enumerate(procs):
            threading.Thread(target=pump, args=(w, proc.stderr), daemon=True).start()
        try:
            running = len(procs)
            while running or self._minimizing() or not minimized.empty():
                if not running:
                    self._close_minimizer()
                    if time.monotonic() > deadline + GRACE:
                        break
                self._drain(minimized, timeout=0)
                try:
                    w, line = lines.get(timeout=0.2)
                except queue.Empty:
                    self._tick(base_elapsed + time.monotonic() - started)
                    continue
                if line is None:
                    running -= 1
                    continue
                m = _LIBFUZZER_STATS.search(line)
                if m:
                    self.progress.execs[w] = int(m.group(1))
                    self.progress.coverage[w] = int(m.group(2))
                    self.progress.corpus[w] = int(m.group(3))
                elif line.startswith("foliodiff-stored "):
                    self._take("stored", w, [_parse_stored(line)])
                elif line.startswith("foliodiff-harness "):
                    self._take("harness", w, [_parse_stored(line)])
                else:
                    said[w].append(line.rstrip())
                self._tick(base_elapsed + time.monotonic() - started)
            for w, proc in enumerate(procs):
                if proc.wait() != 0 and self.failure is None:
                    self.failure = (f"atheris worker {w} exited with code {proc.returncode}:\n"
                                    + "\n".join(said[w]))
        except KeyboardInterrupt:
            for proc in procs:
                proc.send_signal(signal.SIGINT)
            for proc in procs:
                proc.wait(timeout=30)
            raise
        finally:
            self._stop_minimizer()
            self._drain(minimized, timeout=0)


def _parse_stored(line: str) -> dict[str, Any]:
    """The JSON of a ``foliodiff-stored`` or ``foliodiff-harness`` line."""
    return json.loads(line.split(" ", 1)[1])
