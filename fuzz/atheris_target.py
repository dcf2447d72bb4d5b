#!/usr/bin/env python3
"""The atheris (libFuzzer) target: bytes -> program -> differential run -> store.

libFuzzer runs this script and, with ``-fork=N`` or ``-jobs=N``, runs it
again in child processes, so it is a standalone executable.  The engine
modules are imported under atheris' instrumentation, so libFuzzer's coverage
is the model's own branch coverage.  Every input decodes to a valid program
(the decoder is total); a differential report never raises, so libFuzzer
only stops at its time limit: findings go to the store through a
:class:`fuzz.sink.FindingSink`, not through crashes.

Environment: ``FOLIODIFF_DB_URL`` (the store) and ``FOLIODIFF_CAMPAIGN``
(the campaign id, whose config names the engine pair).  After each commit
that stored a new finding the target prints ``foliodiff-stored {json}`` on
stderr, which ``foliodiff fuzz`` reads.

With ``FOLIODIFF_BENCH_TARGET`` (and ``FOLIODIFF_BENCH_CAP``) set instead,
the target times one search for a :class:`fuzz.bench.Target` and exits at
its first detection (``foliodiff bench-fuzz``).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import random
import sys
from collections import OrderedDict
from collections.abc import Callable

import atheris

with atheris.instrument_imports(include=["engine"], exclude=[
        # The kernel model is instrumented; the program format and its byte
        # codec are not: the custom mutator runs them too, and coverage they
        # showed there would make every mutant look new to libFuzzer.  Nor are
        # the oracles, the state snapshots and the differential's
        # classification: they run after every step or operation whatever the
        # model did, and instrumenting them halved the execution rate for no
        # coverage of kernel paths.
        "engine.program.codec", "engine.program.format", "engine.execution.oracle",
        "engine.execution.outcome", "engine.diff.differential",
        # Nor is what the engine's public surface imports besides the model,
        # which never runs on an input: the corpus, the reproducers, the
        # benchmarks, the mutants (atheris excludes modules by exact name).
        "engine.corpus", "engine.corpus.entries", "engine.corpus.upgrade", "engine.repro",
        "engine.repro.observables", "engine.repro.realobs", "engine.repro.reproducer",
        "engine.bench", "engine.bench.differential", "engine.bench.native",
        "engine.kernels.mutants"]):
    from engine import Program, Report, decode, differential

from fuzz.campaign import CampaignConfig, open_sink
from fuzz.hints import HINT_RATE, HINT_TRIES, mutant_inputs
from fuzz.sink import FindingSink
from fuzz.sources import affordable, allowance, program_mutant
from service.store import Store


def _setup() -> tuple[FindingSink, CampaignConfig]:
    store = Store.open(os.environ["FOLIODIFF_DB_URL"])

    def stored(found: list) -> None:
        for f in found:
            print("foliodiff-stored " + json.dumps(vars(f)), file=sys.stderr, flush=True)

    sink, config = open_sink(store, int(os.environ["FOLIODIFF_CAMPAIGN"]), stored,
                             flush_every=0.5)
    atexit.register(sink.flush)
    return sink, config


def _setup_bench(target: str) -> tuple[Callable[[Program, Report], None], str, str]:
    from fuzz.bench import TARGETS, Target, atheris_bench_hook
    spec = TARGETS[Target(target)]
    return (atheris_bench_hook(target, float(os.environ["FOLIODIFF_BENCH_CAP"])),
            spec.engine_a, spec.engine_b)


if "FOLIODIFF_BENCH_TARGET" in os.environ:
    # ``foliodiff bench-fuzz``: no store; stop at the first detection.
    TAKE, ENGINE_A, ENGINE_B = _setup_bench(os.environ["FOLIODIFF_BENCH_TARGET"])
else:
    _sink, _config = _setup()
    TAKE, ENGINE_A, ENGINE_B = _sink.add, _config.engine_a, _config.engine_b


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


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer looks for
    program = decode(data)
    if (data == MUTANT[0] and not affordable(program)
            and not affordable(program, allowance(decode(MUTANT[1])))):
        return
    report = differential(program, ENGINE_A, ENGINE_B)
    _remember_hints(data, program, report)
    TAKE(program, report)


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
        mutant = program_mutant(data, rng)
        if mutant is not None and len(mutant) <= max_size:
            MUTANT[0] = mutant
            return mutant
    MUTANT[0] = atheris.Mutate(data, max_size)
    return MUTANT[0]


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput, custom_mutator=CustomMutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
