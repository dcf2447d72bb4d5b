"""Corpus merge (fuzz/merge.py): smallest first, every feature kept, seeds and
inputs of unknown features never dropped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fuzz.merge import MergeInput, redundant


def _in(key: int, size: int, *features: str, pinned: bool = False) -> MergeInput:
    return MergeInput(key, size, frozenset(features), pinned)


def test_the_smaller_input_showing_the_same_features_is_kept() -> None:
    assert redundant([_in(1, 50, "a", "b"), _in(2, 10, "a", "b"), _in(3, 20, "c")]) == [1]


def test_seeds_and_unknown_features_stay_and_cover() -> None:
    inputs = [_in(1, 99, "a", pinned=True), _in(2, 5, "a"), _in(3, 7), _in(4, 8, "a", "z")]
    assert redundant(inputs) == [2]


@given(st.lists(st.tuples(st.integers(1, 300), st.frozensets(st.sampled_from("abcdefgh")),
                          st.booleans()), max_size=40))
def test_a_merge_keeps_every_feature(rows) -> None:
    inputs = [MergeInput(k, size, feats, pinned) for k, (size, feats, pinned) in enumerate(rows)]
    drop = set(redundant(inputs))
    kept = [i for i in inputs if i.key not in drop]
    assert set().union(*(i.features for i in inputs)) == set().union(*(i.features for i in kept))
    assert not any(i.pinned or not i.features for i in inputs if i.key in drop)
    # Nothing kept is redundant given the others kept before it, smallest first.
    assert set(redundant(kept)) == set()
