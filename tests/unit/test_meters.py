"""Run-hour meters from telemetry: counters with resets, derived running hours, projections."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.meters import MeterReading, meter_due_at, meter_from_stamped, meter_since
from scheduler.model import MeterTrigger

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday, midnight UTC
H = timedelta(hours=1)
M = timedelta(minutes=1)
COUNTER = MeterTrigger(metric="run_hours", every=500)
RUNNING = MeterTrigger(metric="running", every=100, source="running_state")
MOTOR = MeterTrigger(metric="motor_current_a", every=100, source="motor_current", running_above=5)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def two_shift_pump(days: int, *, reset_on_day: int | None = None) -> list[tuple[datetime, float]]:
    """Hourly run-hours of a pump on two shifts, 06:00 to 22:00, every day."""
    points: list[tuple[datetime, float]] = []
    total = offset = 0.0
    for hour in range(days * 24 + 1):
        stamp = T0 + hour * H
        if 6 < stamp.hour <= 22:  # the hour up to this reading ran
            total += 1
        if reset_on_day is not None and hour == reset_on_day * 24:
            offset = total  # the counter is replaced at midnight and reads from 0
        points.append((stamp, total - offset))
    return points


# --- counters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "baseline", "used"),
    [
        pytest.param([(at(0), 100), (at(1), 110), (at(2), 125)], at(-5), 25, id="first anchors"),
        pytest.param([(at(0), 100), (at(1), 110), (at(2), 125)], at(0.5), 20, id="half a step"),
        pytest.param([(at(0), 100), (at(1), 110), (at(2), 125)], at(2), 0, id="at the last"),
        pytest.param(
            [(at(0), 100), (at(1), 110), (at(2), 3), (at(3), 8)], at(0), 18, id="reset from 0"
        ),
        pytest.param([(at(2), 125), (at(0), 100), (at(1), 110)], at(0), 25, id="any order"),
        pytest.param(
            [(at(0), 100), (at(1), math.nan), (at(2), 125), (at(30), 900)],
            at(0),
            25,
            id="NaN and future points ignored",
        ),
        pytest.param([(at(0), 100), (at(1), 100)], at(0), 0, id="standing still"),
        pytest.param([], at(0), 0, id="no points"),
    ],
)
def test_a_counter_counts_its_increments_since_the_baseline(
    points: list[tuple[datetime, float]], baseline: datetime, used: float
) -> None:
    reading = meter_since(COUNTER, points, baseline, at(24))

    assert reading.used == pytest.approx(used)
    assert reading.as_of == at(24)
    assert reading.baseline_at == baseline


def test_a_pump_on_two_shifts_for_sixty_days_with_a_new_counter_on_day_thirty() -> None:
    now = T0 + timedelta(days=60)
    plain = meter_since(COUNTER, two_shift_pump(60), T0, now)
    reset = meter_since(COUNTER, two_shift_pump(60, reset_on_day=30), T0, now)

    assert reset.used == plain.used == 60 * 16
    assert reset.rate_per_hour == pytest.approx(16 / 24)
    # 31 days of 16 h, then 4 h from 06:00 on the 32nd: 10:00.
    assert meter_due_at(COUNTER, reset, T0) == T0 + timedelta(days=31, hours=10)
    assert reset.reached_at(500) == T0 + timedelta(days=31, hours=10)
    assert reset.used_at(T0 + timedelta(days=31, hours=10)) == pytest.approx(500)


def test_a_counter_not_there_yet_is_projected_at_its_recent_rate() -> None:
    now = T0 + timedelta(days=20)
    reading = meter_since(COUNTER, two_shift_pump(20), T0, now)

    due = meter_due_at(COUNTER, reading, T0)

    assert reading.used == 320
    assert due is not None
    assert abs(due - (now + timedelta(hours=180 * 24 / 16))) < timedelta(seconds=1)


def test_the_rate_looks_at_the_last_seven_days_only() -> None:
    # Two weeks idle, then a week of round-the-clock running.
    points = [(T0 + hour * H, max(0, hour - 14 * 24)) for hour in range(21 * 24 + 1)]

    reading = meter_since(COUNTER, points, T0, T0 + timedelta(days=21))

    assert reading.rate_per_hour == pytest.approx(1.0)
    assert reading.used == 7 * 24


def test_points_spanning_less_than_the_window_give_the_rate_since_the_first() -> None:
    points = [(at(0), 0.0), (at(10), 5.0)]

    assert meter_since(COUNTER, points, at(0), at(10)).rate_per_hour == pytest.approx(0.5)


@pytest.mark.parametrize(
    "points",
    [
        pytest.param([], id="no points"),
        pytest.param([(at(0), 7.0), (at(5), 7.0)], id="no use"),
        pytest.param([(at(0), 7.0)], id="a single reading"),
    ],
)
def test_there_is_no_rate_without_use(points: list[tuple[datetime, float]]) -> None:
    reading = meter_since(COUNTER, points, at(0), at(10))

    assert reading.rate_per_hour is None
    assert meter_due_at(COUNTER, reading, at(0)) is None


def test_stored_points_in_epoch_milliseconds_read_the_same() -> None:
    points = two_shift_pump(10, reset_on_day=4)
    stamped = [(int(stamp.timestamp() * 1000), value) for stamp, value in points]
    now = T0 + timedelta(days=10)

    assert meter_from_stamped(COUNTER, stamped, at(30), now) == meter_since(
        COUNTER, points, at(30), now
    )


# --- derived running hours --------------------------------------------------------------


def test_running_state_counts_hours_at_or_above_one_half() -> None:
    states = [(at(0), 1.0), (at(0.1), 0.5), (at(0.2), 0.4), (at(0.3), 1.0), (at(0.4), 0.0)]

    reading = meter_since(RUNNING, states, at(0), at(1))

    assert reading.used == pytest.approx(0.3)  # 0.0-0.2 and 0.3-0.4; 0.4 is not running


def test_a_silent_device_counts_as_running_for_at_most_max_gap() -> None:
    states = [(at(0), 1.0), (at(5), 1.0), (at(5.1), 0.0)]

    reading = meter_since(RUNNING, states, at(0), at(6))

    assert reading.used == pytest.approx(0.25 + 0.1)


def test_the_last_reading_holds_until_now_within_max_gap() -> None:
    assert meter_since(RUNNING, [(at(0), 1.0)], at(0), at(0.1)).used == pytest.approx(0.1)
    assert meter_since(RUNNING, [(at(0), 1.0)], at(0), at(3)).used == pytest.approx(0.25)


def test_a_state_from_before_the_baseline_runs_into_it() -> None:
    states = [(at(-0.1), 1.0), (at(0.05), 0.0)]

    assert meter_since(RUNNING, states, at(0), at(1)).used == pytest.approx(0.05)


def motor_day() -> list[tuple[datetime, float]]:
    """A motor on from 08:00 to 16:00 (12 A), read every minute, offline 12:00 to 14:00."""
    points: list[tuple[datetime, float]] = []
    for minute in range(7 * 60, 18 * 60):
        if 12 * 60 <= minute < 14 * 60:
            continue  # the gateway was down; the motor kept running, unseen
        current = 12.0 if 8 * 60 <= minute < 16 * 60 else 0.5
        points.append((T0 + minute * M, current))
    return points


def test_motor_current_with_a_gap_counts_the_gap_as_stopped_after_max_gap() -> None:
    reading = meter_since(MOTOR, motor_day(), T0, T0 + timedelta(hours=18))

    # 08:00-11:59 read running, the 11:59 reading holds 15 min, then 14:00-16:00.
    assert reading.used == pytest.approx(4 + 14 / 60 + 2)
    assert reading.reached_at(4) == T0 + timedelta(hours=12)
    assert reading.reached_at(4.5) == T0 + timedelta(hours=14, minutes=16)


def test_motor_current_exactly_at_the_threshold_is_not_running() -> None:
    points = [(at(0), 5.0), (at(0.1), 5.01), (at(0.2), 0.0)]

    assert meter_since(MOTOR, points, at(0), at(1)).used == pytest.approx(0.1)


def test_a_longer_max_gap_bridges_the_outage() -> None:
    bridging = MOTOR.model_copy(update={"max_gap": timedelta(hours=3)})

    reading = meter_since(bridging, motor_day(), T0, T0 + timedelta(hours=18))

    assert reading.used == pytest.approx(8)


# --- due times --------------------------------------------------------------------------


def reading_of(**fields: Any) -> MeterReading:
    return MeterReading(**{"used": 0.0, "rate_per_hour": None, "as_of": at(10), **fields})


@pytest.mark.parametrize(
    ("reading", "baseline", "due"),
    [
        pytest.param(
            meter_since(
                COUNTER.model_copy(update={"every": 5}), [(at(0), 0), (at(1), 10)], at(0), at(10)
            ),
            at(0),
            at(0.5),
            id="reached: interpolated between readings",
        ),
        pytest.param(reading_of(used=3.0, rate_per_hour=0.5), at(0), at(14), id="projected"),
        pytest.param(reading_of(used=3.0), at(0), None, id="no rate: not in sight"),
        pytest.param(
            reading_of(used=3.0, rate_per_hour=1e-9), at(0), None, id="a century away: no"
        ),
        pytest.param(reading_of(used=7.0), at(0), at(10), id="no curve: reached by as_of"),
        pytest.param(
            reading_of(used=7.0, rate_per_hour=1.0), at(10), at(15), id="no curve, later base"
        ),
        pytest.param(
            meter_since(COUNTER, [(at(0), 0), (at(10), 10)], at(0), at(10)),
            at(4),
            at(9),
            id="a later baseline takes off what came before it",
        ),
    ],
)
def test_meter_due_at(reading: MeterReading, baseline: datetime, due: datetime | None) -> None:
    trigger = COUNTER.model_copy(update={"every": 5})

    found = meter_due_at(trigger, reading, baseline)

    if due is None:
        assert found is None
    else:
        assert found is not None
        assert abs(found - due) < timedelta(milliseconds=1)


# --- properties -------------------------------------------------------------------------

STEPS = st.lists(
    st.tuples(st.integers(1, 7200), st.floats(0, 50), st.booleans()), min_size=1, max_size=60
)


@settings(max_examples=200, deadline=None)
@given(STEPS, st.integers(0, 60))
def test_a_counter_counts_what_a_plain_sum_counts(
    steps: list[tuple[int, float, bool]], baseline_index: int
) -> None:
    points = [(T0, 0.0)]
    value = expected = 0.0
    baseline_index = min(baseline_index, len(steps))
    for index, (seconds, increment, reset) in enumerate(steps, start=1):
        # A reset shows only as a drop: a new counter reading below the old one.
        value = increment if reset and increment < value else value + increment
        if index > baseline_index:
            expected += increment
        points.append((points[-1][0] + timedelta(seconds=seconds), value))
    baseline = points[baseline_index][0]

    reading = meter_since(COUNTER, points, baseline, points[-1][0])

    assert reading.used == pytest.approx(expected, abs=1e-6)
    for share in (0.0, 0.25, 0.5, 1.0):
        count = reading.used * share
        reached = reading.reached_at(count)
        assert reached is not None
        assert baseline <= reached <= points[-1][0]
        # Reached within the microsecond a datetime can tell.
        tick = timedelta(microseconds=1)
        assert (
            reading.used_at(reached - tick) - 1e-6
            <= count
            <= reading.used_at(reached + tick) + 1e-6
        )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3600), st.booleans()), min_size=1, max_size=80))
def test_running_hours_never_exceed_the_time_that_passed(steps: list[tuple[int, bool]]) -> None:
    points = []
    stamp = T0
    for seconds, running in steps:
        stamp += timedelta(seconds=seconds)
        points.append((stamp, 1.0 if running else 0.0))
    now = stamp + timedelta(hours=1)

    reading = meter_since(RUNNING, points, T0, now)

    assert 0 <= reading.used <= (now - T0).total_seconds() / 3600 + 1e-9
    assert list(reading.curve_at) == sorted(reading.curve_at)
    assert list(reading.curve_used) == sorted(reading.curve_used)
