"""Maintenance plans and site calendars: what preventive work recurs, when, and on which days.

A plan names its scope (one asset, or every asset of a type), its triggers (a calendar
series, a meter, or both: whichever comes first), and the job it creates: lead time,
checklist, estimated duration, skills and parts. A site calendar says on which local days
work may fall due at a site. Both are pure data; `scheduler.occurrences` computes dates.
"""

from __future__ import annotations

import calendar as _gregorian
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import cache, cached_property, lru_cache
from itertools import pairwise
from typing import Annotated, Any, Self, TypeVar
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from core.assets import ASSET_ID_PATTERN
from core.errors import ValidationError
from core.inventory import LocationCode, PositiveQuantity, Sku
from core.priority import Priority
from core.technicians import SkillName, TimeZoneName, UtcInstant
from core.telemetry import METRIC_NAME_PATTERN

MAX_EVERY = 1000
MAX_LEAD_TIME = timedelta(days=366)
DEFAULT_BOOKING_WINDOW = timedelta(days=7)
MIN_DURATION = timedelta(minutes=1)
MAX_DURATION = timedelta(hours=24)
DEFAULT_MAX_GAP = timedelta(minutes=15)
MAX_GAP_LIMIT = timedelta(days=7)
MAX_CHECKLIST_ITEMS = 200
MAX_CHECKLIST_TEXT = 500
MAX_SKILLS = 50
MAX_PARTS = 100
MAX_HOLIDAYS = 1000
MAX_SEASONS = 12
# A meter interval beyond this is a typo, and it keeps projections inside datetime's range.
MAX_METER_EVERY = 1e9
# Plans start in this range of years, so every series stays far from datetime's limits.
FIRST_START_YEAR = 1970
LAST_START_YEAR = 2999
# An RRULE that yields nothing this long after its start is refused as empty.
RRULE_PROBE_YEARS = 10
# How far next_allowed() looks for an allowed day: a season of only 02-29 needs 8 years.
_ALLOWED_DAY_SEARCH = timedelta(days=366 * 9)

_MONTH_DAY = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")
# RRULE parts that would give an occurrence more than one time of day: the time of day
# comes from starts_at instead.
_TIME_PARTS = ("BYHOUR", "BYMINUTE", "BYSECOND")
_FINER_THAN_DAILY = ("HOURLY", "MINUTELY", "SECONDLY")
_FREQUENCIES = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", *_FINER_THAN_DAILY)
_UNTIL_FORMATS = {8: "%Y%m%d", 15: "%Y%m%dT%H%M%S", 16: "%Y%m%dT%H%M%SZ"}


def iso_duration(value: timedelta) -> str:
    """Return `value` as an ISO 8601 duration in days and time (P10D, PT15M, P1DT2H)."""
    if value < timedelta(0):
        return f"-{iso_duration(-value)}"
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = "P" + (f"{value.days}D" if value.days else "")
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if seconds or value.microseconds:
        clock += f"{seconds + value.microseconds / 1e6:g}S"
    if clock:
        text += "T" + clock
    return text if text != "P" else "PT0S"


@cache
def _derived_names(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(
        name
        for klass in model.__mro__
        for name, value in vars(klass).items()
        if isinstance(value, cached_property)
    )


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Return a copy, with what is derived from the fields computed afresh for it."""
        copied = super().model_copy(update=update, deep=deep)
        # cached_property values live in __dict__ and would be copied stale past `update`.
        for name in _derived_names(type(self)):
            copied.__dict__.pop(name, None)
        return copied


# --- calendar trigger -------------------------------------------------------------------


class Recurrence(StrEnum):
    """How a calendar series moves when the work is done."""

    FIXED = "fixed"  # the series stands: completion does not move it
    FLOATING = "floating"  # the next one counts from the last completion


class IntervalUnit(StrEnum):
    """The unit of `every` in a calendar trigger."""

    DAYS = "days"
    WEEKS = "weeks"
    MONTHS = "months"


@dataclass(frozen=True, slots=True)
class RecurrenceRule:
    """An RRULE body checked and split for computing: the rule without UNTIL, and UNTIL.

    UNTIL is kept apart because the series is computed in local wall time (a naive DTSTART),
    while an RFC 5545 UNTIL ending in Z is a UTC instant; dateutil cannot mix the two.
    """

    body: str  # what dateutil parses: the rule without UNTIL, with WKST made explicit
    until_at: datetime | None = None  # UNTIL as a UTC instant (the ...Z form)
    until_local: datetime | None = None  # UNTIL as a local wall time (date or floating form)

    def build(self, dtstart: datetime) -> rrule:
        """Return the dateutil rule starting at naive local wall time `dtstart`."""
        built = rrulestr(self.body, dtstart=dtstart)
        if not isinstance(built, rrule):  # one RRULE body never parses to a set
            raise TypeError(f"{self.body!r} is not a single RRULE")
        return built


@lru_cache(maxsize=1024)
def parse_rrule(text: str) -> RecurrenceRule:
    """Return the checked rule an RRULE body describes; ValueError saying what is wrong.

    Accepts a body such as "FREQ=MONTHLY;BYMONTHDAY=-1", with or without "RRULE:", in any
    case. Refuses DTSTART and other properties, frequencies finer than daily, BYHOUR,
    BYMINUTE and BYSECOND (the time of day comes from `starts_at`), INTERVAL and COUNT
    below 1, and COUNT together with UNTIL.
    """
    body = text.strip().upper().removeprefix("RRULE:")
    if not body:
        raise ValueError("must not be empty: give an RRULE body such as 'FREQ=MONTHLY'")
    if "DTSTART" in body or ":" in body or any(c.isspace() for c in body):
        raise ValueError(
            f"must be one RRULE body such as 'FREQ=MONTHLY;BYMONTHDAY=-1' without DTSTART "
            f"or other properties (the start is starts_at), got {text!r}"
        )
    parts: dict[str, str] = {}
    for pair in body.split(";"):
        name, equals, value = pair.partition("=")
        if not equals or not name or not value:
            raise ValueError(f"{pair!r} is not NAME=VALUE in {text!r}")
        if name in parts:
            raise ValueError(f"{name} is given twice in {text!r}")
        parts[name] = value
    freq = parts.get("FREQ")
    if freq is None:
        raise ValueError(f"FREQ is required, e.g. 'FREQ=WEEKLY;BYDAY=MO', got {text!r}")
    if freq not in _FREQUENCIES:
        raise ValueError(f"FREQ={freq} is unknown: use DAILY, WEEKLY, MONTHLY or YEARLY")
    if freq in _FINER_THAN_DAILY:
        raise ValueError(
            f"FREQ={freq} is finer than daily: plans recur at most once a day "
            f"(use FREQ=DAILY, WEEKLY, MONTHLY or YEARLY)"
        )
    for name in _TIME_PARTS:
        if name in parts:
            raise ValueError(
                f"{name} is not supported: every occurrence is at the time of day of "
                f"starts_at in the site's zone"
            )
    for name in ("INTERVAL", "COUNT"):
        if name in parts:
            try:
                number = int(parts[name])
            except ValueError:
                raise ValueError(f"{name}={parts[name]} is not a whole number") from None
            if number < 1:
                raise ValueError(f"{name}={number} must be at least 1")
    if "COUNT" in parts and "UNTIL" in parts:
        raise ValueError("COUNT and UNTIL are exclusive (RFC 5545): give one of them")
    until_at = until_local = None
    until = parts.pop("UNTIL", None)
    if until is not None:
        shape = _UNTIL_FORMATS.get(len(until))
        try:
            if shape is None:
                raise ValueError(until)
            # Parsed naive on purpose: the Z form is then marked UTC, the others are local.
            parsed = datetime.strptime(until, shape)  # noqa: DTZ007
        except ValueError:
            raise ValueError(
                f"UNTIL={until} is not a date (20271231) or a date-time "
                f"(20271231T235959Z, or without Z for local time)"
            ) from None
        if until.endswith("Z"):
            until_at = parsed.replace(tzinfo=UTC)
        elif len(until) == 8:
            until_local = datetime.combine(parsed.date(), datetime.max.time())
        else:
            until_local = parsed
    parts.setdefault("WKST", "MO")  # RFC 5545's default; dateutil's follows a global setting
    rule = RecurrenceRule(
        body=";".join(f"{name}={value}" for name, value in parts.items()),
        until_at=until_at,
        until_local=until_local,
    )
    try:
        # Series are computed in local wall time: dateutil gets a naive start.
        rule.build(datetime(2000, 1, 1))  # noqa: DTZ001
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"is not a valid RRULE ({exc}): {text!r}") from None
    return rule


def _probe_yields(rule: RecurrenceRule, starts_at: datetime) -> bool:
    """Tell whether `rule` yields an occurrence within RRULE_PROBE_YEARS of `starts_at`."""
    # The site's zone is not known here: probing in UTC is off by hours at most.
    dtstart = starts_at.astimezone(UTC).replace(tzinfo=None)
    limit = dtstart.replace(year=dtstart.year + RRULE_PROBE_YEARS, day=min(dtstart.day, 28))
    if rule.until_local is not None:
        limit = min(limit, rule.until_local)
    if rule.until_at is not None:
        limit = min(limit, rule.until_at.replace(tzinfo=None))
    first = next(iter(rule.build(dtstart)), None)
    return first is not None and first <= limit


class CalendarTrigger(_Frozen):
    """A calendar series: an RRULE, or every N days, weeks or months, from `starts_at`.

    `starts_at` is the first due instant; its wall-clock time of day in the site's zone is
    the time of day of every occurrence. `fixed` series stand regardless of completions;
    `floating` ones count from the last completion (and need `every` and `unit`).
    """

    rrule: str | None = Field(
        default=None,
        examples=["FREQ=MONTHLY;BYMONTHDAY=-1"],
        description="RFC 5545 RRULE body, no DTSTART; exclusive with every/unit",
    )
    every: int | None = Field(default=None, ge=1, le=MAX_EVERY, examples=[3])
    unit: IntervalUnit | None = Field(default=None, examples=["months"])
    recurrence: Recurrence = Recurrence.FIXED
    starts_at: UtcInstant = Field(examples=["2026-01-05T07:00:00Z"])

    @field_validator("rrule")
    @classmethod
    def _rule(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_rrule(value)
        return value.strip().upper().removeprefix("RRULE:")

    @field_validator("starts_at")
    @classmethod
    def _in_range(cls, value: datetime) -> datetime:
        if not FIRST_START_YEAR <= value.year <= LAST_START_YEAR:
            raise ValueError(
                f"must be in the years {FIRST_START_YEAR} to {LAST_START_YEAR}, "
                f"got {value.isoformat()}"
            )
        return value

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if self.rrule is not None and (self.every is not None or self.unit is not None):
            field = "every" if self.every is not None else "unit"
            raise ValueError(f"calendar.{field} and calendar.rrule are exclusive")
        if self.rrule is None:
            if self.every is None and self.unit is None:
                raise ValueError(
                    "calendar needs calendar.rrule, or calendar.every with calendar.unit"
                )
            if self.unit is None:
                raise ValueError("calendar.unit (days, weeks or months) is required with every")
            if self.every is None:
                raise ValueError("calendar.every is required with calendar.unit")
        elif self.recurrence is Recurrence.FLOATING:
            raise ValueError(
                "calendar.recurrence 'floating' needs calendar.every and calendar.unit: "
                "an rrule series is always fixed"
            )
        else:
            rule = parse_rrule(self.rrule)
            if not _probe_yields(rule, self.starts_at):
                raise ValueError(
                    f"calendar.rrule {self.rrule!r} yields no occurrence within "
                    f"{RRULE_PROBE_YEARS} years of calendar.starts_at "
                    f"({self.starts_at.isoformat()})"
                )
        return self


# --- meter trigger ----------------------------------------------------------------------


class MeterSource(StrEnum):
    """How a meter's units are read from telemetry."""

    COUNTER = "counter"  # a growing counter such as run_hours; a drop is a reset
    RUNNING_STATE = "running_state"  # a 0/1 metric: hours while >= 0.5 count
    MOTOR_CURRENT = "motor_current"  # hours while the value is above running_above count


class MeterTrigger(_Frozen):
    """Every `every` units of a meter: a counter metric, or running hours derived from one."""

    metric: str = Field(pattern=METRIC_NAME_PATTERN, examples=["run_hours"])
    every: float = Field(
        gt=0,
        le=MAX_METER_EVERY,
        allow_inf_nan=False,
        examples=[500],
        description="units of the counter, or hours for derived sources",
    )
    source: MeterSource = MeterSource.COUNTER
    running_above: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="motor_current only: the value above which the motor runs",
    )
    max_gap: timedelta = Field(
        default=DEFAULT_MAX_GAP,
        description="derived sources: a reading's state holds at most this long",
    )

    @field_validator("max_gap")
    @classmethod
    def _gap(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= MAX_GAP_LIMIT:
            raise ValueError(
                f"must be more than zero and at most {iso_duration(MAX_GAP_LIMIT)}, "
                f"got {iso_duration(value)}"
            )
        return value

    @model_validator(mode="after")
    def _source_fields(self) -> Self:
        if self.source is MeterSource.MOTOR_CURRENT:
            if self.running_above is None:
                raise ValueError(
                    "meter.running_above is required when meter.source is 'motor_current'"
                )
        elif self.running_above is not None:
            raise ValueError(
                f"meter.running_above only applies to meter.source 'motor_current', "
                f"not {self.source.value!r}"
            )
        # The default is accepted, so a stored plan's JSON (which spells it out) reads back.
        if self.source is MeterSource.COUNTER and self.max_gap != DEFAULT_MAX_GAP:
            raise ValueError(
                "meter.max_gap only applies to derived sources (running_state, "
                "motor_current), not 'counter'"
            )
        return self


# --- the plan ---------------------------------------------------------------------------


class PlanPart(_Frozen):
    """A spare part every job of the plan needs, from one stock location."""

    sku: Sku
    location: LocationCode
    quantity: PositiveQuantity


class MissedPolicy(StrEnum):
    """What happens to an occurrence that came due while the scheduler was not running."""

    CREATE = "create"  # still create its work order, flagged late
    MARK_MISSED = "mark_missed"  # record it as missed; no work order


ChecklistItem = Annotated[str, Field(min_length=1, max_length=MAX_CHECKLIST_TEXT)]


class NewMaintenancePlan(_Frozen):
    """A maintenance plan as created or replaced: scope, triggers, and the job it makes."""

    id: str = Field(pattern=ASSET_ID_PATTERN, examples=["pump-quarterly"])
    name: str = Field(min_length=1, max_length=200, examples=["Pump quarterly inspection"])
    description: str = Field(default="", max_length=2000)
    asset_id: str | None = Field(default=None, pattern=ASSET_ID_PATTERN)
    asset_type: str | None = Field(default=None, min_length=1, max_length=100)
    calendar: CalendarTrigger | None = None
    meter: MeterTrigger | None = None
    lead_time: timedelta = Field(
        examples=["P14D"], description="how far ahead occurrences are generated and booked"
    )
    booking_window: timedelta = Field(
        default=DEFAULT_BOOKING_WINDOW,
        description="how early before its due time a job may be booked; at most lead_time",
    )
    estimated_duration: timedelta = Field(examples=["PT2H"])
    checklist: list[ChecklistItem] = Field(default_factory=list, max_length=MAX_CHECKLIST_ITEMS)
    required_skills: list[SkillName] = Field(default_factory=list, max_length=MAX_SKILLS)
    parts: list[PlanPart] = Field(default_factory=list, max_length=MAX_PARTS)
    priority: Priority = Priority.MEDIUM
    missed: MissedPolicy = MissedPolicy.CREATE
    enabled: bool = True

    @field_validator("lead_time")
    @classmethod
    def _lead_time(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"must be more than zero, got {iso_duration(value)}")
        if value > MAX_LEAD_TIME:
            raise ValueError(
                f"must be at most {iso_duration(MAX_LEAD_TIME)}, got {iso_duration(value)}"
            )
        return value

    @field_validator("booking_window")
    @classmethod
    def _booking_window(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"must be more than zero, got {iso_duration(value)}")
        return value

    @field_validator("estimated_duration")
    @classmethod
    def _duration(cls, value: timedelta) -> timedelta:
        if not MIN_DURATION <= value <= MAX_DURATION:
            raise ValueError(
                f"must be between {iso_duration(MIN_DURATION)} and "
                f"{iso_duration(MAX_DURATION)}, got {iso_duration(value)}"
            )
        return value

    @field_validator("required_skills", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [skill.lower() if isinstance(skill, str) else skill for skill in value]
        return value

    @field_validator("required_skills")
    @classmethod
    def _distinct_skills(cls, skills: list[str]) -> list[str]:
        for earlier, later in pairwise(sorted(skills)):
            if earlier == later:
                raise ValueError(f"skill {earlier!r} is listed twice")
        return sorted(skills)

    @field_validator("parts")
    @classmethod
    def _distinct_parts(cls, parts: list[PlanPart]) -> list[PlanPart]:
        seen: set[tuple[str, str]] = set()
        for part in parts:
            if (part.sku, part.location) in seen:
                raise ValueError(
                    f"part {part.sku!r} at location {part.location!r} is listed twice: "
                    f"add the quantities into one line"
                )
            seen.add((part.sku, part.location))
        return parts

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.asset_id is not None and self.asset_type is not None:
            raise ValueError(
                "asset_id and asset_type are exclusive: a plan covers one asset or every "
                "asset of one type"
            )
        if self.asset_id is None and self.asset_type is None:
            raise ValueError("a plan needs a scope: set asset_id or asset_type")
        if self.calendar is None and self.meter is None:
            raise ValueError(
                "a plan needs a trigger: set calendar, meter, or both (whichever comes first)"
            )
        if self.booking_window > self.lead_time:
            raise ValueError(
                f"booking_window ({iso_duration(self.booking_window)}) must not exceed "
                f"lead_time ({iso_duration(self.lead_time)})"
            )
        return self

    @property
    def is_cycle_based(self) -> bool:
        """Tell whether occurrences come one per cycle (floating, or a meter) or from a series."""
        return self.meter is not None or (
            self.calendar is not None and self.calendar.recurrence is Recurrence.FLOATING
        )


class MaintenancePlan(NewMaintenancePlan):
    """A maintenance plan as stored."""

    created_at: UtcInstant
    updated_at: UtcInstant


# --- site calendars ---------------------------------------------------------------------


def _month_day(value: str) -> str:
    match = _MONTH_DAY.match(value)
    if match is None:
        raise ValueError(f"must be a month and day as MM-DD, such as '11-01', got {value!r}")
    month, day = int(match[1]), int(match[2])
    # 2000 is a leap year: 02-29 is a valid season boundary.
    if day > _gregorian.monthrange(2000, month)[1]:
        raise ValueError(f"{value!r} is not a day of the year")
    return value


class Season(_Frozen):
    """Days of the year when work may fall due, `start` to `end` inclusive, as "MM-DD".

    A season may wrap over the new year: "11-01" to "02-28" is November to February.
    """

    start: str = Field(examples=["04-01"])
    end: str = Field(examples=["10-31"])

    @field_validator("start", "end")
    @classmethod
    def _valid(cls, value: str) -> str:
        return _month_day(value)

    @cached_property
    def _bounds(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return _as_pair(self.start), _as_pair(self.end)

    def contains(self, day: date) -> bool:
        """Tell whether `day` falls in this season."""
        key = (day.month, day.day)
        first, last = self._bounds
        if first <= last:
            return first <= key <= last
        return key >= first or key <= last


def _as_pair(month_day: str) -> tuple[int, int]:
    return int(month_day[:2]), int(month_day[3:])


class SiteCalendar(_Frozen):
    """A site's zone and working days: occurrences falling on other days move forward.

    `holidays` are local dates without work. `seasons`, when given, are the only parts of
    the year with work; empty means all year.
    """

    site: str = Field(min_length=1, max_length=100, examples=["plant-north"])
    time_zone: TimeZoneName = Field(examples=["Europe/Berlin"])
    holidays: list[date] = Field(default_factory=list, max_length=MAX_HOLIDAYS)
    seasons: list[Season] = Field(default_factory=list, max_length=MAX_SEASONS)

    @field_validator("holidays")
    @classmethod
    def _distinct(cls, holidays: list[date]) -> list[date]:
        ordered = sorted(holidays)
        for earlier, later in pairwise(ordered):
            if earlier == later:
                raise ValueError(f"holiday {earlier.isoformat()} is listed twice")
        return ordered

    @classmethod
    def default(cls, site: str) -> SiteCalendar:
        """Return the calendar of a site that has none: UTC, no holidays, work all year."""
        return cls(site=site, time_zone="UTC")

    @cached_property
    def zone(self) -> ZoneInfo:
        """Return the site's zone."""
        return ZoneInfo(self.time_zone)

    @cached_property
    def unrestricted(self) -> bool:
        """Tell whether every day is a working day (no holidays, no seasons)."""
        return not self.holidays and not self.seasons

    @cached_property
    def _holiday_set(self) -> frozenset[date]:
        return frozenset(self.holidays)

    @cached_property
    def cache_key(self) -> tuple[object, ...]:
        """Return a hashable value equal for calendars that allow the same days in one zone."""
        return (self.time_zone, tuple(self.holidays), tuple((s.start, s.end) for s in self.seasons))

    def allows(self, day: date) -> bool:
        """Tell whether work may fall due on local date `day`."""
        if day in self._holiday_set:
            return False
        return not self.seasons or any(season.contains(day) for season in self.seasons)

    def next_allowed(self, day: date) -> date | None:
        """Return the first allowed local date on or after `day`; None if none in 9 years."""
        if self.unrestricted:
            return day
        try:
            last = day + _ALLOWED_DAY_SEARCH
        except OverflowError:
            last = date.max
        try:
            while not self.allows(day):
                if day >= last:
                    return None
                day += timedelta(days=1)
        except OverflowError:
            return None
        return day


# --- parsing ----------------------------------------------------------------------------

ModelT = TypeVar("ModelT", bound=BaseModel)


def _detail(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    # Cross-field messages already name their fields in full ("calendar.every and ...").
    if not where or message.startswith(f"{where}.") or message.startswith(f"{where} "):
        return message
    return f"{where}: {message}"


def _parsed(model: type[ModelT], data: Mapping[str, Any]) -> ModelT:
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise ValidationError("; ".join(_detail(e) for e in errors), errors=errors) from None


def parse_plan(data: Mapping[str, Any]) -> NewMaintenancePlan:
    """Return the plan `data` describes; ValidationError naming each problem."""
    return _parsed(NewMaintenancePlan, data)


def parse_site_calendar(data: Mapping[str, Any]) -> SiteCalendar:
    """Return the site calendar `data` describes; ValidationError naming each problem."""
    return _parsed(SiteCalendar, data)
