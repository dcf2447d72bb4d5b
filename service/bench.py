"""Benchmarks of the store: functions that print measurements, never timed tests.

Records are built before the clock starts, from one real report (a data
loss between v5.17 and v6.14) given distinct signatures and programs, so
that what is timed is the store: hashing and storing programs, looking up
signatures, inserting rows, counting hits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.diff import differential
from engine.program import parse_program
from service.store import DivergenceRecord, Store, records_from_report

#: Corpus H5 (DMA into a lazyfree page): data loss between v5.17 and v6.14.
_BASE_PROGRAM: dict[str, Any] = {
    "version": 1,
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
    """``n`` records with distinct signatures and programs, built from one real report."""
    program = parse_program(_BASE_PROGRAM)
    (base,) = records_from_report(differential(program, "v5.17", "v6.14"), program)
    out = []
    for i in range(n):
        signature = f"{base.signature}|bench{i}"
        text = json.dumps({**_BASE_PROGRAM, "schedule": [[i, "T0"]]}, separators=(",", ":"))
        out.append(dataclasses.replace(
            base, signature=signature,
            signature_id=hashlib.sha1(signature.encode()).hexdigest()[:16],
            original_program=text))
    return out


def bench_ingest(n: int = 100_000, batch: int = 1_000, path: str | None = None) -> dict[str, Any]:
    """Batched divergence upserts per second into a SQLite file.

    Two passes over ``n`` distinct signatures in batches of ``batch``: the
    first inserts every one (a new divergence and its program), the second
    counts a hit on every one (what a long campaign mostly does).  The file
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
    result = {"divergences": total, "batch": batch, **{k: round(v) for k, v in rates.items()}}
    for key, value in result.items():
        print(f"{key}: {value}")
    return result
