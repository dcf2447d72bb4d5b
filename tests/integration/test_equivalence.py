"""The code reports what commit f002dce reported, on 2,700 programs.

Speed work (issue 17) must not change what a run does nor what the
differential makes of it: for every program of :mod:`fuzz.equivalence`'s
set (the corpus, 2,000 generated programs, 600 inputs of a random campaign
from the seed corpus) both runs' outcomes and every divergence's signature,
classification, first operation and rules must be those of the snapshot
f002dce wrote (tests/data/outcome-snapshot-f002dce.json.gz, written with
``python tools/divergence_snapshot.py write``).

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

SNAPSHOT = pathlib.Path(__file__).parent.parent / "data" / "outcome-snapshot-f002dce.json.gz"
PAIRS = list(itertools.pairwise(ORDER))


@pytest.fixture(scope="module")
def before() -> dict:
    return json.loads(gzip.decompress(SNAPSHOT.read_bytes()))


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}..{b}" for a, b in PAIRS])
def test_outcomes_and_signatures_are_those_of_f002dce(before: dict, pair: tuple[str, str]) -> None:
    if pair != CAMPAIGN_PAIR and os.environ.get("FOLIODIFF_EQUIVALENCE") != "all":
        pytest.skip("FOLIODIFF_EQUIVALENCE=all runs every pair")
    a, b = pair
    mine = {k: v for k, v in before.items() if k.endswith(f" {a}..{b}")}
    assert len(mine) >= 2600       # the snapshot holds the whole set for the pair
    now = snapshot([pair])
    differ = compare(mine, now)
    assert not differ, "\n".join(f"{k}:\n  before {mine.get(k)}\n  now    {now.get(k)}"
                                 for k in differ[:10]) + f"\n{len(differ)} differ"
