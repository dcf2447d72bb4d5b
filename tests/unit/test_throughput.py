"""The campaign-input benchmark: the stream it records is a campaign's, and its layers add up."""

from __future__ import annotations

import pytest

from engine import CORPUS_DIR
from fuzz.codec import encode
from fuzz.sources import seed_inputs
from fuzz.throughput import bench_campaign_inputs, campaign_inputs


def test_the_recorded_stream_starts_with_the_seeds_and_is_reproducible():
    seeds = seed_inputs(CORPUS_DIR, reading="v6.14")
    programs = campaign_inputs("v6.14", "v6.15", len(seeds) + 30, seed=3)
    assert [encode(p) for p in programs[:len(seeds)]] == seeds
    mutants = programs[len(seeds):]
    assert len(mutants) == 30 and any(encode(p) not in seeds for p in mutants)
    again = campaign_inputs("v6.14", "v6.15", len(seeds) + 30, seed=3)
    assert [encode(p) for p in again] == [encode(p) for p in programs]
    other = campaign_inputs("v6.14", "v6.15", len(seeds) + 30, seed=4)
    assert [encode(p) for p in other[len(seeds):]] != [encode(p) for p in mutants]


def test_the_layers_share_the_differential_time():
    res = bench_campaign_inputs("v6.14", "v6.15", count=20, repeat=1)
    assert res["campaign_inputs"] == 20
    shares = [v for k, v in res.items() if k.startswith("campaign_time_pct_")]
    assert len(shares) == 4 and sum(shares) == pytest.approx(100.0, abs=0.5)
    assert res["campaign_time_pct_kernel"] > 0
    assert res["campaign_differential_exec_per_s_median"] > 0
