"""docs/tutorial.md works as written: its plugin is docs/tutorial/noref.py, and each
of its commands runs (from a checkout's top: corpus/ and docs/ beside the store)
with the exit status and the findings the text describes.  The last step boots
Debian's 6.16 under qemu."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.store import Store

pytestmark = pytest.mark.realkernel
ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
PLUGIN = ROOT / "docs" / "tutorial" / "noref.py"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```", TUTORIAL.read_text(), re.MULTILINE | re.DOTALL)


def _commands() -> list[str]:
    return [line[2:] for block in _blocks("console") for line in block.splitlines()
            if line.startswith("$ ")]


def test_the_plugin_shown_is_the_plugin_file() -> None:
    (shown,) = _blocks("python")
    source = PLUGIN.read_text()
    assert source[source.index("from engine.kernels import"):] == shown


def test_the_commands_work_as_written(tmp_path: Path) -> None:
    if shutil.which("qemu-system-x86_64") is None:
        message = "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)
    for name in ("corpus", "docs"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250"}
    env.pop("FOLIODIFF_DB_URL", None)
    said: dict[str, str] = {}
    for command in _commands():
        argv = shlex.split(command)
        assert argv[0] == "foliodiff", command
        r = subprocess.run([sys.executable, "-m", "service.cli", *argv[1:]], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=900, check=False)
        step = next(a for a in argv[1:] if not a.startswith("-") and ":" not in a)
        if step == "triage":
            step = argv[argv.index("triage") + 1]
        said[step] = r.stdout + r.stderr
        # `run` exits 1 on an unexpected divergence; every other step succeeds.
        assert r.returncode == (1 if step == "run" else 0), (command, said[step])
    assert set(said) == {"run", "fuzz", "list", "intended", "bisect", "conform"}
    assert "data_loss" in said["run"] and "returned 0, allowed 42" in said["run"]
    assert "no harness errors" in said["fuzz"]
    assert "data_loss" in said["list"] and "v6.16..noref|cause|" in said["list"]
    assert "noref-discard-referenced" in said["intended"]
    assert "proposal: mm/rmap: drop the reference check" in said["intended"]
    for edge in ("v5.17->v5.18", "v6.16->noref", "came in (this)", "6c8e2a256915"):
        assert edge in said["bisect"], edge
    with Store.open(f"sqlite:///{tmp_path / 'tutorial.db'}") as store:
        (result,), _ = store.conformance_results(scenario="conform-h5-dma-pageout")
    assert (result.kernel, result.engine, result.verdict.value) == ("deb-6.16", "v6.16", "equal")
    assert result.sides["v6.16"]["verdict"] == "equal"
    assert result.sides["noref"]["verdict"] == "different"
    assert [(d["field"], d["predicted"], d["observed"]) for d in result.sides["noref"]["differences"]
            ] == [("vmstat.pglazyfreed", 0, 1)]
