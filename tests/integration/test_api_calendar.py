"""Bookings, the JSON calendar and iCalendar feeds over HTTP, on SQLite and PostgreSQL.

The clock is frozen at Sunday 2026-11-22 12:00 UTC. Anna works at site north, Monday to
Friday 08:00-16:00 in Berlin (07:00-15:00 UTC in November); Bob at site south, the same
hours in New York. Bookings are made through the API (PUT .../booking) or the store.
Every refusal is checked to change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, update

from core.assets import Asset
from core.inventory import MovementKind, NewLocation, NewMovement, NewPart, NewReservation, Unit
from storage.tables import work_orders
from tests.integration.test_api import NOW, Api, assert_problem, build_api, error_locations
from tests.integration.test_api_alerts import get, post
from tests.integration.test_api_technicians import ANNA, events, put
from tests.unit.test_ical import assert_valid_feed, instant

WEEKDAYS = [{"weekday": day, "start": "08:00", "end": "16:00"} for day in range(5)]
BOB = {
    "id": "bob",
    "name": "Bob Stone",
    "sites": ["south"],
    "time_zone": "America/New_York",
    "skills": [],
    "weekly_hours": WEEKDAYS,
}
MONDAY_9 = "2026-11-23T09:00:00+01:00"  # 08:00 UTC, Anna's second hour on Monday
DUE = datetime.fromisoformat("2026-11-27T15:00:00+00:00")  # Friday, end of Anna's week


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    for api in build_api(database_url):
        api.assets.add(Asset(id="pump-1", name="Feed pump 1", type="pump", site="north"))
        api.assets.add(Asset(id="chiller-9", name="Chiller 9", type="chiller", site="south"))
        for technician in ({**ANNA, "weekly_hours": WEEKDAYS}, BOB):
            created = post(api, "/technicians", "planner", technician)
            assert created.status_code == 201, created.text
        yield api


def new_order(
    api: Api, database_engine: Engine, asset_id: str = "pump-1", title: str = "Inspect pump"
) -> int:
    """Open an order due on Friday (orders opened by hand carry no due time of their own)."""
    body = {"kind": "preventive", "priority": "high", "asset_id": asset_id, "title": title}
    response = post(api, "/work-orders", "planner", body)
    assert response.status_code == 201, response.text
    order_id: int = response.json()["id"]
    with database_engine.begin() as connection:
        connection.execute(
            update(work_orders).where(work_orders.c.id == order_id).values(due_at=DUE)
        )
    return order_id


def book(api: Api, order_id: int, role: str = "planner", **body: Any) -> httpx.Response:
    return put(api, f"/work-orders/{order_id}/booking", body, role)


def booked(api: Api, order_id: int, **body: Any) -> dict[str, Any]:
    response = book(api, order_id, **body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def feed(api: Api, role: str = "viewer", **params: Any) -> httpx.Response:
    """Fetch a feed the way a calendar client does: the token in the URL, no header."""
    response: httpx.Response = api.client.get(
        "/api/v1/calendar.ics", params={**params, "token": api.tokens[role]}
    )
    return response


def feed_events(api: Api, **params: Any) -> tuple[Any, dict[str, Any]]:
    response = feed(api, **params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/calendar; charset=utf-8"
    calendar = assert_valid_feed(response.content)
    return calendar, {str(event["UID"]): event for event in calendar.walk("VEVENT")}


def calendar_items(api: Api, **params: Any) -> list[dict[str, Any]]:
    response = get(api, "/calendar", **params)
    assert response.status_code == 200, response.text
    assert response.json()["truncated"] is False
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# --- booking --------------------------------------------------------------------------


def test_a_slot_given_is_booked_audited_and_read_back(api: Api, database_engine: Engine) -> None:
    order_id = new_order(api, database_engine)
    body = booked(api, order_id, technician_id="anna-berg", start_at=MONDAY_9, note="first")
    assert body == {
        "work_order_id": order_id,
        "technician_id": "anna-berg",
        "start_at": "2026-11-23T08:00:00Z",
        "end_at": "2026-11-23T09:00:00Z",  # an order without a plan takes an hour
        "late": False,
        "status": "booked",
        "sequence": 0,
        "created_at": "2026-11-22T12:00:00Z",
        "updated_at": "2026-11-22T12:00:00Z",
    }
    assert get(api, f"/work-orders/{order_id}/booking").json() == body
    assert get(api, f"/work-orders/{order_id}").json()["technician_id"] == "anna-berg"
    note = events(api, order_id)[-1]["note"]
    assert "booked with 'anna-berg' from 2026-11-23T08:00:00+00:00" in note
    assert note.endswith(": first")


def test_an_accepted_order_becomes_scheduled_when_booked(api: Api, database_engine: Engine) -> None:
    order_id = new_order(api, database_engine)
    assert post(api, f"/work-orders/{order_id}/accept", "planner").status_code == 200
    booked(api, order_id, technician_id="anna-berg", start_at=MONDAY_9)
    assert get(api, f"/work-orders/{order_id}").json()["status"] == "scheduled"


def test_without_a_slot_the_earliest_feasible_one_is_booked(
    api: Api, database_engine: Engine
) -> None:
    first, second, third = (new_order(api, database_engine) for _ in range(3))
    # No body at all, an empty body, and a technician alone: each the earliest free slot.
    response = api.client.put(
        f"/api/v1/work-orders/{first}/booking", headers=api.as_role("planner")
    )
    assert response.status_code == 200, response.text
    assert (response.json()["start_at"], response.json()["technician_id"]) == (
        "2026-11-23T07:00:00Z",
        "anna-berg",
    )
    assert booked(api, second)["start_at"] == "2026-11-23T08:00:00Z"
    assert booked(api, third, technician_id="anna-berg")["start_at"] == "2026-11-23T09:00:00Z"
    south = new_order(api, database_engine, asset_id="chiller-9")
    bob = booked(api, south)
    # 08:00 in New York on Monday.
    assert (bob["technician_id"], bob["start_at"]) == ("bob", "2026-11-23T13:00:00Z")


def test_a_reschedule_bumps_the_sequence_and_keeps_the_event(
    api: Api, database_engine: Engine
) -> None:
    order_id = new_order(api, database_engine)
    first = booked(api, order_id, technician_id="anna-berg", start_at=MONDAY_9)
    _, before = feed_events(api, technician="anna-berg")
    uid = f"wo-{order_id}@pmkeeper"
    assert list(before) == [uid]
    assert before[uid]["SEQUENCE"] == 0
    api.clock.at = NOW + timedelta(minutes=30)
    moved = booked(api, order_id, technician_id="anna-berg", start_at="2026-11-24T14:00:00+01:00")
    assert moved["sequence"] == first["sequence"] + 1 == 1
    assert (moved["start_at"], moved["end_at"]) == ("2026-11-24T13:00:00Z", "2026-11-24T14:00:00Z")
    assert moved["created_at"] == first["created_at"]
    assert moved["updated_at"] == "2026-11-22T12:30:00Z"
    calendar, after = feed_events(api, technician="anna-berg")
    assert list(after) == [uid]
    event = after[uid]
    assert event["SEQUENCE"] == 1
    assert event["DTSTART"].to_ical() == b"20261124T140000"
    assert event["DTSTAMP"].to_ical() == b"20261122T123000Z"
    assert instant(calendar, event, "DTSTART") == datetime.fromisoformat(moved["start_at"])
    assert instant(calendar, event, "DTEND") == datetime.fromisoformat(moved["end_at"])
    assert "was 'anna-berg' from 2026-11-23T08:00:00+00:00" in events(api, order_id)[-1]["note"]


def test_a_cancelled_order_stays_in_the_feed_as_cancelled(
    api: Api, database_engine: Engine
) -> None:
    order_id = new_order(api, database_engine)
    booked(api, order_id, technician_id="anna-berg", start_at=MONDAY_9)
    api.clock.at = NOW + timedelta(hours=1)
    cancel = post(api, f"/work-orders/{order_id}/cancel", "planner", {"note": "pump replaced"})
    assert cancel.status_code == 200, cancel.text
    booking = get(api, f"/work-orders/{order_id}/booking").json()
    assert (booking["status"], booking["sequence"]) == ("cancelled", 1)
    _, found = feed_events(api, technician="anna-berg")
    event = found[f"wo-{order_id}@pmkeeper"]
    assert str(event["STATUS"]) == "CANCELLED"
    assert event["SEQUENCE"] == 1
    assert event["DTSTAMP"].to_ical() == b"20261122T130000Z"
    window = {"from": "2026-11-23T00:00:00Z", "to": "2026-11-24T00:00:00Z"}
    assert calendar_items(api, **window) == []
    (item,) = calendar_items(api, **window, include_cancelled="true")
    assert (item["status"], item["work_order"]["status"]) == ("cancelled", "cancelled")
    again = assert_problem(book(api, order_id), 409, "booking_refused")
    assert "is cancelled" in again["detail"]


# --- booking refusals -----------------------------------------------------------------


def _plan_needing_hydraulics(api: Api, database_engine: Engine, order_id: int) -> None:
    plan = {
        "id": "hydraulics-check",
        "name": "Hydraulics check",
        "asset_id": "pump-1",
        "calendar": {"every": 1, "unit": "months", "starts_at": "2026-01-05T07:00:00Z"},
        "lead_time": "P14D",
        "estimated_duration": "PT2H",
        "required_skills": ["hydraulics"],
    }
    assert post(api, "/maintenance-plans", "planner", plan).status_code == 201
    with database_engine.begin() as connection:
        connection.execute(
            update(work_orders)
            .where(work_orders.c.id == order_id)
            .values(plan_id="hydraulics-check")
        )


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("after hours", "is outside the working hours of technician 'anna-berg'"),
        ("overlap", "technician 'anna-berg' is booked for work order"),
        ("other site", "technician 'anna-berg' does not work at site 'south'"),
        ("skill", "technician 'anna-berg' does not have the skill 'hydraulics'"),
        ("time off", "technician 'anna-berg' is off from"),
        ("saturday", "is outside the working hours"),
    ],
)
def test_a_refused_slot_answers_409_with_the_reason_and_changes_nothing(
    api: Api, database_engine: Engine, case: str, words: str
) -> None:
    order_id = new_order(
        api, database_engine, asset_id="chiller-9" if case == "other site" else "pump-1"
    )
    other = new_order(api, database_engine)
    booked(api, other, technician_id="anna-berg", start_at="2026-11-24T09:00:00+01:00")
    if case == "other site":
        booked(api, order_id, technician_id="bob", start_at="2026-11-24T09:00:00-05:00")
    else:
        booked(api, order_id, technician_id="anna-berg", start_at=MONDAY_9)
    if case == "skill":
        _plan_needing_hydraulics(api, database_engine, order_id)
    if case == "time off":
        off = {"start_at": "2026-11-24T00:00:00Z", "end_at": "2026-11-25T00:00:00Z"}
        assert post(api, "/technicians/anna-berg/time-off", "planner", off).status_code == 201
    start = {
        "after hours": "2026-11-24T17:00:00+01:00",
        "overlap": "2026-11-24T09:30:00+01:00",
        "saturday": "2026-11-28T09:00:00+01:00",
    }.get(case, "2026-11-24T11:00:00+01:00")
    before = get(api, f"/work-orders/{order_id}/booking").json()
    trail = events(api, order_id)
    order = get(api, f"/work-orders/{order_id}").json()
    api.clock.at = NOW + timedelta(minutes=5)
    refused = book(api, order_id, technician_id="anna-berg", start_at=start, note="move it")
    body = assert_problem(refused, 409, "booking_refused")
    assert words in body["detail"], body["detail"]
    assert body["work_order_id"] == order_id
    assert get(api, f"/work-orders/{order_id}/booking").json() == before
    assert events(api, order_id) == trail
    assert get(api, f"/work-orders/{order_id}").json() == order


def test_nobody_free_is_a_409_too(api: Api, database_engine: Engine) -> None:
    order_id = new_order(api, database_engine)
    _plan_needing_hydraulics(api, database_engine, order_id)
    body = assert_problem(book(api, order_id), 409, "booking_refused")
    assert "hydraulics" in body["detail"]
    assert_problem(get(api, f"/work-orders/{order_id}/booking"), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "location", "words"),
    [
        ({"start_at": MONDAY_9}, ["body"], "start_at needs technician_id"),
        (
            {"technician_id": "anna-berg", "start_at": "2026-11-22T11:00:00Z"},
            ["body", "start_at"],
            "start_at is in the past",
        ),
        (
            {"technician_id": "anna-berg", "start_at": "2029-01-01T08:00:00Z"},
            ["body", "start_at"],
            "more than 731 days ahead",
        ),
        (
            {"technician_id": "anna-berg", "start_at": "2026-11-23T09:00:00"},
            ["body", "start_at"],
            "timezone",
        ),
        ({"technician_id": "not valid"}, ["body", "technician_id"], "pattern"),
        ({"slot": 1}, ["body", "slot"], "Extra inputs"),
        ({"note": "a\x00b"}, ["body"], "NUL"),
    ],
)
def test_a_bad_booking_request_answers_422(
    api: Api, database_engine: Engine, body: dict[str, Any], location: list[Any], words: str
) -> None:
    order_id = new_order(api, database_engine)
    problem = assert_problem(book(api, order_id, **body), 422, "invalid")
    assert location in error_locations(problem), problem
    assert words in problem["detail"]
    assert_problem(get(api, f"/work-orders/{order_id}/booking"), 404)


def test_unknown_orders_and_technicians_answer_404(api: Api, database_engine: Engine) -> None:
    missing = assert_problem(book(api, 999), 404, "not_found")
    assert "999" in missing["detail"]
    assert_problem(get(api, "/work-orders/999/booking"), 404, "not_found")
    order_id = new_order(api, database_engine)
    nobody = assert_problem(book(api, order_id, technician_id="nobody"), 404, "not_found")
    assert "'nobody'" in nobody["detail"]
    none_yet = assert_problem(get(api, f"/work-orders/{order_id}/booking"), 404)
    assert none_yet["detail"] == f"work order {order_id} has no booking"


def test_only_planners_book(api: Api, database_engine: Engine) -> None:
    order_id = new_order(api, database_engine)
    assert_problem(book(api, order_id, "technician"), 403, "forbidden")
    assert_problem(get(api, f"/work-orders/{order_id}/booking"), 404)
    booked(api, order_id)
    assert get(api, f"/work-orders/{order_id}/booking", "viewer").status_code == 200


# --- the JSON calendar ----------------------------------------------------------------


def _hold_parts(api: Api, order_id: int) -> None:
    api.inventory.add_location(NewLocation(code="main", name="Main store", site="north"))
    api.inventory.add_part(NewPart(sku="OIL-1", name="Oil", unit=Unit.LITRE, category="o"))
    receipt = NewMovement(
        kind=MovementKind.RECEIPT, sku="OIL-1", location="main", quantity=Decimal(10)
    )
    api.inventory.record_movement(receipt, actor="store")
    hold = NewReservation(
        work_order_id=order_id, sku="OIL-1", location="main", quantity=Decimal("2.5")
    )
    api.inventory.reserve(hold, actor="planner")


def test_the_calendar_lists_bookings_with_order_asset_and_parts(
    api: Api, database_engine: Engine
) -> None:
    pump = new_order(api, database_engine, title="Inspect pump")
    chiller = new_order(api, database_engine, asset_id="chiller-9", title="Clean coils")
    _hold_parts(api, pump)
    booked(api, pump, technician_id="anna-berg", start_at=MONDAY_9)
    # Booked through the store, as a generator run would leave it.
    api.bookings.rebook(
        chiller,
        technician_id="bob",
        start_at=datetime.fromisoformat("2026-11-23T08:00:00-05:00"),
        actor="scheduler",
    )
    window = {"from": "2026-11-23T00:00:00Z", "to": "2026-11-24T00:00:00Z"}
    items = calendar_items(api, **window)
    assert items == [
        {
            "work_order": {
                "id": pump,
                "title": "Inspect pump",
                "status": "requested",
                "priority": "high",
                "due_at": "2026-11-27T15:00:00Z",
                "plan_id": None,
            },
            "asset": {"id": "pump-1", "name": "Feed pump 1", "site": "north"},
            "technician_id": "anna-berg",
            "start_at": "2026-11-23T08:00:00Z",
            "end_at": "2026-11-23T09:00:00Z",
            "late": False,
            "status": "booked",
            "sequence": 0,
            "parts": [{"sku": "OIL-1", "location": "main", "quantity": "2.5"}],
        },
        {
            "work_order": {
                "id": chiller,
                "title": "Clean coils",
                "status": "requested",
                "priority": "high",
                "due_at": "2026-11-27T15:00:00Z",
                "plan_id": None,
            },
            "asset": {"id": "chiller-9", "name": "Chiller 9", "site": "south"},
            "technician_id": "bob",
            "start_at": "2026-11-23T13:00:00Z",
            "end_at": "2026-11-23T14:00:00Z",
            "late": False,
            "status": "booked",
            "sequence": 0,
            "parts": [],
        },
    ]
    assert [i["work_order"]["id"] for i in calendar_items(api, **window, technician="bob")] == [
        chiller
    ]
    assert [i["work_order"]["id"] for i in calendar_items(api, **window, site="north")] == [pump]
    assert calendar_items(api, **window, technician="bob", site="north") == []
    # [from, to) overlaps: a booking ending at `from` or starting at `to` is outside.
    assert (
        calendar_items(api, **{"from": "2026-11-23T09:00:00Z", "to": "2026-11-23T13:00:00Z"}) == []
    )
    edge = {"from": "2026-11-23T08:59:59Z", "to": "2026-11-23T13:00:01Z"}
    assert [i["work_order"]["id"] for i in calendar_items(api, **edge)] == [pump, chiller]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"to": "2026-11-24T00:00:00Z"}, "from"),
        ({"from": "2026-11-24T00:00:00Z"}, "to"),
        ({"from": "2026-11-23T00:00:00", "to": "2026-11-24T00:00:00Z"}, "timezone"),
        ({"from": "2026-11-24T00:00:00Z", "to": "2026-11-24T00:00:00Z"}, "`to` must be after"),
        ({"from": "2026-11-24T00:00:00Z", "to": "2026-11-23T00:00:00Z"}, "`to` must be after"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2027-01-02T00:00:00.000001Z"}, "at most 366"),
        ({"from": "2026-11-23T00:00:00Z", "to": "2026-11-24T00:00Z", "site": ""}, "site"),
        (
            {"from": "2026-11-23T00:00:00Z", "to": "2026-11-24T00:00Z", "technician": "a b"},
            "technician",
        ),
    ],
)
def test_a_bad_calendar_query_answers_422(api: Api, params: dict[str, Any], words: str) -> None:
    body = assert_problem(get(api, "/calendar", **params), 422, "invalid")
    assert words in body["detail"], body["detail"]


def test_a_span_of_366_days_is_allowed(api: Api) -> None:
    assert (
        calendar_items(api, **{"from": "2026-01-01T00:00:00Z", "to": "2027-01-02T00:00:00Z"}) == []
    )


# --- iCalendar feeds ------------------------------------------------------------------


def test_a_technicians_feed_is_in_their_zone(api: Api, database_engine: Engine) -> None:
    pump = new_order(api, database_engine, title="Inspect pump")
    _hold_parts(api, pump)
    body = booked(api, pump, technician_id="anna-berg", start_at="2026-11-23T14:30:00+01:00")
    calendar, found = feed_events(api, technician="anna-berg")
    assert str(calendar["X-WR-CALNAME"]) == "pmkeeper: Anna Berg"
    assert [str(z["TZID"]) for z in calendar.walk("VTIMEZONE")] == ["Europe/Berlin"]
    event = found[f"wo-{pump}@pmkeeper"]
    assert event["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert event["DTSTART"].to_ical() == b"20261123T143000"
    assert instant(calendar, event, "DTSTART") == datetime.fromisoformat(body["start_at"])
    assert instant(calendar, event, "DTEND") == datetime.fromisoformat(body["end_at"])
    assert (str(event["SUMMARY"]), str(event["STATUS"])) == ("Inspect pump", "CONFIRMED")
    assert str(event["LOCATION"]) == "north / Feed pump 1"
    assert "- 2.5 x OIL-1 from main" in str(event["DESCRIPTION"])
    _, bobs = feed_events(api, technician="bob")
    assert bobs == {}


def test_a_site_feed_is_in_the_site_calendars_zone_or_utc(
    api: Api, database_engine: Engine
) -> None:
    pump = new_order(api, database_engine)
    chiller = new_order(api, database_engine, asset_id="chiller-9")
    booked(api, pump, technician_id="anna-berg", start_at=MONDAY_9)
    booked(api, chiller, technician_id="bob", start_at="2026-11-23T08:00:00-05:00")
    site = {"time_zone": "Asia/Tokyo"}
    assert put(api, "/sites/north/calendar", site).status_code == 200
    calendar, north = feed_events(api, site="north")
    assert list(north) == [f"wo-{pump}@pmkeeper"]
    assert str(calendar["X-WR-CALNAME"]) == "pmkeeper: north"
    assert north[f"wo-{pump}@pmkeeper"]["DTSTART"].to_ical() == b"20261123T170000"
    assert [str(z["TZID"]) for z in calendar.walk("VTIMEZONE")] == ["Asia/Tokyo"]
    utc, south = feed_events(api, site="south")
    assert list(south) == [f"wo-{chiller}@pmkeeper"]
    assert south[f"wo-{chiller}@pmkeeper"]["DTSTART"].to_ical() == b"20261123T130000Z"
    assert utc.walk("VTIMEZONE") == []


def test_the_feed_reaches_30_days_back(api: Api, database_engine: Engine) -> None:
    order_id = new_order(api, database_engine)
    booked(api, order_id, technician_id="anna-berg", start_at=MONDAY_9)
    api.clock.at = datetime.fromisoformat("2026-12-23T08:59:00+00:00")  # ended 29d 23h59m ago
    assert list(feed_events(api, technician="anna-berg")[1]) == [f"wo-{order_id}@pmkeeper"]
    api.clock.at = datetime.fromisoformat("2026-12-23T09:00:00+00:00")
    assert feed_events(api, technician="anna-berg")[1] == {}


def test_the_feed_takes_a_bearer_header_or_a_token_in_the_url(api: Api) -> None:
    url = "/api/v1/calendar.ics?technician=anna-berg"
    assert api.client.get(url, headers=api.as_role("viewer")).status_code == 200
    assert api.client.get(f"{url}&token={api.tokens['technician']}").status_code == 200
    missing = assert_problem(api.client.get(url), 401, "unauthorized")
    assert "Bearer" in missing["detail"]
    wrong = assert_problem(api.client.get(f"{url}&token=pmk_wrong"), 401, "unauthorized")
    assert wrong["detail"] == "the API token is unknown or revoked"
    # The header wins over the URL: a wrong header is refused even with a good URL token.
    both = api.client.get(
        f"{url}&token={api.tokens['viewer']}", headers={"Authorization": "Bearer pmk_wrong"}
    )
    assert_problem(both, 401, "unauthorized")
    # Only the feed reads a token from the URL.
    elsewhere = api.client.get(f"/api/v1/calendar?token={api.tokens['viewer']}")
    assert_problem(elsewhere, 401, "unauthorized")


@pytest.mark.parametrize(
    ("params", "status"),
    [({}, 422), ({"technician": "anna-berg", "site": "north"}, 422), ({"technician": "x y"}, 422)],
)
def test_a_feed_is_one_technicians_or_one_sites(
    api: Api, params: dict[str, Any], status: int
) -> None:
    assert_problem(feed(api, **params), status, "invalid")


def test_an_unknown_technicians_feed_is_404(api: Api) -> None:
    assert_problem(feed(api, technician="nobody"), 404, "not_found")


def test_an_unchanged_feed_answers_304(api: Api, database_engine: Engine) -> None:
    order_id = new_order(api, database_engine)
    booked(api, order_id, technician_id="anna-berg", start_at=MONDAY_9)
    first = feed(api, technician="anna-berg")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    same = api.client.get(
        "/api/v1/calendar.ics",
        params={"technician": "anna-berg", "token": api.tokens["viewer"]},
        headers={"If-None-Match": etag},
    )
    assert (same.status_code, same.content, same.headers["etag"]) == (304, b"", etag)
    api.clock.at = NOW + timedelta(minutes=1)
    booked(api, order_id, technician_id="anna-berg", start_at="2026-11-23T10:00:00+01:00")
    changed = api.client.get(
        "/api/v1/calendar.ics",
        params={"technician": "anna-berg", "token": api.tokens["viewer"]},
        headers={"If-None-Match": etag},
    )
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
