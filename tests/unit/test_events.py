"""Events are declared (engine/mm/events.py): kernels note only declared events,
rules read only declared events, and an event serialises as its name."""

from __future__ import annotations

import json
import pickle

import pytest

from engine.corpus.entries import CORPUS_DIR, load_any
from engine.diff.rules import RULES, New, Old
from engine.execution.runner import run
from engine.kernels import KERNELS
from engine.kernels.v6_15 import TTU_BATCH
from engine.mm.events import (
    EVENTS,
    TTU_LAZYFREE_DISCARD,
    Event,
    UndeclaredEvent,
    event,
    folio_batch_full,
    place_event,
)
from engine.mm.sched import KERNEL_YIELD_POINTS, YieldPoint


def test_kernel_refuses_an_undeclared_event():
    k = KERNELS["v6.15"]()
    with pytest.raises(UndeclaredEvent, match="ttu_batch"):
        k.event("ttu_batch")          # the name alone is not the declared event
    with pytest.raises(UndeclaredEvent):
        k.event("ttu_bacth")
    k.current_op = 3
    k.event(TTU_BATCH)
    assert k.events == [(3, "ttu_batch")]


def test_every_rule_reads_declared_events_only():
    for rule in RULES:
        assert rule.events(), rule.name
        for ev in rule.events():
            assert type(ev) is Event and EVENTS[ev] is ev, (rule.name, ev)


def test_a_rule_test_refuses_a_bare_string():
    with pytest.raises(UndeclaredEvent):
        New("ttu_batch")              # what a typo would pass
    with pytest.raises(UndeclaredEvent):
        Old()


def test_event_is_its_name_wherever_it_goes():
    assert TTU_BATCH == "ttu_batch" and hash(TTU_BATCH) == hash("ttu_batch")
    assert json.dumps([0, TTU_BATCH]) == '[0, "ttu_batch"]'
    assert pickle.loads(pickle.dumps(TTU_BATCH)) is TTU_BATCH
    assert event("ttu_lazyfree_discard") is TTU_LAZYFREE_DISCARD
    with pytest.raises(UndeclaredEvent):
        event("no_such_event")


def test_declaring_a_name_twice_needs_the_same_meaning():
    assert Event("ttu_batch", TTU_BATCH.meaning) is TTU_BATCH
    with pytest.raises(UndeclaredEvent, match="already declared"):
        Event("ttu_batch", "something else")


def test_parametrised_events_validate():
    assert folio_batch_full(31) == "folio_batch_full_31"
    assert folio_batch_full(15) is folio_batch_full(15)
    for bad in (0, -1, "15", 15.0):
        with pytest.raises(UndeclaredEvent):
            folio_batch_full(bad)
    for kind in KERNEL_YIELD_POINTS:
        assert place_event(kind) == f"place:{kind.value}"
    for bad in (YieldPoint.OP_END, YieldPoint.START, "pmd_checked"):
        with pytest.raises(UndeclaredEvent):
            place_event(bad)


def test_runs_note_declared_events_and_serialise_plain_names():
    program = load_any(str(CORPUS_DIR / "h2-shrinker-ref-between-ptes.json"))
    for engine in ("v5.17", "v6.14", "v6.15", "v6.16", "v6.15-c"):
        out = run(program, engine)
        assert out.events
        for _, ev in out.events:
            assert type(ev) is Event
        for _, name in out.to_dict()["events"]:
            assert type(name) is str
