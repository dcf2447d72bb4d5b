"""Bisection of every corpus divergence names the edges the corpus's own expectations imply.

Nothing here is a hard-coded answer: the expected edges come from each
entry's ``expect`` (which versions end in the defect) and ``divergences``
(which pairs differ, equal or by which rules).
"""

from __future__ import annotations

import pathlib

import pytest

from engine import DEFECT_KINDS, Change, Kind, bisect
from engine.corpus.entries import load_entry
from engine.kernels import version_tree

CORPUS = sorted((pathlib.Path(__file__).resolve().parents[2] / "corpus").glob("*.json"))

#: (entry, pair, what the corpus expects of it) for every pair that differs.
DIVERGENT = [(p, pair, want) for p in CORPUS
             for pair, want in load_entry(str(p)).get("divergences", {}).items()
             if want.get("classification") != "equal"]


def test_the_corpus_has_divergences_of_each_sort():
    kinds = {want.get("kind", "state") for _, _, want in DIVERGENT}
    assert {"crash", "data_loss", "invariant", "state"} <= kinds
    assert any(pair == "v6.12..v6.14" for _, pair, _ in DIVERGENT)


def _has_defect(fields: dict, kind: Kind) -> bool:
    return fields.get("verdict") == kind.value


@pytest.mark.corpus
@pytest.mark.parametrize(("path", "pair", "want"), DIVERGENT,
                         ids=[f"{p.stem}:{pair}" for p, pair, _ in DIVERGENT])
def test_bisection_names_the_edges_the_expectations_imply(path, pair, want):
    entry = load_entry(str(path))
    a, b = pair.split("..")
    result = bisect(entry["program"], (a, b))
    t = result.target
    assert t is not None, f"{pair} differs in the corpus but bisect found no divergence"
    on_path = {e.name for e, _ in version_tree().path(a, b)}
    assert {e.edge.name for e in result.edges if e.on_path} <= on_path
    targets = [e for e in result.edges if e.target]
    assert targets, f"no edge carries {t.signature}"
    if t.kind in DEFECT_KINDS:
        # Where the corpus says which versions end in the defect, the defect comes in
        # exactly where an edge goes from one without it to one with it, and goes
        # where the reverse happens.
        expect = entry["expect"]
        checked = [e for e in version_tree().edges if e.parent in expect and e.child in expect]
        came = {e.name for e in checked if not _has_defect(expect[e.parent], t.kind)
                and _has_defect(expect[e.child], t.kind)}
        went = {e.name for e in checked if _has_defect(expect[e.parent], t.kind)
                and not _has_defect(expect[e.child], t.kind)}
        names = {e.name for e in checked}
        assert {e.edge.name for e in result.came_in} & names == came
        assert {e.edge.name for e in result.went} & names == went
        assert any(e.on_path for e in targets), "the pair's path has no edge where it changes"
        for n in result.nodes:
            if n.version in expect and "verdict" in expect[n.version]:
                assert n.present == _has_defect(expect[n.version], t.kind), n.version
    else:
        # Each rule the corpus names for the pair shows on an edge of the pair's path,
        # coming in on an edge up the ladder and going on one down it.
        for rule in want.get("rules", []):
            carrying = [e for e in targets if e.on_path and rule in {r.name for r in e.rules}]
            assert carrying, f"rule {rule} on no edge of the path {sorted(on_path)}"
            for e in carrying:
                assert e.change is (Change.WENT if e.edge.backward else Change.CAME_IN)


ENTRIES_WITH_TREE_EDGES = [p for p in CORPUS if any(
    tuple(pair.split("..")) in {(e.parent, e.child) for e in version_tree().edges}
    or tuple(reversed(pair.split(".."))) in {(e.parent, e.child) for e in version_tree().edges}
    for pair in load_entry(str(p)).get("divergences", {}))]


@pytest.mark.corpus
@pytest.mark.parametrize("path", ENTRIES_WITH_TREE_EDGES, ids=[p.stem for p in ENTRIES_WITH_TREE_EDGES])
def test_a_survey_reports_an_edge_exactly_when_the_corpus_says_its_ends_differ(path):
    entry = load_entry(str(path))
    result = bisect(entry["program"])
    reported = {e.edge.name: e for e in result.edges}
    for edge in version_tree().edges:
        want = (entry["divergences"].get(f"{edge.parent}..{edge.child}")
                or entry["divergences"].get(f"{edge.child}..{edge.parent}"))
        if want is None:
            continue
        if want.get("classification") == "equal":
            assert edge.name not in reported, f"{edge.name}: the corpus says equal"
            continue
        assert edge.name in reported, f"{edge.name}: the corpus says the ends differ"
        got = reported[edge.name]
        if want.get("classification") == "intended" and got.change is Change.CHANGED:
            assert {r.name for r in got.rules} >= set(want.get("rules", []))
