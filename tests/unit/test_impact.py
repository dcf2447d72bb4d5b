"""Change impact (engine/diff/impact.py): a run of A that looked up nothing B does
differently is B's run too, and the watched class changes nothing of A's run."""

from __future__ import annotations

import itertools
import random
import threading

import pytest

from engine import CORPUS_DIR, load_any, typical_program
from engine.diff.differential import differential
from engine.diff.impact import Watch, differing_attributes, watch
from engine.execution.outcome import Outcome
from engine.execution.runner import run
from engine.kernels import ORDER, kernel_class

#: What every version declares of itself and no run reads.
METADATA = {"VERSION", "COMMIT", "PARENT", "BRANCH"}
PAIRS = list(itertools.pairwise(ORDER)) + [("v6.14-c", "v6.15-c"), ("v6.15", "v6.15-c")]


class Old:
    SIZE = 15
    SAME = 1

    def batch(self) -> int:
        return self.SIZE

    def same(self) -> int:
        return self.SAME

    @classmethod
    def kind(cls) -> str:
        return "old"

    @staticmethod
    def helper() -> int:
        return 1


class New(Old):
    SIZE = 31
    ONLY_NEW = True

    @classmethod
    def kind(cls) -> str:
        return "new"


def test_the_differing_attributes_are_what_a_version_overrides():
    assert differing_attributes(Old, New) == {"SIZE", "ONLY_NEW", "kind"}
    assert differing_attributes(Old, Old) == frozenset()
    a, b = kernel_class("v6.14"), kernel_class("v6.15")
    assert {"try_to_unmap_one", "WP_REUSES_SHARED_LARGE_ANON"} <= differing_attributes(a, b)
    # v7.0 is v6.19.y's behaviour on mainline: nothing to run twice
    assert differing_attributes(kernel_class("v6.19.y"), kernel_class("v7.0")) <= METADATA


def test_the_watched_class_answers_as_a_and_records_what_b_does_differently():
    w = Watch(Old, New)
    touched = w.start()
    obj = w.cls()
    assert isinstance(obj, Old) and type(obj).__name__ == "Old"
    assert obj.same() == 1 and Old.helper() == 1 and w.cls.helper() == 1
    assert not touched
    assert obj.batch() == 15
    assert list(touched) == ["SIZE"]          # batch() is the same method on both
    touched = w.start()
    assert obj.kind() == "old" and w.cls.kind() == "old" and list(touched) == ["kind"]
    touched = w.start()
    # a name only B has: looked up (hasattr and getattr with a default too), and missing
    assert getattr(obj, "ONLY_NEW", None) is None and not hasattr(w.cls, "ONLY_NEW")
    assert list(touched) == ["ONLY_NEW"]


def test_each_thread_records_its_own_lookups():
    w = Watch(Old, New)
    mine = w.start()
    theirs: list[dict] = []

    def look() -> None:
        theirs.append(w.start())
        w.cls().batch()

    thread = threading.Thread(target=look)
    thread.start()
    thread.join()
    assert list(theirs[0]) == ["SIZE"] and not mine


def _programs() -> list:
    rng = random.Random(17)
    return ([load_any(p) for p in sorted(CORPUS_DIR.glob("*.json"))]
            + [typical_program(rng) for _ in range(60)])


def _same(o: Outcome, p: Outcome) -> None:
    assert o.to_dict() == p.to_dict()
    assert (o.places, o.event_steps, o.op_ends) == (p.places, p.event_steps, p.op_ends)
    assert [(e.op, e.state, e.results, e.inflight) for e in o.trace or ()] == \
        [(e.op, e.state, e.results, e.inflight) for e in p.trace or ()]


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}..{b}" for a, b in PAIRS])
def test_an_untouched_run_of_a_is_the_run_of_b(pair):
    a, b = pair
    w = watch(a, b)
    untouched = 0
    for program in _programs():
        touched = w.start()
        got = run(program, a, trace=True, kernel_cls=w.cls)
        _same(got, run(program, a, trace=True))
        if not touched:
            untouched += 1
            _same(got.as_engine(b), run(program, b, trace=True))
    if differing_attributes(kernel_class(a), kernel_class(b)) <= METADATA:
        assert untouched == len(_programs())
    elif pair == ("v6.14", "v6.15"):
        assert untouched > 10          # the test must see the skip happen


def test_the_differential_runs_b_only_when_a_touched_what_b_changes():
    straddle = load_any(CORPUS_DIR / "h12-mremap-straddle.json")
    report = differential(straddle, "v6.14", "v6.15")
    assert not report.b_from_a and report.divergences   # v6.15 reads past the PTE table
    assert report.b.verdict.value == "crash"
    same = differential(straddle, "v6.19.y", "v7.0")
    assert same.b_from_a and same.equal and same.b.engine == "v7.0"
    assert same.b.to_dict() == run(straddle, "v7.0").to_dict()
