"""When plans fall due: fixed and floating series, meters, site calendars, DST, catch-up."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.wallclock import local_to_utc
from scheduler.meters import MeterReading, meter_since
from scheduler.model import MaintenancePlan, MeterTrigger, Season, SiteCalendar
from scheduler.occurrences import (
    MAX_OCCURRENCES,
    Occurrence,
    PlanProgress,
    _walk,
    cycle_baseline,
    cycle_key,
    due_occurrences,
)

CREATED = datetime(2026, 1, 1, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
NOTHING = PlanProgress()
UTC_SITE = SiteCalendar.default("north")
BERLIN_SITE = SiteCalendar(site="north", time_zone="Europe/Berlin")
PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def wall(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A local wall-clock reading: naive on purpose, as series are computed in local time."""
    return datetime(year, month, day, hour, minute)  # noqa: DTZ001


def plan(
    calendar: dict[str, Any] | None = None,
    meter: dict[str, Any] | None = None,
    **fields: Any,
) -> MaintenancePlan:
    return MaintenancePlan.model_validate(
        {
            "id": "p1",
            "name": "Inspection",
            "asset_type": "pump",
            "calendar": calendar,
            "meter": meter,
            "lead_time": "P30D",
            "estimated_duration": "PT1H",
            "created_at": CREATED,
            "updated_at": CREATED,
            **fields,
        }
    )


def every(n: int, unit: str, starts_at: datetime | str, **more: Any) -> dict[str, Any]:
    return {"every": n, "unit": unit, "starts_at": starts_at, **more}


def rule(text: str, starts_at: datetime | str) -> dict[str, Any]:
    return {"rrule": text, "starts_at": starts_at}


def meter_of(subject: MaintenancePlan) -> MeterTrigger:
    assert subject.meter is not None
    return subject.meter


def dues(occurrences: Sequence[Occurrence]) -> list[datetime]:
    return [occurrence.due_at for occurrence in occurrences]


def local_dues(occurrences: Sequence[Occurrence], zone: ZoneInfo) -> list[datetime]:
    return [occurrence.due_at.astimezone(zone).replace(tzinfo=None) for occurrence in occurrences]


def pump_counter(
    start: datetime, days: int, hours_per_day: int, *, reset_on_day: int | None = None
) -> list[tuple[datetime, float]]:
    """Hourly run-hours readings of a pump running from 06:00 for `hours_per_day` hours."""
    points: list[tuple[datetime, float]] = []
    total = offset = 0.0
    for hour in range(days * 24 + 1):
        at = start + timedelta(hours=hour)
        if 6 < at.hour <= 6 + hours_per_day:  # the hour up to this reading ran
            total += 1
        if reset_on_day is not None and hour == reset_on_day * 24:
            offset = total  # a new counter is fitted at midnight: it reads from 0
        points.append((at, total - offset))
    return points


# --- fixed series -----------------------------------------------------------------------


def test_a_fixed_daily_series_starts_at_starts_at_and_is_keyed_by_due_time() -> None:
    daily = plan(every(1, "days", utc(2026, 1, 5, 8)))

    found = due_occurrences(daily, UTC_SITE, NOTHING, None, CREATED, utc(2026, 1, 8, 8))

    assert found == [
        Occurrence(due_at=utc(2026, 1, day, 8), trigger="calendar", cycle_key=None, missed=False)
        for day in (5, 6, 7, 8)
    ]


@pytest.mark.parametrize(
    "completed_at",
    [
        pytest.param(None, id="not done"),
        pytest.param(utc(2026, 1, 30, 9), id="done early, before it was due"),
        pytest.param(utc(2026, 2, 5, 16), id="done late, three days after"),
    ],
)
def test_completion_never_moves_a_fixed_series(completed_at: datetime | None) -> None:
    mondays = plan(every(1, "weeks", utc(2026, 1, 5, 8)))  # 5 January 2026 is a Monday
    progress = PlanProgress(last_due_at=utc(2026, 2, 2, 8), last_completed_at=completed_at)

    found = due_occurrences(mondays, UTC_SITE, progress, None, utc(2026, 2, 6), utc(2026, 2, 24))

    assert dues(found) == [utc(2026, 2, 9, 8), utc(2026, 2, 16, 8), utc(2026, 2, 23, 8)]


def test_a_fixed_series_never_falls_due_before_the_plan_existed() -> None:
    daily = plan(every(1, "days", utc(2026, 1, 5, 8)), created_at=utc(2026, 1, 10, 12))

    found = due_occurrences(daily, UTC_SITE, NOTHING, None, utc(2026, 1, 10, 12), utc(2026, 1, 13))

    assert dues(found) == [utc(2026, 1, 11, 8), utc(2026, 1, 12, 8)]


def test_an_rrule_series_follows_the_rule_from_starts_at() -> None:
    first_mondays = plan(rule("FREQ=MONTHLY;BYDAY=1MO", utc(2026, 1, 1, 9, 30)))

    found = due_occurrences(first_mondays, UTC_SITE, NOTHING, None, CREATED, utc(2026, 5, 1))

    assert dues(found) == [
        utc(2026, 1, 5, 9, 30),
        utc(2026, 2, 2, 9, 30),
        utc(2026, 3, 2, 9, 30),
        utc(2026, 4, 6, 9, 30),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FREQ=WEEKLY;COUNT=3", [utc(2026, 1, 5, 8), utc(2026, 1, 12, 8), utc(2026, 1, 19, 8)]),
        ("FREQ=WEEKLY;UNTIL=20260112T080000Z", [utc(2026, 1, 5, 8), utc(2026, 1, 12, 8)]),
        ("FREQ=WEEKLY;UNTIL=20260112", [utc(2026, 1, 5, 8), utc(2026, 1, 12, 8)]),
        ("FREQ=WEEKLY;UNTIL=20260112T075959Z", [utc(2026, 1, 5, 8)]),
    ],
)
def test_an_rrule_series_ends_at_count_or_until(text: str, expected: list[datetime]) -> None:
    found = due_occurrences(
        plan(rule(text, utc(2026, 1, 5, 8))), UTC_SITE, NOTHING, None, CREATED, utc(2026, 6, 1)
    )

    assert dues(found) == expected


# --- month ends -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("calendar", "expected_days"),
    [
        pytest.param(
            every(1, "months", utc(2028, 1, 31, 8)),
            [date(2028, 1, 31), date(2028, 2, 29), date(2028, 3, 31), date(2028, 4, 30)],
            id="every month from the 31st, leap year",
        ),
        pytest.param(
            every(1, "months", utc(2026, 8, 31, 8)),
            [date(2026, 8, 31), date(2026, 9, 30), date(2026, 10, 31), date(2026, 11, 30)],
            id="the 31st clamps without drifting to the 30th",
        ),
        pytest.param(
            every(2, "months", utc(2026, 12, 31, 8)),
            [date(2026, 12, 31), date(2027, 2, 28), date(2027, 4, 30), date(2027, 6, 30)],
            id="every two months from the 31st",
        ),
        pytest.param(
            rule("FREQ=MONTHLY;BYMONTHDAY=-1", utc(2027, 1, 1, 8)),
            [date(2027, 1, 31), date(2027, 2, 28), date(2027, 3, 31), date(2027, 4, 30)],
            id="RRULE last day of the month",
        ),
    ],
)
def test_month_ends(calendar: dict[str, Any], expected_days: list[date]) -> None:
    monthly = plan(calendar, created_at=calendar["starts_at"])

    found = due_occurrences(monthly, UTC_SITE, NOTHING, None, CREATED, utc(2030, 1, 1))

    assert [due.date() for due in dues(found)[:4]] == expected_days
    assert all(due.time() == time(8) for due in dues(found))


# --- DST --------------------------------------------------------------------------------


def test_eight_oclock_in_berlin_stays_eight_oclock_across_both_dst_changes() -> None:
    daily = plan(every(1, "days", "2026-03-27T08:00:00+01:00"))
    spring = due_occurrences(daily, BERLIN_SITE, NOTHING, None, CREATED, utc(2026, 3, 31))
    autumn = due_occurrences(
        daily,
        BERLIN_SITE,
        PlanProgress(last_due_at=utc(2026, 10, 22, 6)),
        None,
        CREATED,
        utc(2026, 10, 27),
    )

    # 2026: summer time from Sunday 29 March, winter time again from Sunday 25 October.
    assert dues(spring) == [
        utc(2026, 3, 27, 7),
        utc(2026, 3, 28, 7),
        utc(2026, 3, 29, 6),
        utc(2026, 3, 30, 6),
    ]
    assert dues(autumn) == [
        utc(2026, 10, 23, 6),
        utc(2026, 10, 24, 6),
        utc(2026, 10, 25, 7),
        utc(2026, 10, 26, 7),
    ]
    assert {local.time() for local in local_dues(spring + autumn, BERLIN)} == {time(8)}


def test_a_time_the_clocks_skip_is_due_at_the_first_instant_after_the_jump() -> None:
    nightly = plan(every(1, "days", "2026-03-28T02:30:00+01:00"))

    found = due_occurrences(nightly, BERLIN_SITE, NOTHING, None, CREATED, utc(2026, 3, 31))

    assert dues(found) == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 02:30 does not exist: 03:00 CEST, the jump
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_a_time_the_clocks_repeat_is_due_at_its_first_occurrence() -> None:
    nightly = plan(every(1, "days", "2026-10-24T02:30:00+02:00"))

    found = due_occurrences(nightly, BERLIN_SITE, NOTHING, None, CREATED, utc(2026, 10, 27))

    assert dues(found) == [
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]


def test_a_weekly_rrule_keeps_its_local_time_across_dst() -> None:
    mondays = plan(rule("FREQ=WEEKLY;BYDAY=MO", "2026-03-16T08:00:00+01:00"))

    found = due_occurrences(mondays, BERLIN_SITE, NOTHING, None, CREATED, utc(2026, 4, 7))

    assert dues(found) == [
        utc(2026, 3, 16, 7),
        utc(2026, 3, 23, 7),
        utc(2026, 3, 30, 6),
        utc(2026, 4, 6, 6),
    ]


@pytest.mark.parametrize(
    ("wall", "instant"),
    [
        (wall(2026, 3, 29, 2, 0), utc(2026, 3, 29, 1)),
        (wall(2026, 3, 29, 2, 59), utc(2026, 3, 29, 1)),
        (wall(2026, 3, 29, 3, 0), utc(2026, 3, 29, 1)),
        (wall(2026, 10, 25, 2, 30), utc(2026, 10, 25, 0, 30)),
        (wall(2026, 10, 25, 3, 0), utc(2026, 10, 25, 2)),
        (wall(2026, 7, 1, 12, 0), utc(2026, 7, 1, 10)),
    ],
)
def test_local_to_utc_in_berlin(wall: datetime, instant: datetime) -> None:
    assert local_to_utc(wall, BERLIN) == instant


# --- site calendars ---------------------------------------------------------------------


def test_a_holiday_moves_its_occurrence_to_the_next_day_where_two_collapse_into_one() -> None:
    daily = plan(every(1, "days", "2026-12-23T08:00:00+01:00"))
    christmas = SiteCalendar(site="north", time_zone="Europe/Berlin", holidays=[date(2026, 12, 25)])

    found = due_occurrences(daily, christmas, NOTHING, None, CREATED, utc(2026, 12, 28))

    assert [local.date() for local in local_dues(found, BERLIN)] == [
        date(2026, 12, 23),
        date(2026, 12, 24),
        date(2026, 12, 26),  # the 25th moved here and is one occurrence with the 26th's
        date(2026, 12, 27),
    ]


def test_a_weekly_job_on_a_holiday_moves_forward_and_is_never_dropped() -> None:
    fridays = plan(every(1, "weeks", "2026-12-04T08:00:00+01:00"))
    holidays = SiteCalendar(
        site="north", time_zone="Europe/Berlin", holidays=[date(2026, 12, 25), date(2027, 1, 1)]
    )

    found = due_occurrences(fridays, holidays, NOTHING, None, CREATED, utc(2027, 1, 9))

    assert local_dues(found, BERLIN) == [
        wall(2026, 12, 4, 8),
        wall(2026, 12, 11, 8),
        wall(2026, 12, 18, 8),
        wall(2026, 12, 26, 8),  # Christmas Friday: Saturday, same time
        wall(2027, 1, 2, 8),  # New Year Friday: Saturday
        wall(2027, 1, 8, 8),
    ]


def test_outside_the_season_occurrences_wait_for_it_and_collapse_into_one() -> None:
    monthly = plan(every(1, "months", utc(2026, 1, 15, 8)))
    summer = SiteCalendar(
        site="quarry", time_zone="UTC", seasons=[Season(start="04-01", end="10-31")]
    )

    found = due_occurrences(monthly, summer, NOTHING, None, CREATED, utc(2027, 4, 10))

    assert dues(found) == [
        utc(2026, 4, 1, 8),  # January, February and March wait for the season: one job
        *(utc(2026, month, 15, 8) for month in range(4, 11)),
        utc(2027, 4, 1, 8),  # November to March: one job when the next season opens
    ]


def test_collapsed_occurrences_stay_collapsed_when_generated_in_two_runs() -> None:
    daily = plan(every(1, "days", utc(2026, 12, 23, 8)))
    christmas = SiteCalendar(site="north", time_zone="UTC", holidays=[date(2026, 12, 25)])

    first = due_occurrences(daily, christmas, NOTHING, None, CREATED, utc(2026, 12, 25, 12))
    second = due_occurrences(
        daily,
        christmas,
        PlanProgress(last_due_at=first[-1].due_at),
        None,
        CREATED,
        utc(2026, 12, 27, 12),
    )

    assert dues(first) == [utc(2026, 12, 23, 8), utc(2026, 12, 24, 8)]
    assert dues(second) == [utc(2026, 12, 26, 8), utc(2026, 12, 27, 8)]


# --- catch-up ---------------------------------------------------------------------------


def test_three_days_of_downtime_give_three_missed_occurrences_then_the_future() -> None:
    daily = plan(every(1, "days", utc(2026, 3, 1, 8)))
    progress = PlanProgress(last_due_at=utc(2026, 3, 10, 8))
    now = utc(2026, 3, 13, 9)  # down from the 10th's run until after the 13th's 08:00

    found = due_occurrences(daily, UTC_SITE, progress, None, now, now + timedelta(days=3))

    assert [(o.due_at, o.missed) for o in found] == [
        (utc(2026, 3, 11, 8), True),
        (utc(2026, 3, 12, 8), True),
        (utc(2026, 3, 13, 8), True),
        (utc(2026, 3, 14, 8), False),
        (utc(2026, 3, 15, 8), False),
        (utc(2026, 3, 16, 8), False),
    ]


def test_a_long_outage_is_caught_up_in_bounded_steps() -> None:
    daily = plan(every(1, "days", utc(2020, 1, 1, 8)), created_at=utc(2020, 1, 1))
    now = utc(2026, 1, 1)

    first = due_occurrences(daily, UTC_SITE, NOTHING, None, now, now + timedelta(days=7))
    rest = due_occurrences(
        daily,
        UTC_SITE,
        PlanProgress(last_due_at=first[-1].due_at),
        None,
        now,
        now + timedelta(days=7),
    )

    assert len(first) == MAX_OCCURRENCES
    assert all(o.missed for o in first)
    assert rest[0].due_at == first[-1].due_at + timedelta(days=1)


def test_a_disabled_plan_has_no_occurrences() -> None:
    off = plan(every(1, "days", utc(2026, 1, 5, 8)), enabled=False)

    assert due_occurrences(off, UTC_SITE, NOTHING, None, CREATED, utc(2026, 2, 1)) == []


def test_now_and_until_must_be_aware() -> None:
    daily = plan(every(1, "days", utc(2026, 1, 5, 8)))

    with pytest.raises(ValueError, match="now must be an aware datetime"):
        due_occurrences(daily, UTC_SITE, NOTHING, None, datetime(2026, 1, 1), utc(2026, 2, 1))  # noqa: DTZ001


# --- floating series --------------------------------------------------------------------

FLOATING_30 = every(30, "days", utc(2026, 1, 5, 8), recurrence="floating")


def test_the_first_floating_cycle_is_due_at_starts_at_and_keyed_by_the_plan_creation() -> None:
    floating = plan(FLOATING_30)

    found = due_occurrences(floating, UTC_SITE, NOTHING, None, CREATED, utc(2026, 2, 1))

    assert found == [
        Occurrence(
            due_at=utc(2026, 1, 5, 8),
            trigger="calendar",
            cycle_key="2026-01-01T00:00:00.000000Z",
            missed=False,
        )
    ]


@pytest.mark.parametrize(
    ("completed_at", "next_due"),
    [
        pytest.param(utc(2026, 2, 1, 15, 47), utc(2026, 3, 3, 8), id="early: 3 days before"),
        pytest.param(utc(2026, 2, 4, 10), utc(2026, 3, 6, 8), id="on the day"),
        pytest.param(utc(2026, 2, 10, 9), utc(2026, 3, 12, 8), id="late: 6 days after"),
    ],
)
def test_a_floating_series_counts_from_the_completion(
    completed_at: datetime, next_due: datetime
) -> None:
    floating = plan(FLOATING_30)  # the second one was due on 4 February
    progress = PlanProgress(last_completed_at=completed_at)

    found = due_occurrences(
        floating, UTC_SITE, progress, None, completed_at, completed_at + timedelta(days=60)
    )

    assert found == [
        Occurrence(
            due_at=next_due, trigger="calendar", cycle_key=cycle_key(completed_at), missed=False
        )
    ]


def test_a_floating_monthly_series_clamps_to_the_month_end_then_drifts() -> None:
    floating = plan(every(1, "months", utc(2026, 1, 31, 8), recurrence="floating"))

    after_january = due_occurrences(
        floating,
        UTC_SITE,
        PlanProgress(last_completed_at=utc(2026, 1, 31, 9)),
        None,
        utc(2026, 2, 1),
        utc(2026, 4, 1),
    )
    after_february = due_occurrences(
        floating,
        UTC_SITE,
        PlanProgress(last_completed_at=utc(2026, 2, 28, 9)),
        None,
        utc(2026, 3, 1),
        utc(2026, 5, 1),
    )

    assert dues(after_january) == [utc(2026, 2, 28, 8)]
    assert dues(after_february) == [utc(2026, 3, 28, 8)]


def test_an_open_cycle_is_not_generated_again() -> None:
    floating = plan(FLOATING_30)
    completed_at = utc(2026, 2, 1, 15, 47)
    progress = PlanProgress(last_completed_at=completed_at, open_cycle_key=cycle_key(completed_at))

    assert due_occurrences(floating, UTC_SITE, progress, None, completed_at, utc(2026, 5, 1)) == []


def test_a_cycle_beyond_until_is_not_generated_yet() -> None:
    floating = plan(FLOATING_30)
    progress = PlanProgress(last_completed_at=utc(2026, 2, 1))

    assert (
        due_occurrences(floating, UTC_SITE, progress, None, utc(2026, 2, 1), utc(2026, 3, 2)) == []
    )
    assert (
        len(
            due_occurrences(floating, UTC_SITE, progress, None, utc(2026, 2, 1), utc(2026, 3, 3, 8))
        )
        == 1
    )


def test_a_floating_series_in_berlin_keeps_the_local_time_of_starts_at() -> None:
    floating = plan(every(7, "days", "2026-03-20T08:00:00+01:00", recurrence="floating"))
    progress = PlanProgress(last_completed_at=utc(2026, 3, 26, 22, 30))  # 23:30 local

    found = due_occurrences(
        floating, BERLIN_SITE, progress, None, utc(2026, 3, 27), utc(2026, 5, 1)
    )

    assert dues(found) == [utc(2026, 4, 2, 6)]  # 08:00 CEST


# --- meters and whichever first ---------------------------------------------------------


def meter_plan(**calendar: Any) -> MaintenancePlan:
    return plan(calendar or None, {"metric": "run_hours", "every": 500})


def test_a_meter_plan_projects_its_due_time_from_the_recent_rate() -> None:
    pump = meter_plan()
    now = CREATED + timedelta(days=20)
    reading = meter_since(meter_of(pump), pump_counter(CREATED, 20, 16), CREATED, now)

    found = due_occurrences(pump, UTC_SITE, NOTHING, reading, now, now + timedelta(days=30))

    # 320 h used, 180 h to go at 16 h a day: 11 days 6 hours on.
    assert [(o.trigger, o.cycle_key, o.missed) for o in found] == [
        ("meter", cycle_key(CREATED), False)
    ]
    assert abs(found[0].due_at - (now + timedelta(days=11, hours=6))) < timedelta(seconds=1)


def test_a_meter_reached_while_down_is_due_when_it_was_reached_and_flagged_missed() -> None:
    pump = meter_plan()
    now = CREATED + timedelta(days=40)
    points = pump_counter(CREATED, 40, 16, reset_on_day=25)
    reading = meter_since(meter_of(pump), points, CREATED, now)

    found = due_occurrences(pump, UTC_SITE, NOTHING, reading, now, now + timedelta(days=30))

    # 31 days of 16 h, then 4 h on the 32nd day from 06:00; the counter reset changes nothing.
    assert dues(found) == [CREATED + timedelta(days=31, hours=10)]
    assert found[0].missed


def test_a_meter_plan_without_a_rate_has_nothing_due() -> None:
    pump = meter_plan()
    idle = MeterReading(used=10.0, rate_per_hour=None, as_of=utc(2026, 2, 1))

    assert due_occurrences(pump, UTC_SITE, NOTHING, idle, utc(2026, 2, 1), utc(2027, 1, 1)) == []
    assert due_occurrences(pump, UTC_SITE, NOTHING, None, utc(2026, 2, 1), utc(2027, 1, 1)) == []


@pytest.mark.parametrize(
    ("hours_per_day", "trigger", "due_after_completion"),
    [
        pytest.param(4, "calendar", timedelta(days=90, hours=8), id="light use: the calendar"),
        pytest.param(16, "meter", timedelta(days=31, hours=10), id="heavy use: the meter"),
    ],
)
def test_whichever_comes_first(
    hours_per_day: int, trigger: str, due_after_completion: timedelta
) -> None:
    both = plan(
        every(90, "days", utc(2026, 1, 1, 8), recurrence="floating"),
        {"metric": "run_hours", "every": 500},
    )
    done = utc(2026, 3, 1)
    now = done + timedelta(days=40)
    points = pump_counter(done - timedelta(days=10), 50, hours_per_day)
    progress = PlanProgress(last_completed_at=done)
    reading = meter_since(meter_of(both), points, cycle_baseline(both, progress), now)

    found = due_occurrences(both, UTC_SITE, progress, reading, now, now + timedelta(days=90))

    assert [(o.due_at, o.trigger, o.cycle_key) for o in found] == [
        (done + due_after_completion, trigger, cycle_key(done))
    ]


def test_a_completion_resets_both_the_calendar_and_the_meter() -> None:
    both = plan(
        every(90, "days", utc(2026, 1, 1, 8), recurrence="floating"),
        {"metric": "run_hours", "every": 500},
    )
    points = pump_counter(CREATED, 120, 16)
    now = CREATED + timedelta(days=70)
    before = meter_since(meter_of(both), points, CREATED, now)
    done = CREATED + timedelta(days=32, hours=12)  # just after the meter's due time
    after = PlanProgress(last_completed_at=done)
    since_done = meter_since(meter_of(both), points, cycle_baseline(both, after), now)

    open_first = PlanProgress(open_cycle_key=cycle_key(CREATED))
    assert due_occurrences(both, UTC_SITE, open_first, before, now, now + timedelta(days=30)) == []
    found = due_occurrences(both, UTC_SITE, after, since_done, now, now + timedelta(days=30))

    # 500 h more from the completion (day 32 at 12:00, mid-shift): 10 h that day, 30 days of
    # 16 h, and 10 h on the next: day 63 at 16:00. The calendar would wait until day 122.
    assert [(o.due_at, o.trigger, o.cycle_key) for o in found] == [
        (CREATED + timedelta(days=63, hours=16), "meter", cycle_key(done))
    ]


def test_a_fixed_calendar_with_a_meter_takes_the_first_series_point_after_the_completion() -> None:
    both = plan(every(1, "months", utc(2026, 1, 1, 8)), {"metric": "run_hours", "every": 5000})
    idle = MeterReading(used=0.0, rate_per_hour=None, as_of=utc(2026, 3, 29))
    early = PlanProgress(last_completed_at=utc(2026, 3, 28))  # the 1 April one, done early

    found = due_occurrences(both, UTC_SITE, early, idle, utc(2026, 3, 29), utc(2026, 5, 1))

    assert [(o.due_at, o.trigger) for o in found] == [(utc(2026, 4, 1, 8), "calendar")]


def test_a_meter_due_on_a_holiday_moves_to_the_next_working_day() -> None:
    pump = meter_plan()
    now = CREATED + timedelta(days=20)
    reading = meter_since(meter_of(pump), pump_counter(CREATED, 20, 16), CREATED, now)
    projected = now + timedelta(days=11, hours=6)
    site = SiteCalendar(site="north", time_zone="UTC", holidays=[projected.date()])

    found = due_occurrences(pump, site, NOTHING, reading, now, now + timedelta(days=30))

    assert abs(found[0].due_at - (projected + timedelta(days=1))) < timedelta(seconds=1)


# --- missed cycles ----------------------------------------------------------------------

DAILY_FLOATING = every(1, "days", utc(2026, 3, 1, 8), recurrence="floating")


def test_mark_missed_walks_the_missed_cycles_up_to_the_first_live_one() -> None:
    floating = plan(DAILY_FLOATING, missed="mark_missed")
    progress = PlanProgress(last_completed_at=utc(2026, 3, 1, 10))
    now = utc(2026, 3, 5, 9)

    found = due_occurrences(floating, UTC_SITE, progress, None, now, now + timedelta(days=2))

    assert [(o.due_at, o.cycle_key, o.missed) for o in found] == [
        (utc(2026, 3, 2, 8), cycle_key(utc(2026, 3, 1, 10)), True),
        (utc(2026, 3, 3, 8), cycle_key(utc(2026, 3, 2, 8)), True),
        (utc(2026, 3, 4, 8), cycle_key(utc(2026, 3, 3, 8)), True),
        (utc(2026, 3, 5, 8), cycle_key(utc(2026, 3, 4, 8)), True),
        (utc(2026, 3, 6, 8), cycle_key(utc(2026, 3, 5, 8)), False),
    ]
    # Recording the first two as missed and asking again gives the rest: the same cycles.
    again = PlanProgress(
        last_completed_at=utc(2026, 3, 1, 10), last_missed_due_at=utc(2026, 3, 3, 8)
    )
    assert (
        due_occurrences(floating, UTC_SITE, again, None, now, now + timedelta(days=2)) == found[2:]
    )


def test_a_meter_crossing_seen_within_the_grace_is_not_missed() -> None:
    pump = meter_plan()
    crossed = CREATED + timedelta(days=31, hours=10)
    now = crossed + timedelta(minutes=4)  # the run after the crossing, five minutes apart
    reading = meter_since(meter_of(pump), pump_counter(CREATED, 32, 16), CREATED, now)
    strict = due_occurrences(pump, UTC_SITE, NOTHING, reading, now, now + timedelta(days=1))

    graced = due_occurrences(
        pump,
        UTC_SITE,
        NOTHING,
        reading,
        now,
        now + timedelta(days=1),
        missed_before=now - timedelta(minutes=10),
    )

    assert [(o.due_at, o.missed) for o in strict] == [(crossed, True)]
    assert [(o.due_at, o.missed) for o in graced] == [(crossed, False)]


def test_under_create_a_late_cycle_is_one_occurrence_flagged_missed() -> None:
    floating = plan(DAILY_FLOATING)
    progress = PlanProgress(last_completed_at=utc(2026, 3, 1, 10))
    now = utc(2026, 3, 5, 9)

    found = due_occurrences(floating, UTC_SITE, progress, None, now, now + timedelta(days=2))

    assert [(o.due_at, o.missed) for o in found] == [(utc(2026, 3, 2, 8), True)]


def test_a_walk_over_missed_meter_cycles_is_bounded() -> None:
    tiny = plan(None, {"metric": "run_hours", "every": 0.001}, missed="mark_missed")
    now = CREATED + timedelta(days=10)
    reading = meter_since(meter_of(tiny), pump_counter(CREATED, 10, 16), CREATED, now)

    found = due_occurrences(tiny, UTC_SITE, NOTHING, reading, now, now + timedelta(days=1))

    assert len(found) == MAX_OCCURRENCES
    assert all(o.missed for o in found)
    assert all(a.due_at < b.due_at for a, b in pairwise(found))
    assert len({o.cycle_key for o in found}) == MAX_OCCURRENCES


def test_the_first_cycle_of_a_meter_only_plan_counts_from_its_creation() -> None:
    pump = meter_plan()

    assert cycle_baseline(pump, NOTHING) == CREATED
    assert cycle_baseline(pump, PlanProgress(last_completed_at=utc(2026, 2, 1))) == utc(2026, 2, 1)
    assert cycle_baseline(
        pump, PlanProgress(last_completed_at=utc(2026, 2, 1), last_missed_due_at=utc(2026, 3, 1))
    ) == utc(2026, 3, 1)
    assert cycle_key(datetime(2026, 2, 1, 9, 30, tzinfo=BERLIN)) == "2026-02-01T08:30:00.000000Z"


# --- properties -------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
YEAR_2026 = st.dates(min_value=date(2026, 1, 1), max_value=date(2027, 12, 31))


@st.composite
def fixed_setups(draw: st.DrawFn) -> tuple[MaintenancePlan, SiteCalendar, datetime, datetime]:
    zone = draw(st.sampled_from(ZONES))
    starts_local = draw(
        st.datetimes(min_value=wall(2025, 6, 1), max_value=wall(2026, 12, 31))
    ).replace(second=0, microsecond=0)
    starts_at = local_to_utc(starts_local, ZoneInfo(zone))
    if draw(st.booleans()):
        calendar = every(
            draw(st.integers(1, 40)), draw(st.sampled_from(["days", "weeks", "months"])), starts_at
        )
    else:
        calendar = rule(
            draw(
                st.sampled_from(
                    [
                        "FREQ=DAILY;INTERVAL=3",
                        "FREQ=WEEKLY;BYDAY=MO,TH",
                        "FREQ=MONTHLY;BYMONTHDAY=-1",
                        "FREQ=MONTHLY;BYDAY=-1FR",
                        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
                    ]
                )
            ),
            starts_at,
        )
    seasons = draw(
        st.lists(
            st.builds(
                lambda a, b: Season(start=a.strftime("%m-%d"), end=b.strftime("%m-%d")),
                YEAR_2026,
                YEAR_2026,
            ),
            max_size=2,
        )
    )
    holidays = sorted(set(draw(st.lists(YEAR_2026, max_size=40))))
    site = SiteCalendar(site="s", time_zone=zone, holidays=holidays, seasons=seasons)
    created_at = starts_at - timedelta(days=draw(st.integers(0, 30)))
    after = created_at + timedelta(hours=draw(st.integers(0, 24 * 400)))
    until = after + timedelta(hours=draw(st.integers(0, 24 * 500)))
    return plan(calendar, created_at=created_at), site, after, until


@PROPERTIES
@given(fixed_setups())
def test_fixed_occurrences_increase_and_fall_on_allowed_days_at_the_plan_time(
    setup: tuple[MaintenancePlan, SiteCalendar, datetime, datetime],
) -> None:
    fixed, site, after, until = setup
    assert fixed.calendar is not None
    time_of_day = fixed.calendar.starts_at.astimezone(site.zone).time()

    found = due_occurrences(fixed, site, PlanProgress(last_due_at=after), None, after, until)

    assert all(a.due_at < b.due_at for a, b in pairwise(found))
    for occurrence in found:
        assert after < occurrence.due_at <= until
        local = occurrence.due_at.astimezone(site.zone)
        assert site.allows(local.date())
        # At the plan's time, unless the clocks skipped it that day (then just after the jump).
        wall = datetime.combine(local.date(), time_of_day)
        assert local.time() == time_of_day or local_to_utc(wall, site.zone) == occurrence.due_at


@PROPERTIES
@given(
    fixed_setups(),
    st.lists(st.integers(1, 24 * 60), min_size=1, max_size=8),
    st.integers(0, 24 * 900),
    st.integers(0, 24 * 400),
)
def test_generating_in_steps_gives_what_one_run_gives(
    setup: tuple[MaintenancePlan, SiteCalendar, datetime, datetime],
    steps: list[int],
    skip: int,
    beyond: int,
) -> None:
    fixed, site, after, until = setup
    assert fixed.calendar is not None
    once = dues(due_occurrences(fixed, site, PlanProgress(last_due_at=after), None, after, until))

    stepped: list[datetime] = []
    reached = after
    for hours in [*steps, 10**6]:
        reached = min(reached + timedelta(hours=hours), until)
        progress = PlanProgress(last_due_at=stepped[-1] if stepped else after)
        stepped += dues(due_occurrences(fixed, site, progress, None, after, reached))
    uncached = _walk(fixed.calendar, site, after, until, MAX_OCCURRENCES)

    assert stepped == once == uncached
    # Then a run that starts later and looks further than any before it.
    later, further = after + timedelta(hours=skip), until + timedelta(hours=beyond)
    progress = PlanProgress(last_due_at=later)
    assert dues(due_occurrences(fixed, site, progress, None, after, further)) == _walk(
        fixed.calendar, site, later, further, MAX_OCCURRENCES
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    zone=st.sampled_from(ZONES),
    interval=st.tuples(st.integers(1, 12), st.sampled_from(["days", "weeks", "months"])),
    completed_hours=st.lists(st.integers(0, 24 * 200), min_size=1, max_size=5),
    meter=st.tuples(st.floats(0, 5000), st.one_of(st.none(), st.floats(0.01, 50))),
)
def test_every_cycle_ends_after_it_starts(
    zone: str,
    interval: tuple[int, str],
    completed_hours: list[int],
    meter: tuple[float, float | None],
) -> None:
    (n, unit), (used, rate) = interval, meter
    both = plan(
        every(n, unit, utc(2026, 1, 1, 8), recurrence="floating"),
        {"metric": "run_hours", "every": 300},
        missed="mark_missed",
    )
    site = SiteCalendar(site="s", time_zone=zone, holidays=[date(2026, 5, 1)])
    for hours in completed_hours:
        done = CREATED + timedelta(hours=hours)
        reading = MeterReading(used=used, rate_per_hour=rate, as_of=done + timedelta(days=1))
        progress = PlanProgress(last_completed_at=done)
        now = done + timedelta(days=200)

        found = due_occurrences(both, site, progress, reading, now, done + timedelta(days=400))

        baselines = [done] + [o.due_at for o in found[:-1]]
        assert 1 <= len(found) <= MAX_OCCURRENCES
        assert all(o.due_at > b for o, b in zip(found, baselines, strict=True))
        assert [o.cycle_key for o in found] == [cycle_key(b) for b in baselines]
        assert all(o.missed for o in found[:-1])  # the walk only goes on past missed ones
