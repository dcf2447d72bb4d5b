"""Operation-level mutations: valid programs, deterministic, able to reach a neighbour,
and schedules whose places follow their operations."""

from __future__ import annotations

import pathlib
import random

import pytest

from engine.corpus.entries import load_any
from engine.diff.differential import differential
from engine.errors import ProgramError
from engine.execution.runner import YIELD_POINTS, run
from engine.mm.sched import YieldPoint
from engine.program.format import Preemption, parse_program
from fuzz.bench import TARGETS, Target
from fuzz.mutate import (
    _copy,
    _device_op,
    _kthread_op,
    _preempt,
    _remove,
    _swap,
    boundary,
    mutate_program,
    occurrences,
    program_data,
)

CORPUS = pathlib.Path(__file__).resolve().parents[2] / "corpus"
H2 = load_any(str(CORPUS / "h2-shrinker-ref-between-ptes.json"))
H5 = load_any(str(CORPUS / "h5-dma-into-lazyfree.json"))


as_data = program_data


def mutated(program, mutation, seed: int):
    """``program`` after one ``mutation`` drawn from ``Random(seed)``."""
    data = as_data(program)
    mutation(data, random.Random(seed))
    return parse_program(data)


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


def test_a_preemption_names_a_place_the_operation_can_reach() -> None:
    data = as_data(H2)
    seen = set()
    for i in range(200):
        d = {**data, "schedule": [dict(e) for e in data["schedule"]]}
        _preempt(d, random.Random(i))
        program = parse_program(d)                      # a valid schedule: distinct places
        new = [e for e in program.schedule if e not in H2.schedule]
        if not new:                  # drawn on H2's own place, thread S: the same entry again
            continue
        (e,) = new
        op = H2.ops[e.op]
        assert e.at in YIELD_POINTS.get(op.op, ()) + (YieldPoint.OP_END,)
        assert 1 <= e.nth <= occurrences(data, e.op, e.at)
        assert e.nth == 1 or e.at is not YieldPoint.OP_END
        assert e.thread != op.thread and e.thread in {o.thread for o in H2.ops}
        seen.add((op.op, e.at))
    # the 16-page PAGEOUT gets its PTE windows, the 16-page write its page gaps
    assert {("madvise", YieldPoint.BETWEEN_PTES), ("madvise", YieldPoint.PTE_CLEARED),
            ("write", YieldPoint.BETWEEN_PAGES)} <= seen


def test_occurrences_follow_pages_and_folios() -> None:
    data = as_data(H2)       # ops[1] writes 16 pages of a 64 KiB mTHP; ops[3] pages them out
    assert occurrences(data, 1, YieldPoint.BETWEEN_PAGES) == 15
    assert occurrences(data, 3, YieldPoint.PTE_CLEARED) == 16
    assert occurrences(data, 3, YieldPoint.BETWEEN_PTES) == 15
    assert occurrences(data, 3, YieldPoint.BEFORE_FREEZE) == 1
    assert occurrences(data, 4, YieldPoint.SHRINKER_REF_HELD) == 1
    assert occurrences(data, 0, YieldPoint.OP_END) == 1


def test_a_one_thread_program_gets_no_preemption() -> None:
    data = as_data(load_any(str(CORPUS / "h10-pmd-thp-clean.json")))
    data["ops"] = [o for o in data["ops"] if o["thread"] == "T0"]
    before = list(data["schedule"])
    _preempt(data, random.Random(0))
    assert data["schedule"] == before


def places_by_op(program) -> dict[tuple, str]:
    """Each preemption keyed by its operation's content, not its index."""
    return {(program.ops[e.op].model_dump_json(), e.at, e.nth): e.thread for e in program.schedule}


@pytest.mark.parametrize("mutation", [_copy, _remove, _swap, _kthread_op, _device_op],
                         ids=lambda m: m.__name__)
def test_operation_mutations_keep_the_schedule_on_its_operations(mutation) -> None:
    # H5 with a preemption on every operation: wherever the operations move, each
    # surviving entry still names the operation it named before.
    base = H5.model_copy(update={"schedule": [
        Preemption(op=i, at=YieldPoint.OP_END, thread=next(
            t.name for t in H5.threads if t.name != op.thread and t.name in {o.thread for o in H5.ops}))
        for i, op in enumerate(H5.ops)]})
    base = parse_program(base.to_dict())
    before = places_by_op(base)
    changed = 0
    for i in range(40):
        data = as_data(base)
        mutation(data, random.Random(i))
        try:
            mutant = parse_program(data)
        except ProgramError as err:          # a removed mmap: a region no longer declared
            assert mutation is _remove and "outside every VMA" in str(err)
            continue
        after = places_by_op(mutant)
        assert after.items() <= before.items()
        kept = {base.ops[j].model_dump_json() for j in range(len(base.ops))} & \
            {op.model_dump_json() for op in mutant.ops}
        # an operation that survives keeps its preemption (copies do not take one along)
        assert len(after) == len(kept)
        changed += [e.op for e in mutant.schedule] != [e.op for e in base.schedule]
    assert changed, "the mutation never moved an operation: the test proves nothing"


def test_the_renumbered_race_still_happens() -> None:
    """H2's preemption follows PAGEOUT past a shrinker scan inserted before it: the race
    is still there (a reclaim inserted after MADV_FREE would take the folio first)."""
    spec = TARGETS[Target.SHRINKER_SWAPBACKED]
    moved = 0
    for i in range(30):
        mutant = mutated(H2, _kthread_op, i)
        (e,) = mutant.schedule
        assert mutant.ops[e.op] == H2.ops[3] and (e.at, e.nth, e.thread) == \
            (YieldPoint.BETWEEN_PTES, 1, "S")
        new = next(j for j, op in enumerate(mutant.ops) if j >= len(H2.ops) or op != H2.ops[j])
        if new <= 3 and mutant.ops[new].op == "deferred_split_scan":
            moved += 1
            assert e.op == 4 and spec.shows(mutant)[1] is not None
            assert run(mutant, "v6.14").state["counter.nr_lazyfree_fail"] == 16
    assert moved


def test_dma_goes_between_its_pin_and_that_pins_unpin() -> None:
    ops = as_data(H5)["ops"]
    pin = next(i for i, o in enumerate(ops) if o["op"] == "pin")
    unpin = next(i for i, o in enumerate(ops) if o["op"] == "unpin")
    at = set()
    for i in range(40):
        d = as_data(H5)
        _device_op(d, random.Random(i))
        new = next(j for j, o in enumerate(d["ops"]) if j >= len(ops) or o != ops[j])
        assert d["ops"][new]["op"] == "dma_write" and pin < new <= unpin
        parse_program(d)
        at.add(new)
    assert len(at) > 1


def test_copies_and_swaps_never_use_a_released_pin() -> None:
    for i in range(200):
        for mutation in (_copy, _swap):
            d = as_data(H5)
            mutation(d, random.Random(i))
            parse_program(d)      # raises on a DMA or unpin through a pin no longer held


H1 = load_any(str(CORPUS / "h1-clean-mthp-reclaim.json"))


def test_boundary_puts_part_of_a_large_folio_across_a_table_or_a_vma_end() -> None:
    """Aimed at H1's mTHP, the layouts batching depends on: moved across a page-table
    end, or cut by mprotect, munmap or MADV_DONTNEED; a kswapd reclaim follows."""
    kinds, straddles = set(), 0
    for i in range(200):
        program = mutated(H1, boundary, i)
        [new] = [o for o in program.ops if o.op in ("mremap", "mprotect", "munmap")
                 or (o.op == "madvise" and o.advice.value == "MADV_DONTNEED")]
        kinds.add(new.op if new.op != "madvise" else "dontneed")
        folio = range(0x200000, 0x200000 + 16 * 4096)
        assert new.addr in folio and new.addr + new.pages * 4096 <= folio.stop
        if new.op == "mremap":
            end = new.new_addr + new.pages * 4096
            straddles += new.new_addr // 0x200000 != (end - 1) // 0x200000
        assert any(o.op == "reclaim" for o in program.ops[program.ops.index(new) + 1:])
    assert kinds == {"mremap", "mprotect", "munmap", "dontneed"}
    assert straddles > 20


def test_the_out_of_bounds_batch_is_one_boundary_mutation_from_h1() -> None:
    """From H1, with no mremap in it, a boundary mutation reaches v6.15's out-of-bounds
    batch (ddd05742b45b) often."""
    spec = TARGETS[Target.OOB_BATCH]
    hits = 0
    for i in range(200):
        program = mutated(H1, boundary, i)
        hits += spec.match(program, differential(program, spec.engine_a, spec.engine_b)) is not None
    assert hits >= 10
