"""What the differential makes of a fixed set of programs (fuzz/equivalence.py):
the before/after check of a change that must not change behaviour.

    python tools/divergence_snapshot.py write OUT.json.gz [--pairs all|A..B,...]
                                        [--generated N] [--campaign N]
    python tools/divergence_snapshot.py compare BEFORE.json.gz AFTER.json.gz

``compare`` prints every entry that differs and exits 1 if any does.  A
``.gz`` path is read and written gzipped.  tests/data/outcome-snapshot-
f002dce.json.gz is the snapshot of commit f002dce on every adjacent pair,
the "before" of issue 17 (tests/integration/test_equivalence.py holds the
code to it); writing it took 16 min on one core.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import pathlib
import sys

from engine.kernels import ORDER
from fuzz.equivalence import compare, snapshot

ALL_PAIRS = list(itertools.pairwise(ORDER))


def read(path: pathlib.Path) -> dict:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return json.loads(data)


def _write(path: pathlib.Path, snap: dict) -> None:
    data = (json.dumps(snap, indent=0, sort_keys=True) + "\n").encode()
    path.write_bytes(gzip.compress(data, 9, mtime=0) if path.suffix == ".gz" else data)


def _pairs(text: str) -> list[tuple[str, str]]:
    if text == "all":
        return ALL_PAIRS
    out = []
    for item in text.split(","):
        a, sep, b = item.partition("..")
        if not sep:
            raise argparse.ArgumentTypeError(f"--pairs: {item!r} is not A..B")
        out.append((a, b))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("out", type=pathlib.Path)
    w.add_argument("--pairs", type=_pairs, default=ALL_PAIRS)
    w.add_argument("--generated", type=int, default=2000)
    w.add_argument("--campaign", type=int, default=600)
    c = sub.add_parser("compare")
    c.add_argument("before", type=pathlib.Path)
    c.add_argument("after", type=pathlib.Path)
    args = ap.parse_args(argv)
    if args.cmd == "write":
        snap = snapshot(args.pairs, args.generated, args.campaign)
        _write(args.out, snap)
        diverging = sum(1 for v in snap.values() if v["divergences"])
        print(f"{len(snap)} (program, pair) entries, {diverging} with divergences -> {args.out}")
        return 0
    before, after = (read(p) for p in (args.before, args.after))
    differ = compare(before, after)
    for k in differ:
        print(f"{k}:\n  before {before.get(k)}\n  after  {after.get(k)}")
    print(f"{len(before)} entries before, {len(after)} after, {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
