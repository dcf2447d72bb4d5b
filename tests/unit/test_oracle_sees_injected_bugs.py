"""The data-loss oracle against kernel bugs put into v6.15 on purpose.

The oracle learns what user space did (stores, MADV_FREE, what a driver asked
of its unpin) from the program and the hardware, never from the kernel path
under test: a kernel that loses data cannot talk the oracle into allowing it.
Each injected bug below must turn a clean run into DATA_LOSS.
"""

from __future__ import annotations

import pytest

from engine.corpus.entries import CORPUS_DIR, load_entry
from engine.execution.oracle import Verdict
from engine.execution.runner import run
from engine.kernels.v6_15 import V6_15
from engine.mm.mm_types import MM_ANONPAGES
from engine.program.format import parse_program

A = 0x200000


def corpus(name: str):
    return load_entry(str(CORPUS_DIR / f"{name}.json"))["program"]


def dma_then_dirty_unpin():
    return parse_program({
        "version": 2, "threads": [{"name": "T0", "mm": 0}, {"name": "D", "kind": "device"}],
        "ops": [dict(thread="T0", op="mmap", addr=A, pages=1), dict(thread="T0", op="write", addr=A, value=7),
                dict(thread="T0", op="madvise", addr=A, pages=1, advice="MADV_FREE"),
                dict(thread="T0", op="pin", addr=A, pin="p0"),
                dict(thread="D", op="dma_write", pin="p0", value=5),
                dict(thread="T0", op="unpin", pin="p0", dirty=True),
                dict(thread="T0", op="madvise", addr=A, pages=1, advice="MADV_PAGEOUT"),
                dict(thread="T0", op="read", addr=A)]})


def discard_dirty(orig):
    def ttu_lazyfree(self, folio, vma, pvmw, nr_pages, pteval):
        folio.dirty = False                    # forgets the redirtied PTE
        return orig(self, folio, vma, pvmw, nr_pages, pteval)
    return ttu_lazyfree


def discard_referenced(orig):
    def ttu_lazyfree(self, folio, vma, pvmw, nr_pages, pteval):
        vma.mm.rss[MM_ANONPAGES] -= nr_pages     # v5.17's rule: no refcount check
        return True
    return ttu_lazyfree


def unpin_never_dirties(orig):
    def unpin_user_pages_dirty_lock(self, op):
        return (yield from orig(self, op.model_copy(update={"dirty": False})))
    return unpin_user_pages_dirty_lock


BUGS = {
    "reclaim discards a redirtied folio": ("ttu_lazyfree", discard_dirty,
                                           ["h3-redirty-pte3", "h4-small-redirty", dma_then_dirty_unpin]),
    "reclaim discards a pinned folio": ("ttu_lazyfree", discard_referenced,
                                        ["h5-dma-into-lazyfree", dma_then_dirty_unpin]),
    "unpin drops make_dirty": ("unpin_user_pages_dirty_lock", unpin_never_dirties,
                               ["h5-dma-into-lazyfree", dma_then_dirty_unpin]),
}


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_an_injected_data_loss_is_seen(monkeypatch: pytest.MonkeyPatch, bug: str) -> None:
    method, inject, programs = BUGS[bug]
    programs = [corpus(p) if isinstance(p, str) else p() for p in programs]
    for p in programs:
        assert run(p, "v6.15").verdict is Verdict.OK
    monkeypatch.setattr(V6_15, method, inject(getattr(V6_15, method)))
    for p in programs:
        out = run(p, "v6.15")
        assert out.verdict is Verdict.DATA_LOSS, (bug, out.crash)


# The PMD discard's second dirty test (issue 15, item 10): a store between the
# first test and the clear dirties the PMD word the clear returns.
def pmd_second_test_skipped(orig):
    def pmd_discard_decide(self, vma, folio, cleared, ref_count, map_count):
        return ref_count == map_count + 1        # looks at the refcount only
    return pmd_discard_decide


@pytest.mark.parametrize("engine", ["v6.14", "v6.15"])
def test_pmd_discard_without_its_second_dirty_test_loses_the_store(
        monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    from engine.kernels import kernel_class
    program = corpus("pmd-discard-store-before-clear")
    assert run(program, engine).verdict is Verdict.OK
    cls = kernel_class(engine)
    monkeypatch.setattr(cls, "pmd_discard_decide", pmd_second_test_skipped(cls.pmd_discard_decide))
    assert run(program, engine).verdict is Verdict.DATA_LOSS


def test_v6_14_restoring_the_word_read_before_the_clear_loses_the_store(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel restores what pmdp_huge_clear_flush() returned.  v6.14 sets no
    flag when it refuses, so restoring the clean word read before the clear
    would hand the split clean PTEs, and the store would be discarded."""
    from engine.kernels.v6_14 import V6_14
    program = corpus("pmd-discard-store-before-clear")
    orig = V6_14.discard_anon_folio_pmd_locked

    def discard(self, vma, pmd_idx, folio):
        before = vma.mm.pmd_huge[pmd_idx]
        done = yield from orig(self, vma, pmd_idx, folio)
        if not done and pmd_idx in vma.mm.pmd_huge:
            vma.mm.pmd_huge[pmd_idx] = before
        return done
    monkeypatch.setattr(V6_14, "discard_anon_folio_pmd_locked", discard)
    assert run(program, "v6.14").verdict is Verdict.DATA_LOSS
