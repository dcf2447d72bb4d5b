"""Delta debugging of programs: the smallest program that is still interesting.

:func:`minimize` runs five passes until none of them makes progress:

1. **threads**: remove a whole thread with its operations;
2. **hoist**: replace an operation by a later one, moved into its place
   (deletion cannot reorder, and a smaller program sometimes needs it);
3. **ops**: Zeller's ddmin (Zeller and Hildebrandt, TSE 2002) over operations;
4. **schedule**: ddmin over the schedule's preemptions;
5. **simplify**: one field of one operation at a time towards a simpler
   value (fewer pages, value 1, the smallest ``nr_to_scan``, no ``dirty``,
   small folios, not droppable or locked, mm 0).

A candidate the program format rejects (:class:`engine.ProgramError`:
an unpin whose pin was removed, an access outside every mapping) is
uninteresting, never an error.  Every candidate is asked about once (results
are cached by its JSON), so the minimization is deterministic and its cost is
the number of distinct candidates asked.

A preemption names a place of an operation (:class:`engine.Preemption`),
not a global step: a candidate's schedule is the current one renumbered for
the operations it keeps, in their new order (:func:`engine.renumber_schedule`);
the entries of a removed operation or naming a removed thread go with it.
A race the schedule set up so survives the removal of any operation it
does not need, without an engine run to re-record the interleaving.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine import (
    Preemption,
    Program,
    ProgramError,
    Report,
    differential,
    parse_program,
    renumber_schedule,
)
from fuzz.errors import NotInterestingError

__all__ = ["MinimizeResult", "Pass", "Reduction", "ddmin", "minimize", "minimize_divergence"]

Interesting = Callable[[Program], bool]


class Pass(str, enum.Enum):
    """The reduction passes, in the order each round runs them."""

    THREADS = "threads"
    HOIST = "hoist"
    OPS = "ops"
    SCHEDULE = "schedule"
    SIMPLIFY = "simplify"


@dataclass(frozen=True)
class Reduction:
    """One accepted step: which pass, and what it removed or simplified."""

    pass_: Pass
    what: str


@dataclass
class MinimizeResult:
    """The smallest interesting program found, and what it cost.

    @runs: calls of ``interesting`` (distinct valid candidates, the input included).
    @invalid: candidates the program format refused (never asked).
    @exhausted: ``max_runs`` stopped the search before a fixpoint.
    @report: the differential report of ``program`` (:func:`minimize_divergence`
        only; None from :func:`minimize`, whose predicate is the caller's).
    """

    program: Program
    runs: int
    reductions: list[Reduction] = field(default_factory=list)
    invalid: int = 0
    exhausted: bool = False
    report: Report | None = None

    def removed(self, pass_: Pass) -> list[str]:
        return [r.what for r in self.reductions if r.pass_ is pass_]


class _Budget(Exception):
    """max_runs reached: unwinds out of whichever pass is running."""


def ddmin(items: Sequence[Any], test: Callable[[list[Any]], bool]) -> list[Any]:
    """Zeller's ddmin: a 1-minimal sublist of ``items`` for which ``test`` holds.

    ``test(items)`` is assumed to hold.  Tries each of n chunks, then each
    complement; on success restarts from the smaller list (n = 2 for a
    chunk, n - 1 for a complement), else doubles n up to ``len(items)``.
    The empty list is tried first, since a pass may remove everything.
    """
    items = list(items)
    if items and test([]):
        return []
    n = 2
    while len(items) >= 2:
        size = len(items) / n
        chunks = [items[round(i * size):round((i + 1) * size)] for i in range(n)]
        chunks = [c for c in chunks if c]
        for c in chunks:
            if len(c) < len(items) and test(c):
                items, n = c, 2
                break
        else:
            for i in range(len(chunks)):
                rest = [x for j, c in enumerate(chunks) if j != i for x in c]
                # with two chunks the complements are the chunks, tried already
                if len(chunks) > 2 and test(rest):
                    items, n = rest, max(n - 1, 2)
                    break
            else:
                if n >= len(items):
                    break
                n = min(2 * n, len(items))
    return items


def _describe(e: Preemption) -> str:
    """A preemption as a reduction note: ``S at ops[3] between_ptes #1``."""
    where = "start" if e.op is None else f"ops[{e.op}] {e.at.value} #{e.nth}"
    return f"{e.thread} at {where}"


def _simpler(op: dict[str, Any]) -> list[tuple[str, Any]]:
    """(field, simpler value) candidates for one op, simplest first per field."""
    out: list[tuple[str, Any]] = []
    kind = op["op"]
    if "pages" in op and op["pages"] > 1:
        out += [("pages", 1)] + ([("pages", op["pages"] // 2)] if op["pages"] > 2 else [])
    if "value" in op and op["value"] > 1:
        out.append(("value", 1))
    if "nr_to_scan" in op and op["nr_to_scan"] > 1:
        n = op["nr_to_scan"]
        out += [("nr_to_scan", v) for v in (1, n // 2) if 0 < v < n]
    for flag in ("dirty", "droppable", "locked"):
        if op.get(flag):
            out.append((flag, False))
    if kind == "pin" and not op.get("fast", True):
        out.append(("fast", True))
    if kind == "mmap" and op.get("order", 0):
        out += [("order", o) for o in (0, 4) if o < op["order"]]
    if kind == "folio_try_get" and op.get("mm", 0):
        out.append(("mm", 0))
    if kind == "madvise" and op["advice"] != "MADV_FREE":
        out.append(("advice", "MADV_FREE"))
    return out


class _Minimizer:
    def __init__(self, interesting: Interesting, max_runs: int) -> None:
        self.interesting = interesting
        self.max_runs = max_runs
        self.cache: dict[str, bool] = {}
        self.result: MinimizeResult | None = None
        self.runs = 0
        self.invalid = 0

    # -- candidates ------------------------------------------------------------
    def build(self, data: dict[str, Any]) -> Program | None:
        try:
            return parse_program(data)
        except ProgramError:
            self.invalid += 1
            return None

    def ask(self, program: Program | None) -> bool:
        if program is None:
            return False
        key = program.to_json(None)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        if self.runs >= self.max_runs:
            raise _Budget
        self.runs += 1
        verdict = self.cache[key] = bool(self.interesting(program))
        return verdict

    def rebuild(self, current: Program, order: list[int],
                drop_threads: frozenset[str] = frozenset()) -> Program | None:
        """``current`` with operations ``order`` (old indices, in their new order),
        without threads ``drop_threads``; the schedule's places follow the operations."""
        data = current.to_dict()
        ops = data["ops"]
        data["ops"] = [ops[i] for i in order]
        data["threads"] = [t for t in data["threads"] if t["name"] not in drop_threads]
        new_index = {old: new for new, old in enumerate(order)}
        data["schedule"] = renumber_schedule(
            [e for e in data["schedule"] if e["thread"] not in drop_threads], new_index.get)
        return self.build(data)

    # -- passes ----------------------------------------------------------------
    def pass_threads(self, current: Program) -> Program:
        for t in list(current.threads):
            if len(current.threads) == 1:
                break
            keep = [i for i, op in enumerate(current.ops) if op.thread != t.name]
            candidate = self.rebuild(current, keep, frozenset({t.name}))
            if self.ask(candidate):
                n = len(current.ops) - len(keep)
                self.note(Pass.THREADS, f"thread {t.name} and its {n} ops")
                current = candidate  # type: ignore[assignment]
        return current

    def pass_ops(self, current: Program) -> Program:
        base = current
        keep = ddmin(range(len(base.ops)), lambda sub: self.ask(self.rebuild(base, sorted(sub))))
        if len(keep) == len(base.ops):
            return current
        dropped = [i for i in range(len(base.ops)) if i not in set(keep)]
        self.note(Pass.OPS, "ops " + ", ".join(f"{i} ({base.ops[i].op})" for i in dropped))
        return self.rebuild(base, sorted(keep))  # type: ignore[return-value]

    def pass_hoist(self, current: Program) -> Program:
        """Replace an operation by a later one of any thread (one op fewer).

        Deletion alone cannot reorder: a pin that populates a page can stand in
        for the write before it only if it moves there, and an early
        MADV_PAGEOUT can stand in for an LRU drain and a reclaim.  With the
        later op moved right after, this is plain deletion of op ``k``.
        """
        k = 0
        while k < len(current.ops):
            n = len(current.ops)
            for m in range(k + 1, n):
                order = list(range(k)) + [m] + [i for i in range(k + 1, n) if i != m]
                candidate = self.rebuild(current, order)
                if self.ask(candidate):
                    what = (f"op {k} ({current.ops[k].op})" if m == k + 1 else
                            f"op {k} ({current.ops[k].op}) by op {m} ({current.ops[m].op})")
                    self.note(Pass.HOIST, what)
                    current = candidate  # type: ignore[assignment]
                    break
            else:
                k += 1
        return current

    def pass_schedule(self, current: Program) -> Program:
        if not current.schedule:
            return current
        base = current

        def with_entries(sub: list[int]) -> Program | None:
            data = base.to_dict()
            data["schedule"] = [data["schedule"][i] for i in sorted(sub)]
            return self.build(data)

        keep = ddmin(range(len(base.schedule)), lambda sub: self.ask(with_entries(sub)))
        if len(keep) == len(base.schedule):
            return current
        dropped = [base.schedule[i] for i in range(len(base.schedule)) if i not in set(keep)]
        self.note(Pass.SCHEDULE, "preemptions " + ", ".join(map(_describe, dropped)))
        return with_entries(keep)  # type: ignore[return-value]

    def pass_simplify(self, current: Program) -> Program:
        for i in range(len(current.ops)):
            done: set[str] = set()
            for fld, value in _simpler(current.ops[i].model_dump(mode="json")):
                if fld in done:
                    continue    # simplest first: the rest are for the next round
                data = current.to_dict()
                old = data["ops"][i].get(fld)
                data["ops"][i][fld] = value
                candidate = self.build(data)
                if self.ask(candidate):
                    self.note(Pass.SIMPLIFY, f"op {i} ({current.ops[i].op}): {fld} {old!r} -> {value!r}")
                    current = candidate  # type: ignore[assignment]
                    done.add(fld)
        return current

    def note(self, pass_: Pass, what: str) -> None:
        self.result.reductions.append(Reduction(pass_, what))  # type: ignore[union-attr]

    def run(self, program: Program) -> MinimizeResult:
        self.result = MinimizeResult(program, 0)
        current = program
        try:
            if not self.ask(program):
                raise NotInterestingError("interesting() is false for it")
            while True:
                before = current.to_json(None)
                for p in (self.pass_threads, self.pass_hoist, self.pass_ops, self.pass_schedule,
                          self.pass_simplify):
                    current = p(current)
                    self.result.program = current
                if current.to_json(None) == before:
                    break
        except _Budget:
            self.result.exhausted = True
        self.result.runs = self.runs
        self.result.invalid = self.invalid
        return self.result


def minimize(program: Program, interesting: Interesting, *,
             max_runs: int = 2000) -> MinimizeResult:
    """Delta-debug ``program`` down to a smaller one for which ``interesting`` holds.

    @interesting: deterministic predicate; called once per distinct valid candidate.
    @max_runs: at most this many calls of ``interesting``; when reached, the
        smallest interesting program so far is returned with ``exhausted`` set.
    Return: a :class:`MinimizeResult`.  Raises :class:`NotInterestingError`
    when ``program`` itself is not interesting.
    """
    return _Minimizer(interesting, max_runs).run(program)


def divergence_signatures(program: Program, engine_a: str, engine_b: str) -> set[str]:
    return {d.signature_id for d in differential(program, engine_a, engine_b).divergences}


def minimize_divergence(program: Program, engine_a: str, engine_b: str, signature_id: str,
                        *, until: float | None = None, **kw: Any) -> MinimizeResult:
    """Minimize ``program`` keeping a divergence with ``signature_id`` between the engines.

    @until: a ``time.monotonic()`` instant after which every candidate counts
        as uninteresting, so delta debugging ends at once with the smallest
        program found so far (a campaign's time budget; the result then
        depends on timing, the stored program does not).
    Other keyword arguments go to :func:`minimize`.
    Return: the :class:`MinimizeResult`, with the ``report`` of its program:
    the minimized program's own outcomes, which the store keeps beside the
    original's.
    """
    # The report of the last interesting candidate: the result's program
    # unless the budget ended the search on another (then it is run again).
    last: dict[str, Report] = {}

    def interesting(candidate: Program) -> bool:
        if until is not None and time.monotonic() >= until:
            return False
        report = differential(candidate, engine_a, engine_b)
        if signature_id not in {d.signature_id for d in report.divergences}:
            return False
        last.clear()
        last[candidate.to_json(None)] = report
        return True

    try:
        res = minimize(program, interesting, **kw)
    except NotInterestingError:
        raise NotInterestingError(f"no divergence with signature {signature_id} between "
                                  f"{engine_a} and {engine_b}") from None
    res.report = (last.get(res.program.to_json(None))
                  or differential(res.program, engine_a, engine_b))
    return res
