"""Program-level mutations, as syzkaller mutates programs call by call.

A byte mutation of an encoded program mostly shifts record boundaries: it
rarely turns "mmap, write, MADV_FREE, PAGEOUT" into "mmap, write,
MADV_FREE, write, PAGEOUT", which is one operation copied one place later.
These mutations work on the operations themselves: copy one elsewhere,
remove one, swap two neighbours, widen a range to its whole mapping, change
an madvise advice, add a kthread operation (reclaim, the deferred-split
shrinker) or a device's DMA write through a pin, or preempt the thread in an
operation for one step of another (a schedule entry: syzkaller's
programs cannot say where a race happens, ours can).  A result the program
format rejects is dropped, never repaired.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from engine.errors import ProgramError
from engine.program import Advice, Program, parse_program

Ops = list[dict[str, Any]]


def _fresh(data: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    """``op`` with a new pin or reference name, when it creates one."""
    op = dict(op)
    for key in ("pin", "ref"):
        if key in op and op["op"] in ("pin", "folio_try_get"):
            used = {o.get(key) for o in data["ops"]}
            op[key] = next(f"{key[0]}{i}" for i in range(len(used) + 1) if f"{key[0]}{i}" not in used)
    return op


def _copy(data: dict[str, Any], rng: random.Random) -> None:
    ops = data["ops"]
    i = rng.randrange(len(ops))
    ops.insert(rng.randint(i + 1, len(ops)), _fresh(data, ops[i]))


def _remove(data: dict[str, Any], rng: random.Random) -> None:
    del data["ops"][rng.randrange(len(data["ops"]))]


def _swap(data: dict[str, Any], rng: random.Random) -> None:
    ops = data["ops"]
    if len(ops) > 1:
        i = rng.randrange(len(ops) - 1)
        ops[i], ops[i + 1] = ops[i + 1], ops[i]


def _widen(data: dict[str, Any], rng: random.Random) -> None:
    """Make a ranged operation cover the whole mapping it starts in."""
    maps = [(o["addr"], o["pages"]) for o in data["ops"] if o["op"] == "mmap"]
    ranged = [o for o in data["ops"] if o["op"] in ("write", "read", "madvise", "pin")]
    if not maps or not ranged:
        return
    op = rng.choice(ranged)
    for addr, pages in maps:
        if addr <= op["addr"] < addr + (pages << 12):
            op["addr"], op["pages"] = addr, pages
            return


def _advice(data: dict[str, Any], rng: random.Random) -> None:
    ops = [o for o in data["ops"] if o["op"] == "madvise"]
    if ops:
        rng.choice(ops)["advice"] = rng.choice([a.value for a in Advice])


def _kthread_op(data: dict[str, Any], rng: random.Random) -> None:
    """Add a reclaim or deferred-split scan by a kthread (a new one if there is none)."""
    kthreads = [t["name"] for t in data["threads"] if t.get("kind") == "kthread"]
    if not kthreads:
        name = next(f"K{i}" for i in range(9) if all(t["name"] != f"K{i}" for t in data["threads"]))
        data["threads"].append({"name": name, "kind": "kthread", "mm": None})
        kthreads = [name]
    op = rng.choice(("reclaim", "deferred_split_scan"))
    data["ops"].insert(rng.randint(0, len(data["ops"])),
                       {"thread": rng.choice(kthreads), "op": op})


def _device_op(data: dict[str, Any], rng: random.Random) -> None:
    """Add a DMA write through a FOLL_WRITE pin, after the pin, by a device thread."""
    pins = [i for i, o in enumerate(data["ops"]) if o["op"] == "pin" and o.get("write", True)]
    if not pins:
        return
    i = rng.choice(pins)
    devices = [t["name"] for t in data["threads"] if t.get("kind") == "device"]
    if not devices:
        name = next(f"D{j}" for j in range(9) if all(t["name"] != f"D{j}" for t in data["threads"]))
        data["threads"].append({"name": name, "kind": "device", "mm": None})
        devices = [name]
    data["ops"].insert(rng.randint(i + 1, len(data["ops"])),
                       {"thread": rng.choice(devices), "op": "dma_write",
                        "pin": data["ops"][i]["pin"], "value": rng.randint(1, 255)})


#: Scheduling steps an operation of each kind takes per page it covers, and
#: besides (measured on the seed corpus: PAGEOUT walks, then unmaps each PTE).
#: Only an estimate for where a preemption lands; a step past the run's end is a
#: schedule entry that never applies.
_STEPS_PER_PAGE = {"read": (1, 0), "write": (1, 0), "madvise": (2, 2), "pin": (2, 1)}
_STEPS_OTHER = {"mmap": 1, "fork": 1, "mprotect": 1, "mremap": 1, "lru_add_drain": 1,
                "folio_try_get": 1, "folio_put": 1, "deferred_split_scan": 2}
_STEPS_UNKNOWN = 16     # reclaim, dma_write, unpin: they depend on what is mapped


def estimated_steps(op: dict[str, Any]) -> int:
    """Scheduling steps an operation (as in :meth:`Program.to_dict`) is likely to take."""
    if op["op"] in _STEPS_PER_PAGE:
        per, extra = _STEPS_PER_PAGE[op["op"]]
        return per * op.get("pages", 1) + extra
    return _STEPS_OTHER.get(op["op"], _STEPS_UNKNOWN)


def _preempt(data: dict[str, Any], rng: random.Random) -> None:
    """Let another thread run one step inside an operation: a new schedule entry.

    The op-order policy hands the CPU back once that step is done, so one
    entry is one preemption; it lands on a step drawn uniformly over the
    steps the operations are estimated to take, so long kernel paths (a
    PAGEOUT over a large folio) get most of them, as they should.
    """
    ops = data["ops"]
    busy = {o["thread"] for o in ops}
    if len(busy) < 2:
        return
    ends, total = [], 0
    for op in ops:
        total += estimated_steps(op)
        ends.append(total)
    step = rng.randrange(total)
    running = ops[next(i for i, end in enumerate(ends) if step < end)]["thread"]
    other = rng.choice(sorted(busy - {running}))
    data["schedule"] = sorted([[at, name] for at, name in data["schedule"] if at != step]
                              + [[step, other]])


MUTATIONS: tuple[Callable[[dict[str, Any], random.Random], None], ...] = (
    _copy, _copy, _remove, _swap, _widen, _advice, _kthread_op, _device_op)


def mutate_program(program: Program, rng: random.Random, rounds: int = 2) -> Program | None:
    """Up to ``rounds`` operation-level mutations of ``program``.

    Return: the mutated program, or None when the format rejects it (an
    unpin of a pin that is gone, a range no mapping covers, too many
    threads).
    """
    data = program.to_dict()
    data["threads"] = [dict(t) for t in data["threads"]]
    data["ops"] = [dict(o) for o in data["ops"]]
    chosen = [rng.choice(MUTATIONS + (_preempt,)) for _ in range(rng.randint(1, rounds))]
    for mutation in chosen:
        if not data["ops"]:
            return None
        if mutation is not _preempt:
            mutation(data, rng)
    if data["schedule"] and len(chosen) > chosen.count(_preempt) and rng.random() < 0.5:
        data["schedule"] = []       # the steps no longer line up with the operations
    for _ in range(chosen.count(_preempt)):
        _preempt(data, rng)         # after the operations changed, so the aim fits them
    try:
        return parse_program(data)
    except ProgramError:
        return None
