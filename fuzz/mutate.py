"""Program-level mutations, as syzkaller mutates programs call by call.

A byte mutation of an encoded program mostly shifts record boundaries: it
rarely turns "mmap, write, MADV_FREE, PAGEOUT" into "mmap, write,
MADV_FREE, write, PAGEOUT", which is one operation copied one place later.
These mutations work on the operations themselves: copy one elsewhere,
remove one, swap two neighbours, widen a range to its whole mapping, change
an madvise advice, add a kthread operation (reclaim, the deferred-split
shrinker) or a device's DMA write through a pin, put part of a large folio
across a page-table boundary or a VMA end (:func:`boundary`), or preempt the thread in an
operation for one segment of another (a schedule entry: syzkaller's
programs cannot say where a race happens, ours can).

A preemption names a place of an operation (:class:`engine.Preemption`),
so the schedule follows the operations through every mutation: entries are
renumbered when operations move (:func:`engine.renumber_schedule`)
and go with the operation they name when it is removed.

Mutations keep the pin rules of the format by construction: a DMA write
goes between its pin and that pin's unpin, an unpin is never copied (a pin
is released once), neighbours that name the same pin or reference are not
swapped, and a removed pin or reference takes the operations that use it
along.  Any other result the program format rejects (a range no mapping
covers after a removal, too many threads) is dropped, never repaired.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from engine import YIELD_POINTS, Advice, Program, ProgramError, YieldPoint, parse_program, renumber_schedule

Ops = list[dict[str, Any]]


def _fresh(data: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    """``op`` with a new pin or reference name, when it creates one."""
    op = dict(op)
    for key in ("pin", "ref"):
        if key in op and op["op"] in ("pin", "folio_try_get"):
            used = {o.get(key) for o in data["ops"]}
            op[key] = next(f"{key[0]}{i}" for i in range(len(used) + 1) if f"{key[0]}{i}" not in used)
    return op


def _insert(data: dict[str, Any], j: int, op: dict[str, Any]) -> None:
    """Insert ``op`` at index ``j``; the schedule's places follow the operations after it."""
    data["ops"].insert(j, op)
    data["schedule"] = renumber_schedule(data["schedule"], lambda i: i + 1 if i >= j else i)


def _held_until(ops: Ops, i: int, pin: str) -> int:
    """The index of the first unpin of ``pin`` after op ``i``, or ``len(ops)``: a DMA
    through the pin inserted at any index from ``i + 1`` up to it is through a held pin."""
    return next((j for j in range(i + 1, len(ops))
                 if ops[j]["op"] == "unpin" and ops[j]["pin"] == pin), len(ops))


def _copy(data: dict[str, Any], rng: random.Random) -> None:
    """Copy an operation to a later index.

    Not an unpin (its pin is released by then) nor a fork (its child mm
    exists by then); a DMA write goes no later than its pin's unpin.
    """
    ops = data["ops"]
    copyable = [i for i, o in enumerate(ops) if o["op"] not in ("unpin", "fork")]
    if not copyable:
        return
    i = rng.choice(copyable)
    last = _held_until(ops, i, ops[i]["pin"]) if ops[i]["op"] == "dma_write" else len(ops)
    _insert(data, rng.randint(i + 1, last), _fresh(data, ops[i]))


def _remove(data: dict[str, Any], rng: random.Random) -> None:
    """Remove an operation; a pin or a speculative reference takes the operations naming it along."""
    ops = data["ops"]
    i = rng.randrange(len(ops))
    gone = {i}
    if ops[i]["op"] == "pin":
        gone |= {j for j, o in enumerate(ops)
                 if o["op"] in ("dma_write", "unpin") and o["pin"] == ops[i]["pin"]}
    elif ops[i]["op"] == "folio_try_get":
        gone |= {j for j, o in enumerate(ops) if o["op"] == "folio_put" and o["ref"] == ops[i]["ref"]}
    index: dict[int, int] = {}
    for j in range(len(ops)):
        if j not in gone:
            index[j] = len(index)
    data["ops"] = [o for j, o in enumerate(ops) if j not in gone]
    data["schedule"] = renumber_schedule(data["schedule"], index.get)


def _related(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two operations name the same pin or speculative reference."""
    return any(key in a and a[key] == b.get(key) for key in ("pin", "ref"))


def _swap(data: dict[str, Any], rng: random.Random) -> None:
    """Swap two neighbours that do not name the same pin or reference (swapped,
    a use would come before its pin, or a DMA after its unpin)."""
    ops = data["ops"]
    apart = [i for i in range(len(ops) - 1) if not _related(ops[i], ops[i + 1])]
    if not apart:
        return
    i = rng.choice(apart)
    ops[i], ops[i + 1] = ops[i + 1], ops[i]
    data["schedule"] = renumber_schedule(
        data["schedule"], lambda j: i + 1 if j == i else i if j == i + 1 else j)


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


def program_data(program: Program) -> dict[str, Any]:
    """``program.to_dict()`` with threads and operations a mutation may change in place."""
    data = program.to_dict()
    data["threads"] = [dict(t) for t in data["threads"]]
    data["ops"] = [dict(o) for o in data["ops"]]
    return data


def _threads_of(data: dict[str, Any], kind: str) -> list[str]:
    """The names of the program's threads of ``kind`` (kthread, device); a new one,
    named ``K<i>`` or ``D<i>``, when there is none."""
    names = [t["name"] for t in data["threads"] if t.get("kind") == kind]
    if not names:
        prefix = kind[0].upper()
        name = next(f"{prefix}{i}" for i in range(9)
                    if all(t["name"] != f"{prefix}{i}" for t in data["threads"]))
        data["threads"].append({"name": name, "kind": kind, "mm": None})
        names = [name]
    return names


def _kthread_op(data: dict[str, Any], rng: random.Random) -> None:
    """Add a reclaim or deferred-split scan by a kthread (a new one if there is none)."""
    kthreads = _threads_of(data, "kthread")
    op = rng.choice(("reclaim", "deferred_split_scan"))
    _insert(data, rng.randint(0, len(data["ops"])), {"thread": rng.choice(kthreads), "op": op})


def _device_op(data: dict[str, Any], rng: random.Random) -> None:
    """Add a DMA write by a device thread through a FOLL_WRITE pin, while the pin is held:
    after the pin and no later than its unpin."""
    ops = data["ops"]
    pins = [i for i, o in enumerate(ops) if o["op"] == "pin" and o.get("write", True)]
    if not pins:
        return
    i = rng.choice(pins)
    devices = _threads_of(data, "device")
    pin = ops[i]["pin"]
    _insert(data, rng.randint(i + 1, _held_until(ops, i, pin)),
            {"thread": rng.choice(devices), "op": "dma_write", "pin": pin,
             "value": rng.randint(1, 255)})


#: Page-table span (a PMD's worth of PTEs), in pages and bytes.
_PT_PAGES = 512
_PT_BYTES = _PT_PAGES << 12
#: What a boundary mutation does to part of a large folio (see :func:`boundary`).
_CUTS = ("mremap", "mremap", "mprotect", "munmap", "dontneed")


def boundary(data: dict[str, Any], rng: random.Random, before: int | None = None) -> None:
    """Put part of a large folio the program maps across a page-table boundary or a VMA end.

    The geometry try_to_unmap_one()'s batching depends on (v6.15's
    unbounded can_batch_unmap_folio_ptes(), v6.16's ``pmd_addr_end(addr,
    vma->vm_end)``): aimed at a folio of a large-order mmap, one of
    - mremap of 1 .. nr pages of the folio, from any page of it, to an
      address a few pages short of a page-table end, in fresh space: the
      moved pages straddle the boundary, or end just before it;
    - mprotect PROT_READ, munmap or MADV_DONTNEED of part of the folio: the
      folio crosses a VMA end, or a hole;
    inserted anywhere after the mmap (or right before operation ``before``,
    for a layout hint: :func:`fuzz.hints.layout_mutants`), and a kthread's
    reclaim at the end when none follows it yet.  syzkaller inserts calls on
    the resources a program already has; this is such an insertion, aimed at
    its folios.
    """
    ops = data["ops"]
    large = [i for i, o in enumerate(ops) if o["op"] == "mmap" and o.get("order", 0)
             and (before is None or i < before)]
    if not large:
        return
    i = rng.choice(large)
    mmap = ops[i]
    nr = min(1 << mmap["order"], mmap["pages"])
    lo, hi = mmap["addr"], mmap["addr"] + (mmap["pages"] << 12)
    folio = lo + (rng.randrange(max(1, mmap["pages"] // nr)) * nr << 12)
    # Page 0 half the time: the batch starts at the PTE of the folio's first page.
    first = 0 if rng.random() < 0.5 else rng.randrange(nr)
    pages = rng.randint(1, nr - first)
    addr = folio + (first << 12)
    cut = rng.choice(_CUTS)
    if cut == "mremap":
        top = max(o["addr"] + (o["pages"] << 12) for o in ops if o["op"] == "mmap")
        top = max([top] + [o["new_addr"] + (o["pages"] << 12) for o in ops if o["op"] == "mremap"])
        table = -(-top // _PT_BYTES) + 1 + rng.randrange(4)
        # Mostly short of the table's end by fewer pages than move: they straddle it.
        short = rng.randint(1, pages if rng.random() < 0.75 else min(nr, _PT_PAGES - 1))
        new = {"op": "mremap", "addr": addr, "pages": pages,
               "new_addr": (table * _PT_PAGES - short) << 12}
    elif cut == "mprotect":
        new = {"op": "mprotect", "addr": addr, "pages": pages, "prot": "r"}
    elif cut == "munmap":
        new = {"op": "munmap", "addr": addr, "pages": pages}
    else:
        new = {"op": "madvise", "addr": addr, "pages": pages, "advice": "MADV_DONTNEED"}
    # Half the time right after the last MADV_FREE of the mapping (the folio is
    # lazyfree then), or without one after its last store, else anywhere after it.
    on_it = [k for k in range(i + 1, len(ops)) if ops[k]["op"] in ("write", "madvise")
             and lo <= ops[k]["addr"] < hi]
    freed = [k for k in on_it if ops[k].get("advice") == "MADV_FREE"]
    written = [k for k in on_it if ops[k]["op"] == "write"]
    if before is not None:
        j = before
    elif (freed or written) and rng.random() < 0.5:
        j = (freed or written)[-1] + 1
    else:
        j = rng.randint(i + 1, len(ops))
    _insert(data, j, {"thread": mmap["thread"], **new})
    # kswapd's reclaim, not MADV_PAGEOUT: a PAGEOUT of the folio's old range
    # misses what moved, and isolates none of a folio it covers only in part
    if not any(o["op"] == "reclaim" for o in ops[j + 1:]):
        _insert(data, len(ops), {"thread": rng.choice(_threads_of(data, "kthread")),
                                 "op": "reclaim"})


#: Scheduling steps an operation of each kind takes per page it covers, and
#: besides (measured on the seed corpus: PAGEOUT walks, then unmaps each PTE).
#: Only an estimate of where preemptions are worth aiming.
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


def _extent(data: dict[str, Any], i: int) -> tuple[int, int, int]:
    """(pages, folios, large folios) operation ``i`` plausibly walks.

    A ranged operation covers its own pages, in folios of the order of the
    mmap its address lies in; a DMA or unpin the pages of its pin; reclaim
    and the shrinker whatever the program maps, up to ``nr_to_scan`` folios.
    An estimate: which folios exist when the operation runs is the run's
    business.
    """
    ops = data["ops"]
    op = ops[i]
    maps = [o for o in ops if o["op"] == "mmap"]
    if op["op"] in ("reclaim", "deferred_split_scan"):
        pages = sum(o["pages"] for o in maps)
        folios = sum(-(-o["pages"] // (1 << o.get("order", 0))) for o in maps)
        large = sum(o["pages"] >> o.get("order", 0) for o in maps if o.get("order", 0))
        scan = op.get("nr_to_scan", 32)
        return pages, min(folios, scan), min(large, scan)
    if op["op"] in ("dma_write", "unpin"):
        op = next((o for o in ops if o["op"] == "pin" and o["pin"] == op["pin"]), op)
    pages = op.get("pages", 1)
    addr = op.get("addr")
    order = next((o.get("order", 0) for o in maps
                  if addr is not None and o["addr"] <= addr < o["addr"] + (o["pages"] << 12)), 0)
    folios = -(-pages // (1 << order))
    return pages, folios, folios if order else 0


def occurrences(data: dict[str, Any], i: int, at: YieldPoint) -> int:
    """How many yield points of kind ``at`` operation ``i`` of ``data`` plausibly reaches (at least 1).

    One per page for the per-page windows, one fewer for the windows between
    two pages, PTEs or folios (v6.14 counts its PTEs one by one; a batched
    version reaches fewer, and an occurrence it does not reach preempts at
    the operation's end).
    """
    pages, folios, large = _extent(data, i)
    per_kind = {
        YieldPoint.BETWEEN_PAGES: pages - 1,
        YieldPoint.GUP_FAST_READ: pages,
        YieldPoint.GUP_FAST_GRABBED: pages,
        YieldPoint.PTE_CLEARED: pages,
        YieldPoint.BETWEEN_PTES: pages - 1,
        YieldPoint.BETWEEN_FOLIOS: folios - 1,
        YieldPoint.BEFORE_FREEZE: folios,
        YieldPoint.SHRINKER_REF_HELD: large,
    }
    return max(1, per_kind.get(at, 1))


def _preempt(data: dict[str, Any], rng: random.Random) -> None:
    """Let another thread run one segment at a place inside an operation: a schedule entry.

    The op-order policy hands the CPU back once that segment is done, so one
    entry is one preemption.  The operation is drawn weighted by the steps
    it is estimated to take, so long kernel paths (a PAGEOUT over a large
    folio) get most preemptions, as they should; the kind of place uniformly
    among those its kernel path can reach and its end (each kind is another
    window, and the rare ones are the interesting ones); the occurrence
    uniformly over those it plausibly reaches (:func:`occurrences`); the
    thread among those of the other operations.  An entry at the same place
    is replaced.
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
    i = next(j for j, end in enumerate(ends) if step < end)
    at = rng.choice(YIELD_POINTS.get(ops[i]["op"], ()) + (YieldPoint.OP_END,))
    nth = rng.randint(1, occurrences(data, i, at)) if at is not YieldPoint.OP_END else 1
    other = rng.choice(sorted(busy - {ops[i]["thread"]}))
    place = (i, at.value, nth)
    data["schedule"] = [e for e in data["schedule"] if (e["op"], e["at"], e["nth"]) != place]
    data["schedule"].append({"op": i, "at": at.value, "nth": nth, "thread": other})


MUTATIONS: tuple[Callable[[dict[str, Any], random.Random], None], ...] = (
    _copy, _copy, _remove, _swap, _widen, _advice, _kthread_op, _device_op, boundary)


def mutate_program(program: Program, rng: random.Random, rounds: int = 2) -> Program | None:
    """Up to ``rounds`` operation-level mutations of ``program``; its schedule follows.

    Preemptions are added after the operations changed, so that they aim at
    the operations as they end up.
    Return: the mutated program, or None when the format rejects it (a range
    no mapping covers, too many threads).
    """
    data = program_data(program)
    chosen = [rng.choice(MUTATIONS + (_preempt,)) for _ in range(rng.randint(1, rounds))]
    for mutation in chosen:
        if not data["ops"]:
            return None
        if mutation is not _preempt:
            mutation(data, rng)
    for _ in range(chosen.count(_preempt)):
        _preempt(data, rng)
    try:
        return parse_program(data)
    except ProgramError:
        return None
