"""Plugin engines (engine/kernels/plugins.py): a version defined in a file outside the
repository registers, runs, has its rules and its tree node, and every way it can be
wrong is an error naming the plugin and the reason.  In-process and fast."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import PluginError, differential
from engine.corpus.entries import load_any
from engine.diff.bisect import bisect
from engine.diff.rules import rules_between
from engine.kernels import (
    BASES,
    KERNELS,
    PLUGINS,
    check_identity,
    identity,
    load_engine,
    resolve_engine,
    version_tree,
)

ROOT = Path(__file__).resolve().parents[2]
ID_ONLY = """
from engine.kernels import V6_16

class Mine(V6_16):
    VERSION = "mine"
"""
WITH_RULE = """
from engine.kernels import V6_16, Rule, New
from engine.kernels.v6_15 import TTU_BATCH_PARTIAL

class Theirs(V6_16):
    VERSION = "theirs"
    COMMIT = "0123456789ab mm/rmap: a patch under test"
    RULES = [Rule("theirs-rule", "v6.16", "theirs", "0123456789ab", New(TTU_BATCH_PARTIAL),
                  "a change the patch intends")]

    def unmap_pte_batch_end(self, pvmw):
        return super().unmap_pte_batch_end(pvmw)
"""


@pytest.fixture(autouse=True)
def _unregister() -> Iterator[None]:
    before = set(KERNELS)
    yield
    for engine in set(KERNELS) - before:
        del KERNELS[engine]
        PLUGINS.pop(engine, None)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_an_id_only_plugin_runs_equal_to_its_parent(tmp_path: Path) -> None:
    path = _write(tmp_path, "mine.py", ID_ONLY)
    engine = load_engine(f"{path}:Mine")
    assert engine == "mine" and vars(KERNELS["mine"])["PARENT"] == "v6.16"
    assert load_engine(f"{path}:Mine") == "mine"       # loading twice is one registration
    assert resolve_engine(f"{path}:Mine") == "mine"    # a loaded spec resolves without import
    program = load_any(str(ROOT / "corpus" / "conform-h1-eight-mthp.json"))
    report = differential(program, "v6.16", "mine")
    assert report.equal and not report.divergences
    recorded = report.b.to_dict()["plugin"]
    assert recorded == identity("mine") and len(recorded["sha256"]) == 64
    assert "plugin" not in report.a.to_dict()


def test_a_plugin_is_a_tree_node_with_its_rules(tmp_path: Path) -> None:
    engine = load_engine(f"{_write(tmp_path, 'theirs.py', WITH_RULE)}:Theirs")
    tree = version_tree()
    assert tree.parents["theirs"] == "v6.16" and "v6.16->theirs" in {e.name for e in tree.edges}
    assert [r.name for r in rules_between("v6.16", engine)] == ["theirs-rule"]
    assert "theirs-rule" in [r.name for r in rules_between("v6.15", engine)]
    assert "bounded-partial-batches" in [r.name for r in rules_between(engine, "v6.15")]
    # Every built-in pair keeps its rules.
    assert [r.name for r in rules_between("v6.15", "v6.16")] == ["bounded-partial-batches"]
    program = load_any(str(ROOT / "corpus" / "conform-h1-eight-mthp.json"))
    b = bisect(program, ("v6.16", engine))
    assert "theirs" in [n.version for n in b.nodes]


def test_a_changed_source_is_refused_naming_both_hashes(tmp_path: Path) -> None:
    load_engine(f"{_write(tmp_path, 'mine.py', ID_ONLY)}:Mine")
    recorded = dict(identity("mine") or {})
    check_identity(recorded)
    recorded["sha256"] = "0" * 64
    with pytest.raises(PluginError, match=f"recorded sha256 {'0' * 64}, registered sha256 "
                                          f"{identity('mine')['sha256']}"):  # type: ignore[index]
        check_identity(recorded)


@pytest.mark.parametrize(("text", "cls", "reason"), [
    ("raise RuntimeError('broken on purpose')\n", "Mine",
     "does not import: RuntimeError: broken on purpose"),
    ("X = 1\n", "Mine", "has no attribute 'Mine'"),
    ("Mine = 3\n", "Mine", "3 is not a class"),
    ("class Mine:\n    VERSION = 'mine'\n", "Mine", "subclasses no registered kernel version"),
    ("from engine.kernels import V6_16\nclass Mine(V6_16):\n    pass\n", "Mine",
     "declares no VERSION"),
    ("from engine.kernels import V6_16\nclass Mine(V6_16):\n    VERSION = 'v6.15'\n", "Mine",
     "engine id 'v6.15' is taken"),
    ("from engine.kernels import V6_16\nclass Mine(V6_16):\n    VERSION = 'mine'\n"
     "    PARENT = 'v9.9'\n", "Mine", "PARENT 'v9.9' names no version"),
])
def test_a_wrong_plugin_is_an_error_naming_it(tmp_path: Path, text: str, cls: str,
                                              reason: str) -> None:
    path = _write(tmp_path, "bad.py", text)
    with pytest.raises(PluginError, match=r"^plugin .*bad\.py:" + cls + ": .*") as exc:
        load_engine(f"{path}:{cls}")
    assert reason in str(exc.value)
    assert set(KERNELS) - set(BASES) >= {"v6.16"} and "mine" not in KERNELS


def test_a_duplicate_plugin_id_names_the_first(tmp_path: Path) -> None:
    first = _write(tmp_path, "mine.py", ID_ONLY)
    load_engine(f"{first}:Mine")
    second = _write(tmp_path, "again.py", ID_ONLY)
    with pytest.raises(PluginError, match=f"engine id 'mine' is taken \\(by {first}:Mine\\)"):
        load_engine(f"{second}:Mine")


def test_a_missing_file_and_a_missing_module_are_errors(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="no such file"):
        load_engine(f"{tmp_path / 'none.py'}:Mine")
    with pytest.raises(PluginError, match="does not import: ModuleNotFoundError"):
        load_engine("no_such_module_xyz:Mine")


def test_resolve_engine_never_imports_a_spec(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    path = _write(tmp_path, "evil.py", f"open({str(marker)!r}, 'w').close()\n" + ID_ONLY)
    with pytest.raises(Exception, match="unknown engine"):
        resolve_engine(f"{path}:Mine")
    assert not marker.exists()
