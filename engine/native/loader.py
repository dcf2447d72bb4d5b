"""The ctypes loader of the C batched path (``engine/native/cpath.c``).

The library is plain C with no Python API: setuptools builds it as the
extension ``engine.native._cpath`` when the package is installed, and this module
loads it with :class:`ctypes.CDLL`, declares ``argtypes`` and ``restype`` for
every symbol, and checks the ABI version the library exports.  A missing or
stale library raises :class:`CPathError` naming the path; nothing is called
before the check.  ``FOLIODIFF_CPATH_LIB`` names another build (CI loads the
``-fsanitize=address,undefined`` one this way).

``python3 -m engine.native build [--sanitize] [--out PATH]`` (:func:`main`)
compiles the library directly with the C compiler, for development and for
that CI build.
"""

from __future__ import annotations

import ctypes
import enum
import os
import pathlib
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from ctypes import POINTER, c_int32, c_int64, c_uint32, c_uint64, c_void_p

from engine.errors import CPathError
from engine.native.cflags import CFLAGS, SANITIZE_FLAGS

#: The ABI version this loader speaks; engine/native/cpath.c's FOLIODIFF_CPATH_ABI.
CPATH_ABI = 3
#: Environment variable naming the library to load instead of the built one.
CPATH_LIB_ENV = "FOLIODIFF_CPATH_LIB"

_HERE = pathlib.Path(__file__).resolve().parent
SOURCE = _HERE / "cpath.c"

EFAULT = 14
#: One PTE table's buffer: 512 words.
PTE_TABLE_BYTES = 512 * 8


class CPathKernel(enum.IntEnum):
    """enum cpath_kernel: which kernel's form of the unmap the C code runs."""

    CPATH_V6_14 = 0
    CPATH_V6_15 = 1
    CPATH_V6_16 = 2


class CPathFolioFlags(enum.IntFlag):
    """enum cpath_folio_flags: the folio flags the batch decision reads."""

    CPATH_FOLIO_ANON = 1 << 0
    CPATH_FOLIO_SWAPBACKED = 1 << 1


class TtuLazyfreeAction(enum.IntEnum):
    """enum ttu_lazyfree_action: what ttu_decide() did with a cleared batch."""

    TTU_LAZYFREE_DISCARD = 0
    TTU_LAZYFREE_ABORT_DIRTY = 1
    TTU_LAZYFREE_ABORT_REF_SWAPBACKED = 2
    TTU_LAZYFREE_ABORT_REF = 3


class PmdLazyfreeAction(enum.IntEnum):
    """enum pmd_lazyfree_action: what a test of __discard_anon_folio_pmd_locked() says."""

    PMD_LAZYFREE_DISCARD = 0
    PMD_LAZYFREE_REFUSE = 1
    PMD_LAZYFREE_ABORT_DIRTY = 2
    PMD_LAZYFREE_ABORT_REF = 3
    PMD_LAZYFREE_CLEAR = 4


class TtuClearOut(ctypes.Structure):
    """struct ttu_clear_out."""

    _fields_ = [("pteval", c_uint64), ("nr_pages", c_int64), ("fault_idx", c_int64),
                ("pte_reads", c_int64), ("pte_clears", c_int64)]


class TtuDecideOut(ctypes.Structure):
    """struct ttu_decide_out."""

    _fields_ = [("anon_delta", c_int64), ("fault_idx", c_int64)]


class PmdDiscardOut(ctypes.Structure):
    """struct pmd_discard_out."""

    _fields_ = [("set_dirty", c_int32), ("set_swapbacked", c_int32)]


class CPathCallOp(enum.IntEnum):
    """enum cpath_call_op: the entry point a recorded call went to (bench-c)."""

    CPATH_CALL_CLEAR = 0
    CPATH_CALL_DECIDE = 1
    CPATH_CALL_PMD_CHECK = 2
    CPATH_CALL_PMD_DECIDE = 3


class CPathCall(ctypes.Structure):
    """struct cpath_call: one recorded call, replayed by cpath_replay() (bench-c)."""

    _fields_ = [("table", c_uint64), ("nr_entries", c_int64), ("idx", c_int64),
                ("folio_nr", c_int64), ("vma_nr", c_int64), ("nr", c_int64),
                ("ref_count", c_int64), ("map_count", c_int64), ("folio_pfn", c_uint64),
                ("pteval", c_uint64), ("pmd", c_uint64), ("folio_flags", c_uint32),
                ("ttu_flags", c_uint32), ("kernel", c_int32), ("op", c_int32),
                ("folio_dirty", c_int32), ("droppable", c_int32)]


#: symbol -> (restype, argtypes): every function the library exports.
_SIGNATURES = {
    "foliodiff_cpath_abi": (c_uint32, []),
    "ttu_clear": (c_int64, [c_void_p, c_int64, c_int64, c_uint64, c_int64, c_uint32, c_int64,
                            c_uint32, c_int32, POINTER(TtuClearOut)]),
    "ttu_decide": (c_int32, [c_void_p, c_int64, c_int64, c_int64, c_uint64, c_int64, c_int64,
                             c_int32, c_int32, c_int32, POINTER(TtuDecideOut)]),
    "pmd_discard_check": (c_int32, [c_uint64, c_int32, c_int32, c_int32, POINTER(PmdDiscardOut)]),
    "pmd_discard_decide": (c_int32, [c_uint64, c_int64, c_int64, c_int32, c_int32, c_int32,
                                     POINTER(PmdDiscardOut)]),
    "cpath_replay": (c_int64, [POINTER(CPathCall), c_int64]),
}


def built_library_path() -> pathlib.Path:
    """Where ``pip install`` (setuptools ``build_ext``) puts the library:
    ``engine/native/_cpath<EXT_SUFFIX>``."""
    return _HERE / f"_cpath{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"


def library_path() -> pathlib.Path:
    """The library to load: ``$FOLIODIFF_CPATH_LIB`` if set, else the built one."""
    env = os.environ.get(CPATH_LIB_ENV)
    return pathlib.Path(env) if env else built_library_path()


class CPathLib:
    """The loaded library: its functions, typed, after the ABI check."""

    # The functions of _SIGNATURES, set by __init__ (ctypes checks and converts
    # the arguments against their argtypes).
    foliodiff_cpath_abi: Callable[[], int]
    ttu_clear: Callable[..., int]
    ttu_decide: Callable[..., int]
    pmd_discard_check: Callable[..., int]
    pmd_discard_decide: Callable[..., int]
    cpath_replay: Callable[..., int]

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        if not path.is_file():
            raise CPathError(str(path), "no such file (install the package with pip, or run "
                             "`python3 -m engine.native build`)")
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise CPathError(str(path), f"cannot be loaded: {exc}") from None
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                raise CPathError(str(path), f"lacks the symbol {name} (stale build?)") from None
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)
        abi = self.foliodiff_cpath_abi()
        if abi != CPATH_ABI:
            raise CPathError(str(path), f"has ABI version {abi}, this loader expects "
                             f"{CPATH_ABI} (stale build: reinstall or rebuild)")
        self._lib = lib


_loaded: dict[pathlib.Path, CPathLib] = {}


def load(path: pathlib.Path | None = None) -> CPathLib:
    """The C library at ``path`` (default :func:`library_path`), loaded once per path.

    Raise: :class:`CPathError` when it is missing, unloadable or stale.
    """
    path = path or library_path()
    lib = _loaded.get(path)
    if lib is None:
        lib = _loaded[path] = CPathLib(path)
    return lib


def build(out: pathlib.Path, sanitize: bool = False, cc: str | None = None) -> pathlib.Path:
    """Compile engine/native/cpath.c into the shared library ``out`` with the C compiler.

    With ``sanitize``, under AddressSanitizer and UBSan, aborting on the first
    report (-fno-sanitize-recover=all); load it with libasan preloaded.
    """
    cc = cc or os.environ.get("CC", "gcc")
    flags = CFLAGS + (SANITIZE_FLAGS if sanitize else [])
    cmd = [cc, *flags, "-shared", "-fPIC", "-o", str(out), str(SOURCE)]
    try:
        subprocess.run(cmd, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CPathError(str(out), f"build failed ({' '.join(cmd)}): {exc}") from None
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python3 -m engine.native",
                                 description="Build the C batched path's library.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile engine/native/cpath.c")
    b.add_argument("--sanitize", action="store_true", help="-fsanitize=address,undefined")
    b.add_argument("--out", type=pathlib.Path, default=None,
                   help=f"output path (default {built_library_path()})")
    args = ap.parse_args(argv)
    try:
        out = build(args.out or built_library_path(), sanitize=args.sanitize)
        if not args.sanitize:
            load(out)            # a sanitized build loads only with libasan preloaded
    except CPathError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0
