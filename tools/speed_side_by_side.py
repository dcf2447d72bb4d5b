"""This checkout's speed against an earlier commit's, side by side in one run.

    python tools/speed_side_by_side.py [--before f002dce] [--rounds 3]
                                       [--inputs 600] [--campaign-seconds 60]

The earlier commit is checked out into a scratch worktree (its C path
built there).  Each round runs, alternately for the two trees, each in a
fresh process so that neither warms the other:

- the campaign-input benchmark (:func:`fuzz.throughput.bench_campaign_inputs`
  on v6.14,v6.15; a commit that predates it gets this checkout's
  fuzz/throughput.py, which uses only the engine's public surface): differential
  and single-run exec/s;
- with ``--campaign-seconds S`` > 0, a random and an atheris campaign of S
  seconds from the seed corpus (one worker, embedded SQLite store in a
  scratch directory, campaign seed = round number): their search
  executions.  An atheris campaign's count depends on where its stream
  wanders as much as on speed (libFuzzer's entropic schedule weighs inputs
  by their run time, so streams part with timing: 10 s campaigns of one
  tree ranged 362-965 executions by seed), hence one seed per round and
  medians over rounds.

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
import json, sys
from fuzz.throughput import bench_campaign_inputs
r = bench_campaign_inputs("v6.14", "v6.15", count={inputs}, repeat=1)
print(json.dumps(r))
"""


def _tree(before: str, scratch: Path) -> Path:
    """A worktree of @before with its C path built, and this checkout's throughput bench."""
    tree = scratch / "before"
    subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", "-q", str(tree), before],
                   check=True)
    subprocess.run([sys.executable, "-m", "engine.native", "build"], cwd=tree, check=True,
                   capture_output=True)
    if not (tree / "fuzz" / "throughput.py").exists():
        shutil.copy(HERE / "fuzz" / "throughput.py", tree / "fuzz" / "throughput.py")
    return tree


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "300"}


def _bench(tree: Path, inputs: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _BENCH.format(inputs=inputs)], cwd=tree,
                         env=_env(tree), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _campaign(tree: Path, fuzzer: str, seconds: int, seed: int, scratch: Path) -> int:
    where = Path(tempfile.mkdtemp(dir=scratch))
    out = subprocess.run([sys.executable, "-m", "service.cli", "fuzz", "--no-live", "--fuzzer", fuzzer,
                          "--engines", "v6.14,v6.15", "--time", str(seconds), "--seed", str(seed),
                          "--seeds", str(tree / "corpus"), "--db", f"sqlite:///{where}/s.db"],
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
    args = ap.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="foliodiff-speed-"))
    trees = {"before": _tree(args.before, scratch), "this": HERE}
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    try:
        for r in range(args.rounds):
            for name, tree in trees.items():
                got = figures[name]
                bench = _bench(tree, args.inputs)
                got.setdefault("differential exec/s", []).append(
                    bench["campaign_differential_exec_per_s_median"])
                got.setdefault("single runs/s", []).append(bench["campaign_single_run_per_s_median"])
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
        print(f"  {what}: before {b:,.1f}, this {t:,.1f}, ratio {t / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
