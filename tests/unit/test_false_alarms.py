"""Issue 13's false alarms: each a defect of the harness, the oracles or the schedule.

Every test below failed before its fix; tests/data/format1/defects.json holds
the format-1 programs and what the code before the fix made of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.corpus.upgrade import upgrade_program
from engine.diff.differential import differential
from engine.errors import ProgramError
from engine.execution.oracle import Verdict
from engine.execution.runner import run
from engine.mm.sched import YieldPoint
from engine.program.format import parse_program

DEFECTS = json.loads((Path(__file__).resolve().parents[1] / "data" / "format1"
                      / "defects.json").read_text())
A, B, P = 0x200000, 0x600000, 4096
ENGINES = ("v6.14", "v6.15", "v6.16")
T0, D, R, S = ({"name": "T0", "kind": "task", "mm": 0}, {"name": "D", "kind": "device"},
               {"name": "R", "kind": "kthread"}, {"name": "S", "kind": "kthread"})


def op(thread: str, kind: str, **kw) -> dict:
    return {"thread": thread, "op": kind, **kw}


def program(*ops: dict, threads=(T0, D, R), schedule=()) -> object:
    return parse_program({"version": 2, "threads": list(threads), "ops": list(ops),
                          "schedule": list(schedule)})


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_the_format_1_program_runs_clean_now(name: str) -> None:
    """Each false alarm's own program, read on each engine: no harness error, no data
    loss, and the differentials the campaigns stored are gone."""
    data = DEFECTS[name]["program"]
    for reading in ENGINES:
        p = upgrade_program(data, reading).program
        for engine in ENGINES:
            out = run(p, engine)
            assert out.verdict is Verdict.OK, (name, reading, engine, out.crash)
        for a, b in (("v6.14", "v6.15"), ("v6.15", "v6.16")):
            assert not differential(p, a, b).unexpected, (name, reading, a, b)


def mthp_pinned() -> list[dict]:
    return [op("T0", "mmap", addr=A, pages=16, order=4),
            op("T0", "write", addr=A, pages=16, value=7),
            op("T0", "madvise", addr=A, pages=16, advice="MADV_FREE"),
            op("T0", "pin", addr=A, pages=16, pin="p0")]


def test_unpin_waits_for_the_dma_through_its_pin() -> None:
    """crash|IndexError|dma_write: the unpin (and a split after it) ran while the
    device's DMA was still writing the pinned pages.  A driver completes its DMA
    before it unpins: a preemption in the middle of the DMA cannot let the unpin in."""
    p = program(*mthp_pinned(), op("D", "dma_write", pin="p0", value=9),
                op("T0", "unpin", pin="p0", dirty=False),
                op("T0", "madvise", addr=A + 5 * P, pages=1, advice="MADV_FREE"),
                op("R", "reclaim"),
                schedule=[{"op": 4, "at": "between_pages", "nth": 1, "thread": "T0"}])
    for engine in ENGINES:
        out = run(p, engine)
        assert out.verdict is Verdict.OK, (engine, out.crash)
        # T0 got the CPU at the DMA's first page and waited there for it to end
        at = out.places.index((4, YieldPoint.BETWEEN_PAGES, 1))
        assert out.places[at + 1] == (5, YieldPoint.WAIT, 1)
        assert out.op_ends[4] < out.op_ends[5]


def test_a_dma_waits_for_its_pin() -> None:
    """Listed after the pin but scheduled first, the DMA waits until the pin is taken."""
    p = program(op("T0", "mmap", addr=A, pages=2), op("T0", "pin", addr=A, pages=2, pin="p0"),
                op("D", "dma_write", pin="p0", value=4), op("T0", "read", addr=A, pages=2),
                schedule=[{"op": None, "at": "start", "thread": "D"}])
    out = run(p, "v6.15")
    assert out.verdict is Verdict.OK and out.results[2] == 0 and out.results[3] == [4, 4]
    assert out.places[0] == (2, YieldPoint.WAIT, 1)


def test_dma_through_a_released_pin_is_refused_at_load() -> None:
    with pytest.raises(ProgramError) as info:
        program(*mthp_pinned(), op("T0", "unpin", pin="p0", dirty=False),
                op("D", "dma_write", pin="p0", value=9))
    assert (info.value.field, info.value.value) == ("ops[5].pin", "p0")
    assert "not held" in str(info.value)


def two_pins(dirty: bool):
    return program(op("T0", "mmap", addr=A, pages=1), op("T0", "write", addr=A, value=7),
                   op("T0", "madvise", addr=A, pages=1, advice="MADV_FREE"),
                   op("T0", "pin", addr=A, pin="p0"), op("T0", "pin", addr=A, pin="p1"),
                   op("D", "dma_write", pin="p0", value=5), op("D", "dma_write", pin="p1", value=6),
                   op("T0", "unpin", pin="p0", dirty=False), op("T0", "unpin", pin="p1", dirty=dirty),
                   op("T0", "madvise", addr=A, pages=1, advice="MADV_PAGEOUT"),
                   op("T0", "read", addr=A))


def test_two_pins_on_one_page_both_unpinned_clean() -> None:
    """The second pin's DMA took "may read zero" from the first DMA's write.  Neither
    unpin tells the kernel of the writes: the lazyfree page may be discarded."""
    for engine in ENGINES:
        out = run(two_pins(dirty=False), engine)
        assert out.verdict is Verdict.OK, (engine, out.crash)
        assert out.results[10] == [0]
    # one dirty unpin is enough to keep the device's data: the oracle still holds it
    for engine in ENGINES:
        out = run(two_pins(dirty=True), engine)
        assert out.verdict is Verdict.OK and out.results[10] == [6], (engine, out.crash)


def test_the_dma_record_moves_with_the_page() -> None:
    """mremap moved the page but not what the device wrote into it."""
    def moved(dirty: bool):
        return program(op("T0", "mmap", addr=A, pages=1), op("T0", "write", addr=A, value=7),
                       op("T0", "madvise", addr=A, pages=1, advice="MADV_FREE"),
                       op("T0", "pin", addr=A, pin="p0"), op("D", "dma_write", pin="p0", value=5),
                       op("T0", "mremap", addr=A, pages=1, new_addr=B),
                       op("T0", "unpin", pin="p0", dirty=dirty),
                       op("T0", "madvise", addr=B, pages=1, advice="MADV_PAGEOUT"),
                       op("T0", "read", addr=B))
    for engine in ENGINES:
        clean, dirty = run(moved(False), engine), run(moved(True), engine)
        assert clean.verdict is Verdict.OK and clean.results[8] == [0], (engine, clean.crash)
        assert dirty.verdict is Verdict.OK and dirty.results[8] == [5], (engine, dirty.crash)


def test_a_lost_device_write_is_still_data_loss() -> None:
    """The oracle did not go blind: v5.17 discards a pinned lazyfree page (the bug
    6c8e2a256915 fixed), and the device's write is lost."""
    p = program(op("T0", "mmap", addr=A, pages=1), op("T0", "write", addr=A, value=7),
                op("T0", "madvise", addr=A, pages=1, advice="MADV_FREE"),
                op("T0", "lru_add_drain"), op("T0", "pin", addr=A, pin="p0"),
                op("R", "reclaim"), op("D", "dma_write", pin="p0", value=42),
                op("T0", "read", addr=A))
    out = run(p, "v5.17")
    assert out.verdict is Verdict.DATA_LOSS and "allowed 42" in out.crash.message
    assert run(p, "v5.18").verdict is Verdict.OK


def test_one_schedule_one_interleaving_on_small_folios() -> None:
    """v6.15 yielded once more than v6.16 after discarding a small folio's only PTE,
    so a global step fell in different operations.  A place is the same on both."""
    p = program(op("T0", "mmap", addr=A, pages=4), op("T0", "write", addr=A, pages=4, value=7),
                op("T0", "madvise", addr=A, pages=4, advice="MADV_FREE"),
                op("T0", "lru_add_drain"),
                op("T0", "madvise", addr=A, pages=4, advice="MADV_PAGEOUT"),
                op("R", "reclaim"), op("S", "folio_try_get", addr=A, ref="r0"),
                op("T0", "write", addr=A, value=9),
                threads=(T0, R, S),
                schedule=[{"op": 4, "at": "between_folios", "nth": 2, "thread": "S"}])
    assert differential(p, "v6.15", "v6.16").equal
    a, b = run(p, "v6.15"), run(p, "v6.16")
    assert a.places == b.places


def test_h2_keeps_its_intended_divergence() -> None:
    """Where only one version has the place (v6.14's window between two PTEs of the
    unmap, which v6.15's batch closed), the other runs on to the operation's end."""
    from engine.corpus.entries import CORPUS_DIR, load_entry
    entry = load_entry(str(CORPUS_DIR / "h2-shrinker-ref-between-ptes.json"))
    report = differential(entry["program"], "v6.14", "v6.15")
    [d] = report.divergences
    assert d.classification.value == "intended"
    assert "swapbacked-only-if-dirty" in [r.name for r in d.rules]
    assert (3, YieldPoint.BETWEEN_PTES, 1) in report.a.places
    assert (3, YieldPoint.BETWEEN_PTES, 1) not in report.b.places


def test_a_write_fault_does_not_copy_a_pinned_page_away() -> None:
    """pct on v6.15,v6.16 stored data_loss in pin_user_pages_fast: v6.15's batch had
    restored pages 1-15 read-only, the write fault then copied each pinned page
    (the model decided reuse from the refcount), MADV_FREE freed a copy.  A
    pinned page is PageAnonExclusive since 6c287605fd56: do_wp_page() reuses it."""
    def pinned_then_written(version: int = 2) -> dict:
        return {"version": version, "threads": [T0, D],
                "ops": [op("T0", "mmap", addr=A, pages=1), op("T0", "write", addr=A, value=7),
                        op("T0", "pin", addr=A, pin="p0"),
                        op("T0", "mprotect", addr=A, pages=1, prot="r"),
                        op("T0", "mprotect", addr=A, pages=1, prot="rw"),
                        op("T0", "write", addr=A, value=8),
                        op("D", "dma_write", pin="p0", value=9), op("T0", "read", addr=A)],
                "schedule": []}
    p = parse_program(pinned_then_written())
    for engine in ("v5.18", "v6.14", "v6.15", "v6.16"):
        out = run(p, engine)
        assert out.verdict is Verdict.OK and out.results[7] == [9], (engine, out.crash)
        assert ("wp_reuse_pinned" in {e for _, e in out.events})
    # v5.17 copied it: the device's write went to the page the pin still held
    old = run(p, "v5.17")
    assert old.verdict is Verdict.DATA_LOSS and "allowed 9" in old.crash.message
    [d] = differential(p, "v5.17", "v5.18").divergences
    assert d.kind.value == "data_loss"


def test_madv_free_after_a_device_write_gives_the_contents_up() -> None:
    """What the device wrote before a MADV_FREE is given up with the rest."""
    from engine.execution.oracle import Oracle

    class Kernel:
        mms: dict = {}
    oracle = Oracle(Kernel())
    oracle.on_map(0, A, A + P)
    oracle.on_pin("p0", 0, A)
    oracle.on_dma_write("p0", 0, 9)
    shadow = oracle.pages[(0, A >> 12)]
    assert shadow.value == 9 and not shadow.may_read_zero()
    oracle.on_madv_free(0, A, A + P)
    assert shadow.may_read_zero()
    oracle.on_dma_write("p0", 0, 10)          # a device write after it holds the page again
    assert not shadow.may_read_zero()


def madv_free_racing_a_store(at_nth: int):
    """T1 stores to page 3 while T0's MADV_FREE of pages 0-3 is between two folios."""
    return program(op("T0", "mmap", addr=A, pages=4), op("T0", "write", addr=A, pages=4, value=1),
                   op("T0", "lru_add_drain"),
                   op("T0", "madvise", addr=A, pages=4, advice="MADV_FREE"),
                   op("T1", "write", addr=A + 3 * P, value=2),
                   op("T0", "lru_add_drain"), op("R", "reclaim"), op("T0", "read", addr=A + 3 * P),
                   threads=(T0, {"name": "T1", "kind": "task", "mm": 0}, R),
                   schedule=[{"op": 3, "at": "between_folios", "nth": at_nth, "thread": "T1"}])


def test_a_store_racing_madv_free_may_be_freed() -> None:
    """random on v6.14,v6.15 stored four data_loss findings: another thread's store
    landed while MADV_FREE was still walking, before the walk reached its page,
    which it then cleaned: the free comes last, and the page may read zero."""
    for engine in ENGINES:
        during = run(madv_free_racing_a_store(1), engine)
        assert during.verdict is Verdict.OK and during.results[7] == [0], (engine, during.crash)
        # once the walk is done (no third folio boundary: at its end), the store keeps the page
        after = run(madv_free_racing_a_store(9), engine)
        assert after.verdict is Verdict.OK and after.results[7] == [2], (engine, after.crash)


def test_a_store_racing_madv_dontneed_reads_back_or_zero() -> None:
    """The same for MADV_DONTNEED, on the oracle: the store may land before the
    zap (gone) or after it (kept); a store once it is done is definite."""
    from engine.execution.oracle import Oracle

    class Kernel:
        mms: dict = {}
    oracle = Oracle(Kernel())
    oracle.on_map(0, A, A + 2 * P)
    oracle.on_write(0, A, 7)
    oracle.on_dontneed(0, A, A + 2 * P)
    oracle.on_write(0, A, 8)
    oracle.on_dontneed_done(0, A, A + 2 * P)
    raced, quiet = oracle.shadow(0, A >> 12), oracle.shadow(0, (A >> 12) + 1)
    assert (raced.value, raced.may_read_zero()) == (8, True)
    assert (quiet.value, quiet.may_read_zero()) == (0, False)
    oracle.on_write(0, A, 9)
    assert not raced.may_read_zero()


# -- shadows made on first touch ----------------------------------------------
#
# The oracle keeps a shadow only for pages something touched (a 1,040-page
# program made 1,040 shadows per run and read them all at its end); a page
# mapped and never touched reads zero, and starts as its range says.

def test_an_untouched_page_of_a_lazyfree_mthp_pinned_afterwards_is_still_lazy() -> None:
    """Page 5 of a lazyfree mTHP is mapped by the write to page 0 but never
    touched; a pin after the MADV_FREE, a DMA and a clean unpin leave it lazyfree:
    reclaim may discard the device's write (the contract: GUP users must mark
    the folio dirty), so reading 0 is no loss."""
    p = program(op("T0", "mmap", addr=A, pages=16, order=4), op("T0", "write", addr=A, value=1),
                op("T0", "madvise", addr=A, pages=16, advice="MADV_FREE"),
                op("T0", "pin", addr=A + 5 * P, pin="p0"), op("D", "dma_write", pin="p0", value=9),
                op("T0", "unpin", pin="p0", dirty=False), op("R", "reclaim"),
                op("T0", "read", addr=A + 5 * P))
    for engine in ENGINES:
        out = run(p, engine)
        assert out.verdict is Verdict.OK and out.results[7] in ([0], [9]), (engine, out.crash)


def test_an_untouched_mapped_page_may_read_only_zero() -> None:
    from engine.execution.oracle import Oracle, Violation

    class Kernel:
        mms: dict = {}
    oracle = Oracle(Kernel())
    oracle.on_map(0, A, A + 4 * P)
    oracle.on_read(0, A + P, 0)
    oracle.on_read(0, A + 8 * P, 5)            # nothing mapped there: nobody can read it
    with pytest.raises(Violation, match=r"returned 5, allowed 0"):
        oracle.on_read(0, A + 2 * P, 5)
    assert (0, (A >> 12) + 2) not in oracle.pages   # a read makes no shadow
    oracle.on_madv_free(0, A, A + 4 * P)
    oracle.on_madv_free_done(0, A, A + 4 * P)
    assert oracle.shadow(0, (A >> 12) + 3).lazy
    oracle.on_dontneed(0, A, A + 2 * P)
    oracle.on_dontneed_done(0, A, A + 2 * P)
    assert not oracle.shadow(0, A >> 12).lazy and oracle.shadow(0, (A >> 12) + 2).lazy


# Issue 15's PMD-discard windows (pmd_checked, pmd_cleared) let other threads run
# while reclaim holds a PMD lock with the PMD cleared.  Two paths read the PMD
# before taking that lock; the first campaign on v6.14,v6.15 after the change
# stored both (a KeyError in fork, a page-table check in a hole mremap made).
THP_FREED = (op("T0", "mmap", addr=A, pages=512, order=9), op("T0", "write", addr=A, pages=512, value=7),
             op("T0", "madvise", addr=A, pages=512, advice="MADV_FREE"))


@pytest.mark.parametrize("engine", ENGINES)
def test_fork_reads_the_pmd_again_under_its_lock(engine: str) -> None:
    """copy_huge_pmd(): reclaim discarded the PMD while fork waited for its lock."""
    p = program(*THP_FREED, op("R", "reclaim"), op("T0", "fork", child=3),
                op("T0", "read", addr=A, pages=2),
                threads=(T0, R), schedule=[{"op": 3, "at": "pmd_checked", "nth": 1, "thread": "T0"}])
    assert run(p, engine).verdict is Verdict.OK


@pytest.mark.parametrize("engine", ENGINES)
def test_a_vma_split_waits_for_the_pmd_lock_and_splits_what_is_restored(engine: str) -> None:
    """vma_adjust_trans_huge() -> split_huge_pmd_address(): mremap() of one page out
    of a pinned THP while reclaim holds the cleared PMD; the failed discard
    restores it, and the split that waited for the lock splits it."""
    p = program(*THP_FREED, op("T0", "pin", addr=A, pin="p0"), op("R", "reclaim"),
                op("T0", "mremap", addr=A + 494 * P, pages=1, new_addr=0x9f8000),
                op("T0", "read", addr=0x9f8000), op("T0", "unpin", pin="p0", dirty=False),
                threads=(T0, R), schedule=[{"op": 4, "at": "pmd_cleared", "nth": 1, "thread": "T0"}])
    out = run(p, engine)
    assert out.verdict is Verdict.OK, out.crash
    assert out.comparable()["mm0.vmas"] == ("0x200000-0x3ee000:w", "0x3ef000-0x400000:w",
                                           "0x9f8000-0x9f9000:w")


def test_a_thp_fault_waiting_for_the_pmd_lock_holds_a_named_reference() -> None:
    """do_huge_pmd_anonymous_page() allocates before it takes the PMD lock; while
    reclaim holds that lock in the PMD discard, the new folio's one reference is
    the faulting thread's, not a leak (the first campaign after the change stored
    it as a refcount invariant on v6.15)."""
    p = program(op("T0", "mmap", addr=A, pages=512, order=9), op("T0", "pin", addr=A, pin="p0"),
                op("T0", "madvise", addr=A, pages=512, advice="MADV_FREE"),
                op("R", "reclaim"), op("T0", "madvise", addr=A, pages=512, advice="MADV_DONTNEED"),
                op("T1", "write", addr=A, value=3), op("T0", "unpin", pin="p0", dirty=False),
                threads=(T0, R, {"name": "T1", "kind": "task", "mm": 0}),
                schedule=[{"op": 3, "at": "pmd_cleared", "nth": 1, "thread": "T0"},
                          {"op": 4, "at": "op_end", "nth": 1, "thread": "T1"}])
    for engine in ENGINES:
        out = run(p, engine)
        assert out.verdict is not Verdict.INVARIANT, (engine, out.crash)
