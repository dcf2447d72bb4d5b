"""Threads, locks and the deterministic scheduler.

Every kernel path that another CPU could interleave with is a generator: a
``yield`` is a point where another thread may run, and it yields the
:class:`YieldPoint` that names the kind of place it is.  A thread that wants a
held lock yields the lock and is not runnable until the lock is free.

Default policy: run the runnable thread whose current (or next) operation
comes first in ``program.ops``.  A preemption of the program's schedule names
a *place*: an operation, the kind of yield point inside it and its
occurrence (:class:`engine.program.format.Preemption`).  When the thread running
that operation reaches that place, the preemption's thread runs the next
segment instead (ignored if it cannot run then).  Places, not global step
counts, so that two kernel versions that yield a different number of times
elsewhere still preempt at the same point of the same operation.  Nothing
here reads a clock or a global RNG.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from engine.errors import RecursiveLocking

# The places are the program format's vocabulary (a schedule names them); the
# kernel paths yield them, and import them from here with the locks.
from engine.program.places import KERNEL_YIELD_POINTS as KERNEL_YIELD_POINTS
from engine.program.places import YieldPoint as YieldPoint

if TYPE_CHECKING:
    from engine.mm.folio import Folio
    from engine.program.format import ThreadKind


class Waitable(Protocol):
    """What a blocked thread waits on: a lock, a folio lock, a gate, other operations."""

    def free_for(self, t: KThread) -> bool:
        """Return: whether @t may go on now."""
        ...


#: What a kernel path yields: the kind of place it stopped at, or what it waits on.
Yielded = YieldPoint | Waitable
T = TypeVar("T")
#: A kernel path another thread can interleave with: a generator the scheduler
#: steps, which yields where it stops and returns a T.
Yields = Generator[Yielded, None, T]
#: An operation's whole path, as the runner holds it.
Segment = Yields[Any]


class LockContext(Protocol):
    """The kernel as the lock functions see it."""

    #: The thread running now (set by the runner before every step).
    current: KThread
    #: Spinlocks and write-held mmap_locks released so far (Kernel.unlocks).
    unlocks: int


class SpinLock:
    """A lock that is either free or owned by one thread (spinlock_t, PG_locked)."""

    __slots__ = ("name", "owner")

    def __init__(self, name: str) -> None:
        self.name = name
        self.owner: KThread | None = None

    def free_for(self, t: KThread) -> bool:
        return self.owner is None

    def __repr__(self) -> str:
        return f"<lock {self.name}>"


class RwSem:
    """A reader/writer semaphore (mmap_lock)."""

    __slots__ = ("name", "readers", "writer")

    def __init__(self, name: str) -> None:
        self.name = name
        self.readers = 0
        self.writer: KThread | None = None

    def free_for(self, t: KThread) -> bool:
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

    def free_for(self, t: KThread) -> bool:
        return self.open

    def __repr__(self) -> str:
        return f"<gate {self.name}>"


class KThread:
    """One thread of a program: its operations, cursor and running segment."""

    __slots__ = ("name", "kind", "mm_id", "ops", "cursor", "gen", "blocked_on", "want_write",
                 "cpu", "held", "frames")

    def __init__(self, name: str, kind: ThreadKind, mm_id: int | None, ops: list[int],
                 cpu: int) -> None:
        self.name = name
        self.kind = kind
        self.mm_id = mm_id
        self.ops = ops            # indices into program.ops, ascending
        self.cursor = 0
        self.gen: Segment | None = None
        self.blocked_on: Waitable | None = None
        self.want_write = False
        self.cpu = cpu
        self.held: dict[Folio, int] = {}      # folio -> temporary references this thread holds

    def runnable(self) -> bool:
        if self.cursor >= len(self.ops):
            return False
        b = self.blocked_on
        return b is None or b.free_for(self)


def spin_lock(k: LockContext, lock: SpinLock) -> Yields[None]:
    """Take ``lock``; the thread is not runnable while another holds it."""
    t = k.current
    while lock.owner is not None:
        if lock.owner is t:
            raise_deadlock(lock, t)
        t.blocked_on = lock
        yield lock
    t.blocked_on = None
    lock.owner = t


def spin_unlock(k: LockContext, lock: SpinLock) -> None:
    lock.owner = None
    k.unlocks += 1


def down_read(k: LockContext, sem: RwSem) -> Yields[None]:
    t = k.current
    t.want_write = False
    while sem.writer is not None:
        t.blocked_on = sem
        yield sem
    t.blocked_on = None
    sem.readers += 1


def up_read(k: LockContext, sem: RwSem) -> None:
    sem.readers -= 1


def down_write(k: LockContext, sem: RwSem) -> Yields[None]:
    t = k.current
    t.want_write = True
    while sem.writer is not None or sem.readers:
        t.blocked_on = sem
        yield sem
    t.blocked_on = None
    t.want_write = False
    sem.writer = t


def up_write(k: LockContext, sem: RwSem) -> None:
    sem.writer = None
    k.unlocks += 1


def wait_gate(k: LockContext, gate: Waitable) -> Yields[None]:
    """Wait (not runnable) until ``gate`` lets the current thread through."""
    t = k.current
    while not gate.free_for(t):
        t.blocked_on = gate
        yield gate
    t.blocked_on = None


def raise_deadlock(lock: SpinLock, t: KThread) -> None:
    raise RecursiveLocking(f"recursive locking of {lock!r} by thread {t.name}")
