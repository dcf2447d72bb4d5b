"""Operation-level mutations: valid programs, deterministic, and able to reach a neighbour."""

from __future__ import annotations

import pathlib
import random

from engine.corpus import load_any
from engine.diff import differential
from fuzz.bench import TARGETS, Target
from fuzz.mutate import _preempt, estimated_steps, mutate_program

CORPUS = pathlib.Path(__file__).resolve().parents[2] / "corpus"


def test_mutants_are_valid_and_reproducible() -> None:
    for path in sorted(CORPUS.glob("*.json")):
        program = load_any(str(path))
        a = [mutate_program(program, random.Random(i)) for i in range(20)]
        b = [mutate_program(program, random.Random(i)) for i in range(20)]
        assert a == b
        kept = [m for m in a if m is not None]
        assert kept, path.name
        assert all(m.check() is m for m in kept)
        assert any(m != program for m in kept)


def test_a_clean_pmd_thp_is_a_few_mutations_from_a_redirtied_one() -> None:
    """h10 (clean PMD THP) -> h8 (redirtied): one write copied after MADV_FREE."""
    spec = TARGETS[Target.PMD_REDIRTY_SPLIT]
    program = load_any(str(CORPUS / "h10-pmd-thp-clean.json"))
    assert spec.match(program, differential(program, spec.engine_a, spec.engine_b)) is None
    hits = 0
    for i in range(1000):
        m = mutate_program(program, random.Random(i))
        kinds = [o.op if o.op != "madvise" else o.advice.value for o in m.ops] if m else []
        # only run the likely ones: a write somewhere after MADV_FREE
        if "MADV_FREE" in kinds and "write" in kinds[kinds.index("MADV_FREE"):]:
            hits += spec.match(m, differential(m, spec.engine_a, spec.engine_b)) is not None
    assert hits > 0


def test_a_preemption_lands_inside_an_operation_of_another_thread() -> None:
    data = load_any(str(CORPUS / "h2-shrinker-ref-between-ptes.json")).to_dict()
    data["schedule"] = [[3, "S"]]
    ends, total = [], 0
    for op in data["ops"]:
        total += estimated_steps(op)
        ends.append(total)
    for i in range(50):
        d = {**data, "schedule": [list(e) for e in data["schedule"]]}
        _preempt(d, random.Random(i))
        assert [e[0] for e in d["schedule"]] == sorted({e[0] for e in d["schedule"]})
        new = [e for e in d["schedule"] if e != [3, "S"]]
        if not new:          # drawn on step 3 itself: replaced
            continue
        (step, thread), = new
        running = data["ops"][next(j for j, end in enumerate(ends) if step < end)]["thread"]
        assert thread != running and thread in {o["thread"] for o in data["ops"]}


def test_a_one_thread_program_gets_no_preemption() -> None:
    data = load_any(str(CORPUS / "h10-pmd-thp-clean.json")).to_dict()
    data["ops"] = [o for o in data["ops"] if o["thread"] == "T0"]
    before = list(data["schedule"])
    _preempt(data, random.Random(0))
    assert data["schedule"] == before
