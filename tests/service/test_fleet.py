"""Fleet campaigns on a real PostgreSQL server, with real worker processes.

A campaign of four shares runs on four ``foliodiff worker`` processes; one
is killed with SIGKILL in the middle.  The campaign must still finish, the
killed worker's share be taken over, no finding any worker said it stored
be lost or stored twice, and the corpus entries pushed before the kill
stay.  The store-level parts (shares and their generations, two workers
storing one finding at once) are tested on both backends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import fuzz.sink as sink_module
from engine import differential, load_any
from fuzz.records import records_from_report
from fuzz.sink import FindingSink
from service.campaign import Campaign, CampaignConfig
from service.cli import app as cli_app
from service.errors import (
    BatchError,
    FleetError,
    InvalidValueError,
    NotFoundError,
    ShareLostError,
)
from service.fleet.create import create_fleet_campaign
from service.fleet.queue import REPLAY_QUEUE, campaign_queue, ensure_schema
from service.fleet.tasks import defer_merge, queue_app
from service.models import CampaignStatus
from service.store import Store

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "corpus"


# -- the store's part ---------------------------------------------------------------


def test_a_share_is_written_only_by_its_newest_taker(url: str) -> None:
    with Store.open(url) as store:
        cid = store.create_campaign("v6.14", "v6.15", "random", {}).id
        store.create_shares(cid, 2)
        first = store.take_share(cid, 1, "host:1")
        store.save_share(cid, 1, first.generation, position={"i": 7}, elapsed=3.0, execs=40,
                         coverage=9)
        second = store.take_share(cid, 1, "host:2")
        assert (second.generation, second.position, second.execs) == (2, {"i": 7}, 40)
        with pytest.raises(ShareLostError, match="taken over by 'host:2'"):
            store.save_share(cid, 1, first.generation, position={"i": 99}, elapsed=9.0,
                             execs=1, coverage=1)
        (s0, s1) = store.shares(cid)
        assert (s0.generation, s1.position, s1.holder) == (0, {"i": 7}, "host:2")
        with pytest.raises(NotFoundError):
            store.take_share(cid, 2, "host:1")


def test_one_finding_from_two_workers_is_stored_once_with_both_hits(url: str) -> None:
    """Two workers (two sinks, two connections) find the same new signature and
    flush: one record, two hits, and only the worker whose batch stored it says so."""
    program = load_any(str(CORPUS / "h5-dma-into-lazyfree.json"), "v5.17")
    report = differential(program, "v5.17", "v6.14")
    with Store.open(url) as a, Store.open(url) as b:
        cid = a.create_campaign("v5.17", "v6.14", "random", {}).id
        said: list[list[int]] = [[], []]
        sinks = [FindingSink(store, cid, known=set(), minimize=False,
                             on_stored=lambda found, k=k: said[k].extend(
                                 f.divergence_id for f in found))
                 for k, store in enumerate((a, b))]
        for sink in sinks:
            sink.add(program, report)
        for sink in sinks:
            sink.flush()
        rows, total = a.list_divergences()
        assert total == 1 and rows[0].hit_count == 2
        assert said == [[rows[0].id], []]


def _loss() -> tuple:
    program = load_any(str(CORPUS / "h5-dma-into-lazyfree.json"), "v5.17")
    (rec,) = records_from_report(differential(program, "v5.17", "v6.14"), program)
    return program, rec


def test_a_batch_sent_again_with_its_key_is_applied_once(url: str) -> None:
    _, rec = _loss()
    with Store.open(url) as store:
        cid = store.create_campaign("v5.17", "v6.14", "random", {}).id
        first = store.upsert_divergences([rec, rec], cid, key="w1/1")
        again = store.upsert_divergences([rec, rec], cid, key="w1/1")
        assert (first.inserted, first.new, again.inserted, again.updated, again.new) == (
            1, {rec.signature_id}, 0, 0, set())
        assert again.ids == first.ids
        assert store.get_divergence(first.ids[rec.signature_id]).hit_count == 2
        store.upsert_divergences([rec], cid, key="w1/2")
        assert store.get_divergence(first.ids[rec.signature_id]).hit_count == 3
        with pytest.raises(InvalidValueError) as err:
            store.upsert_divergences([rec], cid, key="k" * 101)
        assert err.value.field == "key"


class _LostCommit:
    """A store whose first divergence batch commits, then loses its connection."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[str | None] = []

    def upsert_divergences(self, records, *, campaign_id=None, key=None):
        self.calls.append(key)
        result = self.store.upsert_divergences(records, campaign_id, key=key)
        if len(self.calls) == 1:
            raise BatchError(len(records), "server closed the connection unexpectedly",
                             transient=True)
        return result

    def upsert_harness_errors(self, records, *, campaign_id=None, key=None):
        return self.store.upsert_harness_errors(records, campaign_id, key=key)


def test_a_sink_sends_a_lost_batch_again_with_its_key(url: str, monkeypatch) -> None:
    monkeypatch.setattr(sink_module, "RETRY_AFTER", 0.0)
    program, rec = _loss()
    report = differential(program, "v5.17", "v6.14")
    with Store.open(url) as store:
        cid = store.create_campaign("v5.17", "v6.14", "random", {}).id
        lossy = _LostCommit(store)
        said: list[int] = []
        sink = FindingSink(lossy, cid, known=set(), minimize=False,
                           on_stored=lambda found: said.extend(f.divergence_id for f in found))
        sink.add(program, report)
        sink.flush()
        assert len(lossy.calls) == 2 and lossy.calls[0] == lossy.calls[1] is not None
        rows, total = store.list_divergences()
        # Stored once, its hit counted once; said stored by nobody: the batch that
        # inserted it is the one whose answer was lost.
        assert (total, rows[0].hit_count, said) == (1, 1, [])


def test_writers_storing_the_same_findings_at_once(url: str) -> None:
    """Four writers, each its own connection, store the same 30 new signatures at
    once: one record each, every hit counted, and each said new by one writer."""
    _, rec = _loss()
    recs = [dataclasses.replace(rec, signature=f"{rec.signature}|v{i}",
                                signature_id=hashlib.sha1(f"v{i}".encode()).hexdigest()[:16])
            for i in range(30)]
    with Store.open(url) as first:
        cid = first.create_campaign("v5.17", "v6.14", "random", {}).id
    news: list[set[str]] = []
    start = threading.Barrier(4)

    def write(k: int) -> None:
        with Store.open(url) as store:
            start.wait()
            got = set()
            for i in range(0, 30, 5):
                got |= store.upsert_divergences(recs[i:i + 5] * 2, cid, key=f"w{k}/{i}").new
            news.append(got)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Store.open(url) as store:
        rows, total = store.list_divergences(limit=100)
    assert total == 30 and {d.hit_count for d in rows} == {8}
    assert sum(len(n) for n in news) == 30 and set().union(*news) == {r.signature_id
                                                                    for r in recs}


# -- workers, on PostgreSQL -----------------------------------------------------------


def _worker(url: str, cid: int | None, name: str, log: Path) -> subprocess.Popen:
    """A ``foliodiff worker`` process of campaign @cid (None: of every campaign)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    campaign = [] if cid is None else ["--campaign", str(cid)]
    return subprocess.Popen(
        [sys.executable, "-c", "from service.cli import main; main()", "worker", "--db", url,
         *campaign, "--name", name],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _wait(what: str, check, timeout: float) -> None:
    until = time.monotonic() + timeout
    while not check():
        if time.monotonic() > until:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_campaign_survives_a_worker_killed_mid_run(pg_url: str, tmp_path: Path) -> None:
    config = CampaignConfig(fuzzer="random", engine_a="v6.14", engine_b="v6.15", seconds=14,
                            workers=4, seeds=str(CORPUS), slice_seconds=5, minimize=True)
    with Store.open(pg_url):
        pass                                 # the schema
    cid = create_fleet_campaign(pg_url, config)
    engine = sa.create_engine(pg_url)
    logs = [tmp_path / f"w{k}.log" for k in range(4)]
    workers = [_worker(pg_url, cid, f"w{k}", logs[k]) for k in range(4)]
    try:
        with Store.open(pg_url, create=False) as store:
            # Kill w0 in the middle of a slice: while it holds a share, has saved
            # executions of it, and the slice's job is being done (so there is a
            # lease to take over, not a share between two jobs).
            def running() -> list[int]:
                """The shares w0 runs now: it holds them, has saved executions, and
                their slice's job is being done."""
                held = [s.share for s in store.shares(cid) if s.holder == "w0" and s.execs]
                with engine.connect() as conn:
                    return [k for k in held if conn.execute(sa.text(
                        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing' "
                        "AND lock = :lock"), {"lock": f"campaign-{cid}/share-{k}"}).scalar_one()]

            _wait("w0 to run a share", lambda: bool(running()), 60)
            held = running()
            before = {e.sha1 for e in store.pull_corpus(cid, limit=10_000)}
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait()
            for w in workers[1:]:
                assert w.wait(timeout=180) == 0, "a surviving worker failed"
            campaign = store.get_campaign(cid)
            shares = store.shares(cid)
            # A merge at the end may have pruned some: pruned entries stay stored.
            after = {e.sha1 for e in store.pull_corpus(cid, limit=10_000, pruned=True)}
            rows, total = store.list_divergences(limit=100)
            snapshots = store.stats(cid)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    texts = [log.read_text() for log in logs]
    assert campaign.status is CampaignStatus.FINISHED, texts
    assert all(s.elapsed >= config.seconds - 0.5 for s in shares)
    # A stats snapshot after each slice; the last to see every share saved has their total.
    assert max(snap.execs for snap in snapshots) == sum(s.execs for s in shares)
    # The share w0 was running when killed: its job was taken over, and another
    # worker finished the share.
    assert held
    for k in held:
        assert shares[k].holder != "w0" and shares[k].generation >= 2, shares[k]
    assert "took over job" in "".join(texts[1:])
    # Corpus entries pushed before the kill are all there.
    assert before <= after
    # Each finding a worker said it stored is in the store, said by one worker only,
    # and each signature has one record.
    said = [int(m) for t in texts for m in re.findall(r"stored #(\d+) ", t)]
    assert len(said) == len(set(said))
    ids = {d.id for d in rows}
    assert set(said) <= ids
    assert total == len({d.signature_id for d in rows})
    with engine.connect() as conn:
        states = dict(conn.execute(sa.text(
            "SELECT status, count(*) FROM procrastinate_jobs GROUP BY status")).all())
    engine.dispose()
    assert set(states) <= {"succeeded", "todo"}, states   # none left doing or failed


@pytest.mark.parametrize("fuzzer", ["pct", "exhaustive", "hypothesis", "atheris"])
def test_every_fuzzer_runs_a_share_over_slices(pg_url: str, tmp_path: Path, fuzzer: str) -> None:
    """Each fuzzer runs a share slice after slice on the shared corpus and adds to
    it: the sources (pct, exhaustive) go on from their position, Hypothesis from
    its next run, atheris on the corpus written out as files for libFuzzer."""
    config = CampaignConfig(fuzzer=fuzzer, engine_a="v6.14", engine_b="v6.15", seconds=6,
                            workers=1, seeds=str(CORPUS), slice_seconds=3)
    with Store.open(pg_url):
        pass
    cid = create_fleet_campaign(pg_url, config)
    log = tmp_path / "w.log"
    assert _worker(pg_url, cid, "w", log).wait(timeout=180) == 0, log.read_text()
    with Store.open(pg_url, create=False) as store:
        (share,) = store.shares(cid)
        workers = {e.worker for e in store.pull_corpus(cid, limit=10_000, pruned=True)}
        assert store.get_campaign(cid).status is CampaignStatus.FINISHED
    assert share.execs > 0 and share.coverage > 0 and share.elapsed >= config.seconds - 0.5
    assert workers == {"seeds", f"{fuzzer}-0"}
    # atheris: each slice's seconds count libFuzzer's start (Python, instrumenting
    # the model), so one slice may take the share's whole time.
    assert share.generation >= (1 if fuzzer == "atheris" else 2)
    key = {"hypothesis": "runs", "atheris": "slices"}.get(fuzzer, "i")
    assert share.position[key] >= 1


def test_a_merge_prunes_inputs_whose_features_smaller_ones_show(pg_url: str) -> None:
    with Store.open(pg_url) as store:
        cid = store.create_campaign("v6.14", "v6.15", "random", {}).id
        store.push_corpus(cid, [(b"seed-with-x", ["x"])], "seeds")
        store.push_corpus(cid, [(b"big-xy-input", ["x", "y"]), (b"xy", ["x", "y"]),
                                (b"z", ["z"]), (b"only-x", ["x"])], "random-0")
    ensure_schema(pg_url)
    app = queue_app(pg_url)
    with app.open():
        assert defer_merge(app, cid) and not defer_merge(app, cid)   # one waits at a time
        app.run_worker(queues=[campaign_queue(cid)], wait=False, install_signal_handlers=False,
                       additional_context={"db_url": pg_url})
    with Store.open(pg_url, create=False) as store:
        kept = [e.data for e in store.pull_corpus(cid)]
        stored = [e.data for e in store.pull_corpus(cid, pruned=True)]
    assert kept == [b"seed-with-x", b"xy", b"z"]
    assert len(stored) == 5


def test_a_replay_notes_whether_a_finding_still_shows(pg_url: str) -> None:
    """``foliodiff queue-replay`` queues every stored finding; a worker runs each
    program again and notes on the finding whether its signature still shows."""
    _, rec = _loss()
    gone = dataclasses.replace(rec, signature=f"{rec.signature}|renamed",
                               signature_id=hashlib.sha1(b"renamed").hexdigest()[:16])
    with Store.open(pg_url) as store:
        ids = store.upsert_divergences([rec, gone]).ids
    result = CliRunner().invoke(cli_app, ["queue-replay", "--db", pg_url])
    assert result.exit_code == 0 and "2 replays queued" in result.output, result.output
    again = CliRunner().invoke(cli_app, ["queue-replay", "--db", pg_url])
    assert "0 replays queued (2 were waiting already)" in again.output, again.output
    app = queue_app(pg_url)
    with app.open():
        app.run_worker(queues=[REPLAY_QUEUE], wait=False, install_signal_handlers=False,
                       additional_context={"db_url": pg_url})
    with Store.open(pg_url, create=False) as store:
        kept = [n.text for n in store.notes(ids[rec.signature_id])]
        lost = [n.text for n in store.notes(ids[gone.signature_id])]
    assert len(kept) == 1 and "the original program still shows it" in kept[0]
    assert len(lost) == 1 and "no longer shows it; it shows " + rec.signature in lost[0]


@pytest.mark.parametrize("joins", ["the campaign", "every campaign"])
def test_a_worker_of_another_model_is_refused(pg_url: str, tmp_path: Path, joins: str) -> None:
    """Given the campaign, before it joins; serving every campaign, at its first job
    of that one, which goes back to the queue for the others."""
    config = CampaignConfig(fuzzer="random", engine_a="v6.14", engine_b="v6.15", seconds=5,
                            workers=1)
    with Store.open(pg_url):
        pass
    cid = create_fleet_campaign(pg_url, config)
    with Store.open(pg_url, create=False) as store:
        row = store.get_campaign(cid)
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE campaign SET config = :c WHERE id = :i"),
                     {"c": json.dumps({**row.config, "model": "0123456789abcdef"}), "i": cid})
    log = tmp_path / "w.log"
    w = _worker(pg_url, cid if joins == "the campaign" else None, "w", log)
    assert w.wait(timeout=60) == 2
    text = log.read_text()
    assert "the campaign's is 0123456789abcdef" in text and "this worker's model is" in text
    with engine.connect() as conn:
        waiting = conn.execute(sa.text("SELECT count(*) FROM procrastinate_jobs "
                                       "WHERE status = 'todo'")).scalar_one()
    engine.dispose()
    assert waiting == 1                      # the share's slice, for a worker that can run it
    with Store.open(pg_url, create=False) as store:
        assert store.get_campaign(cid).status is CampaignStatus.RUNNING


def test_a_fleet_campaign_is_not_resumed_on_one_machine(pg_url: str) -> None:
    config = CampaignConfig(fuzzer="random", engine_a="v6.14", engine_b="v6.15", seconds=5)
    Store.open(pg_url).close()
    cid = create_fleet_campaign(pg_url, config)
    with pytest.raises(FleetError, match=f"foliodiff worker --campaign {cid}"):
        Campaign(pg_url, cid)


def test_a_fleet_needs_postgresql(tmp_path: Path) -> None:
    config = CampaignConfig(fuzzer="random", engine_a="v6.14", engine_b="v6.15", seconds=5)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    Store.open(url).close()
    with pytest.raises(Exception, match="a fleet runs on PostgreSQL"):
        create_fleet_campaign(url, config)
