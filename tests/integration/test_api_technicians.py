"""Technicians, their time off and availability, and work-order assignment over HTTP.

On SQLite and PostgreSQL. The clock is frozen at 2026-11-22 12:00 UTC (13:00 in Berlin).
Every refusal is checked to change nothing the API shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.assets import Asset
from tests.integration.test_api import NOW, Api, assert_problem, build_api, error_locations
from tests.integration.test_api_alerts import get, post

ANNA: dict[str, Any] = {
    "id": "anna-berg",
    "name": "Anna Berg",
    "email": "anna@example.com",
    "phone": "+49 30 1234567",
    "sites": ["north"],
    "region": "EMEA",
    "time_zone": "Europe/Berlin",
    "skills": [
        {"skill": "welding", "certified_until": "2026-11-22"},  # expires today
        {"skill": "hvac", "certified_until": "2026-11-21"},  # expired yesterday
        {"skill": "electrical"},  # never expires
    ],
    "weekly_hours": [{"weekday": 0, "start": "08:00", "end": "16:00"}],
}


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    for api in build_api(database_url):
        api.assets.add(Asset(id="pump-1", name="Feed pump 1", type="pump", site="north"))
        api.assets.add(Asset(id="chiller-9", name="Chiller 9", type="chiller", site="south"))
        yield api


def put(api: Api, path: str, body: Any, role: str = "planner") -> httpx.Response:
    response: httpx.Response = api.client.put(
        f"/api/v1{path}", json=body, headers=api.as_role(role)
    )
    return response


def delete(api: Api, path: str, role: str = "planner", **params: Any) -> httpx.Response:
    response: httpx.Response = api.client.delete(
        f"/api/v1{path}", params=params, headers=api.as_role(role)
    )
    return response


def register(api: Api, **fields: Any) -> dict[str, Any]:
    response = post(api, "/technicians", "planner", {**ANNA, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def new_order(api: Api, asset_id: str = "pump-1") -> int:
    body = {"kind": "preventive", "priority": "medium", "asset_id": asset_id, "title": "PM"}
    created = post(api, "/work-orders", "planner", body)
    assert created.status_code == 201, created.text
    order_id: int = created.json()["id"]
    return order_id


def assign(api: Api, order_id: int, role: str = "planner", **body: Any) -> httpx.Response:
    return post(api, f"/work-orders/{order_id}/assign", role, {"technician_id": ANNA["id"], **body})


def events(api: Api, order_id: int) -> list[dict[str, Any]]:
    response = get(api, f"/work-orders/{order_id}/events")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# --- technicians ----------------------------------------------------------------------


def test_a_technician_is_created_read_and_listed(api: Api) -> None:
    created = post(api, "/technicians", "planner", ANNA)
    assert created.status_code == 201, created.text
    assert created.headers["location"].endswith("/api/v1/technicians/anna-berg")
    body = created.json()
    assert body == {
        **ANNA,
        "skills": [  # sorted by skill, no expiry as null
            {"skill": "electrical", "certified_until": None},
            {"skill": "hvac", "certified_until": "2026-11-21"},
            {"skill": "welding", "certified_until": "2026-11-22"},
        ],
        "created_at": "2026-11-22T12:00:00Z",
        "updated_at": "2026-11-22T12:00:00Z",
    }
    assert get(api, "/technicians/anna-berg").json() == body
    assert get(api, "/technicians").json() == {"items": [body], "next_cursor": None}


def test_a_taken_id_answers_409_and_an_unknown_one_404(api: Api) -> None:
    first = register(api)
    taken = post(api, "/technicians", "admin", {**ANNA, "name": "Other"})
    assert "'anna-berg' already exists" in assert_problem(taken, 409, "conflict")["detail"]
    assert get(api, "/technicians/anna-berg").json() == first
    missing = assert_problem(get(api, "/technicians/nobody"), 404, "not_found")
    assert missing["detail"] == "technician 'nobody' not found"
    assert_problem(get(api, "/technicians/has%20space"), 422, "invalid")


@pytest.mark.parametrize(
    ("fields", "location", "words"),
    [
        (
            {
                "weekly_hours": [
                    {"weekday": 0, "start": "08:00", "end": "12:00"},
                    {"weekday": 0, "start": "11:30", "end": "16:00"},
                ]
            },
            ["body", "weekly_hours"],
            "shifts overlap on Monday: 08:00-12:00 and 11:30-16:00",
        ),
        (
            {"weekly_hours": [{"weekday": 4, "start": "22:00", "end": "06:00"}]},
            ["body", "weekly_hours", 0, "end"],
            "overnight shifts are not supported",
        ),
        (
            {"weekly_hours": [{"weekday": 9, "start": "08:00", "end": "16:00"}]},
            ["body", "weekly_hours", 0, "weekday"],
            "less than or equal to 6",
        ),
        ({"time_zone": "Europe/Atlantis"}, ["body", "time_zone"], "unknown time zone"),
        ({"time_zone": "CET "}, ["body", "time_zone"], "unknown time zone"),
        ({"sites": []}, ["body", "sites"], "at least 1 item"),
        ({"sites": ["north", "north"]}, ["body", "sites"], "site 'north' is listed twice"),
        (
            {"skills": [{"skill": "hvac"}, {"skill": "HVAC"}]},
            ["body", "skills"],
            "skill 'hvac' is listed twice",
        ),
        (
            {"skills": [{"skill": "hvac", "certified_until": "2026-13-01"}]},
            ["body", "skills", 0, "certified_until"],
            "date",
        ),
        ({"id": "no spaces"}, ["body", "id"], "pattern"),
        ({"email": "nope"}, ["body", "email"], "pattern"),
        ({"hobby": "chess"}, ["body", "hobby"], "Extra inputs are not permitted"),
        ({"sites": ["nor\x00th"]}, ["body"], "NUL"),
        ({"name": "A\x00"}, ["body"], "NUL"),
    ],
)
def test_a_bad_technician_is_refused_with_422_naming_the_field(
    api: Api, fields: dict[str, Any], location: list[Any], words: str
) -> None:
    body = assert_problem(post(api, "/technicians", "planner", {**ANNA, **fields}), 422, "invalid")
    assert location in error_locations(body)
    assert words in body["detail"]
    assert get(api, "/technicians").json()["items"] == []


def test_missing_fields_are_named(api: Api) -> None:
    body = assert_problem(post(api, "/technicians", "planner", {"id": "x"}), 422, "invalid")
    for field in ("name", "sites", "time_zone"):
        assert ["body", field] in error_locations(body)


def test_put_replaces_the_technician_and_keeps_the_time_off(api: Api) -> None:
    register(api)
    off = post(
        api,
        "/technicians/anna-berg/time-off",
        "planner",
        {"start_at": "2026-12-01T00:00:00Z", "end_at": "2026-12-02T00:00:00Z"},
    ).json()
    api.clock.at = NOW.replace(hour=13)
    change = {k: v for k, v in ANNA.items() if k != "id"} | {
        "sites": ["south"],
        "skills": [],
        "email": None,
        "time_zone": "Asia/Kolkata",
    }
    replaced = put(api, "/technicians/anna-berg", change)
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert (body["sites"], body["skills"], body["email"], body["time_zone"]) == (
        ["south"],
        [],
        None,
        "Asia/Kolkata",
    )
    assert (body["created_at"], body["updated_at"]) == (
        "2026-11-22T12:00:00Z",
        "2026-11-22T13:00:00Z",
    )
    assert get(api, "/technicians/anna-berg").json() == body
    assert get(api, "/technicians/anna-berg/time-off").json()["items"] == [off]


def test_put_refuses_unknown_technicians_ids_in_the_body_and_bad_input(api: Api) -> None:
    register(api)
    change = {k: v for k, v in ANNA.items() if k != "id"}
    assert_problem(put(api, "/technicians/nobody", change), 404, "not_found")
    with_id = assert_problem(put(api, "/technicians/anna-berg", ANNA), 422, "invalid")
    assert ["body", "id"] in error_locations(with_id)
    bad = assert_problem(
        put(api, "/technicians/anna-berg", {**change, "time_zone": "Nowhere/Land"}), 422
    )
    assert ["body", "time_zone"] in error_locations(bad)
    assert_problem(put(api, "/technicians/anna-berg", change, role="technician"), 403)
    assert get(api, "/technicians/anna-berg").json()["time_zone"] == "Europe/Berlin"


def test_the_list_filters_by_site_and_skill_and_pages(api: Api) -> None:
    register(api, id="a", sites=["north", "south"])
    register(
        api, id="b", sites=["south"], skills=[{"skill": "welding", "certified_until": "2030-01-01"}]
    )
    register(api, id="c", sites=["east"], skills=[])

    def ids(**params: Any) -> list[str]:
        response = get(api, "/technicians", **params)
        assert response.status_code == 200, response.text
        return [t["id"] for t in response.json()["items"]]

    assert ids() == ["a", "b", "c"]
    assert ids(site="south") == ["a", "b"]
    assert ids(skill="Welding") == ["a", "b"]
    assert ids(skill="welding", certified_on="2026-11-23") == ["b"]
    assert ids(skill="welding", site="north") == ["a"]
    assert ids(site="west") == []
    page = get(api, "/technicians", limit=2).json()
    assert ([t["id"] for t in page["items"]], page["next_cursor"]) == (["a", "b"], "b")
    last = get(api, "/technicians", limit=2, cursor="b").json()
    assert ([t["id"] for t in last["items"]], last["next_cursor"]) == (["c"], None)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"certified_on": "2026-11-23"}, None),  # a date without a skill says nothing
        ({"skill": "bad skill"}, "skill"),
        ({"certified_on": "tomorrow", "skill": "hvac"}, "certified_on"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"cursor": "not a cursor"}, "cursor"),
        ({"site": ""}, "site"),
    ],
)
def test_bad_list_parameters_answer_422(
    api: Api, params: dict[str, Any], field: str | None
) -> None:
    body = assert_problem(get(api, "/technicians", **params), 422, "invalid")
    if field is not None:
        assert ["query", field] in error_locations(body)
    else:
        assert "give `skill` too" in body["detail"]


# --- time off -------------------------------------------------------------------------

DECEMBER = {"start_at": "2026-12-01T08:00:00+01:00", "end_at": "2026-12-05T17:00:00+01:00"}


def test_time_off_is_added_listed_and_removed(api: Api) -> None:
    register(api)
    created = post(
        api, "/technicians/anna-berg/time-off", "planner", {**DECEMBER, "reason": "leave"}
    )
    assert created.status_code == 201, created.text
    off = created.json()
    assert off == {
        "id": off["id"],
        "technician_id": "anna-berg",
        "start_at": "2026-12-01T07:00:00Z",
        "end_at": "2026-12-05T16:00:00Z",
        "reason": "leave",
        "created_at": "2026-11-22T12:00:00Z",
        "created_by": "planner-token",
    }
    assert get(api, "/technicians/anna-berg/time-off").json() == {"items": [off]}
    during = get(api, "/technicians/anna-berg/time-off", start="2026-12-05T16:00:00Z")
    assert during.json() == {"items": []}  # it ends as the span starts
    removed = delete(api, f"/technicians/anna-berg/time-off/{off['id']}")
    assert removed.status_code == 204, removed.text
    assert get(api, "/technicians/anna-berg/time-off").json() == {"items": []}
    again = delete(api, f"/technicians/anna-berg/time-off/{off['id']}")
    assert f"time off {off['id']}" in assert_problem(again, 404, "not_found")["detail"]


@pytest.mark.parametrize(
    ("body", "location"),
    [
        (
            {"start_at": "2026-12-05T00:00:00Z", "end_at": "2026-12-01T00:00:00Z"},
            ["body", "end_at"],
        ),
        (
            {"start_at": "2026-12-01T00:00:00Z", "end_at": "2026-12-01T00:00:00Z"},
            ["body", "end_at"],
        ),
        (
            {"start_at": "2026-12-01T00:00:00", "end_at": "2026-12-02T00:00:00Z"},
            ["body", "start_at"],
        ),
        (
            {"start_at": "0001-01-01T00:00:00+01:00", "end_at": "2026-12-02T00:00:00Z"},
            ["body", "start_at"],
        ),
        ({"start_at": "2026-12-01T00:00:00Z"}, ["body", "end_at"]),
        ({**DECEMBER, "reason": ""}, ["body", "reason"]),
        ({**DECEMBER, "reason": "x" * 501}, ["body", "reason"]),
        ({**DECEMBER, "kind": "sick"}, ["body", "kind"]),
    ],
)
def test_bad_time_off_answers_422_and_records_nothing(
    api: Api, body: dict[str, Any], location: list[Any]
) -> None:
    register(api)
    problem = assert_problem(post(api, "/technicians/anna-berg/time-off", "planner", body), 422)
    assert location in error_locations(problem)
    assert get(api, "/technicians/anna-berg/time-off").json() == {"items": []}


def test_time_off_of_an_unknown_technician_answers_404(api: Api) -> None:
    assert_problem(post(api, "/technicians/nobody/time-off", "planner", DECEMBER), 404, "not_found")
    assert_problem(get(api, "/technicians/nobody/time-off"), 404, "not_found")
    assert_problem(delete(api, "/technicians/nobody/time-off/1"), 404, "not_found")
    register(api)
    assert_problem(
        get(
            api,
            "/technicians/anna-berg/time-off",
            start="2026-12-02T00:00:00Z",
            end="2026-12-01T00:00:00Z",
        ),
        422,
        "invalid",
    )


def test_time_off_needs_a_planner_to_change_and_a_viewer_to_read(api: Api) -> None:
    register(api)
    assert_problem(post(api, "/technicians/anna-berg/time-off", "technician", DECEMBER), 403)
    assert get(api, "/technicians/anna-berg/time-off", "viewer").status_code == 200


# --- availability ---------------------------------------------------------------------


def availability(api: Api, **params: Any) -> dict[str, Any]:
    response = get(api, "/technicians/anna-berg/availability", **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_availability_follows_the_berlin_wall_clock_across_dst(api: Api) -> None:
    register(api)
    after = availability(api, at="2026-03-30T06:00:00Z")
    assert after["on_shift"] is True
    assert after["local_at"] == "2026-03-30T08:00:00+02:00"
    assert after["shifts"] == [
        {"start_at": "2026-03-30T06:00:00Z", "end_at": "2026-03-30T14:00:00Z"}
    ]
    assert after["available"] is True
    before = availability(api, at="2026-03-23T06:30:00Z")
    assert before["on_shift"] is False
    assert before["shifts"] == [
        {"start_at": "2026-03-23T07:00:00Z", "end_at": "2026-03-23T15:00:00Z"}
    ]
    assert before["available"] is False
    assert availability(api, at="2026-03-30T14:00:00Z")["on_shift"] is False


def test_availability_reports_time_off_and_certification(api: Api) -> None:
    register(api)
    off = post(
        api,
        "/technicians/anna-berg/time-off",
        "planner",
        {"start_at": "2026-11-23T00:00:00Z", "end_at": "2026-11-24T00:00:00Z", "reason": "leave"},
    ).json()
    monday = availability(api, at="2026-11-23T09:00:00Z", skill="electrical")
    assert (monday["on_shift"], monday["off"], monday["certified"]) == (True, True, True)
    assert monday["time_off"] == [off]
    assert monday["available"] is False
    expired = availability(api, at="2026-11-30T09:00:00Z", skill="welding")
    assert (expired["on_shift"], expired["off"], expired["certified"]) == (True, False, False)
    assert "until 2026-11-22" in expired["skill_problem"]
    assert expired["available"] is False
    missing = availability(api, at="2026-11-30T09:00:00Z", skill="plumbing")
    assert "does not have the skill 'plumbing'" in missing["skill_problem"]
    fine = availability(api, at="2026-11-30T09:00:00Z", skill="ELECTRICAL")
    assert (fine["skill"], fine["certified"], fine["skill_problem"], fine["available"]) == (
        "electrical",
        True,
        None,
        True,
    )
    assert availability(api, at="2026-11-30T09:00:00Z")["certified"] is None


def test_availability_over_a_span(api: Api) -> None:
    register(api)
    inside = availability(api, at="2026-11-30T08:00:00Z", until="2026-11-30T15:00:00Z")
    assert inside["on_shift"] is True
    assert inside["until"] == "2026-11-30T15:00:00Z"
    overrun = availability(api, at="2026-11-30T08:00:00Z", until="2026-11-30T15:00:01Z")
    assert overrun["on_shift"] is False
    week = availability(api, at="2026-11-23T00:00:00Z", until="2026-12-07T00:00:00Z")
    assert [s["start_at"] for s in week["shifts"]] == [
        "2026-11-23T07:00:00Z",
        "2026-11-30T07:00:00Z",
    ]


def test_availability_defaults_to_now(api: Api) -> None:
    register(api)
    now = availability(api)  # Sunday 22 November, 13:00 in Berlin
    assert now["at"] == "2026-11-22T12:00:00Z"
    assert (now["on_shift"], now["shifts"]) == (False, [])


@pytest.mark.parametrize(
    "params",
    [
        {"at": "2026-11-30T09:00:00"},  # naive
        {"at": "2026-11-30T09:00:00Z", "until": "2026-11-30T09:00:00Z"},
        {"at": "2026-11-30T09:00:00Z", "until": "2026-11-30T08:00:00Z"},
        {"at": "0001-01-01T00:00:00Z"},
        {"at": "9999-12-31T23:59:59Z"},
        {"skill": "no such skill"},
    ],
)
def test_bad_availability_questions_answer_422(api: Api, params: dict[str, Any]) -> None:
    register(api)
    assert_problem(get(api, "/technicians/anna-berg/availability", **params), 422, "invalid")


def test_availability_of_an_unknown_technician_answers_404(api: Api) -> None:
    assert_problem(get(api, "/technicians/nobody/availability"), 404, "not_found")


# --- assignment -----------------------------------------------------------------------


def test_a_planner_assigns_an_order_and_the_audit_says_so(api: Api) -> None:
    register(api)
    order_id = new_order(api)
    response = assign(api, order_id, skill="welding", note="closest to the site")
    assert response.status_code == 200, response.text
    order = response.json()
    assert (order["technician_id"], order["assigned_at"], order["status"]) == (
        "anna-berg",
        "2026-11-22T12:00:00Z",
        "requested",
    )
    assert get(api, f"/work-orders/{order_id}").json() == order
    last = events(api, order_id)[-1]
    assert last == {
        "at": "2026-11-22T12:00:00Z",
        "actor": "planner-token",
        "from_status": "requested",
        "to_status": "requested",
        "note": "assigned to technician 'anna-berg': closest to the site",
    }


def test_a_new_order_has_nobody_assigned(api: Api) -> None:
    order = get(api, f"/work-orders/{new_order(api)}").json()
    assert (order["technician_id"], order["assigned_at"]) == (None, None)


def test_without_a_skill_only_existence_and_site_are_checked(api: Api) -> None:
    register(api, skills=[])
    response = assign(api, new_order(api))
    assert response.status_code == 200, response.text


def test_the_work_order_list_filters_by_technician(api: Api) -> None:
    register(api)
    register(api, id="bo")
    first, second, third = new_order(api), new_order(api), new_order(api)
    assert assign(api, first).status_code == 200
    assert assign(api, third).status_code == 200
    assert assign(api, second, technician_id="bo").status_code == 200

    def ids(**params: Any) -> list[int]:
        response = get(api, "/work-orders", **params)
        assert response.status_code == 200, response.text
        return [o["id"] for o in response.json()["items"]]

    assert ids(technician_id="anna-berg") == [third, first]
    assert ids(technician_id="bo") == [second]
    assert ids(technician_id="nobody") == []
    assert ids(technician_id="anna-berg", limit=1) == [third]
    assert_problem(get(api, "/work-orders", technician_id="not valid"), 422, "invalid")


def test_a_certification_expiring_today_is_valid_today(api: Api) -> None:
    register(api)
    assert assign(api, new_order(api), skill="welding").status_code == 200


def test_the_assignment_date_is_the_technicians_local_date(api: Api) -> None:
    # 23:30 UTC on the 22nd is already the 23rd in Berlin: welding (until the 22nd) expired.
    register(api)
    api.clock.at = NOW.replace(hour=23, minute=30)
    refused = assign(api, new_order(api), skill="welding")
    body = assert_problem(refused, 409, "certification_expired")
    assert body["on"] == "2026-11-23"
    register(api, id="nyc", time_zone="America/New_York")
    assert assign(api, new_order(api), technician_id="nyc", skill="welding").status_code == 200


@pytest.mark.parametrize(
    ("body", "code", "words", "extensions"),
    [
        (
            {"skill": "hvac"},
            "certification_expired",
            ["'hvac'", "until 2026-11-21", "not valid on 2026-11-22"],
            {"skill": "hvac", "certified_until": "2026-11-21", "technician_id": "anna-berg"},
        ),
        (
            {"skill": "plumbing"},
            "skill_missing",
            ["does not have the skill 'plumbing'", "electrical, hvac, welding"],
            {"skill": "plumbing", "technician_id": "anna-berg"},
        ),
    ],
)
def test_a_technician_without_a_valid_certification_is_refused_with_409(
    api: Api, body: dict[str, Any], code: str, words: list[str], extensions: dict[str, Any]
) -> None:
    register(api)
    order_id = new_order(api)
    before = (get(api, f"/work-orders/{order_id}").json(), events(api, order_id))
    problem = assert_problem(assign(api, order_id, **body), 409, code)
    for word in words:
        assert word in problem["detail"]
    assert extensions.items() <= problem.items()
    assert (get(api, f"/work-orders/{order_id}").json(), events(api, order_id)) == before


def test_a_technician_from_another_site_is_refused_with_409(api: Api) -> None:
    register(api)
    order_id = new_order(api, asset_id="chiller-9")  # at site south
    problem = assert_problem(assign(api, order_id), 409, "not_at_site")
    assert "does not work at site 'south'" in problem["detail"]
    assert (problem["site"], problem["asset_id"]) == ("south", "chiller-9")
    assert get(api, f"/work-orders/{order_id}").json()["technician_id"] is None


@pytest.mark.parametrize("finish", ["cancel", "close"])
def test_a_closed_or_cancelled_order_is_refused_with_409(api: Api, finish: str) -> None:
    register(api)
    order_id = new_order(api)
    steps: list[tuple[str, dict[str, Any]]]
    if finish == "cancel":
        steps = [("cancel", {"note": "duplicate"})]
    else:
        completion = {
            "findings": "ok",
            "failure_code": "NONE",
            "labour_minutes": 5,
            "downtime_minutes": 0,
        }
        steps = [
            ("accept", {}),
            ("start", {}),
            ("resolve", {"completion": completion}),
            ("close", {}),
        ]
    for action, body in steps:
        moved = post(api, f"/work-orders/{order_id}/{action}", "planner", body)
        assert moved.status_code == 200, moved.text
    before = events(api, order_id)
    expected = "cancelled" if finish == "cancel" else "closed"
    problem = assert_problem(assign(api, order_id), 409, "work_order_finished")
    assert f"is {expected}" in problem["detail"]
    assert problem["work_order_status"] == expected
    assert_problem(delete(api, f"/work-orders/{order_id}/assignment"), 409, "work_order_finished")
    assert events(api, order_id) == before


def test_unknown_orders_and_technicians_answer_404(api: Api) -> None:
    order_id = new_order(api)
    problem = assert_problem(assign(api, order_id), 404, "not_found")
    assert problem["detail"] == "technician 'anna-berg' not found"
    register(api)
    assert_problem(assign(api, 999_999), 404, "not_found")
    assert_problem(delete(api, "/work-orders/999999/assignment"), 404, "not_found")
    assert get(api, f"/work-orders/{order_id}").json()["technician_id"] is None


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({}, ["body", "technician_id"]),
        ({"technician_id": "has space"}, ["body", "technician_id"]),
        ({"technician_id": "anna-berg", "skill": "two words"}, ["body", "skill"]),
        ({"technician_id": "anna-berg", "note": "x" * 10_001}, ["body", "note"]),
        (
            {"technician_id": "anna-berg", "starts_at": "2026-11-23T08:00:00Z"},
            ["body", "starts_at"],
        ),
    ],
)
def test_a_bad_assignment_body_answers_422(
    api: Api, body: dict[str, Any], location: list[Any]
) -> None:
    register(api)
    order_id = new_order(api)
    problem = assert_problem(
        post(api, f"/work-orders/{order_id}/assign", "planner", body), 422, "invalid"
    )
    assert location in error_locations(problem)
    assert get(api, f"/work-orders/{order_id}").json()["technician_id"] is None


def test_a_bad_unassignment_note_answers_422(api: Api) -> None:
    register(api)
    order_id = new_order(api)
    assert assign(api, order_id).status_code == 200
    for note in ("nul\x00", "x" * 10_001):
        problem = assert_problem(delete(api, f"/work-orders/{order_id}/assignment", note=note), 422)
        assert ["query", "note"] in error_locations(problem)
    assert get(api, f"/work-orders/{order_id}").json()["technician_id"] == "anna-berg"


def test_assignment_takes_a_planner(api: Api) -> None:
    register(api)
    order_id = new_order(api)
    for role in ("viewer", "technician"):
        assert_problem(assign(api, order_id, role=role), 403, "forbidden")
        assert_problem(delete(api, f"/work-orders/{order_id}/assignment", role=role), 403)
    assert assign(api, order_id, role="admin").status_code == 200


def test_reassigning_replaces_and_unassigning_clears_both_audited(api: Api) -> None:
    register(api)
    register(api, id="bo")
    order_id = new_order(api)
    assert assign(api, order_id).status_code == 200
    same = assign(api, order_id, note="again")
    assert same.status_code == 200
    assert len(events(api, order_id)) == 2  # created, assigned: the repeat changed nothing
    api.clock.at = NOW.replace(hour=14)
    moved = assign(api, order_id, technician_id="bo")
    assert (moved.json()["technician_id"], moved.json()["assigned_at"]) == (
        "bo",
        "2026-11-22T14:00:00Z",
    )
    assert events(api, order_id)[-1]["note"] == "assigned to technician 'bo' (was 'anna-berg')"

    cleared = delete(api, f"/work-orders/{order_id}/assignment", note="bo is ill")
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["technician_id"], cleared.json()["assigned_at"]) == (None, None)
    last = events(api, order_id)[-1]
    assert (last["note"], last["from_status"], last["to_status"]) == (
        "unassigned from technician 'bo': bo is ill",
        "requested",
        "requested",
    )
    again = delete(api, f"/work-orders/{order_id}/assignment")
    assert again.status_code == 200
    assert len(events(api, order_id)) == 4


def test_an_assigned_order_keeps_moving_through_its_lifecycle(api: Api) -> None:
    register(api)
    order_id = new_order(api)
    assert assign(api, order_id).status_code == 200
    for action in ("accept", "start"):
        moved = post(api, f"/work-orders/{order_id}/{action}", "planner", {})
        assert moved.status_code == 200, moved.text
        assert moved.json()["technician_id"] == "anna-berg"
    assert [e["to_status"] for e in events(api, order_id)] == [
        "requested",
        "requested",
        "accepted",
        "in_progress",
    ]
