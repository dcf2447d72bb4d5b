"""What a campaign keeps for its next run, without running one: counts that go on,
paths made absolute, the coverage unit of each fuzzer, and a fuzzer whose package
is missing refused by name.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import pytest

from fuzz.sources import CoverageUnit, Fuzzer
from service.campaign import NEEDS, CampaignConfig, Progress, require_fuzzer
from service.errors import MissingDependencyError

ROOT = Path(__file__).resolve().parents[2]


def test_progress_saved_goes_on_in_the_next_run() -> None:
    first = Progress(elapsed=12.5, execs={0: 700, 1: 300}, coverage={0: 40, 1: 55},
                     signatures={0: {"data_loss": 1}, 1: {"state": 2}}, minimize_runs=80,
                     positions={0: {"i": 9}, 1: {"i": 4}})
    first.stored = [{"divergence_id": 1}, {"divergence_id": 2}]
    first.harness = {7: {}}
    saved = json.loads(json.dumps(first.saved()))           # as the store's JSON keeps it
    again = Progress.restored(saved)
    assert (again.elapsed, again.total_execs(), again.minimize_runs, again.total_stored(),
            again.total_coverage(), again.by_kind(), again.harness_ids(), again.positions) == (
        12.5, 1000, 80, 2, 55, {"data_loss": 1, "state": 2}, {7}, {0: {"i": 9}, 1: {"i": 4}})
    # The next run's workers start from nothing; the campaign's totals do not.
    again.execs = {0: 5, 1: 6}
    again.coverage = {0: 3, 1: 70}
    again.stored = [{"divergence_id": 3}]
    again.harness = {7: {}, 8: {}}
    assert (again.total_execs(), again.total_coverage(), again.total_stored(),
            again.harness_ids()) == (1011, 70, 3, {7, 8})
    again.coverage = {0: 3}                  # a high-water mark: never below the stored one
    assert again.total_coverage() == 55
    # A campaign saved before counts were kept starts them from zero.
    old = Progress.restored({"elapsed": 3.0, "positions": {"0": {"i": 1}}})
    assert (old.total_execs(), old.total_stored(), old.total_coverage()) == (0, 0, 0)


def test_config_paths_are_stored_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "h1.json").write_text(
        (ROOT / "corpus" / "h1-clean-mthp-reclaim.json").read_text())
    monkeypatch.chdir(tmp_path)
    config = CampaignConfig(fuzzer="random", engine_a="v6.14", engine_b="v6.15", seconds=1,
                            seeds="seeds", corpus="./kept/../kept")
    assert (config.seeds, config.corpus) == (str(tmp_path / "seeds"), str(tmp_path / "kept"))
    stored = config.model_dump(mode="json")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = CampaignConfig.stored(stored)
    assert again.seeds == str(tmp_path / "seeds") and len(again.seed_inputs()) == 1
    (elsewhere / "empty").mkdir()
    with pytest.raises(ValueError, match=str(elsewhere / "empty")):
        CampaignConfig(fuzzer="random", engine_a="v6.14", engine_b="v6.15", seconds=1,
                       seeds="empty")


def test_each_fuzzer_has_its_coverage_unit() -> None:
    assert {f: f.coverage_unit for f in Fuzzer} == {
        Fuzzer.ATHERIS: CoverageUnit.EDGES, Fuzzer.HYPOTHESIS: CoverageUnit.FEATURES,
        Fuzzer.PCT: CoverageUnit.FEATURES, Fuzzer.EXHAUSTIVE: CoverageUnit.FEATURES,
        Fuzzer.RANDOM: CoverageUnit.FEATURES}


@pytest.mark.parametrize("fuzzer", [Fuzzer.HYPOTHESIS, Fuzzer.ATHERIS])
def test_a_fuzzer_whose_package_is_missing_is_refused_naming_what_to_install(
        fuzzer: Fuzzer, monkeypatch: pytest.MonkeyPatch) -> None:
    require_fuzzer(fuzzer)                               # installed here
    module, install = NEEDS[fuzzer]
    monkeypatch.setitem(sys.modules, module, None)       # "import hypothesis" fails now
    with pytest.raises(MissingDependencyError) as err:
        require_fuzzer(fuzzer)
    assert err.value.module == module and err.value.install == install
    assert f"the {fuzzer.value} fuzzer needs the {module!r} package" in str(err.value)
    assert install in str(err.value)
    # The extra named is the one that holds the package (pyproject.toml).
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert NEEDS[Fuzzer.HYPOTHESIS][1] == "pip install 'foliodiff[test]'"
    assert any(d.startswith("hypothesis==") for d in extras["test"])
    require_fuzzer(Fuzzer.RANDOM)                        # needs nothing more
