"""An installed foliodiff, not an editable one, carries the seed corpus and finds it.

Builds a wheel of a copy of the source tree (``pip wheel --no-deps
--no-build-isolation``: offline, with the setuptools and wheel installed
here; the copy keeps build/ and the egg-info out of the tree), checks that
every corpus file is in it, installs it with ``pip install --target`` and
imports the engine from there in another working directory:
``CORPUS_DIR`` must be the installed corpus, and a corpus program must load
from it.  About 20 s: the wheel builds the C batched path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted(p.name for p in (ROOT / "corpus").glob("*.json"))


def _pip(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          cwd=cwd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"pip {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("wheel", reason="pip wheel --no-build-isolation needs the wheel package "
                                        "(the [test] extra installs it)")
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", "*.so", ".hypothesis", ".pytest_cache",
        "*.db", "tests"))
    _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(tmp / "dist"),
         str(src), cwd=tmp)
    (built,) = (tmp / "dist").glob("foliodiff-*.whl")
    return built


def test_the_wheel_carries_the_corpus(wheel: Path) -> None:
    assert CORPUS, "no corpus files in the source tree"
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    assert "corpus/__init__.py" in names
    missing = [n for n in CORPUS if f"corpus/{n}" not in names]
    assert not missing, f"corpus files missing from {wheel.name}: {missing}"


def test_the_wheel_carries_the_dashboards_templates_and_assets(wheel: Path) -> None:
    web = ROOT / "service" / "web"
    wanted = sorted(str(p.relative_to(ROOT)) for sub in ("templates", "static")
                    for p in (web / sub).rglob("*") if p.is_file())
    assert any(n.endswith("uPlot.iife.min.js") for n in wanted)
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    missing = [n for n in wanted if n not in names]
    assert not missing, f"dashboard files missing from {wheel.name}: {missing}"


def test_an_installed_copy_finds_its_corpus(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-compile", "--target", str(site), str(wheel), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The installed copy goes first on sys.path, ahead of this checkout (editable
    # or on PYTHONPATH); its dependencies come from this interpreter.
    probe = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(site)!r})\n"
        "import engine\n"
        "p = engine.corpus_program('h2-shrinker-ref-between-ptes')\n"
        "print(json.dumps({'engine': engine.__file__, 'corpus_dir': str(engine.CORPUS_DIR),\n"
        "                  'files': sorted(f.name for f in engine.CORPUS_DIR.glob('*.json')),\n"
        "                  'ops': len(p.ops)}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert Path(got["engine"]).is_relative_to(site), got["engine"]
    assert Path(got["corpus_dir"]) == site / "corpus"
    assert got["files"] == CORPUS
    assert got["ops"] > 0
