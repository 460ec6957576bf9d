"""Routes of the asset registry: `/api/v1/assets`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AwareDatetime

from api.dependencies import Planner, Services, Viewer
from api.pagination import keyset_page
from api.problems import problem_responses
from api.schemas import (
    AssetCreate,
    AssetListRead,
    AssetRead,
    AssetUpdate,
    HistoryEntryRead,
    HistoryListRead,
)
from core.assets import ASSET_ID_PATTERN
from core.errors import ValidationError
from core.history import HistoryCursor, cursor_of

router = APIRouter(prefix="/assets", tags=["assets"])

MAX_PAGE = 500

AssetIdPath = Annotated[
    str, Path(pattern=ASSET_ID_PATTERN, description="The asset's id, as in its MQTT topic")
]


@router.post("", status_code=201, responses=problem_responses(409))
def create_asset(
    body: AssetCreate, services: Services, _caller: Planner, request: Request, response: Response
) -> AssetRead:
    """Register a new asset; answer 409 if the id is taken."""
    asset = services.assets.add(body.to_asset())
    response.headers["Location"] = str(request.url_for("get_asset", asset_id=asset.id))
    return AssetRead.from_asset(asset)


@router.get("")
def list_assets(
    services: Services,
    _caller: Viewer,
    site: Annotated[str | None, Query(max_length=100)] = None,
    asset_type: Annotated[str | None, Query(alias="type", max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[
        str | None, Query(max_length=128, description="`next_cursor` of the previous page")
    ] = None,
) -> AssetListRead:
    """List assets ordered by id, optionally of one site and type, a page at a time."""
    page = services.assets.list(site=site, type=asset_type, after_id=cursor, limit=limit + 1)
    items, next_cursor = keyset_page(page, limit, lambda asset: asset.id)
    return AssetListRead(items=[AssetRead.from_asset(a) for a in items], next_cursor=next_cursor)


@router.get("/{asset_id}", responses=problem_responses(404))
def get_asset(asset_id: AssetIdPath, services: Services, _caller: Viewer) -> AssetRead:
    """Return one asset."""
    return AssetRead.from_asset(services.assets.get(asset_id))


@router.get("/{asset_id}/history", responses=problem_responses(404))
def asset_history(
    *,
    asset_id: AssetIdPath,
    services: Services,
    _caller: Viewer,
    start: Annotated[AwareDatetime | None, Query(description="Inclusive")] = None,
    end: Annotated[AwareDatetime | None, Query(description="Exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[
        str | None, Query(max_length=128, description="`next_cursor` of the previous page")
    ] = None,
) -> HistoryListRead:
    """Return the asset's work orders, inspections, alerts and part issues, oldest first.

    Every work-order transition is an entry (preventive orders show as inspections), every
    alert is one at the time it fired, and every ledger `issue` to one of the asset's work
    orders is a `part_issue` (at the same instant: alerts, then orders, then parts).
    """
    if start is not None and end is not None and start >= end:
        raise ValidationError("start must be before end", start=start.isoformat())
    services.assets.get(asset_id)  # 404 for an unknown asset, not an empty history
    after = HistoryCursor.decode(cursor) if cursor is not None else None
    page = services.history.history(
        asset_id, start_at=start, end_at=end, after=after, limit=limit + 1
    )
    items, next_cursor = keyset_page(page, limit, lambda entry: cursor_of(entry).encode())
    return HistoryListRead(
        items=[HistoryEntryRead.model_validate(entry.model_dump()) for entry in items],
        next_cursor=next_cursor,
    )


@router.patch("/{asset_id}", responses=problem_responses(404))
def update_asset(
    asset_id: AssetIdPath, body: AssetUpdate, services: Services, _caller: Planner
) -> AssetRead:
    """Change some fields of an asset; its id never changes."""
    changes = body.changes()
    asset = services.assets.update(asset_id, changes) if changes else services.assets.get(asset_id)
    return AssetRead.from_asset(asset)
