"""Issue 17: what compiling the engine with mypyc buys, side by side in one run.

    python tools/mypyc_trial.py [--set model|leaves] [--rounds 3] [--scratch DIR]

Copies this checkout (``git archive HEAD``, the built C path beside it) to a
scratch tree, makes there the few source changes mypyc needs (below), compiles
a module set with the mypyc of the ``[test]`` extra (mypy 2.4.1) in place, then
alternates the two trees, a fresh process per pass, over the campaign inputs
(:func:`fuzz.throughput.campaign_inputs`, v6.14 vs v6.15, 300 programs):
differential exec/s and single-run (no per-step oracles) exec/s, medians and
ratios compiled / pure.  Last, both trees run every program on v6.14, v6.15,
v6.16 and v6.15-c and the differential, and the outcomes are compared.

Module sets:

- ``leaves``: engine/mm/pgtable.py, folio.py, sched.py;
- ``model``: engine/mm, engine/kernels and engine/execution but for what cannot
  be compiled or must stay interpreted: events.py (``class Event(str)``:
  builtin base), state.py (the mixins' Protocol base would make them
  extension classes), flags.py (``cast(TTU, int(...))``: mypyc checks the cast
  and raises TypeError at import), provenance.py (mypyc 2.4.1 crashes on it,
  and it needs Python frames anyway).

Changes made in the scratch tree only (mypyc refuses the checkout as it is):

- every kernel class and concept mixin gets ``@mypyc_attr(native_class=False)``:
  ``Kernel`` has eleven mixin bases and V6_12 / V7_3 / the C twins put a mixin
  before their version, which native classes (one base, traits after it)
  cannot express without reordering the MRO; tests monkeypatch version
  classes, which native classes refuse;
- ``PARENT = "..."`` becomes ``PARENT: str | None = "..."`` in each version;
- ``SwapDevice.PAGES`` is annotated ``ClassVar[int]``;
- ``continue`` inside ``try/finally`` (mprotect.py change_protection) becomes
  if/else;
- the class-body aliases ``folio_remove_rmap_pte = folio_remove_rmap_ptes``
  and ``folio_pte_batch_flags = folio_pte_batch`` become methods that call
  them (mypyc's non-native classes raise KeyError at import on the alias; and
  the alias exists so that crash stacks name one frame).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

_KERNEL_CLASSES = {
    "Kernel", "CPathMixin", "V6_14C", "V6_15C", "V6_16C", "V6_16NoVmaBound", "LazyfreePmdSplitOnly",
    "V5_17", "V5_18", "V6_12", "V6_14", "V6_15", "V6_16", "V6_19", "V6_19_Y",
    "LazyfreeBatchRespectsWrite", "V7_0", "V7_2", "V7_3", "ForkMixin", "GupMixin",
    "HugeMemoryMixin", "LruMixin", "MadviseMixin", "MemoryMixin", "MmapMixin", "MprotectMixin",
    "MremapMixin", "RmapMixin", "VmscanMixin"}
_INTERPRETED = ("events.py", "state.py", "flags.py", "provenance.py")

_INPUTS = """
import pickle, sys
from fuzz.throughput import campaign_inputs
pickle.dump(campaign_inputs("v6.14", "v6.15", 300), open(sys.argv[1], "wb"))
"""

_BENCH = """
import json, pickle, sys, time
from fuzz.throughput import fuzzing_gc
from engine import differential, run
import engine.diff.differential as dd
import engine.mm.pgtable as pg
# Provenance replays (sys.setprofile) stay pure Python in any design, and take
# 3 ms of 1.8 s on these inputs: left out of both trees.
dd.cause_of = lambda *a, **k: None
fuzzing_gc()
progs = pickle.load(open(sys.argv[1], "rb"))
t0 = time.perf_counter()
for p in progs:
    differential(p, "v6.14", "v6.15")
d = len(progs) / (time.perf_counter() - t0)
t0 = time.perf_counter()
for p in progs:
    run(p, "v6.14", per_step_oracles=False)
    run(p, "v6.15", per_step_oracles=False)
k = 2 * len(progs) / (time.perf_counter() - t0)
print(json.dumps({"differential": d, "kernel_runs": k, "compiled": pg.__file__.endswith(".so")}))
"""

_DUMP = """
import json, pickle, sys
from engine import differential, run
import engine.diff.differential as dd
dd.cause_of = lambda *a, **k: None
progs = pickle.load(open(sys.argv[1], "rb"))
out = []
for p in progs:
    for e in ("v6.14", "v6.15", "v6.16", "v6.15-c"):
        out.append([e, run(p, e).to_dict()])
    r = differential(p, "v6.14", "v6.15")
    out.append(["differential", [(d.signature, str(d.classification)) for d in r.divergences]])
json.dump(out, open(sys.argv[2], "w"), default=str)
"""


def _patch(tree: Path) -> None:
    """The source changes mypyc needs, in the scratch tree only."""
    deco = re.compile(r"^class (\w+)", re.M)
    for f in [*tree.glob("engine/kernels/*.py"), *tree.glob("engine/mm/*.py")]:
        s = f.read_text()
        t = deco.sub(lambda m: (f"@mypyc_attr(native_class=False)\nclass {m.group(1)}"
                                if m.group(1) in _KERNEL_CLASSES else m.group(0)), s)
        t = re.sub(r"^    PARENT = (.*)$", r"    PARENT: str | None = \1", t, flags=re.M)
        if t != s:
            t = t.replace("from __future__ import annotations\n",
                          "from __future__ import annotations\n\n"
                          "from mypy_extensions import mypyc_attr\n", 1)
            f.write_text(t)
    _sub(tree / "engine/mm/swapfile.py", [
        ("from __future__ import annotations\n",
         "from __future__ import annotations\n\nfrom typing import ClassVar\n"),
        ("    PAGES = 1 << 30", "    PAGES: ClassVar[int] = 1 << 30")])
    _sub(tree / "engine/mm/mprotect.py", [(
        """                if pmd_idx in mm.pmd_huge:
                    mm.pmd_huge[pmd_idx] = pte_wrprotect(mm.pmd_huge[pmd_idx])
                    continue
                pt = mm.pte_tables.get(pmd_idx)
                if pt is None:
                    continue
                lo = max(vma.vm_start, pmd_idx << PMD_SHIFT)
                hi = min(vma.vm_end, (pmd_idx + 1) << PMD_SHIFT)
                for a in range(lo, hi, PAGE_SIZE):
                    i = pte_index(a)
                    if pte_present(pt.entries[i]):
                        pt.entries[i] = pte_wrprotect(pt.entries[i])
""",
        """                if pmd_idx in mm.pmd_huge:
                    mm.pmd_huge[pmd_idx] = pte_wrprotect(mm.pmd_huge[pmd_idx])
                else:
                    pt = mm.pte_tables.get(pmd_idx)
                    if pt is not None:
                        lo = max(vma.vm_start, pmd_idx << PMD_SHIFT)
                        hi = min(vma.vm_end, (pmd_idx + 1) << PMD_SHIFT)
                        for a in range(lo, hi, PAGE_SIZE):
                            i = pte_index(a)
                            if pte_present(pt.entries[i]):
                                pt.entries[i] = pte_wrprotect(pt.entries[i])
""")])
    _sub(tree / "engine/mm/rmap.py", [(
        "    folio_remove_rmap_pte = folio_remove_rmap_ptes\n",
        "    def folio_remove_rmap_pte(self, folio: Folio, first: int, nr: int, vma: VmArea) -> None:\n"
        "        self.folio_remove_rmap_ptes(folio, first, nr, vma)\n")])
    _sub(tree / "engine/kernels/v6_15.py", [(
        "    folio_pte_batch_flags = folio_pte_batch\n",
        "    def folio_pte_batch_flags(self, folio: Folio, pt: PageTable, idx: int, pte: int,\n"
        "                              max_nr: int, flags: FPB = FPB_NONE) -> int:\n"
        "        return self.folio_pte_batch(folio, pt, idx, pte, max_nr, flags)\n")])


def _sub(f: Path, pairs: list[tuple[str, str]]) -> None:
    s = f.read_text()
    for old, new in pairs:
        if old not in s:
            raise SystemExit(f"{f}: the text to change is gone (the engine changed): {old[:60]!r}")
        s = s.replace(old, new, 1)
    f.write_text(s)


def _modules(tree: Path, which: str) -> list[str]:
    if which == "leaves":
        return ["engine/mm/pgtable.py", "engine/mm/folio.py", "engine/mm/sched.py"]
    files = [*tree.glob("engine/mm/*.py"), *tree.glob("engine/kernels/*.py"),
             *tree.glob("engine/execution/*.py")]
    return sorted(str(f.relative_to(tree)) for f in files if f.name not in _INTERPRETED)


def _py(tree: Path, code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=tree, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(tree)})
    if out.returncode:
        raise SystemExit(f"in {tree}:\n{out.stderr[-3000:]}")
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", choices=("model", "leaves"), default="model")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scratch", help="keep the scratch trees here (default: a temporary directory)")
    args = ap.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="mypyc-trial-"))
    tree = scratch / "compiled"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(HERE), "archive", "HEAD"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    for lib in (HERE / "engine/native").glob("_cpath*.so"):
        shutil.copy(lib, tree / "engine/native")
    if args.set == "model":
        _patch(tree)
    mods = _modules(tree, args.set)
    build = subprocess.run(["mypyc", *mods], cwd=tree, capture_output=True, text=True)
    if build.returncode:
        raise SystemExit(f"mypyc failed:\n{build.stdout[-4000:]}{build.stderr[-2000:]}")
    print(f"compiled {len(mods)} modules into {tree}", flush=True)
    inputs = scratch / "inputs.pkl"
    _py(HERE, _INPUTS, str(inputs))
    res: dict[str, list[dict[str, float]]] = {"pure": [], "compiled": []}
    for r in range(args.rounds):
        for name, where in (("pure", HERE), ("compiled", tree)):
            one = json.loads(_py(where, _BENCH, str(inputs)).strip().splitlines()[-1])
            if one["compiled"] != (name == "compiled"):
                raise SystemExit(f"{where}: pgtable compiled={one['compiled']}, expected {name}")
            res[name].append(one)
            print(f"round {r} {name:8} differential {one['differential']:7.1f}/s  "
                  f"kernel runs {one['kernel_runs']:7.1f}/s", flush=True)
    med = {n: {k: statistics.median(x[k] for x in v) for k in ("differential", "kernel_runs")}
           for n, v in res.items()}
    for k in ("differential", "kernel_runs"):
        print(f"median {k}: pure {med['pure'][k]:.1f}/s, compiled {med['compiled'][k]:.1f}/s, "
              f"ratio {med['compiled'][k] / med['pure'][k]:.2f}x")
    _py(HERE, _DUMP, str(inputs), str(scratch / "pure.json"))
    _py(tree, _DUMP, str(inputs), str(scratch / "compiled.json"))
    a = json.loads((scratch / "pure.json").read_text())
    b = json.loads((scratch / "compiled.json").read_text())
    differ: dict[str, int] = {}
    for (ea, xa), (_, xb) in zip(a, b, strict=True):
        if xa != xb:
            differ[ea] = differ.get(ea, 0) + 1
    print(f"outcomes compared: {len(a)}; differing by engine: {differ or 'none'}")


if __name__ == "__main__":
    main()
