"""The fleet's task kinds, as procrastinate tasks, and the app that runs them (:func:`queue_app`).

- ``fuzz_share``: one slice of one share of a campaign
  (:func:`service.fleet.share.run_slice`); then the share's next slice is
  queued, unless it has had its time; the last share to finish finishes
  the campaign.
- ``minimize``: one stored finding, once: a finding already minimized is
  left alone, and its lock keeps two workers from minimizing it at once.
- ``merge``: a finished campaign's shared corpus, pruned (:mod:`fuzz.merge`).
- ``replay``: one stored finding run again with this worker's model
  (ClusterFuzz's progression task): whether it still shows, kept as a note
  on the finding.  ``foliodiff queue-replay`` queues them.

A job reads the store URL, the worker's name and its stop event from the
worker's context (:mod:`service.fleet.worker`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import procrastinate

from engine import differential, parse_program
from engine.kernels import model_digest
from fuzz.merge import MergeInput, redundant
from service.campaign import CampaignConfig
from service.errors import FleetError, IllegalTransitionError, ShareLostError
from service.fleet.queue import (
    FUZZ_SHARE,
    MERGE,
    MINIMIZE,
    REPLAY,
    REPLAY_QUEUE,
    SEEDS,
    campaign_queue,
    conninfo,
    merge_lock,
    minimize_lock,
    replay_lock,
    share_lock,
)
from service.fleet.share import check_model, run_slice, share_done
from service.minimizer import MINIMIZE_SECONDS, minimize_stored
from service.models import CampaignStatus
from service.store import Store, utc_now

log = logging.getLogger("foliodiff.fleet")

#: Who the notes of replays are by.
REPLAY_AUTHOR = "fleet replay"


def _defer(app: Any, task: str, queue: str, lock: str, **kwargs: Any) -> bool:
    """Queue @task with @kwargs, one running and one waiting per @lock.
    Return: whether queued (False: one was waiting already)."""
    try:
        app.configure_task(task, queue=queue, lock=lock, queueing_lock=lock).defer(**kwargs)
    except procrastinate.exceptions.AlreadyEnqueued:
        return False
    return True


def defer_share(app: Any, campaign_id: int, share: int) -> bool:
    """Queue share @share's next slice."""
    return _defer(app, FUZZ_SHARE, campaign_queue(campaign_id), share_lock(campaign_id, share),
                  campaign_id=campaign_id, share=share)


def defer_minimize(app: Any, campaign_id: int, divergence_id: int) -> bool:
    """Queue the minimization of stored finding @divergence_id."""
    return _defer(app, MINIMIZE, campaign_queue(campaign_id), minimize_lock(divergence_id),
                  campaign_id=campaign_id, divergence_id=divergence_id)


def defer_merge(app: Any, campaign_id: int) -> bool:
    """Queue the merge of campaign @campaign_id's corpus."""
    return _defer(app, MERGE, campaign_queue(campaign_id), merge_lock(campaign_id),
                  campaign_id=campaign_id)


def defer_replay(app: Any, divergence_id: int) -> bool:
    """Queue a replay of stored finding @divergence_id."""
    return _defer(app, REPLAY, REPLAY_QUEUE, replay_lock(divergence_id),
                  divergence_id=divergence_id)


def _refuse(ctx: dict[str, Any], exc: FleetError, requeue: Callable[[], Any]) -> None:
    """This worker cannot run the job (another model): put the job back for the
    others, and stop, saying why (``foliodiff worker`` exits 2)."""
    requeue()
    ctx["refused"].append(str(exc))
    ctx["stop"].set()


def fuzz_share(context: procrastinate.JobContext, campaign_id: int, share: int) -> None:
    ctx = context.additional_context
    app = context.app
    with Store.open(ctx["db_url"], create=False) as store:
        config = CampaignConfig.stored(store.get_campaign(campaign_id).config)

        def stored(found: list[Any]) -> None:
            for f in found:
                ctx["on_stored"](campaign_id, f)
                if config.minimize:
                    defer_minimize(app, campaign_id, f.divergence_id)

        try:
            done = run_slice(store, campaign_id, share, ctx["holder"], on_stored=stored,
                             go_on=lambda: not ctx["stop"].is_set())
        except ShareLostError as exc:
            log.warning("%s", exc)           # the share is another worker's now
            return
        except FleetError as exc:
            _refuse(ctx, exc, lambda: defer_share(app, campaign_id, share))
            return
        except Exception as exc:
            # A defect of foliodiff, or a worker that cannot run the campaign: as
            # a single-machine campaign whose worker dies, the campaign fails,
            # saying why, rather than have the share queued and fail again.
            fail(store, campaign_id, f"share {share} on {ctx['holder']}: "
                                     f"{type(exc).__name__}: {exc}")
            raise
        snapshot(store, campaign_id, config)
        if not done:
            defer_share(app, campaign_id, share)
            return
        if finish_if_done(store, campaign_id, config):
            defer_merge(app, campaign_id)


def snapshot(store: Store, campaign_id: int, config: CampaignConfig) -> None:
    """A stats snapshot of the campaign as its shares stand (after each slice):
    ``t`` is seconds since it was created, executions and the best share's
    coverage over every share, the store's signatures of the pair."""
    shares = store.shares(campaign_id)
    campaign = store.get_campaign(campaign_id)
    t = max(1e-3, (utc_now() - campaign.created_at).total_seconds())
    execs = sum(s.execs for s in shares)
    store.add_stats_snapshot(campaign_id, t, execs, execs / t, store.corpus_size(campaign_id),
                             store.count_by_kind(config.engine_a, config.engine_b),
                             coverage=max(s.coverage for s in shares),
                             coverage_unit=config.fuzzer.coverage_unit)


def fail(store: Store, campaign_id: int, why: str) -> None:
    """Fail campaign @campaign_id, keeping @why in its progress (``failure``)."""
    campaign = store.get_campaign(campaign_id)
    if campaign.status is CampaignStatus.RUNNING:
        store.save_progress(campaign_id, {**campaign.config.get("progress", {}),
                                          "failure": why[:2000]})
        try:
            store.set_campaign_status(campaign_id, CampaignStatus.FAILED)
        except IllegalTransitionError:
            pass


def finish_if_done(store: Store, campaign_id: int, config: CampaignConfig) -> bool:
    """Mark campaign @campaign_id finished, with its totals, once every share has had its time."""
    shares = store.shares(campaign_id)
    if not shares or not all(share_done(config, s.elapsed) for s in shares):
        return False
    if store.get_campaign(campaign_id).status is CampaignStatus.RUNNING:
        store.save_progress(campaign_id, {
            "elapsed": max(s.elapsed for s in shares), "execs": sum(s.execs for s in shares),
            "coverage": max(s.coverage for s in shares)})
        try:
            store.set_campaign_status(campaign_id, CampaignStatus.FINISHED)
        except IllegalTransitionError:
            pass                             # the worker of another last share came first
    return True


def minimize(context: procrastinate.JobContext, campaign_id: int, divergence_id: int) -> None:
    ctx = context.additional_context
    with Store.open(ctx["db_url"], create=False) as store:
        config = CampaignConfig.stored(store.get_campaign(campaign_id).config)
        try:
            check_model(config)
        except FleetError as exc:
            _refuse(ctx, exc, lambda: defer_minimize(context.app, campaign_id, divergence_id))
            return
        if store.get_divergence(divergence_id).minimized_program_id is not None:
            return                           # minimized once, by whoever came first
        done = minimize_stored(store, divergence_id, config.max_minimize_runs,
                               time.monotonic() + MINIMIZE_SECONDS)
        ctx["on_minimized"](campaign_id, done)


def merge(context: procrastinate.JobContext, campaign_id: int) -> None:
    """Prune the campaign's shared corpus to the smallest inputs that show every
    feature it shows (:func:`fuzz.merge.redundant`); seeds stay."""
    with Store.open(context.additional_context["db_url"], create=False) as store:
        entries, after = [], 0
        while batch := store.pull_corpus(campaign_id, after=after, limit=10_000):
            entries += batch
            after = batch[-1].id
        drop = redundant(MergeInput(e.id, len(e.data), frozenset(e.features),
                                    pinned=e.worker == SEEDS) for e in entries)
        pruned = store.prune_corpus(campaign_id, drop)
        log.warning("campaign %s: merged its corpus, %d of %d inputs pruned",
                    campaign_id, pruned, len(entries))


def replay(context: procrastinate.JobContext, divergence_id: int) -> None:
    """Run stored finding @divergence_id's program (its minimized one, if any) on
    its pair again, with this worker's model, and note whether it still shows."""
    with Store.open(context.additional_context["db_url"], create=False) as store:
        d = store.get_divergence(divergence_id)
        pid = d.minimized_program_id or d.original_program_id
        program = parse_program(json.loads(store.get_program(pid).json))
        report = differential(program, d.engine_a, d.engine_b)
        which = "minimized" if d.minimized_program_id else "original"
        if report.harness:
            said = (f"replay with model {model_digest()}: the {which} program ended in a "
                    f"harness error (foliodiff's defect, not a kernel's), nothing said")
        elif d.signature_id in {x.signature_id for x in report.divergences}:
            said = f"replay with model {model_digest()}: the {which} program still shows it"
        else:
            shown = ", ".join(sorted(x.signature for x in report.divergences)) or "nothing"
            said = (f"replay with model {model_digest()}: the {which} program no longer "
                    f"shows it; it shows {shown}")
        store.add_note(divergence_id, said, REPLAY_AUTHOR)
        log.warning("divergence %s: %s", divergence_id, said)


def queue_app(db_url: str) -> procrastinate.App:
    """A procrastinate app on @db_url's database with the task kinds registered
    under their names (:data:`FUZZ_SHARE`, ...), not opened yet."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(db_url)))
    for name, fn in ((FUZZ_SHARE, fuzz_share), (MINIMIZE, minimize), (MERGE, merge),
                     (REPLAY, replay)):
        app.task(name=name, pass_context=True)(fn)
    return app
