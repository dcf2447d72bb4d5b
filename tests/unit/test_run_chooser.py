"""The scheduler hook: a chooser decides, the Runner records, plain run() replays."""

from __future__ import annotations

import glob
import random

import pytest

from engine.corpus.entries import load_any
from engine.execution.oracle import Verdict
from engine.execution.runner import ChooserError, Runner, run
from engine.mm.sched import YieldPoint
from engine.program.format import Preemption

CORPUS = sorted(glob.glob("corpus/*.json"))


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.rsplit("/", 1)[1][:-5])
def test_recorded_schedule_replays_the_identical_run(path):
    program = load_any(path).model_copy(update={"schedule": []})
    deviated = 0
    for seed in range(6):
        rng = random.Random(seed)
        runner = Runner(program, "v6.15", chooser=lambda step, names, default, rng=rng: rng.choice(names))
        out = runner.run()
        assert out.verdict is not Verdict.HARNESS, out.crash
        replay = program.model_copy(update={"schedule": runner.schedule_taken})
        again = run(replay, "v6.15")
        assert again.to_dict() == out.to_dict()
        assert again.steps == out.steps == len(runner.ran)
        # the places the replay went through are the recorded run's, step by step
        assert again.places == out.places
        deviated += bool(runner.schedule_taken)
    if len({t.name for t in program.threads if any(o.thread == t.name for o in program.ops)}) > 1:
        assert deviated, "random choices never left the default order: the hook did nothing"


def test_a_chooser_that_keeps_the_default_reproduces_the_programs_own_schedule():
    program = load_any("corpus/h2-shrinker-ref-between-ptes.json")
    calls = []

    def keep(step, names, default):
        calls.append((step, tuple(names), default))
        return default

    runner = Runner(program, "v6.14", chooser=keep)
    out = runner.run()
    assert calls and all(len(names) > 1 and d in names for _, names, d in calls)
    assert out.to_dict() == run(program, "v6.14").to_dict()
    # Recorded relative to the op-order policy: only the entries that changed a pick,
    # at the places the program names.
    assert set(runner.schedule_taken) <= set(program.schedule)
    assert Preemption(op=3, at=YieldPoint.BETWEEN_PTES, nth=1, thread="S") in runner.schedule_taken
    assert run(program.model_copy(update={"schedule": runner.schedule_taken}),
               "v6.14").to_dict() == out.to_dict()


def test_without_chooser_nothing_is_recorded():
    runner = Runner(load_any("corpus/h5-dma-into-lazyfree.json"), "v6.14")
    runner.run()
    assert runner.schedule_taken is None and runner.ran is None


def test_a_bad_choice_is_a_harness_error_not_a_crash_outcome():
    program = load_any("corpus/h5-dma-into-lazyfree.json")
    with pytest.raises(ChooserError, match="'nobody' is not runnable"):
        run(program, "v6.14", chooser=lambda step, names, default: "nobody")
    with pytest.raises(ChooserError, match="raised by the chooser"):
        run(program, "v6.14", chooser=lambda step, names, default: 1 // 0)
