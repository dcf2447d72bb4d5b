"""This checkout's speed against an earlier commit's, side by side in one run.

    python tools/speed_side_by_side.py [--before f002dce] [--rounds 3]
                                       [--inputs 600] [--campaign-seconds 60]
                                       [--instructions 100]

The inputs are the same for both trees: this checkout records the first
``--inputs`` programs a random campaign of v6.14,v6.15 runs from this
checkout's seed corpus (:func:`fuzz.throughput.campaign_inputs`: the seeds,
their mutants, hints and schedules) into a JSON file, which each tree reads
with its own ``engine.parse_program``.  The earlier commit is checked out
into a scratch worktree (its C path built there).  Each round runs,
alternately for the two trees, each in a fresh process so that neither
warms the other:

- the campaign-input benchmark: one timed pass of the tree's
  ``engine.differential`` over the recorded programs (differential exec/s),
  and one of its ``engine.run`` on both engines (single runs/s);
- with ``--campaign-seconds S`` > 0, a random and an atheris campaign of S
  seconds from this checkout's seed corpus (one worker, embedded SQLite
  store in a scratch directory, campaign seed = round number): their search
  executions.  An atheris campaign's count depends on where its stream
  wanders as much as on speed (libFuzzer's entropic schedule weighs inputs
  by their run time, so streams part with timing: 10 s campaigns of one
  tree ranged 362-965 executions by seed), hence one seed per round and
  medians over rounds.

With ``--instructions N`` > 0 it also counts, under ``valgrind
--tool=callgrind``, the instructions each tree spends on the differentials
of the first N recorded programs (a run of N minus a run of none: imports
and start-up cancel out).  Instruction counts do not depend on what else
the machine does, so they give the ratio that time measures noisily.

It prints every measurement, the medians and the ratios (this / before).
Alternating rounds put a busy moment of a shared machine on both trees.
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

_BENCH = """
import json, sys, time
from engine import differential, parse_program, run
programs = [parse_program(p) for p in json.load(open(sys.argv[1]))]
n = int(sys.argv[2])
t0 = time.perf_counter()
for p in programs[:n]:
    differential(p, "v6.14", "v6.15")
diff = time.perf_counter() - t0
t0 = time.perf_counter()
for p in programs[:n]:
    run(p, "v6.14"), run(p, "v6.15")
single = time.perf_counter() - t0
print(json.dumps({"differential": n / diff, "single": 2 * n / single}))
"""

#: The differentials of the first N recorded programs (argv[2]), after one to warm up.
_COUNTED = """
import json, sys
from engine import differential, parse_program
programs = [parse_program(p) for p in json.load(open(sys.argv[1]))]
differential(programs[0], "v6.14", "v6.15")
for p in programs[:int(sys.argv[2])]:
    differential(p, "v6.14", "v6.15")
"""


def _record(inputs: int, scratch: Path) -> Path:
    """The first @inputs programs of a random campaign from this checkout's seeds, as JSON."""
    out = scratch / "inputs.json"
    code = ("import json, sys\nfrom fuzz.throughput import campaign_inputs\n"
            "ps = campaign_inputs('v6.14', 'v6.15', int(sys.argv[2]))\n"
            "json.dump([p.model_dump(mode='json') for p in ps], open(sys.argv[1], 'w'))\n")
    subprocess.run([sys.executable, "-c", code, str(out), str(inputs)], cwd=HERE, env=_env(HERE),
                   check=True)
    return out


def _tree(before: str, scratch: Path) -> Path:
    """A worktree of @before with its C path built."""
    tree = scratch / "before"
    subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", "-q", str(tree), before],
                   check=True)
    subprocess.run([sys.executable, "-m", "engine.native", "build"], cwd=tree, check=True,
                   capture_output=True)
    return tree


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "300"}


def _bench(tree: Path, programs: Path, inputs: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _BENCH, str(programs), str(inputs)], cwd=tree,
                         env=_env(tree), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _instructions(tree: Path, programs: Path, n: int) -> float:
    """Millions of instructions per differential in @tree (callgrind: N runs minus none)."""
    counts = []
    for k in (0, n):
        out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                              os.path.realpath(sys.executable), "-c", _COUNTED, str(programs),
                              str(k)], cwd=tree, env=_env(tree), capture_output=True, text=True,
                             check=True)
        m = re.search(r"refs:\s*([\d,]+)", out.stderr)
        if m is None:
            raise SystemExit(f"callgrind printed no count in {tree}:\n{out.stderr[-2000:]}")
        counts.append(int(m.group(1).replace(",", "")))
    return (counts[1] - counts[0]) / n / 1e6


def _campaign(tree: Path, fuzzer: str, seconds: int, seed: int, scratch: Path) -> int:
    where = Path(tempfile.mkdtemp(dir=scratch))
    out = subprocess.run([sys.executable, "-m", "service.cli", "fuzz", "--no-live", "--fuzzer", fuzzer,
                          "--engines", "v6.14,v6.15", "--time", str(seconds), "--seed", str(seed),
                          "--seeds", str(HERE / "corpus"), "--db", f"sqlite:///{where}/s.db"],
                         cwd=where, env=_env(tree), capture_output=True, text=True)
    m = re.search(r"campaign \d+ \w+: ([\d,]+) executions", out.stdout)
    if m is None:
        raise SystemExit(f"{fuzzer} campaign in {tree} said no executions:\n"
                         f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="f002dce", help="the earlier commit")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--inputs", type=int, default=600, help="campaign inputs benchmarked")
    ap.add_argument("--campaign-seconds", type=int, default=60,
                    help="length of each campaign (0: no campaigns)")
    ap.add_argument("--instructions", type=int, default=0,
                    help="count the instructions of this many differentials (0: do not)")
    args = ap.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="foliodiff-speed-"))
    trees = {"before": _tree(args.before, scratch), "this": HERE}
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    try:
        programs = _record(args.inputs, scratch)
        if args.instructions:
            for name, tree in trees.items():
                figures[name]["M instructions per differential"] = [
                    _instructions(tree, programs, args.instructions)]
        for r in range(args.rounds):
            for name, tree in trees.items():
                got = figures[name]
                bench = _bench(tree, programs, args.inputs)
                got.setdefault("differential exec/s", []).append(bench["differential"])
                got.setdefault("single runs/s", []).append(bench["single"])
                if args.campaign_seconds:
                    for fuzzer in ("random", "atheris"):
                        got.setdefault(f"{fuzzer} {args.campaign_seconds} s executions", []).append(
                            _campaign(tree, fuzzer, args.campaign_seconds, r, scratch))
                print(f"round {r} {name}: " + ", ".join(f"{k} {v[-1]:,.1f}" for k, v in got.items()),
                      flush=True)
    finally:
        subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force",
                        str(trees["before"])], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nmedians of {args.rounds} rounds (before = {args.before}):")
    for what in figures["this"]:
        b, t = (statistics.median(figures[n][what]) for n in ("before", "this"))
        if "instructions" in what:      # fewer is faster: the speedup is before / this
            print(f"  {what}: before {b:,.1f}, this {t:,.1f}, speedup (before / this) {b / t:.2f}")
        else:
            print(f"  {what}: before {b:,.1f}, this {t:,.1f}, ratio (this / before) {t / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
