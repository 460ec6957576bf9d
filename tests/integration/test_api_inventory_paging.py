"""Keyset paging of the inventory lists over HTTP (SQLite and PostgreSQL): reservations,
stock-outs and stock levels are walked page by page, with their filters, to the end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.assets import Asset
from tests.integration.test_api import Api, assert_problem, build_api, error_locations
from tests.integration.test_api_alerts import get, post
from tests.integration.test_api_inventory import (
    BEARING,
    SKU,
    STORE,
    VAN,
    new_order,
    receive,
    reserve,
)


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    for api in build_api(database_url):
        api.assets.add(Asset(id="pump-1", name="Feed pump 1", type="pump", site="north"))
        for code in (STORE, VAN, "bin-1"):
            assert (
                post(api, "/locations", "planner", {"code": code, "name": code}).status_code == 201
            )
        for sku in (SKU, "A-1", "Z-9"):
            assert post(api, "/parts", "planner", {**BEARING, "sku": sku}).status_code == 201
        yield api


def walk(api: Api, path: str, key: str, limit: int, **params: Any) -> list[list[Any]]:
    """Return the pages of a list, following `next_cursor` until there is none."""
    pages: list[list[Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": limit}
        if cursor is not None:
            query["cursor"] = cursor
        response = get(api, path, **query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item[key] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "the walk does not end"


def test_reservations_page_oldest_first_with_their_filters(api: Api) -> None:
    first, second = new_order(api), new_order(api)
    receive(api, 20)
    ids = [reserve(api, 1, first if n % 2 else second).json()["id"] for n in range(7)]
    post(api, f"/reservations/{ids[0]}/release")

    assert walk(api, "/reservations", "id", 3) == [ids[0:3], ids[3:6], ids[6:]]
    assert walk(api, "/reservations", "id", 7) == [ids]  # exactly full: no further page
    assert walk(api, "/reservations", "id", 2, work_order_id=first) == [
        [ids[1], ids[3]],
        [ids[5]],
    ]
    assert walk(api, "/reservations", "id", 2, status="reserved", work_order_id=second) == [
        [ids[2], ids[4]],
        [ids[6]],
    ]
    assert walk(api, "/reservations", "id", 5, status="expired") == [[]]


def test_stock_outs_page_oldest_first_within_their_window(api: Api) -> None:
    order_id = new_order(api)
    receive(api, 1)
    for quantity in range(2, 7):
        assert reserve(api, quantity, order_id).status_code == 409
    requested = walk(api, "/stock-outs", "requested", 2)
    assert requested == [["2", "3"], ["4", "5"], ["6"]]
    assert walk(api, "/stock-outs", "requested", 2, sku="A-1") == [[]]
    assert walk(api, "/stock-outs", "requested", 4, since="2026-11-22T12:00:00Z") == [
        ["2", "3", "4", "5"],
        ["6"],
    ]
    default = get(api, "/stock-outs").json()  # 100 a page unless asked
    assert (len(default["items"]), default["next_cursor"]) == (5, None)


def test_stock_levels_page_by_sku_then_location(api: Api) -> None:
    for sku in ("Z-9", SKU, "A-1"):
        for location in (VAN, STORE, "bin-1"):
            receive(api, 1, location=location, sku=sku)
    # These keys sort the same in every collation: letters, then the rest of the key.
    skus, locations = ["A-1", SKU, "Z-9"], ["bin-1", STORE, VAN]
    keys = [f"{sku}/{location}" for sku in skus for location in locations]

    seen: list[str] = []
    cursors: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor is not None:
            params["cursor"] = cursor
        response = get(api, "/stock", **params)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [f"{level['sku']}/{level['location']}" for level in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        cursors.append(cursor)
    assert seen == keys
    assert cursors == [keys[3], keys[7]]  # a cursor is the key of its page's last row
    assert walk(api, "/stock", "location", 2, sku=SKU) == [locations[:2], locations[2:]]
    assert walk(api, "/stock", "sku", 2, location=VAN) == [skus[:2], skus[2:]]
    assert walk(api, "/stock", "sku", 3, location=STORE) == [skus]


def test_bad_paging_parameters_answer_422(api: Api) -> None:
    refusals: list[tuple[str, dict[str, Any]]] = [
        ("/reservations", {"cursor": 0}),
        ("/reservations", {"cursor": 2**63}),
        ("/reservations", {"cursor": "abc"}),
        ("/stock-outs", {"cursor": -1}),
        ("/stock-outs", {"limit": 0}),
        ("/stock", {"cursor": "no-slash"}),
        ("/stock", {"cursor": f"{SKU}/{STORE}/extra"}),
        ("/stock", {"cursor": f"/{STORE}"}),
        ("/stock", {"cursor": "bad sku/x"}),
        ("/stock", {"limit": 501}),
    ]
    for path, params in refusals:
        body = assert_problem(get(api, path, **params), 422, "invalid")
        [name] = params
        assert ["query", name] in error_locations(body), (path, params, body)
