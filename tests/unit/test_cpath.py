"""The C batched path: loading, bounds, crash outcomes, engine ids."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from array import array

import pytest

from engine.diff.rules import rules_between
from engine.errors import CPathError, FoliodiffError
from engine.execution.runner import run
from engine.kernels import KERNELS, base_version, resolve_engine
from engine.kernels.c_twins import CPathMixin
from engine.kernels.v6_15 import V6_15
from engine.mm.pgtable import mk_pte
from engine.native.loader import (
    CPATH_ABI,
    CPATH_LIB_ENV,
    EFAULT,
    SOURCE,
    CPathFolioFlags,
    CPathKernel,
    CPathLib,
    TtuClearOut,
    TtuDecideOut,
    TtuLazyfreeAction,
    load,
)
from engine.program.format import parse_program

A, B = 0x200000, 0x40000000
LAZYFREE = int(CPathFolioFlags.CPATH_FOLIO_ANON)
needs_cc = pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler")


def prog(ops):
    return parse_program({"version": 1, "threads": [{"name": "T0", "mm": 0},
                                                    {"name": "R", "kind": "kthread"}],
                          "ops": ops, "schedule": []})


#: H12: a lazyfree mTHP moved across a page-table boundary, then reclaimed.
STRADDLE = prog([dict(thread="T0", op="mmap", addr=A, pages=16, order=4),
                 dict(thread="T0", op="write", addr=A, pages=16, value=7),
                 dict(thread="T0", op="madvise", addr=A, pages=16, advice="MADV_FREE"),
                 dict(thread="T0", op="mmap", addr=B, pages=1024),
                 dict(thread="T0", op="mremap", addr=A, pages=16, new_addr=B + 0x200000 - 0x8000),
                 dict(thread="R", op="reclaim")])


# -- loading ------------------------------------------------------------------
def test_the_abi_versions_agree():
    assert re.search(rf"#define FOLIODIFF_CPATH_ABI {CPATH_ABI}\n", SOURCE.read_text())
    assert load().foliodiff_cpath_abi() == CPATH_ABI


def test_a_missing_library_is_an_error_naming_it(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere.so"
    monkeypatch.setenv(CPATH_LIB_ENV, str(missing))
    with pytest.raises(CPathError, match=re.escape(str(missing))) as exc:
        run(STRADDLE, "v6.15-c")
    assert isinstance(exc.value, FoliodiffError) and exc.value.path == str(missing)


def test_a_file_that_is_no_library_is_an_error(tmp_path):
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not an ELF file")
    with pytest.raises(CPathError, match="cannot be loaded"):
        CPathLib(junk)


def _compile(tmp_path, name: str, source: str):
    src, lib = tmp_path / f"{name}.c", tmp_path / f"{name}.so"
    src.write_text(source)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


@needs_cc
def test_a_stale_library_is_refused_by_its_abi_version(tmp_path):
    stale = SOURCE.read_text().replace(f"#define FOLIODIFF_CPATH_ABI {CPATH_ABI}\n",
                                       f"#define FOLIODIFF_CPATH_ABI {CPATH_ABI + 1}\n")
    lib = _compile(tmp_path, "stale", stale)
    with pytest.raises(CPathError, match=f"ABI version {CPATH_ABI + 1}.*expects {CPATH_ABI}"):
        CPathLib(lib)


@needs_cc
def test_a_library_lacking_a_symbol_is_refused(tmp_path):
    lib = _compile(tmp_path, "old", "unsigned foliodiff_cpath_abi(void) { return 1; }\n")
    with pytest.raises(CPathError, match="lacks the symbol ttu_clear"):
        CPathLib(lib)


# -- the C functions on a table buffer ------------------------------------------
def _table_with_guard(first_idx: int, pfn: int, nr: int):
    """A 512-entry table followed by 8 guard words the C code must never touch."""
    buf = array("Q", [0] * 512 + [0xdead] * 8)
    for i in range(nr):
        if first_idx + i < 512:
            buf[first_idx + i] = mk_pte(pfn + i, write=True, dirty=i == 3, young=False)
    return buf


def _clear(buf, idx, kernel, vma_nr=16):
    out = TtuClearOut()
    nr = load().ttu_clear(buf.buffer_info()[0], 512, idx, 0x1000, 16, LAZYFREE, vma_nr, 0,
                          int(kernel), ctypes.byref(out))
    return nr, out


def test_v6_15_scan_off_the_table_faults_without_touching_anything():
    buf = _table_with_guard(504, 0x1000, 16)          # pages 0-7 at the table's end
    before = buf.tolist()
    nr, out = _clear(buf, 504, CPathKernel.CPATH_V6_15)
    assert nr == -EFAULT and out.fault_idx == 512
    assert out.pte_reads == 7                          # 505..511 read, 512 refused
    assert buf.tolist() == before


def test_v6_16_batch_stops_at_the_table_end():
    buf = _table_with_guard(504, 0x1000, 16)
    nr, out = _clear(buf, 504, CPathKernel.CPATH_V6_16)
    assert nr == 8 and out.nr_pages == 8 and out.pte_clears == 8
    assert buf[504:512].tolist() == [0] * 8 and buf[512:].tolist() == [0xdead] * 8
    assert out.pteval == mk_pte(0x1000, write=True, dirty=True, young=False)   # dirty merged


def test_v6_15_full_batch_clears_and_restores_with_set_ptes():
    buf = _table_with_guard(16, 0x1000, 16)
    nr, out = _clear(buf, 16, CPathKernel.CPATH_V6_15)
    assert nr == 16 and buf[16:32].tolist() == [0] * 16
    dec = TtuDecideOut()
    action = load().ttu_decide(buf.buffer_info()[0], 512, 16, nr, out.pteval, 2, 16, 1, 0,
                               int(CPathKernel.CPATH_V6_15), ctypes.byref(dec))
    assert action == TtuLazyfreeAction.TTU_LAZYFREE_ABORT_DIRTY and dec.anon_delta == 0
    # set_ptes(): every PTE gets the merged dirty bit
    assert buf[16:32].tolist() == [mk_pte(0x1000 + i, True, True, False) for i in range(16)]
    action = load().ttu_decide(buf.buffer_info()[0], 512, 16, nr, out.pteval, 17, 16, 0, 0,
                               int(CPathKernel.CPATH_V6_15), ctypes.byref(dec))
    assert action == TtuLazyfreeAction.TTU_LAZYFREE_DISCARD and dec.anon_delta == -16


def test_index_outside_the_table_faults():
    buf = _table_with_guard(0, 0x1000, 1)
    for idx in (-1, 512):
        nr, out = _clear(buf, idx, CPathKernel.CPATH_V6_14)
        assert nr == -EFAULT and out.fault_idx == idx
    assert buf[512:].tolist() == [0xdead] * 8


# -- the engines -----------------------------------------------------------------
def test_out_of_bounds_scan_is_the_same_crash_as_the_python_model():
    py, c = run(STRADDLE, "v6.15"), run(STRADDLE, "v6.15-c")
    assert c.verdict.value == "crash"
    for f in ("kind", "field", "message", "op_index", "thread", "step", "function"):
        assert getattr(c.crash, f) == getattr(py.crash, f), f
    assert c.comparable() == py.comparable()
    assert [s.split(" ")[0] for s in c.crash.stack[:2]] == ["ptep_get", "_fault"]
    assert run(STRADDLE, "v6.16-c").comparable() == run(STRADDLE, "v6.16").comparable()


def test_c_engine_ids_answer_as_their_versions():
    for v in ("v6.14", "v6.15", "v6.16"):
        assert resolve_engine(f"{v}-c") == f"{v}-c"
        assert base_version(f"{v}-c") == v
        assert issubclass(KERNELS[f"{v}-c"], KERNELS[v])
    assert rules_between("v6.14-c", "v6.15-c") == rules_between("v6.14", "v6.15")
    assert rules_between("v6.15", "v6.15-c") == []


def test_a_twin_running_the_wrong_kernel_is_told_apart(monkeypatch):
    """The equality checks can fail: a v6.15 twin running v6.16's batching does not crash."""
    class WrongTwin(CPathMixin, V6_15):
        VERSION = "v6.15-wrong"
        BASE_VERSION = "v6.15"
        CPATH_KERNEL = CPathKernel.CPATH_V6_16
    monkeypatch.setitem(KERNELS, "v6.15-wrong", WrongTwin)
    assert run(STRADDLE, "v6.15-wrong").comparable() != run(STRADDLE, "v6.15").comparable()
