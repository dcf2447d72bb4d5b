"""foliodiff conform's verdicts without a boot: each kernel's reproducers, unsupported
features, scenarios not expressible on a kernel, and the package in the results."""

from __future__ import annotations

import json
import types

from typer.testing import CliRunner

from engine.program.format import parse_program
from engine.repro.realobs import CONFORMANCE, Scenario, predict
from service.cli import app
from service.conform import check
from service.conform.check import Verdict, conform
from service.conform.console import BootStatus, CaseResult, CaseStatus

T0 = {"name": "T0", "kind": "task", "mm": 0}


def _program(*ops):
    return parse_program({"version": 2, "threads": [T0], "ops": [{"thread": "T0", **o} for o in ops]})


#: 16 small pages (order 0), written and paged out: every engine agrees.
SMALL = _program({"op": "mmap", "addr": 0x200000, "pages": 16},
                 {"op": "write", "addr": 0x200000, "pages": 16, "value": 7},
                 {"op": "madvise", "addr": 0x200000, "pages": 16, "advice": "MADV_PAGEOUT"})


def _fake_suite(monkeypatch, records: dict[str, dict], ran: dict[str, dict]):
    """run_suite() that prints ``records[kernel][test]`` for each test it is given."""
    def run_suite(spec, sources, timeout):
        ran[spec.name] = sources
        cases = tuple(CaseResult(name, CaseStatus.OK if "observables" in records[spec.name][name]
                                 else CaseStatus.CRASHED, 0, None, (records[spec.name][name],))
                      for name in sources)
        return types.SimpleNamespace(
            spec=spec, image=types.SimpleNamespace(sha256=""), status=BootStatus.OK,
            package="linux-image-x", package_version="6.1.999-1",
            uname="6.1.0-99-amd64", seconds=1.0, kernel_reports=(), console="",
            test=lambda n: next(c for c in cases if c.name == n))

    monkeypatch.setattr(check, "run_suite", run_suite)


def test_a_kernel_without_mthp_is_held_to_its_engine(monkeypatch):
    """deb-6.1: the reproducer is checked on v5.18 too, the prediction has no mthp keys,
    and an observation without them is equal; one with them is a difference."""
    scenarios = {"small": Scenario("small", SMALL)}
    predicted = predict(SMALL, "v5.18")
    with_mthp = dict(predicted, **{"mthp.64kB.split": 0})
    ran: dict = {}
    _fake_suite(monkeypatch, {"deb-6.1": {"small": {"observables": predicted}},
                              "deb-6.16": {"small": {"observables": with_mthp}}}, ran)
    old, new = conform(["deb-6.1", "deb-6.16"], scenarios)
    assert "checked against the models of v5.18, v6.12" in ran["deb-6.1"]["small"]
    assert "checked against the models of v6.12" in ran["deb-6.16"]["small"]
    assert old.results[0].verdict is Verdict.EQUAL and old.conforms
    assert (old.package, old.package_version) == ("linux-image-x", "6.1.999-1")
    assert new.results[0].verdict is Verdict.DIFFERENT      # v6.16 predicts every mthp stat
    assert old.to_dict()["counts"]["equal"] == 1
    assert old.to_dict()["package_version"] == "6.1.999-1"


def test_unsupported_only_where_the_model_lacks_the_feature_too(monkeypatch):
    """MAP_DROPPABLE: unsupported is the verdict on deb-6.1 (v5.18 has no VM_DROPPABLE),
    a failure on deb-6.16, whose engine has it."""
    name = "h7-droppable-small-dirty"
    scenarios = {name: CONFORMANCE[name]}
    record = {"error": "unsupported by this kernel: MAP_DROPPABLE (mmap(MAP_DROPPABLE): Invalid "
                       "argument; the flag came in v6.11, 9651fcedf7b9)",
              "unsupported": "MAP_DROPPABLE", "op": 0}
    _fake_suite(monkeypatch, {"deb-6.1": {name: record}, "deb-6.16": {name: record}}, {})
    old, new = conform(["deb-6.1", "deb-6.16"], scenarios)
    assert old.results[0].verdict is Verdict.UNSUPPORTED and old.conforms
    assert "Invalid argument" in old.results[0].detail
    assert "v5.18 has no VM_DROPPABLE" in old.results[0].detail
    assert new.results[0].verdict is Verdict.FAILED and not new.conforms
    assert "which its model v6.16 has" in new.results[0].detail


def test_not_expressible_on_the_kernels_engine_is_said_and_not_run(monkeypatch):
    """A program the defaults translate but v5.18 does not (the model's lazyfree
    batch at a munmap, which Linux drains) is not run on deb-6.1, with the reason."""
    p = _program({"op": "mmap", "addr": 0x200000, "pages": 2},
                 {"op": "write", "addr": 0x200000, "pages": 2, "value": 1},
                 {"op": "mmap", "addr": 0x400000, "pages": 16, "order": 4},
                 {"op": "write", "addr": 0x400000, "pages": 16, "value": 1},
                 {"op": "madvise", "addr": 0x400000, "pages": 16, "advice": "MADV_FREE"},
                 {"op": "munmap", "addr": 0x40f000, "pages": 1})
    scenarios = {"p": Scenario("p", p)}
    ran: dict = {}
    _fake_suite(monkeypatch, {"deb-6.1": {}}, ran)
    (old,) = conform(["deb-6.1"], scenarios)
    assert ran["deb-6.1"] == {}
    r = old.results[0]
    assert r.verdict is Verdict.NOT_EXPRESSIBLE
    assert r.detail.startswith("on v5.18: ops[5]") and "lru_add_drain()" in r.detail


def test_cli_summary_names_the_package(monkeypatch, tmp_path):
    predicted = predict(SMALL, "v5.18")
    _fake_suite(monkeypatch, {"deb-6.1": {n: {"observables": predicted} for n in ("small",)}}, {})
    monkeypatch.setattr("engine.repro.realobs._conformance_cache", {"small": Scenario("small", SMALL)})
    out = tmp_path / "c.json"
    res = CliRunner().invoke(app, ["conform", "--kernels", "deb-6.1", "--out", str(out),
                                   "--db", f"sqlite:///{tmp_path / 'store.db'}"],
                             env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "6.1.999-1" in res.output and "summary" in res.output
    k = json.loads(out.read_text())["kernels"][0]
    assert (k["package"], k["package_version"], k["uname"]) == ("linux-image-x", "6.1.999-1",
                                                                "6.1.0-99-amd64")
    assert k["counts"]["equal"] == 1
