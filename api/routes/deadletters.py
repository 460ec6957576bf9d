"""Routes of refused input: `/api/v1/deadletters`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.dependencies import Services, Viewer
from api.pagination import IdCursor, keyset_page
from api.schemas import DeadLetterListRead, DeadLetterRead

router = APIRouter(prefix="/deadletters", tags=["dead letters"])

MAX_PAGE = 500


@router.get("")
def list_dead_letters(
    services: Services,
    _caller: Viewer,
    asset_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: IdCursor = None,
) -> DeadLetterListRead:
    """List dead letters newest first, optionally of one asset, a page at a time."""
    page = services.deadletters.list(asset_id=asset_id, before_id=cursor, limit=limit + 1)
    items, next_cursor = keyset_page(page, limit, lambda letter: str(letter.id))
    return DeadLetterListRead(
        items=[DeadLetterRead.from_letter(letter) for letter in items], next_cursor=next_cursor
    )
