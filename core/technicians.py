"""Technicians: who can do the work, where, when, with which certified skills.

Working hours are local wall-clock times in the technician's own IANA zone (`time_zone`).
There is no site table to take a zone from, so the zone is stored on the technician; it is
the zone of the sites they work at. Every computation maps local times to UTC instants
for their own date with `zoneinfo`, so a 08:00-16:00 shift is 08:00-16:00 on the wall
clock on both sides of a DST change. A local time skipped by a DST jump maps to the first
instant after the jump; one repeated when clocks go back maps to its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from itertools import pairwise
from typing import Annotated, Any, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic import ValidationError as PydanticValidationError

from core.assets import ASSET_ID_PATTERN
from core.errors import ConflictError, ValidationError
from core.wallclock import local_to_utc
from core.workorders import WorkOrder, WorkOrderStatus

# Like asset ids: safe in URLs and file names.
TECHNICIAN_ID_PATTERN = ASSET_ID_PATTERN
# Skills are compared lower-case; any case is accepted and stored lower-case.
SKILL_PATTERN = r"^[a-z0-9][a-z0-9._:-]{0,63}$"
SKILL_QUERY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
MAX_SITES = 100
MAX_SKILLS = 100
MAX_SHIFTS = 70
MAX_REASON = 500
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Statuses in which nobody can be assigned or unassigned any more: the record is final.
FINISHED_STATUSES = frozenset({WorkOrderStatus.CLOSED, WorkOrderStatus.CANCELLED})

_HHMM = r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$"
_HHMM_OR_24 = r"^(?:(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
_DAY = timedelta(days=1)
_TICK = timedelta(microseconds=1)
_MIDNIGHT = time(0)
# Instants this close to datetime's limits cannot be moved to every zone and back.
_EARLIEST = datetime(1, 1, 4, tzinfo=UTC)
_LATEST = datetime(9999, 12, 28, tzinfo=UTC)
# Zone names that exist on a host but name no place: refused.
_NOT_PLACES = frozenset({"localtime", "Factory"})


class AssignmentRefusedError(ConflictError):
    """Raise when a work order cannot go to a technician as things stand (HTTP 409)."""

    code = "assignment_refused"


class NotAtSiteError(AssignmentRefusedError):
    """Raise when a technician does not work at the site of the work order's asset."""

    code = "not_at_site"


class SkillMissingError(AssignmentRefusedError):
    """Raise when a technician lacks the skill a job needs."""

    code = "skill_missing"


class CertificationExpiredError(AssignmentRefusedError):
    """Raise when a technician's certification for a needed skill has run out."""

    code = "certification_expired"


class WorkOrderFinishedError(AssignmentRefusedError):
    """Raise when the work order is closed or cancelled: its assignment is history."""

    code = "work_order_finished"


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_PLACES


def _iana_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    # A directory such as "Europe" raises IsADirectoryError, a malformed key ValueError.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        known = False
    else:
        known = value in _known_zones()
    if not known:
        raise ValueError(f"unknown time zone {value!r}: use an IANA name such as 'Europe/Berlin'")
    return value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


TimeZoneName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_iana_zone)]
SkillName = Annotated[str, Field(pattern=SKILL_PATTERN)]
SiteName = Annotated[str, Field(min_length=1, max_length=100)]


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range") from None


UtcInstant = Annotated[AwareDatetime, AfterValidator(_utc)]


class SkillCertification(BaseModel):
    """A skill a technician holds, certified until a date (inclusive), or for good."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    skill: SkillName
    certified_until: date | None = Field(
        default=None, description="Last day the certification is valid; null: no expiry"
    )

    @field_validator("skill", mode="before")
    @classmethod
    def _case(cls, value: Any) -> Any:
        return _lower(value)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


class Shift(BaseModel):
    """A weekly working interval: local wall-clock `start` to `end` on one weekday.

    `end` may be "24:00" (midnight at the end of the day). Shifts that cross midnight are
    refused: split them at midnight into two shifts on consecutive days.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    weekday: int = Field(ge=0, le=6, description="0 is Monday, 6 is Sunday")
    start: str = Field(pattern=_HHMM, examples=["08:00"])
    end: str = Field(pattern=_HHMM_OR_24, examples=["16:00"])

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: str, info: ValidationInfo) -> str:
        start = info.data.get("start")
        weekday = info.data.get("weekday")
        if start is None or weekday is None:
            return end  # already refused for its own reasons
        if _minutes(end) == _minutes(start):
            raise ValueError(f"a shift must end after it starts, got {start}-{end}")
        if _minutes(end) < _minutes(start):
            day, next_day = WEEKDAY_NAMES[weekday], WEEKDAY_NAMES[(weekday + 1) % 7]
            raise ValueError(
                f"overnight shifts are not supported: split {start}-{end} into "
                f"{start}-24:00 on {day} and 00:00-{end} on {next_day}"
            )
        return end

    @property
    def start_minute(self) -> int:
        """Return how many minutes into the local day the shift starts."""
        return _minutes(self.start)

    @property
    def end_minute(self) -> int:
        """Return how many minutes into the local day the shift ends (1440 for 24:00)."""
        return _minutes(self.end)


class NewTimeOff(BaseModel):
    """An absence: the technician cannot be booked in [start_at, end_at)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start_at: UtcInstant
    end_at: UtcInstant
    reason: str | None = Field(default=None, min_length=1, max_length=MAX_REASON)

    @field_validator("end_at")
    @classmethod
    def _after_start(cls, end_at: datetime, info: ValidationInfo) -> datetime:
        start_at = info.data.get("start_at")
        if start_at is not None and end_at <= start_at:
            raise ValueError(
                f"time off must end after it starts: {end_at.isoformat()} is not after "
                f"{start_at.isoformat()}"
            )
        return end_at


class TimeOff(NewTimeOff):
    """An absence as stored."""

    id: int
    technician_id: str
    created_at: AwareDatetime
    created_by: str


class TechnicianProfile(BaseModel):
    """What describes a technician besides their id: contact, sites, zone, skills, hours.

    Sites, skills and shifts are kept sorted, so equal profiles compare equal.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200, examples=["Anna Berg"])
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = Field(default=None, min_length=3, max_length=50)
    sites: list[SiteName] = Field(min_length=1, max_length=MAX_SITES, examples=[["plant-north"]])
    region: str | None = Field(default=None, min_length=1, max_length=100)
    time_zone: TimeZoneName = Field(
        examples=["Europe/Berlin"], description="IANA zone of the working hours"
    )
    skills: list[SkillCertification] = Field(default_factory=list, max_length=MAX_SKILLS)
    weekly_hours: list[Shift] = Field(default_factory=list, max_length=MAX_SHIFTS)

    @field_validator("sites")
    @classmethod
    def _distinct_sites(cls, sites: list[str]) -> list[str]:
        for earlier, later in pairwise(sorted(sites)):
            if earlier == later:
                raise ValueError(f"site {earlier!r} is listed twice")
        return sorted(sites)

    @field_validator("skills")
    @classmethod
    def _distinct_skills(cls, skills: list[SkillCertification]) -> list[SkillCertification]:
        ordered = sorted(skills, key=lambda held: held.skill)
        for earlier, later in pairwise(ordered):
            if earlier.skill == later.skill:
                raise ValueError(f"skill {earlier.skill!r} is listed twice")
        return ordered

    @field_validator("weekly_hours")
    @classmethod
    def _no_overlap(cls, shifts: list[Shift]) -> list[Shift]:
        ordered = sorted(shifts, key=lambda shift: (shift.weekday, shift.start_minute))
        for earlier, later in pairwise(ordered):
            if earlier.weekday == later.weekday and earlier.end_minute > later.start_minute:
                raise ValueError(
                    f"shifts overlap on {WEEKDAY_NAMES[earlier.weekday]}: "
                    f"{earlier.start}-{earlier.end} and {later.start}-{later.end}"
                )
        return ordered

    @property
    def zone(self) -> ZoneInfo:
        """Return the zone the working hours are expressed in."""
        return ZoneInfo(self.time_zone)


class NewTechnician(TechnicianProfile):
    """A technician as registered or replaced: everything but time off and timestamps."""

    id: str = Field(pattern=TECHNICIAN_ID_PATTERN, examples=["anna-berg"])


OffT = TypeVar("OffT", bound=NewTimeOff)


class Technician(NewTechnician):
    """A technician as stored, with their time off."""

    time_off: list[TimeOff] = Field(default_factory=list)
    created_at: AwareDatetime
    updated_at: AwareDatetime


# --- pure functions -------------------------------------------------------------------


ModelT = TypeVar("ModelT", bound=BaseModel)


def _parsed(model: type[ModelT], data: Mapping[str, Any]) -> ModelT:
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        detail = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'input'}: {error['msg']}"
            for error in errors
        )
        raise ValidationError(detail, errors=errors) from None


def parse_technician(data: Mapping[str, Any]) -> NewTechnician:
    """Return the technician `data` describes; ValidationError naming each problem."""
    return _parsed(NewTechnician, data)


def parse_time_off(data: Mapping[str, Any]) -> NewTimeOff:
    """Return the absence `data` describes; ValidationError naming each problem."""
    return _parsed(NewTimeOff, data)


def _instant(value: datetime, name: str) -> datetime:
    """Return `value` in UTC; ValidationError if naive or too near datetime's limits."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            f"{name} must carry a time zone (use Z for UTC), got {value.isoformat()}",
            field=name,
        )
    at = _utc(value)
    if not _EARLIEST <= at <= _LATEST:
        raise ValidationError(
            f"{name} is out of the supported range (years 1 to 9999), got {value.isoformat()}",
            field=name,
        )
    return at


def _span(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    start_at, end_at = _instant(start, "start"), _instant(end, "end")
    if end_at <= start_at:
        raise ValidationError(
            f"end must be after start: {end_at.isoformat()} is not after {start_at.isoformat()}",
            start=start_at.isoformat(),
            end=end_at.isoformat(),
        )
    return start_at, end_at


def local_date(technician: TechnicianProfile, at: datetime) -> date:
    """Return the technician's calendar date at instant `at`."""
    return _instant(at, "at").astimezone(technician.zone).date()


def skill_refusal(
    technician: NewTechnician, skill: str, on: date
) -> SkillMissingError | CertificationExpiredError | None:
    """Return why `technician` may not do work needing `skill` on `on`, or None if they may.

    A certification is valid up to and including its `certified_until` date.
    """
    wanted = skill.lower()
    held = next((h for h in technician.skills if h.skill == wanted), None)
    if held is None:
        known = ", ".join(h.skill for h in technician.skills) or "none"
        return SkillMissingError(
            f"technician {technician.id!r} does not have the skill {wanted!r} "
            f"(their skills: {known})",
            technician_id=technician.id,
            skill=wanted,
        )
    if held.certified_until is not None and held.certified_until < on:
        return CertificationExpiredError(
            f"technician {technician.id!r} was certified for {wanted!r} until "
            f"{held.certified_until.isoformat()}: the certification expired after that day "
            f"and is not valid on {on.isoformat()}",
            technician_id=technician.id,
            skill=wanted,
            certified_until=held.certified_until.isoformat(),
            on=on.isoformat(),
        )
    return None


def has_valid_skill(technician: NewTechnician, skill: str, on: date) -> bool:
    """Tell whether `technician` holds `skill` with a certification valid on `on`."""
    return skill_refusal(technician, skill, on) is None


def works_at(technician: NewTechnician, site: str) -> bool:
    """Tell whether `technician` works at `site`."""
    return site in technician.sites


def check_assignment(
    technician: NewTechnician, order: WorkOrder, *, site: str, skill: str | None, on: date
) -> None:
    """Refuse (409) to give `order`, on an asset at `site`, to `technician` on date `on`.

    The order must not be closed or cancelled, the technician must work at the site and,
    when the job needs a `skill`, hold it with a certification valid on `on`.
    """
    check_not_finished(order)
    if not works_at(technician, site):
        raise NotAtSiteError(
            f"technician {technician.id!r} does not work at site {site!r} of asset "
            f"{order.asset_id!r} (their sites: {', '.join(technician.sites)})",
            technician_id=technician.id,
            site=site,
            asset_id=order.asset_id,
        )
    if skill is not None:
        refusal = skill_refusal(technician, skill, on)
        if refusal is not None:
            raise refusal


def check_not_finished(order: WorkOrder) -> None:
    """Refuse (409) to change who does a closed or cancelled order."""
    if order.status in FINISHED_STATUSES:
        raise WorkOrderFinishedError(
            f"work order {order.id} is {order.status.value}: its assignment can no longer change",
            work_order_id=order.id,
            work_order_status=order.status.value,
        )


def _wall_to_utc(day: date, minute: int, zone: ZoneInfo) -> datetime:
    """Return the instant the local clock of `zone` first shows `minute` into `day`.

    Minute 1440 is midnight at the end of `day`. A time skipped by a DST jump maps to the
    first instant after the jump.
    """
    # Naive arithmetic is wall-clock arithmetic: this is the local reading.
    return local_to_utc(datetime.combine(day, _MIDNIGHT) + timedelta(minutes=minute), zone)


def shifts_on(technician: TechnicianProfile, day: date) -> list[tuple[datetime, datetime]]:
    """Return the UTC [start, end) of the technician's shifts on their local date `day`.

    A shift that a DST jump swallows entirely is left out.
    """
    zone = technician.zone
    windows = []
    for shift in technician.weekly_hours:
        if shift.weekday == day.weekday():
            opens = _wall_to_utc(day, shift.start_minute, zone)
            closes = _wall_to_utc(day, shift.end_minute, zone)
            if opens < closes:
                windows.append((opens, closes))
    return windows


def shift_windows(
    technician: TechnicianProfile, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """Return the UTC [start, end) of every shift that overlaps [start, end), in time order.

    Whole shifts are returned, not clipped to the range.
    """
    start_at, end_at = _span(start, end)
    # A day of margin before: a shift of the local day before may still be running.
    day = start_at.astimezone(technician.zone).date() - _DAY
    last_day = end_at.astimezone(technician.zone).date()
    windows: list[tuple[datetime, datetime]] = []
    while day <= last_day:
        windows += [
            (opens, closes)
            for opens, closes in shifts_on(technician, day)
            if opens < end_at and closes > start_at
        ]
        day += _DAY
    return windows


def within_shifts(technician: TechnicianProfile, start: datetime, end: datetime) -> bool:
    """Tell whether the technician is on shift throughout [start, end).

    Back-to-back shifts (08:00-12:00 then 12:00-16:00, or 16:00-24:00 then 00:00-06:00 the
    next day) count as one stretch.
    """
    start_at, end_at = _span(start, end)
    covered_until = start_at
    for opens, closes in shift_windows(technician, start_at, end_at):
        if opens > covered_until:
            return False
        covered_until = max(covered_until, closes)
        if covered_until >= end_at:
            return True
    return False


def is_on_shift(technician: TechnicianProfile, at: datetime) -> bool:
    """Tell whether instant `at` falls in one of the technician's weekly shifts."""
    instant = _instant(at, "at")
    return bool(shift_windows(technician, instant, instant + _TICK))


def time_off_during(time_off: Iterable[OffT], start: datetime, end: datetime) -> list[OffT]:
    """Return the absences that overlap [start, end), in the order given."""
    start_at, end_at = _span(start, end)
    return [off for off in time_off if off.start_at < end_at and off.end_at > start_at]


def is_off(technician: Technician, start: datetime, end: datetime) -> bool:
    """Tell whether any of the technician's time off overlaps [start, end)."""
    return bool(time_off_during(technician.time_off, start, end))


class TechnicianRepository(Protocol):
    """Technicians, their skills, sites and hours, and their time off."""

    def add(self, technician: NewTechnician) -> Technician:
        """Register a technician; ConflictError if the id exists."""
        ...

    def get(self, technician_id: str) -> Technician:
        """Return a technician with their time off; NotFoundError if absent."""
        ...

    def replace(self, technician: NewTechnician) -> Technician:
        """Replace everything but the time off; NotFoundError if absent."""
        ...

    def list(
        self,
        *,
        site: str | None = None,
        skill: str | None = None,
        certified_on: date | None = None,
        after_id: str | None = None,
        limit: int = 100,
    ) -> Sequence[Technician]:
        """Return technicians by id after `after_id` (keyset pagination).

        `site`: those working there. `skill`: those holding it; with `certified_on`, only
        those whose certification is valid on that date.
        """
        ...

    def add_time_off(self, technician_id: str, time_off: NewTimeOff, *, actor: str) -> TimeOff:
        """Record an absence; NotFoundError if the technician is absent."""
        ...

    def remove_time_off(self, technician_id: str, time_off_id: int) -> None:
        """Delete an absence; NotFoundError if it is not one of the technician's."""
        ...

    def time_off(
        self, technician_id: str, *, start: datetime | None = None, end: datetime | None = None
    ) -> Sequence[TimeOff]:
        """Return the technician's absences overlapping [start, end), by start time."""
        ...
