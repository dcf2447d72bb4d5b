"""The foliodiff command as users run it: exit codes and output."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def foliodiff(*args):
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def said(r) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(r.stderr.split())


def test_intended_divergence_exits_0():
    r = foliodiff("run", "corpus/h2-shrinker-ref-between-ptes.json", "--engines", "v6.14,v6.15")
    assert r.returncode == 0, r.stderr
    assert "intended" in r.stdout and "swapbacked-only-if-dirty" in r.stdout


def test_unexpected_divergence_exits_1_and_json():
    r = foliodiff("run", "corpus/h5-dma-into-lazyfree.json", "--engines", "v5.17,v6.14", "--json")
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert report["unexpected"] is True
    assert report["divergences"][0]["kind"] == "data_loss"
    assert report["outcomes"][0]["verdict"] == "data_loss"


def test_bad_inputs_exit_2_naming_the_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "threads": [{"name": "T0", "mm": 0}],
                               "ops": [{"thread": "T0", "op": "frobnicate"}]}))
    r = foliodiff("run", str(bad), "--engines", "v6.14,v6.15")
    assert r.returncode == 2
    assert "ops[0].op" in r.stderr and "frobnicate" in r.stderr
    r = foliodiff("run", "corpus/h1-clean-mthp-reclaim.json", "--engines", "v6.14,v9.9")
    assert r.returncode == 2 and "v9.9" in r.stderr
    r = foliodiff("run", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "missing.json" in r.stderr


def test_reproducer_of_a_corpus_name_a_file_and_a_stored_divergence(tmp_path):
    from engine.corpus import load_any
    from engine.diff import differential
    from service.store import Store, records_from_report
    r = foliodiff("reproducer", "--corpus", "h8-pmd-thp-redirty", "--out", str(tmp_path / "a.c"))
    assert r.returncode == 0, r.stderr
    r = foliodiff("reproducer", "corpus/h8-pmd-thp-redirty.json")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (tmp_path / "a.c").read_text()
    assert "foliodiff reproducer h8-pmd-thp-redirty:" in r.stdout
    program = load_any(str(ROOT / "corpus" / "conform-h5-dma-pageout.json"))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store.open(url) as store:
        (ident,) = store.upsert_divergences(
            records_from_report(differential(program, "v5.17", "v6.15"), program)).ids.values()
    r = foliodiff("reproducer", "--divergence", str(ident), "--db", url)
    assert r.returncode == 0, r.stderr
    assert f"foliodiff reproducer divergence-{ident}:" in r.stdout


def test_reproducer_bad_inputs_exit_2_naming_them(tmp_path):
    r = foliodiff("reproducer", "--corpus", "no-such-program")
    assert r.returncode == 2 and "'no-such-program'" in said(r)
    r = foliodiff("reproducer", "--corpus", "h8-pmd-thp-redirty", "--corpus-dir", str(tmp_path))
    assert r.returncode == 2 and str(tmp_path) in said(r)
    r = foliodiff("reproducer", "--corpus", "h2-shrinker-ref-between-ptes")
    assert r.returncode == 2 and "ops[4]" in said(r) and "not translatable" in said(r)
    r = foliodiff("reproducer", "--corpus", "h8-pmd-thp-redirty", "--divergence", "1")
    assert r.returncode == 2 and "one of them" in said(r)
    r = foliodiff("reproducer", "--corpus", "h8-pmd-thp-redirty", "--pin", "splice")
    assert r.returncode == 2 and "--pin" in said(r) and "splice" in said(r)
