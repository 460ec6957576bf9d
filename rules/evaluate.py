"""The pure rule evaluator: `evaluate(rule, state, ts_ms, value)` and `tick(rule, state, now_ms)`.

Time is always passed in: readings carry their event time and the timer passes its own.
Nothing here reads the clock or does I/O, so replaying history gives the live answer.
"""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import repeat
from operator import itemgetter, lt, mul, sub
from typing import Generic, NamedTuple, TypeVar

from core.telemetry import ms_to_datetime
from rules.model import (
    Band,
    Comparison,
    NoData,
    RateOfChange,
    Rolling,
    Rule,
    Threshold,
    Trend,
)

# Rules without a window keep this many recent readings as evidence for the alert.
EVIDENCE_POINTS = 20

Point = tuple[int, float]
T = TypeVar("T")


class Status(StrEnum):
    """Where a (rule, asset, metric) key stands."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class RuleState(NamedTuple):
    """Everything the evaluator remembers about one key; persisted between restarts.

    A NamedTuple rather than a frozen dataclass: one is built for every reading of every
    key, and a frozen dataclass sets each field through object.__setattr__ (6 % of ingest's
    time with rules on, measured with py-spy).
    """

    status: Status = Status.INACTIVE
    last_ts_ms: int | None = None
    pending_since_ms: int | None = None
    firing_since_ms: int | None = None
    clear_since_ms: int | None = None
    episode: int = 0
    window: tuple[Point, ...] = ()


@dataclass(frozen=True, slots=True)
class RulePending:
    """The condition started to hold; the rule waits `hold_for` before firing."""

    at: datetime
    value: float


@dataclass(frozen=True, slots=True)
class RuleFired:
    """The rule fired: the alert and its evidence."""

    at: datetime
    episode: int
    value: float
    threshold: float | None
    evidence: tuple[Point, ...]
    predicted_crossing_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RuleCancelled:
    """A pending rule went back to inactive: the condition recovered, or readings stopped."""

    at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class RuleResolved:
    """A firing rule cleared (after its quiet period)."""

    at: datetime
    episode: int


Event = RulePending | RuleFired | RuleCancelled | RuleResolved


class _Assessment(NamedTuple):
    # A NamedTuple, not a frozen dataclass: one is built per evaluation, and a frozen
    # dataclass's __init__ sets each field through object.__setattr__.
    bad: bool
    clear: bool
    value: float
    threshold: float | None
    predicted_ms: int | None = None


# Events carry aware datetimes; states and windows keep epoch milliseconds.
to_datetime = ms_to_datetime
_at = ms_to_datetime


_ONE_MS = timedelta(milliseconds=1)
_ts = itemgetter(0)
_value = itemgetter(1)


def _ms(duration: timedelta) -> int:
    return int(duration / _ONE_MS)


# A tuple, not a union: isinstance checks a tuple faster, and this runs for every reading.
_WINDOWED = (RateOfChange, Rolling, Trend)


class _Timing(NamedTuple):
    """A rule's durations in ms, computed once per rule rather than once per reading."""

    lateness: int
    max_gap: int
    hold: int
    quiet: int
    window: int | None
    calm: Calm


# Keyed by id(rule), with the rule kept alongside so the id cannot be reused while cached.
_TIMINGS: dict[int, tuple[Rule, _Timing]] = {}
_TIMINGS_BOUND = 10_000


def _timing(rule: Rule) -> _Timing:
    cached = _TIMINGS.get(id(rule))
    if cached is not None and cached[0] is rule:
        return cached[1]
    if len(_TIMINGS) >= _TIMINGS_BOUND:
        _TIMINGS.clear()  # rules re-read again and again (backtests) must not pile up
    condition = rule.condition
    timing = _Timing(
        _ms(rule.lateness),
        _ms(rule.max_gap),
        _ms(rule.hold_for),
        _ms(rule.quiet_period),
        _ms(condition.window) if isinstance(condition, RateOfChange | Rolling | Trend) else None,
        _calm_test(rule),
    )
    _TIMINGS[id(rule)] = (rule, timing)
    return timing


def window_ms(rule: Rule) -> int | None:
    """Return how far back, in ms, the rule's condition looks; None for single readings."""
    condition = rule.condition
    if isinstance(condition, _WINDOWED):
        return _ms(condition.window)
    return None


def durable(state: RuleState) -> tuple[Status, int | None, int | None, int | None, int]:
    """Return the part of a state worth persisting: everything but the rebuildable window."""
    return (
        state.status,
        state.pending_since_ms,
        state.firing_since_ms,
        state.clear_since_ms,
        state.episode,
    )


def warm(rule: Rule, state: RuleState, points: Sequence[Point]) -> RuleState:
    """Refill a state's window from stored history after a restart, changing nothing else.

    No event comes out: what those readings caused was decided, and persisted, before.
    """
    if not points:
        return state
    stamps = list(map(_ts, points))
    if not state.window and all(map(lt, stamps, stamps[1:])):
        window = _trimmed(rule, list(points))  # the usual case: a store's series, in order
    else:
        merged = dict(points)
        merged.update(state.window)  # what the live state already holds wins
        window = _trimmed(rule, sorted(merged.items()))
    newest = max(window[-1][0], state.last_ts_ms or window[-1][0])
    return state._replace(window=window, last_ts_ms=newest)


def _with_point(
    rule: Rule, window: tuple[Point, ...], ts_ms: int, value: float
) -> tuple[Point, ...]:
    """Insert a reading in time order (replacing one at the same time) and trim the window."""
    if not window or ts_ms > window[-1][0]:
        # The usual case, in order: no search, and one copy rather than a list then a tuple.
        span = _timing(rule).window
        if span is None:
            return (*window[max(0, len(window) - EVIDENCE_POINTS + 1) :], (ts_ms, value))
        oldest = ts_ms - span
        start = 0
        while start < len(window) and window[start][0] <= oldest:
            start += 1
        return (*window[start:], (ts_ms, value))
    points = [p for p in window if p[0] != ts_ms]
    insort(points, (ts_ms, value))
    return _trimmed(rule, points)


def _trimmed(rule: Rule, points: list[Point]) -> tuple[Point, ...]:
    """Keep what the rule's condition looks at: its window, or the last evidence points."""
    span = _timing(rule).window
    if span is None:
        return tuple(points[-EVIDENCE_POINTS:])
    oldest = points[-1][0] - span
    start = 0
    while points[start][0] <= oldest:
        start += 1
    return tuple(points[start:])


def _past(comparison: Comparison, value: float, threshold: float) -> bool:
    return value > threshold if comparison is Comparison.ABOVE else value < threshold


def _cleared(comparison: Comparison, value: float, clear: float) -> bool:
    return value <= clear if comparison is Comparison.ABOVE else value >= clear


def _assess(rule: Rule, window: tuple[Point, ...], value: float) -> _Assessment:
    condition = rule.condition
    if isinstance(condition, Threshold):
        clear = condition.threshold if condition.clear is None else condition.clear
        return _Assessment(
            _past(condition.comparison, value, condition.threshold),
            _cleared(condition.comparison, value, clear),
            value,
            condition.threshold,
        )
    if isinstance(condition, Band):
        low = condition.low if condition.clear_low is None else condition.clear_low
        high = condition.high if condition.clear_high is None else condition.clear_high
        bad = value < condition.low or value > condition.high
        nearest = condition.low if value < condition.low else condition.high
        return _Assessment(bad, low <= value <= high, value, nearest)
    if isinstance(condition, Rolling):
        if condition.aggregate == "mean":
            aggregate = sum(map(_value, window)) / len(window)
        else:
            aggregate = max(map(_value, window))
        clear = condition.threshold if condition.clear is None else condition.clear
        return _Assessment(
            _past(condition.comparison, aggregate, condition.threshold),
            _cleared(condition.comparison, aggregate, clear),
            aggregate,
            condition.threshold,
        )
    if isinstance(condition, RateOfChange):
        (first_ts, first), (last_ts, last) = window[0], window[-1]
        if last_ts == first_ts:
            return _Assessment(False, True, 0.0, condition.threshold)
        rate = (last - first) / ((last_ts - first_ts) / 1000)
        bad = _past(condition.comparison, rate, condition.threshold)
        return _Assessment(bad, not bad, rate, condition.threshold)
    if isinstance(condition, Trend):
        return _assess_trend(condition, window, value)
    # NoData: a reading is data, so the condition is clear; the timer decides the rest.
    return _Assessment(False, True, value, None)


def _assess_trend(condition: Trend, window: tuple[Point, ...], value: float) -> _Assessment:
    """Fit a least-squares line; bad when it reaches the threshold within the horizon."""
    origin = window[0][0]
    if len(window) < condition.min_points or 2 * (window[-1][0] - origin) < _ms(condition.window):
        # Too little history to extrapolate: a line through a second of noise "predicts"
        # a crossing half a minute out. The points must span at least half the window.
        return _Assessment(False, True, value, condition.threshold)
    # Exact integer sums of ms offsets, and float sums, all multiplied in C by map: the fit
    # runs for every reading of a trend rule, over windows of hundreds of points.
    xs = list(map(sub, map(_ts, window), repeat(origin, len(window))))
    ys = list(map(_value, window))
    n = len(xs)
    sum_x, sum_y = sum(xs), sum(ys)
    spread = n * sum(map(mul, xs, xs)) - sum_x * sum_x
    if spread == 0:
        return _Assessment(False, True, value, condition.threshold)
    slope_ms = (n * sum(map(mul, xs, ys)) - sum_x * sum_y) / spread  # value per ms
    fitted_now = sum_y / n + slope_ms * (xs[-1] - sum_x / n)
    slope = slope_ms * 1000  # per second
    now_ms = window[-1][0]
    threshold = condition.threshold
    if _past(condition.comparison, fitted_now, threshold) or fitted_now == threshold:
        crossing_ms: int | None = now_ms
    else:
        rising = condition.comparison is Comparison.ABOVE
        heading_there = slope > 0 if rising else slope < 0
        crossing_ms = (
            now_ms + int((threshold - fitted_now) / slope * 1000) if heading_there else None
        )
    bad = crossing_ms is not None and crossing_ms - now_ms <= _ms(condition.horizon)
    return _Assessment(bad, not bad, fitted_now, threshold, crossing_ms if bad else None)


def evaluate(
    rule: Rule, state: RuleState, ts_ms: int, value: float
) -> tuple[RuleState, list[Event]]:
    """Apply one reading at event time `ts_ms`; return the new state and what happened."""
    timing = _timing(rule)
    last = state.last_ts_ms
    if last is not None and ts_ms <= last:
        if ts_ms < last - timing.lateness or (ts_ms, value) in state.window:
            return state, []  # too late, or a duplicate: stored elsewhere, changes nothing
        # Late but within the allowed lateness: it fills the window, it does not rewind.
        return state._replace(window=_with_point(rule, state.window, ts_ms, value)), []
    events: list[Event] = []
    if state.status is Status.PENDING and last is not None and ts_ms - last > timing.max_gap:
        events.append(RuleCancelled(_at(ts_ms), "gap"))
        state = state._replace(status=Status.INACTIVE, pending_since_ms=None)
    window = _with_point(rule, state.window, ts_ms, value)
    # The constructor, not _replace: this runs for every reading of every key.
    state = RuleState(
        state.status,
        ts_ms,
        state.pending_since_ms,
        state.firing_since_ms,
        state.clear_since_ms,
        state.episode,
        window,
    )
    assessment = _assess(rule, window, value)
    new_state, step_events = _step(rule, state, ts_ms, assessment)
    return new_state, events + step_events


class Run(NamedTuple):
    """Consecutive readings of one series, strictly increasing in time, with their extremes.

    `windows` remembers, per window span, the last window extended by this run: the keys
    of a series hold equal windows, so they share one copy instead of building their own.
    """

    points: tuple[Point, ...]
    low: float
    high: float
    windows: dict[int | None, tuple[tuple[Point, ...], tuple[Point, ...]]]


def run_of(points: tuple[Point, ...]) -> Run | None:
    """Return the readings as a Run, or None when they are not strictly increasing in time."""
    if len(points) == 1:
        value = points[0][1]
        return Run(points, value, value, {})
    stamps = list(map(_ts, points))
    if not all(map(lt, stamps, stamps[1:])):
        return None
    values = [value for _, value in points]
    return Run(points, min(values), max(values), {})


def settle(rule: Rule, state: RuleState, run: Run) -> RuleState | None:
    """Apply a run of newer readings to a resting state at once, when none can change it.

    The result is what evaluating the readings one by one gives, with no events: the
    window and the last reading time move, nothing else. None means a reading might
    matter (or the state is not resting, or the run is not newer than what the state has
    seen): evaluate the readings one by one then. The tests for "nothing can matter" are
    exact or err towards None, so this never decides differently from `evaluate`.
    """
    if state.status is not Status.INACTIVE and state.status is not Status.RESOLVED:
        return None
    last = state.last_ts_ms
    if last is not None and run.points[0][0] <= last:
        return None
    window = _timing(rule).calm(state.window, run)
    if window is None:
        return None
    return RuleState(
        state.status,
        run.points[-1][0],
        state.pending_since_ms,
        state.firing_since_ms,
        state.clear_since_ms,
        state.episode,
        window,
    )


def extend_window(span: int | None, window: tuple[Point, ...], run: Run) -> tuple[Point, ...]:
    """Append a run to a window and trim it, as `_with_point` would reading by reading.

    Keys of one series hold equal windows: the first key's result is shared with the rest.
    """
    shared = run.windows.get(span)
    if shared is not None and (shared[0] is window or shared[0] == window):
        return shared[1]
    combined = window + run.points
    if span is None:
        extended = combined[-EVIDENCE_POINTS:] if len(combined) > EVIDENCE_POINTS else combined
    else:
        oldest = run.points[-1][0] - span
        start = 0
        while combined[start][0] <= oldest:
            start += 1
        extended = combined[start:] if start else combined
    run.windows[span] = (window, extended)
    return extended


# Given a key's window before a run, return the window after it when no reading of the run
# can make the condition bad, or None. Every window the run's readings are assessed over
# lies within the window before plus the run.
Calm = Callable[[tuple[Point, ...], Run], tuple[Point, ...] | None]


def calm_bounds(rule: Rule) -> tuple[float, float] | None:
    """Return (low, high): a run within them leaves a resting key of the rule as it is.

    None for windowed conditions, whose calm depends on the window as well as the run.
    """
    condition = rule.condition
    if isinstance(condition, Threshold):
        if condition.comparison is Comparison.ABOVE:
            return -math.inf, condition.threshold
        return condition.threshold, math.inf
    if isinstance(condition, Band):
        return condition.low, condition.high
    if isinstance(condition, NoData):
        return -math.inf, math.inf
    return None


def calm_test(rule: Rule) -> Calm:
    """Return the rule's test for a run that cannot change a resting state (see `Calm`)."""
    return _timing(rule).calm


def _calm_test(rule: Rule) -> Calm:
    bounds = calm_bounds(rule)
    if bounds is not None:
        low, high = bounds
        return lambda w, run: (
            extend_window(None, w, run) if run.low >= low and run.high <= high else None
        )
    condition = rule.condition
    if isinstance(condition, Rolling):
        rolling = condition
        return lambda w, run: _rolling_calm(rolling, w, run)
    if isinstance(condition, RateOfChange):
        rate, span = condition, _ms(condition.window)
        return lambda w, run: extend_window(span, w, run) if _rate_calm(rate, w, run) else None
    if isinstance(condition, Trend):
        trend = condition
        return lambda w, run: _trend_calm(trend, w, run)
    raise TypeError(f"no calm test for a {condition.kind} condition")


class _ByWindow(Generic[T]):
    """Values derived from windows, by window identity, so a key's next run starts from them.

    The window is kept with its value: an id is only unique while its object lives. Taking
    a value removes it, so only the windows keys hold now stay, up to `bound`.
    """

    def __init__(self, bound: int = 50_000) -> None:
        self._items: dict[int, tuple[tuple[Point, ...], T]] = {}
        self._bound = bound

    def take(self, window: tuple[Point, ...]) -> T | None:
        item = self._items.pop(id(window), None)
        return item[1] if item is not None and item[0] is window else None

    def put(self, window: tuple[Point, ...], value: T) -> None:
        if len(self._items) >= self._bound:
            self._items.clear()
        self._items[id(window)] = (window, value)


# Bounds on each rolling window's values: after a run, the old bounds widened by the run's.
# They only widen until an undecided run recomputes them, so "calm" stays a safe answer.
_EXTREMES = _ByWindow[tuple[float, float]]()


def _extremes(window: tuple[Point, ...], run: Run) -> tuple[float, float]:
    if not window:
        return run.low, run.high
    values = [*map(_value, window), run.low, run.high]
    return min(values), max(values)


def _rolling_calm(
    condition: Rolling, window: tuple[Point, ...], run: Run
) -> tuple[Point, ...] | None:
    bounds = _EXTREMES.take(window)
    if bounds is None:
        low, high = _extremes(window, run)
    else:
        low, high = min(bounds[0], run.low), max(bounds[1], run.high)
    if not _within(condition, window, run, low, high):
        if bounds is None:
            return None
        low, high = _extremes(window, run)  # the bounds may be stale: points have left
        if not _within(condition, window, run, low, high):
            return None
    extended = extend_window(_ms(condition.window), window, run)
    _EXTREMES.put(extended, (low, high))
    return extended


def _within(
    condition: Rolling, window: tuple[Point, ...], run: Run, low: float, high: float
) -> bool:
    """Tell whether the aggregate of any window within [low, high] values is clear of bad."""
    if condition.aggregate == "mean":
        # A mean lies within its values, give or take the rounding of the sum: keep clear
        # of the threshold by more than that, and let `evaluate` decide closer calls.
        slack = (max(abs(low), abs(high)) + 1) * (len(window) + len(run.points)) * 1e-12
        low, high = low - slack, high + slack
    if condition.comparison is Comparison.ABOVE:
        return high <= condition.threshold
    return low >= condition.threshold


def _rate_calm(condition: RateOfChange, window: tuple[Point, ...], run: Run) -> bool:
    """Compute each reading's rate exactly as `_assess` does; calm when none is bad."""
    combined = window + run.points
    span = _ms(condition.window)
    first = 0
    for index in range(len(window), len(combined)):
        last_ts, last = combined[index]
        while combined[first][0] <= last_ts - span:
            first += 1
        first_ts, first_value = combined[first]
        if last_ts == first_ts:
            continue
        rate = (last - first_value) / ((last_ts - first_ts) / 1000)
        if _past(condition.comparison, rate, condition.threshold):
            return False
    return True


class _Sums(NamedTuple):
    """A window's least-squares sums, x in ms from `origin` (exact integers), y as floats."""

    origin: int
    n: int
    sx: int
    sy: float
    sxx: int
    sxy: float
    amplitude: float  # the largest |y| summed since `origin`: scales the rounding error


def _sums(window: tuple[Point, ...]) -> _Sums:
    origin = window[0][0]
    xs = [ts - origin for ts, _ in window]
    ys = list(map(_value, window))
    return _Sums(
        origin,
        len(xs),
        sum(xs),
        sum(ys),
        sum(map(mul, xs, xs)),
        sum(map(mul, xs, ys)),
        max(map(abs, ys), default=0.0),
    )


# Running sums of trend windows: a key's next run starts from them instead of the window.
_SUMS = _ByWindow[_Sums]()


def _trend_calm(condition: Trend, window: tuple[Point, ...], run: Run) -> tuple[Point, ...] | None:
    """Fit the line after each reading of the run from running sums; calm when none is bad.

    Running sums round differently from `_assess_trend`'s, so "calm" needs a margin well
    beyond that rounding; a reading within it is left to `evaluate`.
    """
    cached = _SUMS.take(window)
    span = _ms(condition.window)
    if not window:
        sums = _Sums(run.points[0][0], 0, 0, 0.0, 0, 0.0, 0.0)
    elif cached is None or window[0][0] - cached.origin > span:
        sums = _sums(window)  # not seen, or turned over since the sums started: sum afresh
    else:
        sums = cached
    origin, n, sx, sy, sxx, sxy, amplitude = sums
    horizon = _ms(condition.horizon) + 1  # the crossing time is truncated to whole ms
    above = condition.comparison is Comparison.ABOVE
    threshold = condition.threshold
    combined = window + run.points
    first = 0
    for index in range(len(window), len(combined)):
        ts, y = combined[index]
        x = ts - origin
        n, sx, sy, sxx, sxy = n + 1, sx + x, sy + y, sxx + x * x, sxy + x * y
        amplitude = max(amplitude, abs(y))
        while combined[first][0] <= ts - span:
            old_x, old_y = combined[first][0] - origin, combined[first][1]
            n, sx, sy, sxx, sxy = (
                n - 1,
                sx - old_x,
                sy - old_y,
                sxx - old_x * old_x,
                sxy - old_x * old_y,
            )
            first += 1
        if n < condition.min_points or 2 * (ts - combined[first][0]) < span:
            continue
        spread = n * sxx - sx * sx
        if spread == 0:
            continue
        slope = (n * sxy - sx * sy) / spread
        now = sy / n + slope * (x - sx / n)
        ahead = now + slope * horizon
        slack = 1e-9 * (amplitude + abs(slope) * (horizon + span) + 1)
        if above and max(now, ahead) >= threshold - slack:
            return None
        if not above and min(now, ahead) <= threshold + slack:
            return None
    extended = combined[first:] if first else combined
    _SUMS.put(extended, _Sums(origin, n, sx, sy, sxx, sxy, amplitude))
    return extended


def _step(
    rule: Rule, state: RuleState, ts_ms: int, assessment: _Assessment
) -> tuple[RuleState, list[Event]]:
    if state.status in (Status.INACTIVE, Status.RESOLVED):
        if not assessment.bad:
            return state, []  # the usual case: nothing to time
        hold_ms = _timing(rule).hold
        if hold_ms == 0:
            return _fire(state, ts_ms, assessment)
        pending = state._replace(status=Status.PENDING, pending_since_ms=ts_ms)
        return pending, [RulePending(_at(ts_ms), assessment.value)]
    if state.status is Status.PENDING:
        since = state.pending_since_ms if state.pending_since_ms is not None else ts_ms
        if not assessment.bad:
            cancelled = state._replace(status=Status.INACTIVE, pending_since_ms=None)
            return cancelled, [RuleCancelled(_at(ts_ms), "recovered")]
        hold_ms = _timing(rule).hold
        if ts_ms - since >= hold_ms:
            return _fire(state, since + hold_ms, assessment)
        return state, []
    # Firing: only the clear side of the hysteresis band (for the quiet period) resolves it.
    if not assessment.clear:
        if state.clear_since_ms is None:
            return state, []
        return state._replace(clear_since_ms=None), []
    quiet_ms = _timing(rule).quiet
    clear_since = state.clear_since_ms if state.clear_since_ms is not None else ts_ms
    if ts_ms - clear_since >= quiet_ms:
        return _resolve(state, clear_since + quiet_ms)
    return state._replace(clear_since_ms=clear_since), []


def _fire(state: RuleState, at_ms: int, assessment: _Assessment) -> tuple[RuleState, list[Event]]:
    episode = state.episode + 1
    fired = state._replace(
        status=Status.FIRING,
        pending_since_ms=None,
        firing_since_ms=at_ms,
        clear_since_ms=None,
        episode=episode,
    )
    predicted = None if assessment.predicted_ms is None else _at(assessment.predicted_ms)
    event = RuleFired(
        _at(at_ms), episode, assessment.value, assessment.threshold, state.window, predicted
    )
    return fired, [event]


def _resolve(state: RuleState, at_ms: int) -> tuple[RuleState, list[Event]]:
    resolved = state._replace(status=Status.RESOLVED, firing_since_ms=None, clear_since_ms=None)
    return resolved, [RuleResolved(_at(at_ms), state.episode)]


def tick(rule: Rule, state: RuleState, now_ms: int) -> tuple[RuleState, list[Event]]:
    """Advance timers without a reading: `for` expiry, quiet periods and no-data."""
    # Take every transition due by now, not just the first, so one late tick decides what
    # frequent ticks would have (a quiet period ending, then a silence firing again). A fire
    # leaves nothing due, so this stops after two transitions at most.
    events: list[Event] = []
    while True:
        state, more = _tick_once(rule, state, now_ms)
        if not more:
            return state, events
        events += more


def _tick_once(rule: Rule, state: RuleState, now_ms: int) -> tuple[RuleState, list[Event]]:
    last = state.last_ts_ms
    if last is None:
        return state, []
    if state.status is Status.PENDING and state.pending_since_ms is not None:
        due = state.pending_since_ms + _ms(rule.hold_for)
        gap_at = last + _ms(rule.max_gap)
        # Whichever came first in event time wins, so a late tick (a sparse timer, a restart,
        # a backtest) decides what a timer ticking every instant would have decided.
        if now_ms >= due and due <= gap_at:
            value = state.window[-1][1] if state.window else 0.0
            threshold = getattr(rule.condition, "threshold", None)
            return _fire(state, due, _Assessment(True, False, value, threshold))
        if now_ms > gap_at:
            cancelled = state._replace(status=Status.INACTIVE, pending_since_ms=None)
            return cancelled, [RuleCancelled(_at(gap_at), "gap")]
        return state, []
    if state.status is Status.FIRING and state.clear_since_ms is not None:
        due = state.clear_since_ms + _ms(rule.quiet_period)
        return _resolve(state, due) if now_ms >= due else (state, [])
    if isinstance(rule.condition, NoData) and state.status is not Status.FIRING:
        due = last + _ms(rule.condition.silence) + _ms(rule.hold_for)
        if now_ms >= due:
            value = state.window[-1][1] if state.window else 0.0
            return _fire(state, due, _Assessment(True, False, value, None))
    return state, []
