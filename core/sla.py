"""SLA targets, service hours, deadlines and breaches: pure functions of data and passed-in time.

Every computation runs on UTC instants: adding a timedelta to a datetime in a named zone is
wall-clock arithmetic in Python, which gains or loses an hour across a DST change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.priority import Priority
from core.wallclock import local_to_utc

# Search this far ahead for enough service time: beyond it the hours are as good as closed.
SEARCH_LIMIT_DAYS = 3653  # ten years

_MIDNIGHT = time(0)
_DAY = timedelta(days=1)


class Weekday(StrEnum):
    """A day of the week, in `date.weekday()` order."""

    MONDAY = "mon"
    TUESDAY = "tue"
    WEDNESDAY = "wed"
    THURSDAY = "thu"
    FRIDAY = "fri"
    SATURDAY = "sat"
    SUNDAY = "sun"


_WEEKDAYS = tuple(Weekday)


class WorkingInterval(BaseModel):
    """Open from `start` to `end`, local wall-clock times; an `end` of 00:00 means 24:00."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: time
    end: time

    @field_validator("start", "end")
    @classmethod
    def _wall_clock(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError(
                "working hours are local wall-clock times: give them without an offset"
            )
        # fold=0 everywhere: an ambiguous local time means its first occurrence.
        return value.replace(fold=0)

    @model_validator(mode="after")
    def _ordered(self) -> WorkingInterval:
        if self.start_offset >= self.end_offset:
            raise ValueError(
                f"a working interval must start before it ends, got {self.start}-{self.end}; "
                "split one that crosses midnight in two, e.g. 22:00-00:00 and 00:00-06:00"
            )
        return self

    @property
    def start_offset(self) -> timedelta:
        """Return how far into the local day the interval opens."""
        return _since_midnight(self.start)

    @property
    def end_offset(self) -> timedelta:
        """Return how far into the local day the interval closes (24 h for midnight)."""
        return _DAY if self.end == _MIDNIGHT else _since_midnight(self.end)


class RoundTheClock(BaseModel):
    """Count every instant as service time (24x7)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["24x7"] = "24x7"

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """Return the UTC instant `duration` of elapsed time after `start`."""
        return _utc(start, "start") + _non_negative(duration)

    def elapsed(self, start: datetime, end: datetime) -> timedelta:
        """Return the time elapsed from `start` to `end`."""
        start_at, end_at = _ordered_span(start, end)
        return end_at - start_at


class BusinessHours(BaseModel):
    """Count service time only in weekly local working intervals of one zone, holidays closed.

    Local times map to UTC for their own date, so a 08:00-17:00 day is always 9 hours. A
    local time that does not exist (skipped by a DST jump) maps to the first instant after
    the jump; an ambiguous one (repeated when clocks go back) to its first occurrence.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["business"] = "business"
    time_zone: str
    week: dict[Weekday, tuple[WorkingInterval, ...]]
    holidays: frozenset[date] = frozenset()

    @classmethod
    def weekdays(
        cls, time_zone: str, opens: time, closes: time, holidays: Iterable[date] = ()
    ) -> BusinessHours:
        """Build Monday-to-Friday hours from `opens` to `closes`."""
        interval = WorkingInterval(start=opens, end=closes)
        return cls(
            time_zone=time_zone,
            week=dict.fromkeys(_WEEKDAYS[:5], (interval,)),
            holidays=frozenset(holidays),
        )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        # A directory such as "Europe" raises IsADirectoryError, a malformed key ValueError.
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as 'Europe/Berlin'"
            ) from exc
        return value

    @field_validator("week")
    @classmethod
    def _valid_week(
        cls, week: dict[Weekday, tuple[WorkingInterval, ...]]
    ) -> dict[Weekday, tuple[WorkingInterval, ...]]:
        if not any(week.values()):
            raise ValueError(
                "the week has no working interval, so service time would never elapse "
                "(use RoundTheClock for 24x7)"
            )
        normalized: dict[Weekday, tuple[WorkingInterval, ...]] = {}
        for day in _WEEKDAYS:
            intervals = tuple(sorted(week.get(day, ()), key=lambda interval: interval.start_offset))
            for earlier, later in pairwise(intervals):
                if earlier.end_offset > later.start_offset:
                    raise ValueError(
                        f"working intervals overlap on {day}: "
                        f"{earlier.start}-{earlier.end} and {later.start}-{later.end}"
                    )
            if intervals:
                normalized[day] = intervals
        return normalized

    @property
    def zone(self) -> ZoneInfo:
        """Return the zone the working intervals and holidays are expressed in."""
        return ZoneInfo(self.time_zone)

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """Return the UTC instant `duration` of service time after `start`.

        Outside hours the clock starts at the next opening; a result that lands exactly on a
        closing stays there rather than moving to the next opening.
        """
        start_at = _utc(start, "start")
        remaining = _non_negative(duration)
        # The day before too: its last interval may run to a midnight that falls in a DST gap.
        first_day = start_at.astimezone(self.zone).date() - _DAY
        for offset in range(SEARCH_LIMIT_DAYS + 2):
            for opens_at, closes_at in self._open_intervals(first_day + offset * _DAY):
                if closes_at <= start_at:
                    continue
                counting_from = max(opens_at, start_at)
                available = closes_at - counting_from
                if remaining <= available:
                    return counting_from + remaining
                remaining -= available
        raise ValueError(
            f"{duration} of service time does not fit in the {SEARCH_LIMIT_DAYS} days after "
            f"{start_at.isoformat()}: check the working hours and holidays"
        )

    def elapsed(self, start: datetime, end: datetime) -> timedelta:
        """Return the service time between `start` and `end`."""
        start_at, end_at = _ordered_span(start, end)
        zone = self.zone
        day = start_at.astimezone(zone).date() - _DAY
        last_day = end_at.astimezone(zone).date()
        total = timedelta()
        while day <= last_day:
            for opens_at, closes_at in self._open_intervals(day):
                overlap = min(closes_at, end_at) - max(opens_at, start_at)
                if overlap > timedelta():
                    total += overlap
            day += _DAY
        return total

    def _open_intervals(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        """Yield the UTC intervals open on local `day`, in order, skipping empty ones."""
        if day in self.holidays:
            return
        zone = self.zone
        for interval in self.week.get(_WEEKDAYS[day.weekday()], ()):
            opens_at = _local_to_utc(day, interval.start, zone)
            if interval.end == _MIDNIGHT:
                closes_at = _local_to_utc(day + _DAY, _MIDNIGHT, zone)
            else:
                closes_at = _local_to_utc(day, interval.end, zone)
            # Both ends inside one DST gap collapse to the same instant: nothing is open.
            if opens_at < closes_at:
                yield opens_at, closes_at


ServiceHours: TypeAlias = Annotated[RoundTheClock | BusinessHours, Field(discriminator="kind")]


class SlaTargets(BaseModel):
    """What one priority promises: durations counted in `hours`, None meaning no target."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    response: timedelta | None = None
    on_site: timedelta | None = None
    resolution: timedelta | None = None
    hours: ServiceHours = Field(default_factory=RoundTheClock)

    @field_validator("response", "on_site", "resolution")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        return _positive_target(value)


class SlaTargetsOverride(BaseModel):
    """Change some of one priority's targets.

    Fields left out inherit; fields given replace, and an explicit None (JSON null) removes
    the target. `model_fields_set` tells the two apart.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    response: timedelta | None = None
    on_site: timedelta | None = None
    resolution: timedelta | None = None
    hours: ServiceHours | None = None

    @field_validator("response", "on_site", "resolution")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        return _positive_target(value)

    @field_validator("hours")
    @classmethod
    def _hours_given(
        cls, value: RoundTheClock | BusinessHours | None
    ) -> RoundTheClock | BusinessHours:
        # Runs only for a value given explicitly: a left-out field keeps its None default.
        if value is None:
            raise ValueError("service hours cannot be removed; leave the field out to inherit them")
        return value

    def applied_to(self, base: SlaTargets) -> SlaTargets:
        """Return `base` with the fields given here replaced."""
        changes = {name: getattr(self, name) for name in self.model_fields_set}
        return SlaTargets.model_validate({**dict(base), **changes})


class SlaPolicyOverride(BaseModel):
    """A customer's or contract's changes to a policy; priorities left out inherit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    targets: dict[Priority, SlaTargetsOverride] = Field(default_factory=dict)


class SlaPolicy(BaseModel):
    """SLA targets for every priority."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    targets: dict[Priority, SlaTargets]

    @field_validator("targets")
    @classmethod
    def _every_priority(cls, targets: dict[Priority, SlaTargets]) -> dict[Priority, SlaTargets]:
        missing = [priority.value for priority in Priority if priority not in targets]
        if missing:
            raise ValueError(
                f"a policy needs targets for every priority; missing {', '.join(missing)}"
            )
        return targets

    def for_priority(self, priority: Priority) -> SlaTargets:
        """Return the targets for `priority`."""
        return self.targets[priority]

    def merged(self, override: SlaPolicyOverride) -> SlaPolicy:
        """Return this policy with `override` applied; chain calls to layer overrides."""
        return SlaPolicy(
            targets={
                priority: override.targets[priority].applied_to(targets)
                if priority in override.targets
                else targets
                for priority, targets in self.targets.items()
            }
        )


def default_policy() -> SlaPolicy:
    """Return DESIGN.md's default targets, all counted round the clock."""
    return SlaPolicy(
        targets={
            Priority.CRITICAL: SlaTargets(
                response=timedelta(minutes=15),
                on_site=timedelta(hours=8),
                resolution=timedelta(hours=24),
            ),
            Priority.HIGH: SlaTargets(response=timedelta(hours=1)),
            Priority.MEDIUM: SlaTargets(response=timedelta(hours=2)),
            Priority.LOW: SlaTargets(response=timedelta(hours=24)),
        }
    )


class Deadlines(BaseModel):
    """When a work order must be answered, reached on site and resolved (UTC); None: no target."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    response_due: datetime | None = None
    on_site_due: datetime | None = None
    resolution_due: datetime | None = None

    @field_validator("response_due", "on_site_due", "resolution_due")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value, "a deadline")


def deadlines_for(priority: Priority, created_at: datetime, policy: SlaPolicy) -> Deadlines:
    """Compute a work order's deadlines from its priority and creation time."""
    targets = policy.for_priority(priority)
    created = _utc(created_at, "created_at")

    def due(target: timedelta | None) -> datetime | None:
        return None if target is None else targets.hours.add(created, target)

    return Deadlines(
        response_due=due(targets.response),
        on_site_due=due(targets.on_site),
        resolution_due=due(targets.resolution),
    )


class Breach(StrEnum):
    """An SLA target that was missed."""

    RESPONSE = "response"
    ON_SITE = "on_site"
    RESOLUTION = "resolution"


class ActualTimes(BaseModel):
    """When a work order was actually responded to, reached on site and resolved, so far."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    responded_at: datetime | None = None
    arrived_at: datetime | None = None
    resolved_at: datetime | None = None

    @field_validator("responded_at", "arrived_at", "resolved_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value, "an actual time")


def breaches(deadlines: Deadlines, actuals: ActualTimes, now: datetime) -> frozenset[Breach]:
    """Return the targets missed as of `now`.

    A target is missed when its deadline has passed with nothing recorded, or when it was met
    after the deadline; meeting it exactly at the deadline is on time. A later milestone also
    meets the earlier ones: arriving on site answers the call, and resolving the order (maybe
    remotely) ends the need to respond or come on site.
    """
    now_at = _utc(now, "now")
    met_at = {
        Breach.RESPONSE: _earliest(actuals.responded_at, actuals.arrived_at, actuals.resolved_at),
        Breach.ON_SITE: _earliest(actuals.arrived_at, actuals.resolved_at),
        Breach.RESOLUTION: actuals.resolved_at,
    }
    due_at = {
        Breach.RESPONSE: deadlines.response_due,
        Breach.ON_SITE: deadlines.on_site_due,
        Breach.RESOLUTION: deadlines.resolution_due,
    }
    return frozenset(
        target
        for target in Breach
        if (due := due_at[target]) is not None and _missed(due, met_at[target], now_at)
    )


def new_breaches(breached: AbstractSet[Breach], flagged: AbstractSet[Breach]) -> frozenset[Breach]:
    """Return the breaches not flagged yet, so each is flagged and escalated exactly once."""
    return frozenset(breached) - frozenset(flagged)


def _missed(due_at: datetime, met_at: datetime | None, now: datetime) -> bool:
    """Tell whether a target due at `due_at` and met at `met_at` (if yet) is missed by `now`."""
    if met_at is None:
        return now > due_at
    return met_at > due_at


def _utc(value: datetime, name: str) -> datetime:
    """Return `value` as UTC, refusing a naive datetime."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _ordered_span(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """Return `start` and `end` as UTC, refusing an end before the start."""
    start_at, end_at = _utc(start, "start"), _utc(end, "end")
    if end_at < start_at:
        raise ValueError(f"end {end_at.isoformat()} is before start {start_at.isoformat()}")
    return start_at, end_at


def _non_negative(duration: timedelta) -> timedelta:
    """Return `duration`, refusing a negative one."""
    if duration < timedelta():
        raise ValueError(f"a duration must not be negative, got {duration}")
    return duration


def _positive_target(value: timedelta | None) -> timedelta | None:
    """Return an SLA target duration, refusing zero or negative ones."""
    if value is not None and value <= timedelta():
        raise ValueError(f"an SLA target must be a positive duration (null for none), got {value}")
    return value


def _earliest(*instants: datetime | None) -> datetime | None:
    """Return the earliest of the instants given, or None if there are none."""
    present = [instant for instant in instants if instant is not None]
    return min(present, default=None)


def _since_midnight(at: time) -> timedelta:
    """Return how far `at` lies into its day."""
    return timedelta(
        hours=at.hour, minutes=at.minute, seconds=at.second, microseconds=at.microsecond
    )


def _local_to_utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    """Map local `day` at `at` to UTC: first occurrence if ambiguous, end of the jump if skipped."""
    return local_to_utc(datetime.combine(day, at), zone)
