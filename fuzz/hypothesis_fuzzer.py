"""Hypothesis as a campaign fuzzer: the program strategies, steered by new behaviour.

Hypothesis draws programs from :func:`fuzz.strategies.programs` and, with a
seed corpus, :func:`fuzz.strategies.seeded_programs`; each runs
through the engine pair and goes to the campaign's sink.  ``target()`` is
told how many behaviours (:func:`fuzz.sources.features`) a program showed
that this worker had not seen, so Hypothesis' targeted search leans towards
inputs that reach new kernel paths.  A program that showed something new
also runs its hand-off mutants (:mod:`fuzz.hints`), as the other fuzzers'
kept inputs do: Hypothesis draws its preemptions' places blind, and only
the run says which places of an operation follow a hand-off.  Nothing
fails inside the test: the sink minimizes and stores what is found, and
the test runs in batches until the campaign says stop.  The example
database lives in the campaign's corpus directory, so a resumed or later
campaign starts from what was kept.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings, target
from hypothesis import strategies as st
from hypothesis.database import (
    DirectoryBasedExampleDatabase,
    ExampleDatabase,
    InMemoryExampleDatabase,
)

from engine import Program, Report, differential
from fuzz.codec import decode
from fuzz.hints import HINT_TRIES, mutants
from fuzz.sources import MAX_FUZZ_PAGES, affordable, features, mapped_pages
from fuzz.strategies import programs, seeded_programs

#: Programs per Hypothesis run; the stop condition is checked between runs.
BATCH = 100
#: Operations per program: Hypothesis tries small examples first anyway, and
#: a 32-operation program over two PMD THPs costs ~100 ms of engine time.
MAX_OPS = 16


class HypothesisConfig(Protocol):
    """What :func:`fuzz_with_hypothesis` reads of its caller's config (a campaign's,
    a benchmark trial's)."""

    @property
    def seed(self) -> int: ...

    @property
    def engine_a(self) -> str: ...

    @property
    def engine_b(self) -> str: ...

    def corpus_dir(self, worker: int) -> Path | None:
        """Where @worker keeps its example database, or None for one in memory."""
        ...

    def seed_inputs(self) -> list[bytes]:
        """The seed programs as byte inputs."""
        ...


def fuzz_with_hypothesis(config: HypothesisConfig, worker: int, go_on: Callable[[], bool],
                         each: Callable[[Program, Report], None],
                         seen: set[str] | None = None, *,
                         database: ExampleDatabase | None = None, first_run: int = 0,
                         seeds_first: bool = True) -> int:
    """Run Hypothesis over the pair of ``config`` until ``go_on()`` is false.

    @seen: the behaviour features (:func:`fuzz.sources.features`) this
        worker has seen, filled as it runs: a campaign reports their number
        as the worker's coverage.  Each program is handed to @each before
        its features join @seen.
    @database: the example database (default: in the worker's corpus
        directory, or in memory); a fleet shares one in its store.
    @first_run: the number of this worker's first Hypothesis run (each run
        draws from its own seed); one that goes on from earlier runs starts
        after them.
    @seeds_first: run each seed once first (not again when going on).
    Return: the number of the run after the last.
    """
    directory = config.corpus_dir(worker)
    db = database if database is not None else (
        InMemoryExampleDatabase() if directory is None
        else DirectoryBasedExampleDatabase(str(directory / "hypothesis")))
    seen = set() if seen is None else seen
    conf = settings(max_examples=BATCH, database=db, deadline=None, verbosity=Verbosity.quiet,
                    suppress_health_check=list(HealthCheck), print_blob=False,
                    phases=[Phase.reuse, Phase.generate, Phase.target])

    def take(program: Program) -> tuple[Report, set[str]]:
        """Run ``program`` on the pair and hand it on: its report, and what it showed
        that this worker had not seen."""
        report = differential(program, config.engine_a, config.engine_b)
        each(program, report)
        new = features(program, report) - seen
        seen.update(new)
        return report, new

    def run_hints(program: Program, report: Report) -> None:
        rng = random.Random(hashlib.sha1(program.to_json().encode()).digest())
        for mutant in mutants(program, report, rng, HINT_TRIES):
            if not go_on():
                return
            take(mutant)

    seeds = [decode(data) for data in config.seed_inputs()]
    # Each seed once as it is, whatever it maps (libFuzzer's INITED pass); a
    # drawn program may map as much as the largest seed (Hypothesis does not
    # say which seed a mutant came from).
    for program in seeds if seeds_first else ():
        if not go_on():
            return first_run
        run_hints(program, take(program)[0])
    limit = max([MAX_FUZZ_PAGES] + [mapped_pages(p) for p in seeds])
    drawn = programs(max_ops=MAX_OPS)
    if seeds:
        drawn = st.one_of(drawn, seeded_programs(seeds))
    run = first_run
    while go_on():
        @seed(config.seed * 1_000_003 + worker * 7919 + run)
        @conf
        @given(drawn)
        def explore(program: Program) -> None:
            if not go_on() or not affordable(program, limit):
                return
            report, new = take(program)
            target(float(len(new)), label="new behaviours")
            if new:
                run_hints(program, report)

        explore()
        run += 1
    return run
