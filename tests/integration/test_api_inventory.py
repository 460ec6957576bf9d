"""The parts inventory over HTTP, on SQLite and PostgreSQL: stock, ledger, reservations, shortages.

Every figure is checked through the API itself; a refusal must leave every figure the API
shows as it was.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest

from core.assets import Asset
from tests.integration.test_api import NOW, Api, assert_problem, build_api, error_locations
from tests.integration.test_api_alerts import get, post

SKU = "BRG-6205"
OIL = "OIL-ISO46"
STORE = "main-store"
VAN = "van-3"
LATER = "2026-11-22T12:05:00Z"

BEARING = {
    "sku": SKU,
    "name": "Deep groove ball bearing 6205",
    "unit": "pcs",
    "category": "bearings",
    "reorder_point": 2,
    "reorder_quantity": 10,
}


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    for api in build_api(database_url):
        api.assets.add(Asset(id="pump-1", name="Feed pump 1", type="pump", site="north"))
        for location in (
            {"code": STORE, "name": "Main store", "site": "north"},
            {"code": VAN, "name": "Service van 3"},
        ):
            assert post(api, "/locations", "planner", location).status_code == 201
        assert post(api, "/parts", "planner", BEARING).status_code == 201
        yield api


def patch(api: Api, path: str, body: Any, role: str = "planner") -> httpx.Response:
    response: httpx.Response = api.client.patch(
        f"/api/v1{path}", json=body, headers=api.as_role(role)
    )
    return response


def new_order(api: Api) -> int:
    order = {"kind": "preventive", "priority": "medium", "asset_id": "pump-1", "title": "Bearings"}
    created = post(api, "/work-orders", "planner", order)
    assert created.status_code == 201, created.text
    order_id: int = created.json()["id"]
    return order_id


def move(
    api: Api, kind: str, quantity: Any, role: str = "planner", sku: str = SKU, **fields: Any
) -> httpx.Response:
    body = {"kind": kind, "location": STORE, "quantity": quantity, **fields}
    return post(api, f"/parts/{sku}/movements", role, body)


def receive(api: Api, quantity: Any, location: str = STORE, sku: str = SKU) -> None:
    response = move(api, "receipt", quantity, "technician", sku=sku, location=location)
    assert response.status_code == 201, response.text


def reserve(
    api: Api, quantity: Any, work_order_id: int, role: str = "technician", **fields: Any
) -> httpx.Response:
    body = {"work_order_id": work_order_id, "sku": SKU, "location": STORE, "quantity": quantity}
    return post(api, "/reservations", role, {**body, **fields})


def figures(api: Api, location: str = STORE, sku: str = SKU) -> tuple[str, str, str]:
    """Return (on_hand, reserved, available) of one part at one location, as the API says."""
    response = get(api, "/stock", sku=sku, location=location)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    if not items:
        return ("0", "0", "0")
    [level] = items
    return level["on_hand"], level["reserved"], level["available"]


def snapshot(api: Api) -> dict[str, Any]:
    """Return everything the API shows of the bearing's stock, to show a refusal changed nothing."""
    paths = [
        f"/parts/{SKU}",
        f"/parts/{SKU}/stock",
        f"/parts/{SKU}/ledger",
        "/reservations",
        "/stock-outs",
        "/reorder-signals",
    ]
    return {path: get(api, path).json() for path in paths}


# --- locations and parts --------------------------------------------------------------


def test_locations_and_parts_are_created_read_and_listed(api: Api) -> None:
    created = post(api, "/locations", "admin", {"code": "bin-7", "name": "Bin 7"})
    assert created.status_code == 201, created.text
    assert created.headers["location"].endswith("/api/v1/locations/bin-7")
    assert get(api, "/locations/bin-7").json() == created.json()
    assert created.json() == {
        "code": "bin-7",
        "name": "Bin 7",
        "site": None,
        "created_at": "2026-11-22T12:00:00Z",
    }
    listed = get(api, "/locations").json()["items"]
    assert [location["code"] for location in listed] == ["bin-7", STORE, VAN]
    assert listed[1]["site"] == "north"

    part = get(api, f"/parts/{SKU}")
    assert part.status_code == 200
    assert part.json() == {
        **BEARING,
        "reorder_point": "2",
        "reorder_quantity": "10",
        "created_at": "2026-11-22T12:00:00Z",
        "updated_at": "2026-11-22T12:00:00Z",
    }
    oil = {"sku": OIL, "name": "Hydraulic oil", "unit": "l", "category": "lubricants"}
    created = post(api, "/parts", "planner", {**oil, "reorder_point": "20.5"})
    assert created.status_code == 201, created.text
    assert created.headers["location"].endswith(f"/api/v1/parts/{OIL}")
    assert (created.json()["reorder_point"], created.json()["reorder_quantity"]) == ("20.5", "0")

    assert_problem(post(api, "/locations", "planner", {"code": STORE, "name": "Again"}), 409)
    assert_problem(post(api, "/parts", "planner", {**BEARING, "name": "Again"}), 409, "conflict")
    assert get(api, f"/parts/{SKU}").json()["name"] == BEARING["name"]


def test_patch_changes_a_parts_name_category_and_policy(api: Api) -> None:
    api.clock.at = NOW + timedelta(minutes=5)
    changed = patch(api, f"/parts/{SKU}", {"name": "Bearing 6205", "reorder_point": 4})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["name"], body["category"], body["reorder_point"], body["reorder_quantity"]) == (
        "Bearing 6205",
        "bearings",
        "4",
        "10",
    )
    assert (body["created_at"], body["updated_at"]) == ("2026-11-22T12:00:00Z", LATER)
    assert get(api, f"/parts/{SKU}").json() == body
    assert patch(api, f"/parts/{SKU}", {}).json() == body  # nothing sent: nothing changes


def test_parts_page_by_sku_and_filter_by_category(api: Api) -> None:
    for sku, category in (("A-1", "seals"), ("C-3", "seals"), ("D-4", "belts"), ("E-5", "seals")):
        part = {"sku": sku, "name": f"Part {sku}", "unit": "pcs", "category": category}
        assert post(api, "/parts", "planner", part).status_code == 201

    def page(**params: Any) -> tuple[list[str], str | None]:
        response = get(api, "/parts", **params)
        assert response.status_code == 200, response.text
        body = response.json()
        return [part["sku"] for part in body["items"]], body["next_cursor"]

    assert page(limit=2) == (["A-1", SKU], SKU)
    assert page(limit=2, cursor=SKU) == (["C-3", "D-4"], "D-4")
    assert page(limit=2, cursor="D-4") == (["E-5"], None)
    assert page(limit=5) == (["A-1", SKU, "C-3", "D-4", "E-5"], None)  # exactly full: no more
    assert page(category="seals", limit=2) == (["A-1", "C-3"], "C-3")
    assert page(category="seals", limit=2, cursor="C-3") == (["E-5"], None)
    assert page(category="gears") == ([], None)


# --- the happy path -------------------------------------------------------------------


def test_receipt_reservation_and_issue_show_in_the_stock_and_the_ledger(api: Api) -> None:
    order_id = new_order(api)
    assert figures(api) == ("0", "0", "0")
    receive(api, 10)
    receive(api, 3, location=VAN)
    assert figures(api) == ("10", "0", "10")

    api.clock.at = NOW + timedelta(minutes=5)
    created = reserve(api, 4, order_id, note="for the bearing change")
    assert created.status_code == 201, created.text
    held = created.json()
    assert created.headers["location"].endswith(f"/api/v1/reservations/{held['id']}")
    assert get(api, f"/reservations/{held['id']}").json() == held
    assert held == {
        "id": held["id"],
        "work_order_id": order_id,
        "sku": SKU,
        "location": STORE,
        "quantity": "4",
        "status": "reserved",
        "expires_at": "2026-12-22T12:05:00Z",  # held for 30 days by default
        "created_at": LATER,
        "created_by": "technician-token",
        "issued_quantity": None,
        "closed_at": None,
        "closed_by": None,
        "note": "for the bearing change",
        "closing_note": None,
    }
    assert figures(api) == ("10", "4", "6")
    stock = get(api, f"/parts/{SKU}/stock").json()
    assert (stock["on_hand"], stock["reserved"], stock["available"]) == ("13", "4", "9")
    assert [(level["location"], level["available"]) for level in stock["locations"]] == [
        (STORE, "6"),
        (VAN, "3"),
    ]
    assert [level["location"] for level in get(api, "/stock", location=VAN).json()["items"]] == [
        VAN
    ]

    # Three of the four were used: the fourth goes back to the shelf.
    api.clock.at = NOW + timedelta(hours=2)
    issued = post(api, f"/reservations/{held['id']}/issue", "technician", {"quantity": 3})
    assert issued.status_code == 200, issued.text
    assert {key: issued.json()[key] for key in ("status", "quantity", "issued_quantity")} == {
        "status": "issued",
        "quantity": "4",
        "issued_quantity": "3",
    }
    assert (issued.json()["closed_at"], issued.json()["closed_by"]) == (
        "2026-11-22T14:00:00Z",
        "technician-token",
    )
    assert figures(api) == ("7", "0", "7")

    ledger = get(api, f"/parts/{SKU}/ledger", location=STORE).json()
    assert ledger["next_cursor"] is None
    receipt, issue = ledger["items"]
    assert (receipt["kind"], receipt["quantity"], receipt["actor"]) == (
        "receipt",
        "10",
        "technician-token",
    )
    assert (issue["kind"], issue["quantity"], issue["work_order_id"], issue["reservation_id"]) == (
        "issue",
        "-3",
        order_id,
        held["id"],
    )
    assert issue["at"] == "2026-11-22T14:00:00Z"
    assert get(api, f"/parts/{SKU}/ledger", work_order_id=order_id).json()["items"] == [issue]
    assert get(api, f"/parts/{SKU}/ledger/{issue['id']}").json() == issue
    assert get(api, "/reservations", work_order_id=order_id, status="issued").json()["items"] == [
        issued.json()
    ]
    assert get(api, "/stock-outs").json()["items"] == []


def test_every_movement_kind_lands_in_the_ledger_with_its_sign(api: Api) -> None:
    order_id = new_order(api)
    moves: list[tuple[str, int, dict[str, Any]]] = [
        ("receipt", 10, {}),
        ("issue", 2, {"work_order_id": order_id}),
        ("return", 1, {"work_order_id": order_id}),
        ("scrap", 1, {"reason": "rusted"}),
        ("adjust", -2, {"reason": "stock count"}),
        ("adjust", 3, {"reason": "found in bin 4"}),
    ]
    recorded = []
    for kind, quantity, fields in moves:
        response = move(api, kind, quantity, **fields)
        assert response.status_code == 201, response.text
        assert response.headers["location"].endswith(f"/ledger/{response.json()['id']}")
        recorded.append(response.json())
    assert [(entry["kind"], entry["quantity"]) for entry in recorded] == [
        ("receipt", "10"),
        ("issue", "-2"),
        ("return", "1"),
        ("scrap", "-1"),
        ("adjust", "-2"),
        ("adjust", "3"),
    ]
    assert recorded[3]["reason"] == "rusted"
    assert get(api, f"/parts/{SKU}/ledger").json()["items"] == recorded
    assert figures(api) == ("9", "0", "9")

    # Litres split to the millilitre; a part counted in pieces does not.
    oil = {"sku": OIL, "name": "Hydraulic oil", "unit": "l", "category": "lubricants"}
    assert post(api, "/parts", "planner", oil).status_code == 201
    receive(api, "20.5", sku=OIL)
    assert move(api, "issue", "0.125", sku=OIL, work_order_id=order_id).status_code == 201
    assert figures(api, sku=OIL) == ("20.375", "0", "20.375")


def test_ledger_pages_oldest_first(api: Api) -> None:
    for quantity in range(1, 6):
        receive(api, quantity)
    receive(api, 9, location=VAN)
    first = get(api, f"/parts/{SKU}/ledger", limit=2).json()
    assert [entry["quantity"] for entry in first["items"]] == ["1", "2"]
    assert first["next_cursor"] == str(first["items"][-1]["id"])
    second = get(api, f"/parts/{SKU}/ledger", limit=2, cursor=first["next_cursor"]).json()
    assert [entry["quantity"] for entry in second["items"]] == ["3", "4"]
    last = get(api, f"/parts/{SKU}/ledger", limit=3, cursor=second["next_cursor"]).json()
    assert ([entry["quantity"] for entry in last["items"]], last["next_cursor"]) == (
        ["5", "9"],
        None,
    )
    at_store = get(api, f"/parts/{SKU}/ledger", location=STORE, limit=4).json()
    assert [entry["quantity"] for entry in at_store["items"]] == ["1", "2", "3", "4"]
    rest = get(api, f"/parts/{SKU}/ledger", location=STORE, cursor=at_store["next_cursor"]).json()
    assert ([entry["quantity"] for entry in rest["items"]], rest["next_cursor"]) == (["5"], None)


# --- roles ----------------------------------------------------------------------------


def test_each_movement_kind_needs_its_role(api: Api) -> None:
    order_id = new_order(api)
    receive(api, 20)
    bodies: dict[str, tuple[int, dict[str, Any]]] = {
        "receipt": (1, {}),
        "issue": (1, {"work_order_id": order_id}),
        "return": (1, {"work_order_id": order_id}),
        "scrap": (1, {"reason": "dropped"}),
        "adjust": (-1, {"reason": "stock count"}),
    }
    allowed = {
        "viewer": set(),
        "technician": {"receipt", "issue", "return"},
        "planner": set(bodies),
        "admin": set(bodies),
    }
    for role, kinds in allowed.items():
        for kind, (quantity, fields) in bodies.items():
            before = snapshot(api)
            response = move(api, kind, quantity, role, **fields)
            if kind in kinds:
                assert response.status_code == 201, (role, kind, response.text)
                assert response.json()["actor"] == f"{role}-token"
                continue
            body = assert_problem(response, 403, "forbidden")
            assert body["required_role"] == ("technician" if role == "viewer" else "planner")
            assert snapshot(api) == before, (role, kind)
    assert_problem(api.client.post(f"/api/v1/parts/{SKU}/movements", json={}), 401)


# --- shortages ------------------------------------------------------------------------


def test_a_shortage_answers_409_with_its_figures_a_stock_out_and_a_reorder_signal(
    api: Api,
) -> None:
    first, second, third = new_order(api), new_order(api), new_order(api)
    receive(api, 7)
    assert reserve(api, 4, first).status_code == 201
    assert get(api, "/reorder-signals").json()["items"] == []  # 3 available: above 2
    assert reserve(api, 1, second).status_code == 201
    [signal] = get(api, "/reorder-signals").json()["items"]  # 2 available: at the point
    assert signal == {
        "sku": SKU,
        "unit": "pcs",
        "available": "2",
        "reorder_point": "2",
        "reorder_quantity": "10",
        "suggested_quantity": "10",
    }

    api.clock.at = NOW + timedelta(minutes=5)
    before = snapshot(api)
    refused = reserve(api, 3, third)
    body = assert_problem(refused, 409, "insufficient_stock")
    assert {key: body[key] for key in ("sku", "location", "work_order_id")} == {
        "sku": SKU,
        "location": STORE,
        "work_order_id": third,
    }
    assert (body["requested"], body["available"], body["shortfall"]) == ("3", "2", "1")
    # Enough to meet the demand and end at the reorder point plus the reorder quantity.
    assert body["reorder"] == {**signal, "available": "-1", "suggested_quantity": "13"}

    after = snapshot(api)
    assert {path: shown for path, shown in after.items() if path != "/stock-outs"} == {
        path: shown for path, shown in before.items() if path != "/stock-outs"
    }
    assert figures(api) == ("7", "5", "2")
    assert get(api, "/reservations", work_order_id=third).json()["items"] == []
    [event] = get(api, "/stock-outs").json()["items"]
    assert event == {
        "id": event["id"],
        "sku": SKU,
        "location": STORE,
        "work_order_id": third,
        "requested": "3",
        "available": "2",
        "shortfall": "1",
        "at": LATER,
    }
    assert get(api, "/stock-outs", since=LATER, until="2026-11-22T12:06:00Z").json()["items"] == [
        event
    ]
    assert get(api, "/stock-outs", since="2026-11-22T12:05:01Z").json()["items"] == []
    assert get(api, "/stock-outs", until=LATER).json()["items"] == []  # until is exclusive
    assert get(api, "/stock-outs", sku=OIL).json()["items"] == []


def test_an_unplanned_issue_short_of_stock_is_a_stock_out(api: Api) -> None:
    order_id = new_order(api)
    receive(api, 2)
    body = assert_problem(
        move(api, "issue", 3, "technician", work_order_id=order_id), 409, "insufficient_stock"
    )
    assert (body["requested"], body["available"], body["shortfall"]) == ("3", "2", "1")
    assert body["reorder"]["suggested_quantity"] == "13"
    [event] = get(api, "/stock-outs").json()["items"]
    assert (event["work_order_id"], event["requested"]) == (order_id, "3")
    assert figures(api) == ("2", "0", "2")

    # A write-off beyond what is free is refused too, but it is no demand: no stock-out.
    assert reserve(api, 1, order_id).status_code == 201
    refused = move(api, "scrap", 2, reason="dropped")
    assert (assert_problem(refused, 409, "insufficient_stock")["work_order_id"]) is None
    assert len(get(api, "/stock-outs").json()["items"]) == 1
    assert figures(api) == ("2", "1", "1")


def test_twenty_clients_racing_for_the_last_five_units_get_exactly_five(api: Api) -> None:
    order_id = new_order(api)
    receive(api, 5)
    clients = 20
    barrier = threading.Barrier(clients)

    def client(_: int) -> int:
        barrier.wait(timeout=30)
        return reserve(api, 1, order_id).status_code

    with ThreadPoolExecutor(clients) as pool:
        codes = list(pool.map(client, range(clients)))
    assert sorted(codes) == [201] * 5 + [409] * 15
    assert figures(api) == ("5", "5", "0")
    assert len(get(api, "/reservations", status="reserved").json()["items"]) == 5
    assert len(get(api, "/stock-outs").json()["items"]) == 15


# --- release and issue ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [("release", "release"), ("release", "issue"), ("issue", "issue"), ("issue", "release")],
)
def test_closing_a_reservation_twice_answers_409_and_changes_nothing(
    api: Api, first: str, second: str
) -> None:
    order_id = new_order(api)
    receive(api, 10)
    reservation_id = reserve(api, 4, order_id).json()["id"]
    closed = post(api, f"/reservations/{reservation_id}/{first}", "technician", {"note": "done"})
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == {"release": "released", "issue": "issued"}[first]
    assert closed.json()["closing_note"] == "done"
    on_hand = "6" if first == "issue" else "10"
    assert figures(api) == (on_hand, "0", on_hand)

    before = snapshot(api)
    again = post(api, f"/reservations/{reservation_id}/{second}", "technician")
    body = assert_problem(again, 409, "invalid_transition")
    assert second in body["detail"]
    assert snapshot(api) == before


def test_reservations_filter_by_work_order_status_and_part(api: Api) -> None:
    first, second = new_order(api), new_order(api)
    oil = {"sku": OIL, "name": "Hydraulic oil", "unit": "l", "category": "lubricants"}
    assert post(api, "/parts", "planner", oil).status_code == 201
    receive(api, 10)
    receive(api, 50, sku=OIL)
    ids = [
        reserve(api, 1, first).json()["id"],
        reserve(api, 2, second).json()["id"],
        reserve(api, "0.5", first, sku=OIL).json()["id"],
    ]
    post(api, f"/reservations/{ids[1]}/release", "planner")

    def listed(**params: Any) -> list[int]:
        response = get(api, "/reservations", **params)
        assert response.status_code == 200, response.text
        return [reservation["id"] for reservation in response.json()["items"]]

    assert listed() == ids
    assert listed(work_order_id=first) == [ids[0], ids[2]]
    assert listed(status="released") == [ids[1]]
    assert listed(status="reserved", sku=OIL) == [ids[2]]
    assert listed(limit=2) == ids[:2]
    assert listed(work_order_id=999) == []


def test_nothing_is_reserved_for_a_finished_work_order(api: Api) -> None:
    order_id = new_order(api)
    receive(api, 10)
    cancelled = post(api, f"/work-orders/{order_id}/cancel", "planner", {"note": "not needed"})
    assert cancelled.status_code == 200, cancelled.text
    before = snapshot(api)
    body = assert_problem(reserve(api, 1, order_id), 409, "conflict")
    assert body["work_order_id"] == order_id
    assert snapshot(api) == before


# --- refusals -------------------------------------------------------------------------


def test_unknown_parts_locations_reservations_and_work_orders_answer_404(api: Api) -> None:
    order_id = new_order(api)
    receive(api, 5)
    before = snapshot(api)
    attempts = [
        get(api, "/parts/NOPE"),
        get(api, "/parts/NOPE/stock"),
        get(api, "/parts/NOPE/ledger"),
        get(api, f"/parts/{SKU}/ledger/999"),
        get(api, "/locations/nowhere"),
        get(api, "/reservations/999"),
        patch(api, "/parts/NOPE", {"name": "x"}),
        move(api, "receipt", 1, sku="NOPE"),
        move(api, "receipt", 1, location="nowhere"),
        move(api, "issue", 1, work_order_id=999),
        reserve(api, 1, order_id, sku="NOPE"),
        reserve(api, 1, order_id, location="nowhere"),
        reserve(api, 1, 999),
        post(api, "/reservations/999/release"),
        post(api, "/reservations/999/issue"),
    ]
    for response in attempts:
        assert_problem(response, 404, "not_found")
    assert snapshot(api) == before
    # The first ledger entry exists, but not as an entry of another part.
    entry_id = get(api, f"/parts/{SKU}/ledger").json()["items"][0]["id"]
    assert post(api, "/parts", "planner", {**BEARING, "sku": "BRG-6306"}).status_code == 201
    assert_problem(get(api, f"/parts/BRG-6306/ledger/{entry_id}"), 404, "not_found")


def test_bad_movements_answer_422_and_change_nothing(api: Api) -> None:
    receive(api, 5)
    before = snapshot(api)
    refusals: list[tuple[str, Any, dict[str, Any], list[str] | None]] = [
        ("receipt", "1.5", {}, None),  # a fraction of a piece
        ("receipt", "1.0005", {}, ["body", "quantity"]),  # finer than a thousandth
        ("receipt", 0, {}, ["body"]),
        ("receipt", -1, {}, ["body"]),
        ("receipt", "NaN", {}, ["body", "quantity"]),
        ("receipt", "Infinity", {}, ["body", "quantity"]),
        ("receipt", "1e20", {}, ["body", "quantity"]),
        ("receipt", "lots", {}, ["body", "quantity"]),
        ("receipt", True, {}, ["body", "quantity"]),
        ("adjust", 0, {"reason": "count"}, ["body"]),
        ("adjust", -1, {}, ["body"]),  # no reason
        ("scrap", 1, {"reason": "   "}, ["body"]),
        ("scrap", 1, {"reason": ""}, ["body", "reason"]),
        ("issue", 1, {}, ["body"]),  # no work order
        ("issue", 1, {"work_order_id": 0}, ["body", "work_order_id"]),
        ("issue", 1, {"work_order_id": 2**63}, ["body", "work_order_id"]),
        ("borrow", 1, {}, ["body", "kind"]),
        ("receipt", 1, {"location": "no such/place"}, ["body", "location"]),
        ("receipt", 1, {"colour": "red"}, ["body", "colour"]),
    ]
    for kind, quantity, fields, location in refusals:
        body = assert_problem(move(api, kind, quantity, **fields), 422, "invalid")
        if location is not None:
            assert location in error_locations(body), (kind, quantity, fields, body)
    assert_problem(move(api, "receipt", 1, sku="bad sku"), 422)
    assert snapshot(api) == before


def test_bad_reservations_and_issues_answer_422_and_change_nothing(api: Api) -> None:
    order_id = new_order(api)
    receive(api, 5)
    reservation_id = reserve(api, 2, order_id).json()["id"]
    before = snapshot(api)
    refusals: list[tuple[Any, dict[str, Any], list[str] | None]] = [
        (0, {}, ["body", "quantity"]),
        (-2, {}, ["body", "quantity"]),
        ("1.5", {}, None),  # a fraction of a piece
        ("0.0001", {}, ["body", "quantity"]),
        ("two", {}, ["body", "quantity"]),
        (1, {"expires_at": "2026-12-01T00:00:00"}, ["body", "expires_at"]),  # naive
        (1, {"expires_at": "2026-11-22T11:00:00Z"}, None),  # in the past
        (1, {"expires_at": "9999-12-31T23:00:00-05:00"}, ["body", "expires_at"]),  # past 9999
        (1, {"work_order_id": 0}, ["body", "work_order_id"]),
        (1, {"work_order_id": 2**63}, ["body", "work_order_id"]),
        (1, {"note": "x" * 2001}, ["body", "note"]),
        (1, {"note": "nul \x00 inside"}, ["body", "note"]),
        (1, {"status": "issued"}, ["body", "status"]),
    ]
    for quantity, fields, location in refusals:
        request = {"work_order_id": order_id, "sku": SKU, "location": STORE, "quantity": quantity}
        body = assert_problem(post(api, "/reservations", body={**request, **fields}), 422)
        if location is not None:
            assert location in error_locations(body), (quantity, fields, body)
    for quantity in (3, 0, "1.5", "-1", "x"):
        issued = post(api, f"/reservations/{reservation_id}/issue", body={"quantity": quantity})
        assert_problem(issued, 422, "invalid")
    assert_problem(post(api, f"/reservations/{reservation_id}/release", body={"x": 1}), 422)
    assert_problem(post(api, "/reservations/0/release"), 422)
    assert snapshot(api) == before


def test_bad_parts_and_locations_answer_422(api: Api) -> None:
    before = snapshot(api)
    part_refusals: list[tuple[dict[str, Any], list[str]]] = [
        ({"unit": "furlong"}, ["body", "unit"]),
        ({"reorder_point": "1.5"}, ["body"]),  # a fraction of a piece
        ({"reorder_quantity": -1}, ["body", "reorder_quantity"]),
        ({"sku": "bad sku"}, ["body", "sku"]),
        ({"name": ""}, ["body", "name"]),
        ({"name": "nul \x00 inside"}, ["body", "name"]),
        ({"colour": "red"}, ["body", "colour"]),
    ]
    for fields, location in part_refusals:
        response = post(api, "/parts", "planner", {**BEARING, "sku": "NEW-1", **fields})
        body = assert_problem(response, 422, "invalid")
        assert location in error_locations(body), (fields, body)
    assert_problem(get(api, "/parts/NEW-1"), 404)

    for changes, location in [
        ({"unit": "l"}, ["body", "unit"]),
        ({"sku": "OTHER"}, ["body", "sku"]),
        ({"name": None}, ["body", "name"]),
        ({"reorder_point": None}, ["body", "reorder_point"]),
        ({"reorder_point": -1}, ["body", "reorder_point"]),
        ({"category": "nul \x00"}, ["body", "category"]),
    ]:
        body = assert_problem(patch(api, f"/parts/{SKU}", changes), 422, "invalid")
        assert location in error_locations(body), (changes, body)
    assert_problem(patch(api, f"/parts/{SKU}", {"reorder_quantity": "0.5"}), 422, "invalid")

    for location_body, where in [
        ({"code": "no such/place", "name": "x"}, ["body", "code"]),
        ({"code": "bin-1", "name": "nul \x00"}, ["body", "name"]),
        ({"code": "bin-1"}, ["body", "name"]),
    ]:
        body = assert_problem(post(api, "/locations", "planner", location_body), 422, "invalid")
        assert where in error_locations(body), (location_body, body)
    assert snapshot(api) == before


def test_bad_queries_answer_422(api: Api) -> None:
    refusals: list[tuple[str, dict[str, Any], list[str] | None]] = [
        ("/parts", {"limit": 0}, ["query", "limit"]),
        ("/parts", {"cursor": "bad cursor"}, ["query", "cursor"]),
        ("/parts", {"category": "nul \x00"}, ["query", "category"]),
        (f"/parts/{SKU}/ledger", {"cursor": 0}, ["query", "cursor"]),
        (f"/parts/{SKU}/ledger", {"work_order_id": 2**63}, ["query", "work_order_id"]),
        ("/stock", {"location": "no such/place"}, ["query", "location"]),
        ("/reservations", {"status": "lost"}, ["query", "status"]),
        ("/reservations", {"limit": 501}, ["query", "limit"]),
        ("/stock-outs", {"since": "2026-11-22T12:00:00"}, ["query", "since"]),
        ("/stock-outs", {"until": "0001-01-01T00:30:00+01:00"}, ["query", "until"]),
        ("/stock-outs", {"since": LATER, "until": LATER}, None),
        ("/stock-outs", {"limit": 1001}, ["query", "limit"]),
    ]
    for path, params, location in refusals:
        body = assert_problem(get(api, path, **params), 422, "invalid")
        if location is not None:
            assert location in error_locations(body), (path, params, body)
