"""Replay every corpus file against its expected outcome per version."""

from __future__ import annotations

import pathlib

import pytest

from engine.corpus.entries import c_twin_entry, check_entry, load_entry

CORPUS = sorted((pathlib.Path(__file__).resolve().parents[2] / "corpus").glob("*.json"))

def test_corpus_is_not_empty():
    assert len(CORPUS) >= 14


@pytest.mark.corpus
@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_entry(path):
    entry = load_entry(str(path))
    assert entry["expect"], "a corpus entry must expect something"
    assert check_entry(entry) == []


@pytest.mark.corpus
@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_entry_on_the_c_twins(path):
    """v6.14-c, v6.15-c and v6.16-c meet their Python versions' expectations,
    classify the same divergences, and equal their Python versions."""
    entry = c_twin_entry(load_entry(str(path)))
    assert entry["expect"], "every corpus entry expects something of v6.14, v6.15 or v6.16"
    assert check_entry(entry) == []
