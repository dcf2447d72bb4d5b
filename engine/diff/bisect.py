"""Bisection along the version tree: where a behaviour came in, where it went, and which patch.

The versions form a tree (:func:`engine.kernels.version_tree`: mainline plus
the 6.12.y branch).  :func:`bisect` runs a program on every version of the
tree, not only on the path between the two engines a divergence was found
on: the tree has six versions, a run costs milliseconds, and the path alone
cannot say where a behaviour went after the pair (H12's crash, found on
v6.14..v6.15, goes at v6.15 -> v6.16) or where a behaviour a branch dropped
came in (H10's PMD discard, found on v6.12..v6.14, comes in on the mainline
edge v5.18 -> v6.14 and goes on the branch edge v6.14 -> v6.12).  Each edge
says whether it lies on the pair's path.

An edge is reported when the behaviour changes across it:

- a defect (a crash, data loss, broken invariant, leak or hang: :func:`defect_key`)
  that one end has and the other has not: it *came in* or *went*;
- else a difference the differential runner finds between the two ends: the
  edge *changed* the behaviour, intended when a rule explains it.

Against a divergence (the *target*), the edges that carry it are marked: for a
defect, the edges where that defect comes in or goes; for an intended state
divergence, the edges that show one of its rules, which came in when the edge
runs up the ladder (``ORDER``) and went when it runs down it (a branch that
dropped a mainline change); for an unexpected state divergence, the edges
with an unexpected difference on the same field in the same function.

The rules of an edge are those of the ladder's pairs between its ends
(:func:`edge_rules`, read in reverse on a backward edge by
:func:`~engine.diff.rules.explain`), and an edge reports those the runs
show anywhere (:func:`~engine.diff.differential.rules_shown`), with the
child's ``COMMIT`` as the edge's patch identity.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from engine.diff.differential import (
    _KIND_OF_VERDICT,
    Classification,
    Divergence,
    Kind,
    Report,
    differential,
    normalize_field,
    rules_shown,
)
from engine.diff.rules import RULES, Rule, rules_between
from engine.execution.oracle import Verdict
from engine.execution.outcome import Outcome
from engine.execution.provenance import cause_of
from engine.execution.runner import run
from engine.kernels import ORDER, TreeEdge, base_version, plugins, version_tree
from engine.program.format import Program

#: The kinds of divergence that are a defect of one run, present or not at each version.
DEFECT_KINDS = frozenset({Kind.CRASH, Kind.DATA_LOSS, Kind.INVARIANT, Kind.LEAK, Kind.HANG})

#: Characters of a run's message an edge's detail quotes.
DETAIL_MESSAGE_CHARS = 120


class DefectKey(NamedTuple):
    """What makes two defects the same: the verdict's kind, the normalized field and
    the function, as a divergence's signature has them."""

    kind: Kind
    field: str
    function: str | None

    def __str__(self) -> str:
        return f"{self.kind.value} {self.field} in {self.function}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "field": self.field, "function": self.function}


def defect_key(of: Divergence | Outcome, program: Program | None = None) -> DefectKey | None:
    """The defect a divergence is, or the one a run of @program ended in.

    The one definition of "the same defect" bisection uses at each version:
    the kind, the normalized field and the function a signature names, which
    for a data loss or a broken invariant is the kernel decision behind it
    (:mod:`engine.execution.provenance`), found for a run by replaying it
    (so @program is needed then; without it, where the oracle noticed).
    Return: the key, None for a state divergence and for a run that ended
    ``ok`` or in a harness error.
    """
    if isinstance(of, Divergence):
        return DefectKey(of.kind, of.field, of.function) if of.kind in DEFECT_KINDS else None
    kind = _KIND_OF_VERDICT.get(of.verdict)
    c = of.crash
    if kind is None or c is None:
        return None
    function = c.function
    cause = cause_of(program, of.engine, c) if program is not None else None
    if cause is not None:
        function = cause.function
    return DefectKey(kind, normalize_field(c.field), function)


class Change(str, enum.Enum):
    """What an edge of the version tree does to the behaviour."""

    #: A defect absent at the parent is present at the child; or, for an intended
    #: state divergence, the edge brings in its rule.
    CAME_IN = "came_in"
    #: The reverse: present at the parent, gone at the child; or the edge takes the
    #: rule back (a backward edge).
    WENT = "went"
    #: The two ends differ otherwise (a state difference, or one defect for another).
    CHANGED = "changed"
    #: An end's run ended in a harness error: the edge says nothing about the kernels.
    UNKNOWN = "unknown"


@dataclass
class NodeRun:
    """One version of the tree and how the program ended on it."""

    version: str
    parent: str | None
    branch: str
    outcome: Outcome = field(repr=False)
    defect: DefectKey | None
    #: Whether the target defect is present here; None without a defect target.
    present: bool | None

    def to_dict(self) -> dict[str, Any]:
        c = self.outcome.crash
        return {"version": self.version, "parent": self.parent, "branch": self.branch,
                "verdict": self.outcome.verdict.value,
                "defect": self.defect.to_dict() if self.defect else None,
                "op": c.op_index if c is not None else None, "present": self.present}


@dataclass
class EdgeChange:
    """An edge of the version tree across which the behaviour changes."""

    edge: TreeEdge
    change: Change
    #: The edge carries the bisected divergence (see the module docstring).
    target: bool
    #: The edge lies on the tree path between the divergence's two engines.
    on_path: bool
    #: The differential runner's classification of the edge's two runs (None: unknown).
    classification: Classification | None
    #: The edge's rules the runs show, in ``RULES`` order.
    rules: list[Rule]
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"edge": self.edge.name, **self.edge.to_dict(), "change": self.change.value,
                "target": self.target, "on_path": self.on_path,
                "classification": self.classification.value if self.classification else None,
                "rules": [{"name": r.name, "patch": r.patch} for r in self.rules],
                "detail": self.detail}


@dataclass
class Bisection:
    """A program run over the version tree: every edge where its behaviour changes."""

    program: Program
    #: The two engines of the divergence bisected (None: a survey of the program).
    engines: tuple[str, str] | None
    #: The divergence bisected (None: nothing to bisect, every change is reported).
    target: Divergence | None
    nodes: list[NodeRun]
    edges: list[EdgeChange]
    #: The differential of the two engines, when :func:`bisect` ran it.
    pair: Report | None = None

    @property
    def came_in(self) -> list[EdgeChange]:
        """The edges where the target came in."""
        return [e for e in self.edges if e.target and e.change is Change.CAME_IN]

    @property
    def went(self) -> list[EdgeChange]:
        """The edges where the target went."""
        return [e for e in self.edges if e.target and e.change is Change.WENT]

    @property
    def harness(self) -> list[Outcome]:
        """The runs that ended in a harness error (a defect of foliodiff), one per engine."""
        runs = [n.outcome for n in self.nodes] + (self.pair.harness if self.pair else [])
        broken = {o.engine: o for o in reversed(runs) if o.verdict is Verdict.HARNESS}
        return list(reversed(broken.values()))

    def to_dict(self) -> dict[str, Any]:
        t = self.target
        return {"engines": list(self.engines) if self.engines else None,
                "target": None if t is None else {
                    "kind": t.kind.value, "classification": t.classification.value,
                    "field": t.field, "function": t.function, "signature": t.signature,
                    "signature_id": t.signature_id, "rules": [r.name for r in t.rules]},
                "nodes": [n.to_dict() for n in self.nodes],
                "edges": [e.to_dict() for e in self.edges]}


def edge_rules(edge: TreeEdge) -> list[Rule]:
    """Every rule of @edge: those of the ladder's pairs between its two ends.

    For an edge of two adjacent versions of ``ORDER`` that is ``RULES`` for the
    pair as it is; the mainline edge v5.18 -> v6.14 takes the v5.18 -> v6.12 and
    v6.12 -> v6.14 rules (mainline v6.11 brought what 6.12.117 took back), and
    the backward branch edge v6.14 -> v6.12 the v6.12 -> v6.14 rules, which it
    takes back.  The edge into a plugin version (not on the ladder) has the
    plugin's own rules.
    """
    if edge.parent not in ORDER or edge.child not in ORDER:
        return plugins.rules_of(edge.child)
    return rules_between(edge.parent, edge.child)


def bisect(program: Program, engines: tuple[str, str] | None = None, *,
           divergence: Divergence | None = None) -> Bisection:
    """Run @program on every version of the tree and report each edge where its
    behaviour changes.

    @engines: the pair a divergence was found on (any engines: a C twin or
    mutant stands at its base version); their differential gives the target
    unless @divergence is given.  Without either, every change is reported and
    none is a target.
    A divergence between a C twin and its own version shows on no edge (the
    tree's versions are the Python ones): its bisection has no target edge.
    Return: the :class:`Bisection`, edges in the tree's order; deterministic,
    as runs are.  Two runs per edge: 1.8 s for the 46 divergences of the
    corpus.  Raises :class:`engine.UnknownEngineError` for an unknown engine.
    """
    tree = version_tree()
    pair = None
    if engines is not None and divergence is None:
        pair = differential(program, engines[0], engines[1])
        divergence = pair.divergences[0] if pair.divergences else None
    path = {e.name for e, _ in tree.path(base_version(engines[0]), base_version(engines[1]))} \
        if engines is not None else set()
    target_defect = defect_key(divergence) if divergence is not None else None
    outcomes: dict[str, Outcome] = {}
    edges: list[EdgeChange] = []
    for edge in tree.edges:
        report = differential(program, edge.parent, edge.child)
        outcomes.setdefault(edge.parent, report.a)
        outcomes[edge.child] = report.b
        change = _edge_change(program, edge, report, divergence, target_defect, edge.name in path)
        if change is not None:
            edges.append(change)
    nodes = []
    for v in tree.nodes:
        o = outcomes[v] if v in outcomes else run(program, v)
        key = defect_key(o, program)
        nodes.append(NodeRun(v, tree.parents[v], tree.branches[v], o, key,
                             None if target_defect is None else key == target_defect))
    return Bisection(program, engines, divergence, nodes, edges, pair)


def _edge_change(program: Program, edge: TreeEdge, report: Report, target: Divergence | None,
                 target_defect: DefectKey | None, on_path: bool) -> EdgeChange | None:
    """What @edge does to the behaviour, from the differential of its ends (@report)."""
    if report.harness:
        broken = report.harness[0]
        message = broken.crash.message if broken.crash else ""
        return EdgeChange(edge, Change.UNKNOWN, False, on_path, None, [],
                          f"{broken.engine}: harness error, a defect of foliodiff: "
                          f"{message[:DETAIL_MESSAGE_CHARS]}")
    if not report.divergences:
        return None
    d = report.divergences[0]
    at_parent, at_child = defect_key(report.a, program), defect_key(report.b, program)
    defects_differ = at_parent != at_child
    # A defect stops a run: the differential names no rule for it, but the runs
    # may still show the edge's changes (the patch that brought the defect in or
    # took it out).
    rules = _ordered(([] if defects_differ else d.rules) + rules_shown(program, report.a, report.b))
    detail = _defect_detail(report) if defects_differ else \
        f"{d.kind.value}, first {d.field} in {d.function}: {d.detail}"
    if target_defect is not None and defects_differ and target_defect in (at_parent, at_child):
        change = Change.CAME_IN if at_child == target_defect else Change.WENT
        return EdgeChange(edge, change, True, on_path, d.classification, rules, detail)
    if target is not None and target.kind is Kind.STATE:
        if target.classification is Classification.INTENDED:
            wanted = {r.name for r in target.rules}
            if any(r.name in wanted for r in rules):
                change = Change.WENT if edge.backward else Change.CAME_IN
                return EdgeChange(edge, change, True, on_path, d.classification, rules, detail)
        elif (d.kind is Kind.STATE and d.classification is Classification.UNEXPECTED
              and (d.field, d.function) == (target.field, target.function)):
            return EdgeChange(edge, Change.CHANGED, True, on_path, d.classification, rules, detail)
    change = Change.CHANGED
    if defects_differ:
        change = (Change.CAME_IN if at_parent is None else
                  Change.WENT if at_child is None else Change.CHANGED)
    return EdgeChange(edge, change, False, on_path, d.classification, rules, detail)


def _defect_detail(report: Report) -> str:
    """Each end's verdict, and where and why a run that is not ok stopped."""
    parts = []
    for o in (report.a, report.b):
        c = o.crash
        if c is None:
            parts.append(f"{o.engine}: {o.verdict.value}")
        else:
            parts.append(f"{o.engine}: {o.verdict.value} {normalize_field(c.field)} in "
                         f"{c.function} at op {c.op_index}: {c.message[:DETAIL_MESSAGE_CHARS]}")
    return "; ".join(parts)


def _ordered(rules: list[Rule]) -> list[Rule]:
    """@rules without repeats, in ``RULES`` order (a report reads the same every time);
    a rule that is not in ``RULES`` after those, in the order given."""
    unique = list({id(r): r for r in rules}.values())
    known = {id(r) for r in RULES}
    return ([r for r in RULES if any(r is u for u in unique)]
            + [r for r in unique if id(r) not in known])
