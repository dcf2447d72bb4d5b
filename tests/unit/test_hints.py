"""Hand-off hints: where a run handed a folio to a kernel thread, and mutants that let it in there."""

from __future__ import annotations

import json
import pathlib
import random

from engine.corpus.entries import load_any
from engine.diff.differential import differential
from engine.execution.runner import Runner, run
from engine.mm.sched import YieldPoint
from engine.program.format import Preemption, parse_program
from fuzz.bench import TARGETS, Target
from fuzz.hints import Handoff, handoffs, hinted

CORPUS = pathlib.Path(__file__).resolve().parents[2] / "corpus"
SHRINKER = TARGETS[Target.SHRINKER_SWAPBACKED]
H2_FILE = json.loads((CORPUS / "h2-shrinker-ref-between-ptes.json").read_text())
H2 = load_any(str(CORPUS / "h2-shrinker-ref-between-ptes.json"))
#: h2 without its schedule: the shrinker's scan is placed right after PAGEOUT but never cuts in.
H2_PLAIN = H2.model_copy(update={"schedule": []})
#: h2 without the shrinker and its schedule: T0 alone maps, dirties, frees and pages out a mTHP.
H1 = H2.model_copy(update={"ops": H2.ops[:4], "schedule": []})


def test_outcomes_say_in_which_step_each_event_and_operation_happened() -> None:
    runner = Runner(H1, "v6.14", chooser=lambda step, names, default: default)
    out = runner.run()
    assert len(out.event_steps) == len(out.events)
    ran = [op for _, op in runner.ran]          # the op each step ran a segment of
    for (idx, _), step in zip(out.events, out.event_steps, strict=True):
        assert ran[step] == idx
    assert out.op_ends == [max(s for s, op in enumerate(ran) if op == i) for i in range(4)]
    assert len(out.places) == out.steps and all(p[0] == op for p, op in zip(out.places, ran, strict=True))


def test_the_window_is_the_places_of_pageout_after_the_hand_off_on_v6_14_only() -> None:
    report = differential(H1, "v6.14", "v6.15")
    (h,) = handoffs(H1, report)
    assert (h.at, h.consumer) == (3, "deferred_split_scan")
    out = report.a
    handed = out.event_steps[out.events.index((3, "deferred_split_partially_mapped"))]
    assert list(h.window) == out.places[handed:out.op_ends[3]]
    # v6.14 queues the folio when it zaps PTE0; then come PTE1 .. PTE15 and the freeze.
    assert h.window[0] == (3, YieldPoint.BETWEEN_PTES, 1)
    assert h.window[-1] == (3, YieldPoint.BEFORE_FREEZE, 1)
    assert all(op == 3 and kind is not YieldPoint.OP_END for op, kind, _ in h.window)
    # v6.15 unmaps the folio in one batch: nothing to hand off.
    assert handoffs(H1, differential(H1, "v6.15", "v6.16")) == []


def test_no_hint_where_the_program_already_races_the_consumer() -> None:
    assert handoffs(H2, differential(H2, "v6.14", "v6.15")) == []


def check_mutants(base, mutants, h, consumer_at: int) -> None:
    for m in mutants:
        assert m.ops[consumer_at].op == "deferred_split_scan"
        e = m.schedule[-1]
        assert e.op == h.at and e.place in h.window and e.thread == m.ops[consumer_at].thread
        assert m.ops[h.at] == base.ops[h.at] and e.thread != m.ops[h.at].thread


def test_hinted_mutants_race_the_shrinker_into_the_batch() -> None:
    (h,) = handoffs(H1, differential(H1, "v6.14", "v6.15"))
    mutants = hinted(H1, h, random.Random(0), tries=8)
    assert len(mutants) == 8 and len({m.schedule[-1].place for m in mutants}) == 8
    check_mutants(H1, mutants, h, h.at + 1)
    # Every place of the window but the last (the folio is unmapped by then) shows H2.
    found = [SHRINKER.shows(m)[1] is not None for m in mutants]
    assert sum(found) >= 7, found


def test_a_hint_on_h2_without_its_schedule_replays_its_race() -> None:
    """The shrinker is placed already: the hint only adds the preemption, at a place of
    PAGEOUT after the hand-off, and v6.14 shows what the corpus expects of H2."""
    (h,) = handoffs(H2_PLAIN, differential(H2_PLAIN, "v6.14", "v6.15"))
    mutants = hinted(H2_PLAIN, h, random.Random(0), tries=len(h.window))
    assert len(mutants) == len(h.window)
    check_mutants(H2_PLAIN, mutants, h, h.at + 1)
    assert all(m.ops == H2_PLAIN.ops and len(m.schedule) == 1 for m in mutants)
    # The first place after the hand-off is H2's own preemption.
    assert mutants[0].schedule == H2.schedule
    expect = H2_FILE["expect"]["v6.14"]["counter.nr_lazyfree_fail"]
    raced = [m for m in mutants if run(m, "v6.14").state["counter.nr_lazyfree_fail"] == expect]
    assert len(raced) == len(h.window) - 1          # all but BEFORE_FREEZE, when all is unmapped
    assert all(SHRINKER.shows(m)[1] is not None for m in raced)


def test_existing_preemptions_stay_renumbered_past_the_inserted_consumer() -> None:
    earlier = Preemption(op=1, at=YieldPoint.BETWEEN_PAGES, nth=3, thread="R")
    later = Preemption(op=3, at=YieldPoint.BEFORE_FREEZE, thread="R")
    base = H1.model_copy(update={"schedule": [earlier, later]})
    (h,) = handoffs(base, differential(base, "v6.14", "v6.15"))
    for m in hinted(base, h, random.Random(2), tries=4):
        assert m.schedule[0] == earlier
        # the PAGEOUT keeps its index (the consumer goes after it); a hint at its
        # freeze replaces the entry that was there
        assert m.schedule[-1].op == 3 and (later in m.schedule) == (m.schedule[-1].place != later.place)


def test_hinted_adds_a_kthread_when_there_is_none_and_is_seeded() -> None:
    h = Handoff(3, "deferred_split_scan", ((3, YieldPoint.BETWEEN_PTES, 1),
                                           (3, YieldPoint.PTE_CLEARED, 2)))
    lone = H1.model_copy(update={"threads": H1.threads[:1]})
    a = hinted(lone, h, random.Random(1), 2)
    assert a == hinted(lone, h, random.Random(1), 2)
    assert [t.name for t in a[0].threads] == ["T0", "K0"]
    assert a[0].ops[4].thread == "K0"
    assert [m.schedule[-1].place for m in a] == list(h.window)


def test_a_reclaim_that_reached_a_large_folio_gets_layout_hints() -> None:
    """H1 plus kswapd: reclaim unmaps the lazyfree mTHP, so the run suggests mutants
    that cut or move part of it right before that reclaim; a run whose reclaim met
    no large folio suggests none."""
    from fuzz.hints import layout_mutants
    base = load_any(str(CORPUS / "h12-vma-boundary-lazyfree-mthp.json")).to_dict()
    base["ops"] = [o for o in base["ops"] if o["op"] != "mprotect"]
    program = parse_program(base)
    at = next(i for i, o in enumerate(program.ops) if o.op == "reclaim")
    found = layout_mutants(program, differential(program, "v6.14", "v6.15"), random.Random(1), 3)
    assert len(found) == 3
    for m in found:
        new = m.ops[at]
        assert new.op in ("mremap", "mprotect", "munmap", "madvise") and m.ops[at + 1].op == "reclaim"
    small = parse_program({**base, "ops": [{**o, "order": 0} if o["op"] == "mmap" else o
                                           for o in base["ops"]]})
    assert layout_mutants(small, differential(small, "v6.14", "v6.15"), random.Random(1), 3) == []
