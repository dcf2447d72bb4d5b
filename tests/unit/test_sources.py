"""The in-process sources: the initial pass over the seeds, hand-off hints, schedule energy."""

from __future__ import annotations

import itertools
import json
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings

from engine.corpus.entries import load_any
from engine.diff.differential import differential
from engine.execution.runner import YIELD_POINTS
from engine.mm.sched import YieldPoint
from engine.program.format import Preemption
from fuzz.bench import TARGETS, Target
from fuzz.codec import decode, encode
from fuzz.sources import (
    PCT_RUNS,
    PCT_RUNS_PLAIN,
    Corpus,
    Fuzzer,
    Source,
    seed_inputs,
)
from fuzz.strategies import programs, seeded_programs

CORPUS = pathlib.Path(__file__).resolve().parents[2] / "corpus"
H2 = load_any(str(CORPUS / "h2-shrinker-ref-between-ptes.json"))
H1 = H2.model_copy(update={"ops": H2.ops[:4], "schedule": []})   # no shrinker: a hand-off
H10 = load_any(str(CORPUS / "h10-pmd-thp-clean.json"))


def drive(source: Source, n: int) -> list:
    out = []
    for program in itertools.islice(source, n):
        source.learn(program, differential(program, "v6.14", "v6.15"))
        out.append(program)
    return out


def test_the_seeds_run_first_once_and_their_features_are_not_seen() -> None:
    seeds = [encode(H10), encode(H1)]
    source = Source(Fuzzer.RANDOM, "v6.14", 0, 0, Corpus(None, seeds))
    first = drive(source, 2)
    assert [encode(p) for p in first] == seeds
    # Their features do not count as this run's: a mutant that shows them is still new.
    assert source.corpus.inputs == seeds and source.corpus.seen == set()
    assert source.position == {"i": 0, "init": 2}
    later = drive(source, 5)
    assert source.position["i"] >= 5 and not source._initial_run
    assert source.corpus.seen and source.corpus.inputs[:2] == seeds
    assert later == drive(Source(Fuzzer.RANDOM, "v6.14", 0, 0, Corpus(None, seeds)), 7)[2:]


def test_a_source_resumed_past_its_first_base_does_not_run_the_seeds_again() -> None:
    seeds = [encode(H10), encode(H1)]
    source = Source(Fuzzer.RANDOM, "v6.14", 0, 0, Corpus(None, seeds), {"i": 3})
    next(iter(source))
    assert not source._initial_run and source.position == {"i": 4}


def test_a_seed_that_hands_off_queues_hinted_mutants_that_find_h2() -> None:
    source = Source(Fuzzer.RANDOM, "v6.14", 0, 0, Corpus(None, [encode(H1)]))
    drive(source, 1)
    assert len(source.hints) == 3
    # Half of the bases are hints while some wait; they carry the shrinker inside PAGEOUT.
    programs = drive(source, 12)
    hinted = [p for p in programs if any(o.op == "deferred_split_scan" for o in p.ops)]
    assert hinted
    spec = TARGETS[Target.SHRINKER_SWAPBACKED]
    assert any(spec.shows(p)[1] is not None for p in hinted)


def base_runs(fuzzer: Fuzzer, seeds: list[bytes], n: int) -> list[int]:
    """Programs yielded per base, for the first ``n`` bases after the seeds."""
    source = Source(fuzzer, "v6.14", 0, 0, Corpus(None, seeds))
    counts: dict[int, int] = {}
    for program in source:
        source.learn(program, differential(program, "v6.14", "v6.15"))
        if source._initial_run:
            continue
        i = source.position["i"]
        if i == n:
            return list(counts.values())
        counts[i] = counts.get(i, 0) + 1
    raise AssertionError("unreachable: sources do not end")


def test_pct_spends_the_full_search_only_on_new_or_hinted_bases() -> None:
    runs = base_runs(Fuzzer.PCT, [encode(H2)], 30)
    assert set(runs) <= {1, PCT_RUNS_PLAIN, PCT_RUNS}
    assert PCT_RUNS_PLAIN in runs and PCT_RUNS in runs


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(seeded_programs([H1, H10]))
def test_seeded_strategies_draw_valid_seeds_and_mutants(program) -> None:
    assert program.check() is program


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(programs(max_ops=12))
def test_drawn_programs_preempt_at_places_their_operations_reach(program) -> None:
    assert program.version == 2
    for e in program.schedule:
        assert e.at in YIELD_POINTS.get(program.ops[e.op].op, ()) + (YieldPoint.OP_END,)
        assert 1 <= e.nth <= (1 if e.at is YieldPoint.OP_END else 4)


def test_a_seeded_strategy_needs_seeds() -> None:
    with pytest.raises(ValueError, match="seeds"):
        seeded_programs([])


def test_a_format_1_seed_is_read_on_the_engine_given(tmp_path) -> None:
    """Step 20 of H2 is inside PAGEOUT's PTE walk on v6.14, at its freeze on v6.15 (one batch)."""
    data = H2.to_dict() | {"version": 1, "schedule": [[20, "S"]]}
    (tmp_path / "a-h2-v1.json").write_text(json.dumps({"program": data}))
    (tmp_path / "b-h10.json").write_text(H10.to_json())
    at = {}
    for engine in ("v6.14", "v6.15"):
        inputs = seed_inputs(tmp_path, reading=engine)
        assert decode(inputs[1]) == H10
        (e,) = decode(inputs[0]).schedule
        assert (e.op, e.nth, e.thread) == (3, 1, "S")
        at[engine] = e.at
    assert at == {"v6.14": YieldPoint.BETWEEN_PTES, "v6.15": YieldPoint.BEFORE_FREEZE}
    assert decode(seed_inputs(tmp_path)[0]).schedule == H2.schedule     # v6.14 by default
    assert H2.schedule == [Preemption(op=3, at=YieldPoint.BETWEEN_PTES, thread="S")]
