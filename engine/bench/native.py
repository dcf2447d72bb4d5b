"""Benchmarks of the C batched path (``foliodiff bench-c``): printed, never timed tests.

Each workload is set up by running a program (map, write, MADV_FREE, and for
the PMD workload a second write that redirties) on the engine with
``per_step_oracles=False``; then, as reclaim would, the LRU is drained, every
folio isolated and locked, and each folio's ``try_to_unmap()`` is driven to
completion directly, without the scheduler.  Only that loop is timed:

- ``unmap``: every ``try_to_unmap()`` call (the rmap walk, try_to_unmap_one
  with its PTE leg or PMD path, rmap and reference updates, the TLB flush);
- ``leg``: in a second, instrumented pass, only the calls the C twins
  replace (``ttu_clear``, ``ttu_lazyfree``, ``pmd_discard_check``, ``pmd_discard_decide``):
  the unmap work itself, C or Python, as the engine calls it (for C, each
  call includes the ctypes crossing);
- ``replay`` (C engines): in a third pass every call the engine made into the
  library is recorded with its arguments, the page tables it touched are put
  back as they were, and ``cpath_replay()`` makes the same calls again in
  one crossing: the C unmap work without the per-call ctypes cost.  The
  replay must leave the tables exactly as the engine did and return the
  same results (checked).

Setup is never timed.  Every figure is the median of ``repeat`` passes, and
every ratio is taken between medians of the same invocation.
"""

from __future__ import annotations

import ctypes
import statistics
import time
from collections.abc import Callable
from typing import Any

from engine.errors import HarnessError, WorkloadError
from engine.execution.runner import Runner
from engine.kernels import C_TWINS
from engine.mm.flags import TTU_BATCH_FLUSH, TTU_SPLIT_HUGE_PMD, TTU_SYNC
from engine.mm.folio import folio_mapped
from engine.mm.huge_memory import folio_trylock
from engine.native.loader import PTE_TABLE_BYTES, CPathCall, CPathCallOp, load
from engine.program.format import PAGE_SIZE, parse_program

#: Where the workloads map their memory: 2 MiB aligned.
WORKLOAD_BASE = 0x40000000
#: What each figure times (saved with the figures).
TIMED = {
    "unmap": "every try_to_unmap() of the isolated, locked folios, driven without the "
             "scheduler (walk, PTE leg or PMD path, rmap and refs, TLB flush); setup untimed",
    "leg": "only ttu_clear + ttu_lazyfree + pmd_discard_check/decide, as the engine "
           "calls them (for C engines: ctypes crossing included)",
    "replay": "C engines: the recorded library calls of the unmap made again by "
              "cpath_replay() in one crossing, on the restored tables (result checked)",
}
#: The methods the C twins override: what ``leg`` times.
LEG_METHODS = ("ttu_clear", "ttu_lazyfree", "pmd_discard_check", "pmd_discard_decide")


def _workload_program(pages: int, order: int, redirty: bool):
    ops = [dict(thread="T0", op="mmap", addr=WORKLOAD_BASE, pages=pages, order=order),
           dict(thread="T0", op="write", addr=WORKLOAD_BASE, pages=pages, value=7),
           dict(thread="T0", op="madvise", addr=WORKLOAD_BASE, pages=pages, advice="MADV_FREE")]
    if redirty:
        ops.append(dict(thread="T0", op="write", addr=WORKLOAD_BASE, pages=pages, value=8))
    return parse_program({"version": 2, "threads": [{"name": "T0", "mm": 0}], "ops": ops,
                          "schedule": []})


def _drive(gen) -> Any:
    """Run a kernel-path generator to its end (no other thread exists to switch to)."""
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def _instrument(k, spent: list[int]) -> None:
    """Wrap ``k``'s leg methods to add their time to ``spent[0]`` (instance attributes)."""
    clock = time.perf_counter_ns
    for name in LEG_METHODS:
        method = getattr(k, name)

        def timed(*args, _method=method):
            t0 = clock()
            try:
                return _method(*args)
            finally:
                spent[0] += clock() - t0
        setattr(k, name, timed)


_TABLE_CALLS = (CPathCallOp.CPATH_CALL_CLEAR, CPathCallOp.CPATH_CALL_DECIDE)


class _Recorder:
    """Records a C engine's calls into the library, and each table before its first call."""

    def __init__(self, k) -> None:
        self.calls: list[dict[str, Any]] = []
        self.checksum = 0
        self.before: dict[int, bytes] = {}
        k._ttu_clear = self._wrap(k._ttu_clear, CPathCallOp.CPATH_CALL_CLEAR, k._clear_out,
                                  ("table", "nr_entries", "idx", "folio_pfn", "folio_nr",
                                   "folio_flags", "vma_nr", "ttu_flags", "kernel"))
        k._ttu_decide = self._wrap(k._ttu_decide, CPathCallOp.CPATH_CALL_DECIDE, None,
                                   ("table", "nr_entries", "idx", "nr", "pteval", "ref_count",
                                    "map_count", "folio_dirty", "droppable", "kernel"))
        k._pmd_check = self._wrap(k._pmd_check, CPathCallOp.CPATH_CALL_PMD_CHECK, None,
                                  ("pmd", "folio_dirty", "droppable", "kernel"))
        k._pmd_decide = self._wrap(k._pmd_decide, CPathCallOp.CPATH_CALL_PMD_DECIDE, None,
                                   ("pmd", "ref_count", "map_count", "folio_dirty", "droppable",
                                    "kernel"))

    def _wrap(self, fn, op: CPathCallOp, clear_out, names: tuple[str, ...]):
        def recorded(*args):
            # @names are the value arguments; an out-pointer after them is not recorded
            call = dict(zip(names, args, strict=False), op=int(op))
            # the PTE calls get a table's buffer, to restore before the replay;
            # the PMD calls get the word itself
            if op in _TABLE_CALLS and args[0] not in self.before:
                self.before[args[0]] = ctypes.string_at(args[0], PTE_TABLE_BYTES)
            ret = fn(*args)
            self.checksum += ret + (clear_out.pteval if clear_out is not None else 0)
            self.calls.append(call)
            return ret
        return recorded

    def replay_ns(self, repeat: int) -> list[int]:
        """Put the tables back, replay every call in C; check the end state and results."""
        after = {a: ctypes.string_at(a, PTE_TABLE_BYTES) for a in self.before}
        calls = (CPathCall * len(self.calls))(*(CPathCall(**c) for c in self.calls))
        replay = load().cpath_replay
        times = []
        for _ in range(repeat):
            for addr, data in self.before.items():
                ctypes.memmove(addr, data, PTE_TABLE_BYTES)
            t0 = time.perf_counter_ns()
            checksum = replay(calls, len(self.calls))
            times.append(time.perf_counter_ns() - t0)
            if (checksum - self.checksum) % (1 << 64) or any(
                    ctypes.string_at(a, PTE_TABLE_BYTES) != data for a, data in after.items()):
                raise HarnessError("cpath_replay() did not redo the engine's unmap")
        return times


def unmap_once(engine: str, pages: int, order: int, redirty: bool,
               instrument: bool = False, replay: int = 0) -> dict[str, Any]:
    """Set up one workload on ``engine`` and unmap every folio of it once.

    Return: ``ns``, the unmap time (the leg time with ``instrument``; with
    ``replay`` > 0, the median of that many C replays of the calls made), the
    folios, how many stayed mapped, and the counters the series changed.
    """
    runner = Runner(_workload_program(pages, order, redirty), engine, per_step_oracles=False)
    out = runner.run()
    if out.verdict.value != "ok":
        raise WorkloadError(engine, out.verdict.value, out.crash)
    k = runner.k
    k.current = runner.threads[0]
    k.lru_add_drain()
    folios = k.isolate_lru_folios(1 << 30)
    for folio in folios:
        folio_trylock(k, folio)
    spent = [0]
    if instrument:
        _instrument(k, spent)
    recorder = _Recorder(k) if replay else None
    clock = time.perf_counter_ns
    t0 = clock()
    for folio in folios:
        flags = TTU_BATCH_FLUSH
        if folio.order >= 9:
            flags |= TTU_SPLIT_HUGE_PMD
        if folio.order:
            flags |= TTU_SYNC
        _drive(k.try_to_unmap(folio, flags))
    ns: float = clock() - t0
    if instrument:
        ns = spent[0]
    elif recorder is not None:
        ns = statistics.median(recorder.replay_ns(replay))
    return {"ns": ns, "folios": len(folios),
            "still_mapped": sum(1 for f in folios if folio_mapped(f)),
            "split_deferred": k.mthp.get(f"split_deferred[{order}]", 0),
            "thp_split_pmd": k.counters.get("THP_SPLIT_PMD", 0)}


def _medians(engines: list[str], repeat: int, run_one: Callable[..., dict[str, Any]],
             **kw) -> dict[str, dict[str, Any]]:
    """Median unmap and leg times per engine; the engines alternate within each pass."""
    unmap: dict[str, list[int]] = {e: [] for e in engines}
    leg: dict[str, list[int]] = {e: [] for e in engines}
    last: dict[str, dict[str, Any]] = {}
    for _ in range(repeat):
        for e in engines:
            last[e] = run_one(e, **kw)
            unmap[e].append(last[e]["ns"])
            leg[e].append(run_one(e, instrument=True, **kw)["ns"])
    res = {e: {"unmap_ms": statistics.median(unmap[e]) / 1e6,
               "leg_ms": statistics.median(leg[e]) / 1e6,
               **{k: v for k, v in last[e].items() if k != "ns"}} for e in engines}
    for e in engines:
        if e in C_TWINS:
            res[e]["replay_ms"] = run_one(e, replay=repeat, **kw)["ns"] / 1e6
    return res


def bench_c(repeat: int = 5, mthp_mib: int = 128, pmd_thps: int = 64) -> dict[str, Any]:
    """The three comparisons of issue 3, every figure a median of ``repeat`` passes.

    a) 3/4: ``mthp_mib`` MiB of lazyfree 64 KiB mTHPs, v6.14-c per PTE against
       v6.15-c batched; b) 4/4: ``pmd_thps`` redirtied lazyfree PMD-mapped
       THPs, v6.14-c (split, then per PTE) against v6.15-c (PMD path);
       c) the same unmaps, C against Python.
    """
    engines = ["v6.14-c", "v6.15-c", "v6.14", "v6.15"]
    mthp = _medians(engines, repeat, unmap_once, pages=mthp_mib * (1 << 20) // PAGE_SIZE,
                    order=4, redirty=False)
    pmd = _medians(engines, repeat, unmap_once, pages=pmd_thps * 512, order=9, redirty=True)

    def ratio(table, slow, fast, key):
        return table[slow][key] / table[fast][key]

    res: dict[str, Any] = {"repeat": repeat, "timed": dict(TIMED)}
    for name, table in (("mthp", mthp), ("pmd", pmd)):
        for e, row in table.items():
            for key, v in row.items():
                res[f"{name}.{e}.{key}"] = v
    res["a.mthp_folios"] = mthp["v6.15-c"]["folios"]
    res["a.split_deferred_v6.14-c"] = mthp["v6.14-c"]["split_deferred"]
    res["a.split_deferred_v6.15-c"] = mthp["v6.15-c"]["split_deferred"]
    res["b.pmd_thps"] = pmd["v6.15-c"]["folios"]
    res["b.thp_split_pmd_v6.14-c"] = pmd["v6.14-c"]["thp_split_pmd"]
    res["b.thp_split_pmd_v6.15-c"] = pmd["v6.15-c"]["thp_split_pmd"]
    for key in ("unmap_ms", "leg_ms"):
        k = key[:-3]
        res[f"a.{k}_ratio_v6.14-c_over_v6.15-c"] = ratio(mthp, "v6.14-c", "v6.15-c", key)
        res[f"b.{k}_ratio_v6.14-c_over_v6.15-c"] = ratio(pmd, "v6.14-c", "v6.15-c", key)
        for v in ("v6.14", "v6.15"):
            res[f"c.mthp.{k}_ratio_{v}_over_{v}-c"] = ratio(mthp, v, f"{v}-c", key)
            res[f"c.pmd.{k}_ratio_{v}_over_{v}-c"] = ratio(pmd, v, f"{v}-c", key)
    res["a.replay_ratio_v6.14-c_over_v6.15-c"] = ratio(mthp, "v6.14-c", "v6.15-c", "replay_ms")
    res["b.replay_ratio_v6.14-c_over_v6.15-c"] = ratio(pmd, "v6.14-c", "v6.15-c", "replay_ms")
    for v in ("v6.14", "v6.15"):
        # the same unmap work: the Python leg against the C replay of the calls it became
        res[f"c.mthp.python_leg_over_c_replay_{v}"] = mthp[v]["leg_ms"] / mthp[f"{v}-c"]["replay_ms"]
        res[f"c.pmd.python_leg_over_c_replay_{v}"] = pmd[v]["leg_ms"] / pmd[f"{v}-c"]["replay_ms"]
    return res
