"""What the differential makes of a fixed set of programs, to hold a change to
the same behaviour: the before/after check of work that must not change
outcomes (the layout of issue 16, the speed work of issue 17).

The set (:func:`programs`): every corpus program; generated programs, half
:func:`engine.typical_program`, half decoded from random bytes; and the
first programs a seeded random campaign of v6.14 vs v6.15 runs from the seed
corpus (:func:`fuzz.throughput.campaign_inputs`: seed mutants, hints and
their schedules).  Seeds are fixed: the set is a function of the code.

For each program and engine pair, :func:`entry` keeps both runs' outcomes
(verdict, results, the compared state, steps, cost, warnings, events, the
crash without source line numbers, as a digest) and every divergence's
signature, classification, first operation and rules.  A change that keeps
all of them did not change what foliodiff reports or stores.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator
from typing import Any

from engine import CORPUS_DIR, Outcome, Program, differential, load_any, typical_program
from fuzz.codec import decode
from fuzz.throughput import campaign_inputs

#: The pair whose campaign inputs join the set (the seed series' pair).
CAMPAIGN_PAIR = ("v6.14", "v6.15")

# A crash stack frame is "function (file:line)": line numbers move with any edit.
_LINE = re.compile(r":\d+\)$")


def programs(generated: int = 2000, campaign: int = 600) -> Iterator[tuple[str, Program]]:
    """The fixed set: (name, program), corpus first, then @generated generated
    programs, then @campaign campaign inputs."""
    for path in sorted(CORPUS_DIR.glob("*.json")):
        yield f"corpus/{path.stem}", load_any(str(path))
    rng = random.Random(16)
    for i in range(generated // 2):
        yield f"typical/{i}", typical_program(rng)
    rng = random.Random(61)
    for i in range(generated - generated // 2):
        yield f"decoded/{i}", decode(bytes(rng.randrange(256) for _ in range(rng.randint(16, 160))))
    if campaign:
        for i, program in enumerate(campaign_inputs(*CAMPAIGN_PAIR, campaign)):
            yield f"campaign/{i}", program


def _outcome_digest(o: Outcome) -> str:
    """A digest of everything a run reports but its cost in time and its trace."""
    crash = None
    if o.crash is not None:
        crash = o.crash.to_dict()
        crash["stack"] = [_LINE.sub(")", s) for s in crash["stack"]]
    body = {"verdict": o.verdict.value, "comparable": sorted(o.comparable().items()),
            "steps": o.steps, "cost": sorted(o.cost.items()), "crash": crash,
            "events": [[i, str(ev)] for i, ev in o.events], "op_ends": o.op_ends,
            "places": [[op, str(p.value), n] for op, p, n in o.places]}
    raw = json.dumps(body, sort_keys=True, default=repr).encode()
    return hashlib.sha256(raw).hexdigest()[:24]


def entry(program: Program, engine_a: str, engine_b: str) -> dict[str, Any]:
    """What the differential of @program on @engine_a vs @engine_b reports."""
    report = differential(program, engine_a, engine_b)
    return {"verdicts": [report.a.verdict.value, report.b.verdict.value],
            "outcomes": [_outcome_digest(report.a), _outcome_digest(report.b)],
            "divergences": [[d.signature, d.classification.value, d.first_op,
                             [r.name for r in d.rules]] for d in report.divergences]}


def snapshot(pairs: list[tuple[str, str]], generated: int = 2000,
             campaign: int = 600) -> dict[str, dict[str, Any]]:
    """``"name a..b" -> entry`` for every program of the set on every pair of @pairs."""
    return {f"{name} {a}..{b}": entry(program, a, b)
            for name, program in programs(generated, campaign) for a, b in pairs}


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The keys whose entries differ (or that only one snapshot holds), sorted."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
