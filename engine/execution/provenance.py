"""Why a run broke: the kernel decision behind a data loss or a broken invariant.

An oracle notices a loss where user space reads the page, which may be many
operations after the kernel threw the data away; grouping findings by that
place splits one kernel bug over every operation that can notice it.  KASAN
answers the same question for a use-after-free with a "freed by" stack,
recorded when the object is freed.  Recording a stack for every page a run
drops would cost every run; runs are deterministic, so this module records
it only when needed, by replaying the one run that failed:

- :func:`loss_cause`: the replay watches the lost page's contents (what a
  load would return: :meth:`Oracle.contents`), notes each change with the
  model stack that made it, and from the oracle learns who last wrote the
  page (a CPU store, a DMA write through a pin, or nobody: what user space
  should read is zero).  The cause is the first change the oracle would
  not have allowed since the page was last as it should be.
- :func:`invariant_path`: for a page-table entry, the same watch on the
  entry, and the first write that broke the check; for any other
  invariant, where the thread whose step broke it stood.

A change is seen with its stack by profiling (``sys.setprofile``: a look
at every call and return), which costs seconds on a long program; so a
replay first looks once per scheduling step to find the steps that matter,
and a second one profiles those alone.

Both return None when the replay does not end as the run did (it always
should: a run is a function of its program) or finds no cause; the caller
then keeps the place where the oracle noticed.
"""

from __future__ import annotations

import enum
import re
import sys
from dataclasses import dataclass
from types import FrameType
from typing import Any

from engine.execution.oracle import PageShadow, Verdict, Violation
from engine.execution.outcome import Crash
from engine.execution.runner import Runner
from engine.mm.pgtable import (
    HPAGE_PMD_NR,
    PAGE_SHIFT,
    is_swap_pte,
    pte_pfn,
    pte_present,
    pte_swp_offset,
    pte_write,
)
from engine.program.format import Program

#: Frames of these files are the modelled kernel; the scheduler's wait helpers
#: are not a decision (sched.py), nor are the harness's own frames.
_MODEL_DIRS = ("/engine/mm/", "/engine/kernels/")
_NOT_DECISIONS = ("/engine/mm/sched.py",)
#: Frames of a decision in a signature, innermost first (as a crash's).
DECISION_FRAMES = 3
_DATA_FIELD = re.compile(r"^mm(\d+)\.data\[(0x[0-9a-f]+)\]$")


class DataSource(str, enum.Enum):
    """What put the lost data in the page."""

    CPU_WRITE = "cpu_write"
    DMA_WRITE = "dma_write"
    #: Nobody since the page was mapped or given up (MADV_DONTNEED, munmap):
    #: user space should read zero, and read something else.
    ZERO = "zero"


@dataclass(frozen=True)
class Cause:
    """The kernel decision behind a finding, where the replay saw it made.

    @stack: model frames, innermost first, as ``name (file:line)``.
    @op_index, @thread, @step: the operation, thread and scheduling step that
        made it.
    @source: for a data loss, what put the data there; None for an invariant.
    @wanted, @found: for a data loss, the page's contents before and after.
    """

    stack: tuple[str, ...]
    op_index: int | None
    thread: str | None
    step: int
    source: DataSource | None = None
    source_op: int | None = None
    wanted: int | None = None
    found: int | None = None
    #: The write landed after the decision, in a page it had already taken
    #: out of the mapping (a device writing through its pin).
    detached: bool = False

    @property
    def decision(self) -> str:
        """The top :data:`DECISION_FRAMES` frame names, ``inner<outer``, without the
        page-table primitives (set_pte_at() is every path's): a signature part."""
        names = [f.split(" ")[0] for f in self.stack if "(mm/pgtable.py:" not in f]
        return "<".join(names[:DECISION_FRAMES])

    @property
    def function(self) -> str | None:
        """The innermost function of the decision."""
        return self.decision.split("<")[0] or None

    def describe(self) -> str:
        """One line for a divergence's detail."""
        where = f"op {self.op_index} ({self.thread}), step {self.step}"
        if self.source is None:
            return f"broken by {self.decision} in {where}"
        put = {DataSource.CPU_WRITE: f"a CPU store (op {self.source_op})",
               DataSource.DMA_WRITE: f"a DMA write (op {self.source_op})",
               DataSource.ZERO: "nobody (the page should read zero)"}[self.source]
        if self.detached:
            return (f"lost by {self.decision} in {where}: it took the page out of the "
                    f"mapping, and {put} then wrote {self.wanted} to the detached page")
        return (f"lost by {self.decision} in {where}: the page held {self.wanted}, "
                f"put there by {put}, and then {self.found}")

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "stack": list(self.stack),
                "op_index": self.op_index, "thread": self.thread, "step": self.step,
                "source": self.source.value if self.source is not None else None,
                "source_op": self.source_op, "wanted": self.wanted, "found": self.found,
                "detached": self.detached}


def _model_frame(frame: FrameType) -> str | None:
    """@frame as a stack line, ``name (file:line)`` as a crash's, if it is the
    modelled kernel's; else None."""
    path = frame.f_code.co_filename.replace("\\", "/")
    if not any(d in path for d in _MODEL_DIRS) or path.endswith(_NOT_DECISIONS):
        return None
    return f"{frame.f_code.co_name} ({path.rsplit('/engine/', 1)[1]}:{frame.f_lineno})"


def _model_stack(frame: FrameType | None) -> tuple[str, ...]:
    """The model frames from @frame outwards (innermost first)."""
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return tuple(line for f in frames if (line := _model_frame(f)) is not None)


def _generator_stack(gen: Any) -> tuple[str, ...]:
    """The model frames of a suspended generator chain (``yield from``), innermost first."""
    frames = []
    while gen is not None:
        frame = getattr(gen, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        gen = getattr(gen, "gi_yieldfrom", None)
    return tuple(line for f in reversed(frames) if (line := _model_frame(f)) is not None)


def _same_end(crash: Crash | None, replayed: Crash | None) -> bool:
    return (crash is not None and replayed is not None and crash.kind is replayed.kind
            and crash.field == replayed.field and crash.step == replayed.step)


@dataclass
class _Change:
    before: Any
    after: Any
    allowed: bool           # did the oracle allow the new value then?
    stack: tuple[str, ...]  # empty where the replay did not profile
    op_index: int | None
    thread: str | None
    step: int


class _Replay:
    """One replay of a run with one value watched (a page's contents, an entry's word).

    Every scheduling step ends with a look at the value; the steps named in
    @profiled also run under ``sys.setprofile``, which looks at every call
    and return of a function, so that a change is seen with the model stack
    that made it.  Profiling a whole run costs seconds on a long program,
    so the callers replay twice: once to find the change that matters, once
    more profiling the steps from the last good value to it (runs are
    deterministic).

    Subclasses give :meth:`probe` and :meth:`allowed`; :attr:`settled` is
    the number of changes seen when the value was last known good.
    """

    def __init__(self, program: Program, engine: str, swap: bool,
                 profiled: frozenset[int]) -> None:
        self.runner = Runner(program, engine, swap=swap)
        self.k, self.oracle = self.runner.k, self.runner.oracle
        self.profiled = profiled
        self.changes: list[_Change] = []
        self.settled = 0
        self.settled_step = 0       # the step at which the value was last known good
        self.value: Any = None
        #: The profiler that was active before the replay (a developer's cProfile):
        #: it runs on in the steps this one does not profile, and after the replay.
        self.outer: Any = None
        check_step = self.oracle.check_step

        def step_end() -> None:
            self.look(None)
            try:
                check_step()
            finally:
                self._profiling(self.k.current_step + 1 in profiled)
        self.oracle.check_step = step_end          # type: ignore[method-assign]

    def _profiling(self, on: bool) -> None:
        """Profile the next step with :meth:`_profile`, or hand back to the outer profiler.

        A profiler written in C (cProfile's) is no Python callable: sys.getprofile()
        returns its object, which sys.setprofile() cannot take back, so it is
        re-enabled instead.
        """
        if on:
            sys.setprofile(self._profile)
        elif self.outer is not None and not callable(self.outer) and hasattr(self.outer, "enable"):
            sys.setprofile(None)
            self.outer.enable()
        else:
            sys.setprofile(self.outer)

    def settle(self) -> None:
        """The value is good now: what went wrong went wrong after this."""
        self.settled, self.settled_step = len(self.changes), self.k.current_step

    def window(self, step: int) -> frozenset[int]:
        """The steps from the last good value to @step: the ones to profile."""
        return frozenset(range(self.settled_step, step + 1))

    def probe(self) -> Any:
        raise NotImplementedError

    def allowed(self, value: Any) -> bool:
        raise NotImplementedError

    def look(self, frame: FrameType | None) -> None:
        value = self.probe()
        if value != self.value:
            cur = self.k.current
            self.changes.append(_Change(self.value, value, self.allowed(value),
                                        _model_stack(frame) if frame is not None else (),
                                        self.k.current_op, cur.name if cur is not None else None,
                                        self.k.current_step))
            self.value = value

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        # A change seen at a call was made by the caller since the last event;
        # at a return (or a builtin's), by the function returning (or calling it).
        if event == "call":
            self.look(frame.f_back)
        elif event in ("return", "c_return", "c_exception", "exception"):
            self.look(frame)

    def run(self) -> Crash | None:
        """Replay.  Return: how the replay ended."""
        self.value = self.probe()
        self.outer = sys.getprofile()
        self._profiling(0 in self.profiled)
        try:
            return self.runner.run().crash
        finally:
            self._profiling(False)


class _PageWatch(_Replay):
    """A replay watching what a load from one page would return, and who wrote it."""

    def __init__(self, program: Program, engine: str, swap: bool, profiled: frozenset[int],
                 mm_id: int, vpn: int) -> None:
        super().__init__(program, engine, swap, profiled)
        self.mm_id, self.vpn = mm_id, vpn
        oracle = self.oracle
        # shadow object id -> (the shadow, held so that its id is not reused;
        # what wrote it, in which op; changes seen before the write; the page
        # a device wrote, which may no longer be the one mapped here)
        self.written: dict[int, tuple[PageShadow, DataSource, int | None, int,
                                      tuple[str, int] | None]] = {}
        self.lost: tuple[int, int] | None = None      # (wanted, id of the shadow)
        on_write, on_dma_write = oracle.on_write, oracle.on_dma_write
        check_value, check_op = oracle._check_value, oracle.check_op

        def note(source: DataSource, shadow: PageShadow | None,
                 page: tuple[str, int] | None = None) -> None:
            if shadow is not None:
                self.written[id(shadow)] = (shadow, source, self.k.current_op, len(self.changes),
                                            page)

        def watched_write(mm: int, addr: int, value: int) -> None:
            on_write(mm, addr, value)
            note(DataSource.CPU_WRITE, oracle.pages.get((mm, addr >> PAGE_SHIFT)))

        def watched_dma(name: str, index: int, value: int) -> None:
            on_dma_write(name, index, value)
            held = oracle.pinned.get(name, ())
            pinned = self.k.pins.get(name, ())
            page = (("pfn", pinned[index][0].pfn + pinned[index][1])
                    if index < len(pinned) else None)
            note(DataSource.DMA_WRITE, held[index] if index < len(held) else None, page)

        def watched_check(mm: int, page: int, value: int, how: str) -> None:
            try:
                check_value(mm, page, value, how)
            except Violation:
                if (mm, page) == (mm_id, vpn):
                    shadow = oracle.pages.get((mm, page))
                    self.lost = (shadow.value if shadow is not None else 0, id(shadow))
                raise

        def watched_op_end() -> None:
            # Settled only with no other operation in flight: one may hold the
            # page away under its lock, to put it back before it ends.
            self.look(None)
            if self.allowed(self.value) and all(t.gen is None for t in self.runner.threads):
                self.settle()
            check_op()

        def given_up(hook: Any) -> Any:
            """@hook (a mapping or a zap ending), which also restarts the watch on
            the page when it covers it: what it should read starts there."""
            def watched(mm: int, start: int, end: int, *args: Any) -> None:
                hook(mm, start, end, *args)
                if mm == mm_id and start >> PAGE_SHIFT <= vpn < end >> PAGE_SHIFT:
                    self.look(None)
                    self.settle()
            return watched

        oracle.on_write = watched_write                 # type: ignore[method-assign]
        oracle.on_dma_write = watched_dma               # type: ignore[method-assign]
        oracle._check_value = watched_check             # type: ignore[method-assign,assignment]
        oracle.check_op = watched_op_end                # type: ignore[method-assign]
        for name in ("on_map", "on_unmap", "on_dontneed_done"):
            setattr(oracle, name, given_up(getattr(oracle, name)))

    def probe(self) -> tuple[int, tuple[str, int] | None]:
        """What a load would return, and the page it would come from: a discard
        of a page that reads zero anyway changes no contents, only the page."""
        mm = self.k.mms.get(self.mm_id)
        if mm is None:
            return 0, None
        hit = self.k.lookup_pte(mm, self.vpn << PAGE_SHIFT)
        where: tuple[str, int] | None = None
        if hit is not None and hit[0] == "pmd":
            where = ("pfn", pte_pfn(hit[1]) + (self.vpn & (HPAGE_PMD_NR - 1)))
        elif hit is not None:
            w = hit[1].entries[hit[2]]
            where = (("pfn", pte_pfn(w)) if pte_present(w) else
                     ("swap", pte_swp_offset(w)) if is_swap_pte(w) else None)
        return self.oracle.contents_at(hit, self.vpn), where

    def allowed(self, value: tuple[int, tuple[str, int] | None]) -> bool:
        shadow = self.oracle.pages.get((self.mm_id, self.vpn))
        if shadow is None:
            return value[0] == 0 or self.oracle.mapped.find(self.mm_id, self.vpn) is None
        return value[0] == shadow.value or (value[0] == 0 and shadow.may_read_zero())

    def cause(self) -> tuple[_Change, bool, DataSource, int | None] | None:
        """The change that lost the data, whether the write came after it (into a
        detached page), and what wrote it.  None if the run lost nothing here."""
        if self.lost is None:
            return None
        source, source_op, before_write, page = DataSource.ZERO, None, 0, None
        if self.lost[1] in self.written:
            _, source, source_op, before_write, page = self.written[self.lost[1]]
        bad = [c for c in self.changes[max(self.settled, before_write):] if not c.allowed]
        if bad:
            return bad[0], False, source, source_op
        # The write went to a page already taken away: the last change that
        # took that page (the one the device wrote) out of the mapping.
        earlier = [c for c in self.changes[:before_write]
                   if c.before[1] == page and c.after[1] != page]
        return (earlier[-1], True, source, source_op) if earlier else None


def loss_cause(program: Program, engine: str, crash: Crash, *,
               swap: bool = True) -> Cause | None:
    """The kernel decision that lost the data of ``crash`` (a data loss of
    ``program`` on ``engine``), found by replaying the run with a watch on the page.

    The cause is the first change of the page's contents that the oracle
    would not have allowed when it was made, after the last operation that
    ended with the page as allowed (and no other in flight): a path may take
    a page away and put it back under its lock, and one wrong decision may
    be carried on by others (a PMD restored after a concurrent zap, then
    split and restored again PTE by PTE).  When no change did it, the data
    never reached the page: a device wrote through its pin into a page the
    kernel had already taken out of the mapping, and the cause is the last
    change before that write.

    Return: the cause, or None when the crash names no page or the replay
    does not end as the run did.
    """
    m = _DATA_FIELD.match(crash.field)
    if crash.kind is not Verdict.DATA_LOSS or m is None:
        return None
    mm_id, vpn = int(m[1]), int(m[2], 16) >> PAGE_SHIFT
    first = _PageWatch(program, engine, swap, frozenset(), mm_id, vpn)
    found = first.cause() if _same_end(crash, first.run()) else None
    if found is None:
        return None
    # Profile the steps from the last good contents to the change found: a
    # path may have taken the page and put it back within one of them.
    change, detached = found[0], found[1]
    steps = frozenset({change.step}) if detached else first.window(change.step)
    again = _PageWatch(program, engine, swap, steps, mm_id, vpn)
    found = again.cause() if _same_end(crash, again.run()) else None
    if found is None or not found[0].stack or again.lost is None:
        return None
    c, detached, source, source_op = found
    return Cause(c.stack, c.op_index, c.thread, c.step, source, source_op, again.lost[0],
                 c.after[0], detached)


_ENTRY_FIELD = re.compile(r"^mm(\d+)\.(?:pte|pmd)\[(0x[0-9a-f]+)\]\.page_table_check\.(\w+)$")


class _EntryWatch(_Replay):
    """A replay watching the page-table entry at one address, for one check."""

    def __init__(self, program: Program, engine: str, swap: bool, profiled: frozenset[int],
                 mm_id: int, addr: int, check: str) -> None:
        super().__init__(program, engine, swap, profiled)
        self.mm_id, self.addr, self.check = mm_id, addr, check
        self.broken: int | None = None      # changes seen when the check failed
        oracle = self.oracle
        checks = {name: getattr(oracle, name) for name in ("check_step", "check_op",
                                                           "check_end")}

        def watched(name: str) -> Any:
            run_check = checks[name]

            def check_it() -> None:
                if name == "check_op":
                    # Healed at an operation's end: a later write breaks it anew.
                    # Not sooner: a path holding the entry's lock may clear it on
                    # the way (a PMD split empties the PMD before it fills the
                    # PTE table).
                    self.look(None)
                    if self.allowed(self.value):
                        self.settle()
                try:
                    run_check()
                except Violation:
                    self.broken = len(self.changes)
                    raise
            return check_it

        for name in checks:
            setattr(oracle, name, watched(name))

    def probe(self) -> int | None:
        mm = self.k.mms.get(self.mm_id)
        hit = self.k.lookup_pte(mm, self.addr) if mm is not None else None
        if hit is None:
            return None
        return hit[1] if hit[0] == "pmd" else hit[1].entries[hit[2]]

    def allowed(self, word: int | None) -> bool:
        """Would entry @word pass the check now?  Known for the two checks
        against the VMAs; for any other, no write is taken as good."""
        if word is None or not pte_present(word):
            return True
        vma = self.k.mms[self.mm_id].find_vma(self.addr)
        if self.check == "no_vma":
            return vma is not None
        if self.check == "vma_write":
            return vma is None or not pte_write(word) or vma.writable
        return False

    def cause(self) -> _Change | None:
        """The first write that broke the entry and stayed broken until the check."""
        if self.broken is None:
            return None
        bad = [c for c in self.changes[self.settled:self.broken] if not c.allowed]
        return bad[0] if bad else None


def invariant_path(program: Program, engine: str, crash: Crash, *,
                   swap: bool = True) -> Cause | None:
    """The model path that broke the invariant of ``crash`` (an invariant or leak
    of ``program`` on ``engine``).

    For a page-table entry (the page-table check names it), the first write
    to that entry that broke the check and stayed until it ran, with the
    model stack that made it: later writes only carried the broken entry on
    (a PMD restored where no VMA is, then split into PTEs); for any other
    invariant, where the thread whose step broke it stood when the check ran.

    Return: the cause, or None when the replay does not end the same way or
    finds no model frame (an operation that ended in the breaking step).
    """
    if crash.kind not in (Verdict.INVARIANT, Verdict.LEAK):
        return None
    m = _ENTRY_FIELD.match(crash.field)
    if m is not None:
        where = int(m[1]), int(m[2], 16), m[3]
        first = _EntryWatch(program, engine, swap, frozenset(), *where)
        change = first.cause() if _same_end(crash, first.run()) else None
        if change is None:
            return None
        again = _EntryWatch(program, engine, swap, first.window(change.step), *where)
        change = again.cause() if _same_end(crash, again.run()) else None
        if change is None or not change.stack:
            return None
        return Cause(change.stack, change.op_index, change.thread, change.step)
    runner = Runner(program, engine, swap=swap)
    k, oracle = runner.k, runner.oracle
    seen: list[Cause] = []
    check_step = oracle.check_step

    def watched_step() -> None:
        try:
            check_step()
        except Violation:
            cur = k.current
            if cur is not None and cur.gen is not None:
                seen.append(Cause(_generator_stack(cur.gen), k.current_op, cur.name,
                                  k.current_step))
            raise

    oracle.check_step = watched_step               # type: ignore[method-assign]
    if not _same_end(crash, runner.run().crash) or not seen or not seen[-1].stack:
        return None
    return seen[-1]


def cause_of(program: Program, engine: str, crash: Crash, *,
             swap: bool = True) -> Cause | None:
    """The kernel decision behind ``crash``, the end of ``program``'s run on
    ``engine``: :func:`loss_cause` for a data loss, :func:`invariant_path` for a
    broken invariant or a leak; None for a crash or a hang (their stacks say
    where) or where none is found."""
    if crash.kind is Verdict.DATA_LOSS:
        return loss_cause(program, engine, crash, swap=swap)
    if crash.kind in (Verdict.INVARIANT, Verdict.LEAK):
        return invariant_path(program, engine, crash, swap=swap)
    return None
