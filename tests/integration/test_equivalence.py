"""The code reports what it reported before, on 2,700 programs.

Speed work (issue 17) must not change what a run does nor what the
differential makes of it: for every program of :mod:`fuzz.equivalence`'s
set (the corpus, 2,000 generated programs, 600 inputs of a random campaign
from the seed corpus) both runs' outcomes must be those of the snapshot
commit f002dce wrote (tests/data/outcome-snapshot-f002dce.json.gz), from
before that work, and every divergence's signature, classification, first
operation and rules those of the snapshot written when signatures last
changed on purpose (tests/data/outcome-snapshot-causes.json.gz: data losses
and invariants signed by cause, issue 18), each written with
``python tools/divergence_snapshot.py write``.  Issue 19 added two corpus programs
and the pairs after v6.16: both snapshots were rewritten on every pair for the
new set (2,647 programs, the campaign inputs shifted by the larger seed
corpus), after checking that on the old set every entry of the old pairs was
unchanged (the 10,225 non-campaign entries are identical in both).

The seed series' pair runs here (about 20 s); ``FOLIODIFF_EQUIVALENCE=all``
runs every adjacent pair (6 min).  A change meant to
change behaviour writes a new snapshot and says so in its commit.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import pathlib

import pytest

from engine.kernels import ORDER
from fuzz.equivalence import CAMPAIGN_PAIR, compare, snapshot

DATA = pathlib.Path(__file__).parent.parent / "data"
#: Outcomes: from before the speed work.
OUTCOMES = DATA / "outcome-snapshot-f002dce.json.gz"
#: Divergences: since they are signed by cause.
DIVERGENCES = DATA / "outcome-snapshot-causes.json.gz"
PAIRS = list(itertools.pairwise(ORDER))


def _load(path: pathlib.Path) -> dict:
    return json.loads(gzip.decompress(path.read_bytes()))


def _outcomes(snap: dict) -> dict:
    return {k: {"verdicts": v["verdicts"], "outcomes": v["outcomes"]} for k, v in snap.items()}


def _report(before: dict, now: dict) -> str:
    differ = compare(before, now)
    return "\n".join(f"{k}:\n  before {before.get(k)}\n  now    {now.get(k)}"
                     for k in differ[:10]) + f"\n{len(differ)} differ"


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}..{b}" for a, b in PAIRS])
def test_outcomes_and_signatures_are_those_of_the_snapshots(pair: tuple[str, str]) -> None:
    if pair != CAMPAIGN_PAIR and os.environ.get("FOLIODIFF_EQUIVALENCE") != "all":
        pytest.skip("FOLIODIFF_EQUIVALENCE=all runs every pair")
    a, b = pair
    outcomes, divergences = (
        {k: v for k, v in _load(path).items() if k.endswith(f" {a}..{b}")}
        for path in (OUTCOMES, DIVERGENCES))
    assert len(outcomes) >= 2600 and outcomes.keys() == divergences.keys()
    now = snapshot([pair])
    assert not compare(_outcomes(outcomes), _outcomes(now)), _report(_outcomes(outcomes),
                                                                     _outcomes(now))
    assert not compare(divergences, now), _report(divergences, now)
