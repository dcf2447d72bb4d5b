#!/usr/bin/env python3
"""The atheris (libFuzzer) target: bytes -> program -> differential run -> a taker.

libFuzzer drives :func:`fuzz`, which hands every input's program and
differential report to the caller's ``take``.  The engine modules are
imported under atheris' instrumentation when this module is imported, so
libFuzzer's coverage is the model's own branch coverage: whatever runs the
target imports this module before anything imports the engine.  Every input
decodes to a valid program (the decoder is total); a differential report
never raises, so libFuzzer only stops at its time limit: findings go to
``take``, not through crashes.

Two programs run it: a campaign's atheris worker
(``service/atheris_worker.py``, whose ``take`` is a finding sink on the
store), and, run as a script with ``FOLIODIFF_BENCH_TARGET`` (and
``FOLIODIFF_BENCH_CAP``) set, one trial of ``foliodiff bench-fuzz`` for a
:class:`fuzz.bench.Target`, which exits at its first detection.  libFuzzer
runs the program again in child processes under ``-fork=N`` or ``-jobs=N``,
so each is a standalone executable.

libFuzzer writes crash, timeout, slow-unit and leak files to
``-artifact_prefix``, by default the working directory: :func:`fuzz` gives it
a scratch directory when the caller names none, so they never land in a
source tree.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable

import atheris

with atheris.instrument_imports(include=["engine"], exclude=[
        # The kernel model is instrumented; the program format is not (nor is
        # the byte codec, fuzz.codec, outside the engine): the custom mutator
        # runs them too, and coverage they
        # showed there would make every mutant look new to libFuzzer.  Nor are
        # the oracles, the state snapshots and the differential's
        # classification: they run after every step or operation whatever the
        # model did, and instrumenting them halved the execution rate for no
        # coverage of kernel paths.
        "engine.program.format", "engine.execution.oracle",
        "engine.execution.outcome", "engine.diff.differential",
        # Nor is what the engine's public surface imports besides the model,
        # which never runs on an input: the corpus, the reproducers, the
        # benchmarks, the mutants (atheris excludes modules by exact name).
        "engine.corpus", "engine.corpus.entries", "engine.corpus.upgrade", "engine.repro",
        "engine.repro.observables", "engine.repro.realobs", "engine.repro.reproducer",
        "engine.bench", "engine.bench.differential", "engine.bench.native",
        "engine.kernels.mutants"]):
    from engine import Program, Report, differential

from fuzz.causes import OutOfProcessCauses
from fuzz.codec import decode
from fuzz.hints import HINT_RATE, HINT_TRIES, mutant_inputs
from fuzz.sources import affordable, allowance, program_mutant

#: What the target does with each input's program and report (what it returns is
#: not used).
Take = Callable[[Program, Report], object]


#: Hand-off mutants (:mod:`fuzz.hints`) per input, for the inputs run last; and
#: the mutants handed out last, whose own hand-offs give no hints (as in
#: :meth:`fuzz.sources.Source.learn`: hints would crowd out the rest).
HINTS: OrderedDict[bytes, list[bytes]] = OrderedDict()
HANDED: OrderedDict[bytes, None] = OrderedDict()
HINTS_KEPT = 256


def _keep_last(kept: OrderedDict, key: bytes, value: object) -> None:
    """``kept[key] = value``, forgetting the oldest beyond :data:`HINTS_KEPT`."""
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > HINTS_KEPT:
        kept.popitem(last=False)


def _remember_hints(data: bytes, program: Program, report: Report) -> None:
    """Keep the hand-off mutants of ``data``'s run for when libFuzzer mutates ``data``.

    libFuzzer only mutates inputs it kept for new coverage (and the seeds),
    which it ran just before; so the hints this custom mutator hands out are
    those of kept inputs, as in the in-process sources.
    """
    if data in HANDED:
        return
    rng = random.Random(hashlib.sha1(data).digest())
    found = mutant_inputs(program, report, rng, HINT_TRIES)
    if found:
        _keep_last(HINTS, data, found)


#: The mutant CustomMutator made last, and the input it made it from:
#: libFuzzer runs each mutant right after making it.  A mutant may map as much
#: as its parent (:func:`fuzz.sources.allowance`, looked up only past the
#: cap).  Any other input is one libFuzzer read from its corpus directories -
#: a seed, or an input an earlier run kept - and runs whatever it maps.
MUTANT: list = [None, b""]


def CustomMutator(data: bytes, max_size: int, seed: int) -> bytes:  # noqa: N802
    """A hand-off hint of ``data`` at the sources' hint rate while it has one; else half
    on operations, half on bytes."""
    rng = random.Random(seed)
    MUTANT[0], MUTANT[1] = None, data
    pending = HINTS.get(data) if rng.random() < HINT_RATE else None
    while pending:
        mutant = pending.pop()
        if len(mutant) <= max_size:
            _keep_last(HANDED, mutant, None)
            MUTANT[0] = mutant
            return mutant
    if rng.random() < 0.5:
        made = program_mutant(data, rng)
        if made is not None and len(made) <= max_size:
            MUTANT[0] = made
            return made
    MUTANT[0] = atheris.Mutate(data, max_size)
    return MUTANT[0]


def with_artifact_prefix(argv: list[str]) -> list[str]:
    """@argv, with ``-artifact_prefix`` a fresh scratch directory unless it names one.

    libFuzzer's default is the working directory, which is a source tree as
    often as not.
    """
    if any(arg.startswith("-artifact_prefix=") for arg in argv):
        return argv
    scratch = tempfile.mkdtemp(prefix="foliodiff-atheris-artifacts-")
    return [*argv, f"-artifact_prefix={scratch}/"]


def fuzz(take: Take, engine_a: str, engine_b: str, argv: list[str] | None = None) -> None:
    """Run libFuzzer with @argv (default ``sys.argv``) on the pair @engine_a, @engine_b.

    Every input is decoded into a program and run on the pair, unless it is
    a mutant that maps more than it may (:func:`fuzz.sources.affordable`);
    its hand-off hints are kept for :func:`CustomMutator`, and @take gets the
    program and its report.
    Context: does not return before libFuzzer stops (its time limit, or a
    @take that exits the process).
    """
    # Causes are replayed in a process of its own: here the model is instrumented (fuzz/causes.py).
    causes = OutOfProcessCauses([engine_a, engine_b])

    def test_one_input(data: bytes) -> None:
        program = decode(data)
        if (data == MUTANT[0] and not affordable(program)
                and not affordable(program, allowance(decode(MUTANT[1])))):
            return
        report = differential(program, engine_a, engine_b, causes=causes)
        _remember_hints(data, program, report)
        take(program, report)

    atheris.Setup(with_artifact_prefix(sys.argv if argv is None else argv), test_one_input,
                  custom_mutator=CustomMutator)
    atheris.Fuzz()


def main() -> None:
    """One ``foliodiff bench-fuzz`` trial: no store; stop at the first detection."""
    from fuzz.bench import BENCH_CAP_ENV, BENCH_TARGET_ENV, TARGETS, Target, atheris_bench_hook
    target = os.environ[BENCH_TARGET_ENV]
    spec = TARGETS[Target(target)]
    fuzz(atheris_bench_hook(target, float(os.environ[BENCH_CAP_ENV])), spec.engine_a,
         spec.engine_b)


if __name__ == "__main__":
    main()
