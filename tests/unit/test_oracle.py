"""The oracles themselves: they must accept what the kernel may do and reject the rest."""

from __future__ import annotations

from engine.execution.runner import run
from engine.mm.sched import YieldPoint
from engine.program.format import Preemption, parse_program

A = 0x200000


def fork_during_dma(pages_before_fork: int):
    """The device writes 2 pinned pages; T0 forks after ``pages_before_fork`` of them."""
    at = ({"at": "start"} if pages_before_fork == 0
          else {"op": 3, "at": "between_pages", "nth": pages_before_fork})
    return parse_program({
        "version": 2,
        "threads": [{"name": "T0", "mm": 0}, {"name": "T1", "mm": 1}, {"name": "D", "kind": "device"}],
        "ops": [dict(thread="T0", op="mmap", addr=A, pages=2),
                dict(thread="T0", op="write", addr=A, pages=2, value=1),
                dict(thread="T0", op="pin", addr=A, pages=2, pin="p0"),
                dict(thread="D", op="dma_write", pin="p0", value=5),
                dict(thread="T0", op="fork", child=1),
                dict(thread="T1", op="read", addr=A, pages=2)],
        "schedule": [at | {"thread": "T0"}] if pages_before_fork else []})


def test_fork_in_the_middle_of_a_dma_write():
    # The device has written page 0 only when the fork copies the pinned pages for
    # the child: the child sees the new page 0 and the old page 1.
    out = run(fork_during_dma(1), "v6.15")
    assert out.verdict.value == "ok", out.crash
    assert out.results[5] == [5, 1]
    assert run(fork_during_dma(0), "v6.15").results[5] == [5, 5]
    # forked before the device starts: the child keeps what the CPU wrote
    first = fork_during_dma(0).model_copy(update={"schedule": [
        Preemption(op=2, at=YieldPoint.OP_END, thread="T0")]})
    out = run(first, "v6.15")
    assert out.verdict.value == "ok" and out.results[5] == [1, 1]


def test_reading_a_lost_write_is_data_loss():
    p = parse_program({"version": 2,
                       "threads": [{"name": "T0", "mm": 0}, {"name": "R", "kind": "kthread"},
                                   {"name": "D", "kind": "device"}],
                       "ops": [dict(thread="T0", op="mmap", addr=A, pages=1),
                               dict(thread="T0", op="write", addr=A, value=7),
                               dict(thread="T0", op="madvise", addr=A, pages=1, advice="MADV_FREE"),
                               dict(thread="T0", op="lru_add_drain"),
                               dict(thread="T0", op="pin", addr=A, pin="p0"),
                               dict(thread="R", op="reclaim"),
                               dict(thread="D", op="dma_write", pin="p0", value=42)]})
    out = run(p, "v5.17")             # no read at all: the final-contents check sees it
    assert out.verdict.value == "data_loss"
    assert "allowed 42" in out.crash.message
    assert run(p, "v5.18").verdict.value == "ok"


def test_madv_free_allows_zero_but_not_other_values():
    p = parse_program({"version": 2,
                       "threads": [{"name": "T0", "mm": 0}],
                       "ops": [dict(thread="T0", op="mmap", addr=A, pages=1),
                               dict(thread="T0", op="write", addr=A, value=7),
                               dict(thread="T0", op="madvise", addr=A, pages=1, advice="MADV_DONTNEED"),
                               dict(thread="T0", op="read", addr=A)]})
    out = run(p, "v6.14")
    assert out.verdict.value == "ok" and out.results[3] == [0]


def dma_then_unpin(dirty: bool):
    return parse_program({
        "version": 2,
        "threads": [{"name": "T0", "mm": 0}, {"name": "D", "kind": "device"}],
        "ops": [dict(thread="T0", op="mmap", addr=A, pages=16, order=4),
                dict(thread="T0", op="write", addr=A, pages=16, value=7),
                dict(thread="T0", op="madvise", addr=A, pages=16, advice="MADV_FREE"),
                dict(thread="T0", op="pin", addr=A, pin="p0"),
                dict(thread="D", op="dma_write", pin="p0", value=5),
                dict(thread="T0", op="unpin", pin="p0", dirty=dirty),
                dict(thread="T0", op="madvise", addr=A, pages=16, advice="MADV_PAGEOUT"),
                dict(thread="T0", op="read", addr=A)]})


def test_unpin_without_dirty_leaves_a_lazyfree_page_droppable():
    # The driver never told the kernel about its write: the MADV_FREE'd folio is
    # still clean and may be discarded (faeb2831b517: GUP users must dirty).
    for engine in ("v6.14", "v6.15"):
        out = run(dma_then_unpin(dirty=False), engine)
        assert out.verdict.value == "ok", out.crash
        assert out.results[7] == [0]
        out = run(dma_then_unpin(dirty=True), engine)
        assert out.verdict.value == "ok", out.crash
        assert out.results[7] == [5]


def test_kernel_paths_change_refcounts_only_through_the_accessors():
    """The refcount oracle looks only at folios an accessor touched
    (engine/mm/folio.py): a refcount written directly would escape it."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "engine"
    direct = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "mm" / "folio.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AugAssign) else [])
            direct += [f"{path.relative_to(root)}:{node.lineno}" for t in targets
                       if isinstance(t, ast.Attribute) and t.attr == "ref"]
    assert not direct, f"refcounts written directly (use folio_ref_*()): {direct}"
