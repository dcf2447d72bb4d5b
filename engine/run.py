"""Run a program on one kernel version: the scheduler loop, the oracles, the outcome.

Every run is a pure function of (program, engine): no clock, no global RNG.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable

from engine.errors import FoliodiffError
from engine.kernels import kernel_class, resolve_engine
from engine.mm import MmStruct
from engine.oracle import Oracle, Verdict, Violation
from engine.outcome import Crash, Outcome, observe
from engine.program import Fork, Program, ThreadKind
from engine.sched import KThread, wait_gate

#: Frames of these modules are harness, not kernel model (dropped from crash stacks).
_HARNESS = ("engine/run.py", "engine/sched.py", "engine/oracle.py")


def _as_gen(value):
    """Wrap the result of a non-yielding operation as a finished segment."""
    return value
    yield  # pragma: no cover


def _dispatch(k, op):
    """The kernel entry point an operation runs through (a generator)."""
    kind = op.op
    if kind == "read":
        return k.cpu_access(op.addr, op.pages, None)
    if kind == "write":
        return k.cpu_access(op.addr, op.pages, op.value)
    if kind == "mmap":
        return k.sys_mmap(op)
    if kind == "munmap":
        return k.sys_munmap(op)
    if kind == "mremap":
        return k.sys_mremap(op)
    if kind == "mprotect":
        return k.sys_mprotect(op)
    if kind == "fork":
        return k.sys_fork(op)
    if kind == "madvise":
        return k.sys_madvise(op)
    if kind == "pin":
        return k.pin_user_pages(op)
    if kind == "unpin":
        return k.unpin_user_pages_dirty_lock(op)
    if kind == "dma_write":
        return k.dma_write(op)
    if kind == "reclaim":
        return k.shrink_inactive_list(op.nr_to_scan)
    if kind == "deferred_split_scan":
        return k.deferred_split_scan(op.nr_to_scan)
    if kind == "folio_try_get":
        return k.op_folio_try_get(op)
    if kind == "folio_put":
        return k.op_folio_put(op)
    if kind == "lru_add_drain":
        k.lru_add_drain_all()
        return _as_gen(0)
    raise AssertionError(f"unhandled operation {kind}")


#: The kernel function each operation enters, for signatures.
ENTRY_POINT = {
    "read": "handle_mm_fault", "write": "handle_mm_fault", "mmap": "do_mmap",
    "munmap": "do_vmi_munmap", "mremap": "move_vma", "mprotect": "mprotect_fixup",
    "fork": "copy_page_range", "madvise": "madvise_vma_behavior", "pin": "pin_user_pages_fast",
    "unpin": "unpin_user_pages_dirty_lock", "dma_write": "dma_write",
    "reclaim": "shrink_folio_list", "deferred_split_scan": "deferred_split_scan",
    "folio_try_get": "folio_try_get", "folio_put": "folio_put",
    "lru_add_drain": "lru_add_drain_all",
}


#: ``chooser(step, runnable thread names, default) -> thread name``; see :class:`Runner`.
Chooser = Callable[[int, list[str], str], str]


class ChooserError(FoliodiffError, ValueError):
    """A chooser failed or returned a thread that cannot run at that step.

    A harness bug, never an outcome of the run: it propagates out of :meth:`Runner.run`.
    """

    def __init__(self, step: int, chosen: Any, runnable: list[str],
                 reason: str = "is not runnable") -> None:
        self.step = step
        self.chosen = chosen
        super().__init__(f"chooser: step {step}: {chosen!r} {reason} "
                         f"(runnable: {', '.join(runnable)})")


def _model_frames(tb) -> list[str]:
    frames = []
    for fs in traceback.extract_tb(tb):
        path = fs.filename.replace("\\", "/")
        if "/engine/" not in path or path.endswith(_HARNESS):
            continue
        frames.append(f"{fs.name} ({path.rsplit('/engine/', 1)[1]}:{fs.lineno})")
    return frames[::-1]          # innermost first, like a kernel stack


class Runner:
    """One run of ``program`` on kernel ``engine``.

    @chooser: optional; called at every step where more than one thread is
        runnable, as ``chooser(step, runnable, default)`` with the runnable
        thread names in program order and the thread plain :func:`run` would
        pick (the program's schedule included).  It returns the thread to run.
        Every step whose chosen thread differs from the op-order policy's pick
        is recorded in :attr:`schedule_taken`, a sparse schedule with which
        ``program.model_copy(update={"schedule": schedule_taken})`` replays the
        identical run through plain :func:`run`.  :attr:`ran` then lists, per
        step, the thread that ran and the operation it ran a segment of.
        Without a chooser both stay ``None`` and the loop pays nothing for them.
    @swap: False runs the kernel with no swap area (:meth:`Kernel.swapoff`),
        like the real kernels booted for conformance runs.
    """

    def __init__(self, program: Program, engine: str, *, trace: bool = False,
                 per_step_oracles: bool = True, chooser: Chooser | None = None,
                 swap: bool = True) -> None:
        self.program = program
        self.engine = resolve_engine(engine)
        self.trace = trace
        self.chooser = chooser
        self.schedule_taken: list[tuple[int, str]] | None = [] if chooser else None
        self.ran: list[tuple[str, int]] | None = [] if chooser else None
        k = self.k = kernel_class(self.engine)()
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

    def _pick(self, step: int, sched: dict[int, str]) -> KThread | None:
        """The schedule's thread for this step if it can run, else the runnable
        thread whose current or next operation comes first in ``ops``."""
        want = sched.get(step) if sched else None
        best = None
        best_op = 0
        for t in self.threads:
            if t.cursor >= len(t.ops):
                continue
            b = t.blocked_on
            if b is not None and not b.free_for(t):
                continue
            if t.name == want:
                return t
            op = t.ops[t.cursor]
            if best is None or op < best_op:
                best, best_op = t, op
        return best

    def _pick_chosen(self, step: int, sched: dict[int, str]) -> KThread | None:
        """:meth:`_pick` with the chooser's say; records deviations from the op-order pick."""
        runnable = [t for t in self.threads if t.runnable()]
        if not runnable:
            return None
        base = min(runnable, key=lambda t: t.ops[t.cursor])
        t = base
        if len(runnable) > 1:
            want = sched.get(step) if sched else None
            default = next((x for x in runnable if x.name == want), base)
            names = [x.name for x in runnable]
            try:
                chosen = self.chooser(step, names, default.name)  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - not the model's crash: say whose it is
                raise ChooserError(step, exc, names, "raised by the chooser") from exc
            t = next((x for x in runnable if x.name == chosen), None)
            if t is None:
                raise ChooserError(step, chosen, names)
            if t is not base:
                self.schedule_taken.append((step, t.name))  # type: ignore[union-attr]
        self.ran.append((t.name, t.ops[t.cursor]))  # type: ignore[union-attr]
        return t

    def _start(self, t: KThread) -> None:
        k = self.k
        idx = t.next_op()
        op = self.program.ops[idx]
        gen = _dispatch(k, op)
        if t.kind is ThreadKind.TASK and not k.mms[t.mm_id].alive:
            gen = self._after_gate(k.mm_gate(t.mm_id), gen)
        t.gen = gen

    def _after_gate(self, gate, gen):
        yield from wait_gate(self.k, gate)
        return (yield from gen)

    def run(self) -> Outcome:
        k = self.k
        ops = self.program.ops
        sched = dict(self.program.schedule)
        trace = [] if self.trace else None
        step = 0
        crash: Crash | None = None
        verdict = Verdict.OK
        t = None
        op_ends: list[int | None] = [None] * len(ops)
        # Chosen once, so that the default path's loop is what it always was.
        pick = self._pick if self.chooser is None else self._pick_chosen
        try:
            while True:
                t = pick(step, sched)
                if t is None:
                    stuck = [x for x in self.threads if x.cursor < len(x.ops)]
                    if stuck:
                        waits = ", ".join(f"{x.name} on {x.blocked_on!r}" for x in stuck)
                        raise Violation(Verdict.HANG, "threads", f"no thread can run: {waits}")
                    break
                k.current = t
                if t.gen is None:
                    self._start(t)
                idx = t.next_op()
                k.current_op = idx
                k.current_step = step
                try:
                    next(t.gen)
                except StopIteration as stop:
                    self.results[idx] = stop.value
                    op_ends[idx] = step
                    t.gen = None
                    t.cursor += 1
                    self.oracle.check_op()
                    if trace is not None:
                        trace.append({"op": idx, "state": observe(k),
                                      "results": list(self.results),
                                      "inflight": [x.ops[x.cursor] for x in self.threads
                                                   if x.gen is not None]})
                step += 1
                self.oracle.check_step()
            k.current = None
            self.oracle.check_end()
        except ChooserError:
            raise
        except Violation as v:
            verdict = v.kind
            crash = Crash(v.kind, v.field, v.message, k.current_op, t.name if t else None, step,
                          function=ENTRY_POINT.get(ops[k.current_op].op) if k.current_op is not None else None)
        except Exception as exc:  # noqa: BLE001 - any exception inside a model is a crash outcome
            verdict = Verdict.CRASH
            frames = _model_frames(exc.__traceback__)
            crash = Crash(Verdict.CRASH, type(exc).__name__, str(exc), k.current_op,
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
        try:
            state = observe(k)
        except Exception as exc:  # noqa: BLE001 - a state too broken to print is still an outcome
            state = {"unobservable": f"{type(exc).__name__}: {exc}"}
        return Outcome(engine=self.engine, verdict=verdict, results=self.results, state=state,
                       cost=dict(k.cost), steps=step, crash=crash, warnings=list(k.warnings),
                       events=list(k.events), trace=trace, event_steps=list(k.event_steps),
                       op_ends=op_ends)


def run(program: Program, engine: str, *, trace: bool = False,
        per_step_oracles: bool = True, chooser: Chooser | None = None,
        swap: bool = True) -> Outcome:
    """Run ``program`` on kernel version ``engine`` and return its :class:`Outcome`.

    With ``chooser``, see :class:`Runner` (use a Runner to read the schedule taken);
    ``swap=False`` runs without a swap area.
    """
    return Runner(program, engine, trace=trace, per_step_oracles=per_step_oracles,
                  chooser=chooser, swap=swap).run()
