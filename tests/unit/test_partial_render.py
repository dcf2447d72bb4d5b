"""A state flattened in part (Snapshot.render(only=...)) says what the whole one
says of those fields: the differential looks for the op where each field parted
through partial renders (engine/diff/differential.py _first_ops)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from engine import corpus_index, corpus_program, run
from engine.execution.outcome import Fields, Snapshot

#: Corpus programs with large folios, forks, swap and the v6.15 batch.
PROGRAMS = [e["name"] for e in corpus_index()][:40]


def _snapshots(name: str, engine: str) -> list[Snapshot]:
    out = run(corpus_program(name), engine, trace=True)
    return [e._state for e in out.trace or [] if isinstance(e._state, Snapshot)]


@pytest.mark.parametrize("engine", ["v6.14", "v6.15"])
def test_a_partial_render_is_the_whole_ones_fields(engine: str) -> None:
    rng = random.Random(0)
    checked = 0
    for name in PROGRAMS:
        for snap in _snapshots(name, engine):
            whole = snap.render()
            keys = sorted(whole)
            # without a folio's field or the queue, the folios nothing maps go unnamed
            unnamed = [k for k in keys if not k.startswith(("folio.", "deferred_split_queue"))]
            for pool in (keys, unnamed):
                for size in (1, 5, len(pool) // 3):
                    want = set(rng.sample(pool, min(size, len(pool))))
                    want |= {"mm0.pte[0x7000]", "counter.nope"}      # fields it has not
                    if pool is keys:
                        want.add("folio.f999.ref")
                    assert snap.render(only=Fields(want)) == {k: whole[k] for k in want if k in whole}
                    checked += 1
    assert checked > 100


def test_an_unobservable_state_is_so_in_part_too() -> None:
    """An entry mapping no live folio makes the whole state unobservable: a
    partial render says the same, even of fields far from that entry."""
    snap = next(s for name in PROGRAMS for s in _snapshots(name, "v6.15")
                if any(raw for _, _, _, _, pmds in s.mms for _, _, raw in pmds if raw))
    broken = dataclasses.replace(snap, folios=[])        # every folio freed
    whole = broken.render()
    assert list(whole) == ["unobservable"]
    assert broken.render(only=Fields({"counter.PGLAZYFREE", "unobservable"})) == whole
