"""The v6.12 engine (Debian 6.12.117) against v6.14: one difference, in try_to_unmap_one's
PMD leg, and the rules that classify it.

6.12.117's stable update "mm/rmap: don't discard lazyfree THPs at PMD level" took the
unmap_huge_pmd_locked() call (735ecdfaf4e8) out of try_to_unmap_one(): a PMD-mapped
lazyfree THP is always split, then unmapped PTE by PTE (engine/kernels/v6_12.py).
"""

from __future__ import annotations

import pytest

from engine.diff.differential import Classification, differential
from engine.diff.rules import explain, rules_between
from engine.execution.runner import run
from engine.kernels import KERNELS, ORDER, base_version, resolve_engine
from engine.kernels.v6_12 import V6_12
from engine.kernels.v6_14 import V6_14
from engine.program.format import parse_program

A = 0x200000
SERIES = {"swapbacked-only-if-dirty", "batched-lazyfree-unmap", "no-pmd-split-for-lazyfree"}


def thp_program(*, redirty=False, droppable=False, pin=False, read_back=False):
    """A 2 MiB THP written, MADV_FREE'd, optionally redirtied or pinned, then MADV_PAGEOUT."""
    ops = [{"thread": "T0", "op": "mmap", "addr": A, "pages": 512, "order": 9,
            "droppable": droppable},
           {"thread": "T0", "op": "write", "addr": A, "pages": 512, "value": 7}]
    if not droppable:
        ops.append({"thread": "T0", "op": "madvise", "addr": A, "pages": 512, "advice": "MADV_FREE"})
    if redirty:
        ops.append({"thread": "T0", "op": "write", "addr": A, "value": 8})
    if pin:
        ops.append({"thread": "T0", "op": "pin", "addr": A, "pin": "p0"})
    ops.append({"thread": "T0", "op": "madvise", "addr": A, "pages": 512, "advice": "MADV_PAGEOUT"})
    if pin:
        ops.append({"thread": "T0", "op": "unpin", "pin": "p0", "dirty": False})
    if read_back:
        ops.append({"thread": "T0", "op": "read", "addr": A, "pages": 2})
    return parse_program({"version": 1, "threads": [{"name": "T0", "mm": 0}], "ops": ops})


def mthp_program():
    """A clean 16-page lazyfree mTHP reclaimed (H1)."""
    ops = [{"thread": "T0", "op": "mmap", "addr": A, "pages": 16, "order": 4},
           {"thread": "T0", "op": "write", "addr": A, "pages": 16, "value": 7},
           {"thread": "T0", "op": "madvise", "addr": A, "pages": 16, "advice": "MADV_FREE"},
           {"thread": "T0", "op": "madvise", "addr": A, "pages": 16, "advice": "MADV_PAGEOUT"}]
    return parse_program({"version": 1, "threads": [{"name": "T0", "mm": 0}], "ops": ops})


# -- the engine ----------------------------------------------------------------------

def test_v6_12_is_registered_between_v5_18_and_v6_14():
    assert resolve_engine("v6.12") == "v6.12" and base_version("v6.12") == "v6.12"
    assert KERNELS["v6.12"] is V6_12 and issubclass(V6_12, V6_14)
    assert ORDER.index("v5.18") < ORDER.index("v6.12") < ORDER.index("v6.14")
    # the one difference, and the mainline behaviour it overrides
    assert V6_14.DISCARDS_LAZYFREE_PMD and not V6_12.DISCARDS_LAZYFREE_PMD


def test_clean_pmd_thp_is_split_then_discarded_page_by_page():
    """Section J: thp_split_pmd +1, thp_deferred_split_page +1, pglazyfreed +512 per THP."""
    out = run(thp_program(), "v6.12")
    assert out.verdict.value == "ok", out.crash
    st = out.state
    assert st["counter.THP_SPLIT_PMD"] == 1
    assert st["counter.THP_DEFERRED_SPLIT_PAGE"] == 1     # first PTE discard: partially mapped
    assert st["mthp.split_deferred[9]"] == 1
    assert st["counter.PGLAZYFREED"] == 512
    assert st["counter.nr_lazyfree_fail"] == 0 and st["counter.nr_unmap_fail"] == 0
    assert st["counter.THP_SPLIT_PAGE"] == 0              # the folio itself is never split
    # nothing left mapped, nothing left queued: the folio was freed whole
    assert st["mm0.MM_ANONPAGES"] == 0
    assert not [k for k in st if k.startswith(("mm0.pte[", "mm0.pmd[", "folio."))]
    assert not st["deferred_split_queue"]
    names = [n for _, n in out.events]
    assert "ttu_split_huge_pmd" in names and "discard_lazyfree_pmd" not in names
    assert names.count("ttu_lazyfree_discard") == 512


def test_clean_pmd_thp_reads_back_zero():
    out = run(thp_program(read_back=True), "v6.12")
    assert out.verdict.value == "ok", out.crash
    assert out.results[-1] == [0, 0]


def test_v6_14_discards_the_same_thp_whole():
    st = run(thp_program(), "v6.14").state
    assert st["counter.THP_SPLIT_PMD"] == 0 and st["counter.THP_DEFERRED_SPLIT_PAGE"] == 0
    assert st["counter.PGLAZYFREED"] == 512 and st["mm0.MM_ANONPAGES"] == 0


@pytest.mark.parametrize("case", ["redirty", "pin", "droppable-dirty", "mthp16"])
def test_v6_12_equals_v6_14_where_the_pmd_discard_would_refuse(case):
    """A dirty PMD or an extra reference makes v6.14's PMD discard refuse and split too,
    and PTE-mapped folios never reach the PMD leg: the two kernels agree."""
    program = {"redirty": lambda: thp_program(redirty=True, read_back=True),
               "pin": lambda: thp_program(pin=True),
               "droppable-dirty": lambda: thp_program(droppable=True, read_back=True),
               "mthp16": mthp_program}[case]()
    assert differential(program, "v6.12", "v6.14").equal


def test_redirtied_pmd_thp_keeps_its_data_and_becomes_swapbacked():
    st = run(thp_program(redirty=True, read_back=True), "v6.12")
    assert st.results[-1] == [8, 7]
    assert st.state["counter.THP_SPLIT_PMD"] == 1
    assert st.state["counter.nr_lazyfree_fail"] == 512
    assert "swapbacked" in st.state["folio.f0.flags"].split(",")


# -- the rules -----------------------------------------------------------------------

def test_rules_between_v6_12_and_v6_14_are_the_pmd_discard_and_the_lru_flag():
    """6.12.117 lacks the mainline PMD discard and carries the revert of 33dfe9204f29."""
    names = ["lazyfree-pmd-discard", "lazyfree-queue-clears-lru"]
    assert [r.name for r in rules_between("v6.12", "v6.14")] == names
    assert [r.name for r in rules_between("v6.14", "v6.12")] == names


def test_rules_between_v5_18_and_v6_12_are_the_v6_8_to_v6_12_features():
    names = {r.name for r in rules_between("v5.18", "v6.12")}
    assert names == {"folio-batch-31", "anon-mthp-faults", "map-droppable",
                     "underused-thp-queued", "deferred-split-partially-mapped",
                     "split-maps-unused-to-zeropage"}


@pytest.mark.parametrize("newer", ["v6.15", "v6.16", "v6.15-c", "v6.16-c"])
def test_rules_from_v6_12_to_the_series_add_the_pmd_discard(newer):
    names = {r.name for r in rules_between("v6.12", newer)}
    assert SERIES <= names and "lazyfree-pmd-discard" in names
    assert names - {r.name for r in rules_between("v6.14", newer)} == {
        "lazyfree-pmd-discard", "lazyfree-queue-clears-lru"}


def test_the_pmd_discard_rule_needs_a_split_against_a_whole_discard():
    split = frozenset({"ttu_split_huge_pmd", "split_huge_pmd", "ttu_lazyfree_discard"})
    whole = frozenset({"discard_lazyfree_pmd"})
    assert [r.name for r in explain("v6.12", "v6.14", split, whole, "madvise")] == \
        ["lazyfree-pmd-discard"]
    assert [r.name for r in explain("v6.14", "v6.12", whole, split, "madvise")] == \
        ["lazyfree-pmd-discard"]
    assert explain("v6.12", "v6.14", split, split, "madvise") == []


def test_clean_pmd_thp_divergence_v6_12_v6_14_is_intended():
    report = differential(thp_program(), "v6.12", "v6.14")
    d = report.divergences[0]
    assert d.classification is Classification.INTENDED
    assert [r.name for r in d.rules] == ["lazyfree-pmd-discard"]
    assert "6.12.117" in d.rules[0].patch and "735ecdfaf4e8" in d.rules[0].patch
    fields = {f.field for f in d.fields}
    assert {"counter.THP_SPLIT_PMD", "counter.THP_DEFERRED_SPLIT_PAGE"} <= fields


@pytest.mark.parametrize("newer", ["v6.15", "v6.16", "v6.14-c"])
def test_clean_pmd_thp_divergence_v6_12_newer_is_intended(newer):
    d = differential(thp_program(), "v6.12", newer).divergences[0]
    assert d.classification is Classification.INTENDED
    assert "lazyfree-pmd-discard" in {r.name for r in d.rules}


def test_redirtied_pmd_thp_v6_12_v6_15_is_the_series_4_of_4():
    d = differential(thp_program(redirty=True), "v6.12", "v6.15").divergences[0]
    assert d.classification is Classification.INTENDED
    assert [r.name for r in d.rules] == ["no-pmd-split-for-lazyfree"]


def test_mthp_v6_12_v6_15_is_the_series_batching():
    d = differential(mthp_program(), "v6.12", "v6.15").divergences[0]
    assert d.classification is Classification.INTENDED
    assert [r.name for r in d.rules] == ["batched-lazyfree-unmap"]


def test_v5_18_and_v6_12_reclaim_a_clean_pmd_thp_alike():
    """Neither splits the lazyfree THP in reclaim (820c4e2e6f51, v5.18): both split
    the PMD in try_to_unmap_one() and discard page by page; only v5.17 splits
    the folio first."""
    assert differential(thp_program(), "v5.18", "v6.12").divergences == []
    d = differential(thp_program(), "v5.17", "v5.18").divergences[0]
    assert [r.name for r in d.rules] == ["lazyfree-thp-not-split-in-reclaim"]
