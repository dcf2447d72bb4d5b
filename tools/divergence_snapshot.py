"""What the differential makes of a fixed set of programs: a before/after check
for changes that must not change behaviour (issue 16's layout work).

The set: every corpus program on every adjacent engine pair, and 2,000
generated programs (1,000 of :func:`engine.typical_program`, 1,000
decoded from random bytes), each on every adjacent pair.  For each program and
pair the snapshot holds both verdicts and every divergence's signature,
classification, first operation and rules.  Seeds are fixed: a snapshot is a
function of the code.

    python tools/divergence_snapshot.py write OUT.json [--generated N]
    python tools/divergence_snapshot.py compare BEFORE.json AFTER.json

``compare`` prints every entry that differs and exits 1 if any does.  A
``.gz`` path is read and written gzipped.  tests/data/divergence-snapshot-
76bd301.json.gz is the snapshot of commit 76bd301 (the end of issue 15), the
"before" of issue 16; writing it took 5 min 51 s on one core.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import pathlib
import random
import sys

from engine import CORPUS_DIR, differential, load_any, typical_program
from engine.kernels import ORDER
from fuzz.codec import decode

PAIRS = list(itertools.pairwise(ORDER))


def _programs(generated: int):
    for path in sorted(CORPUS_DIR.glob("*.json")):
        yield f"corpus/{path.stem}", load_any(str(path))
    rng = random.Random(16)
    for i in range(generated // 2):
        yield f"typical/{i}", typical_program(rng)
    rng = random.Random(61)
    for i in range(generated - generated // 2):
        yield f"decoded/{i}", decode(bytes(rng.randrange(256) for _ in range(rng.randint(16, 160))))


def snapshot(generated: int) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name, program in _programs(generated):
        for a, b in PAIRS:
            report = differential(program, a, b)
            out[f"{name} {a}..{b}"] = {
                "verdicts": [report.a.verdict.value, report.b.verdict.value],
                "divergences": [[d.signature, d.classification.value, d.first_op,
                                 [r.name for r in d.rules]] for d in report.divergences]}
    return out


def _read(path: pathlib.Path) -> dict:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return json.loads(data)


def _write(path: pathlib.Path, snap: dict) -> None:
    data = (json.dumps(snap, indent=0, sort_keys=True) + "\n").encode()
    path.write_bytes(gzip.compress(data, 9, mtime=0) if path.suffix == ".gz" else data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("out", type=pathlib.Path)
    w.add_argument("--generated", type=int, default=2000)
    c = sub.add_parser("compare")
    c.add_argument("before", type=pathlib.Path)
    c.add_argument("after", type=pathlib.Path)
    args = ap.parse_args(argv)
    if args.cmd == "write":
        snap = snapshot(args.generated)
        _write(args.out, snap)
        diverging = sum(1 for v in snap.values() if v["divergences"])
        print(f"{len(snap)} (program, pair) entries, {diverging} with divergences -> {args.out}")
        return 0
    before, after = (_read(p) for p in (args.before, args.after))
    differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    for k in differ:
        print(f"{k}:\n  before {before.get(k)}\n  after  {after.get(k)}")
    print(f"{len(before)} entries before, {len(after)} after, {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
