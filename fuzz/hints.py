"""Hints: mutants a run suggests.  Hand-off hints run the kernel thread that takes over a
folio inside the path that handed it over; layout hints (:func:`layout_mutants`)
put a large folio across a page-table or VMA end before a reclaim that reached one.

The reclaim races this project hunts are between a task's kernel path and
an asynchronous worker that picks up what the path just handed off: the
first PTE that ``try_to_unmap_one`` zaps of a large folio queues it for the
deferred-split shrinker, whose scan then takes a speculative reference while
the rest of the batch is still being unmapped (kernel-semantics H2).  A
fuzzer that adds a shrinker scan somewhere and a preemption somewhere else
needs both to land right at once; the run itself says where to aim.

So, like syzkaller's hints (which mutate a program with the comparison
operands its run showed), a run that shows a hand-off event in operation i
suggests mutants: the consumer operation, on a kernel thread, right after
i in program order, with one preemption that gives it the CPU at a place of
i between the hand-off and the end of i.  The run says which places those
are (:attr:`engine.Outcome.places`, ``event_steps``, ``op_ends``),
and a place, unlike a step, means the same point of i on every engine and
in the mutant, whatever other operations it runs.  Schedule explorers drop
the preemption and search the interleavings of the placed operation
themselves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from engine import (
    Place,
    Program,
    ProgramError,
    Report,
    ThreadKind,
    YieldPoint,
    parse_program,
    renumber_schedule,
)
from engine.kernels import events
from fuzz.codec import encode
from fuzz.mutate import boundary, program_data

#: Kernel event -> the operation of the kernel thread that consumes what it handed off.
HANDOFFS: dict[str, str] = {
    # deferred_split_folio(): the folio is on the split queue, for the shrinker.
    events.DEFERRED_SPLIT_PARTIALLY_MAPPED: "deferred_split_scan",
    events.DEFERRED_SPLIT_UNDERUSED: "deferred_split_scan",
}
#: How often a fuzzer's next input is a pending hint rather than its own
#: choice (at 0.5, hint mutants crowded out the rest: the random fuzzer found
#: dma-data-loss 5/10 against 9/10 without hints), and the preemption places
#: tried per hand-off by a fuzzer that keeps a program's schedule.
HINT_RATE = 0.15
HINT_TRIES = 3


@dataclass(frozen=True)
class Handoff:
    """Operation ``at`` handed a folio to ``consumer``.

    ``window`` holds the places of ``at`` the run reached after the hand-off,
    its end left out, in the order reached: a preemption there lets the
    consumer in while the path is half done.
    """

    at: int
    consumer: str
    window: tuple[Place, ...]


def _placed(program: Program, at: int, consumer: str) -> str | None:
    """The thread of the operation right after ``at`` when it is ``consumer`` on
    another thread than ``at``'s (the placement a hint would make), else None."""
    nxt = program.ops[at + 1] if at + 1 < len(program.ops) else None
    if nxt is None or nxt.op != consumer or nxt.thread == program.ops[at].thread:
        return None
    return nxt.thread


def handoffs(program: Program, report: Report) -> list[Handoff]:
    """The first hand-off to each consumer per operation, over both runs, in operation order.

    No hint where the program already has what the hint would make: the
    consumer on a kernel thread right after the operation and a preemption
    of the operation for that thread.  Nor where the operation reached no
    place after the hand-off but its end.
    """
    out: dict[tuple[int, str], Handoff] = {}
    for outcome in (report.a, report.b):
        for (idx, event), step in zip(outcome.events, outcome.event_steps, strict=True):
            consumer = HANDOFFS.get(event)
            if consumer is None or idx is None or (idx, consumer) in out:
                continue
            placed = _placed(program, idx, consumer)
            if placed is not None and any(e.op == idx and e.thread == placed
                                          for e in program.schedule):
                continue
            end = outcome.op_ends[idx] if idx < len(outcome.op_ends) else None
            last = len(outcome.places) - 1 if end is None else end
            # The step of the event ends at a place after the event.
            window = tuple(p for p in outcome.places[step:last + 1]
                           if p[0] == idx and p[1] is not YieldPoint.OP_END)
            if window:
                out[idx, consumer] = Handoff(idx, consumer, window)
    return [out[key] for key in sorted(out)]


def hinted(program: Program, handoff: Handoff, rng: random.Random,
           tries: int = 1) -> list[Program]:
    """Up to ``tries`` mutants of ``program`` with ``handoff``'s consumer run inside its operation.

    The consumer goes right after the operation in ``ops``, on a kernel
    thread other than the operation's (a new one if there is none), unless
    it is there already (:func:`handoffs`); each mutant preempts the
    operation's thread for it at a different place of the hand-off's
    window, drawn uniformly.  The program's own preemptions stay, their
    places renumbered past the inserted operation (one at the hinted place
    gives way).
    Return: the mutants the format accepts (none with too many threads).
    """
    data: dict[str, Any] = program.to_dict()
    threads = [dict(t) for t in data["threads"]]
    ops = [dict(o) for o in data["ops"]]
    schedule = data["schedule"]
    at = handoff.at
    name = _placed(program, at, handoff.consumer)
    if name is None:
        running = program.ops[at].thread
        kthreads = [t["name"] for t in threads
                    if t.get("kind") == ThreadKind.KTHREAD.value and t["name"] != running]
        if kthreads:
            name = rng.choice(kthreads)
        else:
            name = next(f"K{i}" for i in range(9) if all(t["name"] != f"K{i}" for t in threads))
            threads.append({"name": name, "kind": ThreadKind.KTHREAD.value, "mm": None})
        ops.insert(at + 1, {"thread": name, "op": handoff.consumer})
        schedule = renumber_schedule(schedule, lambda i: i + 1 if i > at else i)
    window = handoff.window
    out = []
    for k in sorted(rng.sample(range(len(window)), min(tries, len(window)))):
        _, kind, nth = window[k]
        entries = [e for e in schedule if (e["op"], e["at"], e["nth"]) != (at, kind.value, nth)]
        entries.append({"op": at, "at": kind.value, "nth": nth, "thread": name})
        try:
            out.append(parse_program({**data, "threads": threads, "ops": ops,
                                      "schedule": entries}))
        except ProgramError:
            return []
    return out


#: Events of a reclaim that unmapped a large folio: batched (v6.15 on), or PTE
#: by PTE, leaving it partially mapped for a moment (before v6.15).
#: (v6.15 declares its batch events itself: looked up by name, which fails at
#: import for a name nobody declared.)
LAYOUT_EVENTS = frozenset({events.event("ttu_batch"), events.event("ttu_batch_partial"),
                           events.DEFERRED_SPLIT_PARTIALLY_MAPPED})


def layout_mutants(program: Program, report: Report, rng: random.Random,
                   tries: int) -> list[Program]:
    """Layout hints: where a run shows reclaim unmapping a large folio, ``tries``
    mutants that first put part of a large folio across a page-table or VMA end
    (:func:`fuzz.mutate.boundary`), right before that reclaim.

    The batched unmap's bugs live in the layout of the folio it batches over;
    the run says which reclaim reached a large folio at all, so the layout
    change goes where it will be looked at.
    """
    at = min((i for outcome in (report.a, report.b) for i, event in outcome.events
              if event in LAYOUT_EVENTS and i is not None and program.ops[i].op == "reclaim"),
             default=None)
    if at is None:
        return []
    out = []
    for _ in range(tries):
        data = program_data(program)
        boundary(data, rng, before=at)
        try:
            out.append(parse_program(data))
        except ProgramError:
            continue
    return out


def mutants(program: Program, report: Report, rng: random.Random, tries: int, *,
            layouts: bool = True) -> list[Program]:
    """:func:`hinted` mutants for every hand-off of ``program``'s ``report``, and
    (with ``layouts``) its :func:`layout_mutants`."""
    out = [m for h in handoffs(program, report) for m in hinted(program, h, rng, tries)]
    return out + layout_mutants(program, report, rng, tries) if layouts else out


def mutant_inputs(program: Program, report: Report, rng: random.Random,
                  tries: int, *, layouts: bool = True) -> list[bytes]:
    """:func:`mutants` as byte inputs (the codec spells every valid program)."""
    return [encode(mutant) for mutant in mutants(program, report, rng, tries, layouts=layouts)]
