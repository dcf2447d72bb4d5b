"""The fleet's benchmark: how executions scale with workers, and what the store can carry.

``foliodiff bench-fleet --db postgresql+psycopg://... [--workers 1,2,4]
[--seconds 20]`` (:func:`bench_fleet`) prints measurements; it asserts
nothing.

- **Scaling**: for each worker count N, a fleet campaign of N shares (random
  fuzzer, v6.14 vs v6.15, the seed corpus, each share ``seconds`` long in one
  slice) run by N ``foliodiff worker`` processes on this machine.  Its
  executions per second are the shares' executions over ``seconds`` (they
  run side by side); the store transactions per second per worker are the
  database's committed transactions over the campaign's wall time
  (``pg_stat_database.xact_commit``: findings, corpus pushes and pulls,
  share saves, and procrastinate's polling and heartbeats), over N.
- **Cores busy**: each share is a stream of its own (its worker number
  seeds its source), streams differ in weight by several times, and a
  share's stream changes with what the others share, so N workers'
  executions over one worker's are no measure of speed-up.  What does
  measure it is the CPU time the N worker processes got (``wait4``'s
  rusage) over the campaign's wall time: the cores the fleet kept busy.
- **Capacity**: K processes (one per worker count) each doing a worker's
  sync cycle as fast as the server answers: push a kept input, pull what is
  new, save the share, store a finding's hit with its idempotency key; the
  transactions per second they reach together.

The ceiling at 16 and 64 workers is reasoned from the two, not measured:
the store carries ``capacity / per_worker`` workers before they wait on it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine import differential, load_any
from fuzz.records import records_from_report
from service.campaign import CampaignConfig
from service.fleet.create import create_fleet_campaign
from service.models import CampaignStatus
from service.store import Store

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "corpus"


def _commits(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )).scalar_one())


def run_scaling(db_url: str, workers: int, seconds: float) -> dict[str, Any]:
    """One fleet campaign of @workers shares on @workers local worker processes."""
    config = CampaignConfig(fuzzer="random", engine_a="v6.14", engine_b="v6.15",
                            seconds=seconds, workers=workers, seeds=str(CORPUS),
                            slice_seconds=seconds, minimize=True)
    cid = create_fleet_campaign(db_url, config)
    engine = sa.create_engine(db_url)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before, start = _commits(engine), time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", "from service.cli import main; main()",
                               "worker", "--db", db_url, "--campaign", str(cid),
                               "--name", f"bench-{k}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
             for k in range(workers)]
    cpu, codes = 0.0, []
    for p in procs:
        _, wait_status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(wait_status)
        codes.append(p.returncode)
        cpu += usage.ru_utime + usage.ru_stime
    wall = time.monotonic() - start
    commits = _commits(engine) - before
    engine.dispose()
    with Store.open(db_url, create=False) as store:
        status = store.get_campaign(cid).status
        shares = store.shares(cid)
    execs = sum(s.execs for s in shares)
    return {"workers": workers, "campaign": cid, "finished": status is CampaignStatus.FINISHED,
            "worker_exits": codes, "execs": execs, "share_execs": [s.execs for s in shares],
            "exec_per_s": execs / seconds, "wall_s": wall, "cores_busy": cpu / wall,
            "commits": commits, "commits_per_s_per_worker": commits / wall / workers}


def _cycle(db_url: str, cid: int, k: int, seconds: float, out: Any) -> None:
    """A worker's sync cycle, as fast as the store answers, for @seconds."""
    program = load_any(str(CORPUS / "h5-dma-into-lazyfree.json"), "v5.17")
    (rec,) = records_from_report(differential(program, "v5.17", "v6.14"), program)
    with Store.open(db_url, create=False) as store:
        gen = store.take_share(cid, k, f"capacity-{k}").generation
        after, n, ops = 0, 0, 0
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            n += 1
            store.push_corpus(cid, [(f"{k}/{n}".encode(), ["f"])], f"capacity-{k}")
            got = store.pull_corpus(cid, after=after)
            after = got[-1].id if got else after
            store.save_share(cid, k, gen, position={"i": n}, elapsed=0.0, execs=n, coverage=0)
            store.upsert_divergences([rec], cid, key=f"capacity-{k}/{n}")
            ops += 4
        out.put(ops)


def run_capacity(db_url: str, processes: int, seconds: float) -> dict[str, Any]:
    """@processes processes each running :func:`_cycle`: store transactions per second."""
    with Store.open(db_url, create=False) as store:
        cid = store.create_campaign("v5.17", "v6.14", "random", {}).id
        store.create_shares(cid, processes)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_cycle, args=(db_url, cid, k, seconds, out))
             for k in range(processes)]
    for p in procs:
        p.start()
    ops = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    return {"processes": processes, "ops": sum(ops), "ops_per_s": sum(ops) / seconds}


def bench_fleet(db_url: str, workers: list[int], seconds: float) -> dict[str, Any]:
    """Scaling runs for each count in @workers (and one worker, the baseline),
    then the store's capacity with as many processes, and the ceiling reasoned
    from them at 16 and 64 workers."""
    scaling = [run_scaling(db_url, n, seconds) for n in sorted({1, *workers})]
    capacity = [run_capacity(db_url, n, min(seconds, 10.0)) for n in workers]
    demand = max(r["commits_per_s_per_worker"] for r in scaling)
    best = max(c["ops_per_s"] for c in capacity)
    one = scaling[0]["exec_per_s"]
    return {"scaling": scaling, "capacity": capacity,
            "store_tx_per_s_per_worker": demand, "store_capacity_tx_per_s": best,
            "ceiling": {str(n): {"store_load": n * demand / best,
                                 "exec_per_s_if_cores": n * one}
                        for n in (16, 64)}}
