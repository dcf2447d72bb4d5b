"""The versions as a tree: mainline plus branches, each version with its parent.

:data:`engine.kernels.ORDER` is a ladder by version number, which is what
campaigns and the rules of adjacent pairs use.  The history is not one line:
Debian's 6.12.117 (the v6.12 engine) is a 6.12.y stable release, which
branched from mainline and later dropped a v6.11 change, so a behaviour can
come in on mainline and go on a branch.  Bisection (:mod:`engine.diff.bisect`)
walks this tree instead of the ladder.

Each version class declares, in its own class body:

- ``PARENT``: the engine id of the version it descends from, None for the
  root (v5.17).  Declared, not inherited: a version class subclasses the one
  whose code it changes (v5.17 subclasses v5.18), which is not always the one
  it descends from, and a plugin engine that forgot to say where it stands
  must not silently become its base's sibling.
- ``BRANCH``: the line it is on, :data:`MAINLINE` or a branch name such as
  ``"6.12.y"`` (``MAINLINE`` is in engine/kernels/base.py); inherited (a release
  of a branch is on that branch).

Engines that answer as another version (:data:`engine.kernels.BASES`: the C
twins, the mutants) are no nodes.

The tree::

    v5.17 -> v5.18 -> v6.14 -> v6.15 -> v6.16 -> v6.19 -> v7.0 -> v7.2   (mainline)
                      v6.14 -> v6.12                                    (6.12.y)
                                                v6.19 -> v6.19.y        (6.19.y)
                                                                v7.2 -> v7.3   (7.3.y)

v6.12's parent is v6.14, not a mainline v6.12: the model has no mainline-6.12
engine, and on everything it models mainline v6.11-v6.14 behave as the v6.14
engine does (engine/kernels/v6_14.py; docs/kernel-notes.md sections 1 and 21).
6.12.117 is that code with two 6.12.y stable changes (engine/kernels/v6_12.py),
so the branch edge v6.14 -> v6.12 carries exactly those two changes and the
mainline edge v5.18 -> v6.14 everything v6.8-v6.14 brought.

After v6.16 (docs/kernel-notes.md sections 22 and 23): v6.17 and v6.18
changed nothing the model observes, so no engine stands for them; v6.19
retries the deferred split scan; v7.0 batches lazyfree PTEs respecting the
write bit (29f40594a281), which 6.19.y backported (v6.19.y, Debian's 6.19.14:
the branch edge v6.19 -> v6.19.y carries that one change, and v6.19.y is v7.0
on everything modelled); v7.2 walks the list_lru split queue once (the change came in
7.1 or 7.2).  v7.3 is Debian's 7.3.4, a 7.3.y release: mainline v7.3 is the
v7.2 engine on everything modelled, and the branch edge v7.2 -> v7.3 carries the
7.3.2 stable commit that also made 6.12.117 (no PMD-level discard), written
once for both (engine/kernels/pmd_split_only.py).  It runs forward: v7.3
stands after v7.2 on ``ORDER``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import VersionTreeError
from engine.kernels.base import Kernel


@dataclass(frozen=True)
class TreeEdge:
    """One edge of the version tree: ``parent`` -> ``child``, on ``child``'s branch.

    ``commit``: the child's ``COMMIT`` (what the edge applies).  ``backward``:
    the child stands before the parent in ``ORDER``, so the edge takes back
    the changes of the ladder's pairs between them (the 6.12.y branch edge).
    """

    parent: str
    child: str
    branch: str
    commit: str
    backward: bool

    @property
    def name(self) -> str:
        return f"{self.parent}->{self.child}"

    def to_dict(self) -> dict[str, Any]:
        return {"parent": self.parent, "child": self.child, "branch": self.branch,
                "commit": self.commit, "backward": self.backward}


@dataclass(frozen=True)
class VersionTree:
    """The version tree: nodes in depth-first order from the root, each child
    on its parent's branch before the others; edges in the same order."""

    root: str
    nodes: tuple[str, ...]
    parents: Mapping[str, str | None]
    branches: Mapping[str, str]
    edges: tuple[TreeEdge, ...]

    def edge_to(self, child: str) -> TreeEdge:
        """The edge into version @child (the root has none: KeyError)."""
        for e in self.edges:
            if e.child == child:
                return e
        raise KeyError(f"no edge of the version tree leads to {child!r}")

    def ancestors(self, node: str) -> list[str]:
        """@node and its ancestors, up to the root."""
        self._check(node)
        out = [node]
        while (up := self.parents[out[-1]]) is not None:
            out.append(up)
        return out

    def path(self, a: str, b: str) -> list[tuple[TreeEdge, bool]]:
        """The edges from version @a to version @b, in walking order.

        Return: (edge, forward) pairs; forward when the walk goes from the
        edge's parent to its child.  Empty for ``a == b``.  Raises
        :class:`VersionTreeError` for a version that is no node (a C twin: ask
        for its ``base_version``).
        """
        up_a, up_b = self.ancestors(a), self.ancestors(b)
        common = next(n for n in up_a if n in up_b)
        rising = [(self.edge_to(n), False) for n in up_a[:up_a.index(common)]]
        falling = [(self.edge_to(n), True) for n in reversed(up_b[:up_b.index(common)])]
        return rising + falling

    def _check(self, node: str) -> None:
        if node not in self.parents:
            raise VersionTreeError("the version tree", "node", node,
                                   f"not one of its versions ({', '.join(self.nodes)}; a C twin "
                                   f"or mutant answers as its base_version)")

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "nodes": list(self.nodes),
                "edges": [e.to_dict() for e in self.edges]}


def build_tree(kernels: Mapping[str, type[Kernel]], bases: Mapping[str, str],
               order: list[str]) -> VersionTree:
    """The tree of the engines in @kernels that are versions (not in @bases).

    @order: the ladder (``ORDER``), which says which edges run backward; a
    version not on it (a plugin's) counts as after every version on it.
    Raises :class:`VersionTreeError` naming the engine and the attribute for
    a PARENT that is not declared in the class's own body, names no version,
    or makes a second root or a cycle, and for a BRANCH that is no name.
    """
    versions = sorted((v for v in kernels if v not in bases), key=lambda v: _rank(v, order))
    parents: dict[str, str | None] = {}
    branches: dict[str, str] = {}
    for v in versions:
        cls = kernels[v]
        if "PARENT" not in vars(cls):
            raise VersionTreeError(v, "PARENT", getattr(cls, "PARENT", None),
                                   f"{cls.__name__} declares no PARENT in its own body "
                                   f"(inherited values do not count)")
        parent = vars(cls)["PARENT"]
        if parent is not None and (parent not in kernels or parent in bases):
            raise VersionTreeError(v, "PARENT", parent,
                                   f"names no version (versions: {', '.join(versions)})")
        if parent == v:
            raise VersionTreeError(v, "PARENT", parent, "a version cannot be its own parent")
        if not isinstance(cls.BRANCH, str) or not cls.BRANCH:
            raise VersionTreeError(v, "BRANCH", cls.BRANCH, "must be a branch name")
        parents[v], branches[v] = parent, cls.BRANCH
    roots = [v for v in versions if parents[v] is None]
    if len(roots) > 1:
        raise VersionTreeError(roots[1], "PARENT", None,
                               f"a second root: the tree has one (PARENT None), {roots[0]}")
    if not roots:
        raise VersionTreeError(versions[0], "PARENT", parents[versions[0]],
                               "no version has PARENT None: every PARENT is on a cycle")
    children: dict[str, list[str]] = {v: [] for v in versions}
    for v in versions:
        if (p := parents[v]) is not None:
            children[p].append(v)
    nodes: list[str] = []
    edges: list[TreeEdge] = []
    stack = [roots[0]]
    while stack:
        v = stack.pop()
        nodes.append(v)
        if (p := parents[v]) is not None:
            edges.append(TreeEdge(p, v, branches[v], kernels[v].COMMIT,
                                  _rank(v, order) < _rank(p, order)))
        # Same-branch child first, then by the ladder: popped in that order.
        kids = sorted(children[v], key=lambda c: (branches[c] != branches[v], _rank(c, order)))
        stack.extend(reversed(kids))
    unreached = [v for v in versions if v not in nodes]
    if unreached:
        raise VersionTreeError(unreached[0], "PARENT", parents[unreached[0]],
                               "is on a cycle of PARENTs that never reaches the root "
                               f"{roots[0]}")
    return VersionTree(roots[0], tuple(nodes), dict(parents), dict(branches), tuple(edges))


def _rank(version: str, order: list[str]) -> tuple[int, str]:
    return (order.index(version), "") if version in order else (len(order), version)
