"""The differential runner: one program, two kernel versions, classified differences.

Both runs are compared field by field (behaviour only, never cost).  Both
are traced (a state snapshot per completed operation), so that when they
differ the traces tell, for every differing field, the first operation
after which the runs disagreed on it;
the earliest of those is where the runs parted, and the divergence is
classified there (see :mod:`engine.diff.rules`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import itertools
import re
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from engine.diff.impact import watch
from engine.diff.rules import Rule, explain
from engine.execution.oracle import Verdict
from engine.execution.outcome import Crash, Fields, Outcome, TraceEntry
from engine.execution.provenance import Cause, DataSource, cause_of
from engine.execution.runner import entry_point, run
from engine.kernels import resolve_engine
from engine.mm.events import Event, place_event
from engine.mm.sched import KERNEL_YIELD_POINTS
from engine.program.format import Program


class Kind(str, enum.Enum):
    """What kind of difference a divergence is."""

    DATA_LOSS = "data_loss"
    CRASH = "crash"
    INVARIANT = "invariant"
    LEAK = "leak"
    HANG = "hang"
    STATE = "state"


class Classification(str, enum.Enum):
    INTENDED = "intended"
    UNEXPECTED = "unexpected"


_KIND_OF_VERDICT = {Verdict.DATA_LOSS: Kind.DATA_LOSS, Verdict.CRASH: Kind.CRASH,
                    Verdict.INVARIANT: Kind.INVARIANT, Verdict.LEAK: Kind.LEAK,
                    Verdict.HANG: Kind.HANG}


@dataclass
class FieldDiff:
    """One field on which the runs disagree, and the first op after which they did."""

    field: str
    a: Any
    b: Any
    first_op: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "a": self.a, "b": self.b, "first_op": self.first_op}


@dataclass
class Divergence:
    kind: Kind
    classification: Classification
    field: str
    function: str | None
    first_op: int | None
    signature: str
    # dataclasses.field: the class's own ``field`` shadows the name here
    rules: list[Rule] = dataclasses.field(default_factory=list)
    fields: list[FieldDiff] = dataclasses.field(default_factory=list)
    detail: str = ""
    #: The kernel decision behind a data loss or a broken invariant (see
    #: :mod:`engine.execution.provenance`); None where none was found.
    cause: Cause | None = None

    @property
    def signature_id(self) -> str:
        return hashlib.sha1(self.signature.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "classification": self.classification.value,
                "field": self.field, "function": self.function, "first_op": self.first_op,
                "signature": self.signature, "signature_id": self.signature_id,
                "rules": [{"name": r.name, "patch": r.patch} for r in self.rules],
                "detail": self.detail, "fields": [f.to_dict() for f in self.fields],
                "cause": self.cause.to_dict() if self.cause is not None else None}


@dataclass
class Report:
    """The result of running one program on two engines."""

    program: Program
    a: Outcome
    b: Outcome
    divergences: list[Divergence]
    #: B was not run: A's run looked up nothing B does differently, so it is B's
    #: run too (:mod:`engine.diff.impact`).
    b_from_a: bool = False

    @property
    def harness(self) -> list[Outcome]:
        """The runs that ended in a defect of foliodiff (Verdict.HARNESS): such a
        report has no divergences, since it says nothing about either kernel."""
        return [o for o in (self.a, self.b) if o.verdict is Verdict.HARNESS]

    @property
    def equal(self) -> bool:
        return not self.divergences and not self.harness

    @property
    def unexpected(self) -> list[Divergence]:
        return [d for d in self.divergences if d.classification is Classification.UNEXPECTED]

    def to_dict(self) -> dict[str, Any]:
        return {"engines": [self.a.engine, self.b.engine], "equal": self.equal,
                "unexpected": bool(self.unexpected),
                "harness": [o.crash.to_dict() for o in self.harness if o.crash is not None],
                "divergences": [d.to_dict() for d in self.divergences],
                "outcomes": [self.a.to_dict(), self.b.to_dict()]}


_HEX = re.compile(r"0x[0-9a-f]+")
_FOLIO = re.compile(r"\bf\d+\b")
_IDX = re.compile(r"\[\d+\]")
_MM = re.compile(r"\bmm\d+")


@functools.lru_cache(maxsize=65536)
def normalize_field(name: str) -> str:
    """A field name without addresses, folio names or indices (mTHP orders stay).
    Cached: a campaign's differing fields are a few thousand names, met again and again."""
    if name.startswith("mthp."):
        return name
    name = _HEX.sub("", name)
    name = _FOLIO.sub("", name).replace("..", ".")
    name = _IDX.sub("", name)
    name = _MM.sub("mm", name)
    return name.replace("[]", "").strip(".")


_PRIORITY = ("verdict", "crash", "counter.", "mthp.", "folio.flags", "folio.", "mm.pte",
             "mm.pmd", "mm.", "result")


def _rank(name: str) -> int:
    norm = normalize_field(name)
    return next((i for i, p in enumerate(_PRIORITY) if norm.startswith(p)), len(_PRIORITY))


def _field_order(d: FieldDiff) -> tuple:
    """Where the runs parted first, then what a triager reads first."""
    return (d.first_op is None, d.first_op or 0, _rank(d.field), d.field)


def _main_field(fields: list[str]) -> str:
    norm = sorted({normalize_field(f) for f in fields})
    for prefix in _PRIORITY:
        for f in norm:
            if f.startswith(prefix):
                return f
    return norm[0] if norm else "-"


def _first_ops(ta: list[TraceEntry], tb: list[TraceEntry], fields: set[str]) -> dict[str, int]:
    """For each field, the first op whose completion left the runs disagreeing on it.

    Of each pair of states only the fields still looked for are flattened
    (:meth:`TraceEntry.values`): a field found stays found, and the states of
    two runs that parted early differ at nearly every op after.
    """
    sb = {e.op: e for e in tb}
    first: dict[str, int] = {}
    wanted = Fields({f for f in fields if not f.startswith("result[")})
    for entry in ta:
        op = entry.op
        other = sb.get(op)
        if other is None:
            continue
        ra, rb = entry.results, other.results
        if ra == rb and entry.same_snapshot(other):
            continue
        st_a, st_b = entry.values(wanted), other.values(wanted)
        found = len(first)
        for f in fields:
            if f in first:
                continue
            if f in wanted.names:
                if st_a.get(f) != st_b.get(f):
                    first[f] = op
            elif (i := int(f[7:-1])) <= op and ra[i] != rb[i]:
                first[f] = op
        if len(first) == len(fields):
            break
        if len(first) > found:
            wanted = Fields(wanted.names - first.keys())
    return first


#: How a divergence's cause is found: :func:`~engine.execution.provenance.cause_of`'s signature.
CauseOf = Callable[[Program, str, Crash], Cause | None]


def differential(program: Program, engine_a: str, engine_b: str, *,
                 causes: CauseOf = cause_of) -> Report:
    """Run ``program`` on two engines and classify every difference.

    Both runs are traced from the start: re-running a pair that differs, to
    learn where it parted, cost more than tracing every pair (a trace is a
    state snapshot per completed operation).  The traces are dropped once read.

    @engine_a runs first, watched (:mod:`engine.diff.impact`): when its run
    looked up nothing that @engine_b does differently, that run is
    @engine_b's too, and @engine_b is not run.
    @causes: finds the kernel decision behind a run's data loss or broken
        invariant, by replaying it (default :func:`cause_of`, in this
        process; a process whose model is instrumented passes one that
        replays elsewhere, see :mod:`fuzz.causes`).
    """
    ea, eb = resolve_engine(engine_a), resolve_engine(engine_b)
    watched = watch(ea, eb)
    touched = watched.start()
    a = run(program, ea, trace=True, kernel_cls=watched.cls)
    if not touched:
        a.trace = None
        return Report(program, a, a.as_engine(eb), [], b_from_a=True)
    b = run(program, eb, trace=True)
    ta, tb = a.trace or [], b.trace or []
    a.trace = b.trace = None
    if a.verdict is Verdict.HARNESS or b.verdict is Verdict.HARNESS:
        return Report(program, a, b, [])
    # the end states compare as snapshots first: flattening two equal ones is wasted
    same = a.same_state(b)
    ca, cb = a.comparable(state=not same), b.comparable(state=not same)
    differing = sorted(f for f in set(ca) | set(cb) if ca.get(f) != cb.get(f))
    if not differing:
        return Report(program, a, b, [])
    first = _first_ops(ta, tb, set(differing))
    diffs = sorted((FieldDiff(f, ca.get(f), cb.get(f), first.get(f)) for f in differing),
                   key=_field_order)
    parted, window = _parting_ops(ta, tb)
    only_a, only_b = _places_one_run_lacks(a, b)
    window |= set(only_a) | set(only_b)
    return Report(program, a, b, [_classify(program, a, b, diffs, parted, window,
                                            (only_a, only_b), causes)])


def rules_shown(program: Program, a: Outcome, b: Outcome) -> list[Rule]:
    """The rules of the pair that recognise their change at some operation, anywhere
    in the runs.

    :func:`differential` classifies a divergence where the runs parted first and
    calls what follows consequences; bisection wants every change an edge of the
    version tree brings that the runs show, the later ones too (a PMD discard
    after an earlier fault-time difference).  So each operation at which the two
    runs noted different events (a place only one run had counts, as in the
    differential) is offered to :func:`explain` on its own; an operation both
    runs went through alike shows no change, whatever a rule's test says of it.

    Return: the rules, each once, in the order of first match.
    """
    only_a, only_b = _places_one_run_lacks(a, b)
    per_op: tuple[dict[int, set[Event]], dict[int, set[Event]]] = ({}, {})
    for side, (o, only) in enumerate(((a, only_a), (b, only_b))):
        for i, name in o.events:
            per_op[side].setdefault(i, set()).add(name)
        for i, names in only.items():
            per_op[side].setdefault(i, set()).update(names)
    found: list[Rule] = []
    for i in sorted(per_op[0].keys() | per_op[1].keys()):
        ev_a, ev_b = frozenset(per_op[0].get(i, ())), frozenset(per_op[1].get(i, ()))
        if ev_a == ev_b or not 0 <= i < len(program.ops):
            continue
        for r in explain(a.engine, b.engine, ev_a, ev_b, program.ops[i].op):
            if r not in found:
                found.append(r)
    return found


def _places_one_run_lacks(a: Outcome, b: Outcome) -> tuple[dict[int, set[Event]], dict[int, set[Event]]]:
    """The places where one run switched to another thread and which the other
    run never reached: a window only one version has (a schedule entry there
    fell at the operation's end in the other, and the op-order policy may
    switch at it too).  The runs interleaved differently from there, so the
    operation joins the window even when the parting shows only later, and the
    run that had the place gets the event ``place:<kind>`` there, which rules
    can read.

    Return: for each run, operation -> those events."""
    only: tuple[dict[int, set[Event]], dict[int, set[Event]]] = ({}, {})
    for side, (mine, other) in enumerate(((a.places, b.places), (b.places, a.places))):
        reached = set(other)
        for here, after in itertools.pairwise(mine):
            op, kind, _ = here
            if (op is not None and kind in KERNEL_YIELD_POINTS and after[0] != op
                    and here not in reached):
                only[side].setdefault(op, set()).add(place_event(kind))
    return only


def _parting_ops(ta: list[TraceEntry], tb: list[TraceEntry]) -> tuple[int | None, set[int]]:
    """Where the runs parted.

    When the runs interleave differently their ops complete in different orders: the
    cause may be an op still in flight when a later one completed, or an op that
    completed early.  So the window holds the earliest differing op in program order,
    the first differing op in each run's completion order, and the ops in flight at
    those snapshots.  Later ops are consequences.

    Return: (the earliest differing op in program order, the ops whose events may
    explain the parting).
    """
    sa = {e.op: e for e in ta}
    sb = {e.op: e for e in tb}
    # Asked op by op, up to the first that differs in each order: comparing two
    # states that differ flattens both, and after the parting nearly all do.
    differ: dict[int, bool] = {}

    def differs(op: int) -> bool:
        d = differ.get(op)
        if d is None:
            d = differ[op] = (op not in sa or op not in sb or sa[op].results != sb[op].results
                              or not sa[op].same_state(sb[op]))
        return d

    first = next((op for op in sorted(sa.keys() | sb.keys()) if differs(op)), None)
    if first is None:
        return None, set()
    window = {first}
    for trace, snap in ((ta, sa), (tb, sb)):
        if first in snap:
            window.update(snap[first].inflight)
        entry = next((e for e in trace if differs(e.op)), None)
        if entry is not None:
            window.add(entry.op)
            window.update(entry.inflight)
    return first, window


def _op_events(o: Outcome, ops: AbstractSet[int | None],
               places: dict[int, set[Event]]) -> frozenset[Event]:
    """The events of @ops in run @o, with the ``place:<kind>`` events of places
    only that run had (:func:`_places_one_run_lacks`)."""
    events = {name for i, name in o.events if i in ops}
    for i, names in places.items():
        if i in ops:
            events |= names
    return frozenset(events)


def _classify(program: Program, a: Outcome, b: Outcome, diffs: list[FieldDiff],
              parted: int | None, window: AbstractSet[int | None],
              places: tuple[dict[int, set[Event]], dict[int, set[Event]]],
              causes: CauseOf) -> Divergence:
    pair = f"{a.engine}..{b.engine}"
    # A run that broke an oracle or crashed: never intended.
    for o, other in ((a, b), (b, a)):
        if o.verdict is Verdict.OK:
            continue
        c = o.crash
        assert c is not None        # a run that is not OK says where it stopped
        if o.verdict != other.verdict or other.crash is None or c.field != other.crash.field:
            return _defect(program, pair, o, diffs, causes)
    if parted is None:
        known = [d.first_op for d in diffs if d.first_op is not None]
        parted = min(known) if known else None
        window = {parted}
    at_parting = [d.field for d in diffs if d.first_op == parted] or [d.field for d in diffs]
    main = _main_field(at_parting)
    op_kind = program.ops[parted].op if parted is not None else None
    function = entry_point(program.ops[parted]) if parted is not None else None
    kinds: set[str] = {program.ops[i].op for i in window if i is not None}
    rules: list[Rule] = []
    for name in sorted(kinds) or [""]:
        for r in explain(a.engine, b.engine, _op_events(a, window, places[0]),
                         _op_events(b, window, places[1]), name):
            if r not in rules:
                rules.append(r)
    cls = Classification.INTENDED if rules else Classification.UNEXPECTED
    sig = f"{pair}|{Kind.STATE.value}|{main}|{function}"
    if rules:
        sig += "|" + ",".join(r.name for r in rules)
    return Divergence(Kind.STATE, cls, main, function, parted, sig, rules=rules, fields=diffs,
                      detail=f"runs parted after op {parted} ({op_kind})" if parted is not None
                      else "runs parted")


def _defect(program: Program, pair: str, o: Outcome, diffs: list[FieldDiff],
            causes: CauseOf) -> Divergence:
    """The divergence of run @o, which ended in a kernel report or an oracle
    violation the other run did not have.

    Grouped by cause, not by where it was noticed: a data loss or a broken
    invariant by the kernel decision behind it (and, for lost data, whether
    a CPU store or a DMA write had put it there), a crash by its stack
    (:mod:`engine.execution.provenance`).  Where the replay finds no cause,
    the kind, the field and the function the oracle noticed it in stand in.
    """
    c = o.crash
    assert c is not None        # a run that is not OK says where it stopped
    kind = _KIND_OF_VERDICT[o.verdict]
    fld = normalize_field(c.field)
    function, detail = c.function, f"{o.engine}: {c.message}"
    cause = causes(program, o.engine, c)
    if cause is not None:
        # One kernel decision, one group, whatever it broke: a PMD put back
        # after a concurrent zap skipped it shows as data that should read
        # zero (after MADV_DONTNEED) and as a mapping where no VMA is (after
        # munmap).  What wrote the lost data stays in: a discard that loses a
        # DMA write and one that loses a CPU store are different bugs.
        function, detail = cause.function, f"{detail}; {cause.describe()}"
        sig = f"{pair}|cause|{cause.decision}"
        if cause.source in (DataSource.CPU_WRITE, DataSource.DMA_WRITE):
            sig += f"|{cause.source.value}"
    else:
        sig = f"{pair}|{kind.value}|{fld}|{c.function}"
        if kind is Kind.CRASH:
            sig += "|" + "<".join(s.split(" ")[0] for s in c.stack[:3])
    return Divergence(kind, Classification.UNEXPECTED, fld, function, c.op_index, sig,
                      fields=diffs, detail=detail, cause=cause)
