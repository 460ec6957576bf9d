"""The pure rule evaluator: every condition kind, every transition, late and duplicate data."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.assets import Asset
from core.telemetry import Reading
from rules.engine import RuleEngine, StateKey
from rules.evaluate import (
    Event,
    RuleCancelled,
    RuleFired,
    RulePending,
    RuleResolved,
    RuleState,
    Status,
    evaluate,
    tick,
)
from rules.model import Rule

T0 = 1_795_330_800_000  # 2026-11-22T07:00:00Z in epoch ms
S = 1000


def rule(condition: dict[str, Any], **timing: Any) -> Rule:
    return Rule.model_validate(
        {
            "id": "r1",
            "name": "test rule",
            "selector": {"metric": "temperature_c", "asset_id": "pump-1"},
            "condition": condition,
            **timing,
        }
    )


ABOVE_80 = {"kind": "threshold", "comparison": "above", "threshold": 80}
BELOW_10 = {"kind": "threshold", "comparison": "below", "threshold": 10}
MEAN_ABOVE_1 = {"kind": "rolling", "aggregate": "mean", "comparison": "above", "threshold": 1}


def run(r: Rule, readings: Sequence[tuple[int, float]]) -> tuple[RuleState, list[Event]]:
    state, events = RuleState(), []
    for ts, value in readings:
        state, new = evaluate(r, state, ts, value)
        events += new
    return state, events


def kinds(events: Sequence[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@pytest.mark.parametrize(
    ("condition", "timing", "values", "expected", "status"),
    [
        pytest.param(ABOVE_80, {}, [70, 81], ["RuleFired"], Status.FIRING, id="above-fires"),
        pytest.param(ABOVE_80, {}, [70, 80], [], Status.INACTIVE, id="at-threshold-is-fine"),
        pytest.param(
            {"kind": "threshold", "comparison": "below", "threshold": 10},
            {},
            [12, 9],
            ["RuleFired"],
            Status.FIRING,
            id="below-fires",
        ),
        pytest.param(
            ABOVE_80, {}, [81, 79], ["RuleFired", "RuleResolved"], Status.RESOLVED, id="resolves"
        ),
        pytest.param(
            ABOVE_80,
            {},
            [81, 79, 85],
            ["RuleFired", "RuleResolved", "RuleFired"],
            Status.FIRING,
            id="re-arms-after-clear",
        ),
        pytest.param(
            ABOVE_80, {"hold_for": "PT3S"}, [81, 82], ["RulePending"], Status.PENDING, id="pending"
        ),
        pytest.param(
            ABOVE_80,
            {"hold_for": "PT3S"},
            [81, 82, 83, 84],
            ["RulePending", "RuleFired"],
            Status.FIRING,
            id="for-elapses",
        ),
        pytest.param(
            ABOVE_80,
            {"hold_for": "PT3S"},
            [81, 82, 70, 90],
            ["RulePending", "RuleCancelled", "RulePending"],
            Status.PENDING,
            id="for-cancelled-by-recovery",
        ),
        pytest.param(
            {"kind": "outside", "low": 10, "high": 20},
            {},
            [15, 21, 15, 9],
            ["RuleFired", "RuleResolved", "RuleFired"],
            Status.FIRING,
            id="outside-band",
        ),
        pytest.param(
            {"kind": "rate_of_change", "comparison": "above", "threshold": 2, "window": "PT5S"},
            {},
            [10, 11, 12, 20],
            ["RuleFired"],
            Status.FIRING,
            id="rate-of-change",
        ),
        pytest.param(
            {
                "kind": "rolling",
                "aggregate": "mean",
                "comparison": "above",
                "threshold": 50,
                "window": "PT3S",
            },
            {},
            [40, 100, 40, 40, 40],
            ["RuleFired", "RuleResolved"],
            Status.RESOLVED,
            id="rolling-mean",
        ),
        pytest.param(
            {
                "kind": "rolling",
                "aggregate": "max",
                "comparison": "above",
                "threshold": 50,
                "window": "PT2S",
            },
            {},
            [40, 60, 40, 40],
            ["RuleFired", "RuleResolved"],
            Status.RESOLVED,
            id="rolling-max-forgets-after-window",
        ),
    ],
)
def test_transitions(
    condition: dict[str, Any],
    timing: dict[str, Any],
    values: list[float],
    expected: list[str],
    status: Status,
) -> None:
    state, events = run(rule(condition, **timing), [(T0 + i * S, v) for i, v in enumerate(values)])
    assert kinds(events) == expected
    assert state.status is status


def test_for_fires_at_the_event_time_the_period_elapsed() -> None:
    r = rule(ABOVE_80, hold_for="PT10S")
    _, events = run(r, [(T0, 81), (T0 + 4 * S, 82), (T0 + 12 * S, 83)])
    fired = events[-1]
    assert isinstance(fired, RuleFired)
    assert fired.at == at(T0 + 10 * S)
    assert (fired.episode, fired.value, fired.threshold) == (1, 83, 80)


def test_hysteresis_stops_a_noisy_signal_from_flapping() -> None:
    r = rule({**ABOVE_80, "clear": 75})
    # Noise of ±2 around 80 crosses the threshold 50 times after the first rise to 85.
    readings = [(T0, 85.0)] + [(T0 + (i + 1) * S, 80 + (2 if i % 2 else -2)) for i in range(100)]
    crossings = sum(1 for (_, a), (_, b) in itertools.pairwise(readings) if (a > 80) != (b > 80))
    assert crossings >= 50
    state, events = run(r, readings)
    assert kinds(events) == ["RuleFired"]
    assert state.status is Status.FIRING
    state, more = evaluate(r, state, T0 + 200 * S, 74)
    assert kinds(more) == ["RuleResolved"]


def test_without_hysteresis_the_same_signal_flaps() -> None:
    readings = [(T0, 85.0)] + [(T0 + (i + 1) * S, 80 + (2 if i % 2 else -2)) for i in range(100)]
    _, events = run(rule(ABOVE_80), readings)
    assert kinds(events).count("RuleFired") == 51  # the control: hysteresis is what helps


def test_quiet_period_delays_resolution() -> None:
    r = rule(ABOVE_80, quiet_period="PT5S")
    state, events = run(r, [(T0, 85), (T0 + S, 70), (T0 + 3 * S, 70)])
    assert kinds(events) == ["RuleFired"]
    state, events = evaluate(r, state, T0 + 7 * S, 70)
    assert events == [RuleResolved(at(T0 + 6 * S), 1)]
    # A relapse inside the quiet period restarts it.
    state, events = run(r, [(T0, 85), (T0 + S, 70), (T0 + 3 * S, 90), (T0 + 7 * S, 70)])
    assert kinds(events) == ["RuleFired"]
    assert state.status is Status.FIRING


def test_late_readings_within_lateness_fill_the_window_but_do_not_rewind() -> None:
    r = rule(ABOVE_80, lateness="PT10S")
    state, _ = run(r, [(T0 + 10 * S, 70)])
    late, events = evaluate(r, state, T0 + 5 * S, 95)
    assert events == []
    assert late.status is Status.INACTIVE
    assert (T0 + 5 * S, 95) in late.window
    too_late, events = evaluate(r, state, T0 - 60 * S, 95)
    assert (too_late, events) == (state, [])


def test_duplicates_are_idempotent() -> None:
    r = rule(ABOVE_80, hold_for="PT2S")
    once, events_once = run(r, [(T0, 81), (T0 + S, 82), (T0 + 3 * S, 83)])
    twice, events_twice = run(
        r, [(T0, 81), (T0, 81), (T0 + S, 82), (T0 + S, 82), (T0 + 3 * S, 83), (T0 + 3 * S, 83)]
    )
    assert (once, events_once) == (twice, events_twice)


def test_a_gap_longer_than_max_gap_resets_pending() -> None:
    r = rule(ABOVE_80, hold_for="PT60S", max_gap="PT10S")
    state, events = run(r, [(T0, 81), (T0 + 30 * S, 82)])
    assert kinds(events) == ["RulePending", "RuleCancelled", "RulePending"]
    assert isinstance(events[1], RuleCancelled)
    assert events[1].reason == "gap"
    assert state.pending_since_ms == T0 + 30 * S


def test_tick_fires_a_for_period_with_no_further_message() -> None:
    r = rule(ABOVE_80, hold_for="PT5S")
    state, _ = run(r, [(T0, 81), (T0 + 2 * S, 82)])
    unchanged, events = tick(r, state, T0 + 4 * S)
    assert (unchanged, events) == (state, [])
    fired_state, events = tick(r, state, T0 + 6 * S)
    assert kinds(events) == ["RuleFired"]
    assert events[0].at == at(T0 + 5 * S)
    # A second tick, or a restart that re-ticks, does not fire again.
    assert tick(r, fired_state, T0 + 7 * S) == (fired_state, [])


def test_no_data_fires_on_the_timer_and_resolves_on_the_next_reading() -> None:
    r = rule({"kind": "no_data", "silence": "PT60S"})
    state, events = run(r, [(T0, 1.0)])
    assert events == []
    state, events = tick(r, state, T0 + 59 * S)
    assert events == []
    state, events = tick(r, state, T0 + 61 * S)
    assert kinds(events) == ["RuleFired"]
    assert events[0].at == at(T0 + 60 * S)
    assert tick(r, state, T0 + 120 * S) == (state, [])
    state, events = evaluate(r, state, T0 + 130 * S, 1.0)
    assert kinds(events) == ["RuleResolved"]


def test_trend_fires_before_the_threshold_is_crossed_with_the_predicted_time() -> None:
    r = rule(
        {
            "kind": "trend",
            "comparison": "above",
            "threshold": 100,
            "window": "PT10M",
            "horizon": "PT2H",
            "min_points": 5,
        }
    )
    # +0.5 per minute from 40: 100 is reached after 120 minutes.
    readings = [(T0 + m * 60 * S, 40 + 0.5 * m) for m in range(11)]
    _state, events = run(r, readings)
    [fired] = [e for e in events if isinstance(e, RuleFired)]
    assert fired.value < 100  # not crossed yet
    assert fired.predicted_crossing_at is not None
    expected_crossing = at(T0 + 120 * 60 * S)
    assert abs(fired.predicted_crossing_at - expected_crossing) < timedelta(seconds=1)
    # Fired as soon as the points spanned half the 10-minute window (5 points came earlier).
    assert fired.at == at(T0 + 5 * 60 * S)
    # A flat signal never fires.
    _, flat = run(r, [(T0 + m * 60 * S, 40.0) for m in range(30)])
    assert flat == []


def test_trend_waits_until_its_points_span_half_the_window() -> None:
    r = rule(
        {
            "kind": "trend",
            "comparison": "above",
            "threshold": 7.0,
            "window": "PT6S",
            "horizon": "PT30S",
            "min_points": 10,
        }
    )
    # A healthy pump's noise: ten readings in 0.9 s whose line climbs 0.15 mm/s per
    # second would "reach" 7.0 within the horizon. Not enough history to say so.
    noise = [2.0, 2.1, 1.95, 2.2, 2.05, 2.3, 2.15, 2.35, 2.25, 2.4]
    _, early = run(r, [(T0 + i * 100, v) for i, v in enumerate(noise)])
    assert early == []
    # A steady climb of 0.5 mm/s: not yet at 2.9 s of history, fired at exactly 3 s.
    climb = [(T0 + i * 100, 2.0 + 0.05 * i) for i in range(31)]
    _, before = run(r, climb[:30])
    assert before == []
    _, events = run(r, climb)
    [fired] = [e for e in events if isinstance(e, RuleFired)]
    assert fired.at == at(T0 + 3000)


def test_evidence_carries_the_readings_that_fired() -> None:
    r = rule(ABOVE_80)
    _, events = run(r, [(T0, 70), (T0 + S, 75), (T0 + 2 * S, 81)])
    fired = events[-1]
    assert isinstance(fired, RuleFired)
    assert fired.evidence == ((T0, 70), (T0 + S, 75), (T0 + 2 * S, 81))


@pytest.mark.parametrize(
    ("condition", "timing", "message"),
    [
        ({**ABOVE_80, "clear": 85}, {}, "must be at or below"),
        ({**BELOW_10, "clear": 5}, {}, "at or above"),
        ({"kind": "outside", "low": 20, "high": 10}, {}, "must be below high"),
        (ABOVE_80, {"hold_for": "-PT1S"}, "hold_for must not be negative"),
        (ABOVE_80, {"max_gap": "PT0S"}, "max_gap must be positive"),
        ({**MEAN_ABOVE_1, "window": "PT0S"}, {}, "window must be positive"),
        ({"kind": "no_data", "silence": "-PT5S"}, {}, "silence must be positive"),
        ({"kind": "median", "threshold": 1}, {}, "does not match any of the expected tags"),
    ],
)  # fmt: skip
def test_invalid_rules_are_refused_with_a_precise_message(
    condition: dict[str, Any], timing: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        rule(condition, **timing)


readings_strategy = st.lists(
    st.tuples(st.integers(min_value=0, max_value=600), st.floats(min_value=0, max_value=160)),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(readings=readings_strategy, hold=st.integers(min_value=0, max_value=20))
def test_at_most_one_firing_episode_is_open_at_a_time(
    readings: list[tuple[int, float]], hold: int
) -> None:
    r = rule({**ABOVE_80, "clear": 70}, hold_for=timedelta(seconds=hold))
    _, events = run(r, [(T0 + s * S, v) for s, v in readings])
    open_episodes = 0
    for event in events:
        if isinstance(event, RuleFired):
            open_episodes += 1
        elif isinstance(event, RuleResolved):
            open_episodes -= 1
        assert open_episodes in (0, 1)  # one open predictive work order per (rule, asset) at most


@settings(max_examples=200, deadline=None)
@given(readings=readings_strategy, data=st.data())
def test_replaying_with_duplicates_yields_the_same_alerts(
    readings: list[tuple[int, float]], data: st.DataObject
) -> None:
    r = rule({**ABOVE_80, "clear": 70}, hold_for="PT5S")
    ordered = sorted({(T0 + s * S, v) for s, v in readings if not math.isnan(v)})
    ordered = list({ts: (ts, v) for ts, v in ordered}.values())  # one value per timestamp
    duplicated = []
    for item in ordered:
        duplicated += [item] * data.draw(st.integers(min_value=1, max_value=3))
    _, once = run(r, ordered)
    _, with_duplicates = run(r, duplicated)
    assert once == with_duplicates
    assert all(not isinstance(e, RulePending) or e.value > 80 for e in once)


# --- regressions found by tests/unit/test_rule_properties.py ----------------------------


def test_a_late_tick_fires_a_hold_that_elapsed_before_the_gap_did() -> None:
    # Due at T0+5s, gap at T0+10s: a timer ticking every second fires at T0+5s, and so must
    # a tick that comes late (a restart, a backtest ticking at the next reading).
    r = rule(ABOVE_80, hold_for="PT5S", max_gap="PT10S")
    state, _ = run(r, [(T0, 81)])
    _, events = tick(r, state, T0 + 60 * S)
    assert kinds(events) == ["RuleFired"]
    assert events[0].at == at(T0 + 5 * S)
    # The other way round, the gap wins whenever the tick comes.
    slow = rule(ABOVE_80, hold_for="PT20S", max_gap="PT10S")
    state, _ = run(slow, [(T0, 81)])
    for now in (T0 + 11 * S, T0 + 60 * S):
        _, events = tick(slow, state, now)
        assert events == [RuleCancelled(at(T0 + 10 * S), "gap")]


def test_one_late_tick_takes_every_transition_that_fell_due() -> None:
    r = rule({"kind": "no_data", "silence": "PT10S"}, quiet_period="PT5S")
    state, _ = run(r, [(T0, 1.0)])
    state, events = tick(r, state, T0 + 10 * S)
    assert kinds(events) == ["RuleFired"]
    state, events = evaluate(r, state, T0 + 12 * S, 1.0)  # data again: the quiet period starts
    assert events == []
    # By T0+30s the quiet period ended (T0+17s) and the silence fired again (T0+22s).
    _, events = tick(r, state, T0 + 30 * S)
    assert events == [
        RuleResolved(at(T0 + 17 * S), 1),
        RuleFired(at(T0 + 22 * S), 2, 1.0, None, ((T0, 1.0), (T0 + 12 * S, 1.0))),
    ]


def test_a_pending_rule_still_fed_survives_a_restart() -> None:
    # Outcomes carry a pending key's newest reading time, so the persisted state holds it
    # and the first tick after a restart does not mistake the stale time for a gap.
    r = rule(ABOVE_80, hold_for="PT30S", max_gap="PT10S")
    engine: RuleEngine = RuleEngine([r])
    persisted: dict[StateKey, RuleState] = {}
    for second in range(0, 26, 5):
        outcomes = engine.apply([Reading("pump-1", "temperature_c", T0 + second * S, 90)], _none)
        persisted.update((o.key, o.state._replace(window=())) for o in outcomes)
    assert persisted[StateKey("r1", "pump-1", "temperature_c")].last_ts_ms == T0 + 25 * S
    restarted = RuleEngine([r], persisted)
    [fired] = [e for o in restarted.tick(T0 + 30 * S) for e in o.events]
    assert isinstance(fired, RuleFired)
    assert fired.at == at(T0 + 30 * S)


def _none(_asset_id: str) -> Asset | None:
    return None
