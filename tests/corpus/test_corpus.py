"""Replay every corpus file against its expected outcome per version."""

from __future__ import annotations

import pathlib

import pytest

from engine.corpus import c_twin_entry, check_entry, load_entry

CORPUS = sorted((pathlib.Path(__file__).resolve().parents[2] / "corpus").glob("*.json"))

_V5 = ("v5.17", "v5.18")
_V6 = ("v6.12", "v6.14", "v6.15", "v6.16", "v6.14-c", "v6.15-c", "v6.16-c")
#: Expectations written from the kernel source that the model does not meet yet
#: (issue 15): scenario -> {(engine, field): the model's value today}.  Exact, both
#: ways: a listed field that the model meets now fails the test too, so that the
#: entry is removed with the model change that closes the gap.
KNOWN_MODEL_GAPS: dict[str, dict[tuple[str, str], object]] = {
    # item 9: no failed split is counted (THP_SPLIT_PAGE_FAILED, split_failed)
    "conform-pmd-thp-pinned-split-failed": {
        **{(e, "counter.THP_SPLIT_PAGE_FAILED"): None for e in _V5 + _V6},
        **{(e, "mthp.split_failed[9]"): None for e in _V6},
    },
    # item 4: v5.x madvise_free_pte_range() splits a PTE-mapped THP even when the
    # range covers it whole; the model uses the v6.10+ rule for every version
    "conform-pte-mapped-thp-madv-free-whole": {
        **{(e, "counter.THP_SPLIT_PAGE"): 0 for e in _V5},
        **{(e, "counter.THP_DEFERRED_SPLIT_PAGE"): 0 for e in _V5},
    },
}


def _expected_problems(entry) -> set[str]:
    gaps = KNOWN_MODEL_GAPS.get(entry["name"], {})
    return {f"{entry['name']} on {e}: {f} is {have!r}, expected {entry['expect'][e][f]!r}"
            for (e, f), have in gaps.items() if e in entry["expect"]}


def test_corpus_is_not_empty():
    assert len(CORPUS) >= 14


@pytest.mark.corpus
@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_entry(path):
    entry = load_entry(str(path))
    assert entry["expect"], "a corpus entry must expect something"
    assert set(check_entry(entry)) == _expected_problems(entry)


@pytest.mark.corpus
@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_entry_on_the_c_twins(path):
    """v6.14-c, v6.15-c and v6.16-c meet their Python versions' expectations,
    classify the same divergences, and equal their Python versions."""
    entry = c_twin_entry(load_entry(str(path)))
    assert entry["expect"], "every corpus entry expects something of v6.14, v6.15 or v6.16"
    assert set(check_entry(entry)) == _expected_problems(entry)
