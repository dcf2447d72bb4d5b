"""Properties of the byte codec and of the program strategies.

decode() is total (every byte string is a valid program) and encode() is its
exact inverse on valid programs; both strategies draw only valid programs,
which survive JSON and match the JSON Schema.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.codec import THREAD_MENU, decode, encode, thread_ops
from engine.program import (
    MAX_THREADS,
    OPS_BY_KIND,
    FolioTryGet,
    Fork,
    Mmap,
    Program,
    Read,
    Thread,
    ThreadKind,
    Write,
    check_program,
    loads_program,
    parse_program,
)
from fuzz.strategies import any_programs, program_bytes, programs

pytestmark = pytest.mark.property

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "engine" / "schema" /
                     "program-v1.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

# Drawing programs is slower than running the properties on them.
SLOW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FAST = settings(max_examples=500, deadline=None)


def assert_valid(p: Program) -> None:
    check_program(p)
    assert loads_program(p.to_json()) == p


# --- decode is total ----------------------------------------------------------


@FAST
@given(st.binary(max_size=512))
@example(b"")
@example(b"\xff" * 64)                       # raw escapes and varint runs everywhere
@example(b"\x0f\x07" + b"\x00" * 40)         # raw thread list, zero-filled
@example(b"\x3f" + b"\xff" * 300)            # pre-mmaps, then long escapes
def test_decode_is_total(data: bytes) -> None:
    p = decode(data)
    assert_valid(p)
    assert VALIDATOR.is_valid(p.to_dict())


@FAST
@given(st.binary(max_size=512))
def test_decode_encode_decode(data: bytes) -> None:
    p = decode(data)
    assert decode(encode(p)) == p


@FAST
@given(st.binary(max_size=64))
def test_short_inputs_give_short_programs(data: bytes) -> None:
    """At most one operation per byte, plus the pre-mmaps and the repair forks."""
    assert len(decode(data).ops) <= len(data) + 3 + MAX_THREADS


def test_empty_input_is_a_minimal_program() -> None:
    p = decode(b"")
    assert [t.name for t in p.threads] == ["T0"]
    assert p.ops == [] and p.schedule == []


def test_decode_is_deterministic() -> None:
    data = bytes(range(256))
    assert decode(data) == decode(bytes(data)) == decode(bytearray(data))


# --- encode is the inverse of decode ------------------------------------------


@SLOW
@given(programs())
def test_reclaim_shaped_programs_round_trip(p: Program) -> None:
    assert_valid(p)
    assert decode(encode(p)) == p


@SLOW
@given(any_programs())
def test_any_programs_round_trip(p: Program) -> None:
    assert_valid(p)
    assert VALIDATOR.is_valid(p.to_dict())
    assert decode(encode(p)) == p


@SLOW
@given(program_bytes())
def test_program_bytes_decode_to_valid_programs(data: bytes) -> None:
    assert_valid(decode(data))


def test_raw_forms_round_trip() -> None:
    """Operations the compact forms cannot spell: they take the raw escape."""
    p = parse_program({
        "version": 1,
        "threads": [{"name": "main", "kind": "task", "mm": 0},
                    {"name": "kswapd0", "kind": "kthread"}],
        "ops": [
            {"thread": "main", "op": "mmap", "addr": 0x1000, "pages": 4},
            {"thread": "main", "op": "mmap", "addr": 0x5000, "pages": 4, "order": 4},
            # across both regions, with a pin name that is not p<k>
            {"thread": "main", "op": "pin", "addr": 0x3000, "pages": 4, "pin": "buf"},
            {"thread": "kswapd0", "op": "folio_try_get", "addr": 0x6000, "ref": "spec"},
            {"thread": "main", "op": "mremap", "addr": 0x2000, "pages": 5, "new_addr": 0x7ff000000000},
            {"thread": "kswapd0", "op": "folio_put", "ref": "spec"},
            {"thread": "main", "op": "unpin", "pin": "buf", "dirty": False},
            {"thread": "main", "op": "unpin", "pin": "buf"},
        ],
        "schedule": [[0, "kswapd0"], [1 << 60, "main"]],
    })
    data = encode(p)
    assert b"\xff" in data
    assert decode(data) == p


def test_encode_rejects_invalid_programs() -> None:
    p = Program(threads=[{"name": "T0", "mm": 0}], ops=[{"thread": "T0", "op": "read", "addr": 0}])
    with pytest.raises(ValueError):
        encode(p)


# --- decoding by hand: relative addresses and repairs --------------------------

THP = 0x200000
#: An mmap body: order 9, 2 MiB unit, no flags; A = 0 and P = 0: one THP at 2 MiB.
THP_MMAP = bytes([0x00, 0x00, 0x00])
T0_ALONE, T0_RECLAIM, T0_RECLAIM_DMA, T0_T1 = 0, 1, 3, 13   # THREAD_MENU indices
PRE_MMAPS = 1 << 4                                          # header bits 4-5


def sel(menu: int, thread: str, op: str) -> int:
    """The selector byte of ``op`` by ``thread``, as the format describes it."""
    kinds: list[object] = ["schedule"]
    for ti, t in enumerate(THREAD_MENU[menu]):
        kinds += [(t.name, o) for o in thread_ops(t.name, t.kind)]
    return kinds.index((thread, op))


def decoded(data: bytes) -> Program:
    p = decode(data)
    assert_valid(p)
    return p


def test_compact_region_counts_back_from_the_latest() -> None:
    write = sel(T0_ALONE, "T0", "write")
    second = bytes([0x00, 0x01, 0x00])      # one THP at 4 MiB
    p = decoded(bytes([T0_ALONE | 2 * PRE_MMAPS]) + THP_MMAP + second
                + bytes([write, 7, 0, 0, 0,         # K = 0: the THP at 4 MiB
                         write, 8, 1, 3, 0]))       # K = 1, O = 3: page 1 of the one at 2 MiB
    assert p.ops[2:] == [Write(thread="T0", addr=2 * THP, value=7),
                         Write(thread="T0", addr=THP + 4096, value=8)]


def test_raw_range_outside_every_region_moves_into_one() -> None:
    p = decoded(bytes([T0_ALONE | PRE_MMAPS]) + THP_MMAP
                + bytes([0xFF, sel(T0_ALONE, "T0", "read"), 5, 3]))
    assert p.ops[1] == Read(thread="T0", addr=THP, pages=4)


def test_taken_pin_name_is_replaced() -> None:
    pin = sel(T0_ALONE, "T0", "pin")
    name_p0 = bytes([1, 41, 53])            # length 2, "p" and "0"
    p = decoded(bytes([T0_ALONE | PRE_MMAPS]) + THP_MMAP
                + bytes([pin, 0, 0, 0, 0, 0xFF, pin, 0]) + name_p0 + bytes([0, 0]))
    assert [op.pin for op in p.ops[1:]] == ["p0", "p1"]


def test_raw_folio_try_get_outside_every_region_moves_into_one() -> None:
    p = decoded(bytes([T0_RECLAIM | PRE_MMAPS]) + THP_MMAP
                + bytes([0xFF, sel(T0_RECLAIM, "reclaim", "folio_try_get"), 0, 0, 0, 5]))
    assert p.ops[1] == FolioTryGet(thread="reclaim", mm=0, addr=THP, ref="A")


def test_uses_of_nothing_are_dropped() -> None:
    p = decoded(bytes([T0_RECLAIM_DMA, sel(T0_RECLAIM_DMA, "dma", "dma_write"), 0, 1,
                       sel(T0_RECLAIM_DMA, "dma", "unpin"), 0, 0,
                       sel(T0_RECLAIM_DMA, "reclaim", "folio_put"), 0,
                       sel(T0_RECLAIM_DMA, "T0", "write"), 1, 0, 0, 0]))
    assert p.ops == []


def test_forks_beyond_the_fifteenth_child_are_dropped() -> None:
    p = decoded(bytes([T0_ALONE]) + bytes([sel(T0_ALONE, "T0", "fork"), 0]) * 16)
    assert [op.child for op in p.ops] == list(range(1, 16))


def test_missing_fork_is_inserted_before_the_child_runs() -> None:
    p = decoded(bytes([T0_T1 | PRE_MMAPS]) + THP_MMAP
                + bytes([sel(T0_T1, "T1", "write"), 9, 0, 0, 0]))
    assert p.ops == [Mmap(thread="T0", addr=THP, pages=512, order=9),
                     Fork(thread="T0", child=1),
                     Write(thread="T1", addr=THP, value=9)]


def test_raw_threads_repairs() -> None:
    """Duplicate names are dropped; a task whose mm nothing can fork moves to mm 0."""
    task_in_mm3 = 0x30
    p = decoded(bytes([0x0F, 1, task_in_mm3, 0, 0, task_in_mm3, 0, 0]))
    assert p.threads == [Thread(name="A", kind=ThreadKind.TASK, mm=0)]


# --- the menus ----------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ThreadKind))
@pytest.mark.parametrize("name", ["T0", "reclaim", "shrinker", "walker", "dma", "other"])
def test_every_allowed_operation_has_a_selector(kind: ThreadKind, name: str) -> None:
    assert set(thread_ops(name, kind)) == OPS_BY_KIND[kind]


def test_each_menu_entry_decodes_to_its_threads() -> None:
    """T1 (mm 1) gets the fork it needs even when the bytes hold none."""
    for i, threads in enumerate(THREAD_MENU):
        p = decode(bytes([i]))
        assert p.threads == list(threads)
        check_program(p)
        assert any(op.op == "fork" for op in p.ops) == any(t.mm == 1 for t in threads)
