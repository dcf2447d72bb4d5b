"""``/intended``: intended divergences of every campaign, per rule and campaign.

Campaigns count intended divergences per rule instead of storing them
(each a kernel change some patch meant); this is where they are read.
"""

from __future__ import annotations

from fastapi import APIRouter

from service.api import views
from service.api.deps import StoreDep
from service.api.routers.common import READ
from service.api.schemas import IntendedList

router = APIRouter(prefix="/intended", tags=["intended"])


@router.get("", response_model=IntendedList, responses=READ,
            summary="Intended divergences per rule and campaign: counts, patches, samples")
def all_intended(store: StoreDep) -> IntendedList:
    return views.intended(store)
