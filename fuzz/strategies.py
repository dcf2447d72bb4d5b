"""Hypothesis strategies for foliodiff programs.

Two shapes of valid program (every one passes
:func:`engine.program.format.check_program`):

- :func:`programs` draws what lazyfree reclaim bugs need: a task ``T0`` that
  maps a few regions first (2 MiB or 64 KiB aligned, whole folios of order
  0, 4 or 9), then writes, MADV_FREEs, reads, pins and unmaps inside them;
  optionally a child ``T1`` forked part-way through, kthreads that reclaim,
  run the deferred-split shrinker or take speculative folio references, a
  DMA device writing through pins, and a short schedule of preemptions,
  each at a place the operation's kernel path can reach
  (:data:`engine.YIELD_POINTS`, or its end) and a small occurrence.
- :func:`any_programs` draws anything the format allows: arbitrary names,
  mm ids and fork graphs, regions declared after their use, ranges across
  adjacent regions, unaligned addresses, large values, and preemptions at
  any kind of place of any operation (or the start), any occurrence.
  It is for properties of the format itself (codecs, JSON, the schema).

:func:`seeded_programs` draws mutants of a seed corpus, so that a Hypothesis
campaign starts from the same programs as the other fuzzers.

:func:`program_bytes` draws inputs for :func:`engine.decode`: random
bytes and encodings of drawn programs, the way a byte fuzzer's corpus looks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from engine import (
    MAX_PAGES,
    MAX_THREADS,
    MAX_VALUE,
    PAGE_SHIFT,
    PROGRAM_VERSION,
    TASK_SIZE,
    YIELD_POINTS,
    Program,
    YieldPoint,
    parse_program,
)
from fuzz.codec import encode
from fuzz.mutate import mutate_program

__all__ = ["any_programs", "names", "program_bytes", "programs", "seeded_programs"]

_TASK_PAGES = TASK_SIZE >> PAGE_SHIFT
_2M = 512         # pages
_64K = 16         # pages


def names() -> st.SearchStrategy[str]:
    """Thread, pin and reference names the program format accepts."""
    return st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}", fullmatch=True)


def _rarely(p: int = 10) -> st.SearchStrategy[bool]:
    """True about once in ``p`` draws (and shrinking toward False)."""
    return st.integers(0, p - 1).map(lambda x: x == p - 1)


class _Builder:
    """A program under construction: its threads, regions and names so far.

    Regions are ``(first page, end page, order)``; ``own`` keeps them per mm
    and ``parent`` the fork tree, so that :meth:`visible` answers like
    check_program() does.
    """

    def __init__(self, draw: Callable[[st.SearchStrategy], Any], wild: bool) -> None:
        self.draw = draw
        self.wild = wild
        self.threads: list[dict[str, Any]] = []
        self.ops: list[dict[str, Any]] = []
        self.own: dict[int, list[tuple[int, int, int]]] = {}
        self.parent: dict[int, int] = {}
        self.pins: list[tuple[str, bool]] = []
        self.unpinned: set[str] = set()
        self.refs: list[str] = []
        self.put: set[str] = set()
        self.used_names: set[str] = set()

    # -- structure --

    def mm_of(self, thread: str) -> int | None:
        return next(t.get("mm") for t in self.threads if t["name"] == thread)

    def visible(self, mm: int) -> list[tuple[int, int, int]]:
        out = list(self.own.get(mm, ()))
        seen = {mm}
        while mm in self.parent and self.parent[mm] not in seen:
            mm = self.parent[mm]
            seen.add(mm)
            out += self.own.get(mm, ())
        return out

    def add_region(self, mm: int, start: int, pages: int, order: int) -> None:
        self.own.setdefault(mm, []).append((start, start + pages, order))

    def spans(self, mm: int) -> list[tuple[int, int]]:
        """The union of the regions ``mm`` may touch, as disjoint [start, end) page spans."""
        out: list[list[int]] = []
        for s, e, _ in sorted(self.visible(mm)):
            if out and s <= out[-1][1]:
                out[-1][1] = max(out[-1][1], e)
            else:
                out.append([s, e])
        return [(s, e) for s, e in out]

    def fresh_name(self, prefix: str) -> str:
        if self.wild:
            name = self.draw(names().filter(lambda n: n not in self.used_names))
        else:
            name = f"{prefix}{sum(n.startswith(prefix) for n in self.used_names)}"
        self.used_names.add(name)
        return name

    # -- fields --

    def value(self) -> int:
        return self.draw(st.integers(0, MAX_VALUE) if self.wild else st.integers(1, 255))

    def range_in(self, mm: int, max_pages: int = 64) -> tuple[int, int]:
        """(address, pages) of a range the regions of ``mm`` cover.

        Reclaim-shaped: inside one region, mostly on folio boundaries and
        whole folios.  Wild: anywhere in the union of the regions, across
        adjacent ones.
        """
        draw = self.draw
        if self.wild:
            s, e = draw(st.sampled_from(self.spans(mm)))
            start = draw(st.integers(s, e - 1))
            return start << PAGE_SHIFT, draw(st.integers(1, min(e - start, MAX_PAGES)))
        s, e, order = draw(st.sampled_from(self.visible(mm)))
        folio = 1 << order
        if draw(st.integers(0, 3)) and (e - s) >= folio:
            start = s + folio * draw(st.integers(0, (e - s) // folio - 1))
            folios = max(1, min((e - start) // folio, max_pages // folio))
            pages = folio * draw(st.integers(1, folios))
            pages = min(pages, e - start)
        else:
            start = draw(st.integers(s, e - 1))
            pages = draw(st.integers(1, min(e - start, max_pages)))
        return start << PAGE_SHIFT, pages

    def region_place(self, order: int) -> int:
        """First page of a new region: reclaim-shaped, a fresh aligned slot; wild, anywhere."""
        draw = self.draw
        if self.wild:
            return draw(st.integers(0, _TASK_PAGES - MAX_PAGES))
        slot = draw(st.integers(1, 256)) * _2M
        if order < 9 and draw(st.booleans()):
            slot += _64K * draw(st.integers(1, 31))
        return slot

    # -- operations --

    def mmap(self, thread: str) -> dict[str, Any]:
        draw = self.draw
        order = draw(st.sampled_from((9, 4, 0)))
        if self.wild:
            pages = draw(st.integers(1, 1024))
        else:
            pages = (1 << order) * draw(st.integers(1, 2 if order == 9 else 8))
        start = self.region_place(order)
        self.add_region(self.mm_of(thread), start, pages, order)  # type: ignore[arg-type]
        return {"thread": thread, "op": "mmap", "addr": start << PAGE_SHIFT, "pages": pages,
                "order": order, "droppable": draw(_rarely()), "locked": draw(_rarely())}

    def task_op(self, thread: str) -> dict[str, Any] | None:
        """An operation of a task; None when it has nothing to touch yet."""
        draw = self.draw
        mm = self.mm_of(thread)
        if not self.visible(mm):  # type: ignore[arg-type]
            return None
        kinds = ["write", "write", "madvise", "madvise", "read", "pin", "munmap", "mprotect",
                 "lru_add_drain", "mremap"]
        if self.releasable_pins(write=False):
            kinds.append("unpin")
        kind = draw(st.sampled_from(kinds))
        op: dict[str, Any] = {"thread": thread, "op": kind}
        if kind == "lru_add_drain":
            return op
        if kind == "unpin":
            return self.unpin(thread)
        addr, pages = self.range_in(mm)  # type: ignore[arg-type]
        op |= {"addr": addr, "pages": pages}
        if kind == "write":
            op["value"] = self.value()
        elif kind == "madvise":
            op["advice"] = draw(st.sampled_from(
                ["MADV_FREE", "MADV_FREE", "MADV_FREE", "MADV_PAGEOUT", "MADV_DONTNEED"]))
        elif kind == "mprotect":
            op["prot"] = draw(st.sampled_from(["r", "rw"]))
        elif kind == "pin":
            op |= {"pin": self.fresh_name("p"), "write": not draw(_rarely(4)),
                   "fast": draw(st.booleans())}
            self.pins.append((op["pin"], op["write"]))
        elif kind == "mremap":
            new = self.region_place(0)
            op["new_addr"] = new << PAGE_SHIFT
            self.add_region(mm, new, pages, 0)  # type: ignore[arg-type]
        return op

    def releasable_pins(self, write: bool) -> list[str]:
        """Pins an unpin (or, ``write``, a DMA write) may name: the ones still
        held, since the format refuses a second unpin or a DMA after the unpin
        (a driver completes its DMA before it unpins)."""
        return [n for n, w in self.pins if (w or not write) and n not in self.unpinned]

    def unpin(self, thread: str) -> dict[str, Any]:
        pin = self.draw(st.sampled_from(self.releasable_pins(write=False)))
        self.unpinned.add(pin)
        return {"thread": thread, "op": "unpin", "pin": pin, "dirty": self.draw(st.booleans())}

    def kthread_op(self, thread: str) -> dict[str, Any]:
        draw = self.draw
        kinds = ["reclaim", "reclaim", "deferred_split_scan", "lru_add_drain"]
        mms = [m for m in sorted({0, *self.parent}) if self.visible(m)]
        if mms:
            kinds += ["folio_try_get", "folio_try_get"]
        refs = self.refs if self.wild else [r for r in self.refs if r not in self.put]
        if refs:
            kinds += ["folio_put", "folio_put"]
        if not self.wild and thread == "walker" and mms:
            kinds = ["folio_try_get", "folio_put"] if refs else ["folio_try_get"]
        kind = draw(st.sampled_from(kinds))
        op: dict[str, Any] = {"thread": thread, "op": kind}
        if kind in ("reclaim", "deferred_split_scan"):
            if self.wild or draw(_rarely(3)):
                op["nr_to_scan"] = draw(st.integers(1, 1 << 20 if self.wild else 512))
        elif kind == "folio_try_get":
            mm = draw(st.sampled_from(mms))
            op |= {"mm": mm, "addr": self.range_in(mm, 1)[0], "ref": self.fresh_name("r")}
            self.refs.append(op["ref"])
        elif kind == "folio_put":
            op["ref"] = draw(st.sampled_from(refs))
            self.put.add(op["ref"])
        return op

    def device_op(self, thread: str) -> dict[str, Any] | None:
        """A DMA write through a FOLL_WRITE pin (mostly) or an unpin; None: nothing pinned."""
        writable = self.releasable_pins(write=True)
        if writable and self.draw(st.integers(0, 3)):
            pin = self.draw(st.sampled_from(writable))
            return {"thread": thread, "op": "dma_write", "pin": pin, "value": self.value()}
        if not self.releasable_pins(write=False):
            return None
        return self.unpin(thread)

    def op(self, thread: dict[str, Any]) -> dict[str, Any] | None:
        kind = thread.get("kind", "task")
        if kind == "task":
            return self.task_op(thread["name"])
        if kind == "kthread":
            return self.kthread_op(thread["name"])
        return self.device_op(thread["name"])

    def place(self) -> tuple[int | None, YieldPoint, int] | None:
        """A place of the operations drawn so far; None when there is none.

        Reclaim-shaped: a kind of yield point the operation's kernel path
        reaches, or its end, and one of its first occurrences (the windows
        of the reclaim races open at the first PTEs).  Wild: any kind, the
        start included, and any occurrence the format allows.
        """
        draw = self.draw
        if self.wild:
            at = draw(st.sampled_from(list(YieldPoint) if self.ops else [YieldPoint.START]))
            if at is YieldPoint.START:
                return None, at, 1
            op = draw(st.integers(0, len(self.ops) - 1))
            nth = 1 if at is YieldPoint.OP_END else draw(st.integers(1, 1 << 20))
            return op, at, nth
        if not self.ops:
            return None
        op = draw(st.integers(0, len(self.ops) - 1))
        at = draw(st.sampled_from(YIELD_POINTS.get(self.ops[op]["op"], ()) + (YieldPoint.OP_END,)))
        return op, at, 1 if at is YieldPoint.OP_END else draw(st.integers(1, 4))

    def schedule(self) -> list[dict[str, Any]]:
        """Preemptions at distinct places (:meth:`place`), each naming any thread."""
        draw = self.draw
        out: dict[tuple[int | None, YieldPoint, int], str] = {}
        for _ in range(draw(st.integers(0, 6 if self.wild else 3))):
            place = self.place()
            if place is not None:
                out[place] = draw(st.sampled_from(self.threads))["name"]
        return [{"op": op, "at": at.value, "nth": nth, "thread": thread}
                for (op, at, nth), thread in out.items()]

    def program(self, schedule: list[dict[str, Any]]) -> Program:
        return parse_program({"version": PROGRAM_VERSION, "threads": self.threads,
                              "ops": self.ops, "schedule": schedule})


@st.composite
def programs(draw: Callable[[st.SearchStrategy], Any], max_ops: int = 32,
             max_threads: int = 6) -> Program:
    """Reclaim-shaped valid programs of at most ``max_ops`` operations.

    ``T0`` (mm 0) maps 1-3 regions first; then tasks, kthreads and a device
    act on them.  With ``T1`` in the thread set, ``T0`` forks mm 1 part-way
    and ``T1`` only acts after the fork.  Kthreads are named after their job
    (``reclaim``, ``shrinker``, ``walker``), the device ``dma``.
    """
    b = _Builder(draw, wild=False)
    b.threads.append({"name": "T0", "kind": "task", "mm": 0})
    optional: list[dict[str, Any]] = [{"name": "T1", "kind": "task", "mm": 1},
                {"name": "reclaim", "kind": "kthread"},
                {"name": "shrinker", "kind": "kthread"},
                {"name": "walker", "kind": "kthread"},
                {"name": "dma", "kind": "device"}]
    b.threads += [t for t in optional if draw(st.booleans())][:max_threads - 1]
    if max_ops < 2:         # no room for both a region and the fork T1 needs
        b.threads = [t for t in b.threads if t["name"] != "T1"]
    with_child = any(t["name"] == "T1" for t in b.threads)

    regions = draw(st.integers(1, max(1, min(3, max_ops - with_child))))
    b.ops += [b.mmap("T0") for _ in range(regions)]
    budget = max_ops - len(b.ops) - with_child
    body = draw(st.integers(0, max(0, budget)))
    fork_at = draw(st.integers(0, body)) if with_child else -1
    forked = False
    for i in range(body + 1):
        if i == fork_at:
            b.ops.append({"thread": "T0", "op": "fork", "child": 1})
            b.parent[1] = 0
            forked = True
        if i == body:
            break
        actors = [t for t in b.threads if t["name"] != "T1" or forked]
        op = b.op(draw(st.sampled_from(actors)))
        if op is not None:
            b.ops.append(op)
    return b.program(b.schedule())


@st.composite
def any_programs(draw: Callable[[st.SearchStrategy], Any], max_ops: int = 32) -> Program:
    """Valid programs of at most ``max_ops`` operations, anything the format allows.

    Structure first (threads, fork tree, mmaps), then a sequence of other
    operations; mmaps and forks are then placed anywhere in it, since
    check_program() lets an operation use a region declared after it.
    """
    b = _Builder(draw, wild=True)
    thread_names = draw(st.lists(names(), min_size=1, max_size=MAX_THREADS, unique=True))
    b.used_names.update(thread_names)
    for name in thread_names:
        kind = draw(st.sampled_from(["task", "task", "kthread", "device"]))
        b.threads.append({"name": name, "kind": kind} | ({"mm": draw(st.integers(0, 15))}
                                                         if kind == "task" else {}))
    tasks = [t for t in b.threads if t["kind"] == "task"]

    # Every mm a task runs in needs a fork from a task of another mm.
    structure: list[dict[str, Any]] = []
    for mm in sorted({t["mm"] for t in tasks} - {0}):
        forkers = [t for t in tasks if t["mm"] != mm]
        if not forkers or len(structure) >= max_ops:
            for t in tasks:
                if t["mm"] == mm:
                    t["mm"] = 0
            continue
        forker = draw(st.sampled_from(forkers))
        structure.append({"thread": forker["name"], "op": "fork", "child": mm})
    if tasks and len(structure) < max_ops and draw(_rarely(3)):
        forker = draw(st.sampled_from(tasks))
        taken = {op["child"] for op in structure}
        free = [m for m in range(1, 16) if m not in taken and m != forker["mm"]]
        if free:
            structure.append({"thread": forker["name"], "op": "fork",
                              "child": draw(st.sampled_from(free))})
    # After the loop: a forker may have moved to mm 0 since it forked.
    b.parent = {op["child"]: b.mm_of(op["thread"]) for op in structure}  # type: ignore[misc]
    if tasks:
        for _ in range(draw(st.integers(0, min(4, max_ops - len(structure))))):
            structure.append(b.mmap(draw(st.sampled_from(tasks))["name"]))
            if len(structure) < max_ops and draw(_rarely(3)):
                # An adjacent region: wild ranges may span both.
                prev = structure[-1]
                start = (prev["addr"] >> PAGE_SHIFT) + prev["pages"]
                if start + 16 <= _TASK_PAGES:
                    mm = b.mm_of(prev["thread"])
                    b.add_region(mm, start, 16, 4)  # type: ignore[arg-type]
                    structure.append(prev | {"addr": start << PAGE_SHIFT, "pages": 16, "order": 4})

    body: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, max(0, max_ops - len(structure))))):
        op = b.op(draw(st.sampled_from(b.threads)))
        if op is not None:
            body.append(op)
    for op in structure:
        body.insert(draw(st.integers(0, len(body))), op)
    b.ops = body
    return b.program(b.schedule())


def program_bytes(max_size: int = 256) -> st.SearchStrategy[bytes]:
    """Inputs of :func:`engine.decode`: random bytes and encodings of programs."""
    return st.one_of(st.binary(max_size=max_size), programs().map(encode),
                     any_programs(max_ops=16).map(encode))


def _mutant(program: Program, rng: Any) -> Program:
    return mutate_program(program, rng) or program


def seeded_programs(seeds: list[Program]) -> st.SearchStrategy[Program]:
    """A seed program, as it is or through :func:`fuzz.mutate.mutate_program`.

    The mutations draw from a Hypothesis-controlled ``Random``, so Hypothesis
    steers and shrinks them like any other draw: which seed, which
    mutations, where.  Raises ValueError for an empty ``seeds``.
    """
    if not seeds:
        raise ValueError("seeds: a seeded strategy needs at least one program (got none)")
    return st.one_of(st.sampled_from(seeds),
                     st.builds(_mutant, st.sampled_from(seeds), st.randoms(use_true_random=False)))
