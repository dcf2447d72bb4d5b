"""Programs of format 1, read into format 2 on one engine.

Format 1 named each preemption by a global step number.  Two kernel
versions that yield a different number of times before a preemption count
their steps differently, so one format-1 schedule preempted two different
interleavings: a differential of such a program compared two runs that were
never the same experiment.  A step number only means something on one engine.
So a format-1 schedule is *read* on one engine, the reading engine: the
program runs there with the old step semantics, and every step whose thread
differed from the op-order policy's becomes a preemption at the place the
run stood at (:class:`engine.program.format.Preemption`).  On the reading engine the
upgraded program runs exactly as the old one did; on any other engine it
runs the interleaving the reading engine ran, place for place.

Two more things format 2 refuses, which format-1 programs may hold: a DMA
write through a pin that is not held (after its unpin) and a second unpin of
a pin.  Both ended in -EINVAL at run time and changed nothing; the upgrade
drops them, after the reading run (so that its steps are the old ones), and
names them in its note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import ProgramError
from engine.execution.outcome import Outcome
from engine.execution.runner import Runner
from engine.kernels import resolve_engine
from engine.program.format import PROGRAM_VERSION, Program, parse_program, renumber_schedule

#: The engine a format-1 schedule is read on when the caller names none: the
#: older side of the seed series' pair.
DEFAULT_READING = "v6.14"


@dataclass(frozen=True)
class Upgrade:
    """A format-2 program and what the upgrade did to get it."""

    program: Program
    reading: str | None          # the engine the schedule was read on (None: no schedule)
    dropped: tuple[int, ...]     # format-1 operation indices the upgrade dropped
    note: str
    #: The reading run, with the old step semantics (None: no schedule to read).
    #: Without dropped ops the upgraded program runs exactly this on @reading.
    reading_run: Outcome | None = None


def _v1_schedule(data: dict[str, Any], names: set[str]) -> dict[int, str]:
    """A format-1 schedule ``[[step, thread], ...]``, checked as format 1 checked it."""
    schedule = data.get("schedule", [])
    if not isinstance(schedule, list):
        raise ProgramError("schedule", schedule, "a format-1 schedule is a list of [step, thread]")
    out: dict[int, str] = {}
    last = -1
    for i, entry in enumerate(schedule):
        if (not isinstance(entry, (list, tuple)) or len(entry) != 2
                or type(entry[0]) is not int or not isinstance(entry[1], str)):
            raise ProgramError(f"schedule[{i}]", entry, "a format-1 entry is [step, thread]")
        step, name = entry
        if step <= last:
            raise ProgramError(f"schedule[{i}][0]", step, "schedule steps must strictly increase")
        if name not in names:
            raise ProgramError(f"schedule[{i}][1]", name, "unknown thread")
        out[step] = name
        last = step
    return out


def _not_held(ops: list[dict[str, Any]]) -> list[int]:
    """Indices of DMA writes and unpins through a pin an earlier op already unpinned."""
    unpinned: set[str | None] = set()
    out = []
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or op.get("op") not in ("dma_write", "unpin"):
            continue
        if op.get("pin") in unpinned:
            out.append(i)
        elif op["op"] == "unpin":
            unpinned.add(op.get("pin"))
    return out


def _loose(data: dict[str, Any]) -> Program:
    """The program with its operations as they are and no schedule, for the reading
    run: validated field by field, but not for the pin rules format 2 adds."""
    return parse_program({**data, "version": PROGRAM_VERSION, "schedule": []}, check=False)


def upgrade_program(data: dict[str, Any], reading: str = DEFAULT_READING) -> Upgrade:
    """Read the format-1 program @data into format 2, its schedule on engine @reading.

    A format-2 program comes back as it is.  Return: the :class:`Upgrade`.
    Raises :class:`ProgramError` for a program neither format accepts, and
    :class:`~engine.errors.UnknownEngineError` for an unknown @reading.
    """
    if not isinstance(data, dict):
        raise ProgramError("program", type(data).__name__, "a program is a JSON object")
    if data.get("version") != 1:
        return Upgrade(parse_program(data), None, (), "")
    ops = data.get("ops")
    dropped = _not_held(ops) if isinstance(ops, list) else []
    # not a list: the validation below names the field
    keep = [op for i, op in enumerate(ops) if i not in dropped] if isinstance(ops, list) else ops
    schedule_v1 = data.get("schedule") or []
    if not schedule_v1:
        program = parse_program({**data, "version": PROGRAM_VERSION, "ops": keep})
        return Upgrade(program, None, tuple(dropped), _note(None, 0, 0, dropped))
    reading = resolve_engine(reading)
    loose = _loose(data)
    steps = _v1_schedule(data, {t.name for t in loose.threads})

    def step_policy(step: int, runnable: list[str], default: str) -> str:
        want = steps.get(step)
        return want if want in runnable else default

    runner = Runner(loose, reading, chooser=step_policy)
    reading_run = runner.run()
    kept = [i for i in range(len(loose.ops)) if i not in dropped]
    taken = renumber_schedule([e.model_dump(mode="json") for e in runner.schedule_taken or []],
                              {old: new for new, old in enumerate(kept)}.get)
    program = parse_program({**data, "version": PROGRAM_VERSION, "ops": keep, "schedule": taken})
    return Upgrade(program, reading, tuple(dropped),
                   _note(reading, len(schedule_v1), len(taken), dropped), reading_run)


def _note(reading: str | None, entries: int, preemptions: int, dropped: list[int]) -> str:
    parts = []
    if reading is not None:
        parts.append(f"format-1 schedule of {entries} step entries read on {reading}: "
                     f"{preemptions} preemptions at places")
    if dropped:
        parts.append("dropped ops " + ", ".join(f"[{i}]" for i in dropped)
                     + " (DMA or unpin through a pin no longer held)")
    return "; ".join(parts) or "format 1 without a schedule: the same program"


def read_program(data: Any, reading: str = DEFAULT_READING) -> Program:
    """A program of either format: format 2 parsed, format 1 upgraded (read on @reading)."""
    if isinstance(data, dict) and data.get("version") == 1:
        return upgrade_program(data, reading).program
    return parse_program(data)
