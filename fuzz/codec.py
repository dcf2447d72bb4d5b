"""A total, structure-aware byte codec of programs, for byte-level fuzzers.

:func:`decode` turns *every* byte string (``b""`` included) into a
:class:`~engine.program.format.Program` that passes
:func:`~engine.program.format.check_program`; :func:`encode` is its exact inverse on
valid programs: ``decode(encode(p)) == p``.  Atheris mutates bytes, the
engines run programs; this module sits between them.

The format is shaped for reclaim fuzzing.  Most fields are *compact*: an
address is a region index and an offset relative to the regions the program
maps, counted in folios when a bit says so, so that most random bytes land
inside a VMA and on a folio boundary; numbers are small unless an escape
byte says otherwise.  A *raw* escape spells any valid operation or
preemption exactly, which is what makes :func:`encode` total.  Where a
decoded value would make the program invalid it is repaired by a fixed rule
(modulo, clamp, rename, insert a fork, or drop the operation or schedule
entry); a valid program never needs a repair, so repairs never break the
inverse.

The byte format (version 4) is specified in docs/codec.md; a change to it
changes that file and the version there.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from engine import (
    MAX_OPS,
    MAX_PAGES,
    MAX_THREADS,
    OP_TYPES,
    PAGE_SHIFT,
    TASK_SIZE,
    YIELD_POINTS,
    Advice,
    DeferredSplitScan,
    DmaWrite,
    FolioPut,
    FolioTryGet,
    Fork,
    LruAddDrain,
    Madvise,
    Mmap,
    Mprotect,
    Mremap,
    Munmap,
    Pin,
    Preemption,
    Program,
    Prot,
    Read,
    Reclaim,
    Thread,
    ThreadKind,
    Unpin,
    Write,
    YieldPoint,
    check_schedule,
)

__all__ = ["THREAD_MENU", "decode", "encode", "thread_ops"]

_TASK_PAGES = TASK_SIZE >> PAGE_SHIFT
_VALUE_MOD = 1 << 32
_SCAN_MOD = 1 << 20
_VARINT_BYTES = 10
_RAW = 0xFF
_SCHED = "schedule"
#: Occurrences a schedule entry can name: Preemption.nth is at most this.
_NTH_MOD = 1 << 20

#: The yield-point kinds a compact schedule entry picks from, per operation:
#: first those its kernel path reaches, then the scheduler's own.
_PLACE_MENUS: dict[str, tuple[YieldPoint, ...]] = {
    op: YIELD_POINTS.get(op, ()) + (YieldPoint.OP_END, YieldPoint.WAIT)
    for op in OP_TYPES
}
_PLACE_CODES = {op: {y: i for i, y in enumerate(m)} for op, m in _PLACE_MENUS.items()}
#: The raw schedule entry's kinds: every one, START first.
_ALL_POINTS = tuple(YieldPoint)
_ALL_POINT_CODES = {y: i for i, y in enumerate(_ALL_POINTS)}
#: Places that happen once per run (START) or per operation (OP_END).
_ONCE = (YieldPoint.START, YieldPoint.OP_END)

_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
_REST = _FIRST + "0123456789.-"
_FIRST_TABLE = bytes(ord(_FIRST[i % len(_FIRST)]) for i in range(256))
_REST_TABLE = bytes(ord(_REST[i % len(_REST)]) for i in range(256))
_FIRST_INDEX = {c: i for i, c in enumerate(_FIRST)}
_REST_INDEX = {c: i for i, c in enumerate(_REST)}

#: Zeros after the input, so that reads past its end need no bounds checks.
#: Larger than anything read once the input has ended: the header, a raw
#: thread list and the pre-mmaps (at most 1 + 1 + 8 * 34 + 3 * 23 bytes), or
#: the rest of one record (at most 2 + 1 + 33 + 2 * 11 bytes: a raw pin).
_PAD = bytes(512)

#: mmap orders and address units (in pages) selected by two bits each.
_ORDERS = (9, 4, 0, 4)
_UNITS = (512, 16, 1, 512)
#: Pages one PTE table maps (the 2 MiB unit).
_PT_PAGES = 512
#: ``F >> 4`` of an mmap body: (droppable, locked) for the rare flag values.
_MMAP_FLAGS = {13: (True, True), 14: (False, True), 15: (True, False)}
_MMAP_FLAG_CODES = {v: k for k, v in _MMAP_FLAGS.items()} | {(False, False): 0}
_PROTS = (Prot.PROT_READ, Prot.PROT_READ_WRITE)
#: MADV_FREE twice: it is what the models under test are about.
_ADVICES = (Advice.MADV_FREE, Advice.MADV_PAGEOUT, Advice.MADV_FREE, Advice.MADV_DONTNEED)
_KIND_CODES = (ThreadKind.TASK, ThreadKind.KTHREAD, ThreadKind.DEVICE, ThreadKind.TASK)


def _thread(name: str, kind: ThreadKind = ThreadKind.TASK, mm: int | None = None) -> Thread:
    return Thread(name=name, kind=kind, mm=mm)


_T0 = _thread("T0", mm=0)
_T1 = _thread("T1", mm=1)
_RECLAIM = _thread("reclaim", ThreadKind.KTHREAD)
_SHRINKER = _thread("shrinker", ThreadKind.KTHREAD)
_WALKER = _thread("walker", ThreadKind.KTHREAD)
_DMA = _thread("dma", ThreadKind.DEVICE)

#: The thread sets a header selects.  T1 (mm 1) runs after a fork: the
#: decoder inserts one by T0 when the operations have none.
THREAD_MENU: tuple[tuple[Thread, ...], ...] = (
    (_T0,),
    (_T0, _RECLAIM),
    (_T0, _RECLAIM, _SHRINKER),
    (_T0, _RECLAIM, _DMA),
    (_T0, _T1, _RECLAIM),
    (_T0, _RECLAIM, _WALKER),
    (_T0, _SHRINKER, _WALKER),
    (_T0, _T1, _RECLAIM, _SHRINKER),
    (_T0, _RECLAIM, _SHRINKER, _WALKER, _DMA),
    (_T0, _T1, _RECLAIM, _DMA),
    (_T0, _T1, _RECLAIM, _SHRINKER, _WALKER, _DMA),
    (_T0, _SHRINKER),
    (_T0, _DMA),
    (_T0, _T1),
    (_T0, _WALKER),
)
_RAW_THREADS = 15

# Operation menus, weighted by repetition toward what lazyfree reclaim bugs
# need: writes and MADV_FREE for tasks, each menu kthread's own job.
_TASK_OPS = ("write", "madvise", "read", "mmap", "write", "madvise", "pin", "unpin",
             "munmap", "mprotect", "mremap", "fork", "lru_add_drain")
_KTHREAD_OPS = {
    "reclaim": ("reclaim", "reclaim", "lru_add_drain", "folio_try_get", "folio_put",
                "deferred_split_scan"),
    "shrinker": ("deferred_split_scan", "deferred_split_scan", "reclaim", "lru_add_drain",
                 "folio_try_get", "folio_put"),
    "walker": ("folio_try_get", "folio_put", "folio_try_get", "folio_put", "reclaim",
               "deferred_split_scan", "lru_add_drain"),
}
_ANY_KTHREAD_OPS = ("reclaim", "deferred_split_scan", "folio_try_get", "folio_put",
                    "lru_add_drain")
_DEVICE_OPS = ("dma_write", "dma_write", "unpin")


def thread_ops(name: str, kind: ThreadKind) -> tuple[str, ...]:
    """The weighted operation menu of a thread.

    Return: operation names its kind may issue, every such one at least once
    (so that any valid operation can be encoded).
    """
    if kind is ThreadKind.TASK:
        return _TASK_OPS
    if kind is ThreadKind.DEVICE:
        return _DEVICE_OPS
    return _KTHREAD_OPS.get(name, _ANY_KTHREAD_OPS)


@lru_cache(maxsize=1024)
def _menu_kinds(menus: tuple[tuple[str, ...], ...]) -> tuple[tuple, dict]:
    """Record kinds of threads with these operation menus, and each kind's first selector.

    Return: the kinds, each the schedule entry or (thread index, operation,
    (compact layout, raw layout)), and a map from the schedule entry or
    (thread index, operation) to its first selector.
    """
    kinds: list[Any] = [_SCHED]
    for ti, menu in enumerate(menus):
        kinds += [(ti, op, (_LAYOUT[op, False], _LAYOUT[op, True])) for op in menu]
    first: dict[Any, int] = {}
    for sel, k in enumerate(kinds):
        first.setdefault(k if k is _SCHED else k[:2], sel)
    return tuple(kinds), first


def _kinds(threads: list[Thread] | tuple[Thread, ...]) -> tuple[tuple, dict]:
    """Record kinds of a thread set (cached by the threads' menus, not their names)."""
    return _menu_kinds(tuple(thread_ops(t.name, t.kind) for t in threads))


# Field layouts of record bodies, compact and raw.  The parser and the
# writer both follow them, so the two cannot drift apart.
_LAYOUT: dict[tuple[str, bool], str] = {}
for _op, _compact, _raw in (
        ("mmap", "bvn", "bvn"),
        ("munmap", "nnn", "vv"),
        ("read", "nnn", "vv"),
        ("mprotect", "bnnn", "bvv"),
        ("madvise", "bnnn", "bvv"),
        ("write", "vnnn", "vvv"),
        ("pin", "bnnn", "bsvv"),
        ("mremap", "bvnnn", "bvnnn"),
        ("fork", "n", "n"),
        ("unpin", "nb", "nb"),
        ("dma_write", "nv", "nv"),
        ("reclaim", "v", "v"),
        ("deferred_split_scan", "v", "v"),
        ("folio_try_get", "nnn", "nsv"),
        ("folio_put", "n", "n"),
        ("lru_add_drain", "", ""),
        (_SCHED, "nbnn", "nbnn")):
    _LAYOUT[_op, False] = _compact
    _LAYOUT[_op, True] = _raw
del _op, _compact, _raw

# BaseModel's slots, set the way model_construct() sets them.
_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def _construct(cls: type, fields: dict[str, Any]) -> Any:
    """``cls.model_construct(**fields)`` for a model whose fields are all given.

    Context: the caller guarantees the values are valid.  model_construct()
    looks up aliases and defaults field by field; skipping that is most of a
    decode's time.  The instance compares equal to a validated one (pydantic
    compares ``__dict__``, extra and private state).
    """
    m: Any = _new(cls)
    _set_dict(m, fields)
    _set_fields_set(m, set(fields))
    _set_extra(m, None)
    _set_private(m, None)
    return m


# --- reading and writing fields ----------------------------------------------


def _varint(buf: bytes, p: int) -> tuple[int, int]:
    """An LEB128 varint of at most 10 bytes at ``buf[p]``: (value, next position)."""
    out = shift = 0
    for i in range(p, p + _VARINT_BYTES):
        b = buf[i]
        out |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
    return out, i + 1


def _fields(buf: bytes, p: int, layout: str) -> tuple[tuple, int]:
    """The fields of ``layout`` at ``buf[p]``: (values, next position).

    Context: ``buf`` is padded (see :data:`_PAD`).
    """
    out = []
    for c in layout:
        x: Any = buf[p]             # a number, or the text of an "s" field
        p += 1
        if c == "n":
            if x < 0xF0:
                x &= 15
            else:
                v, p = _varint(buf, p)
                x = 16 + ((x & 15) | v << 4)
        elif c == "v":
            if x >= 0xF8:
                v, p = _varint(buf, p)
                x = 0xF8 + ((x & 7) | v << 3)
        elif c == "s":
            n = 1 + x % 32
            x = (buf[p:p + 1].translate(_FIRST_TABLE)
                 + buf[p + 1:p + n].translate(_REST_TABLE)).decode("ascii")
            p += n
        out.append(x)
    return tuple(out), p


def _put_varint(out: bytearray, v: int) -> None:
    if v >> (7 * _VARINT_BYTES):
        raise ValueError(f"value too large for the byte format: {v}")
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _put_fields(out: bytearray, layout: str, fields: tuple) -> None:
    """Write ``fields`` so that :func:`_fields` reads them back."""
    for c, x in zip(layout, fields, strict=True):
        if c == "b":
            out.append(x)
        elif c == "n":
            if x < 16:
                out.append(x)
            else:
                out.append(0xF0 | (x - 16) & 15)
                _put_varint(out, (x - 16) >> 4)
        elif c == "v":
            if x < 0xF8:
                out.append(x)
            else:
                out.append(0xF8 | (x - 0xF8) & 7)
                _put_varint(out, (x - 0xF8) >> 3)
        else:
            out.append(len(x) - 1)
            out.append(_FIRST_INDEX[x[0]])
            out += bytes(_REST_INDEX[ch] for ch in x[1:])


# --- numbers: decode side and its inverse ------------------------------------


def _size(v: int, fp: int) -> int:
    """Pages of a region (mmap, mremap): ``v`` even counts folios of ``fp`` pages."""
    pages = (v >> 1) + 1
    if not v & 1:
        pages *= fp
    return 1 + (pages - 1) % MAX_PAGES


def _size_code(pages: int, fp: int) -> int:
    return (pages // fp - 1) << 1 if pages % fp == 0 else ((pages - 1) << 1) | 1


def _place(a: int, unit: int, pages: int) -> int:
    """First page of a region ``a + 1`` units up, moved down to fit the address space."""
    return min(((a + 1) * unit) % _TASK_PAGES, _TASK_PAGES - pages)


def _unit_code(start: int) -> int:
    return next(i for i, u in enumerate(_UNITS) if start % u == 0)


def _place_code(start: int, unit: int) -> int:
    return (start // unit - 1) % (_TASK_PAGES // unit)


def _offset(o: int, fp: int, rp: int) -> int:
    """Page offset into a region of ``rp`` pages: ``o`` even counts folios."""
    return ((o >> 1) if o & 1 else (o >> 1) * fp) % rp


def _offset_code(off: int, fp: int) -> int:
    return (off // fp) << 1 if off % fp == 0 else (off << 1) | 1


def _span(n: int, fp: int, avail: int) -> int:
    """Pages of an operation's range: ``n`` odd counts folios; at most ``avail``."""
    pages = (n >> 1) + 1
    if n & 1:
        pages *= fp
    return pages if pages <= avail else 1 + (pages - 1) % avail


def _span_code(pages: int, fp: int) -> int:
    return ((pages // fp - 1) << 1) | 1 if fp > 1 and pages % fp == 0 else (pages - 1) << 1


def _free_name(prefix: str, proposed: str, used: list[str]) -> str:
    """``proposed`` unless taken, else the first free ``<prefix><j>``."""
    if proposed not in used:
        return proposed
    j = 0
    while f"{prefix}{j}" in used:
        j += 1
    return f"{prefix}{j}"


def _live(names: list[str], released: set[str]) -> list[str]:
    """The names not yet released, in the order they were named."""
    return [n for n in names if n not in released]


# --- the context an operation's fields are read in ---------------------------

#: A region: (program position of its mmap or mremap, first page, end page, folio pages).
_Region = tuple[int, int, int, int]


class _Context:
    """Regions, mms, pins and references: what compact fields are relative to.

    :func:`decode` and :func:`encode` build it the same way, which is what
    makes them inverse.  ``pos`` is the program position of the operation
    being read.
    """

    __slots__ = ("names", "mms", "own", "parent", "pos", "_vis", "_by_address", "_existing",
                 "pins", "write_pins", "unpinned", "refs", "put")

    def __init__(self, names: list[str], mms: list[int | None],
                 regions: list[tuple[int, _Region]], forks: list[tuple[int, int]]) -> None:
        """Index the structure.

        ``regions``: (thread index, region) in program order; ``forks``:
        (thread index, child).
        """
        self.names = names
        self.mms = mms
        self.own: dict[int | None, list[_Region]] = {}
        for ti, region in regions:
            self.own.setdefault(mms[ti], []).append(region)
        self.parent = {child: mms[ti] for ti, child in forks}
        self.pos = 0
        self._existing = sorted({0, *self.parent})
        self._vis: dict[int | None, tuple[list[_Region], list[int]]] = {}
        self._by_address: dict[int | None, list[_Region]] = {}
        self.pins: list[str] = []
        self.write_pins: list[str] = []
        self.unpinned: set[str] = set()
        self.refs: list[str] = []
        self.put: set[str] = set()

    def visible(self, mm: int | None) -> tuple[list[_Region], list[int]]:
        """The regions ``mm`` may touch, its own and its ancestors', and their positions.

        Return: both in program order.
        """
        vis = self._vis.get(mm)
        if vis is None:
            regs = list(self.own.get(mm, ()))
            seen = {mm}
            cur = mm
            while cur in self.parent and self.parent[cur] not in seen:
                cur = self.parent[cur]
                seen.add(cur)
                regs += self.own.get(cur, ())
            regs.sort()
            vis = self._vis[mm] = (regs, [r[0] for r in regs])
        return vis

    def region(self, mm: int | None, k: int) -> _Region | None:
        """_Region ``k`` counting back from the last one declared before ``pos``."""
        regs, positions = self.visible(mm)
        if not regs:
            return None
        return regs[(bisect_left(positions, self.pos) - 1 - k) % len(regs)]

    def region_code(self, mm: int | None, start: int, end: int) -> tuple[int, _Region] | None:
        """The first ``k`` (and its region) whose region holds pages [start, end)."""
        regs, positions = self.visible(mm)
        last = bisect_left(positions, self.pos) - 1
        for k in range(len(regs)):
            r = regs[(last - k) % len(regs)]
            if r[1] <= start and end <= r[2]:
                return k, r
        return None

    def covered(self, mm: int | None, start: int, end: int) -> bool:
        """True when pages [start, end) lie in the union of the regions ``mm`` may touch."""
        by_address = self._by_address.get(mm)
        if by_address is None:
            by_address = self._by_address[mm] = sorted(self.visible(mm)[0], key=_address_key)
        pos = start
        for _, rs, re_, _ in by_address:
            if rs <= pos < re_:
                pos = re_
                if pos >= end:
                    return True
        return pos >= end

    def existing(self) -> list[int]:
        """The mm ids a folio_try_get may name, ascending: 0 and every fork child."""
        return self._existing

    def observe(self, op: Any) -> None:
        """Account for a pin, unpin, reference or put the program now holds."""
        kind = op.op
        if kind == "pin":
            self.pins.append(op.pin)
            if op.write:
                self.write_pins.append(op.pin)
        elif kind == "unpin":
            self.unpinned.add(op.pin)
        elif kind == "folio_try_get":
            self.refs.append(op.ref)
        elif kind == "folio_put":
            self.put.add(op.ref)

    def range(self, mm: int | None, raw: bool, f: tuple, i: int) -> tuple[int, int] | None:
        """(first page, pages) of the address group at ``f[i:]``; None: mm may touch nothing."""
        r = self.region(mm, 0 if raw else f[i])
        if r is None:
            return None
        _, rs, re_, fp = r
        if raw:
            start, pages = f[i] % _TASK_PAGES, 1 + f[i + 1] % MAX_PAGES
            if self.covered(mm, start, start + pages):
                return start, pages
            return rs, min(pages, re_ - rs)
        off = _offset(f[i + 1], fp, re_ - rs)
        return rs + off, _span(f[i + 2], fp, re_ - rs - off)

    def range_code(self, mm: int | None, start: int, pages: int) -> tuple[int, int, int] | None:
        """The compact address group of a range inside one region, if there is one."""
        code = self.region_code(mm, start, start + pages)
        if code is None:
            return None
        k, (_, rs, _, fp) = code
        return k, _offset_code(start - rs, fp), _span_code(pages, fp)

    def page_code(self, mm: int | None, page: int) -> tuple[int, int] | None:
        """Compact (region, offset) of a page inside a region, if there is one."""
        code = self.region_code(mm, page, page + 1)
        if code is None:
            return None
        k, (_, rs, _, fp) = code
        return k, _offset_code(page - rs, fp)

    def pin_choices(self, write: bool) -> list[str]:
        """The pins an unpin (a DMA write: FOLL_WRITE only) may name: those held now.

        The same in both forms: check_program() refuses a use of a released pin.
        """
        return _live(self.write_pins if write else self.pins, self.unpinned)

    def ref_choices(self, raw: bool) -> list[str]:
        """The references a put may name: those not yet put, then (raw) the put ones."""
        live = _live(self.refs, self.put)
        return live + [n for n in self.refs if n in self.put] if raw else live


def _address_key(r: _Region) -> tuple[int, int]:
    return r[1], r[2]


# --- record bodies to operations --------------------------------------------
#
# A resolver takes the context, the thread index, the raw flag and the
# fields, and returns the operation, or None to drop it.  mmaps, mremap
# destinations and forks are the structure the context is made of: they are
# resolved while the records are read.


def _mmap(name: str, f: tuple) -> Mmap:
    flags, a, p = f
    order = _ORDERS[flags & 3]
    pages = _size(p, 1 << order)
    droppable, locked = _MMAP_FLAGS.get(flags >> 4, (False, False))
    return _construct(Mmap, {"thread": name, "op": "mmap",
                             "addr": _place(a, _UNITS[(flags >> 2) & 3], pages) << PAGE_SHIFT,
                             "pages": pages, "order": order,
                             "droppable": droppable, "locked": locked})


def _mremap_dest(f: tuple) -> tuple[int, int]:
    """(first page, pages) of an mremap's destination: in 2 MiB units, ``U >> 2 & 15``
    pages short of the boundary, where a moved large folio straddles two page tables."""
    unit = _UNITS[f[0] & 3]
    pages = _size(f[2], unit)
    if unit != _PT_PAGES:
        return _place(f[1], unit, pages), pages
    short = (f[0] >> 2) & 15
    return min(((f[1] + 1) * unit - short) % _TASK_PAGES, _TASK_PAGES - pages), pages


def _mremap_dest_code(dest: int) -> tuple[int, int]:
    """(U, A) of a destination at page ``dest``: the inverse of :func:`_mremap_dest`."""
    short = -dest % _PT_PAGES
    if 0 < short < 16:
        return short << 2, _place_code(dest + short, _PT_PAGES)
    ui = _unit_code(dest)
    return ui, _place_code(dest, _UNITS[ui])


def _mremap(ctx: _Context, ti: int, raw: bool, f: tuple) -> Mremap:
    mm = ctx.mms[ti]
    dest, pages = _mremap_dest(f)
    _, rs, re_, fp = ctx.region(mm, f[3])  # type: ignore[misc]  # the destination is one
    src = rs + _offset(f[4], fp, re_ - rs)
    if not ctx.covered(mm, src, src + pages):
        src = dest
    return _construct(Mremap, {"thread": ctx.names[ti], "op": "mremap", "addr": src << PAGE_SHIFT,
                               "pages": pages, "new_addr": dest << PAGE_SHIFT})


def _munmap(ctx: _Context, ti: int, raw: bool, f: tuple) -> Munmap | None:
    r = ctx.range(ctx.mms[ti], raw, f, 0)
    if r is None:
        return None
    return _construct(Munmap, {"thread": ctx.names[ti], "op": "munmap",
                               "addr": r[0] << PAGE_SHIFT, "pages": r[1]})


def _read(ctx: _Context, ti: int, raw: bool, f: tuple) -> Read | None:
    r = ctx.range(ctx.mms[ti], raw, f, 0)
    if r is None:
        return None
    return _construct(Read, {"thread": ctx.names[ti], "op": "read",
                             "addr": r[0] << PAGE_SHIFT, "pages": r[1]})


def _mprotect(ctx: _Context, ti: int, raw: bool, f: tuple) -> Mprotect | None:
    r = ctx.range(ctx.mms[ti], raw, f, 1)
    if r is None:
        return None
    return _construct(Mprotect, {"thread": ctx.names[ti], "op": "mprotect",
                                 "addr": r[0] << PAGE_SHIFT, "pages": r[1],
                                 "prot": _PROTS[f[0] & 1]})


def _madvise(ctx: _Context, ti: int, raw: bool, f: tuple) -> Madvise | None:
    r = ctx.range(ctx.mms[ti], raw, f, 1)
    if r is None:
        return None
    return _construct(Madvise, {"thread": ctx.names[ti], "op": "madvise",
                                "addr": r[0] << PAGE_SHIFT, "pages": r[1],
                                "advice": _ADVICES[f[0] & 3]})


def _write(ctx: _Context, ti: int, raw: bool, f: tuple) -> Write | None:
    r = ctx.range(ctx.mms[ti], raw, f, 1)
    if r is None:
        return None
    return _construct(Write, {"thread": ctx.names[ti], "op": "write",
                              "addr": r[0] << PAGE_SHIFT, "pages": r[1],
                              "value": f[0] % _VALUE_MOD})


def _pin(ctx: _Context, ti: int, raw: bool, f: tuple) -> Pin | None:
    r = ctx.range(ctx.mms[ti], raw, f, 2 if raw else 1)
    if r is None:
        return None
    name = _free_name("p", f[1] if raw else f"p{len(ctx.pins)}", ctx.pins)
    return _construct(Pin, {"thread": ctx.names[ti], "op": "pin", "addr": r[0] << PAGE_SHIFT,
                            "pages": r[1], "pin": name,
                            "write": not f[0] & 1, "fast": not f[0] & 2})


def _unpin(ctx: _Context, ti: int, raw: bool, f: tuple) -> Unpin | None:
    pins = ctx.pin_choices(write=False)
    if not pins:
        return None
    return _construct(Unpin, {"thread": ctx.names[ti], "op": "unpin",
                              "pin": pins[f[0] % len(pins)], "dirty": not f[1] & 1})


def _dma_write(ctx: _Context, ti: int, raw: bool, f: tuple) -> DmaWrite | None:
    pins = ctx.pin_choices(write=True)
    if not pins:
        return None
    return _construct(DmaWrite, {"thread": ctx.names[ti], "op": "dma_write",
                                 "pin": pins[f[0] % len(pins)], "value": f[1] % _VALUE_MOD})


def _reclaim(ctx: _Context, ti: int, raw: bool, f: tuple) -> Reclaim:
    return _construct(Reclaim, {"thread": ctx.names[ti], "op": "reclaim",
                                "nr_to_scan": 1 + (f[0] + 31) % _SCAN_MOD})


def _deferred_split_scan(ctx: _Context, ti: int, raw: bool, f: tuple) -> DeferredSplitScan:
    return _construct(DeferredSplitScan, {"thread": ctx.names[ti], "op": "deferred_split_scan",
                                          "nr_to_scan": 1 + (f[0] + 127) % _SCAN_MOD})


def _folio_try_get(ctx: _Context, ti: int, raw: bool, f: tuple) -> FolioTryGet | None:
    mms = ctx.existing()
    mm = mms[f[0] % len(mms)]
    r = ctx.region(mm, 0 if raw else f[1])
    if r is None:
        return None
    _, rs, re_, fp = r
    if raw:
        page = f[2] % _TASK_PAGES
        if not ctx.covered(mm, page, page + 1):
            page = rs
    else:
        page = rs + _offset(f[2], fp, re_ - rs)
    name = _free_name("r", f[1] if raw else f"r{len(ctx.refs)}", ctx.refs)
    return _construct(FolioTryGet, {"thread": ctx.names[ti], "op": "folio_try_get",
                                    "mm": mm, "addr": page << PAGE_SHIFT, "ref": name})


def _folio_put(ctx: _Context, ti: int, raw: bool, f: tuple) -> FolioPut | None:
    refs = ctx.ref_choices(raw)
    if not refs:
        return None
    return _construct(FolioPut, {"thread": ctx.names[ti], "op": "folio_put",
                                 "ref": refs[f[0] % len(refs)]})


def _lru_add_drain(ctx: _Context, ti: int, raw: bool, f: tuple) -> LruAddDrain:
    return _construct(LruAddDrain, {"thread": ctx.names[ti], "op": "lru_add_drain"})


_RESOLVE: dict[str, Callable[[_Context, int, bool, tuple], Any]] = {
    "munmap": _munmap,
    "read": _read,
    "mprotect": _mprotect,
    "madvise": _madvise,
    "write": _write,
    "pin": _pin,
    "mremap": _mremap,
    "unpin": _unpin,
    "dma_write": _dma_write,
    "reclaim": _reclaim,
    "deferred_split_scan": _deferred_split_scan,
    "folio_try_get": _folio_try_get,
    "folio_put": _folio_put,
    "lru_add_drain": _lru_add_drain,
}
#: Operations that name or release a pin or a reference.
_OBSERVED = frozenset({"pin", "unpin", "folio_try_get", "folio_put"})


# --- decode -------------------------------------------------------------------


def _first_task(threads: list[Thread] | tuple[Thread, ...]) -> int | None:
    return next((i for i, t in enumerate(threads) if t.kind is ThreadKind.TASK), None)


#: Per menu entry: its threads, their names, record kinds and first task.
_MENU = tuple((m, [t.name for t in m], _kinds(m)[0], _first_task(m)) for m in THREAD_MENU)


def _read_threads(buf: bytes, p: int) -> tuple[list[Thread], int]:
    """A raw thread list: (threads, next position)."""
    threads: list[Thread] = []
    names: set[str] = set()
    count = 1 + buf[p] % MAX_THREADS
    p += 1
    for _ in range(count):
        (k, name), p = _fields(buf, p, "bs")
        if name in names:
            continue          # repair: thread names are unique
        names.add(name)
        kind = _KIND_CODES[k & 3]
        threads.append(_construct(Thread, {"name": name, "kind": kind,
                                           "mm": k >> 4 if kind is ThreadKind.TASK else None}))
    return threads, p


def _fork_candidates(used: list[int], mm: int | None) -> list[int]:
    return [m for m in range(1, 16) if m not in used and m != mm]


def decode(data: bytes) -> Program:
    """Decode any byte string into a valid program.

    Context: pure, deterministic.  Return: a program that passes
    check_program(), of at most ``len(data) + 3 + MAX_THREADS`` operations
    (pre-mmaps and repair forks).
    """
    end = len(data)
    buf = bytes(data) + _PAD
    header = buf[0]
    if header & 15 == _RAW_THREADS:
        threads, p = _read_threads(buf, 1)
        names = [t.name for t in threads]
        kinds, first = _kinds(threads)[0], _first_task(threads)
    else:
        menu, names, kinds, first = _MENU[(header & 15) % len(_MENU)]
        threads, p = list(menu), 1
    nkinds = len(kinds)
    mms = [t.mm for t in threads]

    # Pass 1: records, whose shapes depend on the threads only.  mmaps,
    # mremap destinations and forks (whose children depend on the forks
    # before them only) make the structure the other operations need.
    plan: list[Any] = []          # operations, or (thread, op, raw, fields) to resolve
    regions: list[tuple[int, _Region]] = []
    forks: list[tuple[int, int]] = []
    children: list[int] = []
    if first is not None:
        for _ in range((header >> 4) & 3):
            f, p = _fields(buf, p, "bvn")
            m = _mmap(names[first], f)
            start = m.addr >> PAGE_SHIFT
            regions.append((first, (len(plan), start, start + m.pages, 1 << m.order)))
            plan.append(m)
    entries: list[tuple] = []     # schedule records: (len(plan) then, raw, fields)
    while p < end:
        b = buf[p]
        p += 1
        raw = b == _RAW
        if raw:
            b = buf[p]
            p += 1
        kind = kinds[b % nkinds]
        if kind is _SCHED:
            f, p = _fields(buf, p, "nbnn")
            if len(entries) < MAX_OPS:
                entries.append((len(plan), raw, f))
            continue
        ti, op, layouts = kind
        f, p = _fields(buf, p, layouts[raw])
        if len(plan) >= MAX_OPS:
            continue
        if op == "mmap":
            m = _mmap(names[ti], f)
            start = m.addr >> PAGE_SHIFT
            regions.append((ti, (len(plan), start, start + m.pages, 1 << m.order)))
            plan.append(m)
        elif op == "fork":
            cands = _fork_candidates(children, mms[ti])
            if not cands:
                continue      # all 15 child ids taken
            child = cands[f[0] % len(cands)]
            forks.append((ti, child))
            children.append(child)
            plan.append(_construct(Fork, {"thread": names[ti], "op": "fork", "child": child}))
        else:
            if op == "mremap":
                start, pages = _mremap_dest(f)
                regions.append((ti, (len(plan), start, start + pages, 1)))
            plan.append((ti, op, raw, f))
    missing = [m for m in dict.fromkeys(mms) if m and m not in children]
    if missing:
        plan, points = _repair_mms(threads, names, mms, plan, forks, missing)
        if points:
            # A region's operation comes after a fork inserted at its position,
            # a schedule entry before it: the fork precedes the next operation.
            regions = [(ti, (pos + bisect_right(points, pos), first, end, size))
                       for ti, (pos, first, end, size) in regions]
            entries = [(pos + bisect_left(points, pos), *rest) for pos, *rest in entries]

    # Pass 2: everything else, in program order (pins before their uses).
    ctx = _Context(names, mms, regions, forks)
    ops: list[Any] = []
    dropped: list[int] = []       # plan positions that resolved to no operation
    for i, o in enumerate(plan):
        if type(o) is tuple:
            ti, op, raw, f = o
            ctx.pos = i
            o = _RESOLVE[op](ctx, ti, raw, f)
            if o is None:
                dropped.append(i)
                continue
            if op in _OBSERVED:
                ctx.observe(o)
        ops.append(o)

    schedule = _schedule(entries, ops, dropped, names) if entries else []
    return _construct(Program, {"version": 2, "threads": threads, "ops": ops,
                                "schedule": schedule})


def _schedule(entries: list[tuple], ops: list[Any], dropped: list[int],
              names: list[str]) -> list[Preemption]:
    """Resolve schedule records against the final operations.

    @entries: (plan entries before the record, raw, fields) in record order.
    @dropped: the plan positions that resolved to no operation, ascending.
    Return: the preemptions, without the entries the format drops.
    """
    nops = len(ops)
    out: list[Preemption] = []
    taken: set[tuple] = set()
    for before, raw, (k, y, n, t) in entries:
        at = _ALL_POINTS[y % len(_ALL_POINTS)] if raw else None
        if at is YieldPoint.START:
            index = None      # repair: the start names no operation
        elif not nops:
            continue          # repair: the place names an operation, and there is none
        else:
            # the last operation decoded before the record is the one K = 0 names
            index = (before - bisect_left(dropped, before) - 1 - k) % nops
            if not raw:
                menu = _PLACE_MENUS[ops[index].op]
                at = menu[y % len(menu)]
        nth = 1 if at in _ONCE else 1 + n % _NTH_MOD
        place = (index, at, nth)
        if place in taken:
            continue          # repair: one preemption per place
        taken.add(place)
        out.append(_construct(Preemption, {"op": index, "at": at, "nth": nth,
                                           "thread": names[t % len(names)]}))
    return out


def _repair_mms(threads: list[Thread], names: list[str], mms: list[int | None], plan: list,
                forks: list[tuple[int, int]], missing: list[int]) -> tuple[list, list[int]]:
    """Make every task's mm exist: fork it from mm 0, or move the task to mm 0.

    Context: updates ``threads``, ``mms`` and ``forks`` in place.
    Return: the plan with the repair forks inserted, and the positions in
    the old plan before which they were inserted, ascending (one per fork).
    """
    host = next((i for i, t in enumerate(threads)
                 if t.kind is ThreadKind.TASK and t.mm == 0), None)
    if host is not None and len(plan) + len(missing) <= MAX_OPS:
        index = {n: i for i, n in enumerate(names)}
        owners = [mms[o[0] if type(o) is tuple else index[o.thread]] for o in plan]
        # Before the first operation of the mm: its tasks wait for the fork anyway.
        where = sorted((owners.index(m) if m in owners else len(plan), m) for m in missing)
        out = list(plan)
        for n, (i, m) in enumerate(where):
            out.insert(i + n, _construct(Fork, {"thread": names[host], "op": "fork", "child": m}))
            forks.append((host, m))
        return out, [i for i, _ in where]
    for i, t in enumerate(threads):
        if t.mm in missing:
            threads[i] = _construct(Thread, {"name": t.name, "kind": t.kind, "mm": 0})
            mms[i] = 0
    return plan, []


# --- encode -------------------------------------------------------------------


def _mmap_code(op: Mmap) -> tuple[int, int, int]:
    start = op.addr >> PAGE_SHIFT
    ui = _unit_code(start)
    flags = _ORDERS.index(op.order) | ui << 2 | _MMAP_FLAG_CODES[op.droppable, op.locked] << 4
    return flags, _place_code(start, _UNITS[ui]), _size_code(op.pages, 1 << op.order)


#: The fields a range operation has before its address group.
_RANGE_HEADS: dict[str, Callable[[Any], tuple]] = {
    "munmap": lambda op: (),
    "read": lambda op: (),
    "mprotect": lambda op: (_PROTS.index(op.prot),),
    "madvise": lambda op: (_ADVICES.index(op.advice),),
    "write": lambda op: (op.value,),
}


def _bodies(ctx: _Context, ti: int, op: Any) -> tuple[tuple | None, tuple | None]:
    """The compact and the raw fields that could spell ``op`` (None: none could)."""
    kind = op.op
    body: tuple[int, ...] | None
    code: tuple[int, ...] | None
    if kind in _RANGE_HEADS or kind == "pin":
        page, pages = op.addr >> PAGE_SHIFT, op.pages
        code = ctx.range_code(ctx.mms[ti], page, pages)
        if kind == "pin":
            flags = (not op.write) | (not op.fast) << 1
            return (flags, *code) if code else None, (flags, op.pin, page, pages - 1)
        head = _RANGE_HEADS[kind](op)
        return (*head, *code) if code else None, (*head, page, pages - 1)
    if kind == "mremap":
        dest, src = op.new_addr >> PAGE_SHIFT, op.addr >> PAGE_SHIFT
        u, a = _mremap_dest_code(dest)
        head = (u, a, _size_code(op.pages, _UNITS[u & 3]))
        code = ctx.page_code(ctx.mms[ti], src)
        body = (*head, *code) if code else None
        return body, body
    if kind == "folio_try_get":
        m = ctx.existing().index(op.mm)
        page = op.addr >> PAGE_SHIFT
        code = ctx.page_code(op.mm, page)
        return (m, *code) if code else None, (m, op.ref, page)
    if kind in ("unpin", "dma_write"):
        # one form: a use of a pin that is not held is no valid program
        held = ctx.pin_choices(write=kind == "dma_write")
        tail = (int(not op.dirty),) if kind == "unpin" else (op.value,)
        body = (held.index(op.pin), *tail) if op.pin in held else None
    elif kind == "folio_put":
        # a second put of a reference: only the raw choices hold the ones put
        compact, raw = (ctx.ref_choices(r) for r in (False, True))
        return ((compact.index(op.ref),) if op.ref in compact else None,
                (raw.index(op.ref),) if op.ref in raw else None)
    elif kind == "reclaim":
        body = ((op.nr_to_scan - 32) % _SCAN_MOD,)
    elif kind == "deferred_split_scan":
        body = ((op.nr_to_scan - 128) % _SCAN_MOD,)
    else:
        body = ()     # lru_add_drain
    return body, body


def encode(p: Program) -> bytes:
    """Encode a valid program so that ``decode(encode(p)) == p``.

    Context: pure.  Return: the bytes.  Raises :class:`ValueError` if ``p``
    is not valid (see check_program()); every valid program has a spelling.
    """
    out = bytearray()
    threads = list(p.threads)
    names = [t.name for t in threads]
    index = {n: i for i, n in enumerate(names)}
    if len(index) != len(threads):
        raise ValueError("threads: duplicate thread name")
    first = _first_task(threads)
    npre = 0
    while (first is not None and npre < min(3, len(p.ops)) and p.ops[npre].op == "mmap"
           and p.ops[npre].thread == names[first]):
        npre += 1

    menu = next((i for i, m in enumerate(THREAD_MENU) if list(m) == threads), _RAW_THREADS)
    out.append(menu | npre << 4)
    if menu == _RAW_THREADS:
        out.append(len(threads) - 1)
        for t in threads:
            _put_fields(out, "bs", (_KIND_CODES.index(t.kind) | (t.mm or 0) << 4, t.name))
    _, selector = _kinds(threads)
    check_schedule(p.schedule, len(p.ops), index)     # a ProgramError is a ValueError
    entries = _entry_positions(p.schedule, npre)
    _put_entries(out, entries.get(-1, []), -1, p.ops, index, selector[_SCHED])

    mms = [t.mm for t in threads]
    regions: list[tuple[int, _Region]] = []
    forks: list[tuple[int, int]] = []
    for i, op in enumerate(p.ops):
        ti = index[op.thread]
        if op.op == "mmap":
            start = op.addr >> PAGE_SHIFT
            regions.append((ti, (i, start, start + op.pages, 1 << op.order)))
        elif op.op == "mremap":
            start = op.new_addr >> PAGE_SHIFT
            regions.append((ti, (i, start, start + op.pages, 1)))
        elif op.op == "fork":
            forks.append((ti, op.child))
    ctx = _Context(names, mms, regions, forks)

    fields: tuple[Any, ...] | None
    for i, op in enumerate(p.ops):
        ti = index[op.thread]
        ctx.pos = i
        if op.op == "mmap":
            fields, is_raw = _mmap_code(op), False
            ok = _mmap(op.thread, fields) == op
        elif op.op == "fork":
            cands = _fork_candidates([c for _, c in forks[:sum(o.op == "fork" for o in p.ops[:i])]],
                                     mms[ti])
            ok = op.child in cands
            fields, is_raw = (cands.index(op.child) if ok else 0,), False
        else:
            compact, raw = _bodies(ctx, ti, op)
            resolve = _RESOLVE[op.op]
            ok = True
            if compact is not None and resolve(ctx, ti, False, compact) == op:
                fields, is_raw = compact, False
            else:
                fields, is_raw = raw, True
                ok = raw is not None and resolve(ctx, ti, True, raw) == op
        if not ok or fields is None:        # no fields without ok: for mypy
            raise ValueError(f"ops[{i}] cannot be encoded: the program is not valid")
        if i >= npre:
            sel = selector[ti, op.op]
            out += bytes((_RAW, sel)) if is_raw else bytes((sel,))
        _put_fields(out, _LAYOUT[op.op, is_raw], fields)
        ctx.observe(op)
        if i in entries:
            _put_entries(out, entries[i], i, p.ops, index, selector[_SCHED])
    return bytes(out)


def _entry_positions(schedule: list[Preemption], npre: int) -> dict[int, list[Preemption]]:
    """Where each schedule record goes: after which operation's record (-1: before all).

    Right after the operation it names, so that byte mutations elsewhere
    leave it naming the same one, unless an earlier entry went later: the
    records keep the schedule's order.  Never among the pre-mmaps, which
    the header counts and the records follow.
    """
    out: dict[int, list[Preemption]] = {}
    pos = npre - 1
    for e in schedule:
        if e.op is not None and e.op > pos:
            pos = e.op
        out.setdefault(pos, []).append(e)
    return out


def _put_entries(out: bytearray, entries: list[Preemption], pos: int, ops: list[Any],
                 index: dict[str, int], sel: int) -> None:
    """Write schedule records that follow operation ``pos`` (each names it or one before)."""
    for e in entries:
        if e.at is YieldPoint.START:
            raw, k, y = True, 0, _ALL_POINT_CODES[e.at]
        else:
            k = pos - e.op  # type: ignore[operator]  # only START names no operation
            code = _PLACE_CODES[ops[e.op].op].get(e.at)  # type: ignore[index]
            raw, y = (True, _ALL_POINT_CODES[e.at]) if code is None else (False, code)
        out += bytes((_RAW, sel)) if raw else bytes((sel,))
        _put_fields(out, "nbnn", (k, y, e.nth - 1, index[e.thread]))
