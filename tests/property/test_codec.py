"""Properties of the byte codec (byte format 2, program format 2) and of the
program strategies.

decode() is total (every byte string is a valid program, schedule included)
and encode() is its exact inverse on valid programs; both strategies draw
only valid programs, which survive JSON and match the JSON Schema.  Schedule
records name places most runs reach; pins are used only while held,
whatever the bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.execution.runner import YIELD_POINTS
from engine.mm.sched import YieldPoint
from engine.program.format import (
    MAX_THREADS,
    OPS_BY_KIND,
    DmaWrite,
    FolioTryGet,
    Fork,
    Mmap,
    Pin,
    Preemption,
    Program,
    Read,
    Thread,
    ThreadKind,
    Unpin,
    Write,
    check_program,
    loads_program,
    parse_program,
)
from fuzz.codec import THREAD_MENU, decode, encode, thread_ops
from fuzz.strategies import any_programs, program_bytes, programs

pytestmark = pytest.mark.property

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "engine" / "program" / "schema" /
                     "program-v2.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

# Drawing programs is slower than running the properties on them.
SLOW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FAST = settings(max_examples=500, deadline=None)

OP_END, WAIT, START = YieldPoint.OP_END, YieldPoint.WAIT, YieldPoint.START


def assert_valid(p: Program) -> None:
    check_program(p)
    assert loads_program(p.to_json()) == p


def menu(op: str) -> tuple[YieldPoint, ...]:
    """The kinds a compact schedule record picks from for an operation, as the format says."""
    return YIELD_POINTS.get(op, ()) + (OP_END, WAIT)


# --- inputs ------------------------------------------------------------------


@st.composite
def mutated_encodings(draw: Callable[[st.SearchStrategy], Any]) -> bytes:
    """Encodings of valid programs with a few bytes set, inserted, deleted or cut off:
    what a byte fuzzer's mutants of its corpus look like."""
    data = bytearray(encode(draw(programs() | any_programs(max_ops=16))))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["set", "insert", "delete", "cut"]))
        if how == "cut":
            del data[at:]
        elif how == "delete":
            del data[at:at + draw(st.integers(1, 4))]
        else:
            data[at:at + (how == "set")] = bytes([draw(st.integers(0, 255))])
    return bytes(data)


# --- decode is total ----------------------------------------------------------


@FAST
@given(st.binary(max_size=512))
@example(b"")
@example(b"\xff" * 64)                       # raw escapes and varint runs everywhere
@example(b"\x0f\x07" + b"\x00" * 40)         # raw thread list, zero-filled
@example(b"\x3f" + b"\xff" * 300)            # pre-mmaps, then long escapes
@example(b"\x01" + b"\xff\x00" * 40)         # raw schedule records and no operation
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


@SLOW
@given(mutated_encodings())
def test_mutated_encodings_decode_to_valid_programs(data: bytes) -> None:
    p = decode(data)
    assert_valid(p)
    assert decode(encode(p)) == p


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
        "version": 2,
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
            {"thread": "kswapd0", "op": "folio_put", "ref": "spec"},     # a second put
        ],
    })
    data = encode(p)
    assert b"\xff" in data
    assert decode(data) == p


def test_places_of_every_form_round_trip() -> None:
    """START, OP_END, kinds outside an operation's menu, any occurrence, any order."""
    p = parse_program({
        "version": 2,
        "threads": [{"name": "T0", "kind": "task", "mm": 0},
                    {"name": "kswapd0", "kind": "kthread"}],
        "ops": [
            {"thread": "T0", "op": "mmap", "addr": 0x200000, "pages": 512, "order": 9},
            {"thread": "T0", "op": "write", "addr": 0x200000, "pages": 512, "value": 1},
            {"thread": "T0", "op": "madvise", "addr": 0x200000, "pages": 512,
             "advice": "MADV_FREE"},
            {"thread": "kswapd0", "op": "reclaim"},
            {"thread": "T0", "op": "read", "addr": 0x200000},
        ],
        "schedule": [
            {"op": 3, "at": "between_ptes", "nth": 2, "thread": "T0"},
            {"op": None, "at": "start", "thread": "kswapd0"},
            {"op": 4, "at": "op_end", "thread": "kswapd0"},
            {"op": 1, "at": "between_pages", "nth": 1 << 20, "thread": "kswapd0"},
            {"op": 4, "at": "shrinker_ref_held", "nth": 7, "thread": "T0"},    # not a read's
            {"op": 0, "at": "between_ptes", "nth": 1, "thread": "kswapd0"},   # nor an mmap's
            {"op": 0, "at": "wait", "nth": 3, "thread": "T0"},
        ],
    })
    data = encode(p)
    assert data.count(RAW_SCHED) == 3     # START and the two kinds outside the menus
    assert decode(data) == p


def test_schedule_record_follows_the_operation_it_names() -> None:
    """Encoded with K = 0 right after its operation, an entry keeps naming that
    operation when a record before it is cut out."""
    p = parse_program({
        "version": 2,
        "threads": [{"name": "T0", "kind": "task", "mm": 0},
                    {"name": "reclaim", "kind": "kthread"}],
        "ops": [
            {"thread": "T0", "op": "mmap", "addr": 0x200000, "pages": 512, "order": 9},
            {"thread": "T0", "op": "write", "addr": 0x200000, "value": 1},
            {"thread": "reclaim", "op": "reclaim"},
        ],
        "schedule": [{"op": 2, "at": "pte_cleared", "nth": 1, "thread": "T0"}],
    })
    data = encode(p)
    write = bytes([sel(T0_RECLAIM, "T0", "write"), 1, 0, 0, 0])
    assert data.count(write) == 1
    q = decode(data.replace(write, b""))
    assert [op.op for op in q.ops] == ["mmap", "reclaim"]
    assert q.schedule == [Preemption(op=1, at="pte_cleared", thread="T0")]


def test_encode_rejects_invalid_programs() -> None:
    """Programs built without check_program(): encode() says so instead of
    spelling some other program."""
    threads = [{"name": "T0", "mm": 0}]
    mmap = {"thread": "T0", "op": "mmap", "addr": 0x200000, "pages": 1}
    pin = {"thread": "T0", "op": "pin", "addr": 0x200000, "pin": "p0"}
    unpin = {"thread": "T0", "op": "unpin", "pin": "p0"}
    for p in (
        Program(threads=threads, ops=[{"thread": "T0", "op": "read", "addr": 0}]),
        Program(threads=threads, ops=[mmap, pin, unpin, unpin]),
        Program(threads=[*threads, {"name": "dma", "kind": "device"}],
                ops=[mmap, pin, unpin,
                     {"thread": "dma", "op": "dma_write", "pin": "p0", "value": 1}]),
        Program(threads=threads, ops=[mmap], schedule=[{"op": 1, "at": "op_end", "thread": "T0"}]),
        Program(threads=threads, ops=[mmap], schedule=[{"op": 0, "at": "start", "thread": "T0"}]),
        Program(threads=threads, ops=[mmap], schedule=[{"op": 0, "at": "op_end", "nth": 2,
                                                        "thread": "T0"}]),
        Program(threads=threads, ops=[mmap], schedule=[{"op": 0, "at": "wait", "thread": "T1"}]),
        Program(threads=threads, ops=[mmap],
                schedule=[{"op": 0, "at": "wait", "thread": "T0"}] * 2),
    ):
        with pytest.raises(ValueError):
            encode(p)


# --- bytes by hand -------------------------------------------------------------

THP = 0x200000
#: An mmap body: order 9, 2 MiB unit, no flags; A = 0 and P = 0: one THP at 2 MiB.
THP_MMAP = bytes([0x00, 0x00, 0x00])
T0_ALONE, T0_RECLAIM, T0_RECLAIM_DMA, T0_T1 = 0, 1, 3, 13   # THREAD_MENU indices
PRE_MMAPS = 1 << 4                                          # header bits 4-5
#: The schedule entry's selector: the first record kind of every thread set.
SCHED = 0
RAW_SCHED = bytes([0xFF, SCHED])


def sel(entry: int, thread: str, op: str) -> int:
    """The selector byte of ``op`` by ``thread``, as the format describes it."""
    kinds: list[object] = ["schedule"]
    for t in THREAD_MENU[entry]:
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


# --- schedule records name places the run reaches -----------------------------

#: THREAD_MENU entries with a reclaim thread.
WITH_RECLAIM = [i for i, m in enumerate(THREAD_MENU) if any(t.name == "reclaim" for t in m)]


def test_schedule_records_mostly_name_places_their_operation_reaches() -> None:
    """Over random inputs: nearly every preemption names a kind its operation's
    menu holds, and most preemptions of a reclaim name one of reclaim's own
    yield points rather than its end or a wait."""
    rng = random.Random(13)
    in_menu = total = reclaim_kernel = reclaim_total = 0
    for _ in range(2000):
        header = rng.choice(WITH_RECLAIM) | rng.randrange(4) << 4
        p = decode(bytes([header]) + rng.randbytes(rng.randrange(1, 200)))
        for e in p.schedule:
            if e.op is None:
                continue
            kind = p.ops[e.op].op
            total += 1
            in_menu += e.at in menu(kind)
            if kind == "reclaim":
                reclaim_total += 1
                reclaim_kernel += e.at in YIELD_POINTS["reclaim"]
    assert total > 1000 and reclaim_total > 100
    assert in_menu > 0.98 * total
    assert reclaim_kernel > 0.6 * reclaim_total


def test_compact_kind_indexes_the_operation_menu() -> None:
    """K = 0 names the operation just before the record; Y picks from its menu, modulo."""
    reclaim = menu("reclaim")
    assert reclaim[:len(YIELD_POINTS["reclaim"])] == YIELD_POINTS["reclaim"]
    head = (bytes([T0_RECLAIM | PRE_MMAPS]) + THP_MMAP
            + bytes([sel(T0_RECLAIM, "T0", "write"), 7, 0, 0, 0,
                     sel(T0_RECLAIM, "reclaim", "reclaim"), 0]))
    for y in range(256):
        p = decoded(head + bytes([SCHED, 0, y, 2, 1]))
        assert p.schedule == [Preemption(op=2, at=reclaim[y % len(reclaim)],
                                         nth=1 if reclaim[y % len(reclaim)] is OP_END else 3,
                                         thread="reclaim")]


def test_schedule_records_resolve_against_the_final_operations() -> None:
    """K counts the operations the program has, not the records: a dropped record
    and a repair fork do not shift it; before every operation it wraps around."""
    write = sel(T0_T1, "T1", "write")
    unpin = sel(T0_T1, "T0", "unpin")
    p = decoded(bytes([T0_T1 | PRE_MMAPS]) + THP_MMAP
                + bytes([SCHED, 2, 0, 0, 0,          # back past the pre-mmap: wraps to the fork
                         unpin, 0, 0,                # no pin held: dropped
                         write, 9, 0, 0, 0,          # after the repair fork of mm 1
                         SCHED, 0, 0, 0, 0]))        # K = 0: the write
    assert [op.op for op in p.ops] == ["mmap", "fork", "write"]
    assert [(e.op, e.at) for e in p.schedule] == [(1, OP_END), (2, YieldPoint.BETWEEN_PAGES)]


def test_invalid_schedule_records_are_repaired_or_dropped() -> None:
    raw = [RAW_SCHED + bytes([k, y, n, t]) for k, y, n, t in (
        (3, 0, 5, 1),         # START: no operation, occurrence 1
        (0, 1, 9, 0),         # OP_END of the mmap, occurrence 1
        (0, 1, 0, 1),         # the same place again: dropped
        (0, 2, 4, 0),         # WAIT, occurrence 5
    )]
    p = decoded(bytes([T0_RECLAIM | PRE_MMAPS]) + THP_MMAP + b"".join(raw)
                + bytes([SCHED, 0, 0, 0, 0]))    # compact OP_END of the mmap: taken
    assert p.schedule == [Preemption(op=None, at=START, thread="reclaim"),
                          Preemption(op=0, at=OP_END, thread="T0"),
                          Preemption(op=0, at=WAIT, nth=5, thread="T0")]
    # without operations only the start remains
    q = decoded(bytes([T0_RECLAIM]) + bytes([SCHED, 0, 0, 0, 0]) + RAW_SCHED + bytes([0, 3, 0, 0])
                + RAW_SCHED + bytes([0, 0, 0, 0]))
    assert q.ops == [] and q.schedule == [Preemption(at=START, thread="T0")]


# --- pins are used only while held --------------------------------------------

#: The records that name or use pins, by thread, in THREAD_MENU[T0_RECLAIM_DMA].
PIN_RECORDS = [("T0", "pin"), ("T0", "unpin"), ("dma", "dma_write"), ("dma", "unpin")]


@st.composite
def pin_traffic(draw: Callable[[st.SearchStrategy], Any]) -> bytes:
    """Inputs of pins, unpins and DMA writes on one THP, compact and raw, any fields.

    Each field one byte (none escapes to a varint), so the records stay aligned.
    """
    out = bytearray([T0_RECLAIM_DMA | PRE_MMAPS]) + THP_MMAP
    for raw, (thread, op) in draw(st.lists(st.tuples(st.booleans(), st.sampled_from(PIN_RECORDS)),
                                           max_size=40)):
        n = 4 if op == "pin" else 2
        fields = draw(st.lists(st.integers(0, 0xEF), min_size=n, max_size=n))
        if op == "pin" and raw:
            fields.insert(1, 0)     # the name's length byte: one character
        out += (b"\xff" if raw else b"") + bytes([sel(T0_RECLAIM_DMA, thread, op), *fields])
    return bytes(out)


@FAST
@given(pin_traffic())
def test_pins_are_used_only_while_held(data: bytes) -> None:
    """No DMA and no unpin through a pin that is not held, even by the raw escape."""
    p = decode(data)
    held: dict[str, bool] = {}          # pin -> FOLL_WRITE
    for op in p.ops:
        if isinstance(op, Pin):
            held[op.pin] = op.write
        elif isinstance(op, DmaWrite):
            assert held.get(op.pin), op
        elif isinstance(op, Unpin):
            assert held.pop(op.pin, None) is not None, op
    check_program(p)


def test_raw_escape_does_not_reach_released_pins() -> None:
    """X indexes the pins held, in the raw form too (format 1 offered the released
    ones after them there)."""
    pin, unpin = sel(T0_RECLAIM_DMA, "T0", "pin"), sel(T0_RECLAIM_DMA, "T0", "unpin")
    dma, dma_unpin = sel(T0_RECLAIM_DMA, "dma", "dma_write"), sel(T0_RECLAIM_DMA, "dma", "unpin")
    p = decoded(bytes([T0_RECLAIM_DMA | PRE_MMAPS]) + THP_MMAP
                + bytes([pin, 0, 0, 0, 0, pin, 0, 0, 0, 2,     # p0 (1 page), p1 (2 pages)
                         unpin, 0, 0,                          # p0
                         0xFF, dma, 1, 5,                      # X = 1 of the held [p1]: p1
                         0xFF, dma_unpin, 1, 0,                # p1
                         0xFF, dma, 0, 6,                      # nothing held: dropped
                         0xFF, unpin, 0, 0]))                  # dropped
    assert p.ops[1:] == [Pin(thread="T0", addr=THP, pin="p0"),
                         Pin(thread="T0", addr=THP, pages=2, pin="p1"),
                         Unpin(thread="T0", pin="p0"),
                         DmaWrite(thread="dma", pin="p1", value=5),
                         Unpin(thread="dma", pin="p1")]


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


def test_random_mremaps_in_2_mib_units_mostly_straddle_a_page_table_end() -> None:
    """The decoder's mremap destination in 2 MiB units starts ``U >> 2 & 15`` pages short
    of the boundary: a move of a few pages of a large folio straddles two PTE tables
    (the layout of ddd05742b45b), and every such destination round-trips."""
    rng = random.Random(7)
    moves = straddling = 0
    for _ in range(3000):
        p = decode(rng.randbytes(rng.randint(8, 64)))
        for op in p.ops:
            if op.op != "mremap" or op.new_addr % (1 << 21) == 0:
                continue
            moves += 1
            end = op.new_addr + op.pages * 4096 - 1
            straddling += op.new_addr >> 21 != end >> 21
        if any(op.op == "mremap" for op in p.ops):
            assert decode(encode(p)) == p
    assert moves > 100 and straddling / moves > 0.2, (moves, straddling)
