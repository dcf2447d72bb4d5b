"""The page-table check oracle (engine/mm/page_table_check.py): one test per check,
each reaching a state that breaks it, through a program (with a kernel bug put
in on purpose where no version has one) or built by hand; and the index it keeps
incrementally against one built from scratch."""

from __future__ import annotations

import random

import pytest

import engine.mm.memory
from engine.bench.differential import typical_program
from engine.corpus.entries import CORPUS_DIR, load_entry
from engine.execution.oracle import Verdict, Violation
from engine.execution.runner import Runner, run
from engine.kernels import KERNELS
from engine.kernels.mutants import MUTANTS
from engine.mm.flags import VM_WRITE
from engine.mm.memory import MemoryMixin
from engine.mm.mprotect import MprotectMixin
from engine.mm.page_table_check import CHECKS, PageTableCheck
from engine.mm.pgtable import mk_pte, pte_mkwrite
from engine.program.format import parse_program

A = 0x200000
P = 4096


def program(*ops):
    threads = [{"name": "T0", "mm": 0}, {"name": "R", "kind": "kthread"}]
    if any(t == "T1" for t, _, _ in ops):
        threads.append({"name": "T1", "mm": 1})
    if any(t == "D" for t, _, _ in ops):
        threads.append({"name": "D", "kind": "device"})
    return parse_program({"version": 2, "threads": threads,
                          "ops": [dict(thread=t, op=kind, **kw) for t, kind, kw in ops]})


def mapped(pages=2, order=0):
    return [("T0", "mmap", dict(addr=A, pages=pages, order=order)),
            ("T0", "write", dict(addr=A, pages=pages, value=7))]


def assert_reported(out, check: str, where: str, addr: int) -> None:
    """The run ended on the page-table check @check at @where (``mm0.pte``) @addr."""
    assert out.verdict is Verdict.INVARIANT, out.crash
    assert out.crash.field == f"{where}[{addr:#x}].page_table_check.{check}"
    assert f"page_table_check: {check}:" in out.crash.message
    assert f"{addr:#x}" in out.crash.message


def ran(prog, engine="v6.14"):
    """A clean run of @prog, its runner kept: the state a test then breaks by hand."""
    runner = Runner(prog, engine)
    out = runner.run()
    assert out.verdict is Verdict.OK, out.crash
    return runner


def raised(runner, check: str) -> Violation:
    with pytest.raises(Violation) as exc:
        runner.oracle.ptc.check(force=True)        # the state was changed by hand, no lock
    assert exc.value.kind is Verdict.INVARIANT
    assert exc.value.field.endswith(f".page_table_check.{check}")
    return exc.value


# -- no_vma ---------------------------------------------------------------------------
def test_no_vma_a_munmap_that_leaves_the_ptes(monkeypatch: pytest.MonkeyPatch) -> None:
    def zap_nothing(self, vma, start, end):
        return
        yield  # pragma: no cover

    prog = program(*mapped(), ("T0", "munmap", dict(addr=A + P, pages=1)))
    assert run(prog, "v6.14").verdict is Verdict.OK
    monkeypatch.setattr(MemoryMixin, "zap_page_range", zap_nothing)
    out = run(prog, "v6.14")
    assert_reported(out, "no_vma", "mm0.pte", A + P)
    assert out.crash.op_index == 2 and out.crash.function == "do_vmi_munmap"


def test_no_vma_a_huge_pmd_past_its_vma() -> None:
    runner = ran(program(("T0", "mmap", dict(addr=A, pages=512, order=9)),
                         ("T0", "write", dict(addr=A, pages=1, value=7))))
    mm = runner.k.mms[0]
    assert mm.pmd_huge
    mm.vmas[0].vm_end = A + 256 * P              # the VMA shrank under the PMD
    v = raised(runner, "no_vma")
    assert v.field == f"mm0.pmd[{A:#x}].page_table_check.no_vma"
    assert f"({A + 256 * P:#x})" in v.message


# -- vma_write --------------------------------------------------------------------------
def test_vma_write_mprotect_without_change_protection(monkeypatch: pytest.MonkeyPatch) -> None:
    def keep_write(self, vma):
        return
        yield  # pragma: no cover

    prog = program(*mapped(), ("T0", "mprotect", dict(addr=A + P, pages=1, prot="r")))
    assert run(prog, "v6.14").verdict is Verdict.OK
    monkeypatch.setattr(MprotectMixin, "change_protection", keep_write)
    assert_reported(run(prog, "v6.14"), "vma_write", "mm0.pte", A + P)


def test_vma_write_a_huge_pmd(monkeypatch: pytest.MonkeyPatch) -> None:
    def keep_write(self, vma):
        return
        yield  # pragma: no cover

    prog = program(("T0", "mmap", dict(addr=A, pages=512, order=9)),
                   ("T0", "write", dict(addr=A, pages=1, value=7)),
                   ("T0", "mprotect", dict(addr=A, pages=512, prot="r")))
    monkeypatch.setattr(MprotectMixin, "change_protection", keep_write)
    assert_reported(run(prog, "v6.14"), "vma_write", "mm0.pmd", A)


def write_escalation():
    """corpus/h12-vma-boundary-write-escalation: a pinned lazyfree mTHP, pages 8-15
    made read-only, kswapd, then a store to page 8 and a load."""
    return program(("T0", "mmap", dict(addr=A, pages=16, order=4)),
                   ("T0", "write", dict(addr=A, pages=16, value=7)),
                   ("T0", "pin", dict(addr=A, pin="p0")),
                   ("T0", "madvise", dict(addr=A, pages=16, advice="MADV_FREE")),
                   ("T0", "lru_add_drain", {}),
                   ("T0", "mprotect", dict(addr=A + 8 * P, pages=8, prot="r")),
                   ("R", "reclaim", {}),
                   ("T0", "write", dict(addr=A + 8 * P, value=9)),
                   ("T0", "read", dict(addr=A + 8 * P)))


def test_the_corpus_holds_the_write_escalation() -> None:
    path = CORPUS_DIR / "h12-vma-boundary-write-escalation.json"
    if path.exists():
        assert load_entry(str(path))["program"].ops == write_escalation().ops


@pytest.mark.parametrize("engine", ["v6.15", "v6.15-c"])
def test_vma_write_v6_15_restores_the_next_vmas_ptes_writable(engine: str) -> None:
    """Issue 15 item 6: v6.15's batch crosses into the read-only VMA and the failed
    refcount check restores PTEs 8-15 from PTE 0, write bit and all."""
    out = run(write_escalation(), engine)
    assert_reported(out, "vma_write", "mm0.pte", A + 8 * P)
    assert out.crash.function == "shrink_folio_list"
    assert out.state["mm0.pte[0x208000]"] == "f0+8:w"


@pytest.mark.parametrize("engine", ["v6.15", "v6.15-c"])
def test_vma_write_v6_15_restores_them_writable_on_the_dirty_abort_too(engine: str) -> None:
    """No pin held at reclaim: a device wrote page 0 through a pin released with
    make_dirty, so the folio is dirty and the other abort branch restores the
    batch with the same set_ptes()."""
    prog = program(("T0", "mmap", dict(addr=A, pages=16, order=4)),
                   ("T0", "write", dict(addr=A, pages=16, value=7)),
                   ("T0", "madvise", dict(addr=A, pages=16, advice="MADV_FREE")),
                   ("T0", "mprotect", dict(addr=A + 8 * P, pages=8, prot="r")),
                   ("T0", "pin", dict(addr=A, pin="p0")),
                   ("D", "dma_write", dict(pin="p0", value=5)),
                   ("T0", "unpin", dict(pin="p0", dirty=True)),
                   ("R", "reclaim", {}))
    out = run(prog, engine)
    assert_reported(out, "vma_write", "mm0.pte", A + 8 * P)
    assert "ttu_lazyfree_abort_dirty" in [e for _, e in out.events]
    assert run(prog, "v6.16").verdict is Verdict.OK


@pytest.mark.parametrize("engine", ["v6.15", "v6.15-c"])
def test_the_mmu_obeys_the_escalated_pte(engine: str) -> None:
    """Without the per-step check the run goes on: the store to the PROT_READ page
    goes through the writable PTE (the MMU does not read the VMA); the check at the
    end of the run still reports the PTE."""
    prog = write_escalation()
    store = next(i for i, o in enumerate(prog.ops) if o.op == "write" and o.addr == A + 8 * P)
    out = run(prog, engine, per_step_oracles=False)
    assert out.results[store] == 0 and out.results[store + 1] == [9]
    assert out.state["mm0.pte[0x208000]"] == "f0+8:dyw"
    assert_reported(out, "vma_write", "mm0.pte", A + 8 * P)
    for other in ("v6.14", "v6.16", "v6.16-c"):
        o = run(prog, other, per_step_oracles=False)
        assert o.verdict is Verdict.OK and o.results[store] == -14, other


# -- freed_folio -------------------------------------------------------------------------
def test_freed_folio_freed_while_mapped() -> None:
    runner = ran(program(*mapped()))
    k = runner.k
    folio = k.pfn_folio(k.folio_at(k.mms[0], A + P)[0].pfn)
    folio.freed = True                           # freed under its PTE
    del k.folios[folio.pfn]
    runner.oracle.page_table_check_free(folio)
    v = raised(runner, "freed_folio")
    assert v.field == f"mm0.pte[{A + P:#x}].page_table_check.freed_folio"


def test_freed_folio_a_pte_set_to_freed_memory() -> None:
    runner = ran(program(*mapped(), ("T0", "lru_add_drain", {}),
                         ("T0", "munmap", dict(addr=A + P, pages=1))))
    k = runner.k
    gone = k.next_pfn - 1                        # page 1's folio, which munmap freed
    assert not any(f.pfn <= gone < f.pfn + f.nr for f in k.folios.values())
    pt = k.mms[0].pte_tables[A >> 21]
    pt.entries[0] = mk_pte(gone, False)          # a stale pfn written back
    v = raised(runner, "freed_folio")
    assert v.field == f"mm0.pte[{A:#x}].page_table_check.freed_folio"
    assert f"{gone:#x}" in v.message


# -- writable_shared ---------------------------------------------------------------------
def test_writable_shared_fork_that_keeps_the_write_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    prog = program(*mapped(), ("T0", "fork", dict(child=1)), ("T1", "read", dict(addr=A)))
    assert run(prog, "v6.14").verdict is Verdict.OK
    monkeypatch.setattr(engine.mm.memory, "pte_wrprotect", lambda pte: pte)
    out = run(prog, "v6.14")
    assert_reported(out, "writable_shared", "mm0.pte", A)
    assert "mm1 0x200000" in out.crash.message


def test_writable_shared_one_mm_two_ptes() -> None:
    runner = ran(program(*mapped()))
    pt = runner.k.mms[0].pte_tables[A >> 21]
    pt.entries[1] = pte_mkwrite(pt.entries[0])   # page 1's PTE maps page 0 too
    v = raised(runner, "writable_shared")
    assert v.field == f"mm0.pte[{A:#x}].page_table_check.writable_shared"


# -- when it checks, what it costs --------------------------------------------------------
def test_a_held_ptl_defers_the_check() -> None:
    runner = ran(program(*mapped()))
    mm = runner.k.mms[0]
    mm.vmas[0].vm_flags &= ~VM_WRITE
    lock = mm.ptl(A >> 21)
    lock.owner = object()
    assert runner.oracle.ptc.check(force=True) is False
    lock.owner = None
    raised(runner, "vma_write")


def test_the_end_of_a_run_looks_even_without_a_lock_released() -> None:
    """Between steps the check looks at the tables only after a lock was released
    (kernel paths change entries under one); the check at the end always looks."""
    runner = ran(program(*mapped()))
    runner.k.mms[0].vmas[0].vm_flags &= ~VM_WRITE   # no lock taken
    assert runner.oracle.ptc.check() is True
    with pytest.raises(Violation) as exc:
        runner.oracle.check_end()
    assert exc.value.field == f"mm0.pte[{A:#x}].page_table_check.vma_write"


def test_every_check_has_a_test() -> None:
    names = {n for n in globals() if n.startswith("test_")}
    for check in CHECKS:
        assert any(n.startswith(f"test_{check}_") for n in names), check


def _index(ptc: PageTableCheck):
    return ({mm: seen.present for mm, seen in ptc._mms.items() if seen.present},
            ptc._by_pfn, ptc._by_head)


@pytest.mark.parametrize("engine", ["v6.14", "v6.15", "v5.17"])
def test_the_incremental_index_is_what_a_full_scan_finds(engine: str) -> None:
    rng = random.Random(15)
    for _ in range(25):
        runner = Runner(typical_program(rng), engine)
        out = runner.run()
        if out.verdict is not Verdict.OK:
            continue
        fresh = PageTableCheck(runner.k, runner.oracle._page_table_violation)
        assert fresh.check()
        assert _index(fresh) == _index(runner.oracle.ptc)


def test_no_corpus_program_trips_the_check_but_the_v6_15_escalation() -> None:
    """The real kernels never break these: a corpus run that trips one is a model
    bug or an oracle bug, except v6.15's restore across the VMA end."""
    for path in sorted(CORPUS_DIR.glob("*.json")):
        prog = load_entry(str(path))["program"]
        for name in sorted(set(KERNELS) - set(MUTANTS)):
            out = run(prog, name)
            tripped = out.crash is not None and ".page_table_check." in out.crash.field
            expected = (path.stem == "h12-vma-boundary-write-escalation"
                        and name in ("v6.15", "v6.15-c"))
            assert tripped == expected, (path.stem, name, out.crash)
