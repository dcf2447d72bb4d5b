"""The dashboard's page benchmark: server time of every page over a large SQLite store.

``python3 -m service.web.bench [--divergences 10000] [--requests 200] [--out FILE]``

Fills a fresh SQLite file with @divergences divergences (the store
benchmark's records, :func:`service.bench._records`: distinct signatures,
programs and outcomes, given a mix of kinds, engine pairs and triage
states, a tenth of them bisected, some grouped as duplicates, with
history), a day-long campaign (17,280 stats snapshots, one per 5 s, and
intended counts) and ten conformance runs of the corpus on three kernels;
then requests each page @requests times through the app (in process) and
reads the server's own time of each answer from its ``Server-Timing``
header (:class:`service.web.pages.ServerTiming`), p50 and p99 per page.
Filters, texts, offsets and ids are drawn from a seeded RNG.

Exit status 1 when a page's p99 is over :data:`BUDGET_MS`.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import insert, update

from engine import Kind, corpus_index
from fuzz.sources import CoverageUnit
from service.api import Settings, create_app
from service.bench import _records
from service.conform.verdict import Verdict
from service.models import Campaign, Divergence, StatsSnapshot, TriageEvent, TriageStatus
from service.store import ConformanceRecord, Store

#: The page budget: p99 server time, milliseconds.
BUDGET_MS = 200.0
#: A day of a campaign's snapshots, one per 5 s.
DAY_OF_SNAPSHOTS = 17_280
#: Engine pairs the records are spread over.
_PAIRS = (("v5.17", "v6.14"), ("v6.14", "v6.15"), ("v6.15", "v6.16"), ("v6.14", "v6.12"))
_TIMING = re.compile(r"app;dur=([0-9.]+)")


def fill(url: str, n: int, seed: int = 1) -> dict[str, Any]:
    """Store @n divergences and one long campaign at @url (a new SQLite file).

    Return: what a page request needs to name: ``ids`` (every divergence),
    ``campaign``.
    """
    rng = random.Random(seed)
    kinds = list(Kind)
    records = [dataclasses.replace(r, kind=kinds[i % len(kinds)],
                                   engine_a=_PAIRS[i % len(_PAIRS)][0],
                                   engine_b=_PAIRS[i % len(_PAIRS)][1])
               for i, r in enumerate(_records(n))]
    with Store.open(url) as store:
        for i in range(0, n, 1000):
            store.upsert_divergences(records[i:i + 1000])
        campaign = store.create_campaign("v6.14", "v6.15", "random", {"seed": seed})
        t0 = datetime(2025, 3, 1, tzinfo=UTC)
        statuses = [TriageStatus.NEW] * 6 + [TriageStatus.CONFIRMED, TriageStatus.FIXED,
                                             TriageStatus.INVALID, TriageStatus.INTENDED]
        # Bulk writes through the models: what a year of triage and a day of a
        # campaign would have left, without a transaction per row.
        with store.engine.begin() as conn:
            for status in set(statuses):
                ids = [i for i in range(1, n + 1) if statuses[i % len(statuses)] is status]
                for k in range(0, len(ids), 500):
                    conn.execute(update(Divergence).where(Divergence.id.in_(ids[k:k + 500]))
                                 .values(status=status))
            events = [{"divergence_id": i, "from_status": TriageStatus.NEW,
                       "to_status": statuses[i % len(statuses)], "note": "bench",
                       "author": "bench", "at": t0 + timedelta(seconds=i)}
                      for i in range(1, n + 1) if statuses[i % len(statuses)] is not TriageStatus.NEW]
            conn.execute(insert(TriageEvent), events)
            # Every 50th record a duplicate of the one before it (a group of two).
            for i in range(50, n + 1, 50):
                conn.execute(update(Divergence).where(Divergence.id == i)
                             .values(status=TriageStatus.DUPLICATE, duplicate_of=i - 1))
            conn.execute(insert(StatsSnapshot), [
                {"campaign_id": campaign.id, "t": 5.0 * k, "execs": 180 * 5 * k,
                 "exec_per_s": 150 + rng.random() * 60, "corpus_size": 20 + k // 40,
                 "signatures": {"crash": k // 5000, "data_loss": k // 3000, "state": k // 700},
                 "at": t0 + timedelta(seconds=5 * k), "coverage": 100 + int(400 * (1 - 0.9997 ** k)),
                 "coverage_unit": CoverageUnit.FEATURES} for k in range(DAY_OF_SNAPSHOTS)])
            conn.execute(update(Campaign).where(Campaign.id == campaign.id).values(intended={
                "batched-lazyfree-unmap": {"count": 52_113, "samples": [1, 2, 3]},
                "swapbacked-only-if-dirty": {"count": 1_207, "samples": [4]}}))
        # A tenth bisected, through the store (what the list's came_in filter reads).
        bisection = {"engines": None, "target": None, "nodes": [], "edges": [
            {"edge": "v6.14->v6.15", "parent": "v6.14", "child": "v6.15", "change": "came_in",
             "target": True, "on_path": True, "classification": "unexpected", "rules": [],
             "detail": "bench"}]}
        for i in range(1, n + 1, 10):
            store.set_bisection(i, bisection)
        # Ten conformance runs of every corpus program on three kernels.
        names = [c["name"] or "" for c in corpus_index()]
        for run in range(10):
            store.add_conformance([ConformanceRecord(
                scenario=name, program='{"version": 2}', kernel=kernel,
                kernel_version=f"{kernel[4:]}.{run}-1", package=f"linux-image-{kernel[4:]}",
                uname=None, engine="v6.16", verdict=rng.choice(list(Verdict)),
                differences=[{"field": "vmstat.pglazyfreed", "predicted": 0, "observed": run}])
                for name in names for kernel in ("deb-6.1", "deb-6.12", "deb-6.16")])
    return {"ids": list(range(1, n + 1)), "campaign": campaign.id}


def _pages(rng: random.Random, filled: dict[str, Any]) -> dict[str, Callable[[], str]]:
    """Page name -> a function drawing one request path of it."""
    ids, n = filled["ids"], len(filled["ids"])

    def offset() -> int:
        return rng.randrange(0, max(1, n - 50))

    return {
        "divergences (first page)": lambda: "/ui/divergences",
        "divergences (deep page, by hits)": lambda: f"/ui/divergences?sort=-hit_count&offset={offset()}",
        "divergences (status, kind)": lambda: "/ui/divergences?status=new&kind=" + rng.choice(
            [k.value for k in Kind]) + f"&offset={rng.randrange(0, n // 20)}",
        "divergences (engine pair)": lambda: "/ui/divergences?engines="
        + "..".join(rng.choice(_PAIRS)) + f"&sort=id&offset={rng.randrange(0, n // 5)}",
        "divergences (rare text)": lambda: f"/ui/divergences?q=bench{rng.randrange(n)}",
        "divergences (common text)": lambda: "/ui/divergences?q=dma_write&offset="
        + str(rng.randrange(0, n // 2)),
        "divergences (came in)": lambda: "/ui/divergences?came_in=v6.14->v6.15",
        "divergence": lambda: f"/ui/divergences/{rng.choice(ids)}",
        "campaigns": lambda: "/ui/campaigns",
        "campaign (17,280 snapshots)": lambda: f"/ui/campaigns/{filled['campaign']}",
        "corpus": lambda: "/ui/corpus",
    }


def bench_pages(n: int = 10_000, requests: int = 200, seed: int = 1,
                path: str | None = None) -> dict[str, Any]:
    """Fill a store (:func:`fill`) and time each page @requests times.

    Return: per page, p50/p99/max server milliseconds (``Server-Timing``) and
    the p99 the client saw; also printed, one line per page.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # starlette's TestClient deprecation notice
        from fastapi.testclient import TestClient

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{path or Path(tmp) / 'pages.db'}"
        t0 = time.perf_counter()
        filled = fill(url, n, seed)
        fill_s = time.perf_counter() - t0
        print(f"filled {n:,} divergences and a campaign of {DAY_OF_SNAPSHOTS:,} snapshots "
              f"in {fill_s:.1f} s")
        rows = []
        with TestClient(create_app(Settings(db_url=url))) as client:
            for name, draw in _pages(rng, filled).items():
                for _ in range(3):                      # warm: caches, the first connection
                    client.get(draw()).raise_for_status()
                server, wall = [], []
                for _ in range(requests):
                    w0 = time.perf_counter()
                    r = client.get(draw())
                    wall.append((time.perf_counter() - w0) * 1000)
                    r.raise_for_status()
                    match = _TIMING.search(r.headers.get("server-timing", ""))
                    assert match, "no Server-Timing header"
                    server.append(float(match.group(1)))
                q = statistics.quantiles(server, n=100, method="inclusive")
                qw = statistics.quantiles(wall, n=100, method="inclusive")
                rows.append({"page": name, "requests": requests, "p50_ms": round(q[49], 1),
                             "p99_ms": round(q[98], 1), "max_ms": round(max(server), 1),
                             "client_p99_ms": round(qw[98], 1)})
                print(f"{name:36s} p50 {q[49]:6.1f} ms  p99 {q[98]:6.1f} ms  "
                      f"max {max(server):6.1f} ms  (client p99 {qw[98]:6.1f} ms)")
    return {"divergences": n, "snapshots": DAY_OF_SNAPSHOTS, "budget_p99_ms": BUDGET_MS,
            "fill_s": round(fill_s, 1), "pages": rows}


def main(divergences: Annotated[int, typer.Option(min=1, help="divergences to store")] = 10_000,
         requests: Annotated[int, typer.Option(min=10, help="requests per page")] = 200,
         seed: Annotated[int, typer.Option(help="seed of the drawn filters and ids")] = 1,
         out: Annotated[str | None, typer.Option(help="write the figures as JSON here")] = None,
         ) -> None:
    """Server time of every dashboard page over a store of many divergences (p50, p99)."""
    result = bench_pages(divergences, requests, seed)
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    over = [r["page"] for r in result["pages"] if r["p99_ms"] > BUDGET_MS]
    if over:
        print(f"over the {BUDGET_MS:.0f} ms p99 budget: {', '.join(over)}", file=sys.stderr)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
