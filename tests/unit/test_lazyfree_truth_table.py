"""The lazyfree decision of each version, over (folio dirty, VM_DROPPABLE, extra reference),
for a small folio, a PTE-mapped 16-page folio and a PMD-mapped THP.

Expected values follow the seed's diff (faeb2831b517) and kernel-semantics.md
A.1-A.4 and F; v6.12 is Debian's 6.12.117 (section J, engine/kernels/v6_12.py).
Each case runs a real program: mmap, write, MADV_FREE,
optionally a second write (redirty) and a speculative folio_try_get held
across MADV_PAGEOUT, then looks at what reclaim did.
"""

from __future__ import annotations

import itertools

import pytest

from engine.execution.runner import run
from engine.program.format import parse_program

A = 0x200000
SHAPES = {"small": (1, 0), "mthp16": (16, 4), "pmd_thp": (512, 9)}


def program(shape: str, dirty: bool, droppable: bool, extra_ref: bool):
    pages, order = SHAPES[shape]
    ops = [dict(thread="T0", op="mmap", addr=A, pages=pages, order=order, droppable=droppable),
           dict(thread="T0", op="write", addr=A, pages=pages, value=7),
           dict(thread="T0", op="madvise", addr=A, pages=pages, advice="MADV_FREE"),
           dict(thread="T0", op="lru_add_drain")]
    if dirty:
        ops.append(dict(thread="T0", op="write", addr=A, value=8))
    if extra_ref:
        ops.append(dict(thread="W", op="folio_try_get", addr=A, ref="r0"))
    ops.append(dict(thread="T0", op="madvise", addr=A, pages=pages, advice="MADV_PAGEOUT"))
    if extra_ref:
        ops.append(dict(thread="W", op="folio_put", ref="r0"))
    return parse_program({"version": 1, "threads": [{"name": "T0", "mm": 0},
                                                   {"name": "W", "kind": "kthread"}],
                          "ops": ops})


def decide(version: str, shape: str, dirty: bool, droppable: bool, extra_ref: bool):
    """(discarded, swapbacked after, PMD split) as the kernel sources say."""
    split = False
    if version == "v5.17":
        return (not dirty, dirty, split)
    if version == "v5.18":
        ok = not dirty and not extra_ref
        return (ok, not ok, split)
    if version in ("v6.12", "v6.14"):
        if shape == "pmd_thp":
            if version == "v6.14" and not dirty and not extra_ref:
                return (True, False, False)           # discarded whole under the PMD lock
            # v6.14 when the PMD discard refuses; v6.12 (6.12.117) always: its
            # try_to_unmap_one no longer calls unmap_huge_pmd_locked()
            split = True                              # then decided PTE by PTE, as below
        ok = not extra_ref and (not dirty or droppable)
        return (ok, not ok and not droppable, split)
    # v6.15 / v6.16
    if dirty and not droppable:
        return (False, True, False)
    if extra_ref:
        return (False, False, False)
    return (True, False, False)


CASES = [(v, s, d, dr, r)
         for v in ("v5.17", "v5.18", "v6.12", "v6.14", "v6.15", "v6.16")
         for s in SHAPES
         for d, dr, r in itertools.product((False, True), repeat=3)
         # no MAP_DROPPABLE before v6.11; no anonymous mTHP before v6.8 and lazyfree THPs are
         # split by reclaim before v6.11: only the small-folio table applies to v5.x
         if not (v.startswith("v5") and (dr or s != "small"))]


@pytest.mark.parametrize("version,shape,dirty,droppable,extra_ref", CASES,
                         ids=[f"{v}-{s}-{'dirty' if d else 'clean'}-{'droppable' if dr else 'anon'}"
                              f"-{'ref' if r else 'noref'}" for v, s, d, dr, r in CASES])
def test_lazyfree_decision(version, shape, dirty, droppable, extra_ref):
    pages, _ = SHAPES[shape]
    out = run(program(shape, dirty, droppable, extra_ref), version)
    assert out.verdict.value == "ok", out.crash
    discarded, swapbacked, split = decide(version, shape, dirty, droppable, extra_ref)
    st = out.state
    mapped = st["mm0.MM_ANONPAGES"]
    assert mapped == (0 if discarded else pages)
    if discarded:
        if droppable and dirty:
            # dirty droppable folios are unmapped, then activated and freed at putback
            assert st["counter.PGLAZYFREED"] == 0 and st["counter.nr_lazyfree_fail"] == 0
        elif extra_ref:
            # unmapped, but folio_ref_freeze(folio, 1) fails: freed later, when the ref goes
            assert st["counter.PGLAZYFREED"] == 0
        else:
            assert st["counter.PGLAZYFREED"] == pages
    else:
        flags = st["folio.f0.flags"].split(",")
        assert ("swapbacked" in flags) is swapbacked
        # nr_lazyfree_fail counts a lazyfree folio that unmapping made swapbacked
        assert st["counter.nr_lazyfree_fail"] == (pages if swapbacked else 0)
    assert st["counter.THP_SPLIT_PMD"] == (1 if split else 0)
