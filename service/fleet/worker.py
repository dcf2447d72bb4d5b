"""A fleet worker: one process on any machine that runs the fleet's jobs.

``foliodiff worker --db URL [--campaign ID]`` (:func:`run_worker`) joins the
job queue in the store's PostgreSQL database and runs one job at a time:
a slice of a campaign's share, or the minimization of a finding
(:mod:`service.fleet.tasks`).  Beside it, on the event loop:

- procrastinate's heartbeat (every :data:`HEARTBEAT` seconds);
- the recovery loop (every :data:`RECOVER_EVERY` seconds): the jobs of
  workers silent for :data:`STALLED_AFTER` seconds (killed, or cut off) go
  back to the queue, and a share with time left but no job queued or
  running (its worker died between two slices) gets one.  Every worker
  does this; a job is put back once (procrastinate's row lock) and a share
  has one waiting job at most (its queueing lock).

With ``--campaign`` the worker takes only that campaign's jobs and stops
once the campaign is finished; without, it takes every campaign's, until
stopped.  A worker that cannot run a campaign's jobs (another model than the
campaign's) is refused before it joins when given the campaign, and
otherwise at its first job of it: the job goes back to the queue for the
others, and the worker stops, naming both models.  SIGINT or SIGTERM ends
the running slice at its next program, storing what it did.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

import procrastinate

from service.campaign import CampaignConfig
from service.errors import FleetError
from service.fleet.queue import (
    FUZZ_SHARE,
    HEARTBEAT,
    STALLED_AFTER,
    campaign_queue,
    ensure_schema,
    share_lock,
)
from service.fleet.share import check_model, share_done
from service.fleet.tasks import defer_share, queue_app
from service.models import CampaignStatus
from service.store import Store

log = logging.getLogger("foliodiff.fleet")

#: Seconds between two passes of a worker's recovery loop.
RECOVER_EVERY = 3.0


def worker_name() -> str:
    """This process, as the fleet names its workers: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _fleet_campaigns(store: Store, campaign_id: int | None) -> list[tuple[int, CampaignConfig]]:
    """The running fleet campaigns this worker serves."""
    if campaign_id is not None:
        rows = [store.get_campaign(campaign_id)]
    else:
        rows, _ = store.list_campaigns(status=CampaignStatus.RUNNING, limit=1000)
    out = []
    for row in rows:
        config = CampaignConfig.stored(row.config)
        if config.fleet and row.status is CampaignStatus.RUNNING:
            out.append((row.id, config))
    return out


def _shares_left(store: Store, campaign_id: int | None) -> list[tuple[int, int]]:
    """(campaign, share) of every share with time left, of the campaigns served."""
    return [(cid, s.share) for cid, config in _fleet_campaigns(store, campaign_id)
            for s in store.shares(cid) if not share_done(config, s.elapsed)]


async def _recover(app: procrastinate.App, store: Store, campaign_id: int | None) -> bool:
    """One pass of the recovery loop. Return: whether the campaign served is over."""
    queue = None if campaign_id is None else campaign_queue(campaign_id)
    for job in await app.job_manager.get_stalled_jobs(queue=queue,
                                                      seconds_since_heartbeat=STALLED_AFTER):
        try:
            await app.job_manager.retry_job(job)
        except procrastinate.exceptions.ConnectorException:
            continue                         # another worker put it back first
        log.warning("took over job %s (%s %s) from a worker silent for %.0f s",
                    job.id, job.task_name, job.task_kwargs, STALLED_AFTER)
    left = await asyncio.to_thread(_shares_left, store, campaign_id)
    for cid, share in left:
        jobs = await app.job_manager.list_jobs_async(queue=campaign_queue(cid), task=FUZZ_SHARE,
                                                     lock=share_lock(cid, share))
        if not any(j.status in ("todo", "doing") for j in jobs):
            if await asyncio.to_thread(defer_share, app, cid, share):
                log.warning("campaign %s share %s had no job: queued its next slice", cid, share)
    if campaign_id is None:
        return False
    row = await asyncio.to_thread(store.get_campaign, campaign_id)
    return row.status is not CampaignStatus.RUNNING


def run_worker(db_url: str, campaign_id: int | None = None, *, name: str | None = None,
               on_stored: Callable[[int, Any], None] = lambda campaign, found: None,
               on_minimized: Callable[[int, dict[str, Any]], None] = lambda c, done: None
               ) -> CampaignStatus | None:
    """Run fleet jobs from @db_url's queue until stopped, or until campaign
    @campaign_id (when given) is no longer running.

    @on_stored, @on_minimized: told of each finding this worker stored
    first, and of each minimization it did (the CLI prints them).
    Return: campaign @campaign_id's status when the worker stopped (None
    without a campaign).
    """
    ensure_schema(db_url)
    stop = threading.Event()
    refused: list[str] = []
    holder = name or worker_name()

    async def main() -> None:
        app = queue_app(db_url)
        with Store.open(db_url, create=False) as store:
            if campaign_id is not None:
                # An unknown id, or another model, is refused before joining.
                config = CampaignConfig.stored(store.get_campaign(campaign_id).config)
                if not config.fleet:
                    raise FleetError(f"campaign {campaign_id} is not a fleet campaign "
                                     f"(run it with foliodiff fuzz --resume {campaign_id})")
                check_model(config)
            async with app.open_async():
                # Without a campaign, every queue (procrastinate's default).
                queues: dict[str, Any] = (
                    {} if campaign_id is None else {"queues": [campaign_queue(campaign_id)]})
                work = asyncio.create_task(app.run_worker_async(
                    **queues, concurrency=1, wait=True, install_signal_handlers=False,
                    update_heartbeat_interval=HEARTBEAT, stalled_worker_timeout=STALLED_AFTER,
                    additional_context={"db_url": db_url, "holder": holder, "stop": stop,
                                        "refused": refused, "on_stored": on_stored,
                                        "on_minimized": on_minimized}))
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                try:
                    while not stop.is_set() and not work.done():
                        if await _recover(app, store, campaign_id):
                            break
                        await asyncio.sleep(RECOVER_EVERY)
                finally:
                    stop.set()
                    work.cancel()            # graceful: the running slice ends and syncs
                    try:
                        await work
                    except asyncio.CancelledError:
                        pass

    asyncio.run(main())
    if refused:
        raise FleetError(f"worker {holder} stopped: {refused[0]}")
    if campaign_id is None:
        return None
    with Store.open(db_url, create=False) as store:
        return store.get_campaign(campaign_id).status
