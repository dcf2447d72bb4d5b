"""Predicted real-kernel observables, the no-swap model, compare() and the conformance suite."""

from __future__ import annotations

import pathlib

import pytest

from engine.corpus.entries import load_entry
from engine.errors import NotTranslatable
from engine.execution.runner import Runner, run
from engine.program.format import parse_program
from engine.repro.observables import COUNTER_KEYS, MTHP_STATS, VMSTAT
from engine.repro.realobs import (
    ABSENT,
    CONFORMANCE,
    FieldDifference,
    PredictionError,
    compare,
    parse_output,
    predict,
    present_rle,
    vma_runs,
)
from engine.repro.reproducer import translate

CORPUS = pathlib.Path(__file__).resolve().parents[2] / "corpus"


def corpus(name):
    return load_entry(str(CORPUS / f"{name}.json"))["program"]


def truncated(p, n):
    """The first ``n`` operations of program ``p``."""
    d = p.to_dict()
    d["ops"] = d["ops"][:n]
    return parse_program(d)


# -- helpers -------------------------------------------------------------------------

def test_present_rle():
    assert present_rle("1" * 16) == "1x16"
    assert present_rle("1110") == "1x3,0x1"
    assert present_rle("0101") == "0x1,1x1,0x1,1x1"
    assert present_rle("") == ""


def test_vma_runs_merge_contiguous_vmas_of_one_protection():
    assert vma_runs([(0x3000, 0x4000, "rw"), (0x1000, 0x3000, "rw"), (0x4000, 0x5000, "r"),
                     (0x6000, 0x7000, "r")]) == [(0x1000, 0x4000, "rw"), (0x4000, 0x5000, "r"),
                                                 (0x6000, 0x7000, "r")]


# -- section J, predicted ---------------------------------------------------------------

def test_h1_split_deferred_one_per_folio_before_v6_15_none_after():
    p = corpus("h1-clean-mthp-reclaim")
    old, new = predict(p, "v6.14"), predict(p, "v6.15")
    assert old["mthp.64kB.split_deferred"] == 1 and new["mthp.64kB.split_deferred"] == 0
    for obs in (old, new):
        assert obs["vmstat.pglazyfreed"] == 16 and obs["vmstat.pglazyfree"] == 16
        assert obs["mm0.smaps[0x200000].Rss_kB"] == 0
        assert obs["mm0.present[0x200000]"] == "1x16"   # the read mapped the zero page
        assert obs["result[4]"] == [0] * 16
    eight = corpus("conform-h1-eight-mthp")
    assert predict(eight, "v6.14")["mthp.64kB.split_deferred"] == 8
    assert predict(eight, "v6.16")["mthp.64kB.split_deferred"] == 0


@pytest.mark.parametrize("pin", ["io_uring", "vmsplice"])
def test_extra_references_lazyfree_kept_from_v6_15_dropped_before(pin):
    p = corpus("vmsplice-style-extra-ref")
    held = truncated(p, 5)                 # MADV_PAGEOUT while the references are held
    old, new = predict(held, "v6.14", pin=pin), predict(held, "v6.15", pin=pin)
    assert old["mm0.smaps[0x200000].LazyFree_kB"] == 0 and old["mm0.smaps[0x200000].Rss_kB"] == 64
    assert new["mm0.smaps[0x200000].LazyFree_kB"] == 64 and new["mm0.smaps[0x200000].Rss_kB"] == 64
    # references dropped, second MADV_PAGEOUT: v6.14's folio is swapbacked and, without swap,
    # stays (split by vmscan's fallback); v6.15 frees it
    old, new = predict(p, "v6.14", pin=pin), predict(p, "v6.15", pin=pin)
    assert old["vmstat.pglazyfreed"] == 0 and old["mm0.smaps[0x200000].Rss_kB"] == 64
    assert old["mthp.64kB.split"] == 1
    assert new["vmstat.pglazyfreed"] == 16 and new["mm0.smaps[0x200000].Rss_kB"] == 0


def test_redirtied_pmd_thp_split_before_v6_15_kept_after():
    p = corpus("h8-pmd-thp-redirty")
    old, new = predict(p, "v6.14"), predict(p, "v6.15")
    assert old["vmstat.thp_split_pmd"] == 1 and old["mm0.smaps[0x200000].AnonHugePages_kB"] == 0
    assert new["vmstat.thp_split_pmd"] == 0 and new["mm0.smaps[0x200000].AnonHugePages_kB"] == 2048
    for obs in (old, new):
        assert obs["result[5]"] == [8, 7]
        assert obs["mm0.smaps[0x200000].LazyFree_kB"] == 0     # redirtied: smaps leaves it out
        assert obs["mm0.present[0x200000]"] == "1x512"


def test_clean_pmd_thp_discarded_whole():
    p = corpus("conform-h10-pmd-thp-clean")
    for engine in ("v6.14", "v6.15", "v6.16"):
        obs = predict(p, engine)
        assert obs["vmstat.thp_split_pmd"] == 0 and obs["vmstat.pglazyfreed"] == 512
        assert obs["mm0.present[0x200000]"] == "0x512"


def test_dma_into_a_pinned_lazyfree_page_kept_on_v6_14_discarded_on_v6_15():
    p = corpus("conform-h5-dma-pageout")
    assert predict(p, "v6.14")["result[9]"] == [42]
    assert predict(p, "v6.15")["result[9]"] == [0]


def test_fork_shared_mthp_observes_both_processes():
    obs = predict(corpus("fork-shared-mthp"), "v6.16")
    assert obs["mm1.maps"] == ["0x200000-0x210000:rw"]
    assert obs["result[5]"] == [7] * 16
    assert {k.split(".")[0] for k in obs if k.startswith("mm")} == {"mm0", "mm1"}


def test_keys():
    obs = predict(corpus("h3-redirty-pte3"), "v6.15")
    assert set(COUNTER_KEYS) <= set(obs)
    assert set(obs) - set(COUNTER_KEYS) == {
        "mm0.maps", "mm0.smaps[0x200000].Rss_kB", "mm0.smaps[0x200000].LazyFree_kB",
        "mm0.smaps[0x200000].AnonHugePages_kB", "mm0.present[0x200000]",
        "result[1]", "result[2]", "result[3]", "result[4]", "result[5]",
        "vmstat.pglazyfree.op[2]", "vmstat.pglazyfree.op[4]"}
    assert obs["result[2]"] == obs["result[4]"] == 0        # the two madvise() calls


def test_pglazyfree_of_each_madvise_shows_when_the_batch_moved():
    """The sums hide when the per-CPU lazyfree batch moved its folios: of 16 small
    folios v5.18's batch of 15 (6.1's PAGEVEC_SIZE) moves 15 during the MADV_FREE
    and MADV_PAGEOUT drains the last; a 64 KiB mTHP moves at once."""
    p = corpus("h1-clean-mthp-reclaim")
    small, large = predict(p, "v5.18"), predict(p, "v6.16")
    assert (small["vmstat.pglazyfree.op[2]"], small["vmstat.pglazyfree.op[3]"]) == (15, 1)
    assert (large["vmstat.pglazyfree.op[2]"], large["vmstat.pglazyfree.op[3]"]) == (16, 0)
    assert small["vmstat.pglazyfree"] == large["vmstat.pglazyfree"] == 16


def test_failed_split_counters_are_observed():
    """Issue 15 item 9: thp_split_page_failed and the per-size split_failed are
    observed and predicted: 0 where nothing fails, 1 for a pinned THP split."""
    assert VMSTAT["thp_split_page_failed"] == "THP_SPLIT_PAGE_FAILED"
    assert "split_failed" in MTHP_STATS
    assert {"vmstat.thp_split_page_failed", "mthp.64kB.split_failed",
            "mthp.2048kB.split_failed"} <= set(COUNTER_KEYS)
    obs = predict(corpus("h1-clean-mthp-reclaim"), "v6.16")
    assert obs["vmstat.thp_split_page_failed"] == 0 and obs["mthp.64kB.split_failed"] == 0
    obs = predict(corpus("conform-pmd-thp-pinned-split-failed"), "v6.16")
    assert obs["vmstat.thp_split_page_failed"] == 1 and obs["mthp.2048kB.split_failed"] == 1


def test_mthp_stats_are_predicted_only_for_engines_with_mthp():
    """deb-6.1 has no hugepages-<size>/stats: its engine (v5.18, HAS_MTHP False)
    predicts no mthp keys, the reproducer prints none there, and compare() finds
    them absent on both sides; a stat one side has and the other lacks is a
    difference, never a silent pass."""
    p = corpus("h1-clean-mthp-reclaim")
    old, new = predict(p, "v5.18"), predict(p, "v6.16")
    assert not [k for k in old if k.startswith("mthp.")]
    assert {k for k in new if k.startswith("mthp.")} == {k for k in COUNTER_KEYS if k.startswith("mthp.")}
    old = {k: v for k, v in old.items() if ".op[" not in k}      # the batch sizes differ
    new = {k: v for k, v in new.items() if ".op[" not in k}
    # deb-6.1 as the reproducer prints it: the vmstat keys and no mthp key
    kernel = {k: v for k, v in new.items() if not k.startswith("mthp.")}
    assert compare(old, kernel) == []
    # a kernel with stats against a model without: each one-sided key is a difference
    assert compare(old, new) == [FieldDifference(k, ABSENT, 0)
                                 for k in sorted(k for k in new if k.startswith("mthp."))]
    # one stat file missing on a kernel whose model predicts it (split_failed, say)
    lacking = {k: v for k, v in new.items() if k != "mthp.64kB.split_failed"}
    assert compare(new, lacking) == [FieldDifference("mthp.64kB.split_failed", 0, ABSENT)]


def test_madvise_result_is_compared():
    """MADV_PAGEOUT over a VM_LOCKED VMA: -EINVAL (issue 15 item 8), observed as result[i]."""
    p = corpus("madv-pageout-locked-vma")
    for engine in ("v5.18", "v6.12", "v6.16"):
        obs = predict(p, engine)
        assert obs["result[3]"] == -22 and obs["result[4]"] == [7, 7]
        assert obs["mm0.smaps[0x200000].Rss_kB"] == 8
    kernel = dict(obs, **{"result[3]": 0})
    assert compare(obs, kernel) == [FieldDifference("result[3]", -22, 0)]


def test_write_fault_result_is_efault():
    p = parse_program({"version": 1, "threads": [{"name": "T0", "kind": "task", "mm": 0}], "ops": [
        {"thread": "T0", "op": "mmap", "addr": 0x200000, "pages": 1},
        {"thread": "T0", "op": "mprotect", "addr": 0x200000, "pages": 1, "prot": "r"},
        {"thread": "T0", "op": "write", "addr": 0x200000, "value": 1},
        {"thread": "T0", "op": "read", "addr": 0x200000}]})
    obs = predict(p, "v6.16")
    assert obs["result[2]"] == -14 and obs["result[3]"] == [0]
    assert obs["mm0.maps"] == ["0x200000-0x201000:r"]


def test_predict_checks_translatability_unless_told_not_to():
    p = corpus("h12-mremap-straddle")
    with pytest.raises(NotTranslatable):
        predict(p, "v6.14")
    assert predict(p, "v6.14", check=False)["vmstat.pglazyfreed"] == 16
    with pytest.raises(PredictionError, match="v6.15.*crash"):
        predict(p, "v6.15", check=False)       # the out-of-bounds scan


# -- the no-swap model ---------------------------------------------------------------------

def test_no_swap_keeps_swapbacked_folios_resident_and_leaves_the_default_alone():
    p = corpus("vmsplice-style-extra-ref")
    swap = run(p, "v6.14").state
    noswap = run(p, "v6.14", swap=False).state
    assert swap["counter.PSWPOUT"] == 16 and swap["swap.slots"] == 16
    assert noswap["counter.PSWPOUT"] == 0 and noswap["swap.slots"] == 0
    assert noswap["mm0.MM_ANONPAGES"] == 16 and noswap["mthp.split[4]"] == 1
    assert noswap["folio.f0.flags"] == "anon,swapbacked,lru,active"


def test_no_swap_small_folio_is_activated():
    p = parse_program({"version": 1, "threads": [{"name": "T0", "kind": "task", "mm": 0}], "ops": [
        {"thread": "T0", "op": "mmap", "addr": 0x200000, "pages": 1},
        {"thread": "T0", "op": "write", "addr": 0x200000, "value": 5},
        {"thread": "T0", "op": "madvise", "addr": 0x200000, "pages": 1, "advice": "MADV_PAGEOUT"},
        {"thread": "T0", "op": "read", "addr": 0x200000}]})
    r = Runner(p, "v6.15", swap=False)
    out = r.run()
    assert out.results[3] == [5] and out.state["counter.nr_reclaimed"] == 0
    assert r.k.total_swap_pages == 0
    assert out.state["folio.f0.lru"] == "LRU_ACTIVE_ANON"
    assert run(p, "v6.15").state["counter.PSWPOUT"] == 1


def test_no_swap_kswapd_scans_only_the_file_lru():
    threads = [{"name": "T0", "kind": "task", "mm": 0}, {"name": "R", "kind": "kthread"}]
    p = parse_program({"version": 1, "threads": threads, "ops": [
        {"thread": "T0", "op": "mmap", "addr": 0x200000, "pages": 1},
        {"thread": "T0", "op": "write", "addr": 0x200000, "value": 5},
        {"thread": "R", "op": "lru_add_drain"}] + [{"thread": "R", "op": "reclaim"}] * 4})
    swapped = run(p, "v6.16")
    assert swapped.results[4] == 1 and swapped.state["counter.PSWPOUT"] == 1
    kept = run(p, "v6.16", swap=False)
    assert kept.results[3:] == [0, 0, 0, 0] and kept.state["counter.PSWPOUT"] == 0
    assert kept.state["folio.f0.lru"] == "LRU_INACTIVE_ANON"      # never isolated


# -- compare and the reproducer's output -------------------------------------------------

def test_compare():
    a = {"vmstat.pglazyfreed": 16, "result[4]": [0, 0], "mm0.maps": ("0x0-0x1000:rw",)}
    assert compare(a, {"vmstat.pglazyfreed": 16, "result[4]": [0, 0], "mm0.maps": ["0x0-0x1000:rw"]}) == []
    diff = compare(a, {"vmstat.pglazyfreed": 0, "result[4]": [0, 0], "extra": 1})
    assert diff == [FieldDifference("extra", ABSENT, 1),
                    FieldDifference("mm0.maps", ["0x0-0x1000:rw"], ABSENT),
                    FieldDifference("vmstat.pglazyfreed", 16, 0)]
    assert diff[2].to_dict() == {"field": "vmstat.pglazyfreed", "predicted": 16, "observed": 0}


def test_parse_output():
    text = 'boot noise\nFOLIODIFF {"observables": {"vmstat.pglazyfree": 1}}\n'
    assert parse_output(text) == {"observables": {"vmstat.pglazyfree": 1}}
    assert parse_output('FOLIODIFF {"error": "mmap: x", "op": 0}')["op"] == 0
    with pytest.raises(ValueError, match="no FOLIODIFF"):
        parse_output("kernel panic")
    with pytest.raises(ValueError, match="not JSON"):
        parse_output("FOLIODIFF {oops")


# -- the conformance suite ----------------------------------------------------------------

def test_conformance_covers_what_the_issue_asks():
    names = set(CONFORMANCE)
    for want in ("h1-clean-mthp-reclaim", "h3-redirty-pte3", "vmsplice-style-extra-ref+vmsplice",
                 "vmsplice-style-extra-ref+io_uring", "h8-pmd-thp-redirty", "conform-h10-pmd-thp-clean",
                 "fork-shared-mthp"):
        assert want in names
    assert len(names) >= 15


@pytest.mark.parametrize("name", sorted(CONFORMANCE))
def test_conformance_scenario_translates_and_predicts(name):
    scenario = CONFORMANCE[name]
    r = translate(scenario.program, name=name, **scenario.options)
    assert r.name == name
    for engine in ("v6.14", "v6.15", "v6.16"):
        obs = predict(scenario.program, engine, **scenario.options)
        assert set(COUNTER_KEYS) <= set(obs)


#: CONFORMANCE scenarios deb-6.1 cannot run, and why: the ones that map MAP_DROPPABLE (v6.11+).
UNSUPPORTED_ON_61 = {"h7-droppable-small-dirty", "h7-droppable-mthp-dirty",
                     "conform-h11-pmd-droppable-dirty"}


@pytest.mark.parametrize("name", sorted(CONFORMANCE))
def test_conformance_scenario_translates_for_deb_61(name):
    """Every scenario user space can express on 6.1 translates for it, checked on
    v5.18 (its engine); only the MAP_DROPPABLE ones leave v5.18 out (the kernel
    says unsupported)."""
    scenario = CONFORMANCE[name]
    r = translate(scenario.program, name=name, target="v5.18", **scenario.options)
    assert (r.analysis.engines[0] == "v5.18") == (name.split("+")[0] not in UNSUPPORTED_ON_61)
    if name.split("+")[0] not in UNSUPPORTED_ON_61:
        obs = predict(scenario.program, "v5.18", **scenario.options)
        assert not any(k.startswith("mthp.") for k in obs)
