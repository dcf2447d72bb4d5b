"""The program format: what loads, what is refused, and the JSON Schema.

Every refusal is a :class:`ProgramError` that names the offending field and
value; the tests check both, not only the message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engine.errors import ProgramError
from engine.mm.sched import YieldPoint
from engine.program.format import (
    MAX_THREADS,
    TASK_SIZE,
    Advice,
    DmaWrite,
    Fork,
    Mmap,
    Pin,
    Program,
    ThreadKind,
    check_program,
    load_program,
    loads_program,
    parse_program,
    program_json_schema,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "engine" / "program" / "schema" / "program-v2.json"

THP = 0x200000          # a 2 MiB-aligned address
T0 = {"name": "T0", "kind": "task", "mm": 0}
T1 = {"name": "T1", "kind": "task", "mm": 1}
RECLAIM = {"name": "reclaim", "kind": "kthread"}
DMA = {"name": "dma", "kind": "device"}
MMAP = {"thread": "T0", "op": "mmap", "addr": THP, "pages": 512, "order": 9}


def program(ops: list[dict[str, Any]], threads: list[dict[str, Any]] | None = None,
            **top: Any) -> dict[str, Any]:
    """A program as decoded JSON: T0 alone unless ``threads`` says otherwise."""
    return {"version": 2, "threads": threads or [T0], "ops": ops} | top


#: Every operation kind, in a program that is valid as a whole.
FULL = program(
    threads=[T0, T1, RECLAIM, {"name": "walker", "kind": "kthread"}, DMA],
    ops=[
        MMAP,
        {"thread": "T0", "op": "mmap", "addr": 2 * THP, "pages": 32, "order": 4,
         "droppable": True, "locked": False},
        {"thread": "T0", "op": "write", "addr": THP, "pages": 512, "value": 7},
        {"thread": "T0", "op": "fork", "child": 1},
        {"thread": "T0", "op": "madvise", "addr": THP, "pages": 512, "advice": "MADV_FREE"},
        {"thread": "T1", "op": "read", "addr": THP, "pages": 2},
        {"thread": "T0", "op": "pin", "addr": 2 * THP, "pages": 16, "pin": "p0"},
        {"thread": "dma", "op": "dma_write", "pin": "p0", "value": 9},
        {"thread": "dma", "op": "unpin", "pin": "p0", "dirty": True},
        {"thread": "walker", "op": "folio_try_get", "mm": 1, "addr": THP, "ref": "r0"},
        {"thread": "reclaim", "op": "reclaim", "nr_to_scan": 64},
        {"thread": "reclaim", "op": "deferred_split_scan"},
        {"thread": "walker", "op": "folio_put", "ref": "r0"},
        {"thread": "T0", "op": "mprotect", "addr": 2 * THP, "pages": 16, "prot": "r"},
        {"thread": "T0", "op": "mremap", "addr": 2 * THP, "pages": 16, "new_addr": 8 * THP},
        {"thread": "T0", "op": "read", "addr": 8 * THP, "pages": 16},
        {"thread": "T0", "op": "munmap", "addr": THP, "pages": 512},
        {"thread": "T1", "op": "lru_add_drain"},
    ],
    schedule=[{"op": None, "at": "start", "nth": 1, "thread": "reclaim"},
              {"op": 4, "at": "between_folios", "nth": 2, "thread": "T1"},
              {"op": 10, "at": "pte_cleared", "nth": 1, "thread": "walker"}],
)


# --- good programs ------------------------------------------------------------


def test_minimal_program_loads() -> None:
    p = parse_program(program([]))
    assert p.threads[0].kind is ThreadKind.TASK
    assert p.ops == [] and p.schedule == []


def test_full_program_loads_with_defaults_filled_in() -> None:
    p = parse_program(FULL)
    assert len(p.ops) == len(FULL["ops"])
    assert p.ops[0] == Mmap(thread="T0", addr=THP, pages=512, order=9)
    assert isinstance(p.ops[3], Fork) and p.ops[3].child == 1
    assert p.ops[4].advice is Advice.MADV_FREE
    pin = p.ops[6]
    assert isinstance(pin, Pin) and pin.write and pin.fast          # defaults
    assert isinstance(p.ops[7], DmaWrite)
    assert p.ops[11].nr_to_scan == 128                                # default
    assert [e.place for e in p.schedule] == [(None, YieldPoint.START, 1),
                                             (4, YieldPoint.BETWEEN_FOLIOS, 2),
                                             (10, YieldPoint.PTE_CLEARED, 1)]
    assert [e.thread for e in p.schedule] == ["reclaim", "T1", "walker"]


def test_json_round_trip() -> None:
    p = parse_program(FULL)
    assert loads_program(p.to_json()) == p
    assert loads_program(p.to_json(indent=None).encode()) == p
    assert json.loads(p.to_json())["ops"][4]["advice"] == "MADV_FREE"


def test_load_program_from_file(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(FULL))
    assert load_program(str(path)) == parse_program(FULL)


def test_regions_of_ancestors_and_later_mmaps_count() -> None:
    """A child may touch its parent's regions; any mmap of the program declares a region."""
    parse_program(program(threads=[T0, T1], ops=[
        {"thread": "T1", "op": "write", "addr": 4 * THP, "value": 1},   # mapped later, by T0
        {"thread": "T0", "op": "fork", "child": 1},
        {"thread": "T0", "op": "mmap", "addr": 4 * THP, "pages": 1},
    ]))


def test_range_across_adjacent_regions() -> None:
    parse_program(program([
        {"thread": "T0", "op": "mmap", "addr": THP, "pages": 4},
        {"thread": "T0", "op": "mmap", "addr": THP + 4 * 4096, "pages": 4},
        {"thread": "T0", "op": "madvise", "addr": THP, "pages": 8, "advice": "MADV_FREE"},
    ]))


def test_check_method_returns_the_program() -> None:
    p = parse_program(FULL)
    assert p.check() is p


# --- bad programs -----------------------------------------------------------


def reject(data: Any) -> ProgramError:
    with pytest.raises(ProgramError) as info:
        parse_program(data)
    return info.value


BAD: dict[str, tuple[dict[str, Any], str, Any]] = {
    "unknown operation": (
        program([MMAP, {"thread": "T0", "op": "frobnicate"}]), "ops[1].op", "frobnicate"),
    "missing operation": (program([MMAP, {"thread": "T0"}]), "ops[1].op", None),
    "address outside every VMA": (
        program([MMAP, {"thread": "T0", "op": "read", "addr": 3 * THP}]), "ops[1].addr", hex(3 * THP)),
    "range running off the end of a VMA": (
        program([MMAP, {"thread": "T0", "op": "write", "addr": 2 * THP - 4096, "pages": 2,
                        "value": 1}]), "ops[1].addr", hex(2 * THP - 4096)),
    "address in another process": (
        program(threads=[T0, T1], ops=[
            {"thread": "T0", "op": "fork", "child": 1},
            {"thread": "T1", "op": "mmap", "addr": THP, "pages": 1},
            {"thread": "T0", "op": "read", "addr": THP}]), "ops[2].addr", hex(THP)),
    "unknown thread": (program([MMAP, {"thread": "T9", "op": "lru_add_drain"}]), "ops[1].thread", "T9"),
    "bad order": (program([MMAP | {"order": 3}]), "ops[0].order", 3),
    "unaligned address": (program([MMAP | {"addr": THP + 1}]), "ops[0].addr", THP + 1),
    "unaligned new_addr": (
        program([MMAP, {"thread": "T0", "op": "mremap", "addr": THP, "pages": 1, "new_addr": 5}]),
        "ops[1].new_addr", 5),
    "address beyond TASK_SIZE": (program([MMAP | {"addr": TASK_SIZE}]), "ops[0].addr", TASK_SIZE),
    "mmap ending beyond TASK_SIZE": (
        program([MMAP | {"addr": TASK_SIZE - 4096, "pages": 2}]), "ops[0].pages", 2),
    "mremap ending beyond TASK_SIZE": (
        program([MMAP, {"thread": "T0", "op": "mremap", "addr": THP, "pages": 2,
                        "new_addr": TASK_SIZE - 4096}]), "ops[1].new_addr", TASK_SIZE - 4096),
    "zero pages": (program([MMAP | {"pages": 0}]), "ops[0].pages", 0),
    "value out of range": (
        program([MMAP, {"thread": "T0", "op": "write", "addr": THP, "value": 1 << 32}]),
        "ops[1].value", 1 << 32),
    "unknown advice": (
        program([MMAP, {"thread": "T0", "op": "madvise", "addr": THP, "pages": 1,
                        "advice": "MADV_COLD"}]), "ops[1].advice", "MADV_COLD"),
    "unknown field in an operation": (
        program([MMAP, {"thread": "T0", "op": "read", "addr": THP, "size": 3}]), "ops[1].size", 3),
    "unknown field in a thread": (program([], threads=[T0 | {"cpu": 1}]), "threads[0].cpu", 1),
    "unknown top-level field": (program([], seed=1), "seed", 1),
    "missing field": (
        program([MMAP, {"thread": "T0", "op": "write", "addr": THP}]), "ops[1].value", None),
    "duplicate pin": (
        program([MMAP, {"thread": "T0", "op": "pin", "addr": THP, "pin": "p0"},
                 {"thread": "T0", "op": "pin", "addr": THP + 4096, "pin": "p0"}]), "ops[2].pin", "p0"),
    "dma_write on unknown pin": (
        program(threads=[T0, DMA], ops=[MMAP, {"thread": "dma", "op": "dma_write", "pin": "p7",
                                               "value": 1}]), "ops[1].pin", "p7"),
    "dma_write before its pin": (
        program(threads=[T0, DMA], ops=[
            MMAP, {"thread": "dma", "op": "dma_write", "pin": "p0", "value": 1},
            {"thread": "T0", "op": "pin", "addr": THP, "pin": "p0"}]), "ops[1].pin", "p0"),
    "dma_write into a read-only pin": (
        program(threads=[T0, DMA], ops=[
            MMAP, {"thread": "T0", "op": "pin", "addr": THP, "pin": "p0", "write": False},
            {"thread": "dma", "op": "dma_write", "pin": "p0", "value": 1}]), "ops[2].pin", "p0"),
    "unpin of unknown pin": (program([MMAP, {"thread": "T0", "op": "unpin", "pin": "p3"}]),
                             "ops[1].pin", "p3"),
    "duplicate reference": (
        program(threads=[T0, RECLAIM], ops=[
            MMAP, {"thread": "reclaim", "op": "folio_try_get", "addr": THP, "ref": "r0"},
            {"thread": "reclaim", "op": "folio_try_get", "addr": THP, "ref": "r0"}]),
        "ops[2].ref", "r0"),
    "folio_put of unknown reference": (
        program(threads=[T0, RECLAIM], ops=[MMAP, {"thread": "reclaim", "op": "folio_put",
                                                   "ref": "r1"}]), "ops[1].ref", "r1"),
    "thread in an mm no fork creates": (program([], threads=[T0, {"name": "T1", "mm": 3}]),
                                        "threads[1].mm", 3),
    "folio_try_get in an mm no fork creates": (
        program(threads=[T0, RECLAIM], ops=[
            MMAP, {"thread": "reclaim", "op": "folio_try_get", "mm": 5, "addr": THP, "ref": "r0"}]),
        "ops[1].mm", 5),
    "mm id out of range": (program([], threads=[T0, {"name": "T1", "mm": 16}]), "threads[1].mm", 16),
    "fork of mm 0": (program([{"thread": "T0", "op": "fork", "child": 0}]), "ops[0].child", 0),
    "fork of an mm twice": (
        program([{"thread": "T0", "op": "fork", "child": 2}, {"thread": "T0", "op": "fork", "child": 2}]),
        "ops[1].child", 2),
    "fork into itself": (
        program(threads=[T0, T1], ops=[{"thread": "T1", "op": "fork", "child": 1},
                                       {"thread": "T0", "op": "fork", "child": 1}]),
        "ops[0].child", 1),
    "schedule place taken twice": (
        program([MMAP], schedule=[{"op": 0, "at": "op_end", "thread": "T0"},
                                  {"op": 0, "at": "op_end", "nth": 1, "thread": "T0"}]),
        "schedule[1]", {"op": 0, "at": "op_end", "nth": 1, "thread": "T0"}),
    "schedule op out of range": (program([MMAP], schedule=[{"op": 1, "at": "wait", "thread": "T0"}]),
                                 "schedule[0].op", 1),
    "negative schedule op": (program([MMAP], schedule=[{"op": -1, "at": "wait", "thread": "T0"}]),
                             "schedule[0].op", -1),
    "schedule occurrence zero": (program([MMAP], schedule=[{"op": 0, "at": "wait", "nth": 0,
                                                            "thread": "T0"}]), "schedule[0].nth", 0),
    "start with an operation": (program([MMAP], schedule=[{"op": 0, "at": "start", "thread": "T0"}]),
                                "schedule[0].op", 0),
    "place without its operation": (program([MMAP], schedule=[{"at": "between_ptes",
                                                               "thread": "T0"}]),
                                    "schedule[0].op", None),
    "op end twice": (program([MMAP], schedule=[{"op": 0, "at": "op_end", "nth": 2, "thread": "T0"}]),
                     "schedule[0].nth", 2),
    "unknown yield point": (program([MMAP], schedule=[{"op": 0, "at": "anywhere", "thread": "T0"}]),
                            "schedule[0].at", "anywhere"),
    "schedule names unknown thread": (program([MMAP], schedule=[{"op": 0, "at": "op_end",
                                                                 "thread": "T9"}]),
                                      "schedule[0].thread", "T9"),
    "format-1 step schedule": (program([MMAP], schedule=[[3, "T0"]]) | {"version": 1},
                               "schedule", [[3, "T0"]]),
    "DMA through a released pin": (
        program(threads=[T0, DMA], ops=[MMAP, {"thread": "T0", "op": "pin", "addr": THP, "pin": "p0"},
                                        {"thread": "T0", "op": "unpin", "pin": "p0"},
                                        {"thread": "dma", "op": "dma_write", "pin": "p0", "value": 1}]),
        "ops[3].pin", "p0"),
    "second unpin": (
        program([MMAP, {"thread": "T0", "op": "pin", "addr": THP, "pin": "p0"},
                 {"thread": "T0", "op": "unpin", "pin": "p0"},
                 {"thread": "T0", "op": "unpin", "pin": "p0", "dirty": False}]),
        "ops[3].pin", "p0"),
    "wrong version": (program([]) | {"version": 3}, "version", 3),
    "missing version": ({"threads": [T0], "ops": []}, "version", None),
    "op not allowed for a kthread": (
        program(threads=[T0, RECLAIM], ops=[MMAP, {"thread": "reclaim", "op": "write",
                                                   "addr": THP, "value": 1}]), "ops[1].op", "write"),
    "op not allowed for a task": (program([MMAP, {"thread": "T0", "op": "reclaim"}]),
                                  "ops[1].op", "reclaim"),
    "op not allowed for a device": (
        program(threads=[T0, DMA], ops=[MMAP, {"thread": "dma", "op": "read", "addr": THP}]),
        "ops[1].op", "read"),
    "duplicate thread name": (program([], threads=[T0, T0]), "threads[1].name", "T0"),
    "task without an mm": (program([], threads=[T0, {"name": "T1"}]), "threads[1].mm", None),
    "kthread with an mm": (program([], threads=[T0, RECLAIM | {"mm": 0}]), "threads[1].mm", 0),
    "bad thread name": (program([], threads=[T0, RECLAIM | {"name": "9x"}]), "threads[1].name", "9x"),
    "bad thread kind": (program([], threads=[T0 | {"kind": "cpu"}]), "threads[0].kind", "cpu"),
    "no threads": (program([]) | {"threads": []}, "threads", []),
}


@pytest.mark.parametrize("data, field, value", list(BAD.values()), ids=list(BAD))
def test_bad_program_names_field_and_value(data: dict[str, Any], field: str, value: Any) -> None:
    err = reject(data)
    assert (err.field, err.value) == (field, value)
    assert field in str(err)


def test_too_many_threads() -> None:
    threads = [T0] + [{"name": f"k{i}", "kind": "kthread"} for i in range(MAX_THREADS)]
    err = reject(program([], threads=threads))
    assert err.field == "threads"
    assert len(err.value) == MAX_THREADS + 1


@pytest.mark.parametrize("text, value", [
    ("{", None),
    (b"\xff\xfe", None),
    ("[1, 2]", "list"),
    ("null", "NoneType"),
    ('"program"', "str"),
], ids=["truncated", "not utf-8", "array", "null", "string"])
def test_not_a_json_object(text: str | bytes, value: str | None) -> None:
    with pytest.raises(ProgramError) as info:
        loads_program(text)
    assert info.value.field == "program"
    if value is None:
        assert info.value.reason == "not valid JSON" and isinstance(info.value.value, str)
    else:
        assert info.value.value == value


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.json")
    with pytest.raises(ProgramError) as info:
        load_program(path)
    assert (info.value.field, info.value.value) == ("path", path)


def test_check_program_rejects_a_constructed_program() -> None:
    """check_program() guards programs built in Python, not only parsed ones."""
    p = Program(threads=[T0], ops=[{"thread": "T0", "op": "read", "addr": THP}])
    with pytest.raises(ProgramError) as info:
        check_program(p)
    assert (info.value.field, info.value.value) == ("ops[0].addr", hex(THP))


# --- the JSON Schema ------------------------------------------------------------


def test_committed_schema_is_the_generated_one() -> None:
    """engine/program/schema/program-v2.json is program_json_schema(), pretty-printed with sorted keys."""
    expected = json.dumps(program_json_schema(), indent=2, sort_keys=True) + "\n"
    assert SCHEMA_PATH.read_text() == expected, (
        "regenerate engine/program/schema/program-v2.json from program_json_schema()")


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_corpus_programs_match_the_schema(validator: jsonschema.protocols.Validator) -> None:
    for path in sorted((REPO / "corpus").glob("*.json")):
        entry = json.loads(path.read_text())
        errors = [e.message for e in validator.iter_errors(entry["program"])]
        assert not errors, f"{path.name}: {errors[:3]}"


def test_schema_accepts_good_programs(validator: jsonschema.protocols.Validator) -> None:
    validator.validate(FULL)
    validator.validate(parse_program(FULL).to_dict())


@pytest.mark.parametrize("name", ["unknown operation", "bad order", "unaligned address",
                                  "unknown field in an operation", "wrong version",
                                  "bad thread kind", "zero pages", "negative schedule op",
                                  "unknown yield point", "schedule occurrence zero"])
def test_schema_rejects_what_the_model_rejects(validator: jsonschema.protocols.Validator,
                                               name: str) -> None:
    assert not validator.is_valid(BAD[name][0])
