"""Program sources of the in-process fuzzers: random bytes, PCT and bounded-exhaustive schedules.

Each source is an iterator of ``(position, program)``.  ``position`` is a
JSON value from which :func:`make_source` starts the same source again at
the same place, so a stopped campaign resumes where each worker was.  Every
program depends only on (campaign seed, worker, position) and on the
worker's corpus at that moment; whatever it is, the stored program replays
by itself.

Behavioural coverage guides them: a program whose runs show a kernel event
not seen before in this worker (per engine and operation, as
``engine:op:event``), a new verdict or a new divergence signature joins the
corpus, and later inputs are often mutations of corpus entries.  (The
atheris fuzzer gets real code coverage from libFuzzer instead.)
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from engine import DEFAULT_READING, Program, ProgramError, Report, load_any, parse_program
from fuzz.codec import decode, encode
from fuzz.errors import ExhaustiveStateError
from fuzz.hints import HINT_RATE, HINT_TRIES, layout_mutants, mutant_inputs
from fuzz.mutate import mutate_program
from fuzz.schedule import Exhaustive, decision_count, delay_schedule, pct_schedule

#: Shortest and longest random input, in bytes (programs of ~1 to ~30 operations).
MIN_INPUT = 4
MAX_INPUT = 256
_LOG_MIN_INPUT, _LOG_MAX_INPUT = math.log(MIN_INPUT), math.log(MAX_INPUT + 1)
#: Schedules tried per program by the pct fuzzer (its own run, then PCT and
#: delay-bounded by turns), and at most by the exhaustive search: for a base
#: whose default run showed something new or that a hint made, and for any other.
PCT_RUNS = 8
PCT_RUNS_PLAIN = 3
EXHAUSTIVE_CAP = 64
EXHAUSTIVE_CAP_PLAIN = 8
#: How many of the newest corpus inputs get half of the picks.
RECENT = 8
#: How often PCT takes one of the newest corpus inputs again, unmutated.
PCT_AGAIN = 0.25
#: Hand-off mutants (:mod:`fuzz.hints`) waiting at most.
HINTS_PENDING = 64
#: Operations of a program the exhaustive search takes (longer ones are cut).
EXHAUSTIVE_OPS = 10
#: Most pages a generated program may map, over all its mmaps (two PMD-sized
#: THPs).  The decoder is total and maps up to MAX_PAGES per region: a program
#: that faults in a thousand folios spends a fifth of a second per run on pages
#: the lazyfree paths never look at, and one over 200 MiB far more; fuzzers skip
#: such an input, as libFuzzer skips a slow unit.  The cap is for what the fuzzers
#: make up: a seed always runs, and its mutants may map as much as it does.
MAX_FUZZ_PAGES = 1024


def mapped_pages(program: Program) -> int:
    """Pages ``program`` maps, over all its mmaps."""
    return sum(op.pages for op in program.ops if op.op == "mmap")


def affordable(program: Program, allowance: int = MAX_FUZZ_PAGES) -> bool:
    """Whether ``program`` is cheap enough to run in a campaign.

    @allowance: the pages it may map: :data:`MAX_FUZZ_PAGES`, or for a
        mutant of a larger input (a seed) that input's (:func:`allowance`).
    """
    return mapped_pages(program) <= allowance


def allowance(parent: Program) -> int:
    """The pages a mutant of ``parent`` may map: the cap, or what ``parent`` maps."""
    return max(MAX_FUZZ_PAGES, mapped_pages(parent))


class Fuzzer(str, enum.Enum):
    """How a campaign generates programs."""

    ATHERIS = "atheris"          # libFuzzer over the byte decoder, code coverage
    HYPOTHESIS = "hypothesis"    # Hypothesis strategies, example database
    PCT = "pct"                  # random programs, PCT and delay-bounded schedules
    EXHAUSTIVE = "exhaustive"    # small programs, every schedule up to a preemption bound
    RANDOM = "random"            # random and mutated byte inputs, default schedule

    @property
    def coverage_unit(self) -> CoverageUnit:
        """What this fuzzer's coverage counts."""
        return CoverageUnit.EDGES if self is Fuzzer.ATHERIS else CoverageUnit.FEATURES


class CoverageUnit(str, enum.Enum):
    """What a campaign's coverage figure counts; each fuzzer has one (:attr:`Fuzzer.coverage_unit`).

    FEATURES: behaviour features, the distinct things runs showed
    (:func:`features`: an ``engine:op:event`` kernel event, a verdict pair,
    a divergence signature), as one worker saw them; what guides the
    random, pct, exhaustive and hypothesis fuzzers.  EDGES: libFuzzer's
    ``cov:``, the code blocks or edges of the instrumented kernel model
    that one atheris worker's corpus covers.  The two are not comparable.
    """

    FEATURES = "features"
    EDGES = "edges"


def features(program: Program, report: Report) -> set[str]:
    """What a run pair showed, for behavioural coverage."""
    out = {f"verdict:{report.a.verdict.value}:{report.b.verdict.value}"}
    for outcome in (report.a, report.b):
        for idx, event in outcome.events:
            op = program.ops[idx].op if 0 <= idx < len(program.ops) else "?"
            out.add(f"{outcome.engine}:{op}:{event}")
    out.update(f"sig:{d.signature_id}" for d in report.divergences)
    return out


def seed_inputs(directory: str | Path, *,
                keep: Callable[[Program], bool] = lambda program: True,
                reading: str = DEFAULT_READING) -> list[bytes]:
    """The programs of a seed corpus (``*.json``, as in ``corpus/``) as byte inputs.

    Like a ClusterFuzz seed corpus: the fuzzers start by mutating these.
    @keep: which programs to take (the fuzz benchmark leaves out any that
        already shows the divergence it times).
    @reading: the engine a format-1 file's schedule is read on
        (:mod:`engine.corpus.upgrade`): a campaign's first engine, whose
        interleaving its seeds were written for.
    Return: each kept program's :func:`engine.encode`, in file-name order.
    """
    out = []
    for path in sorted(Path(directory).glob("*.json")):
        program = load_any(str(path), reading)
        if keep(program):
            out.append(encode(program))
    return out


class Corpus:
    """A worker's inputs that showed new behaviour, kept as files in ``directory``.

    @seeds: inputs to start from (:func:`seed_inputs`); not written to ``directory``.
    """

    def __init__(self, directory: Path | None, seeds: Iterable[bytes] = ()) -> None:
        self.directory = directory
        self.inputs: list[bytes] = list(seeds)
        self.seen: set[str] = set()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self.inputs += [p.read_bytes() for p in sorted(directory.glob("*.bin"))]
        self.started = len(self.inputs)     # inputs before this run's first offer
        self._allowances: dict[bytes, int] = {}

    def allowance(self, data: bytes) -> int:
        """:func:`allowance` of input ``data`` (remembered: a seed is picked again and again)."""
        got = self._allowances.get(data)
        if got is None:
            got = self._allowances[data] = allowance(decode(data))
        return got

    def recent(self) -> list[bytes]:
        """The :data:`RECENT` newest inputs this run added (none before its first)."""
        return self.inputs[max(self.started, len(self.inputs) - RECENT):]

    def offer(self, data: bytes, feats: set[str]) -> bool:
        """Keep ``data`` if it shows a feature not seen yet. Return: whether it was kept."""
        if feats <= self.seen:
            return False
        self.seen |= feats
        self.inputs.append(data)
        if self.directory is not None:
            name = hashlib.sha1(data).hexdigest()[:20]
            (self.directory / f"{name}.bin").write_bytes(data)
        return True


def mutate(data: bytes, rng: random.Random, corpus: Corpus) -> bytes:
    """A libFuzzer-style mutation of ``data``: flip, insert, erase, or splice."""
    buf = bytearray(data or b"\0")
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if kind == 0 and buf:
            buf[pos % len(buf)] ^= 1 << rng.randrange(8)
        elif kind == 1 and buf:
            buf[pos % len(buf)] = rng.randrange(256)
        elif kind == 2:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif kind == 3 and len(buf) > 1:
            del buf[pos:pos + rng.randint(1, 8)]
        elif corpus.inputs:
            other = _pick(rng, corpus)
            cut = rng.randrange(len(other) + 1)
            buf[pos:] = other[cut:]
    return bytes(buf[:MAX_INPUT])


def program_mutant(data: bytes, rng: random.Random) -> bytes | None:
    """``data`` mutated operation by operation (:mod:`fuzz.mutate`), re-encoded."""
    program = mutate_program(decode(data), rng)
    return None if program is None else encode(program)


def _pick(rng: random.Random, corpus: Corpus) -> bytes:
    """A corpus input to mutate: half the time one of the :data:`RECENT` newest.

    An input joins the corpus because it showed something new; its mutants are
    the likeliest to show more (AFL's and libFuzzer's entropic schedules give
    such inputs more energy).  Picking uniformly instead dilutes it among the
    whole seed corpus.
    """
    recent = corpus.recent()
    if recent and rng.random() < 0.5:
        return rng.choice(recent)
    return rng.choice(corpus.inputs)


def _input(rng: random.Random, corpus: Corpus) -> tuple[bytes, int]:
    """A new input and the pages it may map: a mutant of a corpus input (which may
    map as much as that input), or random bytes (the cap)."""
    if corpus.inputs and rng.random() < 0.6:
        data = _pick(rng, corpus)
        pages = corpus.allowance(data)
        if rng.random() < 0.5:
            mutant = program_mutant(data, rng)
            if mutant is not None:
                return mutant, pages
        return mutate(data, rng, corpus), pages
    # Log-uniform lengths: most inputs are short (a median of ~8 operations),
    # as libFuzzer's -len_control keeps them early on.  A reclaim bug needs a
    # handful of operations in order; thirty others mostly get in its way,
    # and each costs engine time.
    return (rng.randbytes(int(math.exp(rng.uniform(_LOG_MIN_INPUT, _LOG_MAX_INPUT)))),
            MAX_FUZZ_PAGES)


def _rng(seed: int, worker: int, i: int, salt: str = "") -> random.Random:
    return random.Random(f"{seed}/{worker}/{i}/{salt}")


class Source:
    """Programs for one worker; :meth:`learn` feeds back what each one showed."""

    def __init__(self, fuzzer: Fuzzer, engine: str, seed: int, worker: int, corpus: Corpus,
                 position: Any = None, *, pct_depth: int = 3, preemption_bound: int = 2) -> None:
        self.fuzzer = fuzzer
        self.engine = engine
        self.seed = seed
        self.worker = worker
        self.corpus = corpus
        self.pct_depth = pct_depth
        self.preemption_bound = preemption_bound
        self.position: Any = position or {"i": 0}
        self._data: bytes = b""
        self._allowance = MAX_FUZZ_PAGES    # pages the program yielded last may map
        # hint mutants, each with the pages it may map (its base's): hand-off
        # hints, aimed at races, go before layout hints
        self.hints: deque[tuple[bytes, int]] = deque(maxlen=HINTS_PENDING)
        self.layouts: deque[tuple[bytes, int]] = deque(maxlen=HINTS_PENDING)
        self._initial_run = False           # the program yielded last is a corpus input
        self._hinted_base = False           # the current base is a hint's mutant
        self._race_base = False             # ... a hand-off hint's, aimed at a race
        self._kept = False                  # learn() kept the program yielded last
        self._hint_draws = 0

    def _base(self, i: int) -> Program:
        rng = _rng(self.seed, self.worker, i)
        recent = self.corpus.recent()
        self._hinted_base = bool(self.hints or self.layouts) and rng.random() < HINT_RATE
        self._race_base = self._hinted_base and bool(self.hints)
        if self._hinted_base:
            self._data, self._allowance = (self.hints or self.layouts).popleft()
        elif self.fuzzer is Fuzzer.PCT and recent and rng.random() < PCT_AGAIN:
            # Schedules, not operations: a base that just showed something new
            # runs again as it is, under new PCT draws.
            self._data = rng.choice(recent)
            self._allowance = self.corpus.allowance(self._data)
        else:
            self._data, self._allowance = _input(rng, self.corpus)
        return decode(self._data)

    def _affordable(self, program: Program) -> bool:
        return affordable(program, self._allowance)

    def _initial(self) -> Iterator[Program]:
        """Each input the corpus started with, once, as it is (libFuzzer's INITED pass),
        whatever it maps: a seed is never skipped.

        Their hand-offs are the first hints.  Unlike libFuzzer's, their
        features do not count as seen: a mutant that shows what a seed showed
        is still this run's first to, joins the newest inputs and gets their
        share of the picks, which keeps the search near the seeds.  (Counting
        them dropped pmd-redirty-split from 10/10 found, median 5.1 s, to
        6/10, median 11.6 s, over ten seeds.)  A source resumed past its
        first base does not run them again.
        """
        if self.position.get("i", 0) or "state" in self.position:
            return
        start = self.corpus.inputs[:self.corpus.started]
        while (j := self.position.get("init", 0)) < len(start):
            self.position = {"i": 0, "init": j + 1}
            self._data = start[j]
            self._allowance = self.corpus.allowance(self._data)
            self._initial_run = True
            yield decode(self._data)
        self._initial_run = False

    def __iter__(self) -> Iterator[Program]:
        yield from self._initial()
        if self.fuzzer is Fuzzer.RANDOM:
            while True:
                i = self.position["i"]
                self.position = {"i": i + 1}
                program = self._base(i)
                if self._affordable(program):
                    yield program
        elif self.fuzzer is Fuzzer.PCT:
            while True:
                i = self.position["i"]
                base = self._base(i)
                rng = _rng(self.seed, self.worker, i, "pct")
                if self._affordable(base):
                    # The base's own run first (its schedule, as the random fuzzer
                    # runs it); k once per base; a base in which no step ever has
                    # two runnable threads has one schedule: that run is enough.
                    steps, decisions = decision_count(base, self.engine)
                    yield base
                    runs = self._energy(PCT_RUNS, PCT_RUNS_PLAIN) if decisions else 1
                    for run in range(1, runs):
                        yield self._schedule(base, run, rng, steps)
                self.position = {"i": i + 1}
        elif self.fuzzer is Fuzzer.EXHAUSTIVE:
            yield from self._exhaustive()
        else:
            raise ValueError(f"fuzzer {self.fuzzer.value!r} has no in-process source")

    def _schedule(self, base: Program, run: int, rng: random.Random, steps: int) -> Program:
        """The pct fuzzer's ``run``-th schedule (``run >= 1``) of ``base``: PCT and delay-bounding by turns.

        A portfolio, as Coyote and shuttle offer one: PCT of depth d finds
        orderings of whole operations that program order never shows; delay
        bounding with 1 .. d-1 delays finds a step of another thread inside
        an operation that otherwise runs in program order, which PCT needs
        two adjacent change points for (see :func:`fuzz.schedule.delay_schedule`).
        """
        if run % 2:
            return pct_schedule(base, self.engine, self.pct_depth, rng, max_steps=steps)
        delays = rng.randint(1, max(1, self.pct_depth - 1))
        return delay_schedule(base, self.engine, delays, rng, max_steps=steps)

    def _exhaustive(self) -> Iterator[Program]:
        while True:
            i = self.position["i"]
            data = self._base(i).to_dict()
            state = self.position.get("state")
            try:
                base = parse_program({**data, "ops": data["ops"][:EXHAUSTIVE_OPS],
                                      "schedule": []})
            except ProgramError:            # cut before an operation it needs
                self.position = {"i": i + 1}
                continue
            if not self._affordable(base):
                self.position = {"i": i + 1}
                continue
            # A state goes with the base it enumerates: the base at position i
            # depends on the corpus, which may have grown since (a fleet's shared
            # one).  A position saved before positions named their base is trusted.
            digest = hashlib.sha1(base.to_json(indent=None).encode()).hexdigest()[:16]
            if self.position.get("base", digest) != digest:
                state = None
            search = None
            if state:
                try:
                    search = Exhaustive.from_state(base, self.engine, state)
                except ExhaustiveStateError:
                    state = None            # saved by an older format: start this base again
            if search is None:
                search = Exhaustive(base, self.engine, self.preemption_bound)
            cap = EXHAUSTIVE_CAP
            for n, program in enumerate(search):
                self.position = {"i": i, "state": search.state(), "base": digest}
                yield program
                if n == 0 and search.level == 0 and not state:
                    cap = self._energy(EXHAUSTIVE_CAP, EXHAUSTIVE_CAP_PLAIN)
                if n + 1 >= cap:
                    break
            self.position = {"i": i + 1}

    def _energy(self, full: int, plain: int) -> int:
        """Schedules for the current base, once its default run was learnt from.

        AFL's power schedules, for schedules: a base whose default run showed
        something new, or that a hint aimed at a race, is worth the full
        search; most bases are near-copies of ones already explored.
        """
        return full if self._kept or self._race_base else plain

    def learn(self, program: Program, report: Report) -> bool:
        """Keep the input of ``program`` if its runs showed something new.

        The hand-offs and layouts (:mod:`fuzz.hints`) of an input kept, or of
        one the corpus started with, each suggest a mutant: those inputs get
        the mutation energy anyway, and a hint per run would flood the source
        with the hints of one big program's many near-copies.  Hand-off
        hints, aimed at races, go first, and only they earn their base the
        explorers' full schedule search: a layout is no race.
        """
        data = self._data if self.fuzzer is not Fuzzer.EXHAUSTIVE else encode(program)
        kept = self._kept = (not self._initial_run
                             and self.corpus.offer(data, features(program, report)))
        # Not from a hint's own mutants: their hand-offs elsewhere in the
        # program would hint again, and hints would crowd out the rest.
        if (kept or self._initial_run) and not self._hinted_base:
            self._hint_draws += 1
            rng = _rng(self.seed, self.worker, self._hint_draws, "hint")
            # The explorers drop a base's schedule: one mutant is enough for them.
            tries = HINT_TRIES if self.fuzzer is Fuzzer.RANDOM else 1
            self.hints.extend((m, self._allowance)
                              for m in mutant_inputs(program, report, rng, tries, layouts=False))
            if self.fuzzer is Fuzzer.RANDOM:
                # The explorers search schedules; a layout is no race.
                self.layouts.extend((encode(m), self._allowance)
                                    for m in layout_mutants(program, report, rng, tries))
        return kept
