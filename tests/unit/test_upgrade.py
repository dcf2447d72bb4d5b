"""Format-1 programs (global step schedules) read into format 2 on one engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.corpus.entries import load_any
from engine.corpus.upgrade import DEFAULT_READING, read_program, upgrade_program
from engine.errors import ProgramError, UnknownEngineError
from engine.execution.runner import run
from engine.mm.sched import YieldPoint
from engine.program.format import PROGRAM_VERSION, parse_program

DATA = Path(__file__).resolve().parents[1] / "data" / "format1"
RECORDED = json.loads((DATA / "programs.json").read_text())
A = 0x200000

#: H2 as corpus/h2-shrinker-ref-between-ptes.json held it in format 1.
H2_V1 = json.loads((DATA / "h2.json").read_text())


@pytest.mark.parametrize("i", range(len(RECORDED)))
def test_upgraded_program_runs_as_before_on_its_reading_engine(i: int) -> None:
    """On its reading engine an upgraded program runs what the format-1 program ran
    with step semantics, outcome for outcome (the same model on both sides: the
    digests 5a80619 recorded beside each program are history, since model fixes
    change outcomes)."""
    rec = RECORDED[i]
    for engine in rec["outcomes"]:
        up = upgrade_program(rec["program"], engine)
        assert up.reading == engine and up.program.version == PROGRAM_VERSION
        assert not up.dropped and up.reading_run is not None
        assert run(up.program, engine).comparable() == up.reading_run.comparable(), (engine, up.note)


def test_h2_reads_as_the_window_between_two_ptes_on_v6_14() -> None:
    up = upgrade_program(H2_V1, "v6.14")
    assert [(e.op, e.at, e.nth, e.thread) for e in up.program.schedule] == [
        (3, YieldPoint.BETWEEN_PTES, 1, "S")]
    assert "read on v6.14" in up.note
    # v6.15's batch has no such window: the shrinker runs when the PAGEOUT is done
    out = run(up.program, "v6.15")
    assert out.comparable()["counter.PGLAZYFREED"] == 16
    assert run(up.program, "v6.14").comparable()["counter.nr_lazyfree_fail"] == 16


def test_reading_engine_decides_the_places() -> None:
    """The same steps are other places on another engine: the upgrade says which it kept."""
    on_old = upgrade_program(H2_V1, "v6.14").program.schedule
    on_new = upgrade_program(H2_V1, "v6.15").program.schedule
    assert on_old != on_new
    assert on_new[0].at is YieldPoint.BEFORE_FREEZE


def test_format_1_without_a_schedule_is_the_same_program() -> None:
    data = {**H2_V1, "schedule": []}
    up = upgrade_program(data)
    assert up.reading is None and up.program == parse_program({**data, "version": 2})
    assert parse_program(data) == up.program


def test_format_2_comes_back_unchanged() -> None:
    p = upgrade_program(H2_V1).program
    up = upgrade_program(p.to_dict())
    assert up.program == p and up.note == ""


def test_ops_format_2_refuses_are_dropped_and_named() -> None:
    data = {"version": 1,
            "threads": [{"name": "T0", "mm": 0}, {"name": "D", "kind": "device"}],
            "ops": [{"thread": "T0", "op": "mmap", "addr": A, "pages": 1},
                    {"thread": "T0", "op": "pin", "addr": A, "pin": "p0"},
                    {"thread": "T0", "op": "unpin", "pin": "p0"},
                    {"thread": "D", "op": "dma_write", "pin": "p0", "value": 3},
                    {"thread": "T0", "op": "unpin", "pin": "p0"},
                    {"thread": "T0", "op": "read", "addr": A}],
            "schedule": [[3, "D"]]}
    up = upgrade_program(data, "v6.15")
    assert up.dropped == (3, 4)
    assert "[3], [4]" in up.note
    assert [op.op for op in up.program.ops] == ["mmap", "pin", "unpin", "read"]
    assert all(e.op is None or e.op < 4 for e in up.program.schedule)


def test_bad_format_1_schedules_name_the_field() -> None:
    for schedule, field in (([[3, "T0"], [3, "T0"]], "schedule[1][0]"),
                            ([[0, "T9"]], "schedule[0][1]"),
                            ([["x", "T0"]], "schedule[0]"),
                            ("soon", "schedule")):
        with pytest.raises(ProgramError) as info:
            upgrade_program({**H2_V1, "schedule": schedule})
        assert info.value.field == field
    with pytest.raises(UnknownEngineError):
        upgrade_program(H2_V1, "v9.9")


def test_loaders_read_format_1(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(H2_V1))
    assert load_any(str(path), reading="v6.14") == upgrade_program(H2_V1, "v6.14").program
    assert read_program(H2_V1) == upgrade_program(H2_V1, DEFAULT_READING).program
    corpus_file = tmp_path / "entry.json"
    corpus_file.write_text(json.dumps({"name": "x", "program": H2_V1, "expect": {}}))
    assert load_any(str(corpus_file), reading="v6.15").schedule[0].at is YieldPoint.BEFORE_FREEZE
