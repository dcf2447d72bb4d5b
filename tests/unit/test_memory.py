"""Paths around reclaim: swap out and back in, PTE-mapped THPs, mprotect, mremap, fork."""

from __future__ import annotations

from engine.execution.runner import run
from engine.program.format import parse_program

A = 0x200000


def prog(ops, threads=None):
    return parse_program({"version": 1,
                          "threads": threads or [{"name": "T0", "mm": 0},
                                                 {"name": "R", "kind": "kthread"}],
                          "ops": ops})


def test_swapbacked_folio_swaps_out_and_back_in():
    p = prog([dict(thread="T0", op="mmap", addr=A, pages=4),
              dict(thread="T0", op="write", addr=A, pages=4, value=9),
              dict(thread="T0", op="madvise", addr=A, pages=4, advice="MADV_PAGEOUT"),
              dict(thread="T0", op="read", addr=A, pages=4)])
    for engine in ("v5.17", "v6.14", "v6.15"):
        out = run(p, engine)
        assert out.verdict.value == "ok", out.crash
        assert out.state["counter.PSWPOUT"] == 4
        assert out.state["counter.PSWPIN"] == 4
        assert out.results[3] == [9, 9, 9, 9]
        assert out.state["mm0.MM_SWAPENTS"] == 0 and out.state["mm0.MM_ANONPAGES"] == 4


def test_mprotect_of_part_of_a_thp_leaves_it_pte_mapped():
    p = prog([dict(thread="T0", op="mmap", addr=A, pages=512, order=9),
              dict(thread="T0", op="write", addr=A, pages=512, value=3),
              dict(thread="T0", op="mprotect", addr=A, pages=16, prot="r"),
              dict(thread="T0", op="madvise", addr=A + 0x10000, pages=496, advice="MADV_FREE"),
              dict(thread="T0", op="read", addr=A, pages=2)])
    out = run(p, "v6.15")
    assert out.verdict.value == "ok", out.crash
    st = out.state
    assert st["counter.THP_SPLIT_PMD"] == 1
    assert "mm0.pmd[0x200000]" not in st
    assert st["mm0.pte[0x200000]"].endswith(":dy")            # write-protected, still dirty
    assert st["mm0.vmas"] == ("0x200000-0x210000:r", "0x210000-0x400000:w")
    assert out.results[4] == [3, 3]


def test_write_to_read_only_mapping_faults_with_efault():
    p = prog([dict(thread="T0", op="mmap", addr=A, pages=1),
              dict(thread="T0", op="mprotect", addr=A, pages=1, prot="r"),
              dict(thread="T0", op="write", addr=A, value=1)])
    assert run(p, "v6.14").results == [0, 0, -14]


def test_mremap_moves_contents_and_keeps_the_folio():
    B = 0x40000000
    p = prog([dict(thread="T0", op="mmap", addr=A, pages=16, order=4),
              dict(thread="T0", op="write", addr=A, pages=16, value=4),
              dict(thread="T0", op="mremap", addr=A, pages=16, new_addr=B + 0x1F8000),
              dict(thread="T0", op="read", addr=B + 0x1F8000, pages=16),
              dict(thread="T0", op="read", addr=A)])
    out = run(p, "v6.16")
    assert out.verdict.value == "ok", out.crash
    assert out.results[3] == [4] * 16
    assert out.results[4] == -14
    assert out.state["folio.f0.order"] == 4                       # still one mTHP, straddling
    assert out.state["mm0.pte[0x401f8000]"].startswith("f0+0")
    assert out.state["mm0.pte[0x40200000]"].startswith("f0+8")


def test_fork_shares_folios_copy_on_write():
    p = parse_program({"version": 1,
                       "threads": [{"name": "T0", "mm": 0}, {"name": "T1", "mm": 1}],
                       "ops": [dict(thread="T0", op="mmap", addr=A, pages=16, order=4),
                               dict(thread="T0", op="write", addr=A, pages=16, value=1),
                               dict(thread="T0", op="fork", child=1),
                               dict(thread="T1", op="write", addr=A, value=2),
                               dict(thread="T0", op="read", addr=A, pages=2),
                               dict(thread="T1", op="read", addr=A, pages=2)]})
    out = run(p, "v6.15")
    assert out.verdict.value == "ok", out.crash
    assert out.results[4] == [1, 1] and out.results[5] == [2, 1]
    assert out.state["folio.f0.mapcount"] == 31                  # 16 in the parent, 15 in the child


def test_swap_cache_folio_shared_with_a_child_is_copied_on_write():
    # A speculative reference keeps the swapped-out folio in the swap cache; after
    # fork the child's PTE refers to the same slot, so the parent's fault must map
    # the cached folio read-only and copy it on write.
    p = parse_program({"version": 1,
                       "threads": [{"name": "T0", "mm": 0}, {"name": "T1", "mm": 1},
                                   {"name": "W", "kind": "kthread"}],
                       "ops": [dict(thread="T0", op="mmap", addr=A, pages=1),
                               dict(thread="T0", op="write", addr=A, value=5),
                               dict(thread="W", op="folio_try_get", addr=A, ref="r0"),
                               dict(thread="T0", op="madvise", addr=A, pages=1, advice="MADV_PAGEOUT"),
                               dict(thread="T0", op="fork", child=1),
                               dict(thread="T0", op="write", addr=A, value=9),
                               dict(thread="W", op="folio_put", ref="r0"),
                               dict(thread="T1", op="read", addr=A),
                               dict(thread="T0", op="read", addr=A)]})
    for engine in ("v5.17", "v6.14", "v6.15"):
        out = run(p, engine)
        assert out.verdict.value == "ok", out.crash
        assert out.results[7] == [5] and out.results[8] == [9]
