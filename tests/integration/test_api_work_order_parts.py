"""Work orders and their parts over HTTP, on SQLite and PostgreSQL.

A short reservation puts the order on hold; a cancel releases what the order holds; a
close issues what the completion says was used and releases the rest; the asset history
shows the parts issued. Every figure is read back through the API.
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
from tests.integration.test_api import NOW, Api, assert_problem, build_api
from tests.integration.test_api_alerts import get, post
from tests.integration.test_api_inventory import (
    BEARING,
    OIL,
    SKU,
    STORE,
    VAN,
    figures,
    receive,
    reserve,
)
from tests.integration.test_api_inventory import snapshot as stock_snapshot

OIL_PART = {"sku": OIL, "name": "Hydraulic oil", "unit": "l", "category": "lubricants"}
LATER = NOW + timedelta(minutes=5)


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    for api in build_api(database_url):
        api.assets.add(Asset(id="pump-1", name="Feed pump 1", type="pump", site="north"))
        api.assets.add(Asset(id="pump-2", name="Feed pump 2", type="pump", site="north"))
        for location in (
            {"code": STORE, "name": "Main store", "site": "north"},
            {"code": VAN, "name": "Service van 3"},
        ):
            assert post(api, "/locations", "planner", location).status_code == 201
        assert post(api, "/parts", "planner", BEARING).status_code == 201
        assert post(api, "/parts", "planner", OIL_PART).status_code == 201
        yield api


def act(api: Api, order_id: int, action: str, body: Any = None, role: str = "planner") -> Any:
    return post(api, f"/work-orders/{order_id}/{action}", role, body)


def order_in(api: Api, status: str, asset_id: str = "pump-1") -> int:
    """Open a preventive order and drive it to `status`."""
    body = {"kind": "preventive", "priority": "medium", "asset_id": asset_id, "title": "Bearings"}
    created = post(api, "/work-orders", "planner", body)
    assert created.status_code == 201, created.text
    order_id: int = created.json()["id"]
    paths = {
        "requested": [],
        "accepted": ["accept"],
        "scheduled": ["accept", "schedule"],
        "in_progress": ["accept", "start"],
        "on_hold": ["accept", "start", "hold"],
        "resolved": ["accept", "start", "resolve"],
        "reopened": ["accept", "start", "resolve", "reopen"],
    }
    for action in paths[status]:
        moved = act(api, order_id, action, {"note": f"{action} for the test"})
        assert moved.status_code == 200, moved.text
    return order_id


def status_of(api: Api, order_id: int) -> str:
    status: str = get(api, f"/work-orders/{order_id}").json()["status"]
    return status


def events_of(api: Api, order_id: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = get(api, f"/work-orders/{order_id}/events").json()["items"]
    return events


def reservations_of(api: Api, order_id: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = get(api, "/reservations", work_order_id=order_id).json()["items"]
    return found


def completion(*parts_used: tuple[str, Any]) -> dict[str, Any]:
    return {
        "findings": "Bearing worn; replaced",
        "failure_code": "BRG-WEAR",
        "labour_minutes": 60,
        "parts_used": [{"sku": sku, "quantity": quantity} for sku, quantity in parts_used],
        "downtime_minutes": 90,
    }


def everything(api: Api, order_id: int) -> dict[str, Any]:
    """Return what the API shows of an order and the stock, to show a refusal changed nothing."""
    return {
        **stock_snapshot(api),
        "order": get(api, f"/work-orders/{order_id}").json(),
        "events": events_of(api, order_id),
        "oil": get(api, f"/parts/{OIL}/stock").json(),
        "oil_ledger": get(api, f"/parts/{OIL}/ledger").json(),
    }


# --- a shortage puts the order on hold ------------------------------------------------


@pytest.mark.parametrize("status", ["accepted", "scheduled", "in_progress"])
def test_a_short_reservation_puts_the_order_on_hold(api: Api, status: str) -> None:
    order_id = order_in(api, status)
    receive(api, 2)
    api.clock.at = LATER
    before = len(events_of(api, order_id))

    refused = reserve(api, 5, order_id)
    body = assert_problem(refused, 409, "insufficient_stock")
    assert (body["requested"], body["available"], body["shortfall"]) == ("5", "2", "3")
    assert (body["work_order_held"], body["work_order_status"]) == (True, "on_hold")
    assert body["reorder"]["suggested_quantity"] == "15"  # 5 wanted, back to 2 + 10

    order = get(api, f"/work-orders/{order_id}").json()
    assert (order["status"], order["held_from"]) == ("on_hold", status)
    events = events_of(api, order_id)
    assert len(events) == before + 1
    hold = events[-1]
    assert (hold["from_status"], hold["to_status"], hold["actor"]) == (
        status,
        "on_hold",
        "technician-token",
    )
    assert hold["at"] == "2026-11-22T12:05:00Z"
    assert hold["note"] == (
        f"waiting for parts: {SKU} at {STORE} is short (requested 5, available 2, shortfall 3)"
    )
    # The refusal itself held nothing, and was recorded as a stock-out.
    assert figures(api) == ("2", "0", "2")
    assert reservations_of(api, order_id) == []
    [event] = get(api, "/stock-outs").json()["items"]
    assert (event["work_order_id"], event["requested"], event["available"]) == (order_id, "5", "2")
    # 2 available is the reorder point: the part is signalled for reordering.
    [signal] = get(api, "/reorder-signals").json()["items"]
    assert (signal["sku"], signal["suggested_quantity"]) == (SKU, "10")


@pytest.mark.parametrize("status", ["requested", "on_hold", "reopened"])
def test_a_shortage_on_an_order_that_cannot_be_held_says_so_and_moves_nothing(
    api: Api, status: str
) -> None:
    order_id = order_in(api, status)
    receive(api, 1)
    before = events_of(api, order_id)

    body = assert_problem(reserve(api, 3, order_id), 409, "insufficient_stock")
    assert (body["work_order_held"], body["work_order_status"]) == (False, status)
    assert status_of(api, order_id) == status
    assert events_of(api, order_id) == before
    assert len(get(api, "/stock-outs").json()["items"]) == 1  # still a stock-out


def test_an_unplanned_issue_short_of_stock_does_not_hold_the_order(api: Api) -> None:
    order_id = order_in(api, "in_progress")
    receive(api, 1)
    body = {"kind": "issue", "location": STORE, "quantity": 2, "work_order_id": order_id}
    refused = assert_problem(post(api, f"/parts/{SKU}/movements", body=body), 409)
    assert "work_order_held" not in refused
    assert status_of(api, order_id) == "in_progress"


def test_retrying_after_a_shortage_reserves_again_and_resume_reserves_nothing(api: Api) -> None:
    order_id = order_in(api, "scheduled")
    receive(api, 1)
    assert reserve(api, 3, order_id).json()["work_order_held"] is True

    # Still short while on hold: refused again, the order simply stays on hold.
    again = assert_problem(reserve(api, 3, order_id), 409, "insufficient_stock")
    assert (again["work_order_held"], again["work_order_status"]) == (False, "on_hold")

    # The parts come in: the same request now succeeds, and the order stays on hold...
    receive(api, 5)
    retried = reserve(api, 3, order_id)
    assert retried.status_code == 201, retried.text
    assert status_of(api, order_id) == "on_hold"
    # ... until somebody resumes it, which goes back where it was and reserves nothing more.
    resumed = act(api, order_id, "resume", role="technician")
    assert resumed.status_code == 200, resumed.text
    assert (resumed.json()["status"], resumed.json()["held_from"]) == ("scheduled", None)
    assert [r["id"] for r in reservations_of(api, order_id)] == [retried.json()["id"]]
    assert figures(api) == ("6", "3", "3")
    assert len(get(api, "/stock-outs").json()["items"]) == 2


def test_racing_short_reservations_hold_the_order_exactly_once(api: Api) -> None:
    order_id = order_in(api, "in_progress")
    receive(api, 5)
    clients = 10
    barrier = threading.Barrier(clients)

    def client(_: int) -> httpx.Response:
        barrier.wait(timeout=30)
        return reserve(api, 1, order_id)

    with ThreadPoolExecutor(clients) as pool:
        responses = list(pool.map(client, range(clients)))
    assert sorted(r.status_code for r in responses) == [201] * 5 + [409] * 5
    held = [r.json()["work_order_held"] for r in responses if r.status_code == 409]
    assert sorted(held) == [False] * 4 + [True]
    assert all(
        r.json()["work_order_status"] == "on_hold" for r in responses if r.status_code == 409
    )
    holds = [e for e in events_of(api, order_id) if e["to_status"] == "on_hold"]
    assert len(holds) == 1
    assert figures(api) == ("5", "5", "0")


def test_nothing_is_reserved_for_a_closed_cancelled_or_unknown_order(api: Api) -> None:
    receive(api, 10)
    closed = order_in(api, "resolved")
    assert act(api, closed, "close", {"completion": completion()}).status_code == 200
    cancelled = order_in(api, "accepted")
    assert act(api, cancelled, "cancel", {"note": "duplicate"}).status_code == 200
    before = stock_snapshot(api)
    for order_id, status in ((closed, "closed"), (cancelled, "cancelled")):
        body = assert_problem(reserve(api, 1, order_id), 409, "conflict")
        assert (body["work_order_id"], body["work_order_status"]) == (order_id, status)
        assert "work_order_held" not in body
    assert_problem(reserve(api, 1, 987_654), 404, "not_found")
    assert stock_snapshot(api) == before


# --- cancel releases ------------------------------------------------------------------


def test_cancelling_releases_every_reservation_the_order_holds(api: Api) -> None:
    order_id, other = order_in(api, "scheduled"), order_in(api, "scheduled")
    receive(api, 10)
    receive(api, 4, location=VAN)
    receive(api, 20, sku=OIL)
    at_store = reserve(api, 3, order_id).json()
    in_van = reserve(api, 2, order_id, location=VAN).json()
    oil = reserve(api, "2.5", order_id, sku=OIL).json()
    used = reserve(api, 1, order_id).json()
    assert post(api, f"/reservations/{used['id']}/issue").status_code == 200
    theirs = reserve(api, 4, other).json()
    assert figures(api) == ("9", "7", "2")

    api.clock.at = LATER
    cancelled = act(api, order_id, "cancel", {"note": "asset replaced"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"

    after = {r["id"]: r for r in reservations_of(api, order_id)}
    for held in (at_store, in_van, oil):
        released = after[held["id"]]
        assert (released["status"], released["closed_by"], released["closed_at"]) == (
            "released",
            "planner-token",
            "2026-11-22T12:05:00Z",
        )
        assert released["closing_note"] == f"work order {order_id} cancelled: asset replaced"
    assert after[used["id"]]["status"] == "issued"  # consumed before: stays consumed
    assert get(api, f"/reservations/{theirs['id']}").json()["status"] == "reserved"
    # The ledger and the stock agree: releasing moves no stock, only frees it.
    assert figures(api) == ("9", "4", "5")
    assert figures(api, location=VAN) == ("4", "0", "4")
    assert figures(api, sku=OIL) == ("20", "0", "20")
    assert len(get(api, f"/parts/{SKU}/ledger").json()["items"]) == 3  # 2 receipts, 1 issue


def test_cancelling_twice_answers_409_and_changes_nothing(api: Api) -> None:
    order_id = order_in(api, "accepted")
    receive(api, 10)
    reserve(api, 3, order_id)
    assert act(api, order_id, "cancel", {"note": "not needed"}).status_code == 200
    before = everything(api, order_id)
    body = assert_problem(act(api, order_id, "cancel", {"note": "again"}), 409)
    assert body["code"] == "invalid_transition"
    assert everything(api, order_id) == before


def test_a_refused_cancel_keeps_the_reservations(api: Api) -> None:
    order_id = order_in(api, "in_progress")  # in progress: cannot be cancelled
    receive(api, 10)
    held = reserve(api, 3, order_id).json()
    before = everything(api, order_id)
    assert_problem(act(api, order_id, "cancel", {"note": "too late"}), 409, "invalid_transition")
    assert everything(api, order_id) == before
    assert get(api, f"/reservations/{held['id']}").json()["status"] == "reserved"


# --- close issues what was used --------------------------------------------------------


def test_closing_issues_the_parts_used_and_releases_the_rest(api: Api) -> None:
    order_id = order_in(api, "in_progress")
    receive(api, 10)
    receive(api, 4, location=VAN)
    receive(api, 20, sku=OIL)
    first = reserve(api, 4, order_id).json()
    second = reserve(api, 3, order_id, location=VAN).json()
    oil = reserve(api, 5, order_id, sku=OIL).json()
    spare = reserve(api, 1, order_id, sku=OIL, location=VAN)
    assert spare.status_code == 409  # nothing in the van: on hold, then resumed
    assert act(api, order_id, "resume", role="technician").status_code == 200

    api.clock.at = NOW + timedelta(hours=2)
    used = completion((SKU, 5), (OIL, 1.25), ("SEAL-40", 1))  # the seal was never reserved
    assert act(api, order_id, "resolve", {"completion": used}, "technician").status_code == 200
    # Resolving keeps the reservations: the order may be reopened and still need them.
    assert {r["status"] for r in reservations_of(api, order_id)} == {"reserved"}

    api.clock.at = NOW + timedelta(hours=3)
    closed = act(api, order_id, "close")
    assert closed.status_code == 200, closed.text
    after = {r["id"]: r for r in reservations_of(api, order_id)}
    assert [
        (after[r["id"]]["status"], after[r["id"]]["issued_quantity"]) for r in (first, second, oil)
    ] == [("issued", "4"), ("issued", "1"), ("issued", "1.25")]
    assert after[second["id"]]["closing_note"] == f"used by work order {order_id} (closed)"
    assert after[first["id"]]["closed_by"] == "planner-token"
    assert figures(api) == ("6", "0", "6")
    assert figures(api, location=VAN) == ("3", "0", "3")
    assert figures(api, sku=OIL) == ("18.75", "0", "18.75")
    issues = get(api, f"/parts/{SKU}/ledger", work_order_id=order_id).json()["items"]
    assert [(e["quantity"], e["location"], e["reservation_id"]) for e in issues] == [
        ("-4", STORE, first["id"]),
        ("-1", VAN, second["id"]),
    ]
    assert {e["at"] for e in issues} == {"2026-11-22T15:00:00Z"}


def test_closing_releases_reservations_nothing_was_used_from(api: Api) -> None:
    order_id = order_in(api, "resolved")
    receive(api, 10)
    held = reserve(api, 2, order_id).json()
    closed = act(api, order_id, "close", {"completion": completion(("SEAL-40", 1))})
    assert closed.status_code == 200, closed.text
    released = get(api, f"/reservations/{held['id']}").json()
    assert (released["status"], released["closing_note"]) == (
        "released",
        f"not used by work order {order_id} (closed)",
    )
    assert figures(api) == ("10", "0", "10")


def test_closing_counts_what_was_issued_before(api: Api) -> None:
    order_id = order_in(api, "in_progress")
    receive(api, 10)
    by_hand = reserve(api, 3, order_id).json()
    left = reserve(api, 2, order_id).json()
    assert post(api, f"/reservations/{by_hand['id']}/issue").status_code == 200
    unplanned = {"kind": "issue", "location": STORE, "quantity": 1, "work_order_id": order_id}
    assert post(api, f"/parts/{SKU}/movements", body=unplanned).status_code == 201
    returned = {"kind": "return", "location": STORE, "quantity": 1, "work_order_id": order_id}
    assert post(api, f"/parts/{SKU}/movements", body=returned).status_code == 201
    # 3 by hand + 1 unplanned - 1 returned = 3 consumed; 4 used: 1 more from what is left.
    body = {"note": "done", "completion": completion((SKU, 4))}
    assert act(api, order_id, "resolve", body, "technician").status_code == 200
    assert act(api, order_id, "close").status_code == 200
    settled = get(api, f"/reservations/{left['id']}").json()
    assert (settled["status"], settled["issued_quantity"]) == ("issued", "1")
    assert figures(api) == ("6", "0", "6")


def test_a_part_used_in_a_quantity_its_unit_refuses_refuses_the_close(api: Api) -> None:
    order_id = order_in(api, "resolved")
    receive(api, 10)
    reserve(api, 2, order_id)
    before = everything(api, order_id)
    refused = act(api, order_id, "close", {"completion": completion((SKU, 1.5))})
    body = assert_problem(refused, 422, "invalid")
    assert "whole number of pcs" in body["detail"]
    assert everything(api, order_id) == before  # the close and the settlement: neither
    # A fraction of a part nothing was reserved of is not checked: no stock moves for it.
    closed = act(api, order_id, "close", {"completion": completion((SKU, 2), ("SEAL-40", 0.5))})
    assert closed.status_code == 200, closed.text
    assert figures(api) == ("8", "0", "8")


def test_a_refused_close_keeps_the_reservations(api: Api) -> None:
    order_id = order_in(api, "resolved")
    receive(api, 10)
    reserve(api, 2, order_id)
    before = everything(api, order_id)
    assert_problem(act(api, order_id, "close"), 409, "closure_refused")  # no completion
    assert everything(api, order_id) == before


# --- the asset history shows the parts issued -----------------------------------------


def test_the_asset_history_shows_part_issues_in_time_order(api: Api) -> None:
    order_id = order_in(api, "in_progress")
    elsewhere = order_in(api, "in_progress", asset_id="pump-2")
    receive(api, 10)
    receive(api, 20, sku=OIL)
    held = reserve(api, 2, order_id).json()
    reserve(api, 1, elsewhere)
    api.clock.at = NOW + timedelta(hours=1)
    unplanned = {"kind": "issue", "location": STORE, "quantity": "0.5", "work_order_id": order_id}
    assert post(api, f"/parts/{OIL}/movements", body=unplanned).status_code == 201
    api.clock.at = NOW + timedelta(hours=2)
    body = {"note": "done", "completion": completion((SKU, 2))}
    assert act(api, order_id, "resolve", body, "technician").status_code == 200
    api.clock.at = NOW + timedelta(hours=3)
    assert act(api, order_id, "close").status_code == 200
    post(api, f"/reservations/{reservations_of(api, elsewhere)[0]['id']}/issue")  # pump-2

    items = get(api, "/assets/pump-1/history").json()["items"]
    assert [(i["kind"], i["status"], i["at"][11:16]) for i in items] == [
        ("inspection", "requested", "12:00"),
        ("inspection", "accepted", "12:00"),
        ("inspection", "in_progress", "12:00"),
        ("part_issue", None, "13:00"),
        ("inspection", "resolved", "14:00"),
        ("inspection", "closed", "15:00"),
        ("part_issue", None, "15:00"),  # issued by the close: after it at the same instant
    ]
    unplanned_entry, issued_entry = items[3], items[6]
    assert unplanned_entry == {
        "at": "2026-11-22T13:00:00Z",
        "kind": "part_issue",
        "id": unplanned_entry["id"],
        "summary": (f"0.5 l of {OIL} (Hydraulic oil) issued from {STORE} to work order {order_id}"),
        "work_order_id": order_id,
        "alert_id": None,
        "status": None,
        "actor": "technician-token",
        "note": None,
    }
    assert issued_entry["summary"].startswith(f"2 pcs of {SKU} (Deep groove ball bearing 6205)")
    assert issued_entry["actor"] == "planner-token"
    ledger = get(api, f"/parts/{SKU}/ledger", work_order_id=order_id).json()["items"]
    assert [e["reservation_id"] for e in ledger] == [held["id"]]
    assert issued_entry["id"] == ledger[0]["id"]
    other = get(api, "/assets/pump-2/history").json()["items"]
    assert [i["kind"] for i in other].count("part_issue") == 1

    # Paged one entry at a time, the walk sees every entry once, in the same order.
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 1}
        if cursor is not None:
            params["cursor"] = cursor
        page = get(api, "/assets/pump-1/history", **params).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == items
    # A window keeps only what happened inside it.
    window = get(
        api,
        "/assets/pump-1/history",
        start="2026-11-22T13:00:00Z",
        end="2026-11-22T15:00:00Z",
    ).json()["items"]
    assert [i["kind"] for i in window] == ["part_issue", "inspection"]
