"""When maintenance plans fall due: occurrences per (plan, asset), computed from data and `now`.

Two kinds of plan (see docs/plans.md):

- **Fixed calendar plans** (a calendar trigger with fixed recurrence and no meter) follow
  their series from `starts_at` in the site's zone whatever happens to the work. Each
  occurrence is keyed by its due time.
- **Cycle-based plans** (floating recurrence, or any plan with a meter) have one occurrence
  per cycle. A cycle starts at its baseline (the last completion, or the due time of the
  last occurrence recorded as missed, or the plan's creation) and is keyed by it.

Series are computed in local wall time and mapped to UTC: 08:00 stays 08:00 across DST; a
time the clocks skip maps to the first instant after the jump, a repeated time to its first
occurrence. A due date on a day the site calendar does not allow moves forward to the next
allowed day at the same local time; it is never dropped.
"""

from __future__ import annotations

import calendar as _gregorian
import threading
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule

from core.wallclock import local_to_utc
from scheduler.meters import MeterReading, meter_due_at
from scheduler.model import (
    CalendarTrigger,
    IntervalUnit,
    MaintenancePlan,
    MissedPolicy,
    Recurrence,
    SiteCalendar,
    parse_rrule,
)

# At most this many occurrences come back from one call: the caller stores them and calls
# again from the last one, so a long outage or a huge horizon is caught up in bounded steps.
MAX_OCCURRENCES = 1000
_TICK = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)
# Cached series grow by at most this many due instants at a time.
_WALK_CHUNK = 256
# RRULE points are computed this many at a time and kept for every later caller.
_RULE_CHUNK = 64

Trigger = Literal["calendar", "meter"]


@dataclass(frozen=True, slots=True)
class PlanProgress:
    """What storage knows about one (plan, asset); all None for a plan that never ran."""

    last_due_at: datetime | None = None  # latest stored occurrence of a fixed series
    last_completed_at: datetime | None = None  # when the plan's last work order was resolved
    last_missed_due_at: datetime | None = None  # due time of the latest one recorded missed
    open_cycle_key: str | None = None  # cycle key of a generated, not completed occurrence


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One time a plan falls due on an asset."""

    due_at: datetime
    trigger: Trigger  # which trigger made it due
    cycle_key: str | None  # the cycle's baseline (cycle-based plans); None in a fixed series
    missed: bool  # already due at `now`: it came due while the scheduler was not running


# --- local wall time --------------------------------------------------------------------


def _local(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _moved(local: datetime, site: SiteCalendar) -> datetime | None:
    """Return `local` moved to the next day `site` allows, same time of day; None if none."""
    if site.unrestricted:
        return local
    day = site.next_allowed(local.date())
    if day is None:
        return None
    return local if day == local.date() else datetime.combine(day, local.time())


def _moved_instant(at: datetime, site: SiteCalendar) -> datetime | None:
    if site.unrestricted:
        return at
    local = _local(at, site.zone)
    moved = _moved(local, site)
    if moved is None:
        return None
    return at if moved == local else local_to_utc(moved, site.zone)


def _plus(day: date, every: int, unit: IntervalUnit) -> date:
    """Return `day` plus `every` units; months clamp to the month's end (Jan 31 + 1: Feb 28)."""
    if unit is IntervalUnit.MONTHS:
        months = day.month - 1 + every
        year, month = day.year + months // 12, months % 12 + 1
        return date(year, month, min(day.day, _gregorian.monthrange(year, month)[1]))
    return day + timedelta(days=every * (7 if unit is IntervalUnit.WEEKS else 1))


# --- series -----------------------------------------------------------------------------


def _interval_points(
    start: datetime, every: int, unit: IntervalUnit, from_local: datetime
) -> Iterator[datetime]:
    """Yield every-N local points from about the last one at or before `from_local`.

    Each point is computed from the start, not from the one before, so a series anchored on
    the 31st clamps to shorter months without drifting (Jan 31, Feb 28, Mar 31).
    """
    k = 0
    if from_local >= start:
        if unit is IntervalUnit.MONTHS:
            elapsed = (from_local.year - start.year) * 12 + from_local.month - start.month
            k = elapsed // every
        else:
            k = (from_local - start) // timedelta(
                days=every * (7 if unit is IntervalUnit.WEEKS else 1)
            )
        # One point early: around a DST change local and UTC order can differ by an hour.
        k = max(k - 1, 0)
    start_day, time_of_day = start.date(), start.time()
    while True:
        try:
            day = _plus(start_day, k * every, unit)
        except (ValueError, OverflowError):
            return  # past year 9999: the series ends
        yield datetime.combine(day, time_of_day)
        k += 1


class _RulePoints:
    """The local points of one RRULE from one start, computed once and shared by callers."""

    def __init__(self, rule: rrule) -> None:
        self._source = iter(rule)
        self._lock = threading.Lock()
        self.points: list[datetime] = []
        self.done = False

    def _grow(self) -> bool:
        with self._lock:  # dateutil's iterator is a generator: one caller at a time
            if self.done:
                return False
            size = len(self.points)
            for _ in range(_RULE_CHUNK):
                point = next(self._source, None)
                if point is None:
                    self.done = True
                    break
                self.points.append(point)
            return len(self.points) > size

    def since(self, from_local: datetime) -> Iterator[datetime]:
        """Yield the points from about the last one at or before `from_local`."""
        while (not self.points or self.points[-1] <= from_local) and self._grow():
            pass
        i = max(bisect_right(self.points, from_local) - 2, 0)
        while i < len(self.points) or self._grow():
            yield self.points[i]
            i += 1


@lru_cache(maxsize=1024)
def _rule_points(text: str, dtstart: datetime) -> _RulePoints:
    return _RulePoints(parse_rrule(text).build(dtstart))


def _interval(trigger: CalendarTrigger) -> tuple[int, IntervalUnit]:
    if trigger.every is None or trigger.unit is None:  # the model refuses this
        raise ValueError("a calendar trigger without rrule needs every and unit")
    return trigger.every, trigger.unit


def _walk(
    trigger: CalendarTrigger,
    site: SiteCalendar,
    after: datetime,
    until: datetime,
    limit: int,
) -> list[datetime]:
    """Return the calendar series' due instants in (`after`, `until`], at most `limit`.

    The series is read as fixed from `starts_at` (recurrence is the caller's business),
    moved by the site calendar, with points moved onto the same day collapsed into one.
    """
    zone = site.zone
    start = _local(trigger.starts_at, zone)
    from_local = _local(after, zone)
    rule = parse_rrule(trigger.rrule) if trigger.rrule is not None else None
    if rule is not None:
        raw: Iterator[datetime] = _rule_points(trigger.rrule or "", start).since(from_local)
    else:
        every, unit = _interval(trigger)
        raw = _interval_points(start, every, unit, from_local)
    dues: list[datetime] = []
    last = None
    # Moving only ever goes forward, so due times never decrease along the series: the first
    # one past `until` ends the walk, and points moved onto one day are neighbours.
    for point in raw:
        if rule is not None:
            if rule.until_local is not None and point > rule.until_local:
                break
            if rule.until_at is not None and local_to_utc(point, zone) > rule.until_at:
                break
        local = _moved(point, site)
        if local is None:
            break
        due = local_to_utc(local, zone)
        if due > until:
            break
        if due > after and due != last:
            dues.append(due)
            last = due
            if len(dues) >= limit:
                break
    return dues


class _Computed:
    """Due instants of one series on one calendar, known complete in (`after`, `covered`]."""

    __slots__ = ("after", "covered", "dues")

    def __init__(self, after: datetime) -> None:
        self.after = after
        self.covered = after
        self.dues: list[datetime] = []


# Series are shared by every asset of a plan (and by plans with equal triggers), so their
# due instants are computed once per calendar and reused: a call then costs a bisect.
_computed: dict[tuple[object, ...], _Computed] = {}
_computed_lock = threading.Lock()
_COMPUTED_LIMIT = 4096


def _series(
    trigger: CalendarTrigger,
    site: SiteCalendar,
    after: datetime,
    until: datetime,
    limit: int,
) -> list[datetime]:
    """Return the calendar series' due instants in (`after`, `until`], at most `limit`.

    The same as `_walk`, from a cache that grows forward as callers ask for later dates.
    """
    key = (trigger.rrule, trigger.every, trigger.unit, trigger.starts_at, site.cache_key)
    with _computed_lock:
        known = _computed.get(key)
        if known is None or after < known.after:
            if len(_computed) >= _COMPUTED_LIMIT:
                _computed.clear()  # cheap bound; hot series come back on their next call
            known = _computed[key] = _Computed(after)
        while known.covered < until and len(known.dues) - bisect_right(known.dues, after) < limit:
            more = _walk(trigger, site, known.covered, until, _WALK_CHUNK)
            known.dues += more
            known.covered = more[-1] if len(more) == _WALK_CHUNK else until
        first = bisect_right(known.dues, after)
        last = bisect_right(known.dues, until, lo=first)
        return known.dues[first : min(last, first + limit)]


# --- cycles -----------------------------------------------------------------------------


def cycle_key(baseline_at: datetime) -> str:
    """Return the key of the cycle starting at `baseline_at`: ISO 8601 UTC, to the µs."""
    return baseline_at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def cycle_baseline(plan: MaintenancePlan, progress: PlanProgress) -> datetime:
    """Return where the current cycle of a cycle-based plan starts.

    The later of the last completion and the due time of the last occurrence recorded as
    missed; if neither, the plan's `created_at`. Count meters from here (`meter_since`).
    """
    marks = [at for at in (progress.last_completed_at, progress.last_missed_due_at) if at]
    return max(marks) if marks else plan.created_at


def _floating_next(trigger: CalendarTrigger, site: SiteCalendar, baseline: datetime) -> datetime:
    zone = site.zone
    every, unit = _interval(trigger)
    day = _plus(_local(baseline, zone).date(), every, unit)
    local = datetime.combine(day, _local(trigger.starts_at, zone).time())
    # No allowed day for years: the job is still due, on the day the interval gives.
    return local_to_utc(_moved(local, site) or local, zone)


def _cycle_due(
    plan: MaintenancePlan,
    site: SiteCalendar,
    meter: MeterReading | None,
    *,
    baseline: datetime,
    first_cycle: bool,
    until: datetime,
) -> tuple[datetime, Trigger] | None:
    """Return when the cycle from `baseline` falls due and by which trigger; None if never."""
    best: tuple[datetime, Trigger] | None = None
    calendar = plan.calendar
    if calendar is not None:
        if first_cycle:
            # The plan's first due instant: the first series point at or after its creation.
            found = _series(calendar, site, baseline - _TICK, until, 1)
            best = (found[0], "calendar") if found else None
        elif calendar.recurrence is Recurrence.FLOATING:
            best = (_floating_next(calendar, site, baseline), "calendar")
        else:
            found = _series(calendar, site, baseline, until, 1)
            best = (found[0], "calendar") if found else None
    if plan.meter is not None and meter is not None:
        at = meter_due_at(plan.meter, meter, baseline)
        if at is not None:
            at = _moved_instant(max(at, baseline + _SECOND), site)
            if at is not None and (best is None or at < best[0]):
                best = (at, "meter")
    if best is not None and best[0] <= baseline:
        # Only a DST edge could do this; a cycle must end after it starts, or walks stall.
        best = (baseline + _SECOND, best[1])
    return best


def _cycles(
    plan: MaintenancePlan,
    site: SiteCalendar,
    progress: PlanProgress,
    meter: MeterReading | None,
    *,
    missed_before: datetime,
    until: datetime,
) -> list[Occurrence]:
    baseline = cycle_baseline(plan, progress)
    first_cycle = progress.last_completed_at is None and progress.last_missed_due_at is None
    walk_missed = plan.missed is MissedPolicy.MARK_MISSED
    found: list[Occurrence] = []
    # Each cycle ends strictly after it starts, so the walk moves forward; the cap bounds it.
    while len(found) < MAX_OCCURRENCES:
        key = cycle_key(baseline)
        if key == progress.open_cycle_key:
            break
        due = _cycle_due(plan, site, meter, baseline=baseline, first_cycle=first_cycle, until=until)
        if due is None or due[0] > until:
            break
        missed = due[0] < missed_before
        found.append(Occurrence(due_at=due[0], trigger=due[1], cycle_key=key, missed=missed))
        if not (missed and walk_missed):
            break
        # Recorded as missed, this occurrence's due time is the next cycle's baseline.
        baseline, first_cycle = due[0], False
    return found


def _aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {value.isoformat()}")


def due_occurrences(  # noqa: PLR0917 - the positional shape callers were promised
    plan: MaintenancePlan,
    calendar: SiteCalendar,
    progress: PlanProgress,
    meter: MeterReading | None,
    now: datetime,
    until: datetime,
    *,
    missed_before: datetime | None = None,
) -> list[Occurrence]:
    """Return the occurrences of `plan` on one asset to record now, oldest first.

    Fixed series: every point due after `progress.last_due_at` (or from the plan's
    `created_at`) up to `until`, missed ones included, at most MAX_OCCURRENCES.

    Cycle-based: the current cycle's occurrence if due by `until`, or nothing when that
    cycle is already open. Under the `mark_missed` policy, a missed cycle is followed by the
    next one (its baseline: the missed due time), and so on up to the first not missed, at
    most MAX_OCCURRENCES. `meter` must be counted from `cycle_baseline(...)` or earlier.

    An occurrence is missed when due before `missed_before` (default `now`): pass `now`
    less a grace of a run or two, so that a meter crossing seen a few minutes after the
    fact is not taken for one that came due while the scheduler was down. A disabled plan
    has none.
    """
    _aware(now, "now")
    _aware(until, "until")
    cutoff = now if missed_before is None else missed_before
    _aware(cutoff, "missed_before")
    if not plan.enabled:
        return []
    if plan.is_cycle_based:
        return _cycles(plan, calendar, progress, meter, missed_before=cutoff, until=until)
    trigger = plan.calendar
    if trigger is None:  # the model refuses a plan without any trigger
        return []
    after = plan.created_at - _TICK
    if progress.last_due_at is not None:
        after = max(after, progress.last_due_at)
    dues = _series(trigger, calendar, after, until, MAX_OCCURRENCES)
    return [
        Occurrence(due_at=due, trigger="calendar", cycle_key=None, missed=due < cutoff)
        for due in dues
    ]
