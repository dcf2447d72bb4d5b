"""Schedule search: random, PCT, delay-bounded and bounded-exhaustive runs replay
exactly; the exhaustive enumeration resumes where it stopped."""

from __future__ import annotations

import json
import pathlib
import random

import pytest

from engine.corpus.entries import load_any
from engine.diff.differential import differential
from engine.execution.oracle import Verdict
from engine.execution.runner import Runner, run
from fuzz.schedule import (
    Exhaustive,
    ExhaustiveStateError,
    delay_schedule,
    pct_schedule,
    random_schedule,
)

CORPUS = pathlib.Path(__file__).resolve().parents[2] / "corpus"


def corpus(name: str):
    return load_any(str(CORPUS / f"{name}.json"))


H2 = corpus("h2-shrinker-ref-between-ptes")
H5 = corpus("h5-dma-into-lazyfree")
H2_SIGNATURE = differential(H2, "v6.14", "v6.15").divergences[0].signature_id


def h2_found(program) -> bool:
    return any(d.signature_id == H2_SIGNATURE
               for d in differential(program, "v6.14", "v6.15").divergences)


def test_h2_needs_its_schedule():
    # Otherwise the searches below would find it by accident.
    assert not h2_found(H2.model_copy(update={"schedule": []}))


def replays_itself(program, engine) -> None:
    """Replayed, ``program`` leaves the op-order policy at exactly the places its
    schedule names, for the threads it names: it re-records as itself."""
    runner = Runner(program, engine, chooser=lambda step, names, default: default)
    out = runner.run()
    assert out.verdict is not Verdict.HARNESS, out.crash
    assert runner.schedule_taken == program.schedule
    assert out.to_dict() == run(program, engine).to_dict()


@pytest.mark.parametrize("seed", range(5))
def test_random_schedules_are_seeded_and_replay(seed):
    a = random_schedule(H2, "v6.15", random.Random(seed))
    b = random_schedule(H2, "v6.15", random.Random(seed))
    assert a == b and a.schedule
    replays_itself(a, "v6.15")


def schedule_json(program) -> str:
    return json.dumps(program.to_dict()["schedule"])


def test_random_schedules_differ_between_seeds():
    assert len({schedule_json(random_schedule(H5, "v6.15", random.Random(s)))
                for s in range(10)}) > 3


def test_pct_depth_one_is_a_fixed_priority_order():
    # One priority per thread, no change point: a thread, once it runs, runs to completion
    # unless it blocks; the schedule only ever switches where a thread finished.
    p = pct_schedule(H2, "v6.14", 1, random.Random(3))
    assert len(p.schedule) <= 1


def test_pct_depth_three_finds_the_shrinker_reference_race():
    # The race needs three orderings: T0 discards PTE0, then the shrinker takes its
    # reference, then T0 reads the refcount before the shrinker drops it.
    hits = [s for s in range(120) if h2_found(pct_schedule(H2, "v6.14", 3, random.Random(s)))]
    assert hits, "PCT at depth 3 never found the H2 race in 120 runs"
    p = pct_schedule(H2, "v6.14", 3, random.Random(hits[0]))
    assert h2_found(p)
    replays_itself(p, "v6.14")


def test_pct_rejects_depth_zero():
    with pytest.raises(ValueError, match="depth"):
        pct_schedule(H2, "v6.14", 0, random.Random(0))


def test_zero_delays_is_the_default_run():
    assert delay_schedule(H2, "v6.14", 0, random.Random(0)).schedule == []


@pytest.mark.parametrize("seed", range(3))
def test_delay_schedules_are_seeded_and_replay(seed):
    a = delay_schedule(H2, "v6.14", 2, random.Random(seed))
    assert a == delay_schedule(H2, "v6.14", 2, random.Random(seed))
    assert 1 <= len(a.schedule) <= 2 * 2     # a delay and the hand-back after it
    replays_itself(a, "v6.14")


def test_one_delay_finds_the_shrinker_race_far_more_often_than_pct():
    # The race is one step of the shrinker anywhere inside T0's PAGEOUT after PTE0
    # (30 of the 53 steps): one delay lands there about half the time, while PCT
    # needs two adjacent change points (a few runs in a hundred).
    delay = sum(h2_found(delay_schedule(H2, "v6.14", 1, random.Random(s))) for s in range(60))
    pct = sum(h2_found(pct_schedule(H2, "v6.14", 3, random.Random(s))) for s in range(60))
    assert delay >= 15 and delay > 3 * pct


def test_delay_rejects_a_negative_bound():
    with pytest.raises(ValueError, match="delays"):
        delay_schedule(H2, "v6.14", -1, random.Random(0))


def test_bound_zero_is_the_default_run():
    ex = Exhaustive(H5, "v6.14", 0)
    assert [p.schedule for p in ex] == [[]]
    assert ex.runs == 1


def enumerate_all(program, engine, bound):
    ex = Exhaustive(program, engine, bound)
    out = []
    for p in ex:
        assert run(p, engine).to_dict() == ex.outcome.to_dict()     # the explored run's
        replays_itself(p, engine)
        out.append(schedule_json(p))
    return out, ex


@pytest.mark.parametrize("bound", [1, 2])
def test_exhaustive_yields_distinct_replayable_schedules(bound):
    scheds, ex = enumerate_all(H5, "v6.14", bound)
    assert len(scheds) == len(set(scheds)) == ex.yielded
    assert ex.runs >= ex.yielded
    # iterative bounding: fewer preemptions first
    assert scheds[0] == "[]"


def test_exhaustive_grows_with_the_bound_and_includes_the_lower_bounds():
    one, _ = enumerate_all(H5, "v6.14", 1)
    two, _ = enumerate_all(H5, "v6.14", 2)
    assert set(one) < set(two)
    assert two[:len(one)] == one


def test_exhaustive_finds_the_shrinker_reference_race_at_bound_one():
    assert any(h2_found(p) for p in Exhaustive(H2, "v6.14", 1))


@pytest.mark.parametrize("stops", [[1], [2, 3], [5, 17, 40], [36, 37, 38]])
def test_interrupted_and_resumed_enumeration_is_the_full_one(stops):
    full, _ = enumerate_all(H5, "v6.14", 2)
    got = []
    ex = Exhaustive(H5, "v6.14", 2)
    it = iter(ex)
    resumed = 0
    while (p := next(it, None)) is not None:
        got.append(schedule_json(p))
        if len(got) in stops:
            state = json.loads(json.dumps(ex.state()))   # through JSON, as a campaign keeps it
            ex = Exhaustive.from_state(H5, "v6.14", state)
            it = iter(ex)
            resumed += 1
    assert resumed == len(stops)
    assert got == full
    assert ex.done and ex.state()["done"]
    assert list(Exhaustive.from_state(H5, "v6.14", ex.state())) == []


def test_a_state_for_another_engine_or_format_is_refused():
    ex = Exhaustive(H5, "v6.14", 1)
    next(iter(ex))
    with pytest.raises(ExhaustiveStateError, match="engine"):
        Exhaustive.from_state(H5, "v6.15", ex.state())
    with pytest.raises(ExhaustiveStateError, match="version"):
        Exhaustive.from_state(H5, "v6.14", ex.state() | {"version": 99})


def test_a_state_for_another_program_is_refused_on_replay():
    ex = Exhaustive(H5, "v6.14", 1)
    it = iter(ex)
    for _ in range(5):
        next(it)
    with pytest.raises(ExhaustiveStateError, match="not runnable"):
        list(Exhaustive.from_state(H2, "v6.14", ex.state()))


def test_an_exhaustive_source_resumed_on_a_grown_corpus_starts_its_new_base_afresh():
    """A fleet share's corpus grows between slices, so the base at a saved position
    may be another program: the saved enumeration state, made for the old base,
    is dropped rather than replayed on the new one (which fails: a choice of the
    old path is not runnable)."""
    from fuzz.sources import Corpus, Fuzzer, Source, seed_inputs

    seeds = seed_inputs(CORPUS, reading="v6.14")
    source = Source(Fuzzer.EXHAUSTIVE, "v6.14", 3, 0, Corpus(None, seeds))
    it = iter(source)
    while "state" not in source.position or source.position["i"] < 2:
        next(it)
    position = json.loads(json.dumps(source.position))
    base = position["base"]
    for extra in range(64):
        grown = Corpus(None, seeds)
        grown.started = len(grown.inputs)          # a resumed share: no initial pass
        grown.inputs += [bytes([extra, 7, 1, 1])] * 40
        resumed = Source(Fuzzer.EXHAUSTIVE, "v6.14", 3, 0, grown, dict(position))
        programs = iter(resumed)
        next(programs)
        if resumed.position.get("base") != base:
            break
    else:
        pytest.fail("no grown corpus changed the base")
    assert resumed.position["i"] == position["i"]
    for _ in range(5):
        next(programs)
