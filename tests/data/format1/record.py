"""Record format-1 programs with schedules and their outcomes on the pre-format-2 code.

Run from a checkout of 5a80619 (the last commit with format 1):
    python3 gen_fixture.py OUT.json
"""
import hashlib
import json
import random
import sys

sys.path.insert(0, '.')
from engine.bench import typical_program
from engine.run import run
from fuzz.codec import decode


def digest(outcome):
    c = {k: (list(v) if isinstance(v, tuple) else v) for k, v in outcome.comparable().items()}
    return hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()[:16]

def record(p):
    return {"program": p.to_dict(),
            "outcomes": {e: {"verdict": (o := run(p, e)).verdict.value, "digest": digest(o)}
                         for e in ("v5.17", "v6.14", "v6.15", "v6.16")}}

out = []
rng = random.Random(7)
while len(out) < 40:
    p = typical_program(rng)
    if p.schedule and not any(op.op == "dma_write" for op in p.ops):
        out.append(record(p))
rng = random.Random(9)
while len(out) < 80:
    p = decode(bytes(rng.randrange(256) for _ in range(rng.randint(20, 120))))
    if p.schedule and len(p.ops) >= 3 and not any(op.op == "dma_write" for op in p.ops):
        out.append(record(p))
json.dump(out, open(sys.argv[1], "w"), indent=1)
print(len(out))
