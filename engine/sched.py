"""Threads, locks and the deterministic scheduler.

Every kernel path that another CPU could interleave with is a generator: a
``yield`` is a point where another thread may run.  A thread that wants a
held lock yields the lock and is not runnable until the lock is free.

Default policy: run the runnable thread whose current (or next) operation
comes first in ``program.ops``.  A schedule entry ``[step, name]`` makes
thread ``name`` run the segment at global step ``step`` instead (ignored if
that thread cannot run then).  Nothing here reads a clock or a global RNG.
"""

from __future__ import annotations

from typing import Any, Generator

Segment = Generator[Any, None, Any]


class SpinLock:
    """A lock that is either free or owned by one thread (spinlock_t, PG_locked)."""

    __slots__ = ("name", "owner")

    def __init__(self, name: str) -> None:
        self.name = name
        self.owner: "KThread | None" = None

    def free_for(self, t: "KThread") -> bool:
        return self.owner is None

    def __repr__(self) -> str:
        return f"<lock {self.name}>"


class RwSem:
    """A reader/writer semaphore (mmap_lock)."""

    __slots__ = ("name", "readers", "writer")

    def __init__(self, name: str) -> None:
        self.name = name
        self.readers = 0
        self.writer: "KThread | None" = None

    def free_for(self, t: "KThread") -> bool:
        if t.want_write:
            return self.writer is None and self.readers == 0
        return self.writer is None

    def __repr__(self) -> str:
        return f"<rwsem {self.name}>"


class Gate:
    """Something a thread waits for that is not a lock (its mm to be forked)."""

    __slots__ = ("name", "open")

    def __init__(self, name: str) -> None:
        self.name = name
        self.open = False

    def free_for(self, t: "KThread") -> bool:
        return self.open

    def __repr__(self) -> str:
        return f"<gate {self.name}>"


class KThread:
    """One thread of a program: its operations, cursor and running segment."""

    __slots__ = ("name", "kind", "mm_id", "ops", "cursor", "gen", "blocked_on", "want_write",
                 "cpu", "held", "frames")

    def __init__(self, name: str, kind, mm_id: int | None, ops: list[int], cpu: int) -> None:
        self.name = name
        self.kind = kind
        self.mm_id = mm_id
        self.ops = ops            # indices into program.ops, ascending
        self.cursor = 0
        self.gen: Segment | None = None
        self.blocked_on = None
        self.want_write = False
        self.cpu = cpu
        self.held: dict = {}      # folio -> temporary references this thread holds

    def next_op(self) -> int | None:
        return self.ops[self.cursor] if self.cursor < len(self.ops) else None

    def runnable(self) -> bool:
        if self.cursor >= len(self.ops):
            return False
        b = self.blocked_on
        return b is None or b.free_for(self)


def spin_lock(k, lock: SpinLock) -> Segment:
    """Take ``lock``; the thread is not runnable while another holds it."""
    t = k.current
    while lock.owner is not None:
        if lock.owner is t:
            raise_deadlock(lock, t)
        t.blocked_on = lock
        yield lock
    t.blocked_on = None
    lock.owner = t


def spin_unlock(k, lock: SpinLock) -> None:
    lock.owner = None


def spin_trylock(k, lock: SpinLock) -> bool:
    if lock.owner is not None:
        return False
    lock.owner = k.current
    return True


def down_read(k, sem: RwSem) -> Segment:
    t = k.current
    t.want_write = False
    while sem.writer is not None:
        t.blocked_on = sem
        yield sem
    t.blocked_on = None
    sem.readers += 1


def up_read(k, sem: RwSem) -> None:
    sem.readers -= 1


def down_write(k, sem: RwSem) -> Segment:
    t = k.current
    t.want_write = True
    while sem.writer is not None or sem.readers:
        t.blocked_on = sem
        yield sem
    t.blocked_on = None
    t.want_write = False
    sem.writer = t


def up_write(k, sem: RwSem) -> None:
    sem.writer = None


def wait_gate(k, gate: Gate) -> Segment:
    t = k.current
    while not gate.open:
        t.blocked_on = gate
        yield gate
    t.blocked_on = None


def raise_deadlock(lock, t) -> None:
    from engine.errors import KernelBug
    raise KernelBug(f"recursive locking of {lock!r} by thread {t.name}")
