"""Run-hour meters: how much a meter counted since a baseline, and when it reaches a trigger.

A meter is read from telemetry points `(at, value)`:

- `counter`: a monotonically growing counter (run_hours). The use between two readings is
  their difference; a drop means the counter was reset or replaced, so the new value is
  counted from 0. Use is spread evenly between the two readings.
- `running_state` / `motor_current`: running hours derived from a 0/1 state or a motor
  current. A reading's state holds until the next reading, but never longer than the
  trigger's `max_gap`: a device that falls silent is taken as not running.

Functions here are pure and take `now`; times are aware datetimes.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from operator import itemgetter

from core.telemetry import StampedValue
from scheduler.model import MeterSource, MeterTrigger

RATE_WINDOW = timedelta(days=7)
_SECONDS_PER_HOUR = 3600.0
# Projections further out than this are "not in sight": also keeps timedelta in range.
_MAX_PROJECTION_HOURS = 100 * 366 * 24.0
# Sums of float increments land a hair below an exact target; this much counts as there.
_REACHED_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class MeterReading:
    """What a meter counted since `baseline_at`, as of `as_of`, and its recent rate.

    `curve_at` (epoch seconds, ascending) and `curve_used` are the knots of the count since
    the baseline, linear between knots. They let `meter_due_at` find the instant a count was
    reached and count from a later baseline. Left empty, only `used` is known: a reached
    trigger is then due at `as_of`.
    """

    used: float  # units (or hours) used since baseline_at
    rate_per_hour: float | None  # recent use per hour; None if unknown or zero
    as_of: datetime
    baseline_at: datetime | None = None
    curve_at: tuple[float, ...] = ()
    curve_used: tuple[float, ...] = ()

    def used_at(self, at: datetime) -> float:
        """Return the count between `baseline_at` and `at` (0 if unknown or before it).

        Without a curve only the end is known: all of `used` by `as_of`, none before.
        """
        if not self.curve_at:
            return self.used if at >= self.as_of else 0.0
        if self.baseline_at is None or at <= self.baseline_at:
            return 0.0
        t = at.timestamp()
        if t >= self.curve_at[-1]:
            return self.curve_used[-1]
        i = bisect_right(self.curve_at, t)
        t0, t1 = self.curve_at[i - 1], self.curve_at[i]
        u0, u1 = self.curve_used[i - 1], self.curve_used[i]
        return u0 if t1 == t0 else u0 + (u1 - u0) * (t - t0) / (t1 - t0)

    def reached_at(self, count: float) -> datetime | None:
        """Return when the count since `baseline_at` reached `count`; None if unknown."""
        if not self.curve_used or self.curve_used[-1] < count - _slack(count):
            return None
        i = bisect_left(self.curve_used, count)
        if i >= len(self.curve_used):
            return _instant(self.curve_at[-1])
        if i == 0:
            return _instant(self.curve_at[0])
        t0, t1 = self.curve_at[i - 1], self.curve_at[i]
        u0, u1 = self.curve_used[i - 1], self.curve_used[i]
        return _instant(t0 + (t1 - t0) * (count - u0) / (u1 - u0))


def _slack(count: float) -> float:
    return _REACHED_TOLERANCE * max(1.0, abs(count))


def _instant(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, tz=UTC)


def _share(amount: float, t0: float, t1: float, since: float) -> float:
    """Return the part of `amount`, spread evenly over (t0, t1], that falls after `since`."""
    if t1 <= since:
        return 0.0
    if t0 >= since or t1 == t0:
        return amount
    return amount * (t1 - since) / (t1 - t0)


def _counted(
    series: list[tuple[float, float]], base: float, window_start: float
) -> tuple[list[float], list[float], float]:
    knots_at, knots_used = [base], [0.0]
    used = recent = 0.0
    # One pass, no calls on the common path: meters are read for every asset of a plan.
    for (t0, v0), (t1, v1) in pairwise(series):
        increment = v1 - v0
        if increment < 0:
            increment = v1  # a drop is a reset or a new counter: it counted up from 0
        if increment <= 0:
            continue
        if t1 > base:
            if t0 >= base:
                if knots_at[-1] != t0:  # after a still stretch: the rise starts at t0
                    knots_at.append(t0)
                    knots_used.append(used)
                used += increment
            else:
                used += _share(increment, t0, t1, base)
            knots_at.append(t1)
            knots_used.append(used)
        if t1 > window_start:
            recent += increment if t0 >= window_start else _share(increment, t0, t1, window_start)
    return knots_at, knots_used, recent


def _running_hours(
    series: list[tuple[float, float]],
    *,
    base: float,
    end: float,
    window_start: float,
    max_gap: float,
    running_from: float,
    inclusive: bool,
) -> tuple[list[float], list[float], float]:
    knots_at, knots_used = [base], [0.0]
    used = recent = 0.0
    running_until = None  # where the last running stretch ended, if it was the last knot
    # The last reading's state holds until `end` (or max_gap): a sentinel closes it.
    for (t, value), (next_t, _) in pairwise([*series, (end, 0.0)]):
        if value < running_from or (value == running_from and not inclusive):
            continue
        stop = min(next_t, t + max_gap, end)
        start = max(t, base)
        if stop > start:
            used += (stop - start) / _SECONDS_PER_HOUR
            if running_until == start:  # keeps running: extend the stretch
                knots_at[-1] = stop
                knots_used[-1] = used
            else:
                if knots_at[-1] != start:
                    knots_at.append(start)
                    knots_used.append(knots_used[-1])
                knots_at.append(stop)
                knots_used.append(used)
            running_until = stop
        if stop > window_start:
            recent += (stop - max(t, window_start)) / _SECONDS_PER_HOUR
    return knots_at, knots_used, recent


def _ordered(raw: list[tuple[float, float]], end: float) -> list[tuple[float, float]]:
    """Return the points in time order, up to `end`, without NaN or infinite values."""
    times = [t for t, _ in raw]
    if not all(map(operator.le, times, times[1:])):
        raw = sorted(raw, key=itemgetter(0))  # stable: equal timestamps keep their order
        times = [t for t, _ in raw]
    raw = raw[: bisect_right(times, end)]
    # A NaN or an infinity makes the sum non-finite: only then filter point by point.
    if not math.isfinite(sum(value for _, value in raw)):
        raw = [(t, value) for t, value in raw if math.isfinite(value)]
    return raw


def meter_since(
    trigger: MeterTrigger,
    points: Sequence[tuple[datetime, float]],
    baseline_at: datetime,
    now: datetime,
    *,
    rate_window: timedelta = RATE_WINDOW,
) -> MeterReading:
    """Return what the meter of `trigger` counted from `baseline_at` to `now` in `points`.

    Pass points from somewhat before the baseline (the reading at or just before it anchors a
    counter, and its state runs into the baseline) up to `now`, so the recent rate sees the
    last `rate_window` too. Points after `now` and non-finite values are ignored; the order
    does not matter. The rate is the use per hour over the last `rate_window` of the points
    (or since the first point, if they span less).
    """
    end = now.timestamp()
    series = [(at.timestamp(), value) for at, value in points]
    return _reading(
        trigger, series, baseline_at=baseline_at, now=now, end=end, rate_window=rate_window
    )


def meter_from_stamped(
    trigger: MeterTrigger,
    values: Sequence[StampedValue],
    baseline_at: datetime,
    now: datetime,
    *,
    rate_window: timedelta = RATE_WINDOW,
) -> MeterReading:
    """Return `meter_since` for points as stored: (epoch milliseconds, value) pairs.

    The same result without building a datetime per point, for bulk reads.
    """
    series = [(ms / 1000.0, value) for ms, value in values]
    return _reading(
        trigger,
        series,
        baseline_at=baseline_at,
        now=now,
        end=now.timestamp(),
        rate_window=rate_window,
    )


def _reading(
    trigger: MeterTrigger,
    raw: list[tuple[float, float]],
    *,
    baseline_at: datetime,
    now: datetime,
    end: float,
    rate_window: timedelta,
) -> MeterReading:
    series = _ordered(raw, end)
    base = baseline_at.timestamp()
    window_start = end - rate_window.total_seconds()
    if series:
        window_start = max(window_start, series[0][0])
    if trigger.source is MeterSource.COUNTER:
        knots_at, knots_used, recent = _counted(series, base, window_start)
    else:
        # running_state: on at >= 0.5; motor_current: on above running_above.
        derived = trigger.source is MeterSource.RUNNING_STATE
        threshold = 0.5 if derived else trigger.running_above
        knots_at, knots_used, recent = _running_hours(
            series,
            base=base,
            end=end,
            window_start=window_start,
            max_gap=trigger.max_gap.total_seconds(),
            running_from=math.inf if threshold is None else threshold,
            inclusive=derived,
        )
    window_hours = (end - window_start) / _SECONDS_PER_HOUR
    rate = recent / window_hours if series and window_hours > 0 and recent > 0 else None
    return MeterReading(
        used=knots_used[-1],
        rate_per_hour=rate,
        as_of=now,
        baseline_at=baseline_at,
        curve_at=tuple(knots_at),
        curve_used=tuple(knots_used),
    )


def meter_due_at(
    trigger: MeterTrigger, reading: MeterReading, baseline_at: datetime
) -> datetime | None:
    """Return when the meter, counted from `baseline_at`, reaches `trigger.every`.

    Already reached: the instant it was reached, interpolated between readings (`as_of` if
    the reading carries no curve). Not yet: `as_of` plus the rest at the recent rate. None
    when there is no rate, or the projection is over a century away.

    `baseline_at` may be later than the reading's own baseline: the count before it is
    taken off. A reading without a curve counts from `baseline_at` if that is before
    `as_of`, and from nothing (all of it before) if not.
    """
    target = reading.used_at(baseline_at) + trigger.every
    if reading.used >= target - _slack(target):
        return reading.reached_at(target) or reading.as_of
    rate = reading.rate_per_hour
    if rate is None or rate <= 0:
        return None
    hours = (target - reading.used) / rate
    if hours > _MAX_PROJECTION_HOURS:
        return None
    return reading.as_of + timedelta(hours=hours)
