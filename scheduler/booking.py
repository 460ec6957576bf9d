"""Book generated inspections into technicians' calendars: earliest feasible slot, balanced.

Pure: technicians, existing bookings and requests go in, proposals come out. Nothing here
reads the clock or touches a store. See docs/booking.md for the policy and its costs.

Inside, every instant is a whole number of UTC minutes since the Unix epoch (plain ints
are what make a proposal cost microseconds). Rounding always goes the safe way: working
hours shrink to whole minutes, time off and bookings grow to whole minutes.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.technicians import (
    CertificationExpiredError,
    Technician,
    local_date,
    shifts_on,
    skill_refusal,
    time_off_during,
    within_shifts,
    works_at,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)
_DAY = timedelta(days=1)
_DAY_MINUTES = 1440
# Days added to a calendar at a time: a week keeps extensions rare without building
# months nobody asks about.
_CHUNK_DAYS = 7

DEFAULT_GRANULARITY = timedelta(minutes=15)

# A zone and weekly shifts: all that a technician's working hours depend on.
_HoursKey = tuple[str, tuple[tuple[int, str, str], ...]]


def _floor(at: datetime) -> int:
    return (at - _EPOCH) // _MINUTE


def _ceil(at: datetime) -> int:
    return -((_EPOCH - at) // _MINUTE)


def _instant(minute: int) -> datetime:
    return _EPOCH + timedelta(minutes=minute)


def _aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {value.isoformat()}")


@dataclass(frozen=True)
class BookingRequest:
    """Ask for a slot for one work order: where, how long, which skills, and when."""

    work_order_id: int
    site: str
    duration: timedelta
    skills: tuple[str, ...]
    not_before: datetime  # earliest allowed start (caller: max(now, due_at - booking window))
    due_at: datetime  # finish by this to be on time
    search_until: datetime  # latest start worth proposing, even late

    def __post_init__(self) -> None:
        """Refuse a request that cannot be searched: naive times or no duration."""
        if self.duration <= timedelta(0):
            raise ValueError(f"duration must be positive, got {self.duration}")
        _aware(self.not_before, "not_before")
        _aware(self.due_at, "due_at")
        _aware(self.search_until, "search_until")


@dataclass(frozen=True)
class Proposal:
    """Offer one technician's slot for a work order; `late` if it ends after the due time."""

    work_order_id: int
    technician_id: str
    start_at: datetime
    end_at: datetime
    late: bool


@dataclass(frozen=True)
class BookedSlot:
    """Hold a technician for a work order over [start_at, end_at): the diary respects it."""

    work_order_id: int
    technician_id: str
    start_at: datetime
    end_at: datetime


class _ShiftCache:
    """Shifts as whole UTC minutes per (zone and weekly hours, local day), built once.

    core.technicians.shifts_on costs microseconds per call; technicians with the same
    hours share the answer.
    """

    def __init__(self) -> None:
        self._days: dict[tuple[_HoursKey, date], list[tuple[int, int]]] = {}

    def on(self, technician: Technician, key: _HoursKey, day: date) -> list[tuple[int, int]]:
        found = self._days.get((key, day))
        if found is None:
            found = []
            for opens_at, closes_at in shifts_on(technician, day):
                opens, closes = _ceil(opens_at), _floor(closes_at)
                if opens < closes:
                    found.append((opens, closes))
            self._days[key, day] = found
        return found


def _minus(start: int, end: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Return [start, end) without the `holes` (sorted by start, may overlap)."""
    pieces = []
    cursor = start
    for hole_start, hole_end in holes:
        if hole_start >= end:
            break
        if hole_start > cursor:
            pieces.append((cursor, hole_start))
        cursor = max(cursor, hole_end)
        if cursor >= end:
            return pieces
    if cursor < end:
        pieces.append((cursor, end))
    return pieces


class _Calendar:
    """One technician: time off, bookings, and the free time left in working hours.

    Free time is kept as sorted, disjoint, non-touching intervals, built lazily a week at a
    time over a contiguous range of the technician's local days. A fully booked day simply
    has no free interval, so a search skips it in the bisect, not day by day.
    """

    __slots__ = (
        "booked",
        "busy_ends",
        "busy_slots",
        "busy_starts",
        "cursors",
        "first_day",
        "free_ends",
        "free_starts",
        "hi_minute",
        "hours_key",
        "id",
        "last_day",
        "lo_minute",
        "longest",
        "off",
        "shifts",
        "technician",
        "zone",
    )

    def __init__(self, technician: Technician, shifts: _ShiftCache) -> None:
        self.technician = technician
        self.shifts = shifts
        self.id = technician.id
        self.zone = ZoneInfo(technician.time_zone)
        # Shifts depend on nothing else, so technicians with the same hours share them.
        self.hours_key: _HoursKey = (
            technician.time_zone,
            tuple((s.weekday, s.start, s.end) for s in technician.weekly_hours),
        )
        self.off = sorted((_floor(o.start_at), _ceil(o.end_at)) for o in technician.time_off)
        self.busy_starts: list[int] = []
        self.busy_ends: list[int] = []
        self.busy_slots: list[BookedSlot] = []
        self.longest = 0  # never shrinks: only bounds how far back an overlap can start
        self.booked = 0
        self.free_starts: list[int] = []
        self.free_ends: list[int] = []
        self.first_day: date | None = None
        self.last_day = date.min
        self.lo_minute = 0
        self.hi_minute = 0
        # Per job length: a range of minutes known to hold no free start on the grid.
        # Bookings only take free time away, so it stays true until a release or until
        # earlier days are built.
        self.cursors: dict[int, tuple[int, int]] = {}

    # --- days ---------------------------------------------------------------------

    def day_of(self, minute: int) -> date:
        return _instant(minute).astimezone(self.zone).date()

    def midnight(self, day: date) -> int:
        return _floor(datetime.combine(day, time(0), tzinfo=self.zone))

    def reach_back(self, minute: int) -> None:
        """Make sure every shift that could hold a start at `minute` is built."""
        if self.first_day is not None and minute >= self.lo_minute + _DAY_MINUTES:
            return
        # A day of margin: yesterday's shift may run into today's stretch.
        day = self.day_of(minute) - _DAY
        if self.first_day is None:
            self.first_day = day
            self.last_day = day - _DAY
            self.lo_minute = self.hi_minute = self.midnight(day)
            return
        if day >= self.first_day:
            return
        first = self.first_day
        self.first_day = day
        self.lo_minute = self.midnight(day)
        while day < first:
            self.build(day)
            day += _DAY
        self.cursors.clear()  # free time appeared before the bounds

    def extend(self) -> None:
        """Build the next week of free time."""
        for _ in range(_CHUNK_DAYS):
            self.last_day += _DAY
            self.build(self.last_day)
        self.hi_minute = self.midnight(self.last_day + _DAY)

    def build(self, day: date) -> None:
        for opens, closes in self.shifts.on(self.technician, self.hours_key, day):
            for start, end in _minus(opens, closes, self.blocked(opens, closes)):
                self.add_free(start, end)

    def blocked(self, start: int, end: int) -> list[tuple[int, int]]:
        """Return time off and bookings overlapping [start, end), by start."""
        holes = [(s, e) for s, e in self.off if s < end and e > start]
        low = bisect_right(self.busy_starts, start - self.longest)
        high = bisect_left(self.busy_starts, end)
        holes += [
            (self.busy_starts[i], self.busy_ends[i])
            for i in range(low, high)
            if self.busy_ends[i] > start
        ]
        holes.sort()
        return holes

    # --- free time ----------------------------------------------------------------

    def add_free(self, start: int, end: int) -> None:
        starts, ends = self.free_starts, self.free_ends
        first = bisect_left(ends, start)  # touching counts: free time stays one stretch
        last = bisect_right(starts, end)
        if first < last:
            start = min(start, starts[first])
            end = max(end, ends[last - 1])
        starts[first:last] = [start]
        ends[first:last] = [end]

    def take_free(self, start: int, end: int) -> None:
        starts, ends = self.free_starts, self.free_ends
        first = bisect_right(ends, start)
        last = bisect_left(starts, end)
        if first >= last:
            return
        new_starts, new_ends = [], []
        if starts[first] < start:
            new_starts.append(starts[first])
            new_ends.append(start)
        if ends[last - 1] > end:
            new_starts.append(end)
            new_ends.append(ends[last - 1])
        starts[first:last] = new_starts
        ends[first:last] = new_ends

    def earliest(self, not_before: int, length: int, latest: int, step: int) -> int:
        """Return the first grid start in [not_before, latest] with `length` free minutes, or -1."""
        if not_before > latest:
            return -1
        self.reach_back(not_before)
        known_from, known_to = self.cursors.get(length, (0, 0))
        jumped = known_from <= not_before < known_to
        lower = known_to if jumped else not_before
        if lower > latest:
            return -1
        starts, ends = self.free_starts, self.free_ends
        position = lower
        index = bisect_right(ends, position)
        found = -1
        while True:
            if index == len(starts):
                # A later day's shifts start after its midnight; a day of margin for zones
                # whose midnight is not where a naive reading puts it.
                if self.hi_minute - _DAY_MINUTES > latest:
                    break
                self.extend()
                index = bisect_right(ends, position)
                continue
            free_end = ends[index]
            start = max(starts[index], lower)
            start = -(-start // step) * step
            if start > latest:
                break
            if start + length <= free_end:
                found = start
                break
            if free_end >= self.hi_minute - _DAY_MINUTES:
                # The next day's shift may continue this stretch.
                self.extend()
                index = bisect_right(ends, position)
                continue
            position = free_end
            index += 1
        # Now known: no start fits in [not_before, searched_to).
        searched_to = found if found >= 0 else latest + 1
        if jumped:
            self.cursors[length] = (known_from, searched_to)
        elif not_before < known_from <= searched_to:
            self.cursors[length] = (not_before, max(searched_to, known_to))
        else:
            self.cursors[length] = (not_before, searched_to)
        return found

    # --- bookings -----------------------------------------------------------------

    def overlapping(self, start: int, end: int, ignore: int | None = None) -> BookedSlot | None:
        low = bisect_right(self.busy_starts, start - self.longest)
        high = bisect_left(self.busy_starts, end)
        for i in range(low, high):
            slot = self.busy_slots[i]
            if self.busy_ends[i] > start and slot.work_order_id != ignore:
                return slot
        return None

    def hold(self, start: int, end: int, slot: BookedSlot) -> None:
        index = bisect_right(self.busy_starts, start)
        self.busy_starts.insert(index, start)
        self.busy_ends.insert(index, end)
        self.busy_slots.insert(index, slot)
        self.longest = max(self.longest, end - start)
        self.booked += end - start
        self.take_free(start, end)

    def free(self, slot: BookedSlot) -> None:
        start, end = _floor(slot.start_at), _ceil(slot.end_at)
        low = bisect_left(self.busy_starts, start)
        index = next(
            i
            for i in range(low, len(self.busy_slots))
            if self.busy_slots[i].work_order_id == slot.work_order_id
        )
        del self.busy_starts[index], self.busy_ends[index], self.busy_slots[index]
        self.booked -= end - start
        if self.first_day is not None:
            # Only the part of the slot inside working hours, outside time off and other
            # bookings, and inside the days already built, becomes free again.
            day = max(self.day_of(start) - _DAY, self.first_day)
            last = min(self.day_of(end) + _DAY, self.last_day)
            while day <= last:
                for opens, closes in self.shifts.on(self.technician, self.hours_key, day):
                    low_end, high_end = max(opens, start), min(closes, end)
                    if low_end < high_end:
                        for piece in _minus(low_end, high_end, self.blocked(low_end, high_end)):
                            self.add_free(*piece)
                day += _DAY
        self.cursors.clear()


@dataclass(frozen=True)
class _Candidate:
    calendar: _Calendar
    # First minute whose local date is past the last day every needed certification
    # holds; certifications never start later, so validity is a prefix of time.
    expires: int | None


class Diary:
    """Technicians' calendars: who works where and when, and what is already booked."""

    def __init__(
        self,
        technicians: Sequence[Technician],
        booked: Iterable[BookedSlot] = (),
        granularity: timedelta = DEFAULT_GRANULARITY,
    ) -> None:
        """Build the calendars; existing bookings are facts and may even overlap."""
        if granularity <= timedelta(0) or granularity % _MINUTE:
            raise ValueError(
                f"granularity must be a positive whole number of minutes: {granularity}"
            )
        self._step = granularity // _MINUTE
        self._calendars: dict[str, _Calendar] = {}
        shifts = _ShiftCache()
        for technician in technicians:
            if technician.id in self._calendars:
                raise ValueError(f"technician {technician.id!r} is listed twice")
            self._calendars[technician.id] = _Calendar(technician, shifts)
        self._technicians = tuple(technicians)
        self._slots: dict[int, BookedSlot] = {}
        self._candidates: dict[tuple[str, tuple[str, ...]], list[_Candidate]] = {}
        for slot in booked:
            self.record(slot)

    @property
    def technicians(self) -> tuple[Technician, ...]:
        """Return the technicians the diary books, as given."""
        return self._technicians

    @property
    def granularity(self) -> timedelta:
        """Return the grid proposed start times lie on (UTC minutes since the epoch)."""
        return self._step * _MINUTE

    def _candidates_for(self, site: str, skills: tuple[str, ...]) -> list[_Candidate]:
        key = (site, skills)
        found = self._candidates.get(key)
        if found is not None:
            return found
        wanted = {skill.lower() for skill in skills}
        found = []
        for calendar in self._calendars.values():
            technician = calendar.technician
            if not works_at(technician, site) or not technician.weekly_hours:
                continue
            held = {h.skill: h.certified_until for h in technician.skills}
            if not wanted <= held.keys():
                continue
            last_days = [day for skill in wanted if (day := held[skill]) is not None]
            last_day = min(last_days, default=None)
            expires = None if last_day is None else calendar.midnight(last_day + _DAY)
            found.append(_Candidate(calendar, expires))
        self._candidates[key] = found
        return found

    def propose(self, request: BookingRequest) -> Proposal | None:
        """Return the earliest feasible slot for `request`, or None; book nothing."""
        step = self._step
        length = -(-request.duration // _MINUTE)
        not_before = -(-_ceil(request.not_before) // step) * step
        search_until = _floor(request.search_until)
        best: _Calendar | None = None
        best_start = -1
        for candidate in self._candidates_for(request.site, request.skills):
            calendar = candidate.calendar
            latest = search_until
            if candidate.expires is not None and candidate.expires <= latest:
                latest = candidate.expires - 1
            if best is not None:
                # Only a strictly better slot, or the same start with a better tie-break.
                wins_tie = (calendar.booked, calendar.id) < (best.booked, best.id)
                latest = min(latest, best_start if wins_tie else best_start - 1)
            start = calendar.earliest(not_before, length, latest, step)
            if start >= 0:
                best, best_start = calendar, start
        if best is None:
            return None
        start_at = _instant(best_start)
        end_at = start_at + request.duration
        return Proposal(
            work_order_id=request.work_order_id,
            technician_id=best.id,
            start_at=start_at,
            end_at=end_at,
            late=end_at > request.due_at,
        )

    def book(self, proposal: Proposal) -> None:
        """Record `proposal`; ValueError if its order is booked or the slot is taken."""
        calendar = self._calendar(proposal.technician_id)
        if proposal.work_order_id in self._slots:
            raise ValueError(
                f"work order {proposal.work_order_id} is already booked: release it first"
            )
        start, end = _floor(proposal.start_at), _ceil(proposal.end_at)
        if end <= start:
            raise ValueError("a booking must end after it starts")
        clash = calendar.overlapping(start, end)
        if clash is not None:
            raise ValueError(
                f"technician {proposal.technician_id!r} is booked for work order "
                f"{clash.work_order_id} from {clash.start_at.isoformat()} to "
                f"{clash.end_at.isoformat()}"
            )
        slot = BookedSlot(
            proposal.work_order_id, proposal.technician_id, proposal.start_at, proposal.end_at
        )
        self._slots[slot.work_order_id] = slot
        calendar.hold(start, end, slot)

    def record(self, slot: BookedSlot) -> None:
        """Take in a booking made elsewhere, replacing the order's own earlier slot.

        It is a fact, so an overlap is kept rather than refused. A slot of a technician
        the diary does not know blocks nobody here and is only remembered.
        """
        start, end = _floor(slot.start_at), _ceil(slot.end_at)
        if end <= start:
            raise ValueError(f"booking of work order {slot.work_order_id} ends before it starts")
        self.release(slot.work_order_id)
        self._slots[slot.work_order_id] = slot
        calendar = self._calendars.get(slot.technician_id)
        if calendar is not None:
            calendar.hold(start, end, slot)

    def release(self, work_order_id: int) -> None:
        """Free the order's slot, if it has one (reschedule, cancellation)."""
        slot = self._slots.pop(work_order_id, None)
        if slot is None:
            return
        calendar = self._calendars.get(slot.technician_id)
        if calendar is not None:
            calendar.free(slot)

    def rekey(self, old_work_order_id: int, work_order_id: int) -> None:
        """Move a slot booked under a provisional id to the order's real id."""
        if work_order_id in self._slots:
            raise ValueError(f"work order {work_order_id} is already booked")
        slot = self._slots.pop(old_work_order_id, None)
        if slot is None:
            raise ValueError(f"work order {old_work_order_id} is not booked")
        moved = BookedSlot(work_order_id, slot.technician_id, slot.start_at, slot.end_at)
        self._slots[work_order_id] = moved
        calendar = self._calendars.get(slot.technician_id)
        if calendar is not None:
            index = calendar.busy_slots.index(slot)
            calendar.busy_slots[index] = moved

    def slot(self, work_order_id: int) -> BookedSlot | None:
        """Return the order's booked slot, or None."""
        return self._slots.get(work_order_id)

    # Positional, as the storage and API callers were promised.
    def check(  # noqa: PLR0917
        self,
        technician_id: str,
        work_order_id: int,
        start_at: datetime,
        end_at: datetime,
        site: str,
        skills: tuple[str, ...],
    ) -> str | None:
        """Return why a planner's slot for the order is refused, or None if it may be booked.

        The order's own current slot does not count as an overlap, so a move is checked
        against everything else.
        """
        calendar = self._calendars.get(technician_id)
        if calendar is None:
            return f"no technician {technician_id!r}"
        technician = calendar.technician
        _aware(start_at, "start_at")
        _aware(end_at, "end_at")
        if end_at <= start_at:
            return "the slot must end after it starts"
        if not works_at(technician, site):
            return (
                f"technician {technician_id!r} does not work at site {site!r} "
                f"(their sites: {', '.join(technician.sites)})"
            )
        on = local_date(technician, start_at)
        for skill in skills:
            refusal = skill_refusal(technician, skill, on)
            if refusal is not None:
                return refusal.detail
        if not within_shifts(technician, start_at, end_at):
            return (
                f"{start_at.isoformat()} to {end_at.isoformat()} is outside the working "
                f"hours of technician {technician_id!r}"
            )
        for off in time_off_during(technician.time_off, start_at, end_at):
            return (
                f"technician {technician_id!r} is off from {off.start_at.isoformat()} to "
                f"{off.end_at.isoformat()}"
            )
        clash = calendar.overlapping(_floor(start_at), _ceil(end_at), ignore=work_order_id)
        if clash is not None:
            return (
                f"technician {technician_id!r} is booked for work order "
                f"{clash.work_order_id} from {clash.start_at.isoformat()} to "
                f"{clash.end_at.isoformat()}"
            )
        return None

    def booked_minutes(self, technician_id: str) -> int:
        """Return how many minutes the technician is booked for in the diary."""
        return self._calendar(technician_id).booked

    def bookings(self, technician_id: str) -> list[BookedSlot]:
        """Return the technician's bookings, by start time."""
        return list(self._calendar(technician_id).busy_slots)

    def _calendar(self, technician_id: str) -> _Calendar:
        calendar = self._calendars.get(technician_id)
        if calendar is None:
            raise ValueError(f"no technician {technician_id!r} in the diary")
        return calendar


def _listed(names: Iterable[str]) -> str:
    return ", ".join(names) or "none"


def why_unbookable(diary: Diary, request: BookingRequest) -> str:
    """Return, for a planner, why `diary.propose(request)` found no slot."""
    site = request.site
    wanted = sorted({skill.lower() for skill in request.skills})
    skills = _listed(wanted)
    at_site = [t for t in diary.technicians if works_at(t, site)]
    if not at_site:
        return f"no technician works at site {site!r}"
    skilled = [t for t in at_site if all(any(h.skill == s for h in t.skills) for s in wanted)]
    if not skilled:
        return f"no technician at site {site!r} has skills {skills}"
    working = [t for t in skilled if t.weekly_hours]
    if not working:
        return f"no technician at site {site!r} with skills {skills} has working hours"
    if request.search_until < request.not_before:
        return (
            f"nothing to search: search_until {request.search_until.isoformat()} is before "
            f"not_before {request.not_before.isoformat()}"
        )
    certified = [
        t
        for t in working
        if not any(
            isinstance(
                skill_refusal(t, s, local_date(t, request.not_before)), CertificationExpiredError
            )
            for s in wanted
        )
    ]
    if not certified:
        return (
            f"the certifications for {skills} of every technician at site {site!r} "
            f"expired before {request.not_before.isoformat()}"
        )
    minutes = -(-request.duration // _MINUTE)
    return (
        f"no free slot of {minutes} min for {_listed(t.id for t in certified)} at site "
        f"{site!r} with skills {skills} starting between {request.not_before.isoformat()} "
        f"and {request.search_until.isoformat()}"
    )
