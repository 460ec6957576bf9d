"""Keyset pagination shared by the collection routes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

from fastapi import Query

T = TypeVar("T")


def keyset_page(
    rows: Sequence[T], limit: int, key: Callable[[T], str]
) -> tuple[list[T], str | None]:
    """Split `limit + 1` fetched rows into a page and the cursor of the next one, if any.

    Fetching one extra row tells whether another page exists without a COUNT.
    """
    items = list(rows[:limit])
    return items, (key(items[-1]) if len(rows) > limit else None)


# The largest id a 64-bit key holds: a bigger id or cursor is refused (422), not sent to SQL.
MAX_ID = 2**63 - 1

# The `cursor` query parameter of collections paged backwards by a 64-bit id.
IdCursor = Annotated[
    int | None, Query(ge=1, le=MAX_ID, description="`next_cursor` of the previous page")
]
