"""Migration 0004 on a real SQLite file and a real PostgreSQL database: stored
programs move to format 2, each format-1 schedule read on the engine its
references run first.

Each test makes a fresh database at revision 0003 (``url`` in conftest.py),
stores programs there as an older foliodiff did, referenced by divergences
of different engine pairs and by a campaign's intended-rule samples, then
opens it with the :class:`Store`, which migrates it to the newest revision.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from programs_v1 import H1, H2, LATE_DMA, UNREADABLE

from engine.corpus.upgrade import upgrade_program
from engine.execution.runner import run
from engine.program.format import parse_program
from fuzz.records import PackedOutcome
from service.api import Settings, create_app
from service.models import TriageStatus
from service.store import MIGRATIONS, Store, upgrade

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def _compact(data: dict) -> str:
    return json.dumps(data)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Old:
    """A database at revision 0003 and the rows an older foliodiff stored in it."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)
        upgrade(self.engine, "0003")
        meta = sa.MetaData()
        meta.reflect(self.engine, only=["program", "divergence", "campaign", "outcome"])
        self.t = meta.tables
        with self.engine.begin() as conn:
            packed = PackedOutcome.pack({"verdict": "ok", "state": {}, "crash": None})
            self.outcome = conn.execute(sa.insert(self.t["outcome"]).values(
                sha256=packed.sha256, packed=packed.packed)
                .returning(self.t["outcome"].c.id)).scalar_one()

    def program(self, text: str) -> int:
        # No explicit ids: PostgreSQL's sequences must see every row.
        with self.engine.begin() as conn:
            return conn.execute(sa.insert(self.t["program"]).values(sha256=_sha(text), json=text)
                                .returning(self.t["program"].c.id)).scalar_one()

    def divergence(self, engine_a: str, engine_b: str, original: int,
                   minimized: int | None = None) -> int:
        with self.engine.begin() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(self.t["divergence"])).scalar()
            return conn.execute(sa.insert(self.t["divergence"]).values(
                signature=f"{engine_a}..{engine_b}|state|s{n}", signature_id=f"{n:016x}", seq=0,
                engine_a=engine_a, engine_b=engine_b, kind="state", classification="unexpected",
                field="f", function=None, first_op=None, detail="", first_seen=T0,
                last_seen=T0, hit_count=1, original_program_id=original,
                minimized_program_id=minimized, outcome_a_id=self.outcome,
                outcome_b_id=self.outcome, status="new", duplicate_of=None,
                reopened_from=None).returning(self.t["divergence"].c.id)).scalar_one()

    def campaign(self, engine_a: str, engine_b: str, intended: dict) -> int:
        with self.engine.begin() as conn:
            return conn.execute(sa.insert(self.t["campaign"]).values(
                engine_a=engine_a, engine_b=engine_b, fuzzer="random", config={},
                status="finished", intended=intended, created_at=T0, updated_at=T0)
                .returning(self.t["campaign"].c.id)).scalar_one()

    def close(self) -> None:
        self.engine.dispose()


def _programs(store: Store) -> dict[int, tuple[str, str]]:
    with store.engine.connect() as conn:
        return {pid: (sha, text) for pid, sha, text in
                conn.exec_driver_sql("SELECT id, sha256, json FROM program")}


def _text(data: dict, reading: str) -> str:
    """What the migration stores for format-1 @data read on @reading."""
    return upgrade_program(data, reading).program.to_json(indent=None)


def test_format_1_programs_are_read_on_the_engine_of_their_references(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    old = Old(url)
    h2 = old.program(_compact(H2))
    h1 = old.program(_compact(H1))
    # Already format 2, as a newer worker stored it: H2 as v6.15 reads it.
    h2_v615 = old.program(_text(H2, "v6.15"))
    unreadable = old.program(_compact(UNREADABLE))
    late_dma = old.program(_compact(LATE_DMA))
    h1_again = old.program(json.dumps(H1, indent=2))      # another text of the same program
    garbage = old.program("{}")
    d_old = old.divergence("v6.14", "v6.15", h2)
    d_new = old.divergence("v6.15", "v6.16", h2)
    d_both = old.divergence("v6.16", "v6.16-c", h1, minimized=h2)
    d_again = old.divergence("v5.17", "v6.14", h1_again)
    d_left = old.divergence("v6.14", "v6.15", unreadable)
    d_dma = old.divergence("v5.17", "v6.14", late_dma)
    c_old = old.campaign("v5.17", "v6.14", {"rule-x": {"count": 4, "samples": [h2]},
                                           "rule-y": {"count": 2, "samples": [h2_v615, h2]}})
    c_new = old.campaign("v6.15", "v6.16", {"rule-z": {"count": 9, "samples": [h2, h2_v615]}})
    old.close()

    with caplog.at_level(logging.WARNING, logger="foliodiff.migrations"):
        store = Store.open(url)
    try:
        rows = _programs(store)
        # Every row's hash is the store's hash of its text.
        assert all(sha == _sha(text) for pid, (sha, text) in rows.items() if pid != garbage)

        # H2 stays in its row as the first divergence's engine reads it ...
        assert rows[h2][1] == _text(H2, "v6.14")
        assert store.get_divergence(d_old).original_program_id == h2
        # ... v6.15 and v6.16 read it as the row that already held that reading ...
        assert _text(H2, "v6.16") == rows[h2_v615][1]
        assert store.get_divergence(d_new).original_program_id == h2_v615
        assert store.get_divergence(d_both).minimized_program_id == h2_v615
        # ... and v5.17, for the campaign's samples, as a new row.
        (v517,) = [pid for pid, (_, text) in rows.items() if text == _text(H2, "v5.17")]
        assert v517 not in (h2, h1, h2_v615, unreadable, late_dma, h1_again, garbage)
        assert store.get_campaign(c_old).intended == {
            "rule-x": {"count": 4, "samples": [v517]},
            "rule-y": {"count": 2, "samples": [h2_v615, v517]}}
        # Two samples that became one program are one sample.
        assert store.get_campaign(c_new).intended == {
            "rule-z": {"count": 9, "samples": [h2_v615]}}

        # Two texts of one program: one row; references move to it, the other row goes.
        assert rows[h1][1] == _text(H1, "v6.14") and h1_again not in rows
        assert store.get_divergence(d_both).original_program_id == h1
        assert store.get_divergence(d_again).original_program_id == h1
        assert rows[late_dma][1] == _text(LATE_DMA, "v5.17")
        assert len(parse_program(json.loads(rows[late_dma][1])).ops) == 5

        # What neither format takes stays as it was, and the migration says which.
        assert rows[unreadable] == (_sha(_compact(UNREADABLE)), _compact(UNREADABLE))
        assert rows[garbage][1] == "{}"
        said = caplog.text
        assert f"program #{unreadable} left in format 1" in said and "schedule[0][1]" in said
        assert f"program #{garbage} is of neither format" in said

        # Each divergence says which engine's reading its programs keep.
        def note(did: int) -> str:
            (n,) = store.notes(did)
            assert n.author == "migration"
            return n.text

        assert f"original program #{h2} is now #{h2} in format 2" in note(d_old)
        assert "read on v6.14" in note(d_old)
        assert f"original program #{h2} is now #{h2_v615}" in note(d_new)
        assert "read on v6.15" in note(d_new)
        both = note(d_both)
        assert "format 1 without a schedule" in both and "read on v6.16" in both
        assert f"original program #{h1_again} is now #{h1}" in note(d_again)
        assert f"program #{unreadable} is left in format 1" in note(d_left)
        assert "unknown thread" in note(d_left)
        assert "dropped ops [4]" in note(d_dma) and "read on v5.17" in note(d_dma)
        assert store.get_divergence(d_left).status is TriageStatus.NEW

        # Each upgraded program runs on its reading engine as the upgrade has it.
        for did, data in ((d_old, H2), (d_new, H2), (d_dma, LATE_DMA)):
            d = store.get_divergence(did)
            stored = parse_program(json.loads(store.get_program(d.original_program_id).json))
            want = upgrade_program(data, d.engine_a).program
            assert run(stored, d.engine_a).to_dict() == run(want, d.engine_a).to_dict()
        d = store.get_divergence(d_both)
        stored = parse_program(json.loads(store.get_program(d.minimized_program_id).json))
        assert (run(stored, "v6.16").to_dict()
                == run(upgrade_program(H2, "v6.16").program, "v6.16").to_dict())
    finally:
        store.close()


def test_a_program_left_in_format_1_is_shown_and_refused_by_name_never_a_500(url: str) -> None:
    old = Old(url)
    did = old.divergence("v6.14", "v6.15", old.program(_compact(UNREADABLE)))
    old.close()
    with TestClient(create_app(Settings(db_url=url))) as client:
        d = client.get(f"/divergences/{did}")
        assert d.status_code == 200 and d.json()["original_program"] == UNREADABLE
        for r in (client.post(f"/divergences/{did}/replay"),
                  client.get(f"/divergences/{did}/corpus"),
                  client.get(f"/divergences/{did}/reproducer.c")):
            assert r.status_code == 422, r.text
            assert r.json()["field"] == "schedule[0][1]" and r.json()["value"] == "Z"


def test_a_store_without_format_1_programs_migrates_unchanged(url: str) -> None:
    old = Old(url)
    text = _text(H2, "v6.14")
    pid = old.program(text)
    did = old.divergence("v6.14", "v6.15", pid)
    old.close()
    with Store.open(url) as store:
        assert _programs(store) == {pid: (_sha(text), text)}
        assert store.notes(did) == []


def test_downgrade_below_0004_is_refused_and_changes_nothing(url: str) -> None:
    with Store.open(url) as store:
        store.create_campaign("v6.14", "v6.15", "random")
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with store.engine.begin() as conn:
            config.attributes["connection"] = conn
            with pytest.raises(NotImplementedError,
                               match="step numbers cannot be recomputed from places"):
                command.downgrade(config, "0003")
            conn.rollback()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() \
                == ScriptDirectory.from_config(config).get_current_head()
            assert conn.exec_driver_sql("SELECT count(*) FROM harness_error").scalar() == 0
        assert store.get_campaign(1).fuzzer == "random"
