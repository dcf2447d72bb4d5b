"""Starting a fleet campaign: the campaign, its shares, its seeds and its first jobs.

After :func:`create_fleet_campaign` the campaign waits in the queue for
workers: ``foliodiff worker --db URL --campaign ID`` on any machine.
"""

from __future__ import annotations

import procrastinate

from engine.kernels import model_digest
from service.campaign import CampaignConfig, create
from service.fleet.queue import SEEDS, ensure_schema
from service.fleet.tasks import defer_share, queue_app
from service.models import CampaignStatus
from service.store import Store


def create_fleet_campaign(db_url: str, config: CampaignConfig) -> int:
    """Record fleet campaign @config (``workers`` shares) in @db_url's store,
    running, with its seeds in its shared corpus and each share's first
    slice queued. Return: its id."""
    config = config.model_copy(update={"fleet": True, "model": model_digest(), "corpus": None})
    ensure_schema(db_url)
    with Store.open(db_url, create=False) as store:
        campaign_id = create(store, config)
        store.create_shares(campaign_id, config.workers)
        seeds = config.seed_inputs()
        if seeds:
            store.push_corpus(campaign_id, [(s, []) for s in seeds], SEEDS)
        store.set_campaign_status(campaign_id, CampaignStatus.RUNNING)
    app: procrastinate.App = queue_app(db_url)
    with app.open():
        for share in range(config.workers):
            defer_share(app, campaign_id, share)
    return campaign_id
