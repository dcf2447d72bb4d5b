"""Benchmarks that need the store: functions that print measurements, never timed tests.

The store's own (:func:`bench_ingest`, :func:`bench_list_latency`):
records are built before the clock starts, from one real report (a data
loss between v5.17 and v6.14) given distinct signatures and programs, so
that what is timed is the store: hashing and storing programs, looking up
signatures, inserting rows, counting hits.

The fuzzers' time to first detection (:func:`bench_fuzz`, over the trials
of :mod:`fuzz.bench`): each detection minimized, stored as a campaign
would store it, read back and replayed (:func:`reduce_and_replay`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine import Classification, Divergence, Program, differential, parse_program
from fuzz.bench import TARGETS, Target, Trial, search, summarize, target_seeds
from fuzz.minimize import minimize
from fuzz.records import DivergenceRecord, PackedOutcome, records_from_report
from fuzz.sink import FindingSink
from fuzz.sources import Fuzzer
from service.errors import ServerStartError
from service.store import Store
from service.triage import reproducer

#: Delta-debugging checks spent on each detection.
MINIMIZE_RUNS = 800

#: Corpus H5 (DMA into a lazyfree page): data loss between v5.17 and v6.14.
_BASE_PROGRAM: dict[str, Any] = {
    "version": 2,
    "threads": [{"name": "T0", "mm": 0}, {"name": "R", "kind": "kthread"},
                {"name": "D", "kind": "device"}],
    "ops": [{"thread": "T0", "op": "mmap", "addr": 0x200000, "pages": 1},
            {"thread": "T0", "op": "write", "addr": 0x200000, "value": 7},
            {"thread": "T0", "op": "madvise", "addr": 0x200000, "pages": 1,
             "advice": "MADV_FREE"},
            {"thread": "T0", "op": "lru_add_drain"},
            {"thread": "T0", "op": "pin", "addr": 0x200000, "pin": "p0"},
            {"thread": "R", "op": "reclaim"},
            {"thread": "D", "op": "dma_write", "pin": "p0", "value": 42},
            {"thread": "T0", "op": "unpin", "pin": "p0", "dirty": True},
            {"thread": "T0", "op": "madvise", "addr": 0x200000, "pages": 1,
             "advice": "MADV_PAGEOUT"},
            {"thread": "T0", "op": "read", "addr": 0x200000}],
}


def _records(n: int) -> list[DivergenceRecord]:
    """``n`` records with distinct signatures, programs and outcomes, built from one real report.

    Each record's two outcomes differ from every other record's (its run is
    given its own step count), so the store stores 2n outcomes, as it would for
    n divergences found by n different programs; a fuzz worker packs them, as
    :func:`fuzz.records.records_from_report` does, before handing them over.
    """
    program = parse_program(_BASE_PROGRAM)
    report = differential(program, "v5.17", "v6.14")
    (base,) = records_from_report(report, program)
    outcome_a, outcome_b = report.a.to_dict(), report.b.to_dict()
    out = []
    for i in range(n):
        signature = f"{base.signature}|bench{i}"
        # A program of its own: T0 preempts reclaim (ops[5]) at its (i+1)-th folio.
        schedule = [{"op": 5, "at": "between_folios", "nth": i + 1, "thread": "T0"}]
        text = json.dumps({**_BASE_PROGRAM, "schedule": schedule}, separators=(",", ":"))
        out.append(dataclasses.replace(
            base, signature=signature,
            signature_id=hashlib.sha1(signature.encode()).hexdigest()[:16],
            original_program=text,
            outcome_a=PackedOutcome.pack({**outcome_a, "steps": i}),
            outcome_b=PackedOutcome.pack({**outcome_b, "steps": i})))
    return out


def _pack_cost(outcome: dict[str, Any], repeat: int = 2_000) -> float:
    """Microseconds a producer spends packing one outcome (serialise, hash, compress)."""
    t0 = time.perf_counter()
    for i in range(repeat):
        PackedOutcome.pack({**outcome, "steps": i})
    return (time.perf_counter() - t0) / repeat * 1e6


def bench_ingest(n: int = 100_000, batch: int = 1_000, path: str | None = None) -> dict[str, Any]:
    """Batched divergence upserts per second into a SQLite file.

    Two passes over ``n`` distinct signatures in batches of ``batch``: the
    first inserts every one (a new divergence, its program and its two
    outcomes), the second counts a hit on every one (what a long campaign
    mostly does).  Outcomes come packed, as fuzz workers hand them over; what
    packing costs a worker is printed apart (``producer_pack_us_per_outcome``).  The file
    is a fresh one under a temporary directory unless ``path`` is given.

    Return: the rates, also printed one per line.
    """
    records = _records(n)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{path or Path(tmp) / 'bench.db'}"
        with Store.open(url) as store:
            rates = {}
            for phase in ("insert", "hit"):
                t0 = time.perf_counter()
                for i in range(0, n, batch):
                    store.upsert_divergences(records[i:i + batch])
                rates[f"{phase}_upserts_per_s"] = n / (time.perf_counter() - t0)
            _, total = store.list_divergences(limit=1)
            size = Path(url.removeprefix("sqlite:///")).stat().st_size
            # Read back while the file is there: without ``path`` it goes with ``tmp``.
            outcome = store.get_divergence(1).outcome_a
    pack_us = _pack_cost(outcome)
    result = {"divergences": total, "batch": batch, **{k: round(v) for k, v in rates.items()},
              "db_mib": round(size / 2**20, 1),
              "producer_pack_us_per_outcome": round(pack_us, 1)}
    for key, value in result.items():
        print(f"{key}: {value}")
    return result


#: Query shapes a triager's list view sends (a fixed mix, drawn with a seeded RNG).
_LIST_QUERIES: tuple[dict[str, str | int], ...] = (
    {"limit": 50},
    {"limit": 50, "sort": "-last_seen"},
    {"limit": 50, "status": "new", "sort": "-hit_count"},
    {"limit": 50, "kind": "data_loss"},
    {"limit": 50, "engines": "v5.17..v6.14", "classification": "unexpected"},
    {"limit": 50, "q": "bench4242"},           # a rare text: the trigram index
    {"limit": 50, "q": "data_loss|mm"},        # a text in every signature: a scan
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_list_latency(db_path: str, requests: int = 1_000, seed: int = 1) -> dict[str, Any]:
    """p50/p99 latency of GET /divergences from a real uvicorn server on loopback.

    The server is ``foliodiff serve`` in a subprocess on the store file
    ``db_path``; requests are sequential, with offsets and filters drawn from a
    seeded RNG; offsets are uniform over the whole table, so deep pages are
    as common as the first.  Return: the latencies in milliseconds, overall
    and per query shape, also printed.
    """
    import httpx  # an HTTP client is needed only to measure the server

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port),
                               "--db", f"sqlite:///{db_path}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    rng = random.Random(seed)
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.get("/divergences", params={"limit": 1}).raise_for_status()
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        said = server.stderr.read() if server.stderr is not None else b""
                        raise ServerStartError(base, said) from None
                    time.sleep(0.1)
            total = client.get("/divergences", params={"limit": 1}).json()["total"]
            times: list[float] = []
            by_shape: dict[int, list[float]] = {}
            for _ in range(requests):
                shape = rng.randrange(len(_LIST_QUERIES))
                params: dict[str, str | int] = {**_LIST_QUERIES[shape],
                          "offset": rng.randrange(0, max(1, total - 50))}
                t0 = time.perf_counter()
                r = client.get("/divergences", params=params)
                times.append((time.perf_counter() - t0) * 1000)
                by_shape.setdefault(shape, []).append(times[-1])
                r.raise_for_status()
    finally:
        server.terminate()
        server.wait(timeout=10)
    q = statistics.quantiles(times, n=100)
    result = {"stored_divergences": total, "requests": requests,
              "list_p50_ms": round(q[49], 2), "list_p99_ms": round(q[98], 2),
              "list_max_ms": round(max(times), 2),
              "by_query": [{"query": _LIST_QUERIES[i], "requests": len(t),
                            "p50_ms": round(statistics.median(t), 2),
                            "p99_ms": round(statistics.quantiles(t, n=100)[98], 2)}
                           for i, t in sorted(by_shape.items()) if len(t) > 1]}
    for key, value in result.items():
        print(f"{key}: {value}")
    return result


# -- time to first detection: each detection through the store ---------------------


def reduce_and_replay(trial: Trial, store_url: str) -> None:
    """Minimize the trial's detection, store it as a campaign would, read it back, replay it.

    Delta debugging keeps both the divergence's signature and the target
    predicate (a signature names a field and a function, and a smaller
    program could show the same ones through another bug).  The result goes
    through a :class:`fuzz.sink.FindingSink` into the store (intended
    divergences keep it as their rule's sample program); the reproducer read
    back from the store must show the same signature and still be the target.
    """
    spec = TARGETS[Target(trial.target)]
    program = parse_program(trial.program)
    report, found = spec.shows(program)
    if found is None:
        trial.error = "the detected program does not replay to the target"
        return
    sid = found.signature_id

    def interesting(candidate: Program) -> bool:
        d = spec.shows(candidate)[1]
        return d is not None and d.signature_id == sid

    res = minimize(program, interesting, max_runs=MINIMIZE_RUNS)
    trial.minimize_runs = res.runs
    store = Store.open(store_url)
    try:
        campaign = store.create_campaign(spec.engine_a, spec.engine_b, trial.fuzzer,
                                         {"bench": trial.target, "seed": trial.seed})
        sink = FindingSink(store, campaign.id, known=set())
        sink.add(program, report, minimized=res.program)
        sink.flush()
        stored = _stored_reproducer(store, campaign.id, found)
    finally:
        store.close()
    again = spec.shows(stored)[1]
    trial.ops_found, trial.ops_minimized = len(program.ops), len(stored.ops)
    trial.signature = found.signature
    trial.replay_same_signature = again is not None and again.signature_id == sid


def _stored_reproducer(store: Store, campaign_id: int, found: Divergence) -> Program:
    """The program the store kept for ``found``: its minimized reproducer or rule sample."""
    if found.classification is Classification.UNEXPECTED:
        items, _ = store.list_divergences(text=found.signature, limit=1)
        return reproducer(store, items[0])
    rule = found.rules[0].name
    pid = store.get_campaign(campaign_id).intended[rule]["samples"][0]
    return parse_program(json.loads(store.get_program(pid).json))


def bench_fuzz(fuzzers: list[Fuzzer], targets: list[Target], seeds: list[int], cap: float,
               *, seed_corpus: str | Path | None = None, reduce: bool = True,
               on_trial: Callable[[Trial], None] | None = None) -> dict[str, Any]:
    """Every (target, fuzzer, seed) trial, one at a time; the summary and the trials.

    @seed_corpus: a directory of seed programs (``corpus/``), each target's
        own detections left out; None starts every fuzzer cold.
    """
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        for target in targets:
            inputs = target_seeds(target, seed_corpus)
            for fuzzer in fuzzers:
                for seed in seeds:
                    trial = search(fuzzer, target, seed, cap, inputs)
                    if trial.found and reduce:
                        reduce_and_replay(trial, url)
                    trials.append(trial)
                    if on_trial is not None:
                        on_trial(trial)
    all_min = [t.ops_minimized for t in trials if t.ops_minimized is not None]
    replayed = sum(bool(t.replay_same_signature) for t in trials if t.found)
    return {"cap_s": cap, "seeds": seeds, "seed_corpus": str(seed_corpus),
            "minimized_ops_median_all": statistics.median(all_min) if all_min else None,
            "replays_same_signature_all": f"{replayed}/{sum(t.found for t in trials)}",
            "summary": summarize(trials, cap),
            "trials": [{k: v for k, v in asdict(t).items() if k != "program"} for t in trials]}
