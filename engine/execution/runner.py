"""Run a program on one kernel version: the scheduler loop, the oracles, the outcome.

Every run is a pure function of (program, engine): no clock, no global RNG.

What ends a run early, and who is to blame:

- an oracle :class:`~engine.execution.oracle.Violation` (data loss, a broken
  invariant, a leak, a hang): a finding about the kernel model;
- a modelled kernel report, :class:`~engine.errors.KernelBug` and its
  subclasses (BUG, KASAN out-of-bounds and use-after-free, refcount and
  mapcount underflow, recursive locking): a CRASH, a finding too;
- any other exception raised while the model runs (an IndexError, a
  KeyError, an inconsistency between the C and Python paths): a defect of
  foliodiff itself, the HARNESS verdict.  It is never a kernel divergence.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from pydantic import BaseModel

from engine.errors import ChooserError, HarnessError, KernelBug
from engine.execution.oracle import Oracle, Verdict, Violation
from engine.execution.outcome import Crash, Outcome, Place, Snapshot, TraceEntry, snapshot
from engine.kernels import kernel_class, resolve_engine
from engine.kernels.base import Kernel
from engine.mm.mm_types import MmStruct
from engine.mm.sched import KThread, Segment, Waitable, YieldPoint, wait_gate
from engine.program.format import (
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
    Read,
    Reclaim,
    ThreadKind,
    Unpin,
    Write,
)

#: Frames of these modules are harness, not kernel model (dropped from crash stacks).
_HARNESS = ("engine/execution/runner.py", "engine/mm/sched.py", "engine/execution/oracle.py",
            "engine/mm/page_table_check.py")
#: Where every run begins.
START: Place = (None, YieldPoint.START, 1)


def _as_gen(value: Any) -> Segment:
    """Wrap the result of a non-yielding operation as a finished segment."""
    return value
    yield  # pragma: no cover


def _lru_add_drain(k: Kernel, op: LruAddDrain) -> Segment:
    """lru_add_drain_all() runs as the operation starts (it never yields)."""
    k.lru_add_drain_all()
    return _as_gen(0)


class Operation(NamedTuple):
    """How the runner runs one type of operation, and what signatures call it."""

    #: The kernel entry point: (kernel, op) -> the operation's segment (a generator).
    enter: Callable[[Kernel, Any], Segment]
    #: The kernel function a divergence that parts in the operation is signed with.
    function: str
    #: The yield points its kernel path can reach, besides OP_END and WAIT (any
    #: operation that takes a sleeping lock or waits for another may block):
    #: where a fuzzer can aim a preemption without running the program.
    yield_points: tuple[YieldPoint, ...] = ()


_RECLAIM_POINTS = (YieldPoint.PTE_CLEARED, YieldPoint.BETWEEN_PTES, YieldPoint.BEFORE_FREEZE,
                   YieldPoint.PMD_CHECKED, YieldPoint.PMD_CLEARED)

#: Every operation type of the program format, by class.
OPERATIONS: dict[type[BaseModel], Operation] = {
    Read: Operation(lambda k, op: k.cpu_access(op.addr, op.pages, None), "handle_mm_fault",
                    (YieldPoint.BETWEEN_PAGES,)),
    Write: Operation(lambda k, op: k.cpu_access(op.addr, op.pages, op.value), "handle_mm_fault",
                     (YieldPoint.BETWEEN_PAGES,)),
    Mmap: Operation(lambda k, op: k.sys_mmap(op), "do_mmap"),
    Munmap: Operation(lambda k, op: k.sys_munmap(op), "do_vmi_munmap"),
    Mremap: Operation(lambda k, op: k.sys_mremap(op), "move_vma"),
    Mprotect: Operation(lambda k, op: k.sys_mprotect(op), "mprotect_fixup"),
    Fork: Operation(lambda k, op: k.sys_fork(op), "copy_page_range"),
    # MADV_FREE walks folios; MADV_PAGEOUT reclaims them as well
    Madvise: Operation(lambda k, op: k.sys_madvise(op), "madvise_vma_behavior",
                       (YieldPoint.BETWEEN_FOLIOS,) + _RECLAIM_POINTS),
    Pin: Operation(lambda k, op: k.pin_user_pages(op), "pin_user_pages_fast",
                   (YieldPoint.GUP_FAST_READ, YieldPoint.GUP_FAST_GRABBED)),
    Unpin: Operation(lambda k, op: k.unpin_user_pages_dirty_lock(op), "unpin_user_pages_dirty_lock",
                     (YieldPoint.BETWEEN_PAGES,)),
    DmaWrite: Operation(lambda k, op: k.dma_write(op), "dma_write", (YieldPoint.BETWEEN_PAGES,)),
    Reclaim: Operation(lambda k, op: k.shrink_inactive_list(op.nr_to_scan), "shrink_folio_list",
                       (YieldPoint.ISOLATED, YieldPoint.BETWEEN_FOLIOS) + _RECLAIM_POINTS),
    DeferredSplitScan: Operation(lambda k, op: k.deferred_split_scan(op.nr_to_scan),
                                 "deferred_split_scan", (YieldPoint.SHRINKER_REF_HELD,)),
    FolioTryGet: Operation(lambda k, op: k.op_folio_try_get(op), "folio_try_get"),
    FolioPut: Operation(lambda k, op: k.op_folio_put(op), "folio_put"),
    LruAddDrain: Operation(_lru_add_drain, "lru_add_drain_all"),
}


def entry_point(op: BaseModel) -> str:
    """The kernel function operation @op enters, for signatures."""
    return OPERATIONS[type(op)].function


def _op_name(cls: type[BaseModel]) -> str:
    """The ``op`` string programs spell operation type @cls with."""
    return str(cls.model_fields["op"].default)


#: The yield points each operation's kernel path can reach (:attr:`Operation.yield_points`),
#: by the ``op`` string; operations that reach none are left out.
YIELD_POINTS: dict[str, tuple[YieldPoint, ...]] = {
    _op_name(cls): o.yield_points for cls, o in OPERATIONS.items() if o.yield_points}


#: ``chooser(step, runnable thread names, default) -> thread name``; see :class:`Runner`.
Chooser = Callable[[int, list[str], str], str]


def _model_frames(tb, harness: bool = False) -> list[str]:
    """The engine frames of a traceback, innermost first like a kernel stack;
    without the scheduler's and oracles' own frames unless @harness."""
    frames = []
    for fs in traceback.extract_tb(tb):
        path = fs.filename.replace("\\", "/")
        if "/engine/" not in path or (path.endswith(_HARNESS) and not harness):
            continue
        frames.append(f"{fs.name} ({path.rsplit('/engine/', 1)[1]}:{fs.lineno})")
    return frames[::-1]


class OpsDone:
    """What a thread waits for before it starts an operation that needs others
    finished: a device's DMA needs its pin taken, an unpin the DMA through the
    pin done (a driver completes its DMA before it unpins)."""

    __slots__ = ("done", "ops", "name")

    def __init__(self, done: list[bool], ops: list[int], name: str) -> None:
        self.done = done
        self.ops = ops
        self.name = name

    def free_for(self, t: KThread) -> bool:
        done = self.done
        return all(done[i] for i in self.ops)

    def __repr__(self) -> str:
        return f"<{self.name}: ops {self.ops} done>"


def op_prerequisites(program: Program) -> dict[int, list[int]]:
    """Operation -> the earlier operations it waits for: the pin of a DMA or an
    unpin, and the DMA writes through the pin listed before an unpin."""
    pins: dict[str, int] = {}
    dmas: dict[str, list[int]] = {}
    out: dict[int, list[int]] = {}
    for i, op in enumerate(program.ops):
        if op.op == "pin":
            pins[op.pin] = i
            dmas[op.pin] = []
        elif isinstance(op, DmaWrite | Unpin) and op.pin in pins:
            need = [pins[op.pin]]
            if isinstance(op, Unpin):
                need += dmas[op.pin]
            else:
                dmas[op.pin].append(i)
            mine = [j for j in need if program.ops[j].thread != op.thread]
            if mine:
                out[i] = mine
    return out


class _Preemptions:
    """Which of a schedule's preemptions fire at each place of a run.

    A preemption fires when its place is reached, or, when its operation
    ends before reaching it (a version without that window), at the
    operation's end.  Fired preemptions queue, and each decision takes the
    first whose thread can run then.
    """

    __slots__ = ("at", "by_op", "fired", "queue")

    def __init__(self, schedule: list[Preemption]) -> None:
        self.at = {e.place: e.thread for e in schedule}
        self.by_op: dict[int | None, list[tuple[Place, str]]] = {}
        for e in schedule:
            self.by_op.setdefault(e.op, []).append((e.place, e.thread))
        self.fired: set[Place] = set()
        self.queue: deque[str] = deque()

    def reached(self, place: Place) -> None:
        if place[1] is YieldPoint.OP_END:
            for p, thread in self.by_op.get(place[0], ()):
                if p not in self.fired:
                    self.fired.add(p)
                    self.queue.append(thread)
            return
        wanted = self.at.get(place)
        if wanted is not None:
            self.fired.add(place)
            self.queue.append(wanted)


class Runner:
    """One run of ``program`` on kernel ``engine``.

    @chooser: optional; called at every step where more than one thread is
        runnable, as ``chooser(step, runnable, default)`` with the runnable
        thread names in program order and the thread plain :func:`run` would
        pick (the program's schedule included).  It returns the thread to run.
        Every step whose chosen thread differs from the op-order policy's pick
        is recorded in :attr:`schedule_taken` as a preemption at the place the
        run stood at (:class:`~engine.program.format.Preemption`), a sparse schedule
        with which ``program.model_copy(update={"schedule": schedule_taken})``
        replays the identical run through plain :func:`run`.  :attr:`ran` then
        lists, per step, the thread that ran and the operation it ran a
        segment of.  Without a chooser both stay ``None`` and the loop pays
        nothing for them.
    @swap: False runs the kernel with no swap area (:meth:`Kernel.swapoff`),
        like the real kernels booted for conformance runs.
    @kernel_cls: the class to run instead of the engine's own: a subclass of
        it that behaves the same (:mod:`engine.diff.impact`'s watched class).
    """

    def __init__(self, program: Program, engine: str, *, trace: bool = False,
                 per_step_oracles: bool = True, chooser: Chooser | None = None,
                 swap: bool = True, kernel_cls: type[Kernel] | None = None) -> None:
        self.program = program
        self.engine = resolve_engine(engine)
        self.trace = trace
        self.chooser = chooser
        self.schedule_taken: list[Preemption] | None = [] if chooser else None
        self.ran: list[tuple[str, int]] | None = [] if chooser else None
        k = self.k = (kernel_cls or kernel_class(self.engine))()
        if not swap:
            k.swapoff()
        k.oracle = self.oracle = Oracle(k, per_step=per_step_oracles)
        k.mms[0] = MmStruct(0)
        k.mms[0].alive = True
        for op in program.ops:
            if isinstance(op, Fork):
                k.mms[op.child] = MmStruct(op.child)
        by_thread: dict[str, list[int]] = {t.name: [] for t in program.threads}
        for i, op in enumerate(program.ops):
            by_thread[op.thread].append(i)
        self.threads = [KThread(t.name, t.kind, t.mm, by_thread[t.name], cpu)
                        for cpu, t in enumerate(program.threads)]
        self.results: list[Any] = [None] * len(program.ops)
        self.done = [False] * len(program.ops)
        self.prereq = op_prerequisites(program)
        self.preemptions = _Preemptions(program.schedule) if program.schedule else None

    def _wanted(self, runnable: list[KThread]) -> KThread | None:
        """The first fired preemption's thread that can run now, if any."""
        queue = self.preemptions.queue if self.preemptions is not None else None
        while queue:
            want = queue.popleft()
            for t in runnable:
                if t.name == want:
                    return t
        return None

    def _pick(self, step: int, place: Place) -> KThread | None:
        """The thread a fired preemption names, if it can run; else the runnable
        thread whose current or next operation comes first in ``ops``."""
        pre = self.preemptions
        if pre is not None and pre.queue:
            wanted = self._wanted([t for t in self.threads if t.runnable()])
            if wanted is not None:
                return wanted
        best = None
        best_op = 0
        for t in self.threads:
            if t.cursor >= len(t.ops):
                continue
            b = t.blocked_on
            if b is not None and not b.free_for(t):
                continue
            op = t.ops[t.cursor]
            if best is None or op < best_op:
                best, best_op = t, op
        return best

    def _pick_chosen(self, step: int, place: Place) -> KThread | None:
        """:meth:`_pick` with the chooser's say; records deviations from the op-order pick.

        Context: run() picks with this only when the Runner has a chooser, and
        with it ``schedule_taken`` and ``ran``.
        """
        chooser, taken, ran = self.chooser, self.schedule_taken, self.ran
        assert chooser is not None and taken is not None and ran is not None
        runnable = [t for t in self.threads if t.runnable()]
        if not runnable:
            return None
        base = min(runnable, key=lambda t: t.ops[t.cursor])
        t = base
        wanted = self._wanted(runnable)
        if len(runnable) > 1:
            default = wanted or base
            names = [x.name for x in runnable]
            try:
                chosen = chooser(step, names, default.name)
            except Exception as exc:  # noqa: BLE001 - not the model's crash: say whose it is
                raise ChooserError(step, exc, names, "raised by the chooser") from exc
            picked = next((x for x in runnable if x.name == chosen), None)
            if picked is None:
                raise ChooserError(step, chosen, names)
            t = picked
            if t is not base:
                taken.append(Preemption.model_construct(
                    op=place[0], at=place[1], nth=place[2], thread=t.name))
        ran.append((t.name, t.ops[t.cursor]))
        return t

    def _start(self, t: KThread) -> Segment:
        """Begin @t's next operation.  Return: its segment, also ``t.gen``."""
        k = self.k
        idx = t.ops[t.cursor]
        op = self.program.ops[idx]
        gen = OPERATIONS[type(op)].enter(k, op)
        if isinstance(op, Unpin):
            gen = self._driver_unpins(op, gen)
        need = self.prereq.get(idx)
        if need is not None and not all(self.done[i] for i in need):
            # only a DMA write and an unpin wait for others (op_prerequisites())
            assert isinstance(op, DmaWrite | Unpin)
            gen = self._after_gate(OpsDone(self.done, need, f"{op.op} {op.pin} waits"), gen)
        mm_id = t.mm_id
        if t.kind is ThreadKind.TASK and mm_id is not None and not k.mms[mm_id].alive:
            gen = self._after_gate(k.mm_gate(mm_id), gen)
        t.gen = gen
        return gen

    def _driver_unpins(self, op: Unpin, gen: Segment) -> Segment:
        """The oracle hears what the driver asked of the unpin (make_dirty or not)
        from the program, not from the kernel path that carries it out: a kernel
        that dropped make_dirty must not take the oracle along.  Told as the
        unpin begins (after its waits), so that while the kernel releases the
        pages one by one the oracle allows what a released page may do."""
        self.oracle.on_unpin(op.pin, op.dirty)
        return (yield from gen)

    def _after_gate(self, gate: Waitable, gen: Segment) -> Segment:
        yield from wait_gate(self.k, gate)
        return (yield from gen)

    def run(self) -> Outcome:
        k = self.k
        ops = self.program.ops
        preemptions = self.preemptions
        trace: list[TraceEntry] | None = [] if self.trace else None
        step = 0
        crash: Crash | None = None
        verdict = Verdict.OK
        t = None
        op_ends: list[int | None] = [None] * len(ops)
        done = self.done
        place: Place = START
        places: list[Place] = []
        counts: dict[tuple[int, YieldPoint], int] = {}
        if preemptions is not None:
            preemptions.reached(place)
        # Chosen once, so that the default path's loop is what it always was.
        pick = self._pick if self.chooser is None else self._pick_chosen
        # Bound once: the loop below runs for every scheduling step.
        reached = preemptions.reached if preemptions is not None else None
        check_step, check_op = self.oracle.check_step, self.oracle.check_op
        results, threads, places_append = self.results, self.threads, places.append
        try:
            while True:
                t = pick(step, place)
                if t is None:
                    stuck = [x for x in self.threads if x.cursor < len(x.ops)]
                    if stuck:
                        waits = ", ".join(f"{x.name} on {x.blocked_on!r}" for x in stuck)
                        raise Violation(Verdict.HANG, "threads", f"no thread can run: {waits}")
                    break
                k.current = t
                idx = t.ops[t.cursor]
                k.current_op = idx
                k.current_step = step
                gen = t.gen
                if gen is None:
                    gen = self._start(t)
                try:
                    point = next(gen)
                except StopIteration as stop:
                    results[idx] = stop.value
                    op_ends[idx] = step
                    done[idx] = True
                    t.gen = None
                    t.cursor += 1
                    place = (idx, YieldPoint.OP_END, 1)
                    check_op()
                    if trace is not None:
                        trace.append(TraceEntry(idx, snapshot(k), list(results),
                                                [x.ops[x.cursor] for x in threads
                                                 if x.gen is not None]))
                else:
                    if t.blocked_on is not None:
                        point = YieldPoint.WAIT
                    elif type(point) is not YieldPoint:
                        raise HarnessError(f"ops[{idx}] ({ops[idx].op}) yielded {point!r}, "
                                           f"not a YieldPoint: an unnamed place")
                    key = (idx, point)
                    n = counts.get(key, 0) + 1
                    counts[key] = n
                    place = (idx, point, n)
                places_append(place)
                if reached is not None:
                    reached(place)
                step += 1
                check_step()
            self.oracle.check_end()
        except ChooserError:
            raise
        except Violation as v:
            verdict = v.kind
            crash = Crash(v.kind, v.field, v.message, k.current_op, t.name if t else None, step,
                          function=entry_point(ops[k.current_op]) if k.current_op is not None else None)
        except KernelBug as exc:
            verdict = Verdict.CRASH
            frames = _model_frames(exc.__traceback__)
            crash = Crash(Verdict.CRASH, type(exc).__name__, str(exc), k.current_op,
                          t.name if t else None, step,
                          function=frames[0].split(" ")[0] if frames else None, stack=frames)
        except Exception as exc:  # noqa: BLE001 - not the kernel's: foliodiff's own defect
            verdict = Verdict.HARNESS
            frames = _model_frames(exc.__traceback__, harness=True)
            crash = Crash(Verdict.HARNESS, type(exc).__name__, str(exc), k.current_op,
                          t.name if t else None, step,
                          function=frames[0].split(" ")[0] if frames else None, stack=frames)
        finally:
            # Threads stopped mid-operation: unwind them now, quietly, not at garbage collection.
            for x in self.threads:
                if x.gen is not None:
                    try:
                        x.gen.close()
                    except Exception:  # noqa: BLE001 - the outcome is already decided
                        pass
        final: dict[str, Any] | Snapshot
        try:
            final = snapshot(k)         # flattened when read, as observe(k) would (Outcome.state)
        except Exception as exc:  # noqa: BLE001 - a state too broken to print is still an outcome
            final = {"unobservable": f"{type(exc).__name__}: {exc}"}
        return Outcome(engine=self.engine, verdict=verdict, results=self.results, final=final,
                       cost=dict(k.cost), steps=step, crash=crash, warnings=list(k.warnings),
                       events=list(k.events), trace=trace, event_steps=list(k.event_steps),
                       op_ends=op_ends, places=places)


def run(program: Program, engine: str, *, trace: bool = False,
        per_step_oracles: bool = True, chooser: Chooser | None = None,
        swap: bool = True, kernel_cls: type[Kernel] | None = None) -> Outcome:
    """Run ``program`` on kernel version ``engine`` and return its :class:`Outcome`.

    With ``chooser``, see :class:`Runner` (use a Runner to read the schedule taken);
    ``swap=False`` runs without a swap area; ``kernel_cls``: see :class:`Runner`.
    """
    return Runner(program, engine, trace=trace, per_step_oracles=per_step_oracles,
                  chooser=chooser, swap=swap, kernel_cls=kernel_cls).run()
