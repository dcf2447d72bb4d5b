"""The version tree and bisection along it (engine/kernels/tree.py, engine/diff/bisect.py)."""

from __future__ import annotations

import json

import pytest

from engine import (
    Bisection,
    Change,
    Classification,
    Kind,
    Verdict,
    VersionTreeError,
    bisect,
    corpus_program,
    defect_key,
    differential,
    edge_rules,
    run,
)
from engine.diff.rules import RULES
from engine.kernels import BASES, KERNELS, MAINLINE, ORDER, V5_18, V6_14, V6_15, version_tree
from engine.kernels.tree import build_tree


def _edge(b: Bisection, name: str):
    """The reported edge @name, which must be there exactly once."""
    found = [e for e in b.edges if e.edge.name == name]
    assert len(found) == 1, f"{name} not reported once: {[e.edge.name for e in b.edges]}"
    return found[0]


def _rules(edge) -> list[str]:
    return [r.name for r in edge.rules]


# -- the tree ---------------------------------------------------------------------

def test_mainline_with_the_6_12_y_branch_off_v6_14_and_7_3_y_off_v7_2():
    t = version_tree()
    assert t.root == "v5.17"
    assert [(e.parent, e.child, e.branch, e.backward) for e in t.edges] == [
        ("v5.17", "v5.18", MAINLINE, False), ("v5.18", "v6.14", MAINLINE, False),
        ("v6.14", "v6.15", MAINLINE, False), ("v6.15", "v6.16", MAINLINE, False),
        ("v6.16", "v6.19", MAINLINE, False), ("v6.19", "v7.0", MAINLINE, False),
        ("v7.0", "v7.2", MAINLINE, False), ("v7.2", "v7.3", "7.3.y", False),
        ("v6.19", "v6.19.y", "6.19.y", False), ("v6.14", "v6.12", "6.12.y", True)]
    assert {e.child: e.commit for e in t.edges}["v6.12"] == KERNELS["v6.12"].COMMIT
    assert {e.child: e.commit for e in t.edges}["v7.3"] == KERNELS["v7.3"].COMMIT
    # Every version is a node once; the C twins answer as their versions and are none.
    assert sorted(t.nodes) == sorted(ORDER)
    assert not set(t.nodes) & set(BASES)


def test_path_climbs_the_branch_and_descends_mainline():
    t = version_tree()
    assert [(e.name, forward) for e, forward in t.path("v6.12", "v6.15")] == [
        ("v6.14->v6.12", False), ("v6.14->v6.15", True)]
    assert [(e.name, forward) for e, forward in t.path("v5.17", "v6.12")] == [
        ("v5.17->v5.18", True), ("v5.18->v6.14", True), ("v6.14->v6.12", True)]
    assert t.path("v6.14", "v6.14") == []
    with pytest.raises(VersionTreeError, match=r"node of the version tree: .*got 'v6.14-c'"):
        t.path("v6.14-c", "v6.15")


def test_edge_rules_of_the_new_edges_come_from_the_ladder_pairs():
    t = version_tree()
    by_name = {e.name: e for e in t.edges}
    pair = {(r.older, r.newer): [] for r in RULES}
    for r in RULES:
        pair[(r.older, r.newer)].append(r)
    assert edge_rules(by_name["v6.14->v6.15"]) == pair[("v6.14", "v6.15")]
    assert edge_rules(by_name["v5.18->v6.14"]) == pair[("v5.18", "v6.12")] + pair[("v6.12", "v6.14")]
    assert edge_rules(by_name["v6.14->v6.12"]) == pair[("v6.12", "v6.14")]
    assert "lazyfree-pmd-discard" in [r.name for r in edge_rules(by_name["v5.18->v6.14"])]


def _kernels(**classes):
    return {cls.VERSION: cls for cls in classes.values()}


def test_a_version_must_declare_its_parent_in_its_own_body():
    class Undeclared(V6_15):
        VERSION = "v6.15-plugin"

    kernels = {**{v: KERNELS[v] for v in ORDER}, "v6.15-plugin": Undeclared}
    with pytest.raises(VersionTreeError, match=r"PARENT of v6.15-plugin: Undeclared declares no "
                                               r"PARENT .* \(got 'v6.14'\)"):
        build_tree(kernels, {}, ORDER)


def test_a_plugin_branch_joins_the_tree():
    class Backport(V6_14):
        VERSION = "v6.14-vendor"
        PARENT = "v6.14"
        BRANCH = "vendor"

    t = build_tree({**{v: KERNELS[v] for v in ORDER}, "v6.14-vendor": Backport}, {}, ORDER)
    vendor = t.edge_to("v6.14-vendor")
    assert (vendor.parent, vendor.branch, vendor.backward) == ("v6.14", "vendor", False)
    # Branches after the parent's own line: mainline goes on first.
    assert [e.name for e in t.edges].index("v6.14->v6.15") < [e.name for e in t.edges].index(
        "v6.14->v6.14-vendor")
    assert edge_rules(vendor) == []


@pytest.mark.parametrize(("parent", "message"), [
    ("v9.99", r"PARENT of v6.14-vendor: names no version .*\(got 'v9.99'\)"),
    ("v6.14-c", r"PARENT of v6.14-vendor: names no version .*\(got 'v6.14-c'\)"),
    (None, r"PARENT of v6.14-vendor: a second root: the tree has one \(PARENT None\), v5.17"),
])
def test_a_parent_that_names_no_version_or_a_second_root_is_refused(parent, message):
    class Stray(V6_14):
        VERSION = "v6.14-vendor"
        PARENT = parent

    kernels = {**{v: KERNELS[v] for v in ORDER}, "v6.14-c": KERNELS["v6.14-c"],
               "v6.14-vendor": Stray}
    with pytest.raises(VersionTreeError, match=message):
        build_tree(kernels, {"v6.14-c": "v6.14"}, ORDER)


def test_a_cycle_of_parents_is_refused():
    class A(V5_18):
        VERSION = "va"
        PARENT = "vb"

    class B(V5_18):
        VERSION = "vb"
        PARENT = "va"

    with pytest.raises(VersionTreeError, match=r"PARENT of va: is on a cycle .*\(got 'vb'\)"):
        build_tree({**{v: KERNELS[v] for v in ORDER}, "va": A, "vb": B}, {}, ORDER)


# -- the defect key ---------------------------------------------------------------------

def test_a_divergence_and_the_run_it_came_from_have_the_same_defect_key():
    program = corpus_program("h5-dma-into-lazyfree")
    d = differential(program, "v5.17", "v5.18").divergences[0]
    key = defect_key(d)
    assert key is not None and key == defect_key(run(program, "v5.17"), program)
    assert (key.kind, key.field, key.function) == (Kind.DATA_LOSS, d.field, d.function)
    # the function is the decision that lost the data, as the signature names it
    assert f"|cause|{key.function}<" in d.signature
    # without the program, where the oracle noticed: another defect
    assert defect_key(run(program, "v5.17")) != key
    assert defect_key(run(program, "v5.18")) is None
    assert defect_key(differential(program, "v6.14", "v6.15").divergences[0]) is None


# -- the three bisections -------------------------------------------------------

def test_h5_data_loss_goes_at_v5_17_v5_18_with_the_refcount_check():
    b = bisect(corpus_program("h5-dma-into-lazyfree"), ("v5.17", "v5.18"))
    assert b.target is not None and b.target.kind is Kind.DATA_LOSS
    assert [e.edge.name for e in b.went] == ["v5.17->v5.18"] and b.came_in == []
    went = b.went[0]
    assert went.on_path and went.edge.branch == MAINLINE
    assert _rules(went) == ["refcount-check-before-lazyfree-discard"]
    assert went.rules[0].patch.startswith("6c8e2a256915")
    assert went.edge.commit == "6c8e2a256915"
    assert [n.version for n in b.nodes if n.present] == ["v5.17"]


def test_h12_crash_comes_in_at_v6_15_and_goes_at_v6_16():
    b = bisect(corpus_program("h12-mremap-straddle"), ("v6.14", "v6.15"))
    assert b.target is not None and b.target.kind is Kind.CRASH
    assert [(e.edge.name, e.on_path) for e in b.came_in] == [("v6.14->v6.15", True)]
    # Where it went lies outside the pair it was found on.
    assert [(e.edge.name, e.on_path) for e in b.went] == [("v6.15->v6.16", False)]
    assert _rules(b.went[0]) == ["bounded-partial-batches"]
    assert b.came_in[0].edge.commit == V6_15.COMMIT
    assert [n.version for n in b.nodes if n.present] == ["v6.15"]


def test_h10_pmd_discard_comes_in_on_mainline_and_goes_on_the_6_12_y_branch():
    b = bisect(corpus_program("h10-pmd-thp-clean"), ("v6.12", "v6.14"))
    assert b.target is not None and b.target.kind is Kind.STATE
    assert [e.edge.name for e in b.came_in] == ["v5.18->v6.14"]
    assert [e.edge.name for e in b.went] == ["v6.14->v6.12"]
    came, went = b.came_in[0], b.went[0]
    assert "lazyfree-pmd-discard" in _rules(came) and came.edge.branch == MAINLINE
    assert not came.on_path
    assert _rules(went) == ["lazyfree-pmd-discard"] and went.edge.branch == "6.12.y"
    assert went.on_path and went.edge.backward
    assert "735ecdfaf4e8" in went.rules[0].patch
    # The v5.17 -> v5.18 change is another one: reported, not this divergence's.
    other = _edge(b, "v5.17->v5.18")
    assert (other.change, other.target) == (Change.CHANGED, False)
    assert _rules(other) == ["lazyfree-thp-not-split-in-reclaim"]


# -- the rest of the surface ------------------------------------------------------------

def test_every_rule_an_edge_shows_is_one_of_its_own():
    b = bisect(corpus_program("h12-vma-boundary-write-escalation"))
    assert b.target is None and b.edges
    by_name = {e.name: e for e in version_tree().edges}
    for e in b.edges:
        assert not e.target
        own = [r.name for r in edge_rules(by_name[e.edge.name])]
        assert set(_rules(e)) <= set(own), e.edge.name


def test_without_a_pair_every_change_is_reported_and_none_is_a_target():
    program = corpus_program("h12-mremap-straddle")
    survey, found = bisect(program), bisect(program, ("v6.14", "v6.15"))
    assert [(e.edge.name, e.change) for e in survey.edges] == \
        [(e.edge.name, e.change) for e in found.edges]
    assert not any(e.target for e in survey.edges)
    assert all(n.present is None for n in survey.nodes)


def test_a_c_twin_pair_is_bisected_at_its_versions():
    program = corpus_program("h12-mremap-straddle")
    b = bisect(program, ("v6.14-c", "v6.15-c"))
    assert b.engines == ("v6.14-c", "v6.15-c")
    assert [e.edge.name for e in b.came_in] == ["v6.14->v6.15"]
    assert b.came_in[0].on_path


def test_an_equal_pair_has_no_target():
    b = bisect(corpus_program("h5-dma-into-lazyfree"), ("v6.12", "v6.14"))
    assert b.pair is not None and b.pair.equal and b.target is None
    assert {e.edge.name for e in b.edges} == {"v5.17->v5.18", "v6.14->v6.15"}


def test_bisection_is_deterministic_and_its_dict_is_json():
    program = corpus_program("h12-mremap-straddle")
    first = bisect(program, ("v6.14", "v6.15")).to_dict()
    assert json.loads(json.dumps(first)) == first == bisect(program, ("v6.14", "v6.15")).to_dict()
    came = next(e for e in first["edges"] if e["change"] == "came_in")
    assert (came["edge"], came["parent"], came["child"], came["branch"], came["target"]) == \
        ("v6.14->v6.15", "v6.14", "v6.15", MAINLINE, True)
    assert first["target"]["kind"] == "crash"
    assert [n["version"] for n in first["nodes"] if n["present"]] == ["v6.15"]


def test_any_engine_pair_replays_adjacent_or_not():
    program = corpus_program("h5-dma-into-lazyfree")
    far = differential(program, "v5.17", "v6.16-c")
    assert [(d.kind, d.classification) for d in far.divergences] == \
        [(Kind.DATA_LOSS, Classification.UNEXPECTED)]
    across = differential(program, "v6.12", "v6.16")
    assert [r.name for r in across.divergences[0].rules] == ["swapbacked-only-if-dirty"]


def test_a_harness_error_makes_its_edges_unknown(monkeypatch):
    def broken(self, vma, addr, end):
        raise IndexError("list index out of range")
        yield

    monkeypatch.setattr(V6_15, "madvise_free_range", broken)
    b = bisect(corpus_program("h5-dma-into-lazyfree"), ("v5.17", "v5.18"))
    unknown = [e.edge.name for e in b.edges if e.change is Change.UNKNOWN]
    assert unknown == ["v6.14->v6.15", "v6.15->v6.16", "v6.16->v6.19", "v6.19->v7.0", "v7.0->v7.2",
                       "v7.2->v7.3", "v6.19->v6.19.y"]
    assert {o.engine for o in b.harness} == {"v6.15", "v6.16", "v6.19", "v6.19.y", "v7.0", "v7.2",
                                                    "v7.3"}
    assert all(o.verdict is Verdict.HARNESS for o in b.harness)
    # The other edges still answer.
    assert [e.edge.name for e in b.went] == ["v5.17->v5.18"]


def test_a_registered_mutant_is_no_node_and_is_bisected_at_its_version(monkeypatch):
    from engine.kernels.mutants import MUTANTS, V6_16NoVmaBound
    nodes = version_tree().nodes
    monkeypatch.setitem(KERNELS, V6_16NoVmaBound.VERSION, V6_16NoVmaBound)
    monkeypatch.setitem(BASES, V6_16NoVmaBound.VERSION, MUTANTS[V6_16NoVmaBound.VERSION])
    assert version_tree().nodes == nodes
    b = bisect(corpus_program("h12-mremap-straddle"), ("v6.15", V6_16NoVmaBound.VERSION))
    assert [(e.edge.name, e.on_path) for e in b.went] == [("v6.15->v6.16", True)]
