"""The C reproducer translator: what translates, what does not and why, and that it builds."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest

from engine.corpus.entries import load_entry
from engine.errors import NotTranslatable, ProgramError
from engine.program.format import parse_program
from engine.repro.observables import COUNTER_KEYS
from engine.repro.realobs import compare, parse_output, predict
from engine.repro.reproducer import (
    DEFAULT_ENGINES,
    TARGET,
    PinMechanism,
    ThpPolicy,
    analyse,
    candidate_policies,
    missing_features,
    translate,
)

CORPUS = sorted((pathlib.Path(__file__).resolve().parents[2] / "corpus").glob("*.json"))
GCC = shutil.which("gcc")

#: corpus programs that do not translate: (operation index, words of the reason)
NOT_TRANSLATABLE = {
    "h2-shrinker-ref-between-ptes": (3, "schedule preempts"),
    "h5-dma-into-lazyfree": (5, "kswapd-style reclaim"),
    "h10-pmd-thp-clean": (4, "huge zero page"),
    "h11-pmd-droppable-dirty": (3, "huge zero page"),
    "h12-mremap-straddle": (5, "kswapd-style reclaim"),
    "h12-vma-boundary-lazyfree-mthp": (5, "kswapd-style reclaim"),
    "h12-vma-boundary-pinned-mthp": (4, "kswapd-style reclaim"),
    "h14-lazyfree-batch-not-drained": (3, "kswapd-style reclaim"),
    "lazyfree-batch-size": (3, "kswapd-style reclaim"),
    "referenced-mthp-one-vma": (5, "kswapd-style reclaim"),
    "gup-slow-touch-pmd": (3, "schedule preempts"),
    "pmd-discard-store-before-clear": (3, "schedule preempts"),
    "lazyfree-requeue-other-cpu": (3, "another thread's CPU"),
    "h12-vma-boundary-write-escalation": (6, "kswapd-style reclaim"),
    "deferred-split-retry-pinned-mthp": (4, "cannot be split (extra references)"),
}

T0 = {"name": "T0", "kind": "task", "mm": 0}


def program(*ops, threads=None, schedule=()):
    return parse_program({"version": 2, "threads": threads or [T0], "ops": list(ops),
                          "schedule": list(schedule)})


def op(name, **fields):
    return {"thread": fields.pop("thread", "T0"), "op": name, **fields}


def mthp(addr=0x200000, pages=16):
    """mmap an order-4 region, write it, MADV_FREE it."""
    return [op("mmap", addr=addr, pages=pages, order=4), op("write", addr=addr, pages=pages, value=7),
            op("madvise", addr=addr, pages=pages, advice="MADV_FREE")]


def not_translatable(p, **options) -> NotTranslatable:
    with pytest.raises(NotTranslatable) as info:
        translate(p, name="t", **options)
    return info.value


# -- the corpus ------------------------------------------------------------------

@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_program_translates_and_builds_or_says_why_not(path, tmp_path):
    entry = load_entry(str(path))
    name = entry["name"]
    if name in NOT_TRANSLATABLE:
        index, words = NOT_TRANSLATABLE[name]
        err = not_translatable(entry["program"])
        assert err.index == index
        assert err.op == entry["program"].ops[index].model_dump(mode="json")
        assert words in err.reason
        assert f"ops[{index}]" in str(err) and json.dumps(err.op, sort_keys=True) in str(err)
        return
    pins = [PinMechanism.IO_URING]
    if any(o.op == "pin" for o in entry["program"].ops):
        pins.append(PinMechanism.VMSPLICE)
    for pin in pins:
        try:
            r = translate(entry["program"], name=name, pin=pin)
        except NotTranslatable as err:
            assert pin is PinMechanism.VMSPLICE, err     # io_uring is the default mapping
            continue
        assert r.source.count("FOLIODIFF") >= 2
        if GCC:
            exe = r.compile(tmp_path / f"{name}-{pin.value}")
            assert exe.exists() and os.access(exe, os.X_OK)


def test_corpus_covers_both_outcomes():
    names = {load_entry(str(p))["name"] for p in CORPUS}
    assert set(NOT_TRANSLATABLE) <= names
    assert len(names - set(NOT_TRANSLATABLE)) >= 10


# -- operations without a faithful user-space form ------------------------------

def test_reclaim_is_not_translatable_and_names_the_op():
    p = program(*mthp(), op("reclaim", thread="R"),
                threads=[T0, {"name": "R", "kind": "kthread"}])
    err = not_translatable(p)
    assert (err.index, err.op["op"]) == (3, "reclaim")
    assert "MADV_PAGEOUT" in err.reason


def test_speculative_reference_is_not_translatable():
    p = program(*mthp(), op("folio_try_get", thread="R", addr=0x200000, ref="r"),
                threads=[T0, {"name": "R", "kind": "kthread"}])
    assert not_translatable(p).index == 3


def test_slow_pin_is_not_translatable():
    p = program(*mthp(), op("pin", addr=0x200000, pin="p", fast=False))
    assert "fast path" in not_translatable(p).reason


def test_read_only_pin_needs_vmsplice():
    p = program(*mthp(), op("pin", addr=0x200000, pin="p", write=False))
    assert "vmsplice" in not_translatable(p).reason
    translate(p, name="t", pin="vmsplice")


def test_dma_write_needs_io_uring():
    p = program(*mthp(), op("pin", addr=0x200000, pin="p"), op("dma_write", thread="D", pin="p", value=1),
                threads=[T0, {"name": "D", "kind": "device"}])
    assert not_translatable(p, pin="vmsplice").index == 4
    assert "dma_write(4, 0, A(0x200000), 1, 1u);" in translate(p, name="t").source


def test_schedule_is_not_translatable():
    entry = load_entry(str(next(p for p in CORPUS if p.stem == "h2-shrinker-ref-between-ptes")))
    err = not_translatable(entry["program"])
    assert err.index == 3 and "between_ptes point #1" in err.reason and "thread S" in err.reason


def test_ops_that_do_not_run_one_after_the_other_are_not_translatable():
    # T1's read is listed before the fork that creates its mm: it waits for it
    p = program(*mthp(), op("read", thread="T1", addr=0x200000), op("fork", child=1),
                threads=[T0, {"name": "T1", "kind": "task", "mm": 1}])
    err = not_translatable(p)
    assert "one after the other" in err.reason


def test_failing_syscall_in_the_model_is_not_translatable():
    p = program(*mthp(), op("munmap", addr=0x200000, pages=16), op("mprotect", addr=0x200000, pages=16,
                                                                   prot="r"))
    err = not_translatable(p)
    assert err.index == 4 and "-12" in err.reason and "failing syscall" in err.reason


def test_madvise_over_a_hole_is_not_translatable():
    """The model returns -ENOMEM before advising anything; Linux advises the
    mapped VMAs first (madvise_walk_vmas()): the result alone would agree."""
    p = program(*mthp(), op("munmap", addr=0x200000, pages=8), op("madvise", addr=0x200000, pages=16,
                                                                  advice="MADV_PAGEOUT"))
    err = not_translatable(p)
    assert err.index == 4 and "-12" in err.reason and "advises the mapped VMAs first" in err.reason


def test_unpin_dirty_translates_only_when_the_folio_is_already_dirty():
    clean = program(*mthp(), op("pin", addr=0x200000, pin="p"), op("unpin", pin="p", dirty=True))
    assert "would dirty" in not_translatable(clean).reason
    # a redirtied folio that reclaim found dirty: make_dirty changes nothing
    dirty = program(*mthp(), op("write", addr=0x200000, value=9), op("pin", addr=0x200000, pages=16, pin="p"),
                    op("madvise", addr=0x200000, pages=16, advice="MADV_PAGEOUT"),
                    op("unpin", pin="p", dirty=True))
    assert "unpin_io_uring(6, 0);" in translate(dirty, name="t").source


def test_vmsplice_of_absent_pages_is_not_translatable():
    p = program(op("mmap", addr=0x200000, pages=16, order=4), op("pin", addr=0x200000, pages=16, pin="p"))
    assert "slow path" in not_translatable(p, pin="vmsplice").reason
    translate(p, name="t", pin="io_uring")


def test_fork_while_vmsplice_references_are_held_is_not_translatable():
    p = program(*mthp(), op("pin", addr=0x200000, pin="p"), op("fork", child=1))
    assert "fork" in not_translatable(p, pin="vmsplice").reason
    translate(p, name="t", pin="io_uring")      # FOLL_PIN: fork copies the page, as the model does


def test_pageout_of_a_locked_vma_translates_and_its_result_is_observed():
    """can_madv_lru_vma() refuses a VM_LOCKED VMA: the model returns -EINVAL as Linux
    does (issue 15, item 8); the reproducer records madvise()'s result (0 or
    -errno) instead of failing, and realobs compares it with the model's."""
    from engine.execution.runner import run
    p = program(op("mmap", addr=0x200000, pages=4, locked=True),
                op("madvise", addr=0x200000, pages=4, advice="MADV_PAGEOUT"))
    for engine in ("v5.17", "v6.12", "v6.16"):
        assert run(p, engine).results[1] == -22
    src = translate(p, name="t", target="v5.18").source
    assert "do_madvise(1, A(0x200000), 4, MADV_PAGEOUT);" in src
    assert "mlock(p, len)" in src          # mlock() after the mmap and its madvise
    assert "static const int op_values[2] = { -1, -2 };" in src
    for engine in ("v5.18", "v6.12", "v6.16"):
        assert predict(p, engine)["result[1]"] == -22


def test_deferred_split_scan_must_see_the_whole_queue():
    ops = []
    for n in range(2):
        a = 0x200000 + n * 0x10000
        ops += mthp(a) + [op("munmap", addr=a, pages=8)]
    p = program(*ops, op("deferred_split_scan", thread="S", nr_to_scan=1),
                threads=[T0, {"name": "S", "kind": "kthread"}])
    assert ("2 folios are queued for deferred split; drop_caches scans them all, this op only 1"
            in not_translatable(p).reason)
    ok = program(*ops, op("deferred_split_scan", thread="S"), threads=[T0, {"name": "S", "kind": "kthread"}])
    assert "drop_slab(8);" in translate(ok, name="t").source


def test_lazyfree_batch_at_a_munmap_is_not_translatable():
    # small folios wait in the lru_lazyfree batch; Linux's munmap drains it, the model's does not
    p = program(op("mmap", addr=0x200000, pages=2), op("write", addr=0x200000, pages=2, value=1),
                op("madvise", addr=0x200000, pages=2, advice="MADV_FREE"),
                op("munmap", addr=0x200000, pages=1))
    err = not_translatable(p)
    assert err.index == 3 and "lru_add_drain()" in err.reason
    drained = program(op("mmap", addr=0x200000, pages=2), op("write", addr=0x200000, pages=2, value=1),
                      op("madvise", addr=0x200000, pages=2, advice="MADV_FREE"), op("lru_add_drain"),
                      op("munmap", addr=0x200000, pages=1))
    assert "drain_lru(3);" in translate(drained, name="t").source


def test_folio_batch_of_another_cpu_is_not_translatable():
    # T0's new small folios sit in CPU 0's lru_add batch; T1 (CPU 1) drains only its own
    p = program(op("mmap", addr=0x200000, pages=2), op("write", addr=0x200000, pages=2, value=1),
                op("madvise", thread="T1", addr=0x200000, pages=2, advice="MADV_FREE"),
                threads=[T0, {"name": "T1", "kind": "task", "mm": 0}])
    assert "another thread's CPU" in not_translatable(p).reason


# -- the THP policy ------------------------------------------------------------------

def test_policy_orders():
    pol = candidate_policies({0, 4, 9})[0]
    assert pol.orders(0) == frozenset()
    assert pol.orders(4) == {4}
    assert pol.orders(9) == {4, 9}
    assert candidate_policies({4})[0].orders(4) == {4}
    assert candidate_policies({0})[0].orders(0) == frozenset()


def test_mixed_orders_pick_a_policy_no_fault_notices():
    p = program(op("mmap", addr=0x200000, pages=512, order=9), op("write", addr=0x200000, pages=512, value=1),
                op("mmap", addr=0x40000000, pages=16, order=4),
                op("write", addr=0x40000000, pages=16, value=2))
    a = analyse(p)
    assert a.policy.sizes == (("64kB", "always"), ("2048kB", "madvise"))
    assert isinstance(a.policy, ThpPolicy)


def test_mixed_orders_no_policy_fits():
    # an order-9 region with a 64 KiB tail (small folios in the model) and an
    # order-4 region covering a whole PMD (64 KiB folios in the model)
    p = program(op("mmap", addr=0x200000, pages=528, order=9), op("write", addr=0x200000, pages=528, value=1),
                op("mmap", addr=0x40000000, pages=512, order=4),
                op("write", addr=0x40000000, pages=512, value=2))
    err = not_translatable(p)
    assert "no THP policy" in err.reason
    assert "a 64 KiB mTHP" in err.reason and "a PMD-mapped THP" in err.reason


def test_policy_without_mthp_maps_onto_the_top_level_knob():
    """Before mTHP (v6.8) only transparent_hugepage/enabled exists: it takes the 2 MiB
    setting, and no region can get a 64 KiB folio."""
    both = candidate_policies({0, 4, 9})
    assert [p.top_level for p in both] == ["madvise", "always"]
    first, second = both
    assert first.orders(9, mthp=False) == {9} and first.orders(4, mthp=False) == frozenset()
    assert first.orders(0, mthp=False) == frozenset()          # MADV_NOHUGEPAGE
    # 2 MiB always: a PMD-suitable range of any region but the NOHUGEPAGE ones
    assert second.orders(4, mthp=False) == second.orders(9, mthp=False) == {9}
    only4 = candidate_policies({4})[0]
    assert only4.top_level == "never" and only4.orders(4, mthp=False) == frozenset()
    assert only4.describe(False) == ("transparent_hugepage/enabled=never (no mTHP); "
                                     "order 0: MADV_NOHUGEPAGE, order 4: MADV_HUGEPAGE")


def test_order4_region_on_a_kernel_without_mthp_is_checked_on_its_engine():
    """deb-6.1's engine (v5.18, no mTHP) faults small folios in an order-4 region, and
    so does 6.1 with the top-level knob: the reproducer translates for it, checked on
    v5.18 first, and says in its source what a kernel without mTHP is set to."""
    p = program(*mthp(), op("madvise", addr=0x200000, pages=16, advice="MADV_PAGEOUT"))
    a = analyse(p, target="v5.18")
    assert a.engines == ("v5.18",) + DEFAULT_ENGINES
    assert analyse(p, target="v6.16").engines == DEFAULT_ENGINES
    src = translate(p, name="t", target="v5.18").source
    assert '#define THP_TOP_LEVEL "never"' in src
    assert "without mTHP: transparent_hugepage/enabled=never (no mTHP)" in src
    obs = predict(p, "v5.18")
    assert not any(k.startswith("mthp.") for k in obs)
    assert obs["vmstat.pglazyfreed"] == 16 and obs["vmstat.thp_split_page"] == 0


def test_mixed_orders_on_a_kernel_without_mthp():
    """The policy for a PMD region and a 64 KiB region: 64 KiB always, 2 MiB madvise in
    the order-9 region.  Without mTHP the top-level knob is madvise, the order-9
    region (MADV_HUGEPAGE) gets its PMD THP and the order-4 region (no advice)
    small folios, as v5.18 maps them."""
    p = program(op("mmap", addr=0x200000, pages=512, order=9), op("write", addr=0x200000, pages=512, value=1),
                op("mmap", addr=0x40000000, pages=16, order=4),
                op("write", addr=0x40000000, pages=16, value=2))
    a = analyse(p, target="v5.18")
    assert a.engines[0] == "v5.18" and a.policy.top_level == "madvise"
    assert a.policy.orders(9, mthp=False) == {9} and a.policy.orders(4, mthp=False) == frozenset()
    obs = predict(p, "v5.18")
    assert obs["mm0.smaps[0x200000].AnonHugePages_kB"] == 2048
    assert obs["mm0.smaps[0x40000000].Rss_kB"] == 64
    assert obs["mm0.smaps[0x40000000].AnonHugePages_kB"] == 0


def test_a_fault_the_top_level_knob_would_serve_differently_names_it():
    """What analyse() holds a kernel without mTHP to: a write fault in a PMD-suitable
    range of a region with MADV_HUGEPAGE under the top-level knob always is a PMD THP;
    a 64 KiB folio is never possible there."""
    from engine.repro.reproducer import Fault
    pol = candidate_policies({0, 4, 9})[1]      # 64 KiB madvise, 2 MiB always, order 4: MADV_HUGEPAGE
    f = Fault(op=1, addr=0x200000, order=4, write=True, pmd="none", suitable9=True, block4=True, model=0)
    assert f.linux(pol.orders(4, mthp=False)) == 9
    assert f.linux(candidate_policies({4})[0].orders(4, mthp=False)) == 0
    assert f.linux(candidate_policies({4})[0].orders(4)) == 4


def test_a_feature_the_target_kernel_lacks_leaves_its_engine_out():
    """MAP_DROPPABLE (v6.11): deb-6.1's engine has no VM_DROPPABLE, so the program is
    not run on it; the reproducer says unsupported on that kernel."""
    entry = load_entry(str(next(p for p in CORPUS if p.stem == "h7-droppable-small-dirty")))
    p = entry["program"]
    assert missing_features(p, "v5.18") and not missing_features(p, "v6.12")
    assert "MAP_DROPPABLE" in missing_features(p, "v5.18")[0]
    assert analyse(p, target="v5.18").engines == DEFAULT_ENGINES
    assert 'unsupported(op, "MAP_DROPPABLE", why);' in translate(p, name="t", target="v5.18").source


def test_read_fault_in_an_empty_pmd_of_a_thp_region_is_not_translatable():
    p = program(op("mmap", addr=0x200000, pages=512, order=9), op("read", addr=0x200000))
    err = not_translatable(p)
    assert err.index == 1 and "huge zero page" in err.reason


# -- the generated source -------------------------------------------------------------

def test_addresses_are_relocated_modulo_1gib():
    p = program(*mthp(addr=0x7f0000200000))
    r = translate(p, name="high")
    assert r.analysis.base == 0x7f0000000000
    assert f"#define TARGET {TARGET:#x}ULL" in r.source
    assert "A(0x7f0000200000)" in r.source
    far = program(op("mmap", addr=0x200000, pages=1), op("mmap", addr=0x700000000000, pages=1))
    assert "span" in not_translatable(far).reason


def test_source_names_the_program_and_every_op():
    entry = load_entry(str(next(p for p in CORPUS if p.stem == "fork-shared-mthp")))
    r = translate(entry["program"], name="fork-shared-mthp")
    for i in range(len(entry["program"].ops)):
        assert f"/* ops[{i}] (process of mm" in r.source and f"static void op_{i}(void)" in r.source
    assert "static const int mm_ids[NMMS] = { 0, 1 };" in r.source
    assert "static const int op_owner[6] = { 0, 0, 0, 0, 0, 1 };" in r.source
    for key in COUNTER_KEYS:
        assert json.dumps(key) in r.source


def test_malformed_program_is_a_program_error():
    with pytest.raises(ProgramError):
        parse_program({"version": 1, "threads": [T0], "ops": [op("read", addr=0x200000)]})


# -- a real run on this machine's kernel, where it allows it ------------------------

def _native_ok() -> str | None:
    if not GCC:
        return "no gcc"
    if os.geteuid() != 0:
        return "not root"
    thp = pathlib.Path("/sys/kernel/mm/transparent_hugepage")
    if not os.access(thp / "hugepages-64kB" / "enabled", os.W_OK):
        return "no writable mTHP sysfs"
    if pathlib.Path("/proc/sys/kernel/io_uring_disabled").exists() and \
            pathlib.Path("/proc/sys/kernel/io_uring_disabled").read_text().strip() != "0":
        return "io_uring disabled"
    return None


@pytest.mark.skipif(_native_ok() is not None, reason=f"native run impossible: {_native_ok()}")
@pytest.mark.parametrize("name,pin", [("h1-clean-mthp-reclaim", "io_uring"),
                                      ("vmsplice-style-extra-ref", "vmsplice"),
                                      ("fork-shared-mthp", "io_uring")])
def test_native_run_prints_the_predicted_keys(name, pin, tmp_path):
    """Smoke test on the sandbox kernel: the reproducer runs, restores the THP
    policy, and prints exactly the keys the model predicts.  Values are only
    compared on the scenario every post-v6.15 engine and the sandbox agree on."""
    entry = load_entry(str(next(p for p in CORPUS if p.stem == name)))
    knob = pathlib.Path("/sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled")
    before = knob.read_text()
    exe = translate(entry["program"], name=name, pin=pin).compile(tmp_path / name)
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, check=False)
    assert knob.read_text() == before
    out = parse_output(proc.stdout)
    assert proc.returncode == 0, out
    assert proc.stdout.count("FOLIODIFF") == 1
    predicted = predict(entry["program"], "v6.16", pin=pin)
    assert set(out["observables"]) == set(predicted)
    if name == "h1-clean-mthp-reclaim":
        assert compare(predicted, out["observables"]) == []


@pytest.mark.skipif(GCC is None, reason="no gcc")
@pytest.mark.parametrize("pin", ["io_uring", "vmsplice"])
def test_source_is_warning_free_c99(pin, tmp_path):
    """Every helper of the runtime, in a program using most of them, builds with -Werror."""
    p = program(op("mmap", addr=0x200000, pages=16, order=4), op("write", addr=0x200000, pages=16, value=7),
                op("madvise", addr=0x200000, pages=16, advice="MADV_FREE"),
                op("pin", addr=0x200000, pages=16, pin="p"), op("unpin", pin="p", dirty=False),
                op("fork", child=1),
                op("mprotect", addr=0x200000, pages=16, prot="r"), op("lru_add_drain"),
                op("deferred_split_scan", thread="S"),
                op("read", thread="T1", addr=0x200000, pages=16),
                threads=[T0, {"name": "T1", "kind": "task", "mm": 1}, {"name": "S", "kind": "kthread"}])
    src = tmp_path / "r.c"
    src.write_text(translate(p, name="r", pin=pin).source)
    proc = subprocess.run([GCC, "-static", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o",
                           str(tmp_path / "r"), str(src)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def test_deferred_split_scan_of_a_folio_that_cannot_split_is_not_translatable():
    # drop_caches runs the shrinkers again while others free objects: a pinned
    # partially mapped folio's failed split would be counted an unknown number of
    # times (docs/kernel-notes.md section 23)
    a = 0x200000
    ops = mthp(a) + [op("pin", addr=a, pin="p0"), op("munmap", addr=a + 0x8000, pages=8),
                     op("deferred_split_scan", thread="S", nr_to_scan=2)]
    p = program(*ops, threads=[T0, {"name": "S", "kind": "kthread"}])
    assert "cannot be split (extra references)" in not_translatable(p).reason
