"""The differential runner's classification, including runs that interleave differently."""

from __future__ import annotations

import json

from engine.corpus.upgrade import upgrade_program
from engine.diff.differential import _parting_ops, differential, normalize_field
from engine.execution.outcome import TraceEntry
from engine.program.format import parse_program

# Found by sweeping random programs: the schedule leaves an operation in flight
# while a later one completes.  Format-1 programs, read on the older engine of
# each test's pair.
# One segment of the mTHP fault (op 6) runs before op 5 completes.
EARLY_FAULT = json.loads('{"version": 1, "threads": [{"name": "T0", "kind": "task", "mm": 0}, {"name": "T1", "kind": "task", "mm": 1}, {"name": "shrinker", "kind": "kthread", "mm": null}], "ops": [{"thread": "T0", "op": "mmap", "addr": 240582656, "pages": 1, "order": 0, "droppable": false, "locked": false}, {"thread": "T0", "op": "mmap", "addr": 72548352, "pages": 64, "order": 4, "droppable": false, "locked": false}, {"thread": "T0", "op": "mmap", "addr": 417333248, "pages": 512, "order": 9, "droppable": false, "locked": false}, {"thread": "shrinker", "op": "reclaim", "nr_to_scan": 32}, {"thread": "shrinker", "op": "folio_try_get", "mm": 0, "addr": 72744960, "ref": "r0"}, {"thread": "shrinker", "op": "folio_try_get", "mm": 0, "addr": 417333248, "ref": "r1"}, {"thread": "T0", "op": "write", "addr": 72744960, "pages": 16, "value": 9}, {"thread": "T0", "op": "madvise", "addr": 240582656, "pages": 1, "advice": "MADV_FREE"}, {"thread": "T0", "op": "lru_add_drain"}, {"thread": "T0", "op": "fork", "child": 1}], "schedule": [[2, "T0"], [5, "T0"], [12, "shrinker"]]}')  # noqa: E501 - one program, as stored


def _snap(op: int, state: str, inflight: list[int]) -> TraceEntry:
    return TraceEntry(op, {"x": state}, [], inflight)


def test_cause_still_in_flight_is_in_the_window():
    """The reclaim (op 1) is still in flight when op 2 completes differently; op 1
    ends the same in both runs.  Its events must be read, though it is not the
    parting op.  (A program once showed this on v5.17..v5.18: a pinned page that
    v5.17 swapped out, which feb889fb40fa says no version does.)"""
    ta = [_snap(0, "a", []), _snap(2, "b", [1]), _snap(1, "c", [])]
    tb = [_snap(0, "a", []), _snap(2, "B", [1]), _snap(1, "c", [])]
    assert _parting_ops(ta, tb) == (2, {1, 2})


def test_ops_completed_alike_before_the_parting_stay_out_of_the_window():
    ta = [_snap(0, "a", []), _snap(1, "b", []), _snap(2, "c", [])]
    tb = [_snap(0, "a", []), _snap(1, "b", []), _snap(2, "C", [])]
    assert _parting_ops(ta, tb) == (2, {2})


def test_cause_that_ran_early_is_found():
    report = differential(upgrade_program(EARLY_FAULT, "v5.18").program, "v5.18", "v6.14")
    [d] = report.divergences
    assert d.classification.value == "intended"
    assert "anon-mthp-faults" in [r.name for r in d.rules]


def test_signatures_are_stable_and_free_of_addresses():
    assert normalize_field("mm0.pte[0x200000]") == "mm.pte"
    assert normalize_field("folio.f12.flags") == "folio.flags"
    assert normalize_field("result[7]") == "result"
    assert normalize_field("mthp.split_deferred[4]") == "mthp.split_deferred[4]"
    a = differential(upgrade_program(EARLY_FAULT, "v5.18").program, "v5.18", "v6.14").divergences[0]
    b = differential(upgrade_program(EARLY_FAULT, "v5.18").program, "v5.18", "v6.14").divergences[0]
    assert a.signature == b.signature and a.signature_id == b.signature_id


def test_every_differing_field_has_its_first_op():
    report = differential(upgrade_program(EARLY_FAULT, "v5.18").program, "v5.18", "v6.14")
    [d] = report.divergences
    assert d.fields and all(f.first_op is not None for f in d.fields)
    assert d.first_op == min(f.first_op for f in d.fields)


# The README's campaign (random, v5.17,v6.14) stored this as unexpected: v6.14
# flags the THP it queued (underused, at its fault) PG_partially_mapped when
# mremap moves one page away, and counts it in nr_anon_partially_mapped, a stat
# v5.17 does not have.  Both runs queue the folio as partially mapped.
PARTIAL_THP = {"version": 2,
               "threads": [{"name": "T0", "kind": "task", "mm": 0},
                           {"name": "S", "kind": "kthread", "mm": None}],
               "ops": [{"thread": "T0", "op": "mmap", "addr": 2097152, "pages": 512, "order": 9},
                       {"thread": "T0", "op": "write", "addr": 2101248, "pages": 7, "value": 1},
                       {"thread": "S", "op": "deferred_split_scan", "nr_to_scan": 1},
                       {"thread": "T0", "op": "mremap", "addr": 2097152, "pages": 1,
                        "new_addr": 3014656}],
               "schedule": [{"op": 1, "at": "between_pages", "nth": 1, "thread": "S"},
                            {"op": 1, "at": "between_pages", "nth": 5, "thread": "S"}]}


def test_a_stat_the_older_kernel_lacks_is_intended():
    [d] = differential(parse_program(PARTIAL_THP), "v5.17", "v6.14").divergences
    assert d.field == "mthp.nr_anon_partially_mapped[9]"
    assert d.classification.value == "intended"
    assert [r.name for r in d.rules] == ["deferred-split-partially-mapped"]


# The first v6.12,v6.14 campaign after issue 15 added the PMD discard's windows: a
# preemption at pmd_checked, which only v6.14 has (v6.12 runs it at the reclaim's
# end), and a parting seen only at op 5, once both interleavings met again.
PLACE_ONLY_ONE_HAS = {"version": 2,
                      "threads": [{"name": "T0", "kind": "task", "mm": 0},
                                  {"name": "R", "kind": "kthread", "mm": None},
                                  {"name": "S", "kind": "kthread", "mm": None}],
                      "ops": [{"thread": "T0", "op": "mmap", "addr": 2097152, "pages": 512, "order": 9},
                              {"thread": "T0", "op": "write", "addr": 2097152, "pages": 1, "value": 1},
                              {"thread": "T0", "op": "madvise", "addr": 2097152, "pages": 512,
                               "advice": "MADV_FREE"},
                              {"thread": "R", "op": "reclaim", "nr_to_scan": 1},
                              {"thread": "T0", "op": "madvise", "addr": 2097152, "pages": 1,
                               "advice": "MADV_DONTNEED"},
                              {"thread": "S", "op": "deferred_split_scan", "nr_to_scan": 1},
                              {"thread": "T0", "op": "madvise", "addr": 2097152, "pages": 2,
                               "advice": "MADV_FREE"}],
                      "schedule": [{"op": 3, "at": "pmd_checked", "nth": 1, "thread": "T0"},
                                   {"op": 3, "at": "isolated", "nth": 56, "thread": "S"},
                                   {"op": 2, "at": "pte_cleared", "nth": 236, "thread": "S"}]}


def test_a_place_only_one_version_has_joins_the_window():
    report = differential(parse_program(PLACE_ONLY_ONE_HAS), "v6.12", "v6.14")
    [d] = report.divergences
    assert d.first_op > 3 and d.classification.value == "intended"
    assert [r.name for r in d.rules] == ["lazyfree-pmd-discard"]
