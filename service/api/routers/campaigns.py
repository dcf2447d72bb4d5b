"""``/campaigns``: fuzzing campaigns, their stats over time and their intended divergences."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from service.api import views
from service.api.deps import StoreDep
from service.api.routers.common import READ, errors
from service.api.schemas import MAX_ID, CampaignDetail, CampaignOut, CampaignPage, IntendedList
from service.models import CampaignStatus
from service.store import MAX_LIMIT

router = APIRouter(prefix="/campaigns", tags=["campaigns"])

CampaignId = Annotated[int, Path(ge=1, le=MAX_ID, description="campaign id")]


@router.get("", response_model=CampaignPage, responses=READ, summary="List campaigns, newest first")
def list_campaigns(
    store: StoreDep,
    status: Annotated[CampaignStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> CampaignPage:
    items, total = store.list_campaigns(status=status, limit=limit, offset=offset)
    return CampaignPage(items=[CampaignOut.model_validate(c) for c in items], total=total,
                        limit=limit, offset=offset)


@router.get("/{campaign_id}", response_model=CampaignDetail, responses=READ | errors(404),
            summary="One campaign with its stats snapshots over time")
def get_campaign(store: StoreDep, campaign_id: CampaignId) -> CampaignDetail:
    campaign = store.get_campaign(campaign_id)
    return CampaignDetail(**CampaignOut.model_validate(campaign).model_dump(),
                          stats=store.stats(campaign_id))


@router.get("/{campaign_id}/intended", response_model=IntendedList,
            responses=READ | errors(404),
            summary="A campaign's intended divergences per rule: counts, patches, samples")
def campaign_intended(store: StoreDep, campaign_id: CampaignId) -> IntendedList:
    return views.intended(store, campaign_id)
