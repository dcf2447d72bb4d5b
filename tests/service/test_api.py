"""The triage API over a real SQLite file and a real PostgreSQL database.

Listing, triage, replay, export, runs, errors.  Every test runs on both
backends (``url`` in conftest.py) and gets a fresh, empty database seeded through the
Store with records of real differential runs of corpus programs, and a fresh
app on it.  One test serves the app with a real uvicorn on a free loopback port.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
import warnings
from pathlib import Path

import httpx
import pytest
import uvicorn

with warnings.catch_warnings():
    # starlette deprecates its httpx-based client in favour of httpx2; same API.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from programs_v1 import H2

from engine import RULES
from engine.corpus.entries import check_entry, load_any, load_entry
from engine.corpus.upgrade import upgrade_program
from engine.diff.differential import Classification, Kind, differential
from engine.program.format import Program
from fuzz.minimize import minimize_divergence
from fuzz.records import DivergenceRecord, minimized_run, records_from_report
from service.api import Settings, create_app
from service.store import Store

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
CAUSES = Path(__file__).resolve().parents[1] / "data" / "causes"
TOKEN = "s3cret-token"


def _record(name: str, a: str, b: str) -> DivergenceRecord:
    program = load_any(str(CORPUS / name))
    (rec,) = records_from_report(differential(program, a, b), program)
    assert rec.classification is Classification.UNEXPECTED
    return rec


@pytest.fixture(scope="module")
def data_loss() -> DivergenceRecord:
    rec = _record("h5-dma-into-lazyfree.json", "v5.17", "v6.14")
    assert rec.kind is Kind.DATA_LOSS
    return rec


@pytest.fixture(scope="module")
def crash() -> DivergenceRecord:
    rec = _record("h12-mremap-straddle.json", "v6.14", "v6.15")
    assert rec.kind is Kind.CRASH
    return rec


@pytest.fixture
def seeded(url: str, data_loss: DivergenceRecord, crash: DivergenceRecord) -> dict[str, int]:
    """Store the two divergences (data loss seen twice) and a campaign with two snapshots."""
    with Store.open(url) as store:
        ids = store.upsert_divergences([data_loss, data_loss, crash]).ids
        campaign = store.create_campaign("v6.14", "v6.15", "random", {"seed": 1})
        store.add_stats_snapshot(campaign.id, 10.0, 1000, 100.0, 12, {"crash": 1})
        store.add_stats_snapshot(campaign.id, 20.0, 2100, 110.0, 15, {"crash": 1, "state": 2})
    return {"data_loss": ids[data_loss.signature_id], "crash": ids[crash.signature_id],
            "campaign": campaign.id}


def _client(url: str, **settings: object):
    return TestClient(create_app(Settings(db_url=url, **settings)))


@pytest.fixture
def client(url: str, seeded: dict[str, int]):
    with _client(url) as c:
        yield c


def _program(name: str) -> dict:
    return load_any(str(CORPUS / name)).to_dict()


# -- listing ---------------------------------------------------------------------------


def test_list_filters_and_paginates(client: TestClient, seeded: dict[str, int]) -> None:
    page = client.get("/divergences").json()
    assert page["total"] == 2 and len(page["items"]) == 2
    by_kind = client.get("/divergences", params={"kind": "data_loss"}).json()
    assert [d["id"] for d in by_kind["items"]] == [seeded["data_loss"]]
    assert by_kind["items"][0]["hit_count"] == 2
    pair = client.get("/divergences", params={"engines": "v6.14..v6.15"}).json()
    assert [d["id"] for d in pair["items"]] == [seeded["crash"]]
    text = client.get("/divergences", params={"q": "cause|try_to_unmap_one", "status": "new",
                                              "classification": "unexpected"}).json()
    assert [d["id"] for d in text["items"]] == [seeded["data_loss"]]
    assert client.get("/divergences", params={"status": "fixed"}).json()["total"] == 0
    first = client.get("/divergences", params={"sort": "id", "limit": 1}).json()
    second = client.get("/divergences", params={"sort": "id", "limit": 1, "offset": 1}).json()
    assert first["total"] == second["total"] == 2
    assert first["items"][0]["id"] < second["items"][0]["id"]


@pytest.mark.parametrize("params, field", [({"engines": "v6.14..nope"}, "engines"),
                                           ({"engines": "v6.14"}, "engines"),
                                           ({"kind": "boom"}, "kind"),
                                           ({"sort": "outcome_a"}, "sort"),
                                           ({"limit": 0}, "limit")])
def test_list_rejects_bad_filters_naming_the_field(client: TestClient, params: dict,
                                                   field: str) -> None:
    r = client.get("/divergences", params=params)
    assert r.status_code == 422
    assert r.json()["field"] == field


# -- one divergence ----------------------------------------------------------------------


def test_get_shows_both_outcomes_programs_and_replay_command(
        client: TestClient, seeded: dict[str, int], data_loss: DivergenceRecord) -> None:
    d = client.get(f"/divergences/{seeded['data_loss']}").json()
    assert (d["engine_a"], d["engine_b"]) == ("v5.17", "v6.14")
    assert d["outcome_a"]["verdict"] == "data_loss" and d["outcome_b"]["verdict"] == "ok"
    verdict = next(row for row in d["side_by_side"] if row["field"] == "verdict")
    assert verdict == {"field": "verdict", "a": "data_loss", "b": "ok", "differs": True}
    assert d["side_by_side"][0]["differs"]
    assert d["original_program"] == json.loads(data_loss.original_program)
    assert d["minimized_program"] is None
    assert d["replay_command"] == f"foliodiff run {d['corpus_file']} --engines v5.17,v6.14"


@pytest.fixture(scope="module")
def minimized_loss(data_loss: DivergenceRecord) -> DivergenceRecord:
    """The data loss with its minimized program and that program's own run, as a
    campaign's sink stores it."""
    program = load_any(str(CORPUS / "h5-dma-into-lazyfree.json"))
    res = minimize_divergence(program, "v5.17", "v6.14", data_loss.signature_id, max_runs=300)
    assert res.report is not None and len(res.program.ops) < len(program.ops)
    return dataclasses.replace(data_loss, minimized_program=res.program.to_json(indent=None),
                               minimized=minimized_run(res.report, data_loss.signature_id))


def test_get_shows_the_minimized_programs_run_and_the_originals_labelled(
        url: str, minimized_loss: DivergenceRecord, tmp_path: Path) -> None:
    with Store.open(url) as store:
        did = store.upsert_divergences([minimized_loss]).ids[minimized_loss.signature_id]
    run = minimized_loss.minimized
    assert run is not None
    with _client(url) as client:
        d = client.get(f"/divergences/{did}").json()
        # The reproducer's own run first: "allowed 1" is what the minimized program writes.
        assert (d["minimized"], d["run_of"]) == (True, "minimized")
        assert (d["detail"], d["first_op"]) == (run.detail, run.first_op)
        assert "allowed 1" in d["detail"]
        minimized = json.loads(minimized_loss.minimized_program or "")
        assert d["minimized_program"] == minimized
        assert d["parting_op"] == {"index": run.first_op, "op": minimized["ops"][run.first_op]}
        assert d["outcome_a"]["crash"]["message"].endswith("allowed 1")
        verdict = next(row for row in d["side_by_side"] if row["field"] == "verdict")
        assert verdict == {"field": "verdict", "a": "data_loss", "b": "ok", "differs": True}
        # The original's run, kept and labelled as such.
        o = d["original_run"]
        assert o["program"] == "original" and "allowed 42" in o["detail"]
        assert (o["detail"], o["first_op"]) == (minimized_loss.detail, minimized_loss.first_op)
        assert o["outcome_a"]["crash"]["message"].endswith("allowed 42")
        assert d["original_program"] == json.loads(minimized_loss.original_program)
        # The list says the same as the record.
        (item,) = client.get("/divergences").json()["items"]
        assert (item["detail"], item["first_op"], item["run_of"]) == (
            run.detail, run.first_op, "minimized")
        # The corpus file pins the reproducer with its own run.
        entry = client.get(f"/divergences/{did}/corpus").json()
        assert entry["program"] == minimized and entry["description"].endswith(run.detail)
        path = tmp_path / f"{entry['name']}.json"
        path.write_text(json.dumps(entry))
        assert check_entry(load_entry(str(path))) == []


def test_get_shows_the_pairs_rules_and_the_history(client: TestClient,
                                                  seeded: dict[str, int]) -> None:
    did = seeded["data_loss"]
    d = client.get(f"/divergences/{did}").json()
    assert (d["run_of"], d["original_run"], d["events"], d["notes"]) == ("original", None, [], [])
    rules = {r["name"]: r for r in d["pair_rules"]}
    assert rules["refcount-check-before-lazyfree-discard"]["patch"].startswith("6c8e2a256915")
    assert all(r["older"] != "v6.14" for r in d["pair_rules"])       # v5.17 .. v6.14 only
    client.post(f"/divergences/{did}/transitions",
                json={"to": "confirmed", "note": "real", "author": "ann"})
    client.post(f"/divergences/{did}/notes", json={"text": "bisected", "author": "bob"})
    d = client.get(f"/divergences/{did}").json()
    h = client.get(f"/divergences/{did}/history").json()
    assert (d["events"], d["notes"]) == (h["events"], h["notes"])
    assert [e["to_status"] for e in d["events"]] == ["confirmed"]
    assert [n["text"] for n in d["notes"]] == ["bisected"]


def test_intended_divergences_per_rule_and_campaign_with_their_samples(url: str) -> None:
    program = load_any(str(CORPUS / "h1-clean-mthp-reclaim.json"))
    records = records_from_report(differential(program, "v6.14", "v6.15"), program)
    (rule,) = {r for rec in records for r in rec.rules}
    with Store.open(url) as store:
        first = store.create_campaign("v6.14", "v6.15", "random").id
        second = store.create_campaign("v6.14", "v6.15", "pct").id
        store.upsert_divergences(records * 3, campaign_id=first)
        store.upsert_divergences(records, campaign_id=second)
        store.create_campaign("v6.15", "v6.16", "pct")          # none counted
    with _client(url) as client:
        one = client.get(f"/campaigns/{first}/intended").json()
        (item,) = one["items"]
        assert (item["rule"], item["campaign_id"], item["count"]) == (rule, first, 3)
        assert item["patch"] == next(r.patch for r in RULES if r.name == rule)
        assert one["total"] == 3 and len(item["samples"]) == 1
        sample = client.get(f"/programs/{item['samples'][0]}").json()
        assert sample["program"] == program.to_dict()
        every = client.get("/intended").json()
        assert [(i["rule"], i["campaign_id"], i["count"]) for i in every["items"]] == [
            (rule, first, 3), (rule, second, 1)]
        assert every["total"] == 4
        assert client.get("/programs/0").status_code == 422
        assert client.get("/campaigns/0/intended").json()["field"] == "campaign_id"


def test_unknown_id_is_404(client: TestClient) -> None:
    for path in ("/divergences/999", "/divergences/999/history", "/divergences/999/corpus",
                 "/campaigns/999", "/campaigns/999/intended", "/programs/999"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.json()["value"] == 999
    r = client.post("/divergences/999/transitions", json={"to": "confirmed", "author": "me"})
    assert r.status_code == 404


# -- triage ----------------------------------------------------------------------------


def test_transitions_legal_illegal_and_history(client: TestClient,
                                                seeded: dict[str, int]) -> None:
    did = seeded["crash"]
    r = client.post(f"/divergences/{did}/transitions",
                    json={"to": "confirmed", "note": "real bug", "author": "ann"})
    assert r.status_code == 200 and r.json()["status"] == "confirmed"
    r = client.post(f"/divergences/{did}/transitions", json={"to": "verified", "author": "ann"})
    assert r.status_code == 409
    assert r.json()["field"] == "to" and r.json()["value"] == "verified"
    r = client.post(f"/divergences/{did}/notes", json={"text": "bisected", "author": "bob"})
    assert r.status_code == 201
    h = client.get(f"/divergences/{did}/history").json()
    assert h["status"] == "confirmed"
    assert [(e["from_status"], e["to_status"], e["note"]) for e in h["events"]] == [
        ("new", "confirmed", "real bug")]
    assert [n["text"] for n in h["notes"]] == ["bisected"]


def test_duplicate_needs_an_existing_target(client: TestClient, seeded: dict[str, int]) -> None:
    did = seeded["crash"]
    r = client.post(f"/divergences/{did}/transitions",
                    json={"to": "duplicate", "author": "ann", "duplicate_of": 12345})
    assert r.status_code == 422 and r.json()["field"] == "duplicate_of"
    r = client.post(f"/divergences/{did}/transitions",
                    json={"to": "duplicate", "author": "ann", "duplicate_of": seeded["data_loss"]})
    assert r.status_code == 200 and r.json()["duplicate_of"] == seeded["data_loss"]


def test_bad_transition_body_names_the_field(client: TestClient, seeded: dict[str, int]) -> None:
    r = client.post(f"/divergences/{seeded['crash']}/transitions",
                    json={"to": "sideways", "author": "ann"})
    assert r.status_code == 422 and r.json()["field"] == "to"
    r = client.post(f"/divergences/{seeded['crash']}/transitions", json={"to": "confirmed"})
    assert r.status_code == 422 and r.json()["field"] == "author"


def test_token_required_on_writes_when_set(url: str, seeded: dict[str, int]) -> None:
    did = seeded["crash"]
    body = {"to": "confirmed", "author": "ann"}
    with _client(url, token=TOKEN) as c:
        assert c.get("/divergences").status_code == 200       # reads stay open
        r = c.post(f"/divergences/{did}/transitions", json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = c.post(f"/divergences/{did}/transitions", json=body,
                   headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        assert c.post("/run", json={"program": {}}).status_code == 401
        r = c.post(f"/divergences/{did}/transitions", json=body,
                   headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200


# -- replay ----------------------------------------------------------------------------


def _to_fixed(client: TestClient, did: int) -> None:
    for to in ("confirmed", "fixed"):
        assert client.post(f"/divergences/{did}/transitions",
                           json={"to": to, "author": "ann"}).status_code == 200


def test_replay_reopens_a_fix_that_still_reproduces(client: TestClient,
                                                    seeded: dict[str, int]) -> None:
    did = seeded["data_loss"]
    _to_fixed(client, did)
    r = client.post(f"/divergences/{did}/replay", json={"author": "ci"})
    assert r.status_code == 200
    out = r.json()
    assert out["reproduces"] and (out["status_before"], out["status_after"]) == (
        "fixed", "confirmed")
    assert out["report"]["engines"] == ["v5.17", "v6.14"]
    events = client.get(f"/divergences/{did}/history").json()["events"]
    assert events[-1]["to_status"] == "confirmed" and events[-1]["author"] == "ci"
    assert "still reproduces" in events[-1]["note"]


def test_replay_verifies_a_fix_that_no_longer_reproduces(url: str,
                                                         data_loss: DivergenceRecord) -> None:
    # The same signature stored with a reproducer on which both engines agree:
    # as if the engine had been fixed since it was found.
    quiet = Program.model_validate({"version": 2, "threads": [{"name": "T0", "mm": 0}],
                                    "ops": [{"thread": "T0", "op": "mmap", "addr": 2097152,
                                             "pages": 1}]})
    assert differential(quiet, "v5.17", "v6.14").equal
    rec = dataclasses.replace(data_loss, original_program=quiet.to_json(indent=None))
    with Store.open(url) as store:
        did = store.upsert_divergences([rec]).ids[rec.signature_id]
    with _client(url) as client:
        _to_fixed(client, did)
        out = client.post(f"/divergences/{did}/replay").json()
        assert not out["reproduces"]
        assert (out["status_before"], out["status_after"]) == ("fixed", "verified")
        assert client.get(f"/divergences/{did}").json()["status"] == "verified"


def test_replay_of_a_new_record_only_notes(client: TestClient, seeded: dict[str, int]) -> None:
    did = seeded["crash"]
    out = client.post(f"/divergences/{did}/replay").json()
    assert out["reproduces"] and out["status_after"] == "new"
    notes = client.get(f"/divergences/{did}/history").json()["notes"]
    assert "still reproduces" in notes[-1]["text"]


def test_replay_on_another_pair_checks_the_same_defect_and_only_notes(
        client: TestClient, seeded: dict[str, int]) -> None:
    did = seeded["crash"]                       # H12's crash, found on v6.14,v6.15
    _to_fixed(client, did)
    # v6.16 has the fix (ddd05742b45b): on v6.14,v6.16 the crash is gone
    out = client.post(f"/divergences/{did}/replay",
                      json={"author": "ci", "engines": "v6.14,v6.16"}).json()
    assert out["engines"] == ["v6.14", "v6.16"] and not out["reproduces"]
    assert (out["status_before"], out["status_after"]) == ("fixed", "fixed")
    # the same crash on another pair that has it: v5.17 does not batch, v6.15 does
    out = client.post(f"/divergences/{did}/replay", json={"engines": "v5.17,v6.15"}).json()
    assert out["reproduces"] and out["status_after"] == "fixed"
    notes = [n["text"] for n in client.get(f"/divergences/{did}/history").json()["notes"]]
    assert notes[-2:] == ["replay on v6.14,v6.16: no longer reproduces",
                          "replay on v5.17,v6.15: still reproduces"]
    r = client.post(f"/divergences/{did}/replay", json={"engines": "v6.14,v9.9"})
    assert r.status_code == 422 and "engines" in r.text and "v9.9" in r.text


def test_bisection_is_kept_shown_and_filters_the_list(client: TestClient,
                                                       seeded: dict[str, int]) -> None:
    crash, loss = seeded["crash"], seeded["data_loss"]
    assert client.get(f"/divergences/{crash}").json()["bisection"] is None
    d = client.post(f"/divergences/{crash}/bisect").json()
    target = [(e["edge"], e["change"]) for e in d["bisection"]["edges"] if e["target"]]
    assert target == [("v6.14->v6.15", "came_in"), ("v6.15->v6.16", "went")]
    assert (d["came_in"], d["went"]) == ("v6.14->v6.15", "v6.15->v6.16")
    d = client.post(f"/divergences/{loss}/bisect").json()
    assert (d["came_in"], d["went"]) == (None, "v5.17->v5.18")     # H5: 6c8e2a256915
    went = [e for e in d["bisection"]["edges"] if e["target"]]
    assert [r["name"] for r in went[0]["rules"]] == ["refcount-check-before-lazyfree-discard"]
    page = client.get("/divergences", params={"came_in": "v6.14->v6.15"}).json()
    assert [x["id"] for x in page["items"]] == [crash]
    page = client.get("/divergences", params={"went": "v5.17->v5.18"}).json()
    assert [x["id"] for x in page["items"]] == [loss]
    assert client.get("/divergences", params={"went": "v6.14->v6.15"}).json()["total"] == 0
    r = client.get("/divergences", params={"came_in": "v6.14-v6.15"})
    assert r.status_code == 422 and "came_in" in r.text and "v6.14-v6.15" in r.text
    assert client.post("/divergences/999/bisect").status_code == 404


def test_bisection_groups_what_one_patch_fixed(url: str, crash: DivergenceRecord) -> None:
    # v6.15's batch reading past the PTE table (H12's crash) and restoring PTEs
    # past the VMA sign apart, two decisions; both came in at v6.14->v6.15 and
    # went at v6.15->v6.16 by bounded-partial-batches (ddd05742b45b): one bug.
    program = load_any(str(CAUSES / "batch-restore-vma-write-in-reclaim.json"))
    (vma,) = records_from_report(differential(program, "v6.14", "v6.15"), program)
    assert vma.kind is Kind.INVARIANT and vma.signature != crash.signature
    other = load_any(str(CAUSES / "batch-restore-vma-write-in-fork.json"))
    (fork,) = records_from_report(differential(other, "v6.14", "v6.15"), other)
    fork = dataclasses.replace(fork, signature=fork.signature + "|as stored before 0008",
                               signature_id="00000000000000f0")
    with Store.open(url) as store:
        ids = store.upsert_divergences([crash, vma, fork]).ids
        first, second = ids[crash.signature_id], ids[vma.signature_id]
        third = ids[fork.signature_id]
        store.transition(third, "duplicate", author="ann", duplicate_of=second)
    with _client(url) as client:
        assert client.post(f"/divergences/{first}/bisect").json()["status"] == "new"
        d = client.post(f"/divergences/{second}/bisect").json()
        assert (d["status"], d["duplicate_of"]) == ("duplicate", first)
        [event] = d["events"]
        assert event["author"] == "bisection" and "bounded-partial-batches" in event["note"]
        # what duplicated the merged record follows it: no duplicate of a duplicate
        assert client.get(f"/divergences/{third}").json()["duplicate_of"] == first
        [event] = client.get(f"/divergences/{third}/history").json()["events"][-1:]
        assert event["author"] == "bisection" and f"merged into #{first}" in event["note"]
        # a triager splits it off again; bisecting again does not overrule that
        client.post(f"/divergences/{second}/transitions", json={"to": "confirmed",
                                                                "author": "ann"})
        d = client.post(f"/divergences/{second}/bisect").json()
        assert (d["status"], d["duplicate_of"]) == ("confirmed", None)


# -- corpus export -----------------------------------------------------------------------


def test_corpus_export_round_trips(client: TestClient, seeded: dict[str, int],
                                   tmp_path: Path) -> None:
    for did in (seeded["data_loss"], seeded["crash"]):
        entry = client.get(f"/divergences/{did}/corpus").json()
        assert entry["scenario"] == "fuzz"
        path = tmp_path / f"{entry['name']}.json"
        path.write_text(json.dumps(entry, indent=2))
        loaded = load_entry(str(path))
        d = client.get(f"/divergences/{did}").json()
        assert loaded["program"].to_dict() == d["original_program"]
        assert set(loaded["expect"]) == {d["engine_a"], d["engine_b"]}
        assert loaded["divergences"] == {f"{d['engine_a']}..{d['engine_b']}": {
            "classification": "unexpected", "kind": d["kind"]}}
        assert check_entry(loaded) == []


# -- runs ----------------------------------------------------------------------------------


def test_run_returns_the_report(client: TestClient) -> None:
    r = client.post("/run", json={"program": _program("h5-dma-into-lazyfree.json"),
                                  "engines": "v5.17,v6.14"})
    assert r.status_code == 200
    report = r.json()
    assert report["engines"] == ["v5.17", "v6.14"] and report["unexpected"]
    assert report["divergences"][0]["kind"] == "data_loss"


def test_run_reads_a_format_1_program_on_the_first_engine(client: TestClient) -> None:
    r = client.post("/run", json={"program": H2, "engines": "v6.15,v6.16"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["upgrade"]["reading"] == "v6.15" and report["upgrade"]["dropped"] == []
    assert "read on v6.15" in report["upgrade"]["note"]
    want = differential(upgrade_program(H2, "v6.15").program, "v6.15", "v6.16").to_dict()
    assert report["outcomes"] == json.loads(json.dumps(want["outcomes"]))
    # The same program read on v6.14 keeps H2's window: the intended divergence.
    report = client.post("/run", json={"program": H2, "engines": "v6.14,v6.15"}).json()
    assert report["upgrade"]["reading"] == "v6.14"
    assert [d["classification"] for d in report["divergences"]] == ["intended"]
    # Format 2 needs no reading.
    r = client.post("/run", json={"program": _program("h4-small-redirty.json")})
    assert r.status_code == 200 and r.json()["upgrade"] is None


def test_run_bad_format_1_program_names_the_field(client: TestClient) -> None:
    for program, field in (({**H2, "schedule": [[20, "Z"]]}, "schedule[0][1]"),
                           ({**H2, "ops": 5}, "program.ops"),
                           ({**H2, "schedule": "soon"}, "schedule")):
        r = client.post("/run", json={"program": program})
        assert r.status_code == 422, r.text
        assert r.json()["field"] == field


def test_run_bad_op_names_the_field(client: TestClient) -> None:
    program = {"version": 2, "threads": [{"name": "T0", "mm": 0}],
               "ops": [{"thread": "T0", "op": "explode"}]}
    r = client.post("/run", json={"program": program})
    assert r.status_code == 422
    assert r.json()["field"] == "ops[0].op" and r.json()["value"] == "explode"


@pytest.mark.parametrize("engines", ["v6.14", "v6.14,v9.99", "v6.14,v6.15,v5.17"])
def test_run_bad_engines_is_422(client: TestClient, engines: str) -> None:
    r = client.post("/run", json={"program": _program("h4-small-redirty.json"),
                                  "engines": engines})
    assert r.status_code == 422 and r.json()["field"] == "engines"


def test_run_refuses_programs_too_costly_to_run(client: TestClient) -> None:
    ops = [{"thread": "T0", "op": "mmap", "addr": 2097152, "pages": 4096},
           {"thread": "T0", "op": "write", "addr": 2097152, "pages": 4096, "value": 1}]
    program = {"version": 2, "threads": [{"name": "T0", "mm": 0}], "ops": ops}
    # Format 1 with a schedule too: refused before the run that would read it.
    old = {**program, "version": 1, "schedule": [[1, "T0"]]}
    for body in (program, old):
        started = time.monotonic()
        r = client.post("/run", json={"program": body, "engines": "v5.17,v6.15"})
        assert r.status_code == 422 and r.json()["field"] == "program.ops"
        assert time.monotonic() - started < 5


def test_oversized_body_is_413(client: TestClient) -> None:
    big = json.dumps({"program": {"pad": "x" * (1 << 20)}})
    r = client.post("/run", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"

    def chunks():   # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b"x" * (64 << 10)

    r = client.post("/run", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_malformed_json_is_4xx_with_a_json_body(client: TestClient) -> None:
    r = client.post("/run", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "field" in r.json()


# -- campaigns -----------------------------------------------------------------------------


def test_campaigns_and_stats_over_time(client: TestClient, seeded: dict[str, int]) -> None:
    page = client.get("/campaigns").json()
    assert page["total"] == 1 and page["items"][0]["fuzzer"] == "random"
    c = client.get(f"/campaigns/{seeded['campaign']}").json()
    assert [s["t"] for s in c["stats"]] == [10.0, 20.0]
    assert c["stats"][1]["signatures"] == {"crash": 1, "state": 2}
    # Snapshots without coverage say so (null), never 0; nobody runs it now.
    assert [(s["coverage"], s["coverage_unit"]) for s in c["stats"]] == [(None, None)] * 2
    assert (c["lease_host"], c["lease_pid"], c["lease_heartbeat"]) == (None, None, None)


def test_a_campaign_shows_its_coverage_unit_and_its_runner(url: str) -> None:
    from service.store import Lease
    with Store.open(url) as store:
        cid = store.create_campaign("v6.14", "v6.15", "atheris").id
        store.add_stats_snapshot(cid, 5.0, 100, 20.0, 3, {}, coverage=812, coverage_unit="edges")
        store.take_lease(cid, Lease(host="fuzz-1.example", pid=31, token="d" * 32))
    with _client(url) as client:
        c = client.get(f"/campaigns/{cid}").json()
    assert (c["stats"][0]["coverage"], c["stats"][0]["coverage_unit"]) == (812, "edges")
    assert (c["lease_host"], c["lease_pid"]) == ("fuzz-1.example", 31)
    assert c["lease_heartbeat"] is not None and "lease_token" not in c


def test_openapi_documents_error_codes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    codes = set(paths["/divergences/{divergence_id}/transitions"]["post"]["responses"])
    assert {"200", "401", "404", "409", "413", "422"} <= codes
    assert {"200", "401", "413", "422"} <= set(paths["/run"]["post"]["responses"])


# -- a real server -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_uvicorn_server(url: str, seeded: dict[str, int]) -> None:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(db_url=url)), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        r = httpx.get(f"http://127.0.0.1:{port}/divergences", timeout=5)
        assert r.status_code == 200 and r.json()["total"] == 2
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()
