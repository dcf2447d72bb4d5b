"""Harness errors, on a real SQLite file and a real PostgreSQL database.

A run that raised an exception which is no modelled kernel report (here: a
model path made to index past a list) ends in ``Verdict.HARNESS``.  It is a
defect of foliodiff: the store keeps it in its own table, never with the
divergences; the finding sink routes it there; ``GET /harness-errors``
serves it; a replay that hits one leaves the divergence's state alone; a
campaign says so loudly.  Every test gets a fresh, empty database (``url``
in conftest.py).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from engine.corpus.entries import load_any
from engine.diff.differential import Report, differential
from engine.mm.madvise import MadviseMixin
from engine.program.format import Program
from fuzz.records import HarnessRecord, harness_records_from_report, records_from_report
from fuzz.sink import FindingSink, HarnessStored
from service.api import Settings, create_app
from service.campaign import Campaign, CampaignConfig, create
from service.errors import InvalidValueError, NotFoundError
from service.models import TriageStatus
from service.store import Store

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
SIGNATURE = "|harness|IndexError|madvise|sys_madvise|sys_madvise<run"


@pytest.fixture(scope="module")
def data_loss() -> tuple[Program, Report]:
    """A kernel finding, run before any test breaks the model: H5 on v5.17,v6.14."""
    program = load_any(str(CORPUS / "h5-dma-into-lazyfree.json"))
    report = differential(program, "v5.17", "v6.14")
    assert report.unexpected and not report.harness
    return program, report


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch) -> None:
    """MADV_FREE's page-table walk raises IndexError on every engine."""

    def madvise_free_range(self, vma, addr, end):
        raise IndexError("list index out of range")
        yield  # a generator, as every model path that can yield

    monkeypatch.setattr(MadviseMixin, "madvise_free_range", madvise_free_range)


@pytest.fixture
def harness(broken: None) -> tuple[Program, Report]:
    program = load_any(str(CORPUS / "h1-clean-mthp-reclaim.json"))
    report = differential(program, "v6.14", "v6.15")
    assert [o.engine for o in report.harness] == ["v6.14", "v6.15"]
    assert not report.divergences and not report.equal
    return program, report


@pytest.fixture
def store(url: str):
    with Store.open(url) as s:
        yield s


def test_records_group_by_engine_exception_operation_and_frames(
        harness: tuple[Program, Report]) -> None:
    program, report = harness
    a, b = harness_records_from_report(report, program)
    assert (a.signature, b.signature) == ("v6.14" + SIGNATURE, "v6.15" + SIGNATURE)
    assert a.signature_id != b.signature_id
    assert (a.engine, a.exception, a.op, a.function) == ("v6.14", "IndexError", "madvise",
                                                         "sys_madvise")
    assert a.message == "list index out of range"
    assert a.stack[0].startswith("sys_madvise (mm/madvise.py:")
    assert a.program == program.to_json(indent=None)


def test_store_counts_hits_per_signature_apart_from_divergences(
        store: Store, harness: tuple[Program, Report]) -> None:
    program, report = harness
    records = harness_records_from_report(report, program)
    campaign = store.create_campaign("v6.14", "v6.15", "random")
    first = store.upsert_harness_errors(records, campaign_id=campaign.id)
    assert (first.inserted, first.updated) == (2, 0)
    assert first.new == {r.signature_id for r in records}
    again = store.upsert_harness_errors(records + records[:1])
    assert (again.inserted, again.updated, again.new) == (0, 2, set())
    assert again.ids == first.ids

    items, total = store.list_harness_errors(sort="-hit_count")
    assert total == 2 and [(h.engine, h.hit_count) for h in items] == [("v6.14", 3),
                                                                        ("v6.15", 2)]
    h = items[0]
    assert (h.signature, h.exception, h.op, h.op_index, h.function, h.campaign_id) == (
        "v6.14" + SIGNATURE, "IndexError", "madvise", 2, "sys_madvise", campaign.id)
    assert h.stack == list(records[0].stack) and h.first_seen <= h.last_seen
    # One program row for both, as the run had it.
    assert items[1].program_id == h.program_id
    assert store.get_program(h.program_id).json == program.to_json(indent=None)
    assert store.get_harness_error(h.id).message == "list index out of range"
    # Never a divergence.
    assert store.list_divergences() == ([], 0)

    assert store.list_harness_errors(engine="new")[1] == 1          # an alias
    assert store.list_harness_errors(campaign_id=campaign.id)[1] == 2
    assert store.list_harness_errors(campaign_id=campaign.id + 1)[1] == 0
    page, total = store.list_harness_errors(sort="id", limit=1, offset=1)
    assert total == 2 and [x.engine for x in page] == ["v6.15"]


def test_store_refuses_bad_values_naming_them_and_keeps_what_it_has(
        store: Store, harness: tuple[Program, Report]) -> None:
    program, report = harness
    records = harness_records_from_report(report, program)
    store.upsert_harness_errors(records)
    for kwargs, field in (({"sort": "colour"}, "sort"), ({"engine": "v9.9"}, "engine"),
                          ({"limit": 0}, "limit"), ({"offset": -1}, "offset"),
                          ({"campaign_id": "1"}, "campaign_id")):
        with pytest.raises(InvalidValueError) as err:
            store.list_harness_errors(**kwargs)
        assert err.value.field == field
    with pytest.raises(InvalidValueError) as err:
        store.upsert_harness_errors([records[0], dataclasses.replace(records[1], engine="")])
    assert err.value.field == "records[1].engine"
    with pytest.raises(InvalidValueError) as err:
        store.upsert_harness_errors([dataclasses.replace(records[0], message="a\x00b")])
    assert err.value.field == "records[0].message"
    with pytest.raises(NotFoundError, match="campaign 7"):
        store.upsert_harness_errors(records, campaign_id=7)
    with pytest.raises(NotFoundError, match="harness error 9"):
        store.get_harness_error(9)
    assert [h.hit_count for h in store.list_harness_errors()[0]] == [1, 1]


def test_exception_text_with_a_nul_is_stored_on_every_backend(
        store: Store, harness: tuple[Program, Report]) -> None:
    program, report = harness
    report.a.crash.message = "bad byte \x00 here"
    (rec, _) = harness_records_from_report(report, program)
    assert isinstance(rec, HarnessRecord) and "\x00" not in rec.message
    store.upsert_harness_errors([rec])
    assert store.get_harness_error(1).message == "bad byte \\x00 here"


# -- the finding sink ------------------------------------------------------------------


def test_sink_sends_a_harness_report_to_its_table_never_to_the_divergences(
        store: Store, harness: tuple[Program, Report],
        data_loss: tuple[Program, Report]) -> None:
    campaign = store.create_campaign("v6.14", "v6.15", "random")
    told: list[HarnessStored] = []
    sink = FindingSink(store, campaign.id, known=set(), minimize=False,
                       on_harness=told.extend)
    program, report = harness
    assert sink.add(program, report) == []
    assert sink.add(program, report) == []
    sink.flush()
    assert store.list_divergences() == ([], 0)
    assert (sink.stats.harness, len(sink.stats.harness_signatures)) == (4, 2)
    assert sink.stats.signatures == {} and sink.stats.unexpected == 0
    assert [(f.engine, f.exception, f.op, f.new) for f in told] == [
        ("v6.14", "IndexError", "madvise", True), ("v6.15", "IndexError", "madvise", True)]
    assert [h.hit_count for h in store.list_harness_errors()[0]] == [2, 2]
    assert {h.campaign_id for h in store.list_harness_errors()[0]} == {campaign.id}

    # Seen again later: hits only, and nothing more to tell.
    sink.add(program, report)
    sink.flush()
    assert len(told) == 2
    assert [h.hit_count for h in store.list_harness_errors()[0]] == [3, 3]
    # Kernel findings still go where they go.
    sink.add(*data_loss)
    sink.flush()
    assert store.list_divergences()[1] == 1 and sink.stats.unexpected == 1
    assert store.list_harness_errors()[1] == 2


# -- the API -------------------------------------------------------------------------


@pytest.fixture
def client(url: str, store: Store, harness: tuple[Program, Report]):
    program, report = harness
    store.upsert_harness_errors(harness_records_from_report(report, program))
    store.upsert_harness_errors(harness_records_from_report(report, program)[:1])
    with TestClient(create_app(Settings(db_url=url))) as c:
        yield c


def test_api_lists_harness_errors_and_shows_one(client: TestClient,
                                                harness: tuple[Program, Report]) -> None:
    page = client.get("/harness-errors").json()
    assert page["total"] == 2 and (page["limit"], page["offset"]) == (50, 0)
    assert [h["engine"] for h in page["items"]] == ["v6.14", "v6.15"]   # last seen first
    assert page["items"][0]["hit_count"] == 2
    assert page["items"][0]["signature"] == "v6.14" + SIGNATURE
    one = client.get("/harness-errors", params={"engine": "v6.15", "sort": "id"}).json()
    assert one["total"] == 1 and one["items"][0]["exception"] == "IndexError"
    second = client.get("/harness-errors", params={"limit": 1, "offset": 1}).json()
    assert [h["engine"] for h in second["items"]] == ["v6.15"]

    detail = client.get(f"/harness-errors/{page['items'][0]['id']}").json()
    assert detail["program"] == harness[0].to_dict()
    assert detail["stack"][0].startswith("sys_madvise")
    assert detail["replay_command"].startswith(f"foliodiff run harness-error-{detail['id']}.json "
                                               "--engines v6.14")
    assert client.get("/divergences").json()["total"] == 0


@pytest.mark.parametrize("params, field", [({"engine": "v9.9"}, "engine"),
                                           ({"sort": "colour"}, "sort"),
                                           ({"limit": 0}, "limit"),
                                           ({"limit": "many"}, "limit"),
                                           ({"offset": -1}, "offset"),
                                           ({"campaign_id": "abc"}, "campaign_id"),
                                           ({"engine": "v6.14\x00"}, "engine")])
def test_api_refuses_bad_query_values_naming_the_field(client: TestClient, params: dict,
                                                       field: str) -> None:
    r = client.get("/harness-errors", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


def test_api_unknown_harness_error_is_404(client: TestClient) -> None:
    r = client.get("/harness-errors/999")
    assert r.status_code == 404 and r.json()["value"] == 999


def test_a_replay_that_hits_a_harness_error_leaves_the_divergence_as_it_was(
        url: str, store: Store, data_loss: tuple[Program, Report], broken: None) -> None:
    program, report = data_loss
    (did,) = store.upsert_divergences(records_from_report(report, program)).ids.values()
    for to in ("confirmed", "fixed"):
        store.transition(did, to, "", "ann")
    with TestClient(create_app(Settings(db_url=url))) as client:
        out = client.post(f"/divergences/{did}/replay", json={"author": "ci"}).json()
    assert not out["reproduces"] and out["status_after"] == "fixed"   # not "verified"
    assert out["harness_errors"] == [1, 2] and len(out["report"]["harness"]) == 2
    assert store.get_divergence(did).status is TriageStatus.FIXED
    assert "a defect of foliodiff" in store.notes(did)[-1].text
    assert store.list_harness_errors()[1] == 2


# -- the campaign ----------------------------------------------------------------------


def test_campaign_says_each_harness_error_once_and_loudly(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with Store.open(url) as store:
        cid = create(store, CampaignConfig(fuzzer="random", engine_a="v6.14",
                                           engine_b="v6.15", seconds=1))
    found = {"harness_error_id": 1, "signature": "v6.15" + SIGNATURE, "engine": "v6.15",
             "exception": "IndexError", "message": "list index out of range", "op": "madvise",
             "function": "sys_madvise", "new": True}
    c = Campaign(url, cid)
    try:
        for worker in (0, 1):      # two workers hit it
            c._take("harness", worker, [json.loads(json.dumps(found))])
    finally:
        c.store.close()
    said = capsys.readouterr().err
    assert said.count("HARNESS ERROR #1 (new)") == 1
    assert "a defect of foliodiff itself, NOT a kernel finding" in said
    assert "IndexError on v6.15 at madvise in sys_madvise" in said
    assert f"signature v6.15{SIGNATURE}" in said and "GET /harness-errors/1" in said
    assert list(c.progress.harness) == [1]
