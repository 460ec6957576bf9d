"""Backtests: the live evaluator and alert decisions replayed over stored points."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from core.priority import Priority
from rules.alerting import AlertPolicy
from rules.backtest import BacktestAlert, BacktestWorkOrder, backtest
from rules.model import Rule

T0 = 1_795_330_800_000  # 2026-11-22T07:00:00Z in epoch ms
S = 1000
END = T0 + 24 * 3600 * S
POLICY = AlertPolicy(flap_window=timedelta(minutes=5))

ABOVE_80 = {"kind": "threshold", "comparison": "above", "threshold": 80}


def rule(condition: dict[str, Any], **fields: Any) -> Rule:
    return Rule.model_validate(
        {
            "id": "r1",
            "name": "test rule",
            "selector": {"metric": "temperature_c", "asset_type": "pump"},
            "condition": condition,
            **fields,
        }
    )


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def every(step_s: int, values: Sequence[float], start_ms: int = T0) -> list[tuple[int, float]]:
    return [(start_ms + i * step_s * S, v) for i, v in enumerate(values)]


def test_a_held_threshold_fires_once_when_the_hold_elapsed_between_readings() -> None:
    r = rule(ABOVE_80, hold_for="PT100S", severity="critical")
    # Bad from 60 s on; readings every 30 s, so the hold ends at 160 s, between two readings.
    points = every(30, [70, 70, 90, 91, 92, 93, 94, 95, 96, 97])
    result = backtest(r, {"pump-1": points}, start_ms=T0, end_ms=END, policy=POLICY)
    assert result.alerts == [
        BacktestAlert(
            asset_id="pump-1",
            metric="temperature_c",
            fired_at=at(T0 + 160 * S),
            episode=1,
            value=93,  # the newest reading the timer had seen
            threshold=80,
            predicted_crossing_at=None,
            resolved_at=None,
            fire_count=1,
            flapping=False,
        )
    ]
    assert result.work_orders == [
        BacktestWorkOrder("pump-1", at(T0 + 160 * S), alert_count=1, priority=Priority.HIGH)
    ]
    assert result.readings == 10


def test_hysteresis_keeps_a_noisy_signal_to_one_alert() -> None:
    noisy = [85.0] + [80 + (2 if i % 2 else -2) for i in range(100)] + [74.0]
    points = every(1, noisy)
    result = backtest(
        rule({**ABOVE_80, "clear": 75}), {"pump-1": points}, start_ms=T0, end_ms=END, policy=POLICY
    )
    [alert] = result.alerts
    assert (alert.fired_at, alert.fire_count, alert.flapping) == (at(T0), 1, False)
    assert alert.resolved_at == at(T0 + 101 * S)
    # The control: without hysteresis the same signal fires 51 times, folded as flapping.
    without = backtest(rule(ABOVE_80), {"pump-1": points}, start_ms=T0, end_ms=END, policy=POLICY)
    [flapping] = without.alerts
    assert (flapping.fire_count, flapping.flapping) == (51, True)


def test_re_fires_within_the_flap_window_fold_and_later_ones_open_a_new_alert() -> None:
    minute = 60
    # Fires at 0, clears at 1 min, re-fires at 3 min (flap), clears at 4, fires at 20 min.
    points = every(minute, [90, 70, 70, 90, 70] + [70] * 15 + [90])
    result = backtest(rule(ABOVE_80), {"pump-1": points}, start_ms=T0, end_ms=END, policy=POLICY)
    # As live: a folded alert keeps the episode that opened it and shows the latest firing.
    assert [
        (a.episode, a.fired_at, a.fire_count, a.flapping, a.resolved_at) for a in result.alerts
    ] == [
        (1, at(T0 + 3 * minute * S), 2, True, at(T0 + 4 * minute * S)),
        (3, at(T0 + 20 * minute * S), 1, False, None),
    ]
    # One order for the asset: nobody resolves it, so the second alert joins it.
    assert [(o.opened_at, o.alert_count) for o in result.work_orders] == [(at(T0), 2)]


def test_a_trend_rule_reports_the_predicted_crossing() -> None:
    trend = {
        "kind": "trend",
        "comparison": "above",
        "threshold": 100,
        "window": "PT10M",
        "horizon": "PT2H",
    }
    # +0.5 a minute from 40: 100 is reached after 120 minutes.
    points = every(60, [40 + 0.5 * m for m in range(11)])
    result = backtest(rule(trend), {"pump-1": points}, start_ms=T0, end_ms=END, policy=POLICY)
    [alert] = result.alerts
    # Five points arrive by minute 4, but the fit waits until they span half the window.
    assert alert.fired_at == at(T0 + 5 * 60 * S)
    assert alert.value < 100
    assert alert.predicted_crossing_at is not None
    assert abs(alert.predicted_crossing_at - at(T0 + 120 * 60 * S)) < timedelta(seconds=1)


def test_a_no_data_rule_fires_on_the_timer_between_readings_and_at_the_end() -> None:
    r = rule({"kind": "no_data", "silence": "PT60S"})
    points = [(T0, 1.0), (T0 + 10 * S, 1.0), (T0 + 20 * S, 1.0), (T0 + 200 * S, 1.0)]
    result = backtest(
        r,
        {"pump-1": points},
        start_ms=T0,
        end_ms=T0 + 400 * S,
        policy=AlertPolicy(flap_window=timedelta(0)),
    )
    assert [(a.fired_at, a.resolved_at) for a in result.alerts] == [
        (at(T0 + 80 * S), at(T0 + 200 * S)),  # the silence, noticed by a tick, ended by data
        (at(T0 + 260 * S), None),  # silent again until the end of the backtest
    ]


def test_each_asset_gets_its_own_single_work_order() -> None:
    hot_twice = every(60, [90, 70] + [70] * 30 + [95])
    result = backtest(
        rule(ABOVE_80, severity="info"),
        {"pump-1": hot_twice, "pump-2": every(60, [70, 85, 70]), "pump-3": every(60, [70] * 5)},
        start_ms=T0,
        end_ms=END,
        policy=POLICY,
    )
    assert [(a.asset_id, a.fired_at) for a in result.alerts] == [
        ("pump-1", at(T0)),
        ("pump-2", at(T0 + 60 * S)),
        ("pump-1", at(T0 + 32 * 60 * S)),
    ]
    assert result.work_orders == [
        BacktestWorkOrder("pump-1", at(T0), alert_count=2, priority=Priority.LOW),
        BacktestWorkOrder("pump-2", at(T0 + 60 * S), alert_count=1, priority=Priority.LOW),
    ]
    assert result.readings == 33 + 3 + 5


def test_a_rule_that_never_fires_gives_nothing() -> None:
    result = backtest(
        rule(ABOVE_80), {"pump-1": every(60, [70] * 50)}, start_ms=T0, end_ms=END, policy=POLICY
    )
    assert (result.alerts, result.work_orders, result.readings) == ([], [], 50)


def test_only_readings_in_start_to_end_count() -> None:
    points = every(60, [95, 70, 70, 95, 70, 95])  # hot at 0, 3 and 5 minutes
    result = backtest(
        rule(ABOVE_80),
        {"pump-1": points},
        start_ms=T0 + 60 * S,
        end_ms=T0 + 5 * 60 * S,  # exclusive
        policy=POLICY,
    )
    assert [a.fired_at for a in result.alerts] == [at(T0 + 3 * 60 * S)]
    assert result.readings == 4


def test_a_disabled_draft_can_be_backtested() -> None:
    result = backtest(
        rule(ABOVE_80, enabled=False),
        {"pump-1": every(60, [70, 90])},
        start_ms=T0,
        end_ms=END,
        policy=POLICY,
    )
    assert len(result.alerts) == 1
