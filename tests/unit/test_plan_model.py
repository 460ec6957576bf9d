"""Maintenance plans and site calendars as data: defaults, JSON shape, and every refusal."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.errors import ValidationError
from core.priority import Priority
from scheduler.model import (
    CalendarTrigger,
    IntervalUnit,
    MaintenancePlan,
    MeterSource,
    MissedPolicy,
    NewMaintenancePlan,
    Recurrence,
    Season,
    SiteCalendar,
    iso_duration,
    parse_plan,
    parse_rrule,
    parse_site_calendar,
)

STARTS_AT = "2026-01-05T07:00:00Z"


def plan_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "pump-quarterly",
        "name": "Pump quarterly inspection",
        "asset_type": "pump",
        "calendar": {"every": 3, "unit": "months", "starts_at": STARTS_AT},
        "lead_time": "P14D",
        "estimated_duration": "PT2H",
    }
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def refusal(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        parse_plan(data)
    assert caught.value.code == "invalid"
    return caught.value.detail


def test_a_minimal_plan_takes_the_documented_defaults() -> None:
    plan = parse_plan(plan_data())

    assert plan.booking_window == timedelta(days=7)
    assert plan.priority is Priority.MEDIUM
    assert plan.missed is MissedPolicy.CREATE
    assert plan.enabled is True
    assert plan.description == ""
    assert plan.checklist == []
    assert plan.calendar == CalendarTrigger(
        every=3,
        unit=IntervalUnit.MONTHS,
        recurrence=Recurrence.FIXED,
        starts_at=datetime(2026, 1, 5, 7, tzinfo=UTC),
    )
    assert plan.is_cycle_based is False


def test_durations_and_quantities_round_trip_through_json_as_iso_8601() -> None:
    plan = parse_plan(
        plan_data(
            booking_window="P3DT12H",
            meter={"metric": "run_hours", "every": 500},
            parts=[{"sku": "FLT-10", "location": "main", "quantity": "2.5"}],
            required_skills=["HVAC", "electrical"],
            checklist=["check seals", "grease bearings"],
        )
    )
    dumped = json.loads(plan.model_dump_json())

    assert dumped["lead_time"] == "P14D"
    assert dumped["booking_window"] == "P3DT12H"
    assert dumped["estimated_duration"] == "PT2H"
    assert dumped["meter"]["max_gap"] == "PT15M"
    assert dumped["required_skills"] == ["electrical", "hvac"]
    assert parse_plan(dumped) == plan
    assert plan.parts[0].quantity == Decimal("2.5")
    assert plan.is_cycle_based is True


def test_a_stored_plan_carries_its_timestamps_in_utc() -> None:
    stored = MaintenancePlan.model_validate(
        {
            **plan_data(),
            "created_at": "2026-01-01T09:00:00+01:00",
            "updated_at": "2026-01-02T00:00:00Z",
        }
    )

    assert stored.created_at == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert stored.created_at.tzinfo is UTC
    assert isinstance(stored, NewMaintenancePlan)


@pytest.mark.parametrize(
    ("rule", "stored"),
    [
        ("FREQ=MONTHLY;BYMONTHDAY=-1", "FREQ=MONTHLY;BYMONTHDAY=-1"),
        ("rrule:freq=weekly;byday=mo,th", "FREQ=WEEKLY;BYDAY=MO,TH"),
        ("FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=1;UNTIL=20301231T000000Z", None),
        ("FREQ=DAILY;COUNT=10", None),
    ],
)
def test_rrules_are_accepted_and_stored_upper_case(rule: str, stored: str | None) -> None:
    plan = parse_plan(plan_data(calendar={"rrule": rule, "starts_at": STARTS_AT}))

    assert plan.calendar is not None
    assert plan.calendar.rrule == (stored or rule)


def test_a_floating_calendar_and_a_meter_source_are_read() -> None:
    plan = parse_plan(
        plan_data(
            calendar={
                "every": 90,
                "unit": "days",
                "recurrence": "floating",
                "starts_at": STARTS_AT,
            },
            meter={
                "metric": "motor_current_a",
                "every": 250,
                "source": "motor_current",
                "running_above": 5.0,
                "max_gap": "PT30M",
            },
        )
    )

    assert plan.calendar is not None
    assert plan.calendar.recurrence is Recurrence.FLOATING
    assert plan.meter is not None
    assert plan.meter.source is MeterSource.MOTOR_CURRENT
    assert plan.meter.max_gap == timedelta(minutes=30)


CALENDAR = {"every": 1, "unit": "months", "starts_at": STARTS_AT}
RULE = {"rrule": "FREQ=MONTHLY", "starts_at": STARTS_AT}
METER = {"metric": "run_hours", "every": 500}

REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    (
        "every with rrule",
        {"calendar": {**CALENDAR, "rrule": "FREQ=MONTHLY"}},
        "calendar.every and calendar.rrule are exclusive",
    ),
    (
        "unit with rrule",
        {"calendar": {**RULE, "unit": "days"}},
        "calendar.unit and calendar.rrule are exclusive",
    ),
    (
        "neither rrule nor every",
        {"calendar": {"starts_at": STARTS_AT}},
        "calendar needs calendar.rrule, or calendar.every with calendar.unit",
    ),
    (
        "every without unit",
        {"calendar": {"every": 3, "starts_at": STARTS_AT}},
        "calendar.unit (days, weeks or months) is required with every",
    ),
    (
        "unit without every",
        {"calendar": {"unit": "weeks", "starts_at": STARTS_AT}},
        "calendar.every is required with calendar.unit",
    ),
    (
        "floating rrule",
        {"calendar": {**RULE, "recurrence": "floating"}},
        "calendar.recurrence 'floating' needs calendar.every and calendar.unit: "
        "an rrule series is always fixed",
    ),
    (
        "hourly rrule",
        {"calendar": {**RULE, "rrule": "FREQ=HOURLY;INTERVAL=8"}},
        "calendar.rrule: FREQ=HOURLY is finer than daily: plans recur at most once a day",
    ),
    (
        "minutely rrule",
        {"calendar": {**RULE, "rrule": "FREQ=MINUTELY"}},
        "calendar.rrule: FREQ=MINUTELY is finer than daily",
    ),
    (
        "secondly rrule",
        {"calendar": {**RULE, "rrule": "FREQ=SECONDLY"}},
        "calendar.rrule: FREQ=SECONDLY is finer than daily",
    ),
    (
        "unknown frequency",
        {"calendar": {**RULE, "rrule": "FREQ=FORTNIGHTLY"}},
        "calendar.rrule: FREQ=FORTNIGHTLY is unknown",
    ),
    (
        "no FREQ",
        {"calendar": {**RULE, "rrule": "BYDAY=MO"}},
        "calendar.rrule: FREQ is required",
    ),
    (
        "DTSTART inside",
        {"calendar": {**RULE, "rrule": "DTSTART:20260101T080000\nRRULE:FREQ=DAILY"}},
        "calendar.rrule: must be one RRULE body such as 'FREQ=MONTHLY;BYMONTHDAY=-1' "
        "without DTSTART",
    ),
    (
        "BYHOUR",
        {"calendar": {**RULE, "rrule": "FREQ=DAILY;BYHOUR=8,16"}},
        "calendar.rrule: BYHOUR is not supported: every occurrence is at the time of day of "
        "starts_at",
    ),
    (
        "INTERVAL=0",
        {"calendar": {**RULE, "rrule": "FREQ=DAILY;INTERVAL=0"}},
        "calendar.rrule: INTERVAL=0 must be at least 1",
    ),
    (
        "COUNT=0",
        {"calendar": {**RULE, "rrule": "FREQ=DAILY;COUNT=0"}},
        "calendar.rrule: COUNT=0 must be at least 1",
    ),
    (
        "COUNT and UNTIL",
        {"calendar": {**RULE, "rrule": "FREQ=DAILY;COUNT=3;UNTIL=20270101"}},
        "calendar.rrule: COUNT and UNTIL are exclusive",
    ),
    (
        "malformed UNTIL",
        {"calendar": {**RULE, "rrule": "FREQ=DAILY;UNTIL=2027-01-01"}},
        "calendar.rrule: UNTIL=2027-01-01 is not a date",
    ),
    (
        "a part twice",
        {"calendar": {**RULE, "rrule": "FREQ=DAILY;FREQ=WEEKLY"}},
        "calendar.rrule: FREQ is given twice",
    ),
    (
        "not NAME=VALUE",
        {"calendar": {**RULE, "rrule": "FREQ=DAILY;WEEKLY"}},
        "calendar.rrule: 'WEEKLY' is not NAME=VALUE",
    ),
    (
        "unknown part",
        {"calendar": {**RULE, "rrule": "FREQ=DAILY;BYFOO=1"}},
        "calendar.rrule: is not a valid RRULE (unknown parameter 'BYFOO')",
    ),
    (
        "an empty series",
        {"calendar": {**RULE, "rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}},
        "calendar.rrule 'FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30' yields no occurrence within 10 "
        "years of calendar.starts_at",
    ),
    (
        "a series that ended before it starts",
        {"calendar": {**RULE, "rrule": "FREQ=DAILY;UNTIL=20251231"}},
        "yields no occurrence within 10 years",
    ),
    (
        "every 0",
        {"calendar": {**CALENDAR, "every": 0}},
        "calendar.every: Input should be greater than or equal to 1",
    ),
    (
        "every 1001",
        {"calendar": {**CALENDAR, "every": 1001}},
        "calendar.every: Input should be less than or equal to 1000",
    ),
    (
        "unit years",
        {"calendar": {**CALENDAR, "unit": "years"}},
        "calendar.unit: Input should be 'days', 'weeks' or 'months'",
    ),
    (
        "naive starts_at",
        {"calendar": {**CALENDAR, "starts_at": "2026-01-05T08:00:00"}},
        "calendar.starts_at: Input should have timezone info",
    ),
    (
        "starts_at long ago",
        {"calendar": {**CALENDAR, "starts_at": "1969-12-31T00:00:00Z"}},
        "calendar.starts_at: must be in the years 1970 to 2999",
    ),
    (
        "motor current without running_above",
        {"meter": {**METER, "source": "motor_current"}},
        "meter.running_above is required when meter.source is 'motor_current'",
    ),
    (
        "running_above on a counter",
        {"meter": {**METER, "running_above": 5}},
        "meter.running_above only applies to meter.source 'motor_current', not 'counter'",
    ),
    (
        "running_above on a running state",
        {"meter": {**METER, "source": "running_state", "running_above": 0.5}},
        "meter.running_above only applies to meter.source 'motor_current', not 'running_state'",
    ),
    (
        "max_gap on a counter",
        {"meter": {**METER, "max_gap": "PT1H"}},
        "meter.max_gap only applies to derived sources (running_state, motor_current)",
    ),
    (
        "max_gap zero",
        {"meter": {**METER, "source": "running_state", "max_gap": "PT0S"}},
        "meter.max_gap: must be more than zero and at most P7D, got PT0S",
    ),
    (
        "meter every 0",
        {"meter": {**METER, "every": 0}},
        "meter.every: Input should be greater than 0",
    ),
    (
        "meter every NaN",
        {"meter": {**METER, "every": "NaN"}},
        "meter.every: Input should be a finite number",
    ),
    (
        "bad metric name",
        {"meter": {**METER, "metric": "run hours"}},
        "meter.metric: String should match pattern",
    ),
    (
        "both scopes",
        {"asset_id": "pump-7"},
        "asset_id and asset_type are exclusive: a plan covers one asset or every asset of one type",
    ),
    ("no scope", {"asset_type": None}, "a plan needs a scope: set asset_id or asset_type"),
    (
        "no trigger",
        {"calendar": None},
        "a plan needs a trigger: set calendar, meter, or both (whichever comes first)",
    ),
    (
        "booking window beyond lead time",
        {"lead_time": "P7D", "booking_window": "P10D"},
        "booking_window (P10D) must not exceed lead_time (P7D)",
    ),
    ("zero lead time", {"lead_time": "PT0S"}, "lead_time: must be more than zero, got PT0S"),
    ("negative lead time", {"lead_time": "-P1D"}, "lead_time: must be more than zero, got -P1D"),
    ("huge lead time", {"lead_time": "P400D"}, "lead_time: must be at most P366D, got P400D"),
    (
        "zero booking window",
        {"booking_window": "PT0S"},
        "booking_window: must be more than zero, got PT0S",
    ),
    (
        "too short a job",
        {"estimated_duration": "PT30S"},
        "estimated_duration: must be between PT1M and P1D, got PT30S",
    ),
    (
        "too long a job",
        {"estimated_duration": "P1DT1M"},
        "estimated_duration: must be between PT1M and P1D, got P1DT1M",
    ),
    (
        "empty checklist item",
        {"checklist": ["ok", ""]},
        "checklist.1: String should have at least 1 character",
    ),
    (
        "long checklist item",
        {"checklist": ["x" * 501]},
        "checklist.0: String should have at most 500 characters",
    ),
    (
        "too many checklist items",
        {"checklist": ["step"] * 201},
        "checklist: List should have at most 200 items",
    ),
    (
        "a skill twice, in two cases",
        {"required_skills": ["HVAC", "hvac"]},
        "required_skills: skill 'hvac' is listed twice",
    ),
    (
        "a malformed skill",
        {"required_skills": ["high voltage"]},
        "required_skills.0: String should match pattern",
    ),
    (
        "a part twice",
        {
            "parts": [
                {"sku": "FLT-10", "location": "main", "quantity": 1},
                {"sku": "FLT-10", "location": "main", "quantity": 2},
            ]
        },
        "parts: part 'FLT-10' at location 'main' is listed twice",
    ),
    (
        "a part without quantity",
        {"parts": [{"sku": "FLT-10", "location": "main", "quantity": 0}]},
        "parts.0.quantity: Input should be greater than 0",
    ),
    ("an unknown priority", {"priority": "urgent"}, "priority: Input should be 'critical'"),
    ("an unknown policy", {"missed": "skip"}, "missed: Input should be 'create' or 'mark_missed'"),
    ("an unknown field", {"colour": "red"}, "colour: Extra inputs are not permitted"),
    ("a bad id", {"id": "pump quarterly"}, "id: String should match pattern"),
    ("an empty name", {"name": ""}, "name: String should have at least 1 character"),
]


@pytest.mark.parametrize(
    ("changes", "message"),
    [pytest.param(changes, message, id=case) for case, changes, message in REFUSALS],
)
def test_each_refusal_names_the_field_and_the_problem(
    changes: dict[str, Any], message: str
) -> None:
    assert message in refusal(plan_data(**changes))


def test_several_problems_are_all_reported() -> None:
    detail = refusal(plan_data(name="", lead_time="PT0S"))

    assert "name: String should have at least 1 character" in detail
    assert "lead_time: must be more than zero, got PT0S" in detail


def test_the_validation_error_carries_the_structured_errors() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_plan(plan_data(lead_time="PT0S"))

    assert [error["loc"] for error in caught.value.extra["errors"]] == [("lead_time",)]


def test_parse_rrule_splits_until_off_and_makes_the_week_start_explicit() -> None:
    rule = parse_rrule("FREQ=WEEKLY;BYDAY=MO;UNTIL=20271231T235959Z")

    assert rule.body == "FREQ=WEEKLY;BYDAY=MO;WKST=MO"
    assert rule.until_at == datetime(2027, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert rule.until_local is None
    # A date UNTIL ends with that local day: a naive wall-clock time.
    end_of_day = datetime(2027, 12, 31, 23, 59, 59, 999999)  # noqa: DTZ001
    assert parse_rrule("FREQ=DAILY;UNTIL=20271231").until_local == end_of_day


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(days=10), "P10D"),
        (timedelta(minutes=15), "PT15M"),
        (timedelta(days=1, hours=2), "P1DT2H"),
        (timedelta(days=400), "P400D"),
        (timedelta(0), "PT0S"),
        (timedelta(days=-1), "-P1D"),
        (timedelta(seconds=1.5), "PT1.5S"),
    ],
)
def test_iso_duration_counts_days_and_time(value: timedelta, text: str) -> None:
    assert iso_duration(value) == text


# --- site calendars ---------------------------------------------------------------------


def test_the_default_site_calendar_is_utc_all_year_without_holidays() -> None:
    site = SiteCalendar.default("plant-north")

    assert (site.site, site.time_zone, site.holidays, site.seasons) == (
        "plant-north",
        "UTC",
        [],
        [],
    )
    assert site.unrestricted
    assert site.allows(date(2026, 12, 25))


def test_holidays_are_kept_sorted() -> None:
    site = parse_site_calendar(
        {
            "site": "north",
            "time_zone": "Europe/Berlin",
            "holidays": ["2026-12-26", "2026-12-25", "2026-05-01"],
        }
    )

    assert site.holidays == [date(2026, 5, 1), date(2026, 12, 25), date(2026, 12, 26)]
    assert not site.allows(date(2026, 12, 25))
    assert site.next_allowed(date(2026, 12, 25)) == date(2026, 12, 27)
    assert site.next_allowed(date(2026, 12, 24)) == date(2026, 12, 24)


@pytest.mark.parametrize(
    ("season", "inside", "outside"),
    [
        (
            Season(start="04-01", end="10-31"),
            [date(2026, 4, 1), date(2026, 10, 31)],
            [
                date(2026, 3, 31),
                date(2026, 11, 1),
            ],
        ),
        (
            Season(start="11-01", end="02-28"),
            [date(2026, 11, 1), date(2027, 1, 15)],
            [
                date(2026, 10, 31),
                date(2028, 2, 29),
                date(2027, 3, 1),
            ],
        ),
        (Season(start="07-04", end="07-04"), [date(2026, 7, 4)], [date(2026, 7, 5)]),
    ],
)
def test_seasons_are_inclusive_and_may_wrap_over_new_year(
    season: Season, inside: list[date], outside: list[date]
) -> None:
    assert all(season.contains(day) for day in inside)
    assert not any(season.contains(day) for day in outside)


def test_outside_every_season_the_next_allowed_day_is_the_next_season_start() -> None:
    site = SiteCalendar(
        site="quarry",
        time_zone="UTC",
        seasons=[Season(start="04-01", end="06-30"), Season(start="09-01", end="10-31")],
        holidays=[date(2027, 4, 1)],
    )

    assert site.next_allowed(date(2026, 7, 15)) == date(2026, 9, 1)
    assert site.next_allowed(date(2026, 11, 1)) == date(2027, 4, 2)  # 1 April is a holiday


SITE_REFUSALS: list[tuple[dict[str, Any], str]] = [
    (
        {"time_zone": "Europe/Atlantis"},
        "time_zone: unknown time zone 'Europe/Atlantis': use an IANA name",
    ),
    ({"holidays": ["2026-12-25", "2026-12-25"]}, "holidays: holiday 2026-12-25 is listed twice"),
    ({"holidays": ["2026-13-01"]}, "holidays.0: Input should be a valid date"),
    (
        {"seasons": [{"start": "13-01", "end": "02-01"}]},
        "seasons.0.start: must be a month and day as MM-DD, such as '11-01', got '13-01'",
    ),
    ({"seasons": [{"start": "02-30", "end": "03-01"}]}, "seasons.0.start: '02-30' is not a day"),
    ({"seasons": [{"start": "04-01"}]}, "seasons.0.end: Field required"),
    ({"site": ""}, "site: String should have at least 1 character"),
    ({"zone": "UTC"}, "zone: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("changes", "message"), SITE_REFUSALS)
def test_site_calendar_refusals_name_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_site_calendar({"site": "north", "time_zone": "UTC", **changes})

    assert message in caught.value.detail


def test_a_site_calendar_names_its_zone() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_site_calendar({"site": "north"})

    assert caught.value.detail == "time_zone: Field required"


def test_a_season_of_only_29_february_has_an_allowed_day_within_the_search() -> None:
    site = SiteCalendar(site="odd", time_zone="UTC", seasons=[Season(start="02-29", end="02-29")])

    assert site.next_allowed(date(2097, 3, 1)) == date(2104, 2, 29)  # 2100 is no leap year
    assert site.next_allowed(date(9999, 3, 1)) is None


def test_a_copied_calendar_with_other_holidays_allows_other_days() -> None:
    site = SiteCalendar(site="north", time_zone="UTC", holidays=[date(2026, 12, 25)])
    assert not site.allows(date(2026, 12, 25))

    moved = site.model_copy(update={"holidays": [date(2026, 12, 24)], "time_zone": "Asia/Tokyo"})

    assert moved.allows(date(2026, 12, 25))
    assert not moved.allows(date(2026, 12, 24))
    assert moved.zone.key == "Asia/Tokyo"
    assert moved.cache_key != site.cache_key
