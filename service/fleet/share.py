"""One slice of one share of a fleet campaign: what a ``fuzz_share`` job runs.

The worker takes the share (a new generation, :meth:`Store.take_share`),
starts its source where the share's last slice left it, with the
campaign's shared corpus (the seeds and every input any worker kept), and
fuzzes for at most ``slice_seconds`` or what is left of the share's time.
Every :data:`SYNC_EVERY` seconds, and at the end, it stores its findings
(the sink's batch), pushes the inputs it kept, pulls those others kept, and
saves the share's position and counts; a worker killed in between loses at
most that much of the share's work, which the next one does again.

A fleet campaign is not reproducible run for run: what a share pulls
depends on when the others pushed, as with libFuzzer's ``-jobs`` or
syz-hub.  Each stored finding replays from its program alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine import Program, Report, differential
from engine.kernels import load_identities, model_digest
from fuzz.codec import encode
from fuzz.sink import FindingSink, Stored
from fuzz.sources import Corpus, Fuzzer, Source, features
from fuzz.throughput import fuzzing_gc
from service.campaign import CampaignConfig, require_fuzzer
from service.errors import FleetError
from service.fleet.atheris_slice import atheris_slice
from service.models import CampaignShare
from service.store import Store

#: Seconds between a share's syncs with the store.
SYNC_EVERY = 3.0


class SharedCorpus(Corpus):
    """A worker's corpus that is also the campaign's: what it keeps is pushed to
    the store, what the campaign's other workers kept is pulled in.

    An input pulled joins the inputs to mutate, and its features count as
    seen: another worker of the same pair showed them already.
    """

    def __init__(self, store: Store, campaign_id: int, name: str) -> None:
        self.store = store
        self.campaign_id = campaign_id
        self.name = name
        self.after = 0                      # the newest entry id pulled
        self.pending: list[tuple[bytes, list[str]]] = []
        self._held: set[bytes] = set()
        super().__init__(None, [])
        self.inputs = self._pull()
        self.started = len(self.inputs)

    def _pull(self) -> list[bytes]:
        new: list[bytes] = []
        while batch := self.store.pull_corpus(self.campaign_id, after=self.after):
            self.after = batch[-1].id
            for entry in batch:
                if entry.data not in self._held:
                    self._held.add(entry.data)
                    new.append(entry.data)
                    self.seen.update(entry.features)
        return new

    def offer(self, data: bytes, feats: set[str]) -> bool:
        kept = super().offer(data, feats)
        if kept and data not in self._held:
            self._held.add(data)
            self.pending.append((data, sorted(feats)))
        return kept

    def sync(self) -> None:
        """Push what this worker kept since the last sync, and pull what others kept."""
        if self.pending:
            self.store.push_corpus(self.campaign_id, self.pending, self.name)
            self.pending = []
        self.inputs.extend(self._pull())


def share_done(config: CampaignConfig, elapsed: float) -> bool:
    """Whether a share that has fuzzed @elapsed seconds has had its time (half a
    second short counts: a slice ends between programs)."""
    return elapsed >= config.seconds - 0.5


def check_model(config: CampaignConfig) -> None:
    """Raise :class:`FleetError` unless this install runs the campaign's model
    (its digest, and each plugin engine's source hash), naming both."""
    if config.model is not None and config.model != model_digest():
        raise FleetError(f"this worker's model is {model_digest()}, the campaign's is "
                         f"{config.model}: run the foliodiff the campaign was started with")
    try:
        load_identities(config.plugins)
    except Exception as exc:          # PluginError, or a plugin that no longer imports
        raise FleetError(f"this worker's plugin engines differ from the campaign's: {exc}") \
            from exc


def run_slice(store: Store, campaign_id: int, share: int, holder: str, *,
              on_stored: Callable[[list[Stored]], None] = lambda found: None,
              go_on: Callable[[], bool] = lambda: True) -> bool:
    """Take share @share of campaign @campaign_id for worker @holder and fuzz one slice.

    @on_stored: told of the findings stored for the first time, after each commit.
    @go_on: asked between programs; False ends the slice early (the worker stops).
    Raises :class:`FleetError` when the campaign is no fleet campaign or runs
    another model, :class:`service.errors.ShareLostError` when a newer worker
    took the share meanwhile (nothing more is written).
    Return: whether the share has had its time (:func:`share_done`).
    """
    config = CampaignConfig.stored(store.get_campaign(campaign_id).config)
    if not config.fleet:
        raise FleetError(f"campaign {campaign_id} is not a fleet campaign "
                         f"(run it with foliodiff fuzz --resume {campaign_id})")
    require_fuzzer(config.fuzzer)
    check_model(config)
    row = store.take_share(campaign_id, share, holder)
    budget = min(config.slice_seconds, config.seconds - row.elapsed)
    if budget <= 0:
        return True
    run = _Slice(store, campaign_id, config, row, budget, on_stored, go_on)
    if config.fuzzer is Fuzzer.ATHERIS:
        run.atheris()
    elif config.fuzzer is Fuzzer.HYPOTHESIS:
        run.hypothesis()
    else:
        run.source()
    return share_done(config, row.elapsed + time.monotonic() - run.start)


class _Slice:
    """One slice of a share while it runs: its corpus, its sink, its counts."""

    def __init__(self, store: Store, campaign_id: int, config: CampaignConfig,
                 row: CampaignShare, budget: float,
                 on_stored: Callable[[list[Stored]], None], go_on: Callable[[], bool]) -> None:
        self.store, self.campaign_id, self.config, self.row = store, campaign_id, config, row
        self.budget, self.on_stored, self.go_on = budget, on_stored, go_on
        self.corpus = SharedCorpus(store, campaign_id, f"{config.fuzzer.value}-{row.share}")
        self.position: dict[str, Any] = dict(row.position or {})
        self.ran = 0
        self.coverage = 0
        self.sink: FindingSink | None = None
        self.learn: Callable[[Program, Report], Any] | None = None
        fuzzing_gc()
        self.start = self.last = time.monotonic()

    def in_time(self) -> bool:
        return time.monotonic() - self.start < self.budget and self.go_on()

    def save(self) -> None:
        """Store the findings, share the corpus, and save the share (if still ours)."""
        if self.sink is not None:
            self.sink.flush()
        self.corpus.sync()
        self.store.save_share(self.campaign_id, self.row.share, self.row.generation,
                              position=self.position,
                              elapsed=self.row.elapsed + time.monotonic() - self.start,
                              execs=self.row.execs + self.ran,
                              coverage=self.coverage or len(self.corpus.seen))

    def each(self, program: Program, report: Report) -> None:
        """One differential run of the slice: to the sink, to the fuzzer, and a
        save every :data:`SYNC_EVERY` seconds."""
        assert self.sink is not None
        self.ran += 1
        self.sink.add(program, report)
        if self.learn is not None:
            self.learn(program, report)
        if time.monotonic() - self.last >= SYNC_EVERY:
            self.last = time.monotonic()
            self.save()

    def _sink(self) -> FindingSink:
        cfg = self.config
        self.sink = FindingSink(self.store, self.campaign_id, minimize=False,
                                on_stored=self.on_stored,
                                known=self.store.known_signature_ids(cfg.engine_a, cfg.engine_b))
        return self.sink

    def source(self) -> None:
        """random, pct, exhaustive: the share's source, on the shared corpus."""
        cfg = self.config
        self._sink()
        source = Source(cfg.fuzzer, cfg.engine_a, cfg.seed, self.row.share, self.corpus,
                        self.row.position, pct_depth=cfg.pct_depth,
                        preemption_bound=cfg.preemption_bound)
        self.learn = source.learn
        for program in source:
            if not self.in_time():
                break
            self.position = source.position
            self.each(program, differential(program, cfg.engine_a, cfg.engine_b))
        self.position = source.position
        self.save()

    def hypothesis(self) -> None:
        """Hypothesis, drawing mutants of the shared corpus (seeds and what every
        worker kept); a program of its own that showed a feature new to the
        corpus joins it.  Its example database is the store's too, though it
        holds only failing examples, which foliodiff never has: the sink takes
        every divergence instead."""
        # Imported here: Hypothesis is in the test extra (require_fuzzer said so).
        from fuzz.hypothesis_fuzzer import fuzz_with_hypothesis
        from service.fleet.hypothesis_db import StoreExampleDatabase
        cfg = self.config
        self._sink()
        self.learn = lambda program, report: self.corpus.offer(encode(program),
                                                               features(program, report))
        self.position["runs"] = fuzz_with_hypothesis(
            _HypothesisSlice(cfg.seed, cfg.engine_a, cfg.engine_b, tuple(self.corpus.inputs)),
            self.row.share, self.in_time, self.each,
            database=StoreExampleDatabase(self.store, self.campaign_id),
            first_run=self.position.get("runs", 0), seeds_first="runs" not in self.position)
        self.save()

    def atheris(self) -> None:
        """libFuzzer on the shared corpus as files (:mod:`atheris_slice`)."""
        self.ran, self.coverage, added = atheris_slice(
            self.store, self.campaign_id, self.config, self.row.share, self.row.generation,
            self.budget, self.corpus.inputs, self.on_stored, self.go_on)
        self.corpus.pending = [(d, []) for d in added]
        self.position = {"slices": self.position.get("slices", 0) + 1}
        self.save()


@dataclass(frozen=True)
class _HypothesisSlice:
    """What :func:`fuzz_with_hypothesis` reads of a fleet campaign: its seed and
    pair, the seeds from the shared corpus, no corpus directory (the example
    database is the store's)."""

    seed: int
    engine_a: str
    engine_b: str
    seeds: tuple[bytes, ...]

    def corpus_dir(self, worker: int) -> None:
        return None

    def seed_inputs(self) -> list[bytes]:
        return list(self.seeds)
