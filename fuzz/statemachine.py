"""A Hypothesis state machine that grows a program and checks two kernels after every step.

Each rule appends one operation (or one preemption) to a program that only
ever makes sense: regions are mapped before use, a pin is unpinned at most
once and DMA goes only through pins still held, the child process exists
before its task acts.  After every step the program so far runs on both
engines of the pair through :func:`engine.differential`, and the
invariant holds when

- each engine's oracle verdict is OK (no crash, data loss, broken invariant,
  leak or hang), and
- every divergence between them is classified intended.

How it runs incrementally: the whole program is re-run after each step.  A
Runner is a pure function of a frozen program and cannot honestly be fed
operations: an appended operation of another thread may run before earlier
ones (the op-order policy picks the first *runnable* operation, and a
preemption may name a place of any earlier operation), so a kept Runner
would answer for a different interleaving.  Measured (2-core VM, up to 30 steps, before the
differential traced every run): v6.14 vs v6.15, ~100 checks/s, ~4.6
machines/s; v5.17 vs v6.14, whose runs part on almost every program, ~18
checks/s (tracing from the start made such pairs ~1.8x faster).

A failure raises :class:`FindingError` naming the program (JSON) and the
signature; Hypothesis shrinks the steps first.  Signatures in the machine's
``known`` set are not failures, so a campaign keeps looking for new ones.

:func:`run_campaign` runs the machine in batches until a time limit, keeping
Hypothesis' example database in a directory, and reports each (shrunk)
finding once.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from engine import PAGE_SIZE, YIELD_POINTS, Program, Verdict, YieldPoint, differential, parse_program
from engine.kernels import resolve_engine
from fuzz.errors import Finding, FindingError
from fuzz.minimize import minimize

__all__ = ["CampaignStats", "LazyfreeMachine", "check_pair", "make_machine", "run_campaign"]

_SLOT = 0x200000            # regions live in distinct 2 MiB slots
_MAX_REGIONS = 3
_THREADS: list[dict[str, Any]] = [
    {"name": "T0", "kind": "task", "mm": 0}, {"name": "reclaim", "kind": "kthread"},
    {"name": "shrinker", "kind": "kthread"}, {"name": "walker", "kind": "kthread"},
    {"name": "dma", "kind": "device"}]
_CHILD = {"name": "T1", "kind": "task", "mm": 1}


def _single_engine_signature(engine: str, out) -> str:
    c = out.crash
    return f"{engine}|{out.verdict.value}|{c.field if c else '-'}|{c.function if c else '-'}"


def check_pair(program: Program, engine_a: str, engine_b: str,
               known: frozenset[str] = frozenset()) -> Finding | None:
    """The machine's invariant for one program: None when it holds (or the finding is known)."""
    report = differential(program, engine_a, engine_b)
    unexpected = report.unexpected
    for d in unexpected:
        if d.signature_id not in known:
            return Finding(program, (report.a.engine, report.b.engine), d.signature,
                           d.signature_id, d.kind.value, d.classification.value, d.detail)
    if unexpected:
        return None     # a known unexpected divergence: it is what broke the verdict, if any
    # Both engines may fail alike (no divergence): the verdicts are checked on their own.
    for out in (report.a, report.b):
        if out.verdict is not Verdict.OK:
            sig = _single_engine_signature(out.engine, out)
            sid = hashlib.sha1(sig.encode()).hexdigest()[:16]
            if sid not in known:
                return Finding(program, (report.a.engine, report.b.engine), sig, sid,
                               out.verdict.value, "unexpected",
                               f"{out.engine}: {out.crash.message if out.crash else ''}")
    return None


class LazyfreeMachine(RuleBasedStateMachine):
    """Grow a reclaim-shaped program one operation at a time; check the pair after each.

    Configure by subclassing (see :func:`make_machine`): ``engine_a``,
    ``engine_b``, ``known`` (signature ids that are not failures) and
    ``stats`` (a :class:`CampaignStats` to count into, or None).
    """

    engine_a = "v6.14"
    engine_b = "v6.15"
    known: frozenset[str] = frozenset()
    stats: CampaignStats | None = None

    def __init__(self) -> None:
        super().__init__()
        self.threads = [dict(t) for t in _THREADS]
        self.ops: list[dict[str, Any]] = []
        self.schedule: dict[tuple[int, str, int], str] = {}    # place -> thread
        # (mm that may touch it, first address, pages, order)
        self.regions: list[tuple[int, int, int, int]] = []
        self.slots = 0
        self.pins: list[str] = []           # held pins
        self.refs: list[str] = []           # held speculative references
        self.names = 0
        self.forked = False
        self.checked: str | None = None
        if self.stats is not None:
            self.stats.machines += 1

    # -- helpers -----------------------------------------------------------
    def program(self) -> Program:
        return parse_program({"version": 2, "threads": self.threads, "ops": self.ops,
                              "schedule": [{"op": op, "at": at, "nth": nth, "thread": thread}
                                           for (op, at, nth), thread in self.schedule.items()]})

    def fresh(self, prefix: str) -> str:
        self.names += 1
        return f"{prefix}{self.names}"

    def add(self, **op: Any) -> None:
        self.ops.append(op)
        if self.stats is not None:
            self.stats.steps += 1

    def new_region(self, data, order: int) -> tuple[int, int]:
        self.slots += 1
        pages = {9: 512, 4: 16 * data.draw(st.integers(1, 4), label="mthps")}.get(
            order, data.draw(st.integers(1, 8), label="pages"))
        addr = self.slots * _SLOT
        self.regions.append((0, addr, pages, order))
        return addr, pages

    def range_in(self, data, mm: int) -> tuple[int, int]:
        """(address, pages) inside one region visible to ``mm``: whole folios mostly."""
        mine = [r for r in self.regions if r[0] == 0 or r[0] == mm]
        _, addr, pages, order = data.draw(st.sampled_from(mine), label="region")
        folio = 1 << order
        if pages >= folio and data.draw(st.integers(0, 3), label="whole folios"):
            n = pages // folio
            first = data.draw(st.integers(0, n - 1), label="folio")
            count = data.draw(st.integers(1, n - first), label="folios")
            return addr + first * folio * PAGE_SIZE, count * folio
        first = data.draw(st.integers(0, pages - 1), label="page")
        return addr + first * PAGE_SIZE, data.draw(st.integers(1, min(pages - first, 32)), label="n")

    def task(self, data) -> tuple[str, int]:
        if self.forked and data.draw(st.booleans(), label="in child"):
            return "T1", 1
        return "T0", 0

    # -- rules ---------------------------------------------------------------
    @initialize(data=st.data(), order=st.sampled_from([4, 9, 0]))
    def first_region(self, data, order):
        addr, pages = self.new_region(data, order)
        self.add(thread="T0", op="mmap", addr=addr, pages=pages, order=order)

    @precondition(lambda self: self.slots < _MAX_REGIONS)
    @rule(data=st.data(), order=st.sampled_from([4, 9, 0]), droppable=st.booleans())
    def mmap(self, data, order, droppable):
        addr, pages = self.new_region(data, order)
        self.add(thread="T0", op="mmap", addr=addr, pages=pages, order=order,
                 droppable=droppable and data.draw(st.integers(0, 3), label="rarely") == 0)

    @rule(data=st.data(), value=st.integers(1, 255))
    def write(self, data, value):
        thread, mm = self.task(data)
        addr, pages = self.range_in(data, mm)
        self.add(thread=thread, op="write", addr=addr, pages=pages, value=value)

    @rule(data=st.data())
    def read(self, data):
        thread, mm = self.task(data)
        addr, pages = self.range_in(data, mm)
        self.add(thread=thread, op="read", addr=addr, pages=pages)

    @rule(data=st.data(), value=st.integers(1, 255))
    def lazyfree(self, data, value):
        """Write, MADV_FREE and drain one range in one step: the state every scenario
        starts from (a clean lazyfree folio on the LRU), reached without three lucky draws."""
        thread, mm = self.task(data)
        addr, pages = self.range_in(data, mm)
        self.add(thread=thread, op="write", addr=addr, pages=pages, value=value)
        self.add(thread=thread, op="madvise", addr=addr, pages=pages, advice="MADV_FREE")
        self.add(thread=thread, op="lru_add_drain")

    @rule(data=st.data(), advice=st.sampled_from(["MADV_FREE", "MADV_FREE", "MADV_PAGEOUT",
                                                  "MADV_DONTNEED"]))
    def madvise(self, data, advice):
        thread, mm = self.task(data)
        addr, pages = self.range_in(data, mm)
        self.add(thread=thread, op="madvise", addr=addr, pages=pages, advice=advice)

    @precondition(lambda self: len(self.pins) < 3)
    @rule(data=st.data(), fast=st.booleans())
    def pin(self, data, fast):
        thread, mm = self.task(data)
        addr, _ = self.range_in(data, mm)
        name = self.fresh("p")
        self.pins.append(name)
        self.add(thread=thread, op="pin", addr=addr, pages=1, pin=name, write=True, fast=fast)

    @precondition(lambda self: self.pins)
    @rule(data=st.data(), value=st.integers(1, 255))
    def dma_write(self, data, value):
        self.add(thread="dma", op="dma_write", pin=data.draw(st.sampled_from(self.pins)), value=value)

    @precondition(lambda self: self.pins)
    @rule(data=st.data(), dirty=st.booleans(), by_device=st.booleans())
    def unpin(self, data, dirty, by_device):
        name = data.draw(st.sampled_from(self.pins))
        self.pins.remove(name)
        self.add(thread="dma" if by_device else "T0", op="unpin", pin=name, dirty=dirty)

    @rule(nr=st.sampled_from([32, 32, 1, 512]))
    def reclaim(self, nr):
        self.add(thread="reclaim", op="reclaim", nr_to_scan=nr)

    @rule()
    def deferred_split_scan(self):
        self.add(thread="shrinker", op="deferred_split_scan")

    @rule(by=st.sampled_from(["T0", "reclaim"]))
    def lru_add_drain(self, by):
        self.add(thread=by, op="lru_add_drain")

    @precondition(lambda self: len(self.refs) < 2)
    @rule(data=st.data())
    def folio_try_get(self, data):
        _, mm = self.task(data)
        addr, _ = self.range_in(data, mm)
        name = self.fresh("r")
        self.refs.append(name)
        self.add(thread="walker", op="folio_try_get", mm=mm, addr=addr, ref=name)

    @precondition(lambda self: self.refs)
    @rule(data=st.data())
    def folio_put(self, data):
        name = data.draw(st.sampled_from(self.refs))
        self.refs.remove(name)
        self.add(thread="walker", op="folio_put", ref=name)

    @precondition(lambda self: not self.forked)
    @rule()
    def fork(self):
        self.forked = True
        self.threads.append(dict(_CHILD))
        self.add(thread="T0", op="fork", child=1)

    @precondition(lambda self: self.slots < _MAX_REGIONS)
    @rule(data=st.data(), below=st.integers(0, 31))
    def mremap(self, data, below):
        """Move part of a region to a fresh slot, possibly straddling a page-table boundary."""
        addr, pages = self.range_in(data, 0)
        self.slots += 2     # the target straddles into the second slot, which stays free
        new = self.slots * _SLOT - below * PAGE_SIZE
        self.regions.append((0, new, pages, 0))
        self.add(thread="T0", op="mremap", addr=addr, pages=pages, new_addr=new)

    @rule(data=st.data(), nth=st.integers(1, 4))
    def preempt(self, data, nth):
        """Let a thread cut in at a place of an operation so far (shrinking towards the
        latest): a kind of yield point its kernel path reaches, or its end, and one of
        its first occurrences.  A later preemption at the same place replaces it."""
        i = len(self.ops) - 1 - data.draw(st.integers(0, len(self.ops) - 1), label="ops back")
        kinds = YIELD_POINTS.get(self.ops[i]["op"], ()) + (YieldPoint.OP_END,)
        at = data.draw(st.sampled_from(kinds), label="at")
        name = data.draw(st.sampled_from([t["name"] for t in self.threads]), label="thread")
        self.schedule[i, at.value, 1 if at is YieldPoint.OP_END else nth] = name

    # -- the oracles ---------------------------------------------------------
    @invariant()
    def both_engines_agree_or_differ_as_intended(self):
        if not self.ops:
            return
        program = self.program()
        key = program.to_json(None)
        if key == self.checked:
            return
        self.checked = key
        if self.stats is not None:
            self.stats.checks += 1
        finding = check_pair(program, self.engine_a, self.engine_b, self.known)
        if finding is not None:
            raise FindingError(finding)


def make_machine(engine_a: str = "v6.14", engine_b: str = "v6.15", *,
                 known: frozenset[str] | set[str] = frozenset(),
                 stats: CampaignStats | None = None) -> type[LazyfreeMachine]:
    """A :class:`LazyfreeMachine` for one engine pair.

    The class is named after the pair: Hypothesis keys its example database
    by the machine, so each pair keeps its own examples.
    """
    a, b = resolve_engine(engine_a), resolve_engine(engine_b)
    name = f"LazyfreeMachine_{a}_{b}".replace(".", "_")
    return type(name, (LazyfreeMachine,), {"engine_a": a, "engine_b": b,
                                           "known": frozenset(known), "stats": stats})


def _shrunk(finding: Finding, known: frozenset[str], max_runs: int,
            stats: CampaignStats) -> Finding:
    """``finding`` with the smallest program that still fails with its signature."""
    a, b = finding.engines
    last: dict[str, Finding] = {}

    def same(candidate: Program) -> bool:
        g = check_pair(candidate, a, b, known)
        if g is not None and g.signature_id == finding.signature_id:
            last[candidate.to_json(None)] = g
            return True
        return False

    res = minimize(finding.program, same, max_runs=max_runs)
    stats.minimize_runs += res.runs
    return last.get(res.program.to_json(None), finding)


@dataclass
class CampaignStats:
    """What a campaign did: machines (test cases), steps, programs checked, findings."""

    engines: tuple[str, str] = ("", "")
    machines: int = 0
    steps: int = 0
    checks: int = 0
    batches: int = 0
    minimize_runs: int = 0
    seconds: float = 0.0
    findings: list[str] = field(default_factory=list)     # signature ids, in order found

    def to_dict(self) -> dict[str, Any]:
        return {"engines": list(self.engines), "machines": self.machines, "steps": self.steps,
                "checks": self.checks, "batches": self.batches,
                "minimize_runs": self.minimize_runs,
                "seconds": round(self.seconds, 3), "findings": list(self.findings)}


def run_campaign(engine_a: str, engine_b: str, *, seconds: float,
                 database: ExampleDatabase | str | os.PathLike[str],
                 on_finding: Callable[[Finding], None], known: set[str] | frozenset[str] = frozenset(),
                 max_steps: int = 30, batch: int = 20, max_minimize_runs: int = 500) -> CampaignStats:
    """Run the state machine on a pair until ``seconds`` have passed.

    Batches of ``batch`` machines each run through
    :func:`hypothesis.stateful.run_state_machine_as_test`.  A failing
    program is shrunk by :func:`fuzz.minimize.minimize` (at most
    ``max_minimize_runs`` checks), not by Hypothesis: shrinking the steps of
    a machine re-checks every prefix and took minutes, delta debugging the
    program takes about a hundred checks and can also reorder.  Each
    finding is reported through ``on_finding`` once per signature (its id
    then joins ``known``, so later batches look for new ones).  The example
    database (a directory path or any :class:`ExampleDatabase`) keeps
    failing examples across campaigns: the next one replays them first.
    The time limit is checked between batches, so a batch can overrun it.

    Return: the :class:`CampaignStats`.
    """
    db = database if isinstance(database, ExampleDatabase) else DirectoryBasedExampleDatabase(
        os.fspath(database))
    stats = CampaignStats(engines=(resolve_engine(engine_a), resolve_engine(engine_b)))
    known = set(known)
    start = time.monotonic()
    conf = settings(max_examples=batch, stateful_step_count=max_steps, database=db, deadline=None,
                    report_multiple_bugs=False, verbosity=Verbosity.quiet, print_blob=False,
                    suppress_health_check=list(HealthCheck),
                    phases=[Phase.explicit, Phase.reuse, Phase.generate])
    while time.monotonic() - start < seconds:
        machine = make_machine(engine_a, engine_b, known=frozenset(known), stats=stats)
        stats.batches += 1
        try:
            run_state_machine_as_test(machine, settings=conf)
        except FindingError as exc:
            f = exc.finding
            if f.signature_id not in known:
                f = _shrunk(f, frozenset(known), max_minimize_runs, stats)
                known.add(f.signature_id)
                stats.findings.append(f.signature_id)
                on_finding(f)
    stats.seconds = time.monotonic() - start
    return stats
