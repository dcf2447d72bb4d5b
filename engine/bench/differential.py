"""Benchmarks of the engine: commands that print measurements, never timed tests.

Programs are built by a seeded generator (a local ``random.Random``, never
the global one) so that every run of the benchmark measures the same work.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from engine.diff.differential import differential
from engine.execution.runner import YIELD_POINTS, run
from engine.mm.sched import YieldPoint
from engine.program.format import PAGE_SIZE, Program, parse_program

_A = 0x200000


def typical_program(rng: random.Random, max_ops: int = 32) -> Program:
    """A program like the fuzzers make: one or two 16-page mTHP regions, user
    stores and loads, MADV_FREE, pins and DMA, reclaim and the shrinker."""
    regions = [(_A + i * 0x200000, 16 * rng.randint(1, 2)) for i in range(rng.randint(1, 2))]
    ops: list[dict[str, Any]] = [dict(thread="T0", op="mmap", addr=a, pages=n, order=4)
                                 for a, n in regions]
    pins = 0
    while len(ops) < rng.randint(8, max_ops):
        a, n = rng.choice(regions)
        page = rng.randrange(n)
        addr = a + page * PAGE_SIZE
        span = rng.randint(1, n - page)
        kind = rng.random()
        if kind < 0.25:
            ops.append(dict(thread="T0", op="write", addr=addr, pages=span, value=rng.randint(1, 9)))
        elif kind < 0.40:
            ops.append(dict(thread="T0", op="madvise", addr=a, pages=n, advice="MADV_FREE"))
        elif kind < 0.50:
            ops.append(dict(thread="T0", op="read", addr=addr, pages=span))
        elif kind < 0.60:
            ops.append(dict(thread="R", op="reclaim"))
        elif kind < 0.68:
            ops.append(dict(thread="T0", op="madvise", addr=a, pages=n, advice="MADV_PAGEOUT"))
        elif kind < 0.76:
            ops.append(dict(thread="S", op="deferred_split_scan"))
        elif kind < 0.88 and pins < 2:
            name = f"p{pins}"
            pins += 1
            ops.append(dict(thread="T0", op="pin", addr=addr, pages=1, pin=name))
            ops.append(dict(thread="D", op="dma_write", pin=name, value=rng.randint(10, 99)))
            if rng.random() < 0.7:
                ops.append(dict(thread="T0", op="unpin", pin=name, dirty=rng.random() < 0.8))
        else:
            ops.append(dict(thread="T0", op="lru_add_drain"))
    ops = ops[:max_ops]
    names = {o.get("pin") for o in ops if o["op"] == "pin"}
    ops = [o for o in ops if o["op"] not in ("dma_write", "unpin") or o["pin"] in names]
    threads = ["T0", "R", "S", "D"]
    schedule = {}
    for _ in range(rng.randint(0, 3)):
        i = rng.randrange(len(ops))
        at = rng.choice(YIELD_POINTS.get(ops[i]["op"], ()) + (YieldPoint.OP_END,))
        nth = 1 if at is YieldPoint.OP_END else rng.randint(1, 3)
        schedule[i, at, nth] = rng.choice(threads)
    return parse_program({
        "version": 2,
        "threads": [{"name": "T0", "mm": 0}, {"name": "R", "kind": "kthread"},
                    {"name": "S", "kind": "kthread"}, {"name": "D", "kind": "device"}],
        "ops": ops,
        "schedule": [{"op": i, "at": at.value, "nth": nth, "thread": t}
                     for (i, at, nth), t in schedule.items()]})


def straddle_program(dest_pages: int) -> Program:
    """H12 (corpus/h12-mremap-straddle): a lazyfree mTHP moved across a page-table
    boundary, reclaimed.  Its destination mapping has ``dest_pages`` pages (the
    corpus program maps 1,024; 16 cover just where the folio lands), which
    nothing but the mremap touches: the per-page cost of a large program."""
    dest, where = 0x401F8000, 0x40000000 if dest_pages > 16 else 0x401F8000
    return parse_program({"version": 2, "threads": [{"name": "T0", "mm": 0},
                                                    {"name": "R", "kind": "kthread"}],
                          "ops": [dict(thread="T0", op="mmap", addr=_A, pages=16, order=4),
                                  dict(thread="T0", op="write", addr=_A, pages=16, value=7),
                                  dict(thread="T0", op="madvise", addr=_A, pages=16,
                                       advice="MADV_FREE"),
                                  dict(thread="T0", op="mmap", addr=where, pages=dest_pages),
                                  dict(thread="T0", op="mremap", addr=_A, pages=16,
                                       new_addr=dest),
                                  dict(thread="R", op="reclaim")],
                          "schedule": []})


def _ms_per_run(program: Program, a: str, b: str, repeat: int) -> float:
    """Median over ``repeat`` passes of the milliseconds one differential run takes."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(50):
            differential(program, a, b)
        times.append((time.perf_counter() - t0) / 50 * 1000)
    return statistics.median(times)


def bench_page_cost(a: str, b: str, repeat: int = 5) -> dict[str, Any]:
    """What mapped pages cost: H12 with its 1,024-page destination mapping against
    the same program mapping 32 pages, side by side."""
    small = _ms_per_run(straddle_program(16), a, b, repeat)
    large = _ms_per_run(straddle_program(1024), a, b, repeat)
    return {"h12_32_pages_ms_per_differential_run": small,
            "h12_1040_pages_ms_per_differential_run": large,
            "h12_1040_over_32_pages_ratio": large / small}


def bench_differential(a: str, b: str, programs: int = 200, repeat: int = 5,
                       seed: int = 1) -> dict[str, Any]:
    """Median differential executions per second over ``repeat`` passes."""
    rng = random.Random(seed)
    progs = [typical_program(rng) for _ in range(programs)]
    diff_rates, single_rates, bare_rates = [], [], []
    diverging = 0
    for r in range(repeat):
        t0 = time.perf_counter()
        for p in progs:
            rep = differential(p, a, b)
            if r == 0 and not rep.equal:
                diverging += 1
        diff_rates.append(programs / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for p in progs:
            run(p, a)
        single_rates.append(programs / (time.perf_counter() - t0))
        # what the model alone costs: oracles only at the end of the run
        t0 = time.perf_counter()
        for p in progs:
            run(p, a, per_step_oracles=False)
        bare_rates.append(programs / (time.perf_counter() - t0))
    ops = sum(len(p.ops) for p in progs) / programs
    steps = sum(run(p, a).steps for p in progs) / programs
    return {
        "programs": programs,
        "mean_ops_per_program": round(ops, 1),
        "mean_scheduling_steps_per_run": round(steps, 1),
        "diverging_programs": diverging,
        "differential_exec_per_s_median": statistics.median(diff_rates),
        "differential_exec_per_s_min": min(diff_rates),
        "differential_exec_per_s_max": max(diff_rates),
        f"single_run_{a}_per_s_median": statistics.median(single_rates),
        f"single_run_{a}_without_step_oracles_per_s_median": statistics.median(bare_rates),
    }
