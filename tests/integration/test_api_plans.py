"""Maintenance plans and site calendars over HTTP, on SQLite and PostgreSQL.

Every refusal answers 422 naming the field (or 404/409), and is checked to change nothing
the API shows. The clock is frozen at 2026-11-22 12:00 UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.assets import Asset
from core.inventory import NewLocation, NewPart, Unit
from tests.integration.test_api import NOW, Api, assert_problem, build_api, error_locations
from tests.integration.test_api_alerts import get, post
from tests.integration.test_api_technicians import delete, put

PLAN: dict[str, Any] = {
    "id": "pump-quarterly",
    "name": "Pump quarterly inspection",
    "description": "Seals, bearings, alignment",
    "asset_id": "pump-1",
    "calendar": {"every": 3, "unit": "months", "starts_at": "2026-01-05T07:00:00Z"},
    "lead_time": "P14D",
    "booking_window": "P7D",
    "estimated_duration": "PT2H",
    "checklist": ["check seals", "grease bearings"],
    "required_skills": ["Mechanical"],
    "parts": [{"sku": "SEAL-1", "location": "main", "quantity": "2"}],
    "priority": "high",
}


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    for api in build_api(database_url):
        api.assets.add(Asset(id="pump-1", name="Feed pump 1", type="pump", site="north"))
        api.assets.add(Asset(id="pump-2", name="Feed pump 2", type="pump", site="north"))
        api.inventory.add_location(NewLocation(code="main", name="Main store", site="north"))
        api.inventory.add_part(NewPart(sku="SEAL-1", name="Seal", unit=Unit.PIECE, category="s"))
        api.inventory.add_part(NewPart(sku="OIL-1", name="Oil", unit=Unit.LITRE, category="o"))
        yield api


def create_plan(api: Api, role: str = "planner", **fields: Any) -> httpx.Response:
    return post(api, "/maintenance-plans", role, {**PLAN, **fields})


def created(api: Api, **fields: Any) -> dict[str, Any]:
    response = create_plan(api, **fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def plan_ids(api: Api, **params: Any) -> list[str]:
    response = get(api, "/maintenance-plans", **params)
    assert response.status_code == 200, response.text
    return [plan["id"] for plan in response.json()["items"]]


# --- create and read ------------------------------------------------------------------


def test_a_plan_is_created_read_and_listed(api: Api) -> None:
    response = create_plan(api)
    assert response.status_code == 201, response.text
    assert response.headers["location"].endswith("/api/v1/maintenance-plans/pump-quarterly")
    body = response.json()
    assert body == {
        **PLAN,
        "asset_type": None,
        "calendar": {**PLAN["calendar"], "rrule": None, "recurrence": "fixed"},
        "meter": None,
        "required_skills": ["mechanical"],  # skills are lower-case
        "missed": "create",
        "enabled": True,
        "created_at": "2026-11-22T12:00:00Z",
        "updated_at": "2026-11-22T12:00:00Z",
    }
    assert get(api, "/maintenance-plans/pump-quarterly").json() == body
    assert get(api, "/maintenance-plans").json() == {"items": [body], "next_cursor": None}


def test_durations_are_iso_8601_and_an_rrule_is_normalised(api: Api) -> None:
    body = created(
        api,
        calendar={"rrule": "rrule:freq=monthly;bymonthday=-1", "starts_at": "2026-01-31T07:00Z"},
        lead_time="P1DT12H",
        booking_window="PT36H",
        estimated_duration="PT90M",
    )
    assert body["calendar"]["rrule"] == "FREQ=MONTHLY;BYMONTHDAY=-1"
    assert (body["lead_time"], body["booking_window"], body["estimated_duration"]) == (
        "P1DT12H",
        "P1DT12H",
        "PT1H30M",
    )


def test_meter_plans_by_asset_type_round_trip(api: Api) -> None:
    body = created(
        api,
        id="motor-hours",
        asset_id=None,
        asset_type="pump",
        calendar=None,
        meter={
            "metric": "motor_current_a",
            "every": 250,
            "source": "motor_current",
            "running_above": 1.5,
            "max_gap": "PT30M",
        },
        parts=[],
    )
    assert body["meter"] == {
        "metric": "motor_current_a",
        "every": 250.0,
        "source": "motor_current",
        "running_above": 1.5,
        "max_gap": "PT30M",
    }
    assert (body["asset_id"], body["asset_type"]) == (None, "pump")
    assert get(api, "/maintenance-plans/motor-hours").json() == body


def test_a_counter_meter_plan_round_trips(api: Api) -> None:
    """A counter has no max_gap: it is answered as null, and the stored plan reads back."""
    body = created(api, meter={"metric": "run_hours", "every": 500})
    assert body["meter"] == {
        "metric": "run_hours",
        "every": 500.0,
        "source": "counter",
        "running_above": None,
        "max_gap": None,
    }
    assert get(api, "/maintenance-plans/pump-quarterly").json() == body
    assert plan_ids(api) == ["pump-quarterly"]


def test_a_taken_id_answers_409_and_keeps_the_first(api: Api) -> None:
    first = created(api)
    taken = assert_problem(create_plan(api, name="Other"), 409, "conflict")
    assert "'pump-quarterly' already exists" in taken["detail"]
    assert get(api, "/maintenance-plans/pump-quarterly").json() == first


def test_an_unknown_plan_answers_404(api: Api) -> None:
    body = assert_problem(get(api, "/maintenance-plans/nothing"), 404, "not_found")
    assert body["detail"] == "maintenance plan 'nothing' not found"
    assert_problem(put(api, "/maintenance-plans/nothing", PLAN | {"id": None}), 404)
    assert_problem(delete(api, "/maintenance-plans/nothing"), 404, "not_found")
    assert_problem(get(api, "/maintenance-plans/has%20space"), 422, "invalid")


# --- refusals -------------------------------------------------------------------------

_EVERY = {"every": 3, "unit": "months", "starts_at": "2026-01-05T07:00:00Z"}


@pytest.mark.parametrize(
    ("fields", "location", "words"),
    [
        ({"asset_id": None}, ["body"], "a plan needs a scope: set asset_id or asset_type"),
        ({"asset_type": "pump"}, ["body"], "asset_id and asset_type are exclusive"),
        ({"calendar": None}, ["body"], "a plan needs a trigger"),
        (
            {"calendar": {**_EVERY, "rrule": "FREQ=WEEKLY"}},
            ["body", "calendar"],
            "calendar.every and calendar.rrule are exclusive",
        ),
        (
            {"calendar": {"rrule": "FREQ=HOURLY", "starts_at": "2026-01-05T07:00:00Z"}},
            ["body", "calendar", "rrule"],
            "FREQ=HOURLY is finer than daily",
        ),
        (
            {"calendar": {"rrule": "FREQ=WEEKLY;BYHOUR=7", "starts_at": "2026-01-05T07:00Z"}},
            ["body", "calendar", "rrule"],
            "BYHOUR is not supported",
        ),
        (
            {
                "calendar": {
                    "rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
                    "starts_at": "2026-01-05T07:00:00Z",
                }
            },
            ["body", "calendar"],
            "yields no occurrence",
        ),
        (
            {"calendar": {**_EVERY, "unit": None}},
            ["body", "calendar"],
            "calendar.unit (days, weeks or months) is required with every",
        ),
        (
            {"calendar": {"rrule": "FREQ=WEEKLY", "recurrence": "floating", **_EVERY}},
            ["body", "calendar"],
            "exclusive",
        ),
        (
            {"calendar": {**_EVERY, "starts_at": "2026-01-05T07:00:00"}},
            ["body", "calendar", "starts_at"],
            "timezone",
        ),
        ({"calendar": {**_EVERY, "every": 0}}, ["body", "calendar", "every"], "greater than"),
        (
            {"meter": {"metric": "current", "every": 10, "source": "motor_current"}},
            ["body", "meter"],
            "meter.running_above is required",
        ),
        (
            {"meter": {"metric": "run_hours", "every": 10, "max_gap": "PT1H"}},
            ["body", "meter"],
            "meter.max_gap only applies to derived sources",
        ),
        ({"meter": {"metric": "run_hours", "every": -1}}, ["body", "meter", "every"], "greater"),
        ({"lead_time": "PT0S"}, ["body", "lead_time"], "must be more than zero"),
        ({"lead_time": "P400D"}, ["body", "lead_time"], "must be at most P366D"),
        ({"lead_time": "two weeks"}, ["body", "lead_time"], "valid timedelta"),
        (
            {"booking_window": "P15D"},
            ["body"],
            "booking_window (P15D) must not exceed lead_time (P14D)",
        ),
        ({"estimated_duration": "P2D"}, ["body", "estimated_duration"], "between PT1M and P1D"),
        (
            {"required_skills": ["hvac", "HVAC"]},
            ["body", "required_skills"],
            "skill 'hvac' is listed twice",
        ),
        (
            {"parts": [{"sku": "SEAL-1", "location": "main", "quantity": 1}] * 2},
            ["body", "parts"],
            "part 'SEAL-1' at location 'main' is listed twice",
        ),
        (
            {"parts": [{"sku": "SEAL-1", "location": "main", "quantity": 0}]},
            ["body", "parts", 0, "quantity"],
            "greater than 0",
        ),
        ({"priority": "urgent"}, ["body", "priority"], "critical"),
        ({"missed": "skip"}, ["body", "missed"], "mark_missed"),
        ({"id": "no spaces"}, ["body", "id"], "pattern"),
        ({"name": ""}, ["body", "name"], "at least 1 character"),
        ({"checklist": [""]}, ["body", "checklist", 0], "at least 1 character"),
        ({"colour": "red"}, ["body", "colour"], "Extra inputs are not permitted"),
        ({"name": "A\x00"}, ["body"], "NUL"),
        ({"checklist": ["ok", "nu\x00l"]}, ["body"], "NUL"),
    ],
)
def test_a_bad_plan_is_refused_with_422_naming_the_field(
    api: Api, fields: dict[str, Any], location: list[Any], words: str
) -> None:
    body = assert_problem(create_plan(api, **fields), 422, "invalid")
    assert location in error_locations(body), body
    assert words in body["detail"], body["detail"]
    assert plan_ids(api) == []


def test_missing_fields_are_named(api: Api) -> None:
    body = assert_problem(post(api, "/maintenance-plans", "planner", {"id": "x"}), 422)
    for field in ("name", "lead_time", "estimated_duration"):
        assert ["body", field] in error_locations(body)


@pytest.mark.parametrize(
    ("fields", "location", "words"),
    [
        ({"asset_id": "pump-99"}, ["body", "asset_id"], "asset 'pump-99' is not registered"),
        (
            {"parts": [{"sku": "GASKET-9", "location": "main", "quantity": 1}]},
            ["body", "parts", 0, "sku"],
            "part 'GASKET-9' is not in the inventory",
        ),
        (
            {
                "parts": [
                    {"sku": "SEAL-1", "location": "main", "quantity": 1},
                    {"sku": "SEAL-1", "location": "van-3", "quantity": 1},
                ]
            },
            ["body", "parts", 1, "location"],
            "stock location 'van-3' does not exist",
        ),
    ],
)
def test_a_plan_naming_what_does_not_exist_is_refused(
    api: Api, fields: dict[str, Any], location: list[Any], words: str
) -> None:
    body = assert_problem(create_plan(api, **fields), 422, "invalid")
    assert error_locations(body) == [location]
    assert words in body["detail"]
    assert plan_ids(api) == []


def test_every_missing_reference_is_named_at_once(api: Api) -> None:
    parts = [{"sku": "NOPE", "location": "nowhere", "quantity": 1}]
    body = assert_problem(create_plan(api, asset_id="pump-99", parts=parts), 422)
    assert error_locations(body) == [
        ["body", "asset_id"],
        ["body", "parts", 0, "sku"],
        ["body", "parts", 0, "location"],
    ]


def test_only_planners_write_plans(api: Api) -> None:
    assert_problem(create_plan(api, role="technician"), 403, "forbidden")
    assert_problem(create_plan(api, role="viewer"), 403, "forbidden")
    created(api)
    change = PLAN | {"name": "x"}
    assert_problem(put(api, "/maintenance-plans/pump-quarterly", change, "technician"), 403)
    assert_problem(delete(api, "/maintenance-plans/pump-quarterly", "technician"), 403)
    assert get(api, "/maintenance-plans/pump-quarterly", "viewer").json()["name"] == PLAN["name"]


# --- replace and delete ---------------------------------------------------------------


def test_put_replaces_the_whole_plan(api: Api) -> None:
    first = created(api)
    api.clock.at = NOW.replace(hour=13)
    change = {k: v for k, v in PLAN.items() if k not in {"id", "parts", "description"}} | {
        "asset_id": "pump-2",
        "calendar": {"rrule": "FREQ=WEEKLY;BYDAY=MO", "starts_at": "2026-01-05T07:00:00Z"},
        "enabled": False,
    }
    response = put(api, "/maintenance-plans/pump-quarterly", change)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["asset_id"] == "pump-2"
    assert body["calendar"]["rrule"] == "FREQ=WEEKLY;BYDAY=MO"
    assert body["enabled"] is False
    # What was left out is back to its default: PUT replaces, it does not merge.
    assert (body["parts"], body["description"]) == ([], "")
    assert (body["created_at"], body["updated_at"]) == (
        first["created_at"],
        "2026-11-22T13:00:00Z",
    )
    assert get(api, "/maintenance-plans/pump-quarterly").json() == body
    again = put(api, "/maintenance-plans/pump-quarterly", change | {"id": "pump-quarterly"})
    assert again.status_code == 200, again.text


def test_put_refusals_change_nothing(api: Api) -> None:
    first = created(api)
    path = "/maintenance-plans/pump-quarterly"
    other_id = assert_problem(put(api, path, PLAN | {"id": "other"}), 422, "invalid")
    assert error_locations(other_id) == [["body", "id"]]
    assert "does not match 'pump-quarterly' in the path" in other_id["detail"]
    invalid = assert_problem(put(api, path, PLAN | {"lead_time": "-P1D"}), 422)
    assert ["body", "lead_time"] in error_locations(invalid)
    unknown = assert_problem(put(api, path, PLAN | {"asset_id": "pump-99"}), 422)
    assert error_locations(unknown) == [["body", "asset_id"]]
    assert get(api, path).json() == first


def test_delete_removes_the_plan(api: Api) -> None:
    created(api)
    created(api, id="other")
    response = delete(api, "/maintenance-plans/pump-quarterly")
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(get(api, "/maintenance-plans/pump-quarterly"), 404)
    assert plan_ids(api) == ["other"]


# --- listing --------------------------------------------------------------------------


def test_the_list_filters_by_scope_and_pages(api: Api) -> None:
    created(api, id="a")
    created(api, id="b", asset_id="pump-2")
    created(api, id="c", asset_id=None, asset_type="pump")
    created(api, id="d", asset_id=None, asset_type="chiller", parts=[])
    assert plan_ids(api) == ["a", "b", "c", "d"]
    assert plan_ids(api, asset_id="pump-1") == ["a"]
    assert plan_ids(api, asset_type="pump") == ["c"]
    assert plan_ids(api, asset_id="pump-9") == []
    page = get(api, "/maintenance-plans", limit=3).json()
    assert ([p["id"] for p in page["items"]], page["next_cursor"]) == (["a", "b", "c"], "c")
    last = get(api, "/maintenance-plans", limit=3, cursor="c").json()
    assert ([p["id"] for p in last["items"]], last["next_cursor"]) == (["d"], None)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"cursor": "not a cursor"}, "cursor"),
        ({"asset_id": "has space"}, "asset_id"),
        ({"asset_type": ""}, "asset_type"),
    ],
)
def test_bad_list_parameters_answer_422(api: Api, params: dict[str, Any], field: str) -> None:
    body = assert_problem(get(api, "/maintenance-plans", **params), 422, "invalid")
    assert ["query", field] in error_locations(body)


def test_quantities_are_exact_and_fit_the_parts_unit(api: Api) -> None:
    oil = {"sku": "OIL-1", "location": "main", "quantity": "0.125"}
    body = created(api, parts=[oil])
    assert body["parts"] == [oil]
    seals = {"sku": "SEAL-1", "location": "main", "quantity": "1.5"}
    problem = assert_problem(create_plan(api, id="other", parts=[oil, seals]), 422, "invalid")
    assert error_locations(problem) == [["body", "parts", 1, "quantity"]]
    assert "quantity must be a whole number of pcs" in problem["detail"]
    assert plan_ids(api) == ["pump-quarterly"]


# --- site calendars -------------------------------------------------------------------

NORTH = {
    "time_zone": "Europe/Berlin",
    "holidays": ["2026-12-26", "2026-12-25"],
    "seasons": [{"start": "11-01", "end": "02-28"}],
}


def test_a_site_calendar_is_created_replaced_read_and_deleted(api: Api) -> None:
    assert_problem(get(api, "/sites/north/calendar"), 404, "not_found")
    response = put(api, "/sites/north/calendar", NORTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {**NORTH, "site": "north", "holidays": ["2026-12-25", "2026-12-26"]}
    assert get(api, "/sites/north/calendar").json() == body
    replaced = put(api, "/sites/north/calendar", {"site": "north", "time_zone": "Asia/Tokyo"})
    assert replaced.status_code == 200, replaced.text
    tokyo = {"site": "north", "time_zone": "Asia/Tokyo", "holidays": [], "seasons": []}
    assert replaced.json() == tokyo
    assert get(api, "/sites/north/calendar").json() == tokyo
    assert_problem(get(api, "/sites/south/calendar"), 404)
    deleted = delete(api, "/sites/north/calendar")
    assert deleted.status_code == 204
    assert_problem(get(api, "/sites/north/calendar"), 404)
    assert_problem(delete(api, "/sites/north/calendar"), 404, "not_found")


def test_a_site_with_spaces_and_accents_has_a_calendar(api: Api) -> None:
    response = put(api, "/sites/Halle%203%20S%C3%BCd/calendar", {"time_zone": "UTC"})
    assert response.status_code == 200, response.text
    assert response.json()["site"] == "Halle 3 Süd"
    assert response.json()["time_zone"] == "UTC"
    assert get(api, "/sites/Halle 3 Süd/calendar").json() == response.json()


@pytest.mark.parametrize(
    ("body", "location", "words"),
    [
        ({"time_zone": "Europe/Atlantis"}, ["body", "time_zone"], "unknown time zone"),
        ({"holidays": ["2026-12-25", "2026-12-25"]}, ["body", "holidays"], "listed twice"),
        ({"holidays": ["2026-13-01"]}, ["body", "holidays", 0], "date"),
        (
            {"seasons": [{"start": "13-01", "end": "02-01"}]},
            ["body", "seasons", 0, "start"],
            "MM-DD",
        ),
        ({"seasons": [{"start": "02-30", "end": "03-01"}]}, ["body", "seasons", 0, "start"], "day"),
        ({"time_zone": "UTC", "site": "south"}, ["body", "site"], "does not match 'north'"),
        ({"holidays": []}, ["body", "time_zone"], "Field required"),
        ({"weekends": True}, ["body", "weekends"], "Extra inputs"),
    ],
)
def test_a_bad_site_calendar_is_refused_and_changes_nothing(
    api: Api, body: dict[str, Any], location: list[Any], words: str
) -> None:
    put(api, "/sites/north/calendar", NORTH)
    before = get(api, "/sites/north/calendar").json()
    problem = assert_problem(put(api, "/sites/north/calendar", body), 422, "invalid")
    assert location in error_locations(problem), problem
    assert words in problem["detail"]
    assert get(api, "/sites/north/calendar").json() == before


def test_only_planners_write_site_calendars(api: Api) -> None:
    assert_problem(put(api, "/sites/north/calendar", NORTH, "technician"), 403)
    put(api, "/sites/north/calendar", NORTH)
    assert_problem(delete(api, "/sites/north/calendar", "viewer"), 403)
    assert get(api, "/sites/north/calendar", "viewer").status_code == 200
