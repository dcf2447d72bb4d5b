"""Corpus merge: the smallest inputs that show every feature a corpus shows.

libFuzzer's ``-merge=1`` and ClusterFuzz's corpus pruning, over behaviour
features (:func:`fuzz.sources.features`): inputs are taken smallest first
(then oldest), and one is kept when it shows a feature no input kept before
it shows.  What the merge drops shows nothing the kept ones do not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class MergeInput:
    """One input of a corpus to merge.

    @features: what it showed; an input whose features are unknown (empty:
        libFuzzer keeps an atheris input's coverage to itself) is always kept.
    @pinned: kept whatever it shows (a seed).
    """

    key: int
    size: int
    features: frozenset[str]
    pinned: bool = False


def redundant(inputs: Iterable[MergeInput]) -> list[int]:
    """The keys of the inputs a merge drops, in key order."""
    inputs = list(inputs)
    covered: set[str] = set()
    for i in inputs:
        if i.pinned or not i.features:
            covered |= i.features
    drop = []
    for i in sorted(inputs, key=lambda i: (i.size, i.key)):
        if i.pinned or not i.features:
            continue
        if i.features <= covered:
            drop.append(i.key)
        else:
            covered |= i.features
    return sorted(drop)
