"""Replay every corpus file against its expected outcome per version."""

from __future__ import annotations

import pathlib

import pytest

from engine.corpus import check_entry, load_entry

CORPUS = sorted((pathlib.Path(__file__).resolve().parents[2] / "corpus").glob("*.json"))


def test_corpus_is_not_empty():
    assert len(CORPUS) >= 14


@pytest.mark.corpus
@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_entry(path):
    entry = load_entry(str(path))
    assert entry["expect"], "a corpus entry must expect something"
    assert check_entry(entry) == []
