"""Technicians as pure data: skills and certifications, shifts across DST, time off, assignment."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from core.errors import ConflictError, ValidationError
from core.priority import Priority
from core.technicians import (
    CertificationExpiredError,
    NewTechnician,
    NotAtSiteError,
    SkillMissingError,
    Technician,
    TimeOff,
    WorkOrderFinishedError,
    check_assignment,
    has_valid_skill,
    is_off,
    is_on_shift,
    local_date,
    parse_technician,
    parse_time_off,
    shift_windows,
    shifts_on,
    skill_refusal,
    time_off_during,
    within_shifts,
)
from core.workorders import WorkOrder, WorkOrderKind, WorkOrderStatus

BERLIN = "Europe/Berlin"
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
MONDAY, SUNDAY = 0, 6
# 2026: Europe changes to summer time on Sunday 29 March and back on Sunday 25 October.
MONDAY_BEFORE_SPRING = date(2026, 3, 23)
MONDAY_AFTER_SPRING = date(2026, 3, 30)
SPRING_SUNDAY = date(2026, 3, 29)
AUTUMN_SUNDAY = date(2026, 10, 25)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def shift(weekday: int, start: str, end: str) -> dict[str, Any]:
    return {"weekday": weekday, "start": start, "end": end}


def technician(**fields: Any) -> NewTechnician:
    data: dict[str, Any] = {
        "id": "anna-berg",
        "name": "Anna Berg",
        "sites": ["north"],
        "time_zone": BERLIN,
        "skills": [{"skill": "welding", "certified_until": "2026-11-22"}, {"skill": "hvac"}],
        "weekly_hours": [shift(MONDAY, "08:00", "16:00")],
    }
    return parse_technician({**data, **fields})


def stored(tech: NewTechnician, time_off: list[TimeOff] | None = None) -> Technician:
    return Technician(**tech.model_dump(), time_off=time_off or [], created_at=T0, updated_at=T0)


def absence(start_at: datetime, end_at: datetime, off_id: int = 1) -> TimeOff:
    return TimeOff(
        id=off_id,
        technician_id="anna-berg",
        start_at=start_at,
        end_at=end_at,
        reason="leave",
        created_at=T0,
        created_by="planner",
    )


def order(status: WorkOrderStatus = WorkOrderStatus.REQUESTED) -> WorkOrder:
    return WorkOrder(
        id=7,
        kind=WorkOrderKind.PREVENTIVE,
        status=status,
        priority=Priority.MEDIUM,
        asset_id="pump-1",
        title="Inspect",
        description="",
        created_at=T0,
        updated_at=T0,
    )


def refusal_of(**fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        technician(**fields)
    return caught.value.detail


# --- the model ------------------------------------------------------------------------


def test_a_technician_is_normalised_sorted_and_compares_equal() -> None:
    tech = technician(
        sites=["south", "north"],
        skills=[{"skill": "Welding"}, {"skill": "ELECTRICAL", "certified_until": "2027-01-31"}],
        weekly_hours=[
            shift(2, "13:00", "17:00"),
            shift(2, "08:00", "12:00"),
            shift(0, "08:00", "16:00"),
        ],
    )
    assert tech.sites == ["north", "south"]
    assert [(s.skill, s.certified_until) for s in tech.skills] == [
        ("electrical", date(2027, 1, 31)),
        ("welding", None),
    ]
    assert [(s.weekday, s.start) for s in tech.weekly_hours] == [
        (0, "08:00"),
        (2, "08:00"),
        (2, "13:00"),
    ]
    assert tech == technician(
        sites=["north", "south"],
        skills=[{"skill": "electrical", "certified_until": "2027-01-31"}, {"skill": "welding"}],
        weekly_hours=[
            shift(0, "08:00", "16:00"),
            shift(2, "08:00", "12:00"),
            shift(2, "13:00", "17:00"),
        ],
    )


def test_back_to_back_shifts_and_a_shift_to_midnight_are_accepted() -> None:
    tech = technician(weekly_hours=[shift(4, "08:00", "12:00"), shift(4, "12:00", "24:00")])
    assert [s.end_minute for s in tech.weekly_hours] == [12 * 60, 24 * 60]


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        (
            [shift(MONDAY, "08:00", "12:00"), shift(MONDAY, "11:00", "16:00")],
            "shifts overlap on Monday: 08:00-12:00 and 11:00-16:00",
        ),
        (
            [shift(3, "06:00", "18:00"), shift(3, "09:00", "10:00")],
            "shifts overlap on Thursday: 06:00-18:00 and 09:00-10:00",
        ),
        (
            [shift(MONDAY, "08:00", "16:00"), shift(MONDAY, "08:00", "16:00")],
            "shifts overlap on Monday",
        ),
        (
            [shift(SUNDAY, "22:00", "06:00")],
            "overnight shifts are not supported: split 22:00-06:00 into 22:00-24:00 on Sunday "
            "and 00:00-06:00 on Monday",
        ),
        ([shift(MONDAY, "08:00", "08:00")], "a shift must end after it starts, got 08:00-08:00"),
        ([shift(7, "08:00", "16:00")], "weekly_hours.0.weekday"),
        ([shift(-1, "08:00", "16:00")], "weekly_hours.0.weekday"),
        ([shift(MONDAY, "8:00", "16:00")], "weekly_hours.0.start"),
        ([shift(MONDAY, "24:00", "24:00")], "weekly_hours.0.start"),
        ([shift(MONDAY, "08:00", "16:60")], "weekly_hours.0.end"),
        ([shift(MONDAY, "08:00", "24:01")], "weekly_hours.0.end"),
        ([shift(MONDAY, "08:00:00", "16:00")], "weekly_hours.0.start"),
        ([{"weekday": MONDAY, "start": "08:00"}], "weekly_hours.0.end"),
        ([{**shift(MONDAY, "08:00", "16:00"), "zone": "UTC"}], "weekly_hours.0.zone"),
    ],
)
def test_bad_weekly_hours_are_refused_with_a_precise_message(
    hours: list[dict[str, Any]], message: str
) -> None:
    assert message in refusal_of(weekly_hours=hours)


@pytest.mark.parametrize(
    "zone",
    [
        "Mars/Olympus_Mons",
        "europe/berlin",
        "Europe",
        "",
        "localtime",
        "../etc/passwd",
        "Europe/Berlin ",
        "Europe/Berlin\x00",
    ],
)
def test_an_unknown_time_zone_is_refused(zone: str) -> None:
    detail = refusal_of(time_zone=zone)
    assert detail.startswith("time_zone: ")
    assert "use an IANA name such as 'Europe/Berlin'" in detail or "at least 1" in detail


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "UTC", "Asia/Kolkata"])
def test_iana_zones_are_accepted(zone: str) -> None:
    assert technician(time_zone=zone).zone == ZoneInfo(zone)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sites": []}, "sites: List should have at least 1 item"),
        ({"sites": ["north", "north"]}, "site 'north' is listed twice"),
        ({"sites": [""]}, "sites.0"),
        (
            {"skills": [{"skill": "welding"}, {"skill": "Welding"}]},
            "skill 'welding' is listed twice",
        ),
        ({"skills": [{"skill": "weld ing"}]}, "skills.0.skill"),
        (
            {"skills": [{"skill": "welding", "certified_until": "2026-02-30"}]},
            "skills.0.certified_until",
        ),
        ({"id": "has space"}, "id: String should match pattern"),
        ({"id": "-leading-dash"}, "id: String should match pattern"),
        ({"name": ""}, "name: String should have at least 1 character"),
        ({"email": "not-an-email"}, "email: String should match pattern"),
        ({"phone": "1"}, "phone"),
        ({"shoe_size": 43}, "shoe_size: Extra inputs are not permitted"),
    ],
)
def test_bad_technicians_are_refused_with_a_precise_message(
    fields: dict[str, Any], message: str
) -> None:
    assert message in refusal_of(**fields)


def test_a_refusal_lists_every_problem_and_keeps_the_errors() -> None:
    with pytest.raises(ValidationError) as caught:
        technician(time_zone="Nowhere", sites=[])
    assert "sites: " in caught.value.detail
    assert "time_zone: " in caught.value.detail
    assert {tuple(e["loc"]) for e in caught.value.extra["errors"]} == {("sites",), ("time_zone",)}


# --- skills and certifications --------------------------------------------------------


def test_a_certification_is_valid_through_its_last_day() -> None:
    tech = technician()  # welding certified until 2026-11-22
    assert has_valid_skill(tech, "welding", date(2026, 11, 21))
    assert has_valid_skill(tech, "welding", date(2026, 11, 22))  # expires today: still valid
    assert not has_valid_skill(tech, "welding", date(2026, 11, 23))


def test_an_expired_certification_is_explained_with_its_date() -> None:
    refusal = skill_refusal(technician(), "welding", date(2026, 11, 23))
    assert isinstance(refusal, CertificationExpiredError)
    assert isinstance(refusal, ConflictError)
    assert refusal.code == "certification_expired"
    assert "'welding'" in refusal.detail
    assert "until 2026-11-22" in refusal.detail
    assert "not valid on 2026-11-23" in refusal.detail
    assert refusal.extra == {
        "technician_id": "anna-berg",
        "skill": "welding",
        "certified_until": "2026-11-22",
        "on": "2026-11-23",
    }


def test_a_missing_skill_is_explained_with_the_skills_held() -> None:
    refusal = skill_refusal(technician(), "electrical", date(2026, 11, 22))
    assert isinstance(refusal, SkillMissingError)
    assert refusal.code == "skill_missing"
    assert refusal.detail == (
        "technician 'anna-berg' does not have the skill 'electrical' (their skills: hvac, welding)"
    )
    assert not has_valid_skill(technician(skills=[]), "hvac", date(2026, 11, 22))


def test_a_skill_without_expiry_is_valid_on_any_day_and_any_case() -> None:
    for day in (date(1970, 1, 1), date(2026, 11, 22), date(9999, 12, 31)):
        assert has_valid_skill(technician(), "HVAC", day)
        assert skill_refusal(technician(), "hvac", day) is None


# --- shifts and DST -------------------------------------------------------------------


def test_a_berlin_shift_is_8_to_16_on_the_wall_clock_on_both_sides_of_the_spring_change() -> None:
    tech = technician()  # Monday 08:00-16:00, Europe/Berlin
    assert shifts_on(tech, MONDAY_BEFORE_SPRING) == [(utc(2026, 3, 23, 7), utc(2026, 3, 23, 15))]
    assert shifts_on(tech, MONDAY_AFTER_SPRING) == [(utc(2026, 3, 30, 6), utc(2026, 3, 30, 14))]
    assert shifts_on(tech, SPRING_SUNDAY) == []


@pytest.mark.parametrize(
    ("at", "on"),
    [
        (utc(2026, 3, 30, 5, 59, second=59), False),
        (utc(2026, 3, 30, 6, 0), True),  # 08:00 CEST
        (utc(2026, 3, 30, 13, 59, second=59), True),
        (utc(2026, 3, 30, 14, 0), False),  # 16:00 CEST: the end is exclusive
        (utc(2026, 3, 23, 6, 30), False),  # 07:30 CET: before the shift
        (utc(2026, 3, 23, 7, 0), True),  # 08:00 CET
        (utc(2026, 3, 23, 14, 30), True),  # 15:30 CET
        (utc(2026, 3, 23, 15, 0), False),
        (utc(2026, 3, 24, 9, 0), False),  # Tuesday: no shift
    ],
)
def test_is_on_shift_follows_the_local_wall_clock(at: datetime, on: bool) -> None:
    assert is_on_shift(technician(), at) is on


def test_is_on_shift_reads_an_instant_given_in_any_zone() -> None:
    local = datetime(2026, 3, 30, 8, 0, tzinfo=ZoneInfo(BERLIN))
    assert is_on_shift(technician(), local)
    new_york = datetime(2026, 3, 30, 1, 59, tzinfo=ZoneInfo("America/New_York"))  # 05:59 UTC
    assert not is_on_shift(technician(), new_york)


def test_the_autumn_change_moves_the_utc_shift_back_an_hour() -> None:
    tech = technician()
    assert shifts_on(tech, date(2026, 10, 19)) == [(utc(2026, 10, 19, 6), utc(2026, 10, 19, 14))]
    assert shifts_on(tech, date(2026, 10, 26)) == [(utc(2026, 10, 26, 7), utc(2026, 10, 26, 15))]


def test_a_shift_starting_in_the_spring_gap_starts_when_the_clocks_jump() -> None:
    # 02:00-03:00 does not exist on 29 March 2026 in Berlin: 02:00 CET became 03:00 CEST.
    tech = technician(weekly_hours=[shift(SUNDAY, "02:30", "06:00")])
    assert shifts_on(tech, SPRING_SUNDAY) == [(utc(2026, 3, 29, 1), utc(2026, 3, 29, 4))]
    assert not is_on_shift(tech, utc(2026, 3, 29, 0, 59))
    assert is_on_shift(tech, utc(2026, 3, 29, 1, 0))


def test_a_shift_swallowed_by_the_spring_gap_never_happens() -> None:
    tech = technician(weekly_hours=[shift(SUNDAY, "02:10", "02:50")])
    assert shifts_on(tech, SPRING_SUNDAY) == []
    assert not is_on_shift(tech, utc(2026, 3, 29, 1, 0))
    assert shifts_on(tech, date(2026, 4, 5)) == [(utc(2026, 4, 5, 0, 10), utc(2026, 4, 5, 0, 50))]


def test_an_ambiguous_autumn_time_means_its_first_occurrence() -> None:
    # 02:00-03:00 happens twice on 25 October 2026: first in CEST (UTC+2), then in CET.
    tech = technician(weekly_hours=[shift(SUNDAY, "02:30", "04:00")])
    assert shifts_on(tech, AUTUMN_SUNDAY) == [(utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 3))]


def test_shift_windows_span_days_and_keep_whole_shifts() -> None:
    tech = technician(weekly_hours=[shift(MONDAY, "08:00", "16:00"), shift(2, "08:00", "12:00")])
    windows = shift_windows(tech, utc(2026, 3, 23, 10), utc(2026, 4, 1))
    assert windows == [
        (utc(2026, 3, 23, 7), utc(2026, 3, 23, 15)),  # started before the range: kept whole
        (utc(2026, 3, 25, 7), utc(2026, 3, 25, 11)),
        (utc(2026, 3, 30, 6), utc(2026, 3, 30, 14)),
    ]  # Wednesday 1 April starts after the range: left out


def test_within_shifts_joins_back_to_back_shifts_across_midnight() -> None:
    tech = technician(
        time_zone="UTC",
        weekly_hours=[shift(4, "16:00", "24:00"), shift(5, "00:00", "06:00")],
    )
    friday = utc(2026, 11, 20)
    assert within_shifts(tech, friday + timedelta(hours=20), friday + timedelta(hours=28))
    assert within_shifts(tech, friday + timedelta(hours=16), friday + timedelta(hours=30))
    assert not within_shifts(tech, friday + timedelta(hours=15), friday + timedelta(hours=17))
    assert not within_shifts(tech, friday + timedelta(hours=29), friday + timedelta(hours=31))
    assert is_on_shift(tech, friday + timedelta(hours=24))  # midnight belongs to Saturday's


def test_within_shifts_refuses_a_gap_between_shifts() -> None:
    tech = technician(
        weekly_hours=[shift(MONDAY, "08:00", "12:00"), shift(MONDAY, "13:00", "17:00")]
    )
    monday = datetime(2026, 11, 23, tzinfo=ZoneInfo(BERLIN))
    assert within_shifts(tech, monday.replace(hour=8), monday.replace(hour=12))
    assert not within_shifts(tech, monday.replace(hour=11), monday.replace(hour=14))


def test_a_technician_without_hours_is_never_on_shift() -> None:
    tech = technician(weekly_hours=[])
    assert not is_on_shift(tech, utc(2026, 3, 30, 10))
    assert shift_windows(tech, utc(2026, 1, 1), utc(2027, 1, 1)) == []


def test_the_local_date_is_the_technicians_own() -> None:
    late = utc(2026, 11, 22, 23, 30)  # already 23 November in Berlin
    assert local_date(technician(), late) == date(2026, 11, 23)
    assert local_date(technician(time_zone="America/New_York"), late) == date(2026, 11, 22)


@pytest.mark.parametrize(
    "call",
    [
        lambda t: is_on_shift(t, datetime(2026, 3, 30, 8)),  # noqa: DTZ001 - naive on purpose
        lambda t: local_date(t, datetime(2026, 3, 30, 8)),  # noqa: DTZ001
        lambda t: shift_windows(t, utc(2026, 3, 30), datetime(2026, 3, 31)),  # noqa: DTZ001
        lambda t: shift_windows(t, utc(2026, 3, 31), utc(2026, 3, 30)),
        lambda t: within_shifts(t, utc(2026, 3, 30), utc(2026, 3, 30)),
        lambda t: is_on_shift(t, datetime.min.replace(tzinfo=UTC)),
        lambda t: is_on_shift(t, datetime.max.replace(tzinfo=UTC)),
    ],
)
def test_naive_reversed_and_out_of_range_times_are_refused(call: Any) -> None:
    with pytest.raises(ValidationError):
        call(technician())


# --- time off -------------------------------------------------------------------------


def test_time_off_is_half_open() -> None:
    tech = stored(technician(), [absence(utc(2026, 12, 1, 10), utc(2026, 12, 1, 12))])
    assert is_off(tech, utc(2026, 12, 1, 11), utc(2026, 12, 1, 13))
    assert is_off(tech, utc(2026, 12, 1, 11, 59), utc(2026, 12, 1, 12))
    assert is_off(tech, utc(2026, 12, 1, 9), utc(2026, 12, 1, 10, 0, second=1))
    assert is_off(tech, utc(2026, 11, 1), utc(2027, 1, 1))  # the span covers it whole
    assert not is_off(tech, utc(2026, 12, 1, 12), utc(2026, 12, 1, 13))  # starts as it ends
    assert not is_off(tech, utc(2026, 12, 1, 9), utc(2026, 12, 1, 10))  # ends as it starts
    assert not is_off(stored(technician()), utc(2026, 12, 1), utc(2026, 12, 2))


def test_time_off_during_returns_the_absences_that_overlap() -> None:
    first = absence(utc(2026, 12, 1), utc(2026, 12, 3), 1)
    second = absence(utc(2026, 12, 2), utc(2026, 12, 5), 2)
    third = absence(utc(2026, 12, 10), utc(2026, 12, 11), 3)
    found = time_off_during([first, second, third], utc(2026, 12, 2, 12), utc(2026, 12, 4))
    assert [off.id for off in found] == [1, 2]


def test_is_off_refuses_naive_and_reversed_spans() -> None:
    tech = stored(technician())
    with pytest.raises(ValidationError, match="time zone"):
        is_off(tech, datetime(2026, 12, 1), utc(2026, 12, 2))  # noqa: DTZ001
    with pytest.raises(ValidationError, match="end must be after start"):
        is_off(tech, utc(2026, 12, 2), utc(2026, 12, 1))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"start_at": "2026-12-02T00:00:00Z", "end_at": "2026-12-01T00:00:00Z"},
            "time off must end after it starts",
        ),
        (
            {"start_at": "2026-12-01T00:00:00Z", "end_at": "2026-12-01T00:00:00Z"},
            "time off must end after it starts",
        ),
        ({"start_at": "2026-12-01T00:00:00", "end_at": "2026-12-02T00:00:00Z"}, "start_at"),
        ({"start_at": "2026-12-01T00:00:00Z"}, "end_at: Field required"),
        (
            {"start_at": "2026-12-01T00:00:00Z", "end_at": "2026-12-02T00:00:00Z", "reason": ""},
            "reason",
        ),
    ],
)
def test_bad_time_off_is_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_time_off(data)
    assert message in caught.value.detail


def test_time_off_is_kept_in_utc() -> None:
    off = parse_time_off(
        {"start_at": "2026-12-01T08:00:00+01:00", "end_at": "2026-12-01T17:00:00+01:00"}
    )
    assert off.start_at == utc(2026, 12, 1, 7)
    assert off.start_at.utcoffset() == timedelta(0)


# --- assignment -----------------------------------------------------------------------


def test_an_assignment_at_the_site_with_a_valid_skill_passes() -> None:
    check_assignment(technician(), order(), site="north", skill="welding", on=date(2026, 11, 22))
    check_assignment(technician(), order(), site="north", skill=None, on=date(2030, 1, 1))


@pytest.mark.parametrize(
    ("site", "skill", "on", "error", "words"),
    [
        ("south", None, date(2026, 11, 22), NotAtSiteError, ["'south'", "pump-1", "north"]),
        ("north", "plumbing", date(2026, 11, 22), SkillMissingError, ["'plumbing'"]),
        (
            "north",
            "welding",
            date(2026, 11, 23),
            CertificationExpiredError,
            ["'welding'", "2026-11-22", "2026-11-23"],
        ),
    ],
)
def test_an_assignment_the_technician_cannot_take_is_refused(
    site: str, skill: str | None, on: date, error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as caught:
        check_assignment(technician(), order(), site=site, skill=skill, on=on)
    assert isinstance(caught.value, ConflictError)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("status", [WorkOrderStatus.CLOSED, WorkOrderStatus.CANCELLED])
def test_a_finished_order_cannot_be_assigned(status: WorkOrderStatus) -> None:
    with pytest.raises(WorkOrderFinishedError, match=f"is {status.value}"):
        check_assignment(
            technician(), order(status), site="north", skill=None, on=date(2026, 11, 22)
        )


@pytest.mark.parametrize(
    "status", sorted(set(WorkOrderStatus) - {WorkOrderStatus.CLOSED, WorkOrderStatus.CANCELLED})
)
def test_an_order_in_any_other_status_can_be_assigned(status: WorkOrderStatus) -> None:
    check_assignment(technician(), order(status), site="north", skill="hvac", on=date(2026, 11, 22))
