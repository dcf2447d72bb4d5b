"""Hand-off hints: where a run handed a folio to a kernel thread, and mutants that let it in there."""

from __future__ import annotations

import pathlib
import random

from engine.corpus import load_any
from engine.diff import differential
from engine.run import Runner
from fuzz.bench import TARGETS, Target
from fuzz.hints import Handoff, handoffs, hinted

CORPUS = pathlib.Path(__file__).resolve().parents[2] / "corpus"
SHRINKER = TARGETS[Target.SHRINKER_SWAPBACKED]
H2 = load_any(str(CORPUS / "h2-shrinker-ref-between-ptes.json"))
#: h2 without the shrinker and its schedule: T0 alone maps, dirties, frees and pages out a mTHP.
H1 = H2.model_copy(update={"ops": H2.ops[:4], "schedule": []})


def test_outcomes_say_in_which_step_each_event_and_operation_happened() -> None:
    runner = Runner(H1, "v6.14", chooser=lambda step, names, default: default)
    out = runner.run()
    assert len(out.event_steps) == len(out.events)
    ran = [op for _, op in runner.ran]          # the op each step ran a segment of
    for (idx, _), step in zip(out.events, out.event_steps):
        assert ran[step] == idx
    assert out.op_ends == [max(s for s, op in enumerate(ran) if op == i) for i in range(4)]


def test_the_pageout_of_a_lazyfree_mthp_hands_it_to_the_shrinker_on_v6_14_only() -> None:
    report = differential(H1, "v6.14", "v6.15")
    (h,) = handoffs(H1, report)
    assert (h.at, h.consumer) == (3, "deferred_split_scan")
    end = report.a.op_ends[3]
    assert report.a.event_steps[report.a.events.index((3, "deferred_split_partially_mapped"))] \
        == h.first - 1
    assert h.last == end and h.first <= end
    # v6.15 unmaps the folio in one batch: nothing to hand off.
    assert handoffs(H1, differential(H1, "v6.15", "v6.16")) == []


def test_no_hint_where_the_consumer_already_follows() -> None:
    placed = H2.model_copy(update={"schedule": []})
    assert handoffs(placed, differential(placed, "v6.14", "v6.15")) == []


def test_hinted_mutants_race_the_shrinker_into_the_batch() -> None:
    (h,) = handoffs(H1, differential(H1, "v6.14", "v6.15"))
    mutants = hinted(H1, h, random.Random(0), tries=8)
    assert len(mutants) == 8 and len({m.schedule[-1][0] for m in mutants}) == 8
    for m in mutants:
        assert m.ops[h.at + 1].op == "deferred_split_scan"
        step, name = m.schedule[-1]
        assert h.first <= step <= h.last and name == m.ops[h.at + 1].thread != "T0"
    # Every step of the window but the last few (where the batch is done) shows H2.
    found = [SHRINKER.shows(m)[1] is not None for m in mutants]
    assert sum(found) >= 6, found


def test_hinted_adds_a_kthread_when_there_is_none_and_is_seeded() -> None:
    h = Handoff(3, "deferred_split_scan", 20, 40)
    a = hinted(H1.model_copy(update={"threads": H1.threads[:1]}), h, random.Random(1), 2)
    assert a == hinted(H1.model_copy(update={"threads": H1.threads[:1]}), h,
                       random.Random(1), 2)
    assert [t.name for t in a[0].threads] == ["T0", "K0"]
    assert a[0].ops[4].thread == "K0"
