"""The foliodiff command as users run it: exit codes and output."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from engine.corpus.upgrade import upgrade_program
from engine.execution.runner import run

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Corpus H2 as format 1 stored it (before 0c031c9): a schedule of global steps.
H2_V1 = json.loads((ROOT / "tests" / "data" / "format1" / "h2.json").read_text())

# `foliodiff` with MADV_FREE's page-table walk broken (IndexError) on every
# engine, or on v6.15 and later only: a defect of the harness, not of a kernel.
BROKEN = """
import sys
from engine.kernels.v6_15 import V6_15
from engine.mm.madvise import MadviseMixin

def madvise_free_range(self, vma, addr, end):
    raise IndexError("list index out of range")
    yield

setattr(V6_15 if sys.argv.pop(1) == "v6.15" else MadviseMixin, "madvise_free_range",
        madvise_free_range)
import service.cli
sys.argv[0] = "foliodiff"
service.cli.main()
"""


def foliodiff(*args):
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def broken_foliodiff(tmp_path, where, *args):
    script = tmp_path / "broken_foliodiff.py"
    script.write_text(BROKEN)
    return subprocess.run([sys.executable, str(script), where, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


# `foliodiff` installed without its [test] extra: no hypothesis.
NO_HYPOTHESIS = """
import sys
sys.modules["hypothesis"] = None       # "import hypothesis" raises ModuleNotFoundError
import service.cli
sys.argv[0] = "foliodiff"
service.cli.main()
"""


def foliodiff_in(cwd, *args, script=None):
    """foliodiff run in @cwd (not the checkout: no store there), without $FOLIODIFF_DB_URL."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FOLIODIFF_DB_URL", None)
    command = [sys.executable, str(script)] if script else [sys.executable, "-m", "service.cli"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


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
    bad.write_text(json.dumps({"version": 2, "threads": [{"name": "T0", "mm": 0}],
                               "ops": [{"thread": "T0", "op": "frobnicate"}]}))
    r = foliodiff("run", str(bad), "--engines", "v6.14,v6.15")
    assert r.returncode == 2
    assert "ops[0].op" in r.stderr and "frobnicate" in r.stderr
    r = foliodiff("run", "corpus/h1-clean-mthp-reclaim.json", "--engines", "v6.14,v9.9")
    assert r.returncode == 2 and "v9.9" in r.stderr
    r = foliodiff("run", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "missing.json" in r.stderr


def test_harness_error_exits_3_with_the_exception_and_its_stack(tmp_path):
    r = broken_foliodiff(tmp_path, "all", "run", "corpus/h1-clean-mthp-reclaim.json",
                         "--engines", "v6.14,v6.15")
    assert r.returncode == 3, r.stderr
    for engine in ("v6.14", "v6.15"):
        assert f"harness error on {engine}: a defect of foliodiff itself" in said(r)
    assert "IndexError at ops[2]" in said(r) and "list index out of range" in said(r)
    assert "stack, innermost first: sys_madvise (mm/madvise.py:" in said(r)
    assert "unexpected" not in r.stdout       # never classified as a kernel divergence


def test_harness_error_of_one_engine_exits_3_alone_or_in_a_pair_and_in_json(tmp_path):
    r = broken_foliodiff(tmp_path, "v6.15", "run", "corpus/h1-clean-mthp-reclaim.json",
                         "--engines", "v6.15")
    assert r.returncode == 3 and "harness error on v6.15" in said(r)
    r = broken_foliodiff(tmp_path, "v6.15", "run", "corpus/h1-clean-mthp-reclaim.json",
                         "--engines", "v6.14")
    assert r.returncode == 0, r.stderr
    r = broken_foliodiff(tmp_path, "v6.15", "run", "corpus/h5-dma-into-lazyfree.json",
                         "--engines", "v6.14,v6.15", "--json")
    assert r.returncode == 3, r.stderr
    report = json.loads(r.stdout)
    assert report["divergences"] == [] and not report["equal"]
    assert [h["field"] for h in report["harness"]] == ["IndexError"]
    assert "harness error on v6.15" in said(r) and "harness error on v6.14" not in said(r)


def test_a_format_1_file_is_read_on_the_first_engine(tmp_path):
    path = tmp_path / "h2-v1.json"
    path.write_text(json.dumps(H2_V1))
    # On v6.14,v6.15 the old schedule keeps H2's window, read on v6.14: intended.
    r = foliodiff("run", str(path), "--engines", "v6.14,v6.15")
    assert r.returncode == 0, r.stderr
    assert "intended" in r.stdout and "swapbacked-only-if-dirty" in r.stdout
    assert "program format 1, upgraded: format-1 schedule of 2 step entries read on v6.14" \
        in said(r)
    # Read on v6.16: the same outcome as the upgrade read there gives.
    r = foliodiff("run", str(path), "--engines", "v6.16", "--json")
    assert r.returncode == 0, r.stderr
    assert "read on v6.16" in said(r)
    want = run(upgrade_program(H2_V1, "v6.16").program, "v6.16").to_dict()
    assert json.loads(r.stdout) == json.loads(json.dumps(want, default=str))
    r = foliodiff("run", str(path), "--engines", "v6.99")
    assert r.returncode == 2 and "v6.99" in said(r)


def test_reproducer_of_a_format_1_file_without_a_schedule(tmp_path):
    entry = json.loads((ROOT / "corpus" / "h8-pmd-thp-redirty.json").read_text())
    assert entry["program"]["schedule"] == []
    entry["program"]["version"] = 1           # as format 1 wrote it
    (tmp_path / "h8-pmd-thp-redirty.json").write_text(json.dumps(entry))
    old = foliodiff("reproducer", str(tmp_path / "h8-pmd-thp-redirty.json"))
    assert old.returncode == 0, old.stderr
    assert "format 1 without a schedule: the same program" in said(old)
    new = foliodiff("reproducer", "corpus/h8-pmd-thp-redirty.json")
    assert new.returncode == 0 and old.stdout == new.stdout


def test_reproducer_of_a_corpus_name_a_file_and_a_stored_divergence(tmp_path):
    from engine.corpus.entries import load_any
    from engine.diff.differential import differential
    from fuzz.records import records_from_report
    from service.store import Store
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
    assert r.returncode == 2 and "ops[3]" in said(r) and "not translatable" in said(r)
    r = foliodiff("reproducer", "--corpus", "h8-pmd-thp-redirty", "--divergence", "1")
    assert r.returncode == 2 and "one of them" in said(r)
    r = foliodiff("reproducer", "--corpus", "h8-pmd-thp-redirty", "--pin", "splice")
    assert r.returncode == 2 and "--pin" in said(r) and "splice" in said(r)


def test_bisect_names_where_a_crash_came_in_and_went_in_json_and_in_the_table():
    r = foliodiff("bisect", "corpus/h12-mremap-straddle.json", "--engines", "v6.14,v6.15", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["engines"] == ["v6.14", "v6.15"] and out["target"]["kind"] == "crash"
    assert [(e["edge"], e["on_path"]) for e in out["edges"] if e["target"]] == \
        [("v6.14->v6.15", True), ("v6.15->v6.16", False)]
    assert [e["change"] for e in out["edges"] if e["target"]] == ["came_in", "went"]
    r = foliodiff("bisect", "corpus/h10-pmd-thp-clean.json", "--engines", "v6.12,v6.14")
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if "->" in line]
    assert any("v5.18->v6.14" in x and "came in (this)" in x for x in rows), r.stdout
    assert any("v6.14->v6.12" in x and "6.12.y" in x and "went (this)" in x
               and "lazyfree-pmd-discard" in x for x in rows), r.stdout


def test_bisect_bad_inputs_exit_2_and_a_harness_error_3(tmp_path):
    r = foliodiff("bisect", "corpus/h5-dma-into-lazyfree.json", "--engines", "v6.14")
    assert r.returncode == 2 and "--engines" in said(r) and "'v6.14'" in said(r)
    r = foliodiff("bisect", "corpus/h5-dma-into-lazyfree.json", "--engines", "v6.14,v9.9")
    assert r.returncode == 2 and "v9.9" in said(r)
    r = foliodiff("bisect", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "missing.json" in said(r)
    r = broken_foliodiff(tmp_path, "v6.15", "bisect", "corpus/h5-dma-into-lazyfree.json",
                         "--engines", "v5.17,v5.18", "--json")
    assert r.returncode == 3, r.stderr
    out = json.loads(r.stdout)
    assert [e["edge"] for e in out["edges"] if e["change"] == "unknown"] == \
        ["v6.14->v6.15", "v6.15->v6.16", "v6.16->v6.19", "v6.19->v7.0", "v7.0->v7.2", "v7.2->v7.3",
         "v6.19->v6.19.y"]
    assert "harness error on v6.15" in said(r) and "harness error on v6.16" in said(r)


# -- foliodiff triage: the store from the command line, the same data as the API --------


def _triage_store(tmp_path) -> tuple[str, dict[str, int]]:
    """A SQLite file store holding H5's data loss minimized with its own run, H12's
    crash as found, and a campaign with H1's intended divergence counted."""
    from engine.corpus.entries import load_any
    from engine.diff.differential import differential
    from fuzz.minimize import minimize_divergence
    from fuzz.records import minimized_run, records_from_report
    from service.store import Store
    h5 = load_any(str(ROOT / "corpus" / "h5-dma-into-lazyfree.json"))
    (loss,) = records_from_report(differential(h5, "v5.17", "v6.14"), h5)
    res = minimize_divergence(h5, "v5.17", "v6.14", loss.signature_id, max_runs=300)
    assert res.report is not None
    loss = dataclasses.replace(loss, minimized_program=res.program.to_json(indent=None),
                               minimized=minimized_run(res.report, loss.signature_id))
    h12 = load_any(str(ROOT / "corpus" / "h12-mremap-straddle.json"))
    (crash,) = records_from_report(differential(h12, "v6.14", "v6.15"), h12)
    h1 = load_any(str(ROOT / "corpus" / "h1-clean-mthp-reclaim.json"))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store.open(url) as store:
        ids = store.upsert_divergences([loss, crash]).ids
        campaign = store.create_campaign("v6.14", "v6.15", "random").id
        store.upsert_divergences(records_from_report(differential(h1, "v6.14", "v6.15"), h1),
                                 campaign_id=campaign)
    return url, {"loss": ids[loss.signature_id], "crash": ids[crash.signature_id],
                 "campaign": campaign}


def _api(url: str):
    import warnings

    from service.api import Settings, create_app
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    return TestClient(create_app(Settings(db_url=url)))


def test_triage_shows_the_same_data_as_the_api(tmp_path):
    url, ids = _triage_store(tmp_path)
    loss = ids["loss"]
    for args in (("transition", str(loss), "confirmed", "--note", "real", "--author", "ann"),
                 ("note", str(loss), "bisect next", "--author", "bob"),
                 ("bisect", str(ids["crash"]))):
        r = foliodiff("triage", *args, "--db", url)
        assert r.returncode == 0, r.stderr
    # the bisection table: H12's crash comes in at v6.14->v6.15 and goes at v6.15->v6.16
    rows = [" ".join(x.split()) for x in r.stdout.splitlines() if "->" in x]
    assert any("v6.14->v6.15" in x and "came_in (this)" in x for x in rows), r.stdout
    assert any("v6.15->v6.16" in x and "went (this)" in x and "bounded-partial-batches" in x
               for x in rows), r.stdout
    with _api(url) as client:
        for args, path in ((("show", str(loss)), f"/divergences/{loss}"),
                           (("show", str(ids["crash"])), f"/divergences/{ids['crash']}"),
                           (("list",), "/divergences"),
                           (("list", "--came-in", "v6.14->v6.15"),
                            "/divergences?came_in=v6.14-%3Ev6.15"),
                           (("list", "--kind", "crash", "--sort", "id"),
                            "/divergences?kind=crash&sort=id"),
                           (("list", "--engines", "v5.17..v6.14", "-q", "cause|"),
                            "/divergences?engines=v5.17..v6.14&q=cause%7C"),
                           (("intended",), "/intended"),
                           (("intended", "--campaign", str(ids["campaign"])),
                            f"/campaigns/{ids['campaign']}/intended")):
            r = foliodiff("triage", *args, "--json", "--db", url)
            assert r.returncode == 0, r.stderr
            want = client.get(path)
            assert want.status_code == 200
            assert json.loads(r.stdout) == want.json(), args
        (sample,) = client.get("/intended").json()["items"][0]["samples"]
        r = foliodiff("triage", "program", str(sample), "--json", "--db", url)
        assert json.loads(r.stdout) == client.get(f"/programs/{sample}").json()
        assert client.get(f"/divergences/{ids['crash']}").json()["came_in"] == "v6.14->v6.15"
        d = client.get(f"/divergences/{loss}").json()
    assert d["run_of"] == "minimized" and d["events"] and d["notes"]
    # The table says it too: the reproducer's run, the original's labelled, the history.
    r = foliodiff("triage", "show", str(loss), "--db", url)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    small = len(d["minimized_program"]["ops"])
    assert 0 < small < len(d["original_program"]["ops"]) == 10
    assert f"the minimized program's run (10 -> {small} ops)" in out
    assert f"detail {d['detail']}" in out and "allowed 1" in out
    assert "original program's run (kept; the reproducer is the minimized program)" in out
    assert "allowed 42" in out
    assert f"▶ [{d['first_op']}]" in out
    assert "refcount-check-before-lazyfree-discard" in out and "6c8e2a256915" in out
    assert "new -> confirmed" in out and "bisect next" in out
    assert f"not bisected yet: foliodiff triage bisect {loss}" in out
    # A replay on another pair notes what it found and changes nothing else.
    r = foliodiff("triage", "replay", str(ids["crash"]), "--engines", "v6.14,v6.16",
                  "--json", "--db", url)
    assert r.returncode == 0, r.stderr
    out_json = json.loads(r.stdout)
    assert out_json["engines"] == ["v6.14", "v6.16"] and not out_json["reproduces"]
    assert out_json["status_before"] == out_json["status_after"] == "new"
    r = foliodiff("triage", "replay", str(ids["crash"]), "--engines", "v6.14", "--db", url)
    assert r.returncode == 2 and "engines" in said(r) and "v6.14" in said(r)
    # The store URL comes from $FOLIODIFF_DB_URL when --db is not given.
    r = subprocess.run([sys.executable, "-m", "service.cli", "triage", "list", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "FOLIODIFF_DB_URL": url})
    assert r.returncode == 0 and json.loads(r.stdout)["total"] == 2


def test_triage_transitions_notes_duplicates_and_exports(tmp_path):
    from engine.corpus.entries import check_entry, load_entry
    url, ids = _triage_store(tmp_path)
    loss, crash = ids["loss"], ids["crash"]

    def triage(*args):
        r = foliodiff("triage", *args, "--db", url)
        assert "Traceback" not in r.stderr, r.stderr
        return r

    r = triage("dup", str(crash), "--of", str(loss), "--note", "same DMA", "--json")
    assert r.returncode == 0, r.stderr
    assert (json.loads(r.stdout)["status"], json.loads(r.stdout)["duplicate_of"]) == (
        "duplicate", loss)
    r = triage("transition", str(crash), "confirmed")
    assert r.returncode == 0 and f"divergence #{crash} is now confirmed" in r.stdout
    r = triage("note", str(crash), "looked at it", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["text"] == "looked at it"
    r = triage("list", "--status", "confirmed", "--json")
    assert [d["id"] for d in json.loads(r.stdout)["items"]] == [crash]

    corpus, c = tmp_path / "loss.json", tmp_path / "loss.c"
    r = triage("export", str(loss), "--corpus", str(corpus), "--c", str(c))
    assert r.returncode == 0, r.stderr
    entry = load_entry(str(corpus))
    assert check_entry(entry) == [] and "allowed 1" in entry["description"]
    with _api(url) as client:                               # the minimized program
        minimized = client.get(f"/divergences/{loss}").json()["minimized_program"]
    assert entry["program"].to_dict() == minimized and len(minimized["ops"]) < 10
    assert f"foliodiff reproducer divergence-{loss}:" in c.read_text()

    # Bad input: one line naming the option or argument and the value, exit 2.
    for args, said_ in (
            (("show", "999"), "divergence 999 not found"),
            (("show", "3000000000"), "ID: must be at most 2147483647 (got 3000000000)"),
            (("transition", str(crash), "verified"),
             "cannot go from 'confirmed' to 'verified'"),
            (("transition", str(crash), "sideways"), "STATUS:"),
            (("transition", str(crash), "duplicate"), f"triage dup {crash} --of OTHER"),
            (("dup", str(crash), "--of", "77"), "--of: no such divergence (got 77)"),
            (("dup", str(crash), "--of", str(crash)), "a divergence cannot duplicate itself"),
            (("note", str(crash), "  "), "TEXT:"),
            (("list", "--kind", "boom"), "--kind: must be one of"),
            (("list", "--engines", "v6.14..v9.9"), "--engines: unknown engine 'v9.9'"),
            (("list", "--sort", "outcome_a"), "--sort: must be one of"),
            (("list", "--limit", "0"), "--limit: must be 1..1000 (got 0)"),
            (("intended", "--campaign", "42"), "campaign 42 not found"),
            (("program", "999"), "program 999 not found"),
            (("export", str(loss)), "--corpus/--c"),
            (("export", str(loss), "--c", str(tmp_path / "x.c"), "--pin", "splice"),
             "--pin: must be one of io_uring, vmsplice (got 'splice')"),
            (("export", str(loss), "--corpus", str(tmp_path / "no" / "x.json")),
             "--corpus: cannot write")):
        r = triage(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert said_ in said(r), (args, said(r))
        assert said(r).startswith("error:")
    # Nothing of the refused commands was kept.
    r = triage("show", str(crash), "--json")
    d = json.loads(r.stdout)
    assert d["status"] == "confirmed" and [n["text"] for n in d["notes"]] == ["looked at it"]
    r = foliodiff("triage", "list", "--db", "nonsense://")
    assert r.returncode == 2 and "--db: cannot open the store nonsense://" in said(r)
    missing = tmp_path / "elsewhere" / "foliodiff.db"
    r = foliodiff("triage", "list", "--db", f"sqlite:///{missing}")
    assert r.returncode == 2 and f"no such file {str(missing)!r}" in said(r)
    assert not missing.exists() and not missing.parent.exists()


def test_reproducer_of_a_divergence_refuses_a_store_that_is_not_there(tmp_path):
    r = foliodiff_in(tmp_path, "reproducer", "--divergence", "1")
    assert r.returncode == 2, r.stderr
    assert f"no such file {str(tmp_path / 'foliodiff.db')!r}" in said(r)
    assert "sqlite:///foliodiff.db" in said(r)
    assert not (tmp_path / "foliodiff.db").exists()         # no empty store left behind
    r = foliodiff_in(tmp_path, "reproducer", "--divergence", "1",
                     "--db", f"sqlite:///{tmp_path / 'other.db'}")
    assert r.returncode == 2 and str(tmp_path / "other.db") in said(r)
    assert not (tmp_path / "other.db").exists()


@pytest.mark.parametrize("create", [[], ["--create"]], ids=["read", "create"])
def test_serve_refuses_to_start_on_a_store_it_cannot_open(tmp_path, create):
    url = "sqlite:////nonexistent/dir/x.db"
    r = foliodiff_in(tmp_path, "serve", "--db", url, "--port", "1", *create)
    assert r.returncode == 2, r.stderr
    why = "unable to open database file" if create else "no such file '/nonexistent/dir/x.db'"
    assert f"cannot open the store {url}: {why}" in said(r)
    junk = tmp_path / "notes.db"
    junk.write_text("not a database\n" * 100)
    r = foliodiff_in(tmp_path, "serve", "--db", f"sqlite:///{junk}", "--port", "1", *create)
    assert r.returncode == 2, r.stderr
    assert f"cannot open the store sqlite:///{junk}: file is not a database" in said(r)
    assert junk.read_text() == "not a database\n" * 100
    r = foliodiff_in(tmp_path, "serve", "--port", "1", *create, "--db", "nosuch://x")
    assert r.returncode == 2 and "cannot open the store nosuch://x: not a database URL" in said(r)


def test_serve_refuses_a_missing_store_unless_asked_to_create_it(tmp_path):
    r = foliodiff_in(tmp_path, "serve", "--port", "1")
    assert r.returncode == 2 and str(tmp_path / "foliodiff.db") in said(r)
    assert not (tmp_path / "foliodiff.db").exists()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FOLIODIFF_DB_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--create",
                               "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/campaigns") as answer:
                    assert json.loads(answer.read())["total"] == 0
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, \
                    server.stderr.read() if server.stderr else ""
                time.sleep(0.2)
        assert (tmp_path / "foliodiff.db").is_file()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_fuzzer_without_its_package_is_refused_naming_the_extra(tmp_path):
    from service.campaign import CampaignConfig, create
    from service.models import CampaignStatus
    from service.store import Store
    script = tmp_path / "foliodiff_without_test_extra.py"
    script.write_text(NO_HYPOTHESIS)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    r = foliodiff_in(tmp_path, "fuzz", "--fuzzer", "hypothesis", "--time", "5", "--db", url,
                     "--no-live", script=script)
    assert r.returncode == 2, r.stdout + r.stderr
    assert ("the hypothesis fuzzer needs the 'hypothesis' package, which is not importable"
            in said(r))
    assert "install it with pip install 'foliodiff[test]'" in said(r)
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "store.db").exists()              # refused before any campaign
    # A hypothesis campaign made where the package was: not resumed, left as it was.
    with Store.open(url) as store:
        cid = create(store, CampaignConfig(fuzzer="hypothesis", engine_a="v6.14",
                                           engine_b="v6.15", seconds=5))
    r = foliodiff_in(tmp_path, "fuzz", "--resume", str(cid), "--db", url, "--no-live",
                     script=script)
    assert r.returncode == 2 and "pip install 'foliodiff[test]'" in said(r)
    with Store.open(url) as store:
        campaign = store.get_campaign(cid)
        assert campaign.status is CampaignStatus.PENDING and campaign.lease_token is None
        assert store.stats(cid) == []
