"""SLA deadlines and breaches: defaults, overrides, service hours across zones and DST, breaches."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.priority import Priority
from core.sla import (
    SEARCH_LIMIT_DAYS,
    ActualTimes,
    Breach,
    BusinessHours,
    Deadlines,
    RoundTheClock,
    SlaPolicy,
    SlaPolicyOverride,
    SlaTargets,
    SlaTargetsOverride,
    Weekday,
    WorkingInterval,
    breaches,
    deadlines_for,
    default_policy,
    new_breaches,
)

H = timedelta(hours=1)
M = timedelta(minutes=1)
PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def hours(time_zone: str, **days: list[tuple[time, time]]) -> BusinessHours:
    """Build business hours from {"mon": [(start, end), ...], ...}."""
    return BusinessHours(
        time_zone=time_zone,
        week={
            Weekday(day): tuple(WorkingInterval(start=start, end=end) for start, end in intervals)
            for day, intervals in days.items()
        },
    )


# Holidays: Good Friday 2026-04-03 and Easter Monday 2026-04-06 (Germany, Australia);
# Independence Day observed 2026-07-03 and Thanksgiving 2026-11-26 (US); Republic Day
# 2026-01-26 (India).
BERLIN = BusinessHours.weekdays(
    "Europe/Berlin", time(8), time(17), holidays=[date(2026, 4, 3), date(2026, 4, 6)]
)
NEW_YORK = BusinessHours.weekdays(
    "America/New_York", time(9), time(17), holidays=[date(2026, 7, 3), date(2026, 11, 26)]
)
KOLKATA = BusinessHours.weekdays("Asia/Kolkata", time(10), time(18), holidays=[date(2026, 1, 26)])
LORD_HOWE = BusinessHours.weekdays(
    "Australia/Lord_Howe", time(9), time(17), holidays=[date(2026, 4, 3), date(2026, 4, 6)]
)
LUNCH_BREAK = hours(
    "Europe/Berlin",
    **{
        day: [(time(8), time(12)), (time(13), time(17))]
        for day in ("mon", "tue", "wed", "thu", "fri")
    },
)
# Intervals that touch the DST transitions (Berlin and New York jump at 02:00 local, Berlin
# falls back at 03:00 CEST, New York at 02:00 EDT; Lord Howe moves 30 minutes at 02:00).
BERLIN_SUNDAY_NIGHT = hours("Europe/Berlin", sun=[(time(2, 30), time(6))])
NEW_YORK_SUNDAY_NIGHT = hours("America/New_York", sun=[(time(0), time(6))])
NEW_YORK_IN_THE_GAP = hours("America/New_York", sun=[(time(2), time(3))], mon=[(time(9), time(17))])
LORD_HOWE_IN_THE_GAP = hours("Australia/Lord_Howe", sun=[(time(2, 15), time(3))])
LORD_HOWE_WEEKEND = hours("Australia/Lord_Howe", sat=[(time(0), time(0))], sun=[(time(0), time(0))])

ALL_HOURS = [
    RoundTheClock(),
    BERLIN,
    NEW_YORK,
    KOLKATA,
    LORD_HOWE,
    LUNCH_BREAK,
    BERLIN_SUNDAY_NIGHT,
    NEW_YORK_SUNDAY_NIGHT,
    NEW_YORK_IN_THE_GAP,
    LORD_HOWE_IN_THE_GAP,
    LORD_HOWE_WEEKEND,
]


# --- policy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "response", "on_site", "resolution"),
    [
        (Priority.CRITICAL, 15 * M, 8 * H, 24 * H),
        (Priority.HIGH, H, None, None),
        (Priority.MEDIUM, 2 * H, None, None),
        (Priority.LOW, 24 * H, None, None),
    ],
)
def test_default_policy_has_design_targets(
    priority: Priority,
    response: timedelta,
    on_site: timedelta | None,
    resolution: timedelta | None,
) -> None:
    assert default_policy().for_priority(priority) == SlaTargets(
        response=response, on_site=on_site, resolution=resolution, hours=RoundTheClock()
    )


CREATED_AT = utc(2026, 5, 4, 10, 0)


@pytest.mark.parametrize(
    ("priority", "expected"),
    [
        (
            Priority.CRITICAL,
            Deadlines(
                response_due=utc(2026, 5, 4, 10, 15),
                on_site_due=utc(2026, 5, 4, 18, 0),
                resolution_due=utc(2026, 5, 5, 10, 0),
            ),
        ),
        (Priority.HIGH, Deadlines(response_due=utc(2026, 5, 4, 11, 0))),
        (Priority.MEDIUM, Deadlines(response_due=utc(2026, 5, 4, 12, 0))),
        (Priority.LOW, Deadlines(response_due=utc(2026, 5, 5, 10, 0))),
    ],
)
def test_default_deadlines_per_priority(priority: Priority, expected: Deadlines) -> None:
    assert deadlines_for(priority, CREATED_AT, default_policy()) == expected


def test_override_distinguishes_absent_from_no_target() -> None:
    override = SlaPolicyOverride.model_validate_json(
        '{"targets": {"high": {"response": "PT30M", "resolution": "PT8H"},'
        ' "critical": {"on_site": null}}}'
    )

    policy = default_policy().merged(override)

    assert policy.for_priority(Priority.HIGH) == SlaTargets(response=30 * M, resolution=8 * H)
    # on_site given as null: no target; response and resolution left out: inherited.
    assert policy.for_priority(Priority.CRITICAL) == SlaTargets(
        response=15 * M, on_site=None, resolution=24 * H
    )
    assert policy.for_priority(Priority.MEDIUM) == default_policy().for_priority(Priority.MEDIUM)


def test_overrides_layer_customer_then_contract() -> None:
    customer = SlaPolicyOverride(
        targets={Priority.LOW: SlaTargetsOverride(resolution=72 * H, hours=BERLIN)}
    )
    contract = SlaPolicyOverride(
        targets={Priority.LOW: SlaTargetsOverride(response=8 * H, resolution=None)}
    )
    base = default_policy()

    policy = base.merged(customer).merged(contract)

    assert policy.for_priority(Priority.LOW) == SlaTargets(response=8 * H, hours=BERLIN)
    assert base == default_policy()
    assert base.merged(SlaPolicyOverride()) == base


def test_deadlines_under_overridden_business_hours() -> None:
    contract = SlaPolicyOverride(targets={Priority.LOW: SlaTargetsOverride(hours=BERLIN)})
    # Fri 2026-03-27 16:00 CET (15:00Z) + 24 h of Berlin business time: 1 h on Friday,
    # 9 h Mon 30th (CEST now), 9 h Tue, 5 h Wed -> Wed 13:00 CEST = 11:00Z.
    deadlines = deadlines_for(Priority.LOW, utc(2026, 3, 27, 15), default_policy().merged(contract))
    assert deadlines == Deadlines(response_due=utc(2026, 4, 1, 11))


def test_policy_round_trips_through_json() -> None:
    override = SlaPolicyOverride(
        targets={
            Priority.HIGH: SlaTargetsOverride(hours=LUNCH_BREAK),
            Priority.LOW: SlaTargetsOverride(hours=LORD_HOWE_WEEKEND),
        }
    )
    policy = default_policy().merged(override)
    assert SlaPolicy.model_validate_json(policy.model_dump_json()) == policy


# --- round the clock --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        # 2026-03-28 12:00 CET = 11:00Z; Berlin springs forward that night, so 24 elapsed
        # hours later is 11:00Z = 13:00 CEST, not 12:00 local.
        (utc(2026, 3, 28, 11), utc(2026, 3, 29, 11)),
        (datetime(2026, 3, 28, 12, tzinfo=ZoneInfo("Europe/Berlin")), utc(2026, 3, 29, 11)),
        # 2026-10-24 12:00 CEST = 10:00Z; falls back that night: 10:00Z = 11:00 CET.
        (datetime(2026, 10, 24, 12, tzinfo=ZoneInfo("Europe/Berlin")), utc(2026, 10, 25, 10)),
    ],
)
def test_round_the_clock_counts_elapsed_time_across_dst(
    created_at: datetime, expected: datetime
) -> None:
    due = deadlines_for(Priority.CRITICAL, created_at, default_policy()).resolution_due
    assert due == expected
    assert due is not None
    assert due.utcoffset() == timedelta(0)
    assert RoundTheClock().elapsed(created_at, expected) == 24 * H


# --- business hours ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service_hours", "start", "duration", "expected"),
    [
        # Berlin Mon-Fri 08-17. Tue 2026-03-24 09:00 CET (08Z) + 2 h -> 11:00 CET.
        pytest.param(
            BERLIN, utc(2026, 3, 24, 8), 2 * H, utc(2026, 3, 24, 10), id="berlin-same-day"
        ),
        # Tue 16:00 CET + 2 h: 1 h Tue, 1 h Wed from 08:00 -> Wed 09:00 CET.
        pytest.param(BERLIN, utc(2026, 3, 24, 15), 2 * H, utc(2026, 3, 25, 8), id="berlin-night"),
        # Fri 03-27 16:00 CET + 2 h: 1 h Fri, weekend springs forward, Mon 09:00 CEST = 07Z.
        pytest.param(BERLIN, utc(2026, 3, 27, 15), 2 * H, utc(2026, 3, 30, 7), id="berlin-spring"),
        # Sat 03-28 10:00 CET: clock starts Mon 08:00 CEST (06Z) -> 07Z.
        pytest.param(
            BERLIN, utc(2026, 3, 28, 9), H, utc(2026, 3, 30, 7), id="berlin-weekend-start"
        ),
        # Thu 04-02 16:30 CEST + 1 h: 30 min Thu; Good Friday, weekend, Easter Monday
        # closed; Tue 04-07 08:30 CEST = 06:30Z.
        pytest.param(
            BERLIN, utc(2026, 4, 2, 14, 30), H, utc(2026, 4, 7, 6, 30), id="berlin-easter"
        ),
        # Fri 10-23 12:00 CEST + 9 h: 5 h Fri, falls back on Sunday, Mon 08:00 CET + 4 h
        # = 12:00 CET = 11Z.
        pytest.param(BERLIN, utc(2026, 10, 23, 10), 9 * H, utc(2026, 10, 26, 11), id="berlin-fall"),
        # Mon 03-23 08:00 CET + 24 h: 9 Mon + 9 Tue + 6 Wed -> Wed 14:00 CET = 13Z.
        pytest.param(BERLIN, utc(2026, 3, 23, 7), 24 * H, utc(2026, 3, 25, 13), id="berlin-24h"),
        # New York Mon-Fri 09-17. Fri 03-06 16:00 EST (21Z) + 2 h: 1 h Fri; springs forward
        # Sun 03-08; Mon 10:00 EDT = 14Z.
        pytest.param(NEW_YORK, utc(2026, 3, 6, 21), 2 * H, utc(2026, 3, 9, 14), id="ny-spring"),
        # Fri 10-30 16:00 EDT (20Z) + 2 h: falls back Sun 11-01; Mon 10:00 EST = 15Z.
        pytest.param(NEW_YORK, utc(2026, 10, 30, 20), 2 * H, utc(2026, 11, 2, 15), id="ny-fall"),
        # Wed 11-25 16:00 EST (21Z) + 4 h: 1 h Wed, Thanksgiving, Fri 12:00 EST = 17Z.
        pytest.param(
            NEW_YORK, utc(2026, 11, 25, 21), 4 * H, utc(2026, 11, 27, 17), id="ny-holiday"
        ),
        # Thu 07-02 16:00 EDT (20Z) + 2 h: 1 h Thu, Fri observed holiday, Mon 10:00 EDT.
        pytest.param(NEW_YORK, utc(2026, 7, 2, 20), 2 * H, utc(2026, 7, 6, 14), id="ny-july"),
        # 2026-05-05 02:00Z is still Mon 22:00 EDT locally: opens Tue 09:00 EDT = 13Z.
        pytest.param(NEW_YORK, utc(2026, 5, 5, 2), H, utc(2026, 5, 5, 14), id="ny-local-day"),
        # Kolkata Mon-Fri 10-18, +05:30 all year. Fri 01-23 17:00 IST (11:30Z) + 3 h: 1 h Fri,
        # weekend, Republic Day Mon 01-26; Tue 12:00 IST = 06:30Z.
        pytest.param(
            KOLKATA, utc(2026, 1, 23, 11, 30), 3 * H, utc(2026, 1, 27, 6, 30), id="kolkata"
        ),
        # 2026-01-27 00:00Z = 05:30 IST: opens 10:00 IST = 04:30Z, + 1 h.
        pytest.param(KOLKATA, utc(2026, 1, 27), H, utc(2026, 1, 27, 5, 30), id="kolkata-morning"),
        # Lord Howe Mon-Fri 09-17, +11 in summer, +10:30 in winter. Thu 04-02 16:00 (+11)
        # = 05Z + 2 h: 1 h Thu; Good Friday; falls back Sun 04-05; Easter Monday; Tue 04-07
        # 10:00 (+10:30) = Mon 23:30Z.
        pytest.param(LORD_HOWE, utc(2026, 4, 2, 5), 2 * H, utc(2026, 4, 6, 23, 30), id="lhi-fall"),
        # Fri 10-02 16:00 (+10:30) = 05:30Z + 2 h: springs forward Sun 10-04; Mon 10:00
        # (+11) = Sun 23Z.
        pytest.param(
            LORD_HOWE, utc(2026, 10, 2, 5, 30), 2 * H, utc(2026, 10, 4, 23), id="lhi-spring"
        ),
        # Weekend-only hours, Sat and Sun 00:00-24:00. Sun 10-04 00:00 (+10:30) = Sat 13:30Z;
        # that Sunday lasts 23.5 h, so 30 min are left for Sat 10-10 00:00 (+11) = Fri 13Z.
        pytest.param(
            LORD_HOWE_WEEKEND,
            utc(2026, 10, 3, 13, 30),
            24 * H,
            utc(2026, 10, 9, 13, 30),
            id="lhi-short-day",
        ),
    ],
)
def test_business_hours_deadlines(
    service_hours: BusinessHours, start: datetime, duration: timedelta, expected: datetime
) -> None:
    assert service_hours.add(start, duration) == expected
    assert service_hours.elapsed(start, expected) == duration


@pytest.mark.parametrize(
    ("service_hours", "start", "end", "expected"),
    [
        # Sundays 02:30-06:00 in Berlin. On a plain Sunday (03-22, CET) 01:30Z-05:00Z.
        pytest.param(
            BERLIN_SUNDAY_NIGHT, utc(2026, 3, 21), utc(2026, 3, 23), 3.5 * H, id="berlin-plain"
        ),
        # 2026-03-29 02:30 does not exist (02:00 CET -> 03:00 CEST): opens at the jump,
        # 01:00Z, closes 06:00 CEST = 04:00Z.
        pytest.param(
            BERLIN_SUNDAY_NIGHT, utc(2026, 3, 28), utc(2026, 3, 30), 3 * H, id="berlin-gap"
        ),
        # 2026-10-25 02:30 happens twice: the first (CEST, 00:30Z) opens; 06:00 CET = 05:00Z.
        pytest.param(
            BERLIN_SUNDAY_NIGHT, utc(2026, 10, 24), utc(2026, 10, 26), 4.5 * H, id="berlin-fold"
        ),
        # Sundays 00:00-06:00 in New York: 05Z-10Z on spring-forward day, 04Z-11Z on fall-back.
        pytest.param(
            NEW_YORK_SUNDAY_NIGHT, utc(2026, 3, 8), utc(2026, 3, 9), 5 * H, id="ny-spring"
        ),
        pytest.param(
            NEW_YORK_SUNDAY_NIGHT, utc(2026, 11, 1), utc(2026, 11, 2), 7 * H, id="ny-fall"
        ),
        # Sundays 02:00-03:00 in New York: the whole interval is skipped on 2026-03-08.
        pytest.param(
            NEW_YORK_IN_THE_GAP, utc(2026, 3, 8), utc(2026, 3, 9), timedelta(0), id="ny-gap"
        ),
        pytest.param(NEW_YORK_IN_THE_GAP, utc(2026, 3, 1), utc(2026, 3, 2), H, id="ny-plain"),
        # Sundays 02:15-03:00 on Lord Howe: 02:15 is skipped on 2026-10-04 (02:00 -> 02:30),
        # so it opens at the jump, 15:30Z, and closes 03:00 (+11) = 16:00Z.
        pytest.param(
            LORD_HOWE_IN_THE_GAP, utc(2026, 10, 3), utc(2026, 10, 4), 30 * M, id="lhi-gap"
        ),
        pytest.param(
            LORD_HOWE_IN_THE_GAP, utc(2026, 9, 26), utc(2026, 9, 27), 45 * M, id="lhi-plain"
        ),
        # Weekend 00:00-24:00 on Lord Howe, Sunday alone: 23.5 h when springing forward,
        # 24.5 h when falling back (Sun 00:00 +11 = Sat 13:00Z to Mon 00:00 +10:30 = Sun 13:30Z).
        pytest.param(
            LORD_HOWE_WEEKEND,
            utc(2026, 10, 3, 13, 30),
            utc(2026, 10, 4, 13),
            23.5 * H,
            id="lhi-23h",
        ),
        pytest.param(
            LORD_HOWE_WEEKEND, utc(2026, 4, 4, 13), utc(2026, 4, 5, 13, 30), 24.5 * H, id="lhi-25h"
        ),
    ],
)
def test_elapsed_on_dst_change_days(
    service_hours: BusinessHours, start: datetime, end: datetime, expected: timedelta
) -> None:
    assert service_hours.elapsed(start, end) == expected


def test_interval_inside_a_gap_is_closed_that_day() -> None:
    # Sun 2026-03-08 00:00Z is Sat 19:00 EST; Sunday's 02:00-03:00 does not exist, so the
    # clock starts Mon 09:00 EDT = 13Z.
    assert NEW_YORK_IN_THE_GAP.add(utc(2026, 3, 8), 30 * M) == utc(2026, 3, 9, 13, 30)


@pytest.mark.parametrize(
    ("start", "duration", "expected"),
    [
        # Berlin Mon 2026-05-04, CEST (+02): 08-12 and 13-17 local = 06-10Z and 11-15Z.
        pytest.param(utc(2026, 5, 4, 6), H, utc(2026, 5, 4, 7), id="at-opening"),
        pytest.param(utc(2026, 5, 4, 15), H, utc(2026, 5, 5, 7), id="at-closing"),
        pytest.param(utc(2026, 5, 4, 6), timedelta(0), utc(2026, 5, 4, 6), id="zero-at-opening"),
        pytest.param(utc(2026, 5, 4, 8), timedelta(0), utc(2026, 5, 4, 8), id="zero-in-hours"),
        pytest.param(utc(2026, 5, 4, 10), timedelta(0), utc(2026, 5, 4, 11), id="zero-at-lunch"),
        pytest.param(
            utc(2026, 5, 4, 10, 30), timedelta(0), utc(2026, 5, 4, 11), id="zero-in-lunch"
        ),
        pytest.param(utc(2026, 5, 4, 15), timedelta(0), utc(2026, 5, 5, 6), id="zero-at-closing"),
        pytest.param(utc(2026, 5, 4, 9), 2 * H, utc(2026, 5, 4, 12), id="over-lunch"),
        pytest.param(utc(2026, 5, 4, 6), 8 * H, utc(2026, 5, 4, 15), id="ends-at-closing"),
        pytest.param(utc(2026, 5, 4, 13), 2 * H, utc(2026, 5, 4, 15), id="ends-at-closing-late"),
        pytest.param(utc(2026, 5, 4, 14), 2 * H, utc(2026, 5, 5, 7), id="over-night"),
    ],
)
def test_edges_of_working_intervals(
    start: datetime, duration: timedelta, expected: datetime
) -> None:
    assert LUNCH_BREAK.add(start, duration) == expected


def test_interval_may_end_at_midnight() -> None:
    late = hours("Asia/Kolkata", mon=[(time(22), time(0))])
    # Mon 2026-05-04 22:00 IST = 16:30Z; midnight closing is Tue 00:00 IST = 18:30Z.
    assert late.add(utc(2026, 5, 4, 12), 2 * H) == utc(2026, 5, 4, 18, 30)
    assert late.elapsed(utc(2026, 5, 4), utc(2026, 5, 5)) == 2 * H


# --- properties -------------------------------------------------------------------------

# hypothesis takes naive bounds and attaches the zone to what it draws.
starts = st.datetimes(
    min_value=datetime(2025, 1, 1),  # noqa: DTZ001
    max_value=datetime(2028, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
durations = st.timedeltas(min_value=timedelta(0), max_value=300 * H)
any_hours = st.sampled_from(ALL_HOURS)


@PROPERTIES
@given(service_hours=any_hours, start=starts, duration=durations)
def test_elapsed_inverts_add(
    service_hours: RoundTheClock | BusinessHours, start: datetime, duration: timedelta
) -> None:
    due = service_hours.add(start, duration)
    assert service_hours.elapsed(start, due) == duration
    assert due >= start + duration  # service time never outruns real time


@PROPERTIES
@given(service_hours=any_hours, start=starts, first=durations, second=durations)
def test_add_is_monotonic_and_composes(
    service_hours: RoundTheClock | BusinessHours,
    start: datetime,
    first: timedelta,
    second: timedelta,
) -> None:
    shorter, longer = sorted((first, second))
    assert service_hours.add(start, shorter) <= service_hours.add(start, longer)
    # Adding in two steps lands where adding at once does, unless the first step ends on a
    # closing (the second then starts at the next opening): compare service time instead.
    middle = service_hours.add(start, first)
    assert service_hours.elapsed(start, service_hours.add(middle, second)) == first + second


@PROPERTIES
@given(start=starts, duration=durations)
def test_all_day_business_hours_in_utc_are_round_the_clock(
    start: datetime, duration: timedelta
) -> None:
    always = hours("UTC", **{day.value: [(time(0), time(0))] for day in Weekday})
    assert always.add(start, duration) == RoundTheClock().add(start, duration)


# --- breaches ---------------------------------------------------------------------------

# Critical, created Mon 2026-05-04 10:00Z: response 10:15Z, on site 18:00Z, resolved 05-05 10:00Z.
CRITICAL = deadlines_for(Priority.CRITICAL, CREATED_AT, default_policy())
NONE: frozenset[Breach] = frozenset()


@pytest.mark.parametrize(
    ("actuals", "now", "expected"),
    [
        pytest.param(ActualTimes(), utc(2026, 5, 4, 10, 5), NONE, id="not-yet-due"),
        pytest.param(ActualTimes(), utc(2026, 5, 4, 10, 15), NONE, id="due-now"),
        pytest.param(ActualTimes(), utc(2026, 5, 4, 10, 16), {Breach.RESPONSE}, id="past-due"),
        pytest.param(
            ActualTimes(responded_at=utc(2026, 5, 4, 10, 10)),
            utc(2026, 5, 4, 10, 16),
            NONE,
            id="met",
        ),
        pytest.param(
            ActualTimes(responded_at=utc(2026, 5, 4, 10, 15)),
            utc(2026, 5, 4, 12),
            NONE,
            id="met-on-the-dot",
        ),
        pytest.param(
            ActualTimes(responded_at=utc(2026, 5, 4, 10, 20)),
            utc(2026, 5, 4, 12),
            {Breach.RESPONSE},
            id="met-late",
        ),
        pytest.param(
            ActualTimes(arrived_at=utc(2026, 5, 4, 10, 12)),
            utc(2026, 5, 4, 12),
            NONE,
            id="arrival-answers-the-call",
        ),
        pytest.param(
            ActualTimes(responded_at=utc(2026, 5, 4, 10, 5), resolved_at=utc(2026, 5, 4, 12)),
            utc(2026, 5, 7),
            NONE,
            id="resolved-remotely-in-time",
        ),
        pytest.param(
            ActualTimes(responded_at=utc(2026, 5, 4, 10, 5), resolved_at=utc(2026, 5, 5, 9)),
            utc(2026, 5, 7),
            {Breach.ON_SITE},
            id="resolved-after-on-site-due",
        ),
        pytest.param(
            ActualTimes(
                responded_at=utc(2026, 5, 4, 10, 5),
                arrived_at=utc(2026, 5, 4, 19),
                resolved_at=utc(2026, 5, 5, 11),
            ),
            utc(2026, 5, 7),
            {Breach.ON_SITE, Breach.RESOLUTION},
            id="late-on-site-and-resolution",
        ),
        pytest.param(
            ActualTimes(),
            utc(2026, 5, 7),
            {Breach.RESPONSE, Breach.ON_SITE, Breach.RESOLUTION},
            id="nothing-done",
        ),
    ],
)
def test_breaches(actuals: ActualTimes, now: datetime, expected: set[Breach]) -> None:
    assert breaches(CRITICAL, actuals, now) == expected


def test_no_target_is_never_breached() -> None:
    high = deadlines_for(Priority.HIGH, CREATED_AT, default_policy())
    assert breaches(high, ActualTimes(), utc(2027, 1, 1)) == {Breach.RESPONSE}


def test_timer_flags_each_breach_once() -> None:
    # Responded late at 10:20Z, never arrived, never resolved; a timer ticks every 5 min.
    responded_at = utc(2026, 5, 4, 10, 20)
    flagged: frozenset[Breach] = frozenset()
    escalations: list[tuple[datetime, Breach]] = []
    now = CREATED_AT
    while now <= CREATED_AT + 30 * H:
        actuals = ActualTimes(responded_at=responded_at if now >= responded_at else None)
        fresh = new_breaches(breaches(CRITICAL, actuals, now), flagged)
        escalations.extend((now, breach) for breach in sorted(fresh))
        flagged |= fresh
        now += 5 * M

    assert escalations == [
        (utc(2026, 5, 4, 10, 20), Breach.RESPONSE),
        (utc(2026, 5, 4, 18, 5), Breach.ON_SITE),
        (utc(2026, 5, 5, 10, 5), Breach.RESOLUTION),
    ]


def test_new_breaches_leaves_out_flagged_ones() -> None:
    assert new_breaches({Breach.RESPONSE, Breach.ON_SITE}, {Breach.RESPONSE}) == {Breach.ON_SITE}
    assert new_breaches(set(), {Breach.RESPONSE}) == NONE


@PROPERTIES
@given(
    responded=st.none() | starts,
    arrived=st.none() | starts,
    resolved=st.none() | starts,
    earlier=starts,
    later=starts,
)
def test_a_breach_never_heals(
    responded: datetime | None,
    arrived: datetime | None,
    resolved: datetime | None,
    earlier: datetime,
    later: datetime,
) -> None:
    earlier, later = sorted((earlier, later))
    actuals = ActualTimes(responded_at=responded, arrived_at=arrived, resolved_at=resolved)
    assert breaches(CRITICAL, actuals, earlier) <= breaches(CRITICAL, actuals, later)


# --- validation -------------------------------------------------------------------------

NAIVE = datetime(2026, 5, 4, 10)  # noqa: DTZ001 - the point of the test


@pytest.mark.parametrize("service_hours", [RoundTheClock(), BERLIN])
def test_naive_datetimes_are_refused(service_hours: RoundTheClock | BusinessHours) -> None:
    with pytest.raises(ValueError, match="start must be timezone-aware"):
        service_hours.add(NAIVE, H)
    with pytest.raises(ValueError, match="end must be timezone-aware"):
        service_hours.elapsed(CREATED_AT, NAIVE)


def test_naive_datetimes_are_refused_everywhere_else() -> None:
    with pytest.raises(ValueError, match="created_at must be timezone-aware"):
        deadlines_for(Priority.HIGH, NAIVE, default_policy())
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        breaches(CRITICAL, ActualTimes(), NAIVE)
    with pytest.raises(ValidationError, match="an actual time must be timezone-aware"):
        ActualTimes(responded_at=NAIVE)
    with pytest.raises(ValidationError, match="a deadline must be timezone-aware"):
        Deadlines(response_due=NAIVE)


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "Europe", "../etc/passwd", ""])
def test_unknown_time_zone_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="unknown time zone"):
        BusinessHours.weekdays(name, time(8), time(17))


@pytest.mark.parametrize(
    ("week", "message"),
    [
        ({"mon": [(time(8), time(12)), (time(11), time(17))]}, "overlap on mon"),
        ({"tue": [(time(13), time(17)), (time(8), time(0))]}, "overlap on tue"),
        ({}, "no working interval"),
        ({"mon": [], "sun": []}, "no working interval"),
    ],
)
def test_invalid_weeks_are_refused(week: dict[str, list[tuple[time, time]]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        hours("Europe/Berlin", **week)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("17:00", "08:00", "must start before it ends"),
        ("08:00", "08:00", "must start before it ends"),
        ("08:00+01:00", "17:00", "without an offset"),
    ],
)
def test_invalid_intervals_are_refused(start: str, end: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WorkingInterval.model_validate({"start": start, "end": end})


@pytest.mark.parametrize("bad", [-H, timedelta(0)])
def test_targets_must_be_positive(bad: timedelta) -> None:
    with pytest.raises(ValidationError, match="must be a positive duration"):
        SlaTargets(response=bad)
    with pytest.raises(ValidationError, match="must be a positive duration"):
        SlaTargetsOverride(on_site=bad)


@pytest.mark.parametrize("service_hours", [RoundTheClock(), BERLIN])
def test_negative_durations_and_reversed_spans_are_refused(
    service_hours: RoundTheClock | BusinessHours,
) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        service_hours.add(CREATED_AT, -timedelta(seconds=1))
    with pytest.raises(ValueError, match="is before start"):
        service_hours.elapsed(CREATED_AT, CREATED_AT - M)


def test_override_cannot_remove_hours_or_misspell_fields() -> None:
    with pytest.raises(ValidationError, match="cannot be removed"):
        SlaTargetsOverride.model_validate({"hours": None})
    with pytest.raises(ValidationError, match="respones"):
        SlaTargetsOverride.model_validate({"respones": "PT1H"})


def test_policy_must_cover_every_priority() -> None:
    with pytest.raises(ValidationError, match="missing low"):
        SlaPolicy(targets={p: SlaTargets() for p in Priority if p is not Priority.LOW})


def test_search_is_capped() -> None:
    one_hour_a_week = hours("Europe/Berlin", mon=[(time(8), time(9))])
    # 1 h a week runs out of ten years at about 522 h; the search stops instead of looping.
    assert one_hour_a_week.add(CREATED_AT, 500 * H) < CREATED_AT + timedelta(days=SEARCH_LIMIT_DAYS)
    with pytest.raises(ValueError, match=f"does not fit in the {SEARCH_LIMIT_DAYS} days"):
        one_hour_a_week.add(CREATED_AT, 600 * H)
