"""The program format: threads, operations and a schedule, as versioned JSON.

A program is what every engine runs and what the fuzzers generate.  It is
pure data: the engine knows how to execute it, the fuzzers know how to make
it, the store knows how to keep it.

Addresses are byte addresses of the process' virtual address space and must
be page aligned.  ``pages`` counts 4 KiB pages.  Every address an operation
touches must lie inside a region that some ``mmap`` (or ``mremap``
destination) of the same process declares; whether the VMA still exists when
the operation runs is a question for the engine (it answers ``-EFAULT`` or
``-ENOMEM`` like the kernel).

The schedule is a sparse list of preemptions, each naming a *place* and a
thread: when the thread running operation ``op`` reaches its ``nth`` yield
point of kind ``at`` (:class:`~engine.mm.sched.YieldPoint`), the named thread
runs the next atomic segment instead of the default choice.  The default
choice is the runnable thread whose current (or next) operation comes first
in ``ops``.  A kernel version in which operation ``op`` ends before that
place (a window a patch closed) takes the preemption when the operation
ends.  See :mod:`engine.mm.sched` and :mod:`engine.execution.runner`.

Format 1 named global step numbers instead, which two kernel versions that
yield a different number of times count differently: the same schedule then
preempted two different interleavings.  A format-1 program without a
schedule means the same in format 2 and loads as it is; one with a schedule
is read on one engine by :func:`engine.corpus.upgrade.upgrade_program`.

A device's DMA goes through a pin that is held: a ``dma_write`` comes after
the ``pin`` it names in ``ops`` and before any ``unpin`` of it.  At run time
the device waits until the pin is taken, and the unpin until every DMA
through the pin listed before it has finished, as a driver completes its
DMA before it unpins.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from engine.errors import ProgramError
from engine.program.places import YieldPoint

PROGRAM_VERSION: Final = 2
#: Program format versions :func:`parse_program` reads (1: without a schedule only).
READABLE_VERSIONS = (1, 2)
PAGE_SIZE = 4096
PAGE_SHIFT = 12
#: Largest user address the model accepts (x86-64 4-level paging, 128 TiB).
TASK_SIZE = 1 << 47
MAX_PAGES = 1 << 16
MAX_THREADS = 8
MAX_OPS = 4096
MAX_VALUE = (1 << 32) - 1
FOLIO_ORDERS = (0, 4, 9)

_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$"


class ThreadKind(str, enum.Enum):
    """Who runs a thread's operations."""

    TASK = "task"        #: a user task of one process (mm)
    KTHREAD = "kthread"  #: kswapd, the shrinker, a pfn walker
    DEVICE = "device"    #: a DMA engine writing into pinned pages


class Advice(str, enum.Enum):
    """madvise(2) advice values the model implements."""

    MADV_DONTNEED = "MADV_DONTNEED"
    MADV_FREE = "MADV_FREE"
    MADV_PAGEOUT = "MADV_PAGEOUT"


class Prot(str, enum.Enum):
    """mprotect(2) protections the model implements."""

    PROT_READ = "r"
    PROT_READ_WRITE = "rw"


_Model = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

# strict: "2097152", 2097152.0 or true are not addresses, as the JSON Schema says
Addr = Annotated[int, Field(strict=True, ge=0, lt=TASK_SIZE, multiple_of=PAGE_SIZE)]
Pages = Annotated[int, Field(strict=True, ge=1, le=MAX_PAGES)]
Value = Annotated[int, Field(strict=True, ge=0, le=MAX_VALUE)]
Name = Annotated[str, Field(pattern=_NAME)]
MmId = Annotated[int, Field(strict=True, ge=0, le=15)]
Flag = Annotated[bool, Field(strict=True)]
Count = Annotated[int, Field(strict=True, ge=1, le=1 << 20)]
OpIndex = Annotated[int, Field(strict=True, ge=0, lt=MAX_OPS)]
#: A yield point's occurrence within its operation (a run has far fewer steps).
Nth = Annotated[int, Field(strict=True, ge=1, le=1 << 20)]


def _op_required(schema: dict[str, Any]) -> None:
    """The discriminator has a default in Python but is required in JSON."""
    req = schema.setdefault("required", [])
    if "op" not in req:
        req.insert(0, "op")


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_op_required)
    thread: Name


class Mmap(_Op):
    """mmap(addr, pages, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED).

    ``order`` is the largest folio order the fault path may allocate here
    (0: small pages; 4: 64 KiB mTHP; 9: PMD-mapped 2 MiB THP).
    ``droppable`` is MAP_DROPPABLE (VM_DROPPABLE), ``locked`` MAP_LOCKED.
    """

    op: Literal["mmap"] = "mmap"
    addr: Addr
    pages: Pages
    order: Literal[0, 4, 9] = 0
    droppable: Flag = False
    locked: Flag = False


class Munmap(_Op):
    op: Literal["munmap"] = "munmap"
    addr: Addr
    pages: Pages


class Mremap(_Op):
    """mremap(addr, len, len, MREMAP_MAYMOVE|MREMAP_FIXED, new_addr)."""

    op: Literal["mremap"] = "mremap"
    addr: Addr
    pages: Pages
    new_addr: Addr


class Mprotect(_Op):
    op: Literal["mprotect"] = "mprotect"
    addr: Addr
    pages: Pages
    prot: Prot


class Fork(_Op):
    """fork(2): the child process gets mm id ``child``."""

    op: Literal["fork"] = "fork"
    child: MmId


class Read(_Op):
    """CPU loads from each page; the result is the list of values read."""

    op: Literal["read"] = "read"
    addr: Addr
    pages: Pages = 1


class Write(_Op):
    """CPU stores ``value`` into each page of the range."""

    op: Literal["write"] = "write"
    addr: Addr
    pages: Pages = 1
    value: Value


class Madvise(_Op):
    op: Literal["madvise"] = "madvise"
    addr: Addr
    pages: Pages
    advice: Advice


class Pin(_Op):
    """pin_user_pages_fast() (``fast``) or pin_user_pages() of the range.

    The pin is named ``pin`` so that later ``dma_write`` and ``unpin``
    operations can refer to it.
    """

    op: Literal["pin"] = "pin"
    addr: Addr
    pages: Pages = 1
    pin: Name
    write: Flag = True
    fast: Flag = True


class Unpin(_Op):
    """unpin_user_pages_dirty_lock(pages, n, make_dirty=dirty)."""

    op: Literal["unpin"] = "unpin"
    pin: Name
    dirty: Flag = True


class DmaWrite(_Op):
    """A device writes ``value`` into every page held by pin ``pin``."""

    op: Literal["dma_write"] = "dma_write"
    pin: Name
    value: Value


class Reclaim(_Op):
    """kswapd-style reclaim: isolate from the inactive LRU tails and shrink."""

    op: Literal["reclaim"] = "reclaim"
    nr_to_scan: Count = 32


class DeferredSplitScan(_Op):
    """The deferred-split shrinker's scan callback."""

    op: Literal["deferred_split_scan"] = "deferred_split_scan"
    nr_to_scan: Count = 128


class FolioTryGet(_Op):
    """A speculative folio_try_get() on the folio mapped at (mm, addr)."""

    op: Literal["folio_try_get"] = "folio_try_get"
    mm: MmId = 0
    addr: Addr
    ref: Name


class FolioPut(_Op):
    op: Literal["folio_put"] = "folio_put"
    ref: Name


class LruAddDrain(_Op):
    """lru_add_drain_all(): flush every CPU's folio batches."""

    op: Literal["lru_add_drain"] = "lru_add_drain"


Op = Annotated[
    Mmap | Munmap | Mremap | Mprotect | Fork | Read | Write | Madvise | Pin | Unpin | DmaWrite | Reclaim
    | DeferredSplitScan | FolioTryGet | FolioPut | LruAddDrain,
    Field(discriminator="op"),
]

OP_TYPES: dict[str, type[_Op]] = {
    cls.model_fields["op"].default: cls
    for cls in (Mmap, Munmap, Mremap, Mprotect, Fork, Read, Write, Madvise, Pin,
                Unpin, DmaWrite, Reclaim, DeferredSplitScan, FolioTryGet, FolioPut,
                LruAddDrain)
}

#: Which thread kinds may issue which operations.
OPS_BY_KIND: dict[ThreadKind, frozenset[str]] = {
    ThreadKind.TASK: frozenset({"mmap", "munmap", "mremap", "mprotect", "fork", "read",
                                "write", "madvise", "pin", "unpin", "lru_add_drain"}),
    ThreadKind.KTHREAD: frozenset({"reclaim", "deferred_split_scan", "folio_try_get",
                                   "folio_put", "lru_add_drain"}),
    ThreadKind.DEVICE: frozenset({"dma_write", "unpin"}),
}


class Preemption(BaseModel):
    """At a place of the run, thread ``thread`` runs the next segment.

    The place is the ``nth`` yield point of kind ``at`` of operation ``op``
    (``op`` is None for :attr:`~engine.mm.sched.YieldPoint.START`, the
    program's first segment; ``nth`` is 1 for START and OP_END).  The
    preempting thread may be the one running ``op``: it then goes on where
    the default policy would have let an earlier operation's thread in.
    """

    model_config = _Model
    op: OpIndex | None = None
    at: YieldPoint
    nth: Nth = 1
    thread: Name

    @property
    def place(self) -> tuple[int | None, YieldPoint, int]:
        return self.op, self.at, self.nth


class Thread(BaseModel):
    model_config = _Model
    name: Name
    kind: ThreadKind = ThreadKind.TASK
    mm: MmId | None = None


class Program(BaseModel):
    """A foliodiff program (format version 2)."""

    model_config = ConfigDict(extra="forbid", frozen=True,
                              json_schema_extra=lambda s: s.setdefault("required", []).insert(0, "version"))
    version: Literal[2] = PROGRAM_VERSION
    threads: Annotated[list[Thread], Field(min_length=1, max_length=MAX_THREADS)]
    ops: Annotated[list[Op], Field(max_length=MAX_OPS)]
    schedule: Annotated[list[Preemption], Field(max_length=MAX_OPS)] = []

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=False)

    def check(self) -> Program:
        """Raise :class:`ProgramError` unless the program is semantically valid."""
        check_program(self)
        return self


_PROGRAM_ADAPTER = TypeAdapter(Program)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in OP_TYPES or part in ("function-after", "tagged-union"):
            continue        # pydantic's union-member tag, not a field
        else:
            out += f".{part}" if out else str(part)
    return out or "program"


def _dig(data: Any, loc: tuple[Any, ...]) -> Any:
    cur = data
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            if isinstance(part, str) and part in OP_TYPES:
                continue
            return None
    return cur


def _from_validation_error(err: ValidationError, data: Any) -> ProgramError:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    field = _loc(loc)
    value = first.get("input", _dig(data, loc))
    kind = first["type"]
    if kind == "union_tag_invalid":
        return ProgramError(f"{field}.op", value.get("op") if isinstance(value, dict) else value,
                            f"unknown operation (known: {', '.join(sorted(OP_TYPES))})")
    if kind == "union_tag_not_found":
        return ProgramError(f"{field}.op", None, "missing operation name")
    if kind == "missing":
        return ProgramError(field, None, "required field is missing")
    if kind == "extra_forbidden":
        return ProgramError(field, value, "unknown field")
    return ProgramError(field, value, first["msg"])


def parse_program(data: Any, *, check: bool = True) -> Program:
    """Validate decoded JSON ``data`` and return the :class:`Program`.

    @check: also the semantic checks (:func:`check_program`); without them
        only the fields (what :mod:`engine.corpus.upgrade` runs a format-1 program
        as, before it drops what format 2 refuses).
    Return: the program.  Raises :class:`ProgramError` naming the first bad
    field and its value.
    """
    if not isinstance(data, dict):
        raise ProgramError("program", type(data).__name__, "a program is a JSON object")
    version = data.get("version")
    if version == 1:
        if data.get("schedule"):
            raise ProgramError("schedule", data["schedule"],
                               "a format-1 schedule counts global steps, which mean different "
                               "places on different engines: read it on one engine with "
                               "engine.corpus.upgrade.upgrade_program (the CLI and the store do)")
        data = {**data, "version": PROGRAM_VERSION}
    elif version != PROGRAM_VERSION:
        raise ProgramError("version", version,
                           f"unsupported program version (readable: {READABLE_VERSIONS})")
    try:
        program = _PROGRAM_ADAPTER.validate_python(data)
    except ValidationError as err:
        raise _from_validation_error(err, data) from None
    return program.check() if check else program


def loads_program(text: str | bytes) -> Program:
    """Parse a program from JSON text."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ProgramError("program", str(err)[:80], "not valid JSON") from None
    return parse_program(data)


def load_program(path: str) -> Program:
    """Read and validate a program file.  The path is named on any error."""
    try:
        with open(path, "rb") as fh:
            text = fh.read()
    except OSError as err:
        raise ProgramError("path", path, err.strerror or "cannot read") from None
    return loads_program(text)


def program_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the program format."""
    schema = _PROGRAM_ADAPTER.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://foliodiff.invalid/schema/program-v{PROGRAM_VERSION}.json"
    return schema


def op_range(op: _Op) -> tuple[int, int] | None:
    """Byte range [start, end) an operation touches in its own mm, if any."""
    addr = getattr(op, "addr", None)
    if addr is None:
        return None
    return addr, addr + getattr(op, "pages", 1) * PAGE_SIZE


def _in_regions(start: int, end: int, regions: list[tuple[int, int]]) -> bool:
    """True when [start, end) is covered by the union of ``regions``."""
    pos = start
    for rs, re_ in sorted(regions):
        if rs <= pos < re_:
            pos = re_
            if pos >= end:
                return True
    return pos >= end


def check_program(p: Program) -> None:
    """Semantic checks the schema cannot express.

    Context: pure.  Raises :class:`ProgramError` naming the field and value:
    unknown thread, an operation its thread kind cannot issue, an address
    outside every region its process maps, a pin or reference used before
    being named, a schedule that is not increasing.
    """
    threads: dict[str, Thread] = {}
    for i, t in enumerate(p.threads):
        if t.name in threads:
            raise ProgramError(f"threads[{i}].name", t.name, "duplicate thread name")
        if t.kind is ThreadKind.TASK and t.mm is None:
            raise ProgramError(f"threads[{i}].mm", None, "a task thread needs an mm")
        if t.kind is not ThreadKind.TASK and t.mm is not None:
            raise ProgramError(f"threads[{i}].mm", t.mm, f"a {t.kind.value} thread has no mm")
        threads[t.name] = t

    # Which mms exist: mm 0, and every fork child (its parent is the forking task's mm).
    parent: dict[int, int | None] = {}
    for i, op in enumerate(p.ops):
        issuer = threads.get(op.thread)
        if issuer is None:
            raise ProgramError(f"ops[{i}].thread", op.thread, "unknown thread")
        if op.op not in OPS_BY_KIND[issuer.kind]:
            raise ProgramError(f"ops[{i}].op", op.op, f"a {issuer.kind.value} thread cannot issue it")
        if isinstance(op, Fork):
            if op.child == 0:
                raise ProgramError(f"ops[{i}].child", op.child, "mm 0 is the initial process")
            if op.child in parent:
                raise ProgramError(f"ops[{i}].child", op.child, "mm id already in use")
            if op.child == issuer.mm:
                raise ProgramError(f"ops[{i}].child", op.child, "a process cannot fork into itself")
            parent[op.child] = issuer.mm
    for i, t in enumerate(p.threads):
        if t.mm is not None and t.mm != 0 and t.mm not in parent:
            raise ProgramError(f"threads[{i}].mm", t.mm, "no fork creates this mm")

    # Regions each mm may touch: its own mmaps and mremap targets, plus its ancestors'.
    own: dict[int | None, list[tuple[int, int]]] = {}
    for op in p.ops:
        mm = threads[op.thread].mm
        if isinstance(op, Mmap):
            own.setdefault(mm, []).append((op.addr, op.addr + op.pages * PAGE_SIZE))
        elif isinstance(op, Mremap):
            own.setdefault(mm, []).append((op.new_addr, op.new_addr + op.pages * PAGE_SIZE))

    def regions(mm: int | None) -> list[tuple[int, int]]:
        out = list(own.get(mm, []))
        seen = {mm}
        while mm in parent and parent[mm] not in seen:
            mm = parent[mm]
            seen.add(mm)
            out += own.get(mm, [])
        return out

    pins: dict[str, Pin] = {}
    unpinned: dict[str, int] = {}       # pin -> the op that released it
    refs: set[str] = set()
    for i, op in enumerate(p.ops):
        if isinstance(op, Mmap | Mremap):
            end = op.addr + op.pages * PAGE_SIZE
            if end > TASK_SIZE:
                raise ProgramError(f"ops[{i}].pages", op.pages, "range ends beyond TASK_SIZE")
        if isinstance(op, Mremap) and op.new_addr + op.pages * PAGE_SIZE > TASK_SIZE:
            raise ProgramError(f"ops[{i}].new_addr", op.new_addr, "range ends beyond TASK_SIZE")
        if not isinstance(op, Mmap):
            rng = op_range(op)
            if rng is not None:
                mm = op.mm if isinstance(op, FolioTryGet) else threads[op.thread].mm
                if isinstance(op, FolioTryGet) and mm != 0 and mm not in parent:
                    raise ProgramError(f"ops[{i}].mm", mm, "no fork creates this mm")
                if not _in_regions(rng[0], rng[1], regions(mm)):
                    raise ProgramError(f"ops[{i}].addr", hex(rng[0]),
                                       f"range of {getattr(op, 'pages', 1)} pages lies outside "
                                       f"every VMA of mm {mm}")
        if isinstance(op, Pin):
            if op.pin in pins:
                raise ProgramError(f"ops[{i}].pin", op.pin, "duplicate pin name")
            pins[op.pin] = op
        elif isinstance(op, Unpin | DmaWrite):
            if op.pin not in pins:
                raise ProgramError(f"ops[{i}].pin", op.pin, "unknown pin (no earlier pin op names it)")
            if op.pin in unpinned:
                what = "DMA through" if isinstance(op, DmaWrite) else "second unpin of"
                raise ProgramError(f"ops[{i}].pin", op.pin,
                                   f"{what} a pin that is not held (ops[{unpinned[op.pin]}] unpins it)")
            if isinstance(op, DmaWrite) and not pins[op.pin].write:
                raise ProgramError(f"ops[{i}].pin", op.pin, "DMA write into a pin taken without FOLL_WRITE")
            if isinstance(op, Unpin):
                unpinned[op.pin] = i
        elif isinstance(op, FolioTryGet):
            if op.ref in refs:
                raise ProgramError(f"ops[{i}].ref", op.ref, "duplicate reference name")
            refs.add(op.ref)
        elif isinstance(op, FolioPut) and op.ref not in refs:
            raise ProgramError(f"ops[{i}].ref", op.ref,
                               "unknown reference (no earlier folio_try_get names it)")

    check_schedule(p.schedule, len(p.ops), threads)


def renumber_schedule(schedule: list[dict[str, Any]],
                      new_index: Callable[[int], int | None]) -> list[dict[str, Any]]:
    """Schedule entries (as in :meth:`Program.to_dict`) after the operations moved.

    @new_index: an operation's old index -> its new one, or None when it is
        gone (its preemptions go with it).  START entries name no operation.
    Return: the entries that survive, in their order, each a new dict.
    """
    out = []
    for e in schedule:
        op = e.get("op")
        if op is None:
            out.append(dict(e))
            continue
        new = new_index(op)
        if new is not None:
            out.append({**e, "op": new})
    return out


def check_schedule(schedule: list[Preemption], nr_ops: int, threads: dict[str, Any]) -> None:
    """Each preemption names an operation of the program (none at START), a known
    thread, occurrence 1 at START and OP_END, and a place no other one names.

    Context: pure.  Raises :class:`ProgramError` naming the entry's field.
    """
    seen: dict[tuple, int] = {}
    for i, e in enumerate(schedule):
        if e.at is YieldPoint.START:
            if e.op is not None:
                raise ProgramError(f"schedule[{i}].op", e.op, "the start place names no operation")
        elif e.op is None:
            raise ProgramError(f"schedule[{i}].op", None, f"a place at {e.at.value} names its operation")
        elif e.op >= nr_ops:
            raise ProgramError(f"schedule[{i}].op", e.op, f"no such operation ({nr_ops} in the program)")
        if e.at in (YieldPoint.START, YieldPoint.OP_END) and e.nth != 1:
            raise ProgramError(f"schedule[{i}].nth", e.nth, f"{e.at.value} happens once")
        if e.thread not in threads:
            raise ProgramError(f"schedule[{i}].thread", e.thread, "unknown thread")
        if e.place in seen:
            raise ProgramError(f"schedule[{i}]", e.model_dump(mode="json"),
                               f"the same place as schedule[{seen[e.place]}]")
        seen[e.place] = i
