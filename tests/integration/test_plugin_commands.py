"""A plugin engine from a temporary directory outside the repository, on the command
line: ``foliodiff run`` and ``bisect``, a random campaign with two spawned workers and
an atheris campaign (a subprocess), each of which registers the plugin anew; a
broken plugin fails the command naming it.  Slow (the campaigns run 30 s each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.store import Store

ROOT = Path(__file__).resolve().parents[2]
H12 = ROOT / "corpus" / "h12-mremap-straddle.json"
# A version on v6.15's code (its parent): h12's out-of-bounds batch crashes it.
MINE = """
from engine.kernels import V6_15


class Mine(V6_15):
    VERSION = "mine"
"""
SAME = """
from engine.kernels import V6_16


class Same(V6_16):
    VERSION = "same"
"""


def _cli(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}
    env.pop("FOLIODIFF_DB_URL", None)
    env.pop("FOLIODIFF_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def plugins(tmp_path: Path) -> dict[str, str]:
    """Plugin files in a directory of their own (not the repository, not the cwd)."""
    where = tmp_path / "plugins"
    where.mkdir()
    (where / "mine.py").write_text(MINE)
    (where / "same.py").write_text(SAME)
    return {"mine": f"{where / 'mine.py'}:Mine", "same": f"{where / 'same.py'}:Same"}


def test_run_and_bisect_take_a_plugin(tmp_path: Path, plugins: dict[str, str]) -> None:
    r = _cli("run", str(H12), "--engines", f"v6.16,{plugins['same']}", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["engines"] == ["v6.16", "same"] and not report["divergences"]
    r = _cli("run", str(H12), "--engines", f"v6.16,{plugins['mine']}", "--json", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert any("PageTableOutOfBounds" in d["signature"]
               for d in json.loads(r.stdout)["divergences"])
    r = _cli("bisect", str(H12), "--engines", f"v6.16,{plugins['mine']}", "--json",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    # A node of the tree, run like every version; equal to its parent, so no edge of it changed.
    assert "mine" in [n["version"] for n in result["nodes"]]
    assert "v6.15->mine" not in [f"{e['parent']}->{e['child']}" for e in result["edges"]]


def test_the_corpus_runner_checks_a_plugin_s_expectations(tmp_path: Path,
                                                          plugins: dict[str, str]) -> None:
    """A corpus entry may expect outcomes of a plugin engine: ``--plugins`` registers
    it for the regression run; without it the entry fails naming the engine."""
    entry = json.loads(H12.read_text())
    entry["expect"] = {"same": entry["expect"]["v6.16"], "v6.16": entry["expect"]["v6.16"]}
    corpus = tmp_path / "mycorpus"
    corpus.mkdir()
    (corpus / "h12-on-same.json").write_text(json.dumps(entry))
    r = _cli("--plugins", plugins["same"], "corpus", str(corpus), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 0 failed" in r.stdout and "same,v6.16" in r.stdout
    r = _cli("corpus", str(corpus), cwd=tmp_path)
    assert r.returncode == 1 and "same" in r.stdout and "0 passed, 1 failed" in r.stdout


def test_a_broken_plugin_fails_the_command_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from engine.kernels import V6_16\nclass Bad(V6_16):\n"
                   "    VERSION = 'bad'\n    PARENT = 'v9.9'\n")
    r = _cli("run", str(H12), "--engines", f"v6.16,{bad}:Bad", cwd=tmp_path)
    assert r.returncode == 2
    assert f"plugin {bad}:Bad" in " ".join(r.stderr.split()) and "v9.9" in r.stderr


@pytest.mark.parametrize("fuzzer,workers", [("random", 2), ("atheris", 1)])
def test_a_campaign_runs_a_plugin_in_its_workers(tmp_path: Path, plugins: dict[str, str],
                                                 fuzzer: str, workers: int) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / H12.name).write_text(H12.read_text())
    url = f"sqlite:///{tmp_path / 'store.db'}"
    r = _cli("fuzz", "--no-live", "--fuzzer", fuzzer, "--engines", f"v6.16,{plugins['mine']}",
             "--time", "30", "--workers", str(workers), "--seeds", str(seeds),
             *(["--no-minimize"] if fuzzer == "atheris" else []), "--db", url, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    with Store.open(url) as store:
        divergences, _ = store.list_divergences(limit=100)
        (campaign,) = store.list_campaigns(limit=10)[0]
        crash = next(d for d in divergences if "|crash|PageTableOutOfBounds|" in d.signature)
        recorded = store.get_divergence(crash.id).outcome_b["plugin"]
    assert campaign.config["plugins"] == [recorded]
    assert (crash.engine_a, crash.engine_b) == ("v6.16", "mine")
    assert recorded["spec"] == plugins["mine"] and len(recorded["sha256"]) == 64
    if fuzzer == "random":       # the minimizer, a spawned process too, ran it
        assert crash.minimized_program_id is not None
