"""Booking generated inspections: constraints, policy, diary bookkeeping, and properties."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.technicians import (
    Technician,
    TimeOff,
    has_valid_skill,
    is_off,
    local_date,
    within_shifts,
    works_at,
)
from scheduler.booking import BookedSlot, BookingRequest, Diary, Proposal, why_unbookable

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
WEEKDAYS = range(5)
# 2026: Monday 23 March is still winter time in Berlin (UTC+1); summer time (UTC+2) starts
# on Sunday 29 March, so Monday 30 March 08:00 local is 06:00 UTC.
MONDAY = date(2026, 3, 23)
MONDAY_AFTER_SPRING = date(2026, 3, 30)


def utc(day: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def shift(weekday: int, start: str, end: str) -> dict[str, Any]:
    return {"weekday": weekday, "start": start, "end": end}


OFFICE_HOURS = [shift(day, "08:00", "16:00") for day in WEEKDAYS]


def absence(tech_id: str, start_at: datetime, end_at: datetime, off_id: int = 1) -> TimeOff:
    return TimeOff(
        id=off_id,
        technician_id=tech_id,
        start_at=start_at,
        end_at=end_at,
        created_at=T0,
        created_by="planner",
    )


def technician(
    tech_id: str = "anna",
    *,
    sites: list[str] | None = None,
    zone: str = BERLIN,
    skills: dict[str, str | None] | None = None,
    hours: list[dict[str, Any]] | None = None,
    time_off: Sequence[tuple[datetime, datetime]] = (),
) -> Technician:
    held = {"hvac": None} if skills is None else skills
    return Technician.model_validate(
        {
            "id": tech_id,
            "name": tech_id.title(),
            "sites": sites or ["north"],
            "time_zone": zone,
            "skills": [{"skill": s, "certified_until": until} for s, until in held.items()],
            "weekly_hours": OFFICE_HOURS if hours is None else hours,
            "time_off": [
                absence(tech_id, start, end, n) for n, (start, end) in enumerate(time_off)
            ],
            "created_at": T0,
            "updated_at": T0,
        }
    )


def request(
    not_before: datetime,
    *,
    work_order_id: int = 1,
    site: str = "north",
    duration: timedelta = HOUR,
    skills: tuple[str, ...] = ("hvac",),
    due_at: datetime | None = None,
    search_until: datetime | None = None,
) -> BookingRequest:
    return BookingRequest(
        work_order_id=work_order_id,
        site=site,
        duration=duration,
        skills=skills,
        not_before=not_before,
        due_at=due_at or not_before + timedelta(days=7),
        search_until=search_until or not_before + timedelta(days=30),
    )


def slot(
    work_order_id: int, start_at: datetime, duration: timedelta = HOUR, tech_id: str = "anna"
) -> BookedSlot:
    return BookedSlot(work_order_id, tech_id, start_at, start_at + duration)


def booked(diary: Diary, proposal: Proposal | None) -> Proposal:
    assert proposal is not None
    diary.book(proposal)
    return proposal


# --- the policy, constraint by constraint -----------------------------------------------


@dataclass(frozen=True)
class Case:
    technicians: list[Technician]
    request: BookingRequest
    expected: tuple[str, datetime] | None  # technician and start, or no proposal
    booked: tuple[BookedSlot, ...] = ()


MONDAY_8 = utc(MONDAY, 7)  # 08:00 in Berlin
TUESDAY_8 = MONDAY_8 + timedelta(days=1)

CASES = {
    "earliest start at the start of the shift": Case(
        [technician()], request(utc(MONDAY)), ("anna", MONDAY_8)
    ),
    "start rounded up to the 15-minute grid": Case(
        [technician()], request(MONDAY_8 + timedelta(minutes=7)), ("anna", MONDAY_8 + 15 * MINUTE)
    ),
    "skill missing: nobody": Case([technician()], request(utc(MONDAY), skills=("welding",)), None),
    "skill missing: the one who has it": Case(
        [
            technician(),
            technician("bob", skills={"welding": None}, hours=[shift(1, "08:00", "16:00")]),
        ],
        request(utc(MONDAY), skills=("welding",)),
        ("bob", TUESDAY_8),
    ),
    "skills compared case-insensitively": Case(
        [technician()], request(utc(MONDAY), skills=("HVAC",)), ("anna", MONDAY_8)
    ),
    "certification valid on its last day": Case(
        [technician(skills={"hvac": "2026-03-23"})], request(utc(MONDAY)), ("anna", MONDAY_8)
    ),
    "certification expired the day before the only free day": Case(
        [technician(skills={"hvac": "2026-03-23"}, time_off=[(utc(MONDAY), utc(MONDAY, 23))])],
        request(utc(MONDAY)),
        None,
    ),
    "certification expired: the other technician, later": Case(
        [
            technician(skills={"hvac": "2026-03-23"}),
            technician("bob", hours=[shift(2, "08:00", "16:00")]),
        ],
        request(TUESDAY_8),
        ("bob", MONDAY_8 + timedelta(days=2)),
    ),
    "wrong site": Case([technician(sites=["south"])], request(utc(MONDAY)), None),
    "one of several sites": Case(
        [technician(sites=["north", "south"])],
        request(utc(MONDAY), site="south"),
        ("anna", MONDAY_8),
    ),
    "outside working hours: the next morning": Case(
        [technician()], request(utc(MONDAY, 14, 30)), ("anna", TUESDAY_8)
    ),
    "the job must finish inside the shift": Case(
        [technician()],
        request(utc(MONDAY, 13), duration=2 * HOUR + MINUTE),
        ("anna", TUESDAY_8),
    ),
    "longer than any shift: nobody": Case(
        [technician()], request(utc(MONDAY), duration=8 * HOUR + MINUTE), None
    ),
    "during time off: after it": Case(
        [technician(time_off=[(MONDAY_8 - HOUR, MONDAY_8 + 90 * MINUTE)])],
        request(utc(MONDAY)),
        ("anna", MONDAY_8 + 90 * MINUTE),
    ),
    "time off ending mid-minute: the next grid point": Case(
        [technician(time_off=[(MONDAY_8, MONDAY_8 + HOUR + timedelta(seconds=1))])],
        request(utc(MONDAY)),
        ("anna", MONDAY_8 + 75 * MINUTE),
    ),
    "overlapping a booking: after it": Case(
        [technician()],
        request(utc(MONDAY)),
        ("anna", MONDAY_8 + HOUR),
        booked=(slot(9, MONDAY_8),),
    ),
    "a gap too short is skipped": Case(
        [technician()],
        request(utc(MONDAY), duration=2 * HOUR),
        ("anna", MONDAY_8 + 270 * MINUTE),
        booked=(slot(8, MONDAY_8 + HOUR), slot(9, MONDAY_8 + 210 * MINUTE)),
    ),
    "earliest of two technicians": Case(
        [technician(), technician("bob")],
        request(utc(MONDAY)),
        ("bob", MONDAY_8),
        booked=(slot(9, MONDAY_8),),
    ),
    "a tie goes to the fewest booked minutes": Case(
        [technician(), technician("bob")],
        request(utc(MONDAY)),
        ("bob", MONDAY_8),
        booked=(slot(9, TUESDAY_8),),
    ),
    "a tie on minutes goes to the technician id": Case(
        [technician("bob"), technician()], request(utc(MONDAY)), ("anna", MONDAY_8)
    ),
    "New York hours in their own zone": Case(
        [technician(zone=NEW_YORK)], request(utc(MONDAY)), ("anna", utc(MONDAY, 12))
    ),
    "a DST week in Berlin still starts at 08:00 local": Case(
        [technician()],
        request(utc(MONDAY) + timedelta(days=5)),
        ("anna", utc(MONDAY_AFTER_SPRING, 6)),
    ),
    "back-to-back shifts are one stretch": Case(
        [technician(hours=[shift(0, "08:00", "12:00"), shift(0, "12:00", "16:00")])],
        request(utc(MONDAY, 10), duration=2 * HOUR),
        ("anna", utc(MONDAY, 10)),
    ),
    "back-to-back shifts across midnight": Case(
        [technician(hours=[shift(0, "16:00", "24:00"), shift(1, "00:00", "06:00")])],
        request(utc(MONDAY, 21), duration=4 * HOUR),
        ("anna", utc(MONDAY, 21)),
    ),
    "nothing before search_until": Case(
        [technician()],
        request(utc(MONDAY, 15), search_until=utc(MONDAY, 23)),
        None,
    ),
    "search_until is the latest start": Case(
        [technician()], request(utc(MONDAY, 15), search_until=TUESDAY_8), ("anna", TUESDAY_8)
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_propose_finds_the_earliest_feasible_slot(case: Case) -> None:
    diary = Diary(case.technicians, case.booked)
    proposal = diary.propose(case.request)
    found = None if proposal is None else (proposal.technician_id, proposal.start_at)
    assert found == case.expected
    if proposal is not None:
        assert proposal.end_at - proposal.start_at == case.request.duration
        assert proposal.work_order_id == case.request.work_order_id


def test_propose_has_no_side_effect() -> None:
    diary = Diary([technician()])
    first = diary.propose(request(utc(MONDAY)))
    assert diary.propose(request(utc(MONDAY))) == first
    assert diary.bookings("anna") == []


def test_a_slot_ending_after_the_due_time_is_flagged_late() -> None:
    diary = Diary([technician(time_off=[(utc(MONDAY), utc(MONDAY, 23))])])
    proposal = diary.propose(request(utc(MONDAY), due_at=utc(MONDAY, 12)))
    assert proposal == Proposal(1, "anna", TUESDAY_8, TUESDAY_8 + HOUR, late=True)


def test_ending_exactly_at_the_due_time_is_on_time() -> None:
    diary = Diary([technician()])
    proposal = diary.propose(request(utc(MONDAY), due_at=MONDAY_8 + HOUR))
    assert proposal is not None
    assert not proposal.late


def test_an_on_time_slot_wins_over_a_less_busy_technician_later() -> None:
    diary = Diary(
        [technician(), technician("bob", hours=[shift(1, "08:00", "16:00")])],
        [slot(9, MONDAY_8 + HOUR, 5 * HOUR)],
    )
    proposal = diary.propose(request(utc(MONDAY), due_at=MONDAY_8 + HOUR))
    assert proposal == Proposal(1, "anna", MONDAY_8, MONDAY_8 + HOUR, late=False)


def test_booking_fills_a_day_then_moves_to_the_next() -> None:
    diary = Diary([technician()])
    starts = [
        booked(diary, diary.propose(request(utc(MONDAY), work_order_id=n))).start_at
        for n in range(10)
    ]
    assert starts == [MONDAY_8 + n * HOUR for n in range(8)] + [TUESDAY_8, TUESDAY_8 + HOUR]
    assert diary.booked_minutes("anna") == 600


def test_bookings_are_balanced_between_equally_free_technicians() -> None:
    diary = Diary([technician(), technician("bob")])
    chosen = [
        booked(diary, diary.propose(request(utc(MONDAY), work_order_id=n))).technician_id
        for n in range(4)
    ]
    assert chosen == ["anna", "bob", "anna", "bob"]


def test_release_then_propose_gives_the_slot_back() -> None:
    diary = Diary([technician()])
    first = booked(diary, diary.propose(request(utc(MONDAY), work_order_id=1)))
    second = booked(diary, diary.propose(request(utc(MONDAY), work_order_id=2)))
    assert second.start_at == MONDAY_8 + HOUR
    diary.release(1)
    assert diary.booked_minutes("anna") == 60
    again = diary.propose(request(utc(MONDAY), work_order_id=3))
    assert again is not None
    assert again.start_at == first.start_at
    diary.release(1)  # already free: nothing to do


def test_release_frees_only_working_time() -> None:
    # Booked as a fact over the end of the shift: releasing must not create free time
    # after 16:00.
    diary = Diary([technician()], [slot(9, utc(MONDAY, 14), 2 * HOUR)])
    assert booked(diary, diary.propose(request(utc(MONDAY, 14)))).start_at == TUESDAY_8
    diary.release(9)
    diary.release(1)
    late_request = request(utc(MONDAY, 14), duration=2 * HOUR)
    assert booked(diary, diary.propose(late_request)).start_at == TUESDAY_8


def test_book_refuses_an_overlap_and_a_second_slot_for_one_order() -> None:
    diary = Diary([technician()], [slot(9, MONDAY_8)])
    with pytest.raises(ValueError, match="work order 9"):
        diary.book(Proposal(1, "anna", MONDAY_8 + 30 * MINUTE, MONDAY_8 + 90 * MINUTE, False))
    with pytest.raises(ValueError, match="already booked"):
        diary.book(Proposal(9, "anna", TUESDAY_8, TUESDAY_8 + HOUR, False))
    with pytest.raises(ValueError, match="no technician"):
        diary.book(Proposal(1, "zoe", TUESDAY_8, TUESDAY_8 + HOUR, False))
    diary.book(Proposal(1, "anna", MONDAY_8 + HOUR, MONDAY_8 + 2 * HOUR, False))  # touching
    assert [s.work_order_id for s in diary.bookings("anna")] == [9, 1]


def test_record_replaces_the_orders_slot_and_keeps_overlaps_as_facts() -> None:
    diary = Diary([technician()], [slot(9, MONDAY_8)])
    diary.record(slot(9, TUESDAY_8))
    diary.record(slot(8, TUESDAY_8 + 30 * MINUTE))
    assert [s.start_at for s in diary.bookings("anna")] == [TUESDAY_8, TUESDAY_8 + 30 * MINUTE]
    assert diary.booked_minutes("anna") == 120
    assert booked(diary, diary.propose(request(utc(MONDAY)))).start_at == MONDAY_8


def test_rekey_moves_a_provisional_slot_to_the_real_order() -> None:
    diary = Diary([technician()])
    booked(diary, diary.propose(request(utc(MONDAY), work_order_id=-1)))
    diary.rekey(-1, 41)
    assert diary.slot(-1) is None
    assert [s.work_order_id for s in diary.bookings("anna")] == [41]
    diary.release(41)
    assert diary.bookings("anna") == []
    with pytest.raises(ValueError, match="not booked"):
        diary.rekey(-1, 42)


def test_a_request_earlier_than_anything_built_still_finds_its_slot() -> None:
    diary = Diary([technician()])
    later = booked(diary, diary.propose(request(utc(MONDAY) + timedelta(days=14))))
    assert later.start_at == utc(MONDAY_AFTER_SPRING, 6) + timedelta(days=7)
    earlier = diary.propose(request(utc(MONDAY), work_order_id=2))
    assert earlier is not None
    assert earlier.start_at == MONDAY_8


def test_a_coarser_grid_is_honoured() -> None:
    diary = Diary([technician()], granularity=timedelta(hours=1))
    proposal = diary.propose(request(MONDAY_8 + MINUTE))
    assert proposal is not None
    assert proposal.start_at == MONDAY_8 + HOUR


@pytest.mark.parametrize(
    "granularity", [timedelta(0), timedelta(seconds=90), timedelta(minutes=-15)]
)
def test_a_grid_must_be_whole_positive_minutes(granularity: timedelta) -> None:
    with pytest.raises(ValueError, match="granularity"):
        Diary([], granularity=granularity)


def test_a_request_needs_a_duration_and_aware_times() -> None:
    with pytest.raises(ValueError, match="duration"):
        request(utc(MONDAY), duration=timedelta(0))
    with pytest.raises(ValueError, match="not_before"):
        request(datetime(2026, 3, 23))  # noqa: DTZ001 - the naive time under test


# --- a planner's own slot -----------------------------------------------------------------


CHECKS = {
    "fine": (MONDAY_8 + HOUR, "north", ("hvac",), None),
    "the order's own slot is no overlap": (MONDAY_8, "north", ("hvac",), None),
    "not at site": (MONDAY_8 + HOUR, "south", ("hvac",), "does not work at site 'south'"),
    "skill missing": (MONDAY_8 + HOUR, "north", ("welding",), "does not have the skill"),
    "certification expired": (TUESDAY_8 + HOUR, "north", ("pumps",), "not valid on 2026-03-24"),
    "outside working hours": (utc(MONDAY, 14, 30), "north", ("hvac",), "outside the working"),
    "time off": (utc(MONDAY, 12), "north", ("hvac",), "is off from"),
    "overlap": (MONDAY_8 + 2 * HOUR + 30 * MINUTE, "north", ("hvac",), "work order 8"),
}


@pytest.mark.parametrize(("start_at", "site", "skills", "reason"), CHECKS.values(), ids=CHECKS)
def test_check_says_why_a_manual_slot_is_refused(
    start_at: datetime, site: str, skills: tuple[str, ...], reason: str | None
) -> None:
    tech = technician(
        skills={"hvac": None, "pumps": "2026-03-23"},
        time_off=[(utc(MONDAY, 12), utc(MONDAY, 13))],
    )
    diary = Diary([tech], [slot(1, MONDAY_8), slot(8, MONDAY_8 + 3 * HOUR)])
    found = diary.check("anna", 1, start_at, start_at + HOUR, site, skills)
    if reason is None:
        assert found is None
    else:
        assert found is not None
        assert reason in found


def test_check_knows_unknown_technicians_and_empty_slots() -> None:
    diary = Diary([technician()])
    assert diary.check("zoe", 1, MONDAY_8, MONDAY_8 + HOUR, "north", ()) == "no technician 'zoe'"
    assert "end after" in (diary.check("anna", 1, MONDAY_8, MONDAY_8, "north", ()) or "")


# --- why nothing was proposed --------------------------------------------------------------


REASONS = {
    "nobody at the site": (
        [technician(sites=["south"])],
        request(utc(MONDAY)),
        "no technician works at site 'north'",
    ),
    "nobody with the skills": (
        [technician(), technician("bob", skills={"welding": None})],
        request(utc(MONDAY), skills=("welding", "hvac")),
        "no technician at site 'north' has skills hvac, welding",
    ),
    "nobody with hours": (
        [technician(hours=[])],
        request(utc(MONDAY)),
        "no technician at site 'north' with skills hvac has working hours",
    ),
    "certifications expired": (
        [technician(skills={"hvac": "2026-03-01"})],
        request(utc(MONDAY)),
        "the certifications for hvac of every technician at site 'north' expired",
    ),
    "no free slot": (
        [technician()],
        request(utc(MONDAY), search_until=utc(MONDAY, 3)),
        "no free slot of 60 min for anna at site 'north'",
    ),
    "nothing to search": (
        [technician()],
        request(utc(MONDAY), search_until=utc(MONDAY) - HOUR),
        "nothing to search",
    ),
}


@pytest.mark.parametrize(("technicians", "req", "reason"), REASONS.values(), ids=REASONS)
def test_why_unbookable_names_the_reason(
    technicians: list[Technician], req: BookingRequest, reason: str
) -> None:
    diary = Diary(technicians)
    assert diary.propose(req) is None
    assert why_unbookable(diary, req).startswith(reason)


# --- properties -----------------------------------------------------------------------------

PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ZONES = ["UTC", BERLIN, NEW_YORK, "Asia/Kolkata", "Australia/Lord_Howe"]
# Around DST changes: Europe (29 March, 25 October 2026), the US (8 March), Lord Howe's
# half-hour change (5 April).
BASES = [
    datetime(2026, 3, 26, tzinfo=UTC),
    datetime(2026, 10, 22, tzinfo=UTC),
    datetime(2026, 3, 6, tzinfo=UTC),
    datetime(2026, 4, 2, tzinfo=UTC),
]
SITES = ["a", "b"]
SKILLS = ["x", "y", "z"]


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@st.composite
def weekly_hours(draw: st.DrawFn) -> list[dict[str, Any]]:
    shifts = []
    for weekday in range(7):
        if draw(st.integers(0, 3)) == 0:
            continue  # a day off
        points = sorted(
            draw(st.sets(st.integers(0, 288).map(lambda n: n * 5), min_size=2, max_size=4))
        )
        if draw(st.booleans()):  # back to back
            pairs = list(pairwise(points))
        else:
            pairs = list(zip(points[::2], points[1::2], strict=False))
        shifts += [shift(weekday, hhmm(start), hhmm(end)) for start, end in pairs]
    return shifts


@st.composite
def technicians(draw: st.DrawFn, base: datetime) -> list[Technician]:
    found = []
    for index in range(draw(st.integers(1, 3))):
        tech_id = f"t{index}"
        expiries = st.one_of(
            st.none(),
            st.integers(-2, 4).map(lambda days: (base.date() + timedelta(days=days)).isoformat()),
        )
        skills = draw(st.dictionaries(st.sampled_from(SKILLS), expiries, min_size=1))
        offs = []
        for _ in range(draw(st.integers(0, 2))):
            start = base + timedelta(seconds=draw(st.integers(0, 5 * 86400)))
            offs.append((start, start + timedelta(seconds=draw(st.integers(60, 2 * 86400)))))
        found.append(
            technician(
                tech_id,
                sites=sorted(draw(st.sets(st.sampled_from(SITES), min_size=1))),
                zone=draw(st.sampled_from(ZONES)),
                skills=skills,
                hours=draw(weekly_hours()),
                time_off=offs,
            )
        )
    return found


@st.composite
def requests(
    draw: st.DrawFn,
    techs: list[Technician],
    base: datetime,
    work_order_id: int,
    days: int,
    *,
    alike: tuple[int, int] | None,
) -> BookingRequest:
    # Mostly sites and skills somebody has, so that most requests get somewhere.
    tech = draw(st.sampled_from(techs))
    held = [h.skill for h in tech.skills]
    if alike is None:
        minutes = draw(st.integers(1, 48)) * 5
        offset = draw(st.integers(0, 3 * 86400))
    else:
        minutes, offset = alike
    not_before = base + timedelta(seconds=offset)
    return BookingRequest(
        work_order_id=work_order_id,
        site=draw(st.sampled_from([*tech.sites, *tech.sites, *SITES, "c"])),
        duration=timedelta(minutes=minutes),
        skills=tuple(draw(st.lists(st.sampled_from([*held, *held, *SKILLS]), max_size=2))),
        not_before=not_before,
        due_at=not_before + timedelta(minutes=draw(st.integers(0, days * 1440))),
        search_until=not_before + timedelta(minutes=draw(st.integers(0, days * 1440))),
    )


@st.composite
def scenarios(
    draw: st.DrawFn, days: int, max_requests: int
) -> tuple[list[Technician], list[BookedSlot], list[BookingRequest | int], timedelta]:
    base = draw(st.sampled_from(BASES))
    techs = draw(technicians(base))
    existing = []
    for n in range(draw(st.integers(0, 3))):
        start = base + timedelta(minutes=draw(st.integers(0, 4 * 288)) * 5)
        tech = draw(st.sampled_from(techs))
        existing.append(slot(1000 + n, start, timedelta(minutes=30), tech.id))
    # Requests alike in length and earliest start make searches reuse what earlier ones
    # learnt, and releases hand that back.
    alike = draw(st.none() | st.tuples(st.sampled_from([30, 60, 120]), st.sampled_from([0, 43200])))
    steps: list[BookingRequest | int] = []
    for n in range(draw(st.integers(1, max_requests))):
        if n and draw(st.integers(0, 4)) == 0:
            steps.append(draw(st.integers(0, n - 1)))  # release an earlier order
        else:
            steps.append(draw(requests(techs, base, n, days, alike=alike)))
    granularity = timedelta(minutes=draw(st.sampled_from([5, 15, 30, 60])))
    return techs, existing, steps, granularity


def overlaps(one: BookedSlot, other: BookedSlot) -> bool:
    return one.start_at < other.end_at and other.start_at < one.end_at


def assert_feasible(
    tech: Technician, proposal: Proposal, req: BookingRequest, granularity: timedelta
) -> None:
    start_at, end_at = proposal.start_at, proposal.end_at
    assert works_at(tech, req.site)
    assert within_shifts(tech, start_at, end_at)
    assert not is_off(tech, start_at, end_at)
    on = local_date(tech, start_at)
    assert all(has_valid_skill(tech, skill, on) for skill in req.skills)
    assert req.not_before <= start_at <= req.search_until
    assert end_at - start_at == req.duration
    assert proposal.late == (end_at > req.due_at)
    assert (start_at - datetime(1970, 1, 1, tzinfo=UTC)) % granularity == timedelta(0)


@PROPERTIES
@given(scenarios(days=5, max_requests=12))
def test_every_booking_respects_every_constraint(
    scenario: tuple[list[Technician], list[BookedSlot], list[BookingRequest | int], timedelta],
) -> None:
    techs, existing, steps, granularity = scenario
    by_id = {t.id: t for t in techs}
    diary = Diary(techs, existing, granularity)
    ours: dict[int, Proposal] = {}
    for step in steps:
        if isinstance(step, int):
            diary.release(step)
            ours.pop(step, None)
            continue
        proposal = diary.propose(step)
        if proposal is None:
            assert why_unbookable(diary, step)
            continue
        assert_feasible(by_id[proposal.technician_id], proposal, step, granularity)
        assert (
            diary.check(
                proposal.technician_id,
                step.work_order_id,
                proposal.start_at,
                proposal.end_at,
                step.site,
                step.skills,
            )
            is None
        )
        diary.book(proposal)
        ours[step.work_order_id] = proposal
    for tech in techs:
        slots = diary.bookings(tech.id)
        assert [s.start_at for s in slots] == sorted(s.start_at for s in slots)
        mine = [s for s in slots if s.work_order_id in ours]
        assert all(
            not overlaps(one, other)
            for one in mine
            for other in slots
            if other.work_order_id != one.work_order_id
        )
        assert diary.booked_minutes(tech.id) == sum(
            (s.end_at - s.start_at) // MINUTE for s in slots
        )


def reference(
    techs: list[Technician], diary: Diary, req: BookingRequest, granularity: timedelta
) -> tuple[str, datetime] | None:
    """Scan every grid minute from not_before, asking core.technicians directly."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    start_at = req.not_before + (epoch - req.not_before) % granularity
    qualified = [t for t in techs if works_at(t, req.site)]
    while start_at <= req.search_until:
        end_at = start_at + req.duration
        free = [
            t
            for t in qualified
            if all(has_valid_skill(t, s, local_date(t, start_at)) for s in req.skills)
            and not is_off(t, start_at, end_at)
            and not any(s.start_at < end_at and start_at < s.end_at for s in diary.bookings(t.id))
            and within_shifts(t, start_at, end_at)
        ]
        if free:
            chosen = min(free, key=lambda t: (diary.booked_minutes(t.id), t.id))
            return chosen.id, start_at
        start_at += granularity
    return None


@PROPERTIES
@given(scenarios(days=2, max_requests=10))
def test_the_fast_search_agrees_with_a_brute_force_scan(
    scenario: tuple[list[Technician], list[BookedSlot], list[BookingRequest | int], timedelta],
) -> None:
    techs, existing, steps, granularity = scenario
    diary = Diary(techs, existing, granularity)
    for step in steps:
        if isinstance(step, int):
            diary.release(step)
            continue
        proposal = diary.propose(step)
        found = None if proposal is None else (proposal.technician_id, proposal.start_at)
        assert found == reference(techs, diary, step, granularity)
        if proposal is not None:
            diary.book(proposal)
