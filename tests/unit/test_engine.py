"""Engine basics: determinism, crash outcomes, page-table bounds, engine ids."""

from __future__ import annotations

import pytest

from engine.errors import PageTableOutOfBounds, UnknownEngineError
from engine.execution.runner import run
from engine.kernels import resolve_engine
from engine.mm.pgtable import PageTable, ptep_get, set_pte_at
from engine.mm.sched import YieldPoint
from engine.program.format import parse_program

A = 0x200000


def prog(ops, threads=None, schedule=()):
    return parse_program({"version": 2,
                          "threads": threads or [{"name": "T0", "mm": 0},
                                                 {"name": "R", "kind": "kthread"}],
                          "ops": ops, "schedule": list(schedule)})


def test_aliases():
    assert resolve_engine("old") == "v6.14"
    assert resolve_engine("new") == "v6.15"
    with pytest.raises(UnknownEngineError, match="v9.99"):
        resolve_engine("v9.99")


@pytest.mark.parametrize("idx", [-1, 512, 600])
def test_page_table_bounds(idx):
    pt = PageTable(0, 0, None)
    with pytest.raises(PageTableOutOfBounds):
        ptep_get(pt, idx)
    with pytest.raises(PageTableOutOfBounds):
        set_pte_at(pt, idx, 1)


def test_same_program_same_outcome():
    p = prog([dict(thread="T0", op="mmap", addr=A, pages=16, order=4),
              dict(thread="T0", op="write", addr=A, pages=16, value=3),
              dict(thread="T0", op="madvise", addr=A, pages=16, advice="MADV_FREE"),
              dict(thread="R", op="reclaim")],
             schedule=[{"op": 1, "at": "between_pages", "nth": 5, "thread": "R"}])
    for engine in ("v5.17", "v6.14", "v6.15"):
        a, b = run(p, engine), run(p, engine)
        assert a.to_dict() == b.to_dict() and a.places == b.places
        assert a.places[5] == (1, YieldPoint.BETWEEN_PAGES, 5)   # R ran there: a step of op 3
        assert a.places[6][0] == 3


def test_segv_is_a_result_not_a_crash():
    p = prog([dict(thread="T0", op="mmap", addr=A, pages=1),
              dict(thread="T0", op="munmap", addr=A, pages=1),
              dict(thread="T0", op="write", addr=A, value=1)])
    out = run(p, "v6.15")
    assert out.verdict.value == "ok"
    assert out.results == [0, 0, -14]


def test_out_of_bounds_scan_is_a_crash_outcome_with_the_model_stack():
    B = 0x40000000
    p = prog([dict(thread="T0", op="mmap", addr=A, pages=16, order=4),
              dict(thread="T0", op="write", addr=A, pages=16, value=7),
              dict(thread="T0", op="madvise", addr=A, pages=16, advice="MADV_FREE"),
              dict(thread="T0", op="mmap", addr=B, pages=1024),
              dict(thread="T0", op="mremap", addr=A, pages=16, new_addr=B + 0x200000 - 0x8000),
              dict(thread="R", op="reclaim")])
    out = run(p, "v6.15")
    assert out.verdict.value == "crash"
    assert out.crash.field == "PageTableOutOfBounds"
    assert out.crash.op_index == 5
    assert [f.split(" ")[0] for f in out.crash.stack[:3]] == [
        "ptep_get", "folio_pte_batch", "can_batch_unmap_folio_ptes"]
    assert run(p, "v6.16").verdict.value == "ok"


def test_deadlock_is_a_hang_outcome():
    # T1's mm is never forked: its operations can never start
    p = parse_program({"version": 2,
                       "threads": [{"name": "T0", "mm": 0}, {"name": "T1", "mm": 1}],
                       "ops": [dict(thread="T0", op="mmap", addr=A, pages=1),
                               dict(thread="T1", op="read", addr=A),
                               dict(thread="T0", op="fork", child=1)],
                       "schedule": [{"at": "start", "thread": "T1"}]})
    out = run(p, "v6.14")
    assert out.verdict.value == "ok"       # T1 waits for the fork, then reads
    assert out.places[0] == (1, YieldPoint.WAIT, 1)


def test_fork_child_reads_parent_data():
    p = parse_program({"version": 2,
                       "threads": [{"name": "T0", "mm": 0}, {"name": "T1", "mm": 1}],
                       "ops": [dict(thread="T0", op="mmap", addr=A, pages=2),
                               dict(thread="T0", op="write", addr=A, pages=2, value=5),
                               dict(thread="T0", op="fork", child=1),
                               dict(thread="T0", op="write", addr=A, value=6),
                               dict(thread="T1", op="read", addr=A, pages=2)]})
    out = run(p, "v6.15")
    assert out.verdict.value == "ok"
    assert out.results[4] == [5, 5]
