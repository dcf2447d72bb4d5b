"""Hand-off hints: run the kernel thread that takes over a folio inside the path that handed it over.

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
i in program order, with one preemption that gives it the CPU at a step
between the hand-off and the end of i (the run says which steps those
are: :attr:`engine.outcome.Outcome.event_steps`).  Schedule explorers drop
the preemption and search the interleavings of the placed operation
themselves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from engine.codec import encode
from engine.diff import Report
from engine.errors import ProgramError
from engine.program import Program, ThreadKind, parse_program

#: Kernel event -> the operation of the kernel thread that consumes what it handed off.
HANDOFFS: dict[str, str] = {
    # deferred_split_folio(): the folio is on the split queue, for the shrinker.
    "deferred_split_partially_mapped": "deferred_split_scan",
    "deferred_split_underused": "deferred_split_scan",
}
#: How often a fuzzer's next input is a pending hint rather than its own
#: choice (at 0.5, hint mutants crowded out the rest: the random fuzzer found
#: dma-data-loss 5/10 against 9/10 without hints), and the preemption steps
#: tried per hand-off by a fuzzer that keeps a program's schedule.
HINT_RATE = 0.15
HINT_TRIES = 3


@dataclass(frozen=True)
class Handoff:
    """Operation ``at`` handed a folio to ``consumer`` at a step before ``first``.

    ``first .. last`` are the steps of the run, after the hand-off, in which
    ``at`` was still going on: a preemption there lets the consumer in while
    the path is half done.
    """

    at: int
    consumer: str
    first: int
    last: int


def handoffs(program: Program, report: Report) -> list[Handoff]:
    """The first hand-off to each consumer per operation, over both runs, in operation order.

    An operation whose consumer already runs on a kernel thread right after
    it gives no hint (that placement is what a hint would make), nor one
    that ended in the step of its hand-off.
    """
    out: dict[tuple[int, str], Handoff] = {}
    for outcome in (report.a, report.b):
        for (idx, event), step in zip(outcome.events, outcome.event_steps):
            consumer = HANDOFFS.get(event)
            if consumer is None or idx is None or (idx, consumer) in out:
                continue
            nxt = program.ops[idx + 1] if idx + 1 < len(program.ops) else None
            end = outcome.op_ends[idx] if idx < len(outcome.op_ends) else None
            last = outcome.steps - 1 if end is None else end
            if (nxt is None or nxt.op != consumer) and last > step:
                out[idx, consumer] = Handoff(idx, consumer, step + 1, last)
    return [out[key] for key in sorted(out)]


def hinted(program: Program, handoff: Handoff, rng: random.Random,
           tries: int = 1) -> list[Program]:
    """Up to ``tries`` mutants of ``program`` with ``handoff``'s consumer run inside its operation.

    The consumer goes right after the operation in ``ops``, on a kernel
    thread other than the operation's (a new one if there is none); each
    mutant preempts the operation's thread for it at a different step of
    the hand-off's window, drawn uniformly.  Schedule entries from that step
    on are dropped, since their steps no longer line up.
    Return: the mutants the format accepts (none with too many threads).
    """
    data: dict[str, Any] = program.to_dict()
    threads = [dict(t) for t in data["threads"]]
    running = program.ops[handoff.at].thread
    kthreads = [t["name"] for t in threads
                if t.get("kind") == ThreadKind.KTHREAD.value and t["name"] != running]
    if kthreads:
        name = rng.choice(kthreads)
    else:
        name = next(f"K{i}" for i in range(9) if all(t["name"] != f"K{i}" for t in threads))
        threads.append({"name": name, "kind": ThreadKind.KTHREAD.value, "mm": None})
    ops = [dict(o) for o in data["ops"]]
    ops.insert(handoff.at + 1, {"thread": name, "op": handoff.consumer})
    window = range(handoff.first, handoff.last + 1)
    out = []
    for step in sorted(rng.sample(window, min(tries, len(window)))):
        schedule = [[s, t] for s, t in data["schedule"] if s < step] + [[step, name]]
        try:
            out.append(parse_program({**data, "threads": threads, "ops": ops,
                                      "schedule": schedule}))
        except ProgramError:
            return []
    return out


def mutants(program: Program, report: Report, rng: random.Random, tries: int) -> list[Program]:
    """:func:`hinted` mutants for every hand-off of ``program``'s ``report``."""
    return [m for h in handoffs(program, report) for m in hinted(program, h, rng, tries)]


def mutant_inputs(program: Program, report: Report, rng: random.Random,
                  tries: int) -> list[bytes]:
    """:func:`mutants` as byte inputs, leaving out any whose schedule bytes cannot spell."""
    out = []
    for mutant in mutants(program, report, rng, tries):
        try:
            out.append(encode(mutant))
        except ValueError:
            pass
    return out
