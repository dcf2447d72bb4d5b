"""The divergence store on a real SQLite file and a real PostgreSQL database.

Dedup, batches, queries, triage, concurrency.  Every test runs on both
backends (``url`` in conftest.py), on a fresh, empty database, with a
ticking clock (one second per call from a fixed instant): no wall clock, no
shared state.
Records come from real differential runs of corpus programs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event

from engine import parse_program
from engine.corpus.entries import load_any
from engine.diff.differential import Classification, Kind, differential
from fuzz.records import DivergenceRecord, MinimizedRun, records_from_report
from fuzz.sink import FindingSink
from fuzz.sources import CoverageUnit
from service.errors import (
    BatchError,
    IllegalTransitionError,
    InvalidValueError,
    LeaseHeldError,
    LeaseLostError,
    NotFoundError,
    StoreMissingError,
    StoreOpenError,
)
from service.minimizer import minimize_stored
from service.models import Base, CampaignStatus, TriageStatus, in_models
from service.store import INTENDED_SAMPLES, LEASE_EXPIRY, Lease, Store, upgrade

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
T0 = datetime(2025, 3, 1, tzinfo=UTC)


class Tick:
    """A clock that advances one second per reading (picklable, for spawned workers)."""

    def __init__(self) -> None:
        self.now = T0 - timedelta(seconds=1)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def _records(name: str, a: str, b: str) -> list[DivergenceRecord]:
    program = load_any(str(CORPUS / name))
    return records_from_report(differential(program, a, b), program)


@pytest.fixture(scope="module")
def data_loss() -> DivergenceRecord:
    (rec,) = _records("h5-dma-into-lazyfree.json", "v5.17", "v6.14")
    assert (rec.kind, rec.classification) == (Kind.DATA_LOSS, Classification.UNEXPECTED)
    return rec


@pytest.fixture(scope="module")
def crash() -> DivergenceRecord:
    (rec,) = _records("h12-mremap-straddle.json", "v6.14", "v6.15")
    assert (rec.kind, rec.classification) == (Kind.CRASH, Classification.UNEXPECTED)
    return rec


@pytest.fixture(scope="module")
def intended() -> DivergenceRecord:
    (rec,) = _records("h1-clean-mthp-reclaim.json", "v6.14", "v6.15")
    assert rec.classification is Classification.INTENDED and rec.rules
    return rec


@pytest.fixture
def store(url: str):
    with Store.open(url, clock=Tick()) as s:
        yield s


def variant(rec: DivergenceRecord, i: int) -> DivergenceRecord:
    """``rec`` as if found as a different bug ``i`` with its own program."""
    signature = f"{rec.signature}|v{i}"
    return dataclasses.replace(rec, signature=signature,
                               signature_id=hashlib.sha1(signature.encode()).hexdigest()[:16],
                               # Another program text (stored as text, never parsed back).
                               original_program=rec.original_program[:-1] + f',"_v":{i}}}')


# -- schema -------------------------------------------------------------------------


def test_migrated_schema_matches_models(store: Store, url: str) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": in_models}), Base.metadata)
        assert diff == []
        if conn.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        else:
            # Timestamps with time zone, enums as bounded strings, JSON, packed outcomes.
            types = dict(conn.exec_driver_sql(
                "SELECT table_name || '.' || column_name, data_type"
                " FROM information_schema.columns").all())
            assert (types["divergence.first_seen"], types["divergence.kind"],
                    types["campaign.config"], types["outcome.packed"]) == (
                "timestamp with time zone", "character varying", "json", "bytea")
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == _head()
    # Opening an up-to-date file again migrates nothing and keeps the data.
    store.create_campaign("v6.14", "v6.15", "hypothesis")
    with Store.open(url, clock=Tick()) as again:
        assert again.get_campaign(1).fuzzer == "hypothesis"


def test_upgrade_from_0002_moves_outcomes_into_their_table(url: str, data_loss: DivergenceRecord,
                                                           crash: DivergenceRecord) -> None:
    """Divergences stored before 0003 keep both outcomes, each stored once."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    upgrade(engine, "0002")
    meta = sa.MetaData()
    meta.reflect(engine, only=["program", "divergence"])
    program, divergence = meta.tables["program"], meta.tables["divergence"]
    a, b = data_loss.outcome_a, crash.outcome_b
    values = [(a, b), (a, b), (b, a)]
    with engine.begin() as conn:
        conn.execute(sa.insert(program).values(id=1, sha256="0" * 64, json="{}"))
        for i, (oa, ob) in enumerate(values, start=1):
            conn.execute(sa.insert(divergence).values(
                id=i, signature=f"s{i}", signature_id=f"{i:016x}", seq=0, engine_a="v5.17",
                engine_b="v6.14", kind="data_loss", classification="unexpected", field="f",
                function=None, first_op=None, detail="", first_seen=T0, last_seen=T0,
                hit_count=1, original_program_id=1, minimized_program_id=None,
                outcome_a=_plain(oa), outcome_b=_plain(ob),
                status="new", duplicate_of=None, reopened_from=None))
    engine.dispose()
    with Store.open(url, clock=Tick()) as store:
        for i, (oa, ob) in enumerate(values, start=1):
            d = store.get_divergence(i)
            assert (d.outcome_a, d.outcome_b) == (_plain(oa), _plain(ob))
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM outcome").scalar() == 2


def _plain(outcome):
    """An outcome of a record as the dict it stands for."""
    return json.loads(zlib.decompress(outcome.packed)) if hasattr(outcome, "packed") else outcome


def _head() -> str:
    """The newest migration, as alembic sees the scripts."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from service.store import MIGRATIONS
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


# -- upsert -------------------------------------------------------------------------


def test_upsert_dedups_and_counts_hits(store: Store, data_loss: DivergenceRecord) -> None:
    first = store.upsert_divergences([data_loss] * 3)
    assert (first.inserted, first.updated) == (1, 0)
    second = store.upsert_divergences([data_loss, data_loss])
    assert (second.inserted, second.updated) == (0, 1)
    assert first.ids == second.ids == {data_loss.signature_id: 1}

    d = store.get_divergence(1)
    assert d.hit_count == 5
    assert d.first_seen == T0 and d.last_seen == T0 + timedelta(seconds=1)
    assert (d.signature, d.signature_id) == (data_loss.signature, data_loss.signature_id)
    assert (d.engine_a, d.engine_b, d.kind, d.status) == ("v5.17", "v6.14", Kind.DATA_LOSS,
                                                          TriageStatus.NEW)
    assert d.outcome_a["verdict"] == "data_loss" and d.outcome_b["engine"] == "v6.14"
    assert store.get_program(d.original_program_id).json == data_loss.original_program
    assert d.minimized_program_id is None


def test_batch_of_1000_in_one_transaction(store: Store, data_loss: DivergenceRecord) -> None:
    records = [variant(data_loss, i % 500) for i in range(1000)]
    commits = []
    event.listen(store.engine, "commit", lambda conn: commits.append(conn))
    result = store.upsert_divergences(records)
    assert len(commits) == 1
    assert (result.inserted, result.updated, len(result.ids)) == (500, 0, 500)
    items, total = store.list_divergences(sort="id", limit=1000)
    assert total == 500
    assert {d.hit_count for d in items} == {2}
    # Each program was stored once and is the one of its record.
    assert store.get_program(items[7].original_program_id).json == records[7].original_program


def test_minimized_program_is_stored(store: Store, crash: DivergenceRecord) -> None:
    program = load_any(str(CORPUS / "h12-mremap-straddle.json"))
    (rec,) = records_from_report(differential(program, "v6.14", "v6.15"), program,
                                 minimized_program=program)
    store.upsert_divergences([rec])
    d = store.get_divergence(1)
    # Same text, so the same program row.
    assert d.minimized_program_id == d.original_program_id


def test_the_minimizer_minimizes_what_was_stored_as_found(store: Store,
                                                          data_loss: DivergenceRecord) -> None:
    """A campaign stores a finding as found; its minimizer (service/minimizer.py)
    minimizes it later, from the store alone, and keeps the result."""
    store.upsert_divergences([data_loss, variant(data_loss, 1)])
    assert store.unminimized("v5.17", "v6.14") == [1, 2]
    assert store.unminimized("v6.14", "v6.15") == []
    done = minimize_stored(store, 1, max_runs=300, deadline=time.monotonic() + 120)
    d = store.get_divergence(1)
    assert done["ops_minimized"] is not None and 0 < done["runs"] <= 300
    assert done["ops_minimized"] < done["ops_original"] == len(
        json.loads(store.get_program(d.original_program_id).json)["ops"])
    small = parse_program(json.loads(store.get_program(d.minimized_program_id).json))
    assert len(small.ops) == done["ops_minimized"]
    assert d.signature_id in {x.signature_id for x in
                              differential(small, "v5.17", "v6.14").divergences}
    # and bisected the minimized program: H5's loss goes at v5.17->v5.18
    assert d.bisection is not None and d.bisection["engines"] == ["v5.17", "v6.14"]
    assert (d.came_in, d.went) == (None, "v5.17->v5.18")
    assert store.unminimized("v5.17", "v6.14") == [2]
    # Out of time: left as stored, for the next campaign of the pair.
    late = minimize_stored(store, 2, max_runs=300, deadline=time.monotonic())
    assert late["ops_minimized"] is None and late["runs"] == 0 and "out of time" in late["error"]
    assert store.unminimized("v5.17", "v6.14") == [2]
    with pytest.raises(NotFoundError):
        store.set_minimized(99, data_loss.original_program)


def test_the_minimizer_keeps_the_minimized_programs_own_run(store: Store,
                                                           data_loss: DivergenceRecord) -> None:
    """H5's original run reads the DMA'd 42 back as 0; the minimized program writes 1.
    Each run's detail and outcomes are its own, both kept."""
    store.upsert_divergences([data_loss])
    before = store.get_divergence(1)
    assert not before.minimized_run and before.minimized_outcome_a is None
    minimize_stored(store, 1, max_runs=300, deadline=time.monotonic() + 120)
    d = store.get_divergence(1)
    small = parse_program(json.loads(store.get_program(d.minimized_program_id).json))
    report = differential(small, "v5.17", "v6.14")
    (again,) = [x for x in report.divergences if x.signature_id == d.signature_id]
    assert d.minimized_run
    assert (d.minimized_detail, d.minimized_first_op) == (again.detail, again.first_op)
    assert "allowed 1" in d.minimized_detail and "allowed 42" in d.detail
    assert d.minimized_first_op == len(small.ops) - 1 < d.first_op
    assert d.minimized_outcome_a == json.loads(json.dumps(report.a.to_dict()))
    assert d.minimized_outcome_b == json.loads(json.dumps(report.b.to_dict()))
    # The original's run is kept as it was stored.
    assert (d.detail, d.first_op) == (before.detail, before.first_op)
    assert (d.outcome_a, d.outcome_b) == (before.outcome_a, before.outcome_b)
    # Minimized again without a run: none is left that would not be the new program's.
    store.set_minimized(1, data_loss.original_program)
    d = store.get_divergence(1)
    assert not d.minimized_run and d.minimized_detail is None and d.minimized_outcome_b is None


def test_a_sink_stores_a_new_divergence_with_its_minimized_run(store: Store) -> None:
    program = load_any(str(CORPUS / "h5-dma-into-lazyfree.json"))
    report = differential(program, "v5.17", "v6.14")
    campaign = store.create_campaign("v5.17", "v6.14", "random")
    sink = FindingSink(store, campaign.id, known=set(), max_minimize_runs=300,
                       minimize_seconds=120)
    sink.add(program, report)
    (stored,) = sink.flush()
    d = store.get_divergence(stored.divergence_id)
    assert stored.ops_minimized == len(json.loads(
        store.get_program(d.minimized_program_id).json)["ops"]) < len(program.ops)
    assert d.minimized_run and "allowed 1" in d.minimized_detail
    assert "allowed 42" in d.detail and d.outcome_a == json.loads(json.dumps(report.a.to_dict()))
    # A caller's minimized program: run once for the new record, and kept with it.
    crash_program = load_any(str(CORPUS / "h12-mremap-straddle.json"))
    crash_report = differential(crash_program, "v6.14", "v6.15")
    other = FindingSink(store, campaign.id, known=set(), minimize=False)
    other.add(crash_program, crash_report, minimized=crash_program)
    (kept,) = other.flush()
    c = store.get_divergence(kept.divergence_id)
    assert c.minimized_run and c.minimized_detail == c.detail
    assert c.minimized_outcome_b == c.outcome_b
    assert store.get_divergence(d.id).minimized_detail == d.minimized_detail


def test_a_minimized_run_of_the_wrong_shape_is_refused_by_name(
        store: Store, data_loss: DivergenceRecord) -> None:
    run = MinimizedRun(data_loss.outcome_a, data_loss.outcome_b, "allowed 1", 3)
    with pytest.raises(InvalidValueError) as err:
        store.upsert_divergences([dataclasses.replace(data_loss, minimized=run)])
    assert err.value.field == "records[0].minimized"       # no minimized program
    with pytest.raises(InvalidValueError) as err:
        store.upsert_divergences([dataclasses.replace(
            data_loss, minimized_program=data_loss.original_program,
            minimized=dataclasses.replace(run, detail="a\x00b"))])
    assert err.value.field == "records[0].minimized.detail"
    store.upsert_divergences([data_loss])
    for bad, field in ((dataclasses.replace(run, first_op=-1), "run.first_op"),
                       ("allowed 1", "run"),
                       (dataclasses.replace(run, outcome_a={"x": object()}), "run")):
        with pytest.raises(InvalidValueError) as err:
            store.set_minimized(1, data_loss.original_program, bad)  # type: ignore[arg-type]
        assert err.value.field == field
    # Nothing of the refused calls was kept.
    d = store.get_divergence(1)
    assert d.minimized_program_id is None and not d.minimized_run


def test_failed_batch_leaves_stored_data_intact(store: Store, data_loss: DivergenceRecord,
                                                crash: DivergenceRecord) -> None:
    store.upsert_divergences([data_loss])
    bad_kind = dataclasses.replace(crash, kind="oops")
    with pytest.raises(InvalidValueError) as err:
        store.upsert_divergences([data_loss, bad_kind])
    assert err.value.field == "records[1].kind" and "'oops'" in str(err.value)

    # Fails inside the transaction, after the hit on data_loss was counted.
    unserialisable = dataclasses.replace(crash, outcome_a={"state": {1, 2}})
    with pytest.raises(BatchError, match="nothing stored"):
        store.upsert_divergences([data_loss, variant(data_loss, 1), unserialisable])

    items, total = store.list_divergences()
    assert total == 1
    assert (items[0].hit_count, items[0].last_seen) == (1, T0)


def test_intended_divergences_are_counted_per_rule_not_stored(
        store: Store, intended: DivergenceRecord, data_loss: DivergenceRecord) -> None:
    campaign = store.create_campaign("v6.14", "v6.15", "schedule")
    records = [variant(intended, i) for i in range(5)] + [intended, data_loss]
    result = store.upsert_divergences(records, campaign_id=campaign.id)
    assert (result.inserted, result.intended) == (1, 6)
    _, total = store.list_divergences()
    assert total == 1

    counts = store.get_campaign(campaign.id).intended
    assert set(counts) == set(intended.rules)
    entry = counts[intended.rules[0]]
    assert entry["count"] == 6
    assert len(entry["samples"]) == INTENDED_SAMPLES == len(set(entry["samples"]))
    assert store.get_program(entry["samples"][0]).json == records[0].original_program

    with pytest.raises(InvalidValueError) as err:
        store.upsert_divergences([intended])
    assert err.value.field == "campaign_id"


def test_nul_characters_are_refused_on_every_backend(store: Store,
                                                    data_loss: DivergenceRecord) -> None:
    # PostgreSQL text cannot hold NUL; SQLite could, but both stores keep the same data.
    with pytest.raises(InvalidValueError) as err:
        store.upsert_divergences([dataclasses.replace(data_loss, detail="a\x00b")])
    assert err.value.field == "records[0].detail"
    store.upsert_divergences([data_loss])
    with pytest.raises(InvalidValueError) as err:
        store.add_note(1, "x\x00", "bob")
    assert err.value.field == "text"
    with pytest.raises(InvalidValueError) as err:
        store.transition(1, "confirmed", "", "al\x00ice")
    assert err.value.field == "author"
    assert store.list_divergences(text="\x00") == ([], 0)
    assert store.notes(1) == [] and store.history(1) == []


# -- queries ------------------------------------------------------------------------


def test_list_filters_sort_pagination(store: Store, data_loss: DivergenceRecord,
                                      crash: DivergenceRecord) -> None:
    # 12 data-loss signatures with 1..12 hits, 3 crash signatures with 1 hit.
    for i in range(12):
        store.upsert_divergences([variant(data_loss, i)] * (i + 1))
    store.upsert_divergences([variant(crash, i) for i in range(3)])
    store.transition(2, "confirmed", "real", "alice")

    items, total = store.list_divergences(sort="-hit_count", limit=5)
    assert total == 15 and [d.hit_count for d in items] == [12, 11, 10, 9, 8]
    page3, total = store.list_divergences(sort="-hit_count", limit=5, offset=10)
    assert total == 15 and [d.hit_count for d in page3] == [2, 1, 1, 1, 1]
    beyond, total = store.list_divergences(offset=100)
    assert (beyond, total) == ([], 15)

    assert store.list_divergences(kind=Kind.CRASH)[1] == 3
    assert store.list_divergences(kind="data_loss", status="new")[1] == 11
    assert [d.id for d in store.list_divergences(status=TriageStatus.CONFIRMED)[0]] == [2]
    assert store.list_divergences(engines=("old", "new"))[1] == 3
    assert store.list_divergences(engines=("v5.17", "v6.14"), kind="crash")[1] == 0
    assert store.list_divergences(classification="unexpected")[1] == 15
    # Intended divergences are counted on campaigns, never stored.
    assert store.list_divergences(classification="intended") == ([], 0)
    assert store.list_divergences(text="ptep_get<folio_pte_batch")[1] == 3
    assert store.list_divergences(text="|v1")[1] == 3 + 1   # v1, v10, v11 and crash v1
    assert store.list_divergences(text="PTEP_GET")[1] == 0  # case-sensitive everywhere
    for wildcard in ("%", "d_ta", "*", "?", "[v]", "v[1]"):  # literal, never a wildcard
        assert store.list_divergences(text=wildcard)[1] == 0, wildcard

    ordered = [d.id for d in store.list_divergences(sort="first_seen", limit=1000)[0]]
    assert ordered == sorted(ordered)
    newest_first = store.list_divergences(sort="-last_seen", limit=1)[0][0]
    assert newest_first.kind is Kind.CRASH

    with pytest.raises(InvalidValueError, match="'colour'") as err:
        store.list_divergences(sort="colour")
    assert err.value.field == "sort"
    with pytest.raises(InvalidValueError) as err:
        store.list_divergences(status="open")
    assert (err.value.field, err.value.value) == ("status", "open")
    with pytest.raises(InvalidValueError) as err:
        store.list_divergences(limit=0)
    assert err.value.field == "limit"
    with pytest.raises(InvalidValueError) as err:
        store.list_divergences(engines=("v6.14", "v9.99"))
    assert err.value.field == "engines" and "v9.99" in str(err.value)


@pytest.mark.parametrize("dense", [2, 10_000])
def test_signature_search_uses_index_or_scan_with_the_same_answer(
        store: Store, data_loss: DivergenceRecord, dense: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Common texts (more trigram hits than ``_DENSE``) scan; rare ones use the index."""
    import service.store

    monkeypatch.setattr(service.store, "_DENSE", dense)
    store.upsert_divergences([variant(data_loss, i) for i in range(30)])
    store.transition(5, "confirmed", "real", "alice")
    assert store.list_divergences(text="|v2")[1] == 1 + 10           # v2, v20..v29
    assert store.list_divergences(text="|v")[1] == 30
    assert store.list_divergences(text="v2", status="confirmed")[1] == 0
    assert [d.id for d in store.list_divergences(text="|v1", sort="id", limit=3,
                                                 offset=1)[0]] == [11, 12, 13]


def test_get_missing_divergence(store: Store) -> None:
    with pytest.raises(NotFoundError, match="divergence 42 not found"):
        store.get_divergence(42)


# -- triage -------------------------------------------------------------------------


def test_transitions_legal_and_illegal(store: Store, data_loss: DivergenceRecord) -> None:
    store.upsert_divergences([data_loss, variant(data_loss, 1), variant(data_loss, 2)])
    with pytest.raises(IllegalTransitionError) as err:
        store.transition(1, "verified", "", "alice")
    assert "divergence 1" in str(err.value)
    assert "'new' to 'verified'" in str(err.value)
    assert (err.value.from_status, err.value.to_status) == (TriageStatus.NEW,
                                                            TriageStatus.VERIFIED)

    for to in ("confirmed", "fixed", "confirmed", "fixed", "verified"):
        assert store.transition(1, to, f"-> {to}", "alice").status is TriageStatus(to)
    with pytest.raises(IllegalTransitionError, match="'verified' to 'confirmed'"):
        store.transition(1, "confirmed", "", "alice")

    with pytest.raises(InvalidValueError) as err:
        store.transition(2, "duplicate", "", "bob")
    assert err.value.field == "duplicate_of"
    with pytest.raises(NotFoundError, match="divergence 99"):
        store.transition(2, "duplicate", "", "bob", duplicate_of=99)
    with pytest.raises(InvalidValueError, match="itself"):
        store.transition(2, "duplicate", "", "bob", duplicate_of=2)
    assert store.transition(2, "duplicate", "", "bob", duplicate_of=1).duplicate_of == 1
    with pytest.raises(InvalidValueError, match="#2 is itself a duplicate of #1"):
        store.transition(3, "duplicate", "", "bob", duplicate_of=2)
    with pytest.raises(InvalidValueError, match="only allowed with status 'duplicate'"):
        store.transition(3, "invalid", "", "bob", duplicate_of=1)
    assert store.transition(2, "confirmed", "not a dup", "bob").duplicate_of is None

    with pytest.raises(InvalidValueError) as err:
        store.transition(3, "wontfix", "", "bob")
    assert (err.value.field, err.value.value) == ("to_status", "wontfix")
    with pytest.raises(InvalidValueError) as err:
        store.transition(3, "invalid", "", "")
    assert err.value.field == "author"
    # Refused transitions left no trace.
    assert store.get_divergence(3).status is TriageStatus.NEW and store.history(3) == []


def test_duplicates_of_lists_each_groups_members(store: Store, data_loss: DivergenceRecord) -> None:
    store.upsert_divergences([data_loss] + [variant(data_loss, i) for i in range(1, 5)])
    store.transition(3, "duplicate", "", "bob", duplicate_of=1)
    store.transition(2, "duplicate", "", "bob", duplicate_of=1)
    store.transition(5, "duplicate", "", "bob", duplicate_of=4)
    assert store.duplicates_of([1, 4, 2, 99]) == {1: [2, 3], 4: [5]}
    # Split off again: no longer a member.
    store.transition(2, "confirmed", "", "bob")
    assert store.duplicates_of([1]) == {1: [3]}
    assert store.duplicates_of([]) == {}


def test_reopen_after_verified_creates_linked_record(store: Store,
                                                    crash: DivergenceRecord) -> None:
    store.upsert_divergences([crash, crash])
    for to in ("confirmed", "fixed"):
        store.transition(1, to, "", "alice")
    # Fixed but not yet verified: a hit still counts on the same record.
    assert store.upsert_divergences([crash]).updated == 1
    store.transition(1, "verified", "replay no longer reproduces", "replay")

    result = store.upsert_divergences([crash] * 2)
    assert (result.inserted, result.updated, result.reopened) == (0, 0, 1)
    new = store.get_divergence(result.ids[crash.signature_id])
    assert (new.id, new.seq, new.reopened_from, new.hit_count) == (2, 1, 1, 2)
    assert new.status is TriageStatus.NEW and new.signature == crash.signature
    old = store.get_divergence(1)
    assert (old.status, old.hit_count) == (TriageStatus.VERIFIED, 3)
    (event_,) = store.history(2)
    assert (event_.from_status, event_.to_status) == (None, TriageStatus.NEW)
    assert "#1" in event_.note

    # Later hits go to the newest record.
    assert store.upsert_divergences([crash]).ids == {crash.signature_id: 2}
    assert (store.get_divergence(2).hit_count, store.get_divergence(1).hit_count) == (3, 3)


def test_history_and_notes(store: Store, data_loss: DivergenceRecord) -> None:
    store.upsert_divergences([data_loss])
    store.transition(1, "confirmed", "reproduces on v5.17", "alice")
    store.add_note(1, "DMA lands after the discard", "bob")
    store.transition(1, "fixed", "6c8e2a256915", "alice")

    history = store.history(1)
    assert [(e.from_status, e.to_status) for e in history] == [
        (TriageStatus.NEW, TriageStatus.CONFIRMED), (TriageStatus.CONFIRMED, TriageStatus.FIXED)]
    assert [(e.note, e.author) for e in history] == [("reproduces on v5.17", "alice"),
                                                     ("6c8e2a256915", "alice")]
    assert history[0].at < history[1].at
    (note,) = store.notes(1)
    assert (note.text, note.author) == ("DMA lands after the discard", "bob")
    assert history[0].at < note.at < history[1].at

    with pytest.raises(InvalidValueError) as err:
        store.add_note(1, "  ", "bob")
    assert err.value.field == "text"
    with pytest.raises(NotFoundError):
        store.add_note(7, "x", "bob")
    with pytest.raises(NotFoundError):
        store.history(7)


# -- campaigns ----------------------------------------------------------------------


def test_campaign_status_and_stats(store: Store) -> None:
    c = store.create_campaign("old", "new", "atheris", {"seed": 1, "max_ops": 32})
    assert (c.engine_a, c.engine_b, c.status, c.config) == ("v6.14", "v6.15",
                                                            CampaignStatus.PENDING,
                                                            {"seed": 1, "max_ops": 32})
    assert store.set_campaign_status(c.id, "running").status is CampaignStatus.RUNNING
    store.add_stats_snapshot(c.id, 20.0, 4000, 200.0, 31, {"state": 2})
    store.add_stats_snapshot(c.id, 10.0, 2000, 200.0, 30, {"state": 1, "crash": 1})
    assert [s.t for s in store.stats(c.id)] == [10.0, 20.0]
    assert store.stats(c.id)[1].signatures == {"state": 2}
    assert store.set_campaign_status(c.id, CampaignStatus.FINISHED).updated_at > c.created_at
    with pytest.raises(IllegalTransitionError, match="campaign 1: cannot go from 'finished'"):
        store.set_campaign_status(c.id, "running")

    with pytest.raises(InvalidValueError) as err:
        store.create_campaign("v6.14", "v9.9", "atheris")
    assert (err.value.field, err.value.value) == ("engine_b", "v9.9")
    with pytest.raises(InvalidValueError) as err:
        store.add_stats_snapshot(c.id, 1.0, -1, 0.0, 0, {})
    assert (err.value.field, err.value.value) == ("execs", -1)
    with pytest.raises(InvalidValueError) as err:
        store.add_stats_snapshot(c.id, 1.0, 1, 0.0, 0, {"bogus": 1})
    assert err.value.field == "signatures"
    with pytest.raises(NotFoundError, match="campaign 5"):
        store.add_stats_snapshot(5, 1.0, 1, 0.0, 0, {})


def test_stats_thinned_keeps_every_nth_snapshot_and_the_last(store: Store) -> None:
    c = store.create_campaign("v6.14", "v6.15", "random")
    assert store.stats_thinned(c.id, 10) == ([], 0)
    for t in reversed(range(25)):       # stored out of order: kept in order of t
        store.add_stats_snapshot(c.id, float(t), t, 1.0, t, {})
    kept, total = store.stats_thinned(c.id, 10)
    # 25 snapshots in at most 10 points: every 3rd (0, 3, ..., 24), 24 the last.
    assert total == 25 and [s.t for s in kept] == [0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 24.0]
    kept, _ = store.stats_thinned(c.id, 5)
    assert [s.t for s in kept] == [0.0, 7.0, 14.0, 21.0, 24.0]
    assert [s.t for s in store.stats_thinned(c.id, 100)[0]] == [float(t) for t in range(25)]
    with pytest.raises(InvalidValueError) as err:
        store.stats_thinned(c.id, 1)
    assert err.value.field == "max_points"
    with pytest.raises(NotFoundError, match="campaign 99"):
        store.stats_thinned(99, 10)


def test_stats_snapshots_keep_coverage_with_its_unit(store: Store) -> None:
    c = store.create_campaign("v6.14", "v6.15", "atheris")
    store.add_stats_snapshot(c.id, 5.0, 100, 20.0, 3, {}, coverage=412,
                             coverage_unit=CoverageUnit.EDGES)
    store.add_stats_snapshot(c.id, 6.0, 120, 20.0, 3, {}, coverage=13, coverage_unit="features")
    store.add_stats_snapshot(c.id, 7.0, 140, 20.0, 3, {})       # not measured: unknown, not 0
    assert [(s.coverage, s.coverage_unit) for s in store.stats(c.id)] == [
        (412, CoverageUnit.EDGES), (13, CoverageUnit.FEATURES), (None, None)]
    with pytest.raises(InvalidValueError) as err:
        store.add_stats_snapshot(c.id, 8.0, 1, 0.0, 0, {}, coverage=5)
    assert err.value.field == "coverage_unit"
    with pytest.raises(InvalidValueError) as err:
        store.add_stats_snapshot(c.id, 8.0, 1, 0.0, 0, {}, coverage=5, coverage_unit="lines")
    assert (err.value.field, err.value.value) == ("coverage_unit", "lines")
    with pytest.raises(InvalidValueError) as err:
        store.add_stats_snapshot(c.id, 8.0, 1, 0.0, 0, {}, coverage=-1, coverage_unit="edges")
    assert (err.value.field, err.value.value) == ("coverage", -1)
    assert len(store.stats(c.id)) == 3


# -- leases ---------------------------------------------------------------------------


class Clock:
    """A clock that stands still until moved (picklable)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_a_fresh_lease_is_refused_naming_its_holder_and_an_expired_one_taken_over(
        url: str) -> None:
    clock = Clock()
    with Store.open(url, clock=clock) as store:
        cid = store.create_campaign("v6.14", "v6.15", "random").id
        first = Lease(host="fuzz-1.example", pid=4242, token="a" * 32)
        second = Lease(host="fuzz-2.example", pid=99, token="b" * 32)
        assert store.take_lease(cid, first) is None
        assert store.take_lease(cid, first) is None            # its own: taken again
        clock.now = T0 + timedelta(seconds=LEASE_EXPIRY - 1)
        with pytest.raises(LeaseHeldError) as held:
            store.take_lease(cid, second)
        message = str(held.value)
        assert "pid 4242 on host 'fuzz-1.example'" in message and "59 s ago" in message
        assert "2025-03-01 00:00:00 UTC" in message
        assert store.renew_lease(cid, first.token) == clock.now  # heartbeat: fresh again
        clock.now += timedelta(seconds=LEASE_EXPIRY)
        with pytest.raises(LeaseHeldError):
            store.take_lease(cid, second)
        clock.now += timedelta(seconds=1)                      # silent for longer: expired
        taken = store.take_lease(cid, second)
        assert taken is not None
        assert (taken.host, taken.pid, taken.token) == (first.host, first.pid, first.token)
        row = store.get_campaign(cid)
        assert (row.lease_host, row.lease_pid, row.lease_token, row.lease_heartbeat) == (
            second.host, second.pid, second.token, clock.now)
        # The first runner learns it lost the campaign and gives nothing up.
        with pytest.raises(LeaseLostError, match="now held by pid 99 on host 'fuzz-2.example'"):
            store.renew_lease(cid, first.token)
        assert store.release_lease(cid, first.token) is False
        assert store.release_lease(cid, second.token) is True
        assert store.get_campaign(cid).lease_token is None
        store.set_campaign_status(cid, "running")
        store.set_campaign_status(cid, "finished")
        with pytest.raises(IllegalTransitionError, match="cannot go from 'finished'"):
            store.take_lease(cid, first)
        with pytest.raises(NotFoundError, match="campaign 77"):
            store.take_lease(77, first)


def test_a_lease_whose_holder_on_this_host_is_gone_is_taken_over_at_once(store: Store) -> None:
    cid = store.create_campaign("v6.14", "v6.15", "random").id
    dead = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    gone = Lease.mine()
    gone = Lease(host=gone.host, pid=dead.pid or 0, token=gone.token)
    alive = Lease(host=gone.host, pid=os.getpid(), token="c" * 32)
    assert store.take_lease(cid, alive) is None
    with pytest.raises(LeaseHeldError, match=f"pid {os.getpid()}"):
        store.take_lease(cid, gone)                  # this process is alive
    store.release_lease(cid, alive.token)
    assert store.take_lease(cid, gone) is None
    taken = store.take_lease(cid, alive)             # its holder is gone: no need to wait
    assert taken is not None and taken.pid == dead.pid


def _racer(url: str, cid: int, barrier, results) -> None:
    with Store.open(url, busy_timeout_ms=60_000) as store:
        barrier.wait()
        try:
            store.take_lease(cid, Lease.mine())
            results.put("taken")
        except LeaseHeldError as exc:
            results.put(f"refused: {exc}")


def test_of_processes_racing_for_a_lease_one_gets_it(store: Store, url: str) -> None:
    cid = store.create_campaign("v6.14", "v6.15", "random").id
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    racers = [ctx.Process(target=_racer, args=(url, cid, barrier, results)) for _ in range(4)]
    for r in racers:
        r.start()
    said = sorted(results.get(timeout=120) for _ in racers)
    for r in racers:
        r.join(timeout=60)
    assert said[-1] == "taken" and all(x.startswith("refused: ") for x in said[:-1]), said
    holder = store.get_campaign(cid)
    assert holder.lease_pid in {r.pid for r in racers}
    assert all(f"pid {holder.lease_pid} on host" in x for x in said[:-1])


# -- opening a store --------------------------------------------------------------------


def test_a_missing_sqlite_file_is_refused_unless_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(StoreMissingError) as err:
        Store.open(url, create=False)
    assert err.value.path == str(tmp_path / "none.db") and str(tmp_path) in str(err.value)
    assert not (tmp_path / "none.db").exists()
    Store.open(url).close()                          # create=True, the default
    with Store.open(url, create=False) as store:
        assert store.list_campaigns() == ([], 0)


@pytest.mark.parametrize("create", [True, False])
def test_an_unopenable_sqlite_url_names_itself_and_why(tmp_path: Path, create: bool) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    with pytest.raises(StoreOpenError) as err:
        Store.open(url, create=create)
    assert err.value.url == url and str(tmp_path / "no") in str(err.value)
    assert not (tmp_path / "no").exists()
    junk = tmp_path / "notes.db"
    junk.write_bytes(b"my notes, not a database\n" * 200)
    with pytest.raises(StoreOpenError, match="file is not a database") as err:
        Store.open(f"sqlite:///{junk}", create=create)
    assert str(junk) in str(err.value)
    assert junk.read_bytes() == b"my notes, not a database\n" * 200      # left as it was
    with pytest.raises(StoreOpenError, match="not a database URL"):
        Store.open("nosuchdialect://x/y", create=create)
    newer = f"sqlite:///{tmp_path / 'newer.db'}"
    with Store.open(newer) as store, store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StoreOpenError, match="'9999'.*written by a newer foliodiff"):
        Store.open(newer, create=create)


def test_an_unreachable_postgresql_database_names_the_url_without_its_password(
        pg_admin) -> None:
    url = pg_admin.url.set(database="foliodiff_no_such_database")
    with pytest.raises(StoreOpenError, match="foliodiff_no_such_database") as err:
        Store.open(url.render_as_string(hide_password=False), create=False)
    if url.password:
        assert f":{url.password}@" not in str(err.value) and ":***@" in str(err.value)


# -- concurrency --------------------------------------------------------------------


def _worker(url: str, base: DivergenceRecord, start: int, barrier) -> None:
    """Upsert signatures ``start .. start+199``, each twice, in batches of 50.

    The ones shared with the other worker (100..199) go first, so that both
    workers read and write the same signatures at the same time.
    """
    order = sorted(range(start, start + 200), key=lambda i: not 100 <= i < 200)
    records = [variant(base, i) for i in order] * 2
    with Store.open(url, clock=Tick(), busy_timeout_ms=60_000) as store:
        barrier.wait()
        for i in range(0, len(records), 50):
            store.upsert_divergences(records[i:i + 50])


def test_two_processes_lose_nothing_and_count_nothing_twice(
        store: Store, url: str, data_loss: DivergenceRecord) -> None:
    workers, barrier = _start_workers(url, data_loss, parties=2)
    _join(workers)

    items, total = store.list_divergences(sort="id", limit=1000)
    assert total == 300
    hits = {d.signature: d.hit_count for d in items}
    assert len(hits) == 300 and sum(hits.values()) == 2 * 400
    _assert_worker_hits(hits, data_loss)


def _start_workers(url: str, base: DivergenceRecord, parties: int):
    """Start the two upsert workers (signatures 100..199 are written by both);
    they begin once ``parties`` processes, them included, wait on the barrier."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(parties)
    workers = [ctx.Process(target=_worker, args=(url, base, start, barrier))
               for start in (0, 100)]
    for w in workers:
        w.start()
    return workers, barrier


def _join(workers) -> None:
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]


def _assert_worker_hits(hits: dict[str, int], base: DivergenceRecord) -> None:
    for i in range(300):
        assert hits[f"{base.signature}|v{i}"] == (4 if 100 <= i < 200 else 2), i


def test_two_workers_and_the_api_writing_at_once(
        store: Store, url: str, data_loss: DivergenceRecord) -> None:
    """Two fuzz workers upsert while a triager writes through the API: no divergence
    is lost, no hit is counted twice, and every note and transition is kept."""
    from fastapi.testclient import TestClient

    from service.api import Settings, create_app

    # Records the triager works on, there before the workers start.
    store.upsert_divergences([variant(data_loss, i) for i in range(1000, 1010)])
    workers, barrier = _start_workers(url, data_loss, parties=3)
    with TestClient(create_app(Settings(db_url=url))) as api:
        barrier.wait()
        for did in range(1, 11):
            for n in range(3):
                r = api.post(f"/divergences/{did}/notes", json={"text": f"note {n}", "author": "t"})
                assert r.status_code == 201, r.text
            r = api.post(f"/divergences/{did}/transitions",
                         json={"to": "confirmed", "note": "seen", "author": "t"})
            assert r.status_code == 200, r.text
    _join(workers)

    items, total = store.list_divergences(sort="id", limit=1000)
    assert total == 310
    hits = {d.signature: d.hit_count for d in items}
    assert sum(hits.values()) == 10 + 2 * 400
    _assert_worker_hits(hits, data_loss)
    for did in range(1, 11):
        assert len(store.notes(did)) == 3
        assert [e.to_status.value for e in store.history(did)][-1] == "confirmed"
