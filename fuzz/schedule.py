"""Schedule search: other interleavings of a program's fixed set of operations.

The explorers drive :class:`engine.Runner` through its chooser hook,
which decides step by step, and return programs whose ``schedule`` replays
the explored run exactly through plain :func:`engine.run`: the places
(operation, kind of yield point, occurrence) at which the run left the
op-order policy, and the thread it ran there
(:attr:`engine.Runner.schedule_taken`).  A place means the same point
of an operation on every engine, so on another engine the program preempts
where that engine reaches those places (or, for a window its version does
not have, where the operation ends):

- :func:`random_schedule`: a uniformly random runnable thread at every step
  (shuttle's and Coyote's ``random``).
- :func:`pct_schedule`: Burckhardt et al.'s probabilistic concurrency testing.
- :func:`delay_schedule`: Emmi, Qadeer and Rakamarić's delay-bounded
  scheduling, randomised: the op-order policy with a few steps where it is
  overruled.
- :class:`Exhaustive`: CHESS-style iterative preemption bounding, a resumable
  depth-first enumeration of every schedule with at most ``preemption_bound``
  preemptions.

The operations stay as they are; a program's own schedule is ignored (each
explorer starts from the op-order policy).  Nothing here reads a clock or the
global RNG: a run is a function of (program, engine, seed or state).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine import ChooserError, Outcome, Program, Runner
from fuzz.errors import ExhaustiveStateError

__all__ = ["Exhaustive", "delay_schedule", "pct_schedule", "random_schedule"]


def _unscheduled(program: Program) -> Program:
    return program.model_copy(update={"schedule": []}) if program.schedule else program


def _explored(program: Program, runner: Runner) -> Program:
    """``program`` with the places at which ``runner``'s run (done) left the op-order policy."""
    return program.model_copy(update={"schedule": list(runner.schedule_taken or [])})


def random_schedule(program: Program, engine: str, rng: random.Random) -> Program:
    """Run ``program`` choosing a uniformly random runnable thread at every step.

    @rng: the only source of randomness; the same seed gives the same schedule.
    Return: ``program`` with the schedule (places) that replays that run.
    """
    base = _unscheduled(program)
    runner = Runner(base, engine, chooser=lambda step, names, default: rng.choice(names))
    runner.run()
    return _explored(base, runner)


def decision_count(program: Program, engine: str) -> tuple[int, int]:
    """(scheduling steps, steps with more than one runnable thread) of the default run."""
    base = _unscheduled(program)
    decisions = 0

    def count(step: int, names: list[str], default: str) -> str:
        nonlocal decisions
        decisions += 1
        return default

    runner = Runner(base, engine, chooser=count)
    out = runner.run()
    return out.steps, decisions


def _base_and_steps(program: Program, engine: str, max_steps: int | None) -> tuple[Program, int]:
    """``program`` without its schedule, and k: ``max_steps`` or its default run's steps."""
    base = _unscheduled(program)
    return base, max_steps if max_steps is not None else decision_count(base, engine)[0]


def pct_schedule(program: Program, engine: str, depth: int, rng: random.Random,
                 max_steps: int | None = None) -> Program:
    """One run under PCT (Burckhardt, Kothari, Musuvathi, Nagarakatte, ASPLOS 2010).

    The n threads get distinct random priorities ``depth .. depth+n-1``;
    ``depth - 1`` priority change points are drawn uniformly, without
    repetition, among steps ``1 .. k-1``.  At every step the highest-priority
    runnable thread runs; at the i-th change point the thread that ran the
    step before drops to priority ``depth - i``, below every initial priority.

    Guarantee: for n threads and k steps, each run finds any bug of depth
    ``depth`` (one that needs ``depth`` ordering constraints between steps
    to show) with probability at least ``1 / (n * k**(depth-1))``; so
    ``n * k**(depth-1) * ln(1/eps)`` independent runs miss it with
    probability at most eps.  Depth 1 is a random priority order, no change.

    @depth: the bug depth d >= 1 the run is tuned for.
    @rng: the only source of randomness (priorities and change points).
    @max_steps: k; by default the step count of the program's default run
        (an estimate: other schedules may take a few steps more or fewer).
    Return: ``program`` with the schedule (places) that replays the run.
    Raises ValueError for ``depth < 1``.
    """
    if depth < 1:
        raise ValueError(f"depth: a bug depth is at least 1 (got {depth!r})")
    base, k = _base_and_steps(program, engine, max_steps)
    names = [t.name for t in base.threads]
    shuffled = rng.sample(names, len(names))
    priority = {name: depth + i for i, name in enumerate(shuffled)}
    points = sorted(rng.sample(range(1, k), min(depth - 1, max(0, k - 1))))
    # change point step -> the low priority it hands out
    change = {step: depth - 1 - i for i, step in enumerate(points)}
    pending = list(points)
    runner: Runner

    def choose(step: int, runnable: list[str], default: str) -> str:
        # Change points passed since the last decision (some fall on steps where
        # one thread could run and no chooser was asked): apply them in order to
        # the thread that ran the step before each.
        ran = runner.ran
        while pending and pending[0] <= step:
            at = pending.pop(0)
            priority[ran[at - 1][0]] = change[at]  # type: ignore[index]
        return max(runnable, key=priority.__getitem__)

    runner = Runner(base, engine, chooser=choose)
    runner.run()
    return _explored(base, runner)


def delay_schedule(program: Program, engine: str, delays: int, rng: random.Random,
                   max_steps: int | None = None) -> Program:
    """One run of the op-order policy with ``delays`` delays (delay-bounded scheduling).

    Emmi, Qadeer and Rakamarić (POPL 2011) bound the times a deterministic
    scheduler is overruled rather than the preemptions.  Here the
    deterministic scheduler is the op-order policy (the thread whose
    operation comes first in ``ops`` runs, so a thread finishes the kernel
    path it is in before a later operation starts), and a delay at step s
    runs another runnable thread, drawn uniformly, for that one step; the
    policy then resumes, which usually hands the CPU straight back.  Delay
    points are ``delays`` distinct steps drawn uniformly among ``0 .. k-1``.

    This is the schedule a reclaim race needs: a path that runs in program
    order except for one other thread's step at one point inside it (the
    shrinker taking its reference between two PTEs of a batch).  PCT starts
    from random priorities instead, which reorder whole operations as often
    as not, and needs two adjacent change points to give one step away.

    Guarantee: a bug shown by overruling the policy at d given steps, each
    time in favour of a given thread, is found by each run with ``delays=d``
    with probability at least ``1 / (C(k, d) * (n-1)**d)`` for n threads and
    k steps (``k / (n-1)`` runs for one delay).

    @delays: d >= 0; 0 is the default run.
    @rng: the only source of randomness (delay points and the threads run).
    @max_steps: k; by default the step count of the program's default run.
    Return: ``program`` with the schedule (places) that replays the run.
    Raises ValueError for ``delays < 0``.
    """
    if delays < 0:
        raise ValueError(f"delays: a delay bound is at least 0 (got {delays!r})")
    base, k = _base_and_steps(program, engine, max_steps)
    points = set(rng.sample(range(k), min(delays, k)))

    def choose(step: int, runnable: list[str], default: str) -> str:
        if step not in points:
            return default
        return rng.choice([n for n in runnable if n != default])

    runner = Runner(base, engine, chooser=choose)
    runner.run()
    return _explored(base, runner)


class Cost(enum.IntEnum):
    """What a scheduling choice costs against the preemption bound."""

    FREE = 0
    PREEMPTION = 1


@dataclass
class _Choice:
    """One scheduling decision of the current run: the options in exploration order."""

    step: int
    options: list[str]
    costs: list[int]
    index: int

    def to_json(self) -> list[Any]:
        return [self.step, self.options, self.costs, self.index]

    @classmethod
    def from_json(cls, data: list[Any]) -> _Choice:
        step, options, costs, index = data
        return cls(int(step), [str(o) for o in options], [int(c) for c in costs], int(index))


#: 2: program format 2 (place schedules, devices that wait for their pin and
#: DMA), whose runs take other steps than the choices a version-1 state recorded.
STATE_VERSION = 2


class Exhaustive:
    """Every schedule of ``program`` with at most ``preemption_bound`` preemptions.

    CHESS (Musuvathi and Qadeer, PLDI 2007) iterative context bounding over
    the program's fixed operations: first every schedule with no
    preemption, then every one with exactly 1, ..., up to the bound; each
    level is a depth-first search that re-executes the program along a
    prefix of choices and continues with free choices after it.

    A choice is free when it runs the thread the op-order policy picks (the
    program's own order of operations: a thread that finished an operation
    yields to the next operation in ``ops`` like a task returning from a
    system call), or lets the thread that ran the previous step continue the
    operation it is in the middle of.  Any other choice switches away from a
    thread that could still run, and is a preemption.  So bound 0 holds the
    default run (and the rare run where a thread that was overtaken finishes
    its operation first); bound 1 holds every point where one other thread
    cuts in, and for how many of its segments.

    Iterate to get programs (each with the schedule of places that replays
    its run; two runs part at a first differing choice, made at the same
    place, so distinct choices give distinct schedules and none is yielded
    twice).  The state records choices by thread name and step, not places:
    a resumed search re-runs its prefix to stand where it stood.
    :meth:`state` after any yield is JSON-serialisable, and
    :meth:`from_state` continues right after the last program yielded.
    Bookkeeping: :attr:`runs` executions so far (schedules with fewer
    preemptions than the current level are re-run to find their
    continuations, so runs exceed yields), :attr:`yielded`, and
    :attr:`outcome`, the outcome of the run of the program last yielded.
    """

    def __init__(self, program: Program, engine: str, preemption_bound: int = 2) -> None:
        if preemption_bound < 0:
            raise ValueError(f"preemption_bound: must be >= 0 (got {preemption_bound!r})")
        self.program = _unscheduled(program)
        self.engine = engine
        self.preemption_bound = preemption_bound
        self.level = 0
        self.path: list[_Choice] | None = None     # the last run's decisions; None: level starts
        self.done = False
        self.runs = 0
        self.yielded = 0
        self.outcome: Outcome | None = None        # of the last run (the program last yielded)

    # -- resumption --------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Where the enumeration stands (JSON-serialisable)."""
        return {"version": STATE_VERSION, "engine": self.engine,
                "preemption_bound": self.preemption_bound, "level": self.level,
                "path": None if self.path is None else [c.to_json() for c in self.path],
                "done": self.done, "runs": self.runs, "yielded": self.yielded}

    @classmethod
    def from_state(cls, program: Program, engine: str, state: dict[str, Any]) -> Exhaustive:
        """Continue an enumeration of ``program`` on ``engine`` from :meth:`state`.

        Raises :class:`ExhaustiveStateError` for a state of another version of
        this format or another engine.
        """
        if state.get("version") != STATE_VERSION:
            raise ExhaustiveStateError("version", state.get("version"),
                                       f"unsupported state version (expected {STATE_VERSION})")
        ex = cls(program, engine, int(state["preemption_bound"]))
        if state.get("engine") not in (engine, ex.engine):
            raise ExhaustiveStateError("engine", state.get("engine"),
                                       f"saved for another engine than {engine}")
        ex.level = int(state["level"])
        ex.path = None if state["path"] is None else [_Choice.from_json(c) for c in state["path"]]
        ex.done = bool(state["done"])
        ex.runs = int(state["runs"])
        ex.yielded = int(state["yielded"])
        return ex

    # -- the search --------------------------------------------------------
    def _next_prefix(self) -> list[str] | None:
        """Choices of the next run at this level: the deepest untried option within budget."""
        if self.path is None:
            return []
        spent = [0]
        for c in self.path:
            spent.append(spent[-1] + c.costs[c.index])
        for j in range(len(self.path) - 1, -1, -1):
            c = self.path[j]
            for k in range(c.index + 1, len(c.options)):
                if spent[j] + c.costs[k] <= self.level:
                    return [x.options[x.index] for x in self.path[:j]] + [c.options[k]]
        return None

    def _run(self, prefix: list[str]) -> tuple[Program, int]:
        """Run along ``prefix``, then free choices; return (program, preemptions)."""
        path: list[_Choice] = []
        runner: Runner

        def choose(step: int, runnable: list[str], default: str) -> str:
            ran = runner.ran
            prev = ran[-1][0] if ran else None
            # mid-operation: stopped at a yield point inside a kernel path
            cont = prev if prev in runnable and threads[prev].gen is not None else None
            options = [default] + ([cont] if cont is not None and cont != default else [])
            options += [n for n in runnable if n not in options]
            costs = [Cost.FREE] * (2 if cont not in (None, default) else 1)
            costs += [Cost.PREEMPTION] * (len(options) - len(costs))
            i = len(path)
            if i < len(prefix):
                if prefix[i] not in options:
                    raise ExhaustiveStateError(f"path[{i}]", prefix[i],
                                               f"not runnable at step {step} on replay "
                                               f"(runnable: {', '.join(runnable)})")
                index = options.index(prefix[i])
            else:
                index = 0
            path.append(_Choice(step, options, [int(c) for c in costs], index))
            return options[index]

        runner = Runner(self.program, self.engine, chooser=choose)
        threads = {t.name: t for t in runner.threads}
        try:
            self.outcome = runner.run()
        except ChooserError as err:
            if isinstance(err.__cause__, ExhaustiveStateError):
                raise err.__cause__ from None
            raise
        self.runs += 1
        self.path = path
        return _explored(self.program, runner), sum(c.costs[c.index] for c in path)

    def __iter__(self) -> Iterator[Program]:
        while not self.done:
            prefix = self._next_prefix()
            if prefix is None:
                self.level += 1
                self.path = None
                if self.level > self.preemption_bound:
                    self.done = True
                continue
            program, cost = self._run(prefix)
            if cost == self.level:
                self.yielded += 1
                yield program
