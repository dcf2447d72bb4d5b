"""Delta debugging: real findings, padded with irrelevant work, come back small."""

from __future__ import annotations

import pathlib

import pytest

from engine.corpus.entries import load_any
from engine.diff.differential import differential
from engine.mm.sched import YieldPoint
from engine.program.format import Preemption, Program, parse_program, renumber_schedule
from fuzz.errors import NotInterestingError
from fuzz.minimize import Pass, ddmin, minimize, minimize_divergence
from fuzz.schedule import Exhaustive

CORPUS = pathlib.Path(__file__).resolve().parents[2] / "corpus"
PAD = 0x40000000        # a region no scenario touches


def corpus(name: str) -> Program:
    return load_any(str(CORPUS / f"{name}.json"))


def pad(program: Program) -> Program:
    """``program`` with two more threads and ten operations it does not need, spread through
    it; its preemptions stay on their operations."""
    data = program.to_dict()
    data["threads"] += [{"name": "Y", "kind": "task", "mm": 0}, {"name": "X", "kind": "kthread"}]
    filler = [dict(thread="Y", op="mmap", addr=PAD, pages=4, order=0),
              dict(thread="Y", op="write", addr=PAD, pages=4, value=3),
              dict(thread="X", op="folio_try_get", addr=PAD + 4096, ref="r9"),
              dict(thread="Y", op="read", addr=PAD, pages=2),
              dict(thread="T0", op="write", addr=PAD + 8192, value=5),
              dict(thread="X", op="folio_put", ref="r9"),
              dict(thread="Y", op="mprotect", addr=PAD, pages=1, prot="r"),
              dict(thread="Y", op="read", addr=PAD + 8192, pages=2),
              dict(thread="T0", op="lru_add_drain"),
              dict(thread="Y", op="munmap", addr=PAD + 12288, pages=1)]
    ops = list(data["ops"])
    out = []
    index = {}
    for i, op in enumerate(ops):
        out += filler[i::len(ops)][:1] if i < len(filler) else []
        index[i] = len(out)
        out.append(op)
    used = {id(o) for o in out}
    out += [f for f in filler if id(f) not in used]
    data["ops"] = out
    data["schedule"] = renumber_schedule(data["schedule"], index.get)
    return parse_program(data)


def signature_ids(program: Program, a: str, b: str) -> set[str]:
    return {d.signature_id for d in differential(program, a, b).divergences}


def check(padded: Program, a: str, b: str, sig: str):
    assert sig in signature_ids(padded, a, b), "padding lost the finding: the test proves nothing"
    res = minimize_divergence(padded, a, b, sig)
    assert not res.exhausted
    assert len(res.program.ops) <= 6, res.program.to_json(None)
    assert len(res.program.ops) < len(padded.ops) - 5
    # replaying the minimized program gives the same signature, from its JSON too
    again = parse_program(res.program.to_dict())
    assert sig in signature_ids(again, a, b)
    assert res.runs <= 2000 and res.reductions
    return res


def test_v5_17_dma_data_loss():
    h5 = corpus("h5-dma-into-lazyfree")
    [d] = differential(h5, "v5.17", "v6.14").divergences
    assert d.kind.value == "data_loss" and d.classification.value == "unexpected"
    # grouped by the decision that lost the data, not by the read that noticed
    # it: the minimizer may drop the read (the final contents check notices)
    assert d.signature.endswith("|cause|try_to_unmap_one<try_to_unmap<_shrink_one|dma_write")
    res = check(pad(h5), "v5.17", "v6.14", d.signature_id)
    kinds = [op.op for op in res.program.ops]
    assert {"pin", "dma_write"} <= set(kinds)
    assert "Y" not in {t.name for t in res.program.threads}


H2_RACE = Preemption(op=3, at=YieldPoint.BETWEEN_PTES, nth=1, thread="S")


def test_spurious_swapbacked_under_the_shrinkers_reference():
    h2 = corpus("h2-shrinker-ref-between-ptes")
    assert h2.schedule == [H2_RACE]
    [d] = differential(h2, "v6.14", "v6.15").divergences
    assert "swapbacked-only-if-dirty" in d.signature
    padded = pad(h2)
    # padding moved the PAGEOUT; its preemption moved with it, and the minimizer
    # moves it back as it removes the padding
    (e,) = padded.schedule
    assert e.op > 3 and padded.ops[e.op] == h2.ops[3]
    res = check(padded, "v6.14", "v6.15", d.signature_id)
    assert res.program.schedule, "the race cannot happen without its preemption"
    (e,) = res.program.schedule
    assert res.program.ops[e.op] == h2.ops[3] and (e.at, e.nth, e.thread) == (
        H2_RACE.at, H2_RACE.nth, H2_RACE.thread)
    assert any(op.op == "deferred_split_scan" for op in res.program.ops)


def test_a_race_a_schedule_search_found_is_minimized_to_its_preemption():
    """From the schedule an explorer recorded (every place where its run left the
    op-order policy), delta debugging keeps the race and little else."""
    h2 = corpus("h2-shrinker-ref-between-ptes")
    [d] = differential(h2, "v6.14", "v6.15").divergences
    padded = pad(h2.model_copy(update={"schedule": []}))
    assert d.signature_id not in signature_ids(padded, "v6.14", "v6.15")
    found = next(p for p in Exhaustive(padded, "v6.14", 1)
                 if d.signature_id in signature_ids(p, "v6.14", "v6.15"))
    res = check(found, "v6.14", "v6.15", d.signature_id)
    assert 1 <= len(res.program.schedule) <= 2
    e = res.program.schedule[0]
    assert res.program.ops[e.op].op == "madvise" and e.thread == "S"


def test_removing_operations_and_threads_renumbers_the_schedule():
    """Entries follow their operations; a removed thread's entries go with it."""
    h2 = corpus("h2-shrinker-ref-between-ptes")
    data = pad(h2).to_dict()
    # a preemption for a thread the race does not need, at the end of the mmap it needs
    mmap = next(i for i, op in enumerate(data["ops"]) if op == h2.ops[0].model_dump(mode="json"))
    data["schedule"].append({"op": mmap, "at": "op_end", "nth": 1, "thread": "X"})
    padded = parse_program(data)
    race = [d.signature_id for d in differential(h2, "v6.14", "v6.15").divergences]
    res = minimize(padded, lambda p: signature_ids(p, "v6.14", "v6.15") == set(race))
    assert res.removed(Pass.THREADS) and not res.removed(Pass.SCHEDULE)
    assert {t.name for t in res.program.threads} <= {"T0", "R", "S", "D"}
    (e,) = res.program.schedule
    assert e.thread == "S" and res.program.ops[e.op] == h2.ops[3]


def test_split_of_a_redirtied_lazyfree_pmd_thp():
    h8 = corpus("h8-pmd-thp-redirty")
    [d] = differential(h8, "v6.14", "v6.15").divergences
    assert "no-pmd-split-for-lazyfree" in d.signature
    res = check(pad(h8), "v6.14", "v6.15", d.signature_id)
    assert res.removed(Pass.THREADS) and (res.removed(Pass.OPS) or res.removed(Pass.HOIST))


def test_minimization_is_deterministic_and_cached():
    h5 = pad(corpus("h5-dma-into-lazyfree"))
    sig = differential(h5, "v5.17", "v6.14").divergences[0].signature_id
    asked: list[str] = []

    def interesting(p):
        asked.append(p.to_json(None))
        return sig in signature_ids(p, "v5.17", "v6.14")

    a = minimize(h5, interesting)
    b = minimize(h5, interesting)
    assert a.program == b.program and a.runs == b.runs and a.reductions == b.reductions
    assert len(asked) == 2 * a.runs
    assert len(set(asked)) == a.runs       # never the same candidate twice


def test_invalid_candidates_are_uninteresting_not_errors():
    h5 = corpus("h5-dma-into-lazyfree")
    # keeping the dma_write makes its pin necessary: removals that break it are just rejected
    res = minimize(h5, lambda p: any(op.op == "dma_write" for op in p.ops))
    assert [op.op for op in res.program.ops] == ["pin", "dma_write"] or \
        [op.op for op in res.program.ops] == ["mmap", "pin", "dma_write"]
    assert res.invalid > 0


def test_budget_stops_with_the_best_so_far():
    h5 = pad(corpus("h5-dma-into-lazyfree"))
    sig = differential(h5, "v5.17", "v6.14").divergences[0].signature_id
    res = minimize_divergence(h5, "v5.17", "v6.14", sig, max_runs=5)
    assert res.exhausted and res.runs == 5
    assert sig in signature_ids(res.program, "v5.17", "v6.14")


def test_not_interesting_to_begin_with():
    with pytest.raises(NotInterestingError, match="deadbeef"):
        minimize_divergence(corpus("h5-dma-into-lazyfree"), "v5.17", "v6.14", "deadbeef")


@pytest.mark.parametrize("need", [{3}, {0, 9}, {2, 3, 5, 7}, set()])
def test_ddmin_finds_the_needed_items(need):
    calls = []

    def test(sub):
        calls.append(list(sub))
        return need <= set(sub)

    assert sorted(ddmin(range(10), test)) == sorted(need)
    assert len(calls) <= 10 * 10     # ddmin's worst case is quadratic
