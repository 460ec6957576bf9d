"""Settling a run of readings at once must decide exactly what evaluating them one by one does.

`settle` is the engine's fast path: it skips the per-reading evaluation of a resting key
when no reading of a run can change it. These tests hold it to the pure `evaluate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.telemetry import Reading
from rules.engine import RuleEngine, StateKey
from rules.evaluate import Event, Point, RuleState, Status, evaluate, run_of, settle, tick
from rules.model import Rule

T0 = 1_795_330_800_000  # 2026-11-22T07:00:00Z in epoch ms
S = 1000
PROPERTIES = settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def rule(condition: dict[str, Any], **timing: Any) -> Rule:
    return Rule.model_validate(
        {
            "id": "r1",
            "name": "test rule",
            "selector": {"metric": "temperature_c"},
            "condition": condition,
            **timing,
        }
    )


CONDITIONS: dict[str, dict[str, Any]] = {
    "threshold above": {"kind": "threshold", "comparison": "above", "threshold": 80},
    "threshold below": {"kind": "threshold", "comparison": "below", "threshold": 20},
    "band": {"kind": "outside", "low": 20, "high": 80},
    "no data": {"kind": "no_data", "silence": "PT1M"},
    "rolling mean": {
        "kind": "rolling",
        "aggregate": "mean",
        "comparison": "above",
        "threshold": 80,
        "window": "PT1M",
    },
    "rolling max below": {
        "kind": "rolling",
        "aggregate": "max",
        "comparison": "below",
        "threshold": 20,
        "window": "PT1M",
    },
    "rate of change": {
        "kind": "rate_of_change",
        "comparison": "above",
        "threshold": 0.5,
        "window": "PT1M",
    },
    "trend": {
        "kind": "trend",
        "comparison": "above",
        "threshold": 80,
        # The edge runs below span 30 s: exactly half this window, the least a fit needs.
        "window": "PT1M",
        "horizon": "PT5M",
        "min_points": 3,
    },
}


def split(items: Sequence[Reading], cuts: Iterable[int]) -> list[list[Reading]]:
    bounds = sorted({0, len(items), *(c for c in cuts if 0 < c < len(items))})
    return [list(items[a:b]) for a, b in pairwise(bounds)]


def evaluated(r: Rule, state: RuleState, points: Sequence[Point]) -> tuple[RuleState, list[Event]]:
    events: list[Event] = []
    for ts, value in points:
        state, more = evaluate(r, state, ts, value)
        events += more
    return state, events


def calm_series(start_ms: int, count: int, level: float = 50.0) -> list[Point]:
    return [(start_ms + i * 10 * S, level + (i % 3) * 0.5) for i in range(count)]


@pytest.mark.parametrize("name", CONDITIONS)
def test_a_calm_run_settles_at_once_as_if_evaluated_one_by_one(name: str) -> None:
    r = rule(CONDITIONS[name])
    state, _ = evaluated(r, RuleState(), calm_series(T0, 20))
    points = tuple(calm_series(T0 + 200 * S, 10))
    run = run_of(points)
    assert run is not None
    settled = settle(r, state, run)
    assert settled == evaluated(r, state, points)[0]
    assert settled is not None
    assert settled.last_ts_ms == points[-1][0]


@pytest.mark.parametrize("name", [n for n in CONDITIONS if n != "no data"])
def test_a_run_that_may_change_the_state_is_left_to_evaluate(name: str) -> None:
    r = rule(CONDITIONS[name])
    state, _ = evaluated(r, RuleState(), calm_series(T0, 20))
    # A minute far past every threshold (far below, for the "below" ones).
    extreme = 0.0 if "below" in name else 200.0
    jump = [(T0 + (260 + 10 * i) * S, extreme) for i in range(7)]
    points = (*calm_series(T0 + 200 * S, 5), *jump)
    run = run_of(points)
    assert run is not None
    assert settle(r, state, run) is None
    _, events = evaluated(r, state, points)
    assert events, "the jump must matter to the rule, or this test proves nothing"


@pytest.mark.parametrize("offset", [-0.5, 0.0, 0.25, 0.5])
@pytest.mark.parametrize("name", [n for n in CONDITIONS if n not in ("no data", "rate of change")])
def test_at_the_edge_a_run_settles_only_when_evaluating_it_changes_nothing(
    name: str, offset: float
) -> None:
    r = rule(CONDITIONS[name])
    edge = near(r)
    bad_side = -1 if "below" in name else 1
    state, _ = evaluated(r, RuleState(), calm_series(T0, 20, level=edge - bad_side * 10))
    # After a gap longer than the windows, the run is all a window holds: flat at the edge.
    points = tuple((T0 + (400 + 10 * i) * S, edge + bad_side * offset) for i in range(4))
    run = run_of(points)
    assert run is not None
    settled = settle(r, state, run)
    after, events = evaluated(r, state, points)
    if offset > 0:
        assert events  # past the edge, every condition fires
    elif offset < 0:
        assert not events
    if settled is not None:
        assert not events
        assert settled == after


def test_runs_out_of_order_or_not_newer_are_not_settled() -> None:
    r = rule(CONDITIONS["threshold above"])
    state, _ = evaluated(r, RuleState(), calm_series(T0, 5))
    assert run_of(((T0 + 100 * S, 1.0), (T0 + 90 * S, 1.0))) is None
    assert run_of(((T0 + 100 * S, 1.0), (T0 + 100 * S, 2.0))) is None
    stale = run_of(((T0 + 40 * S, 50.0),))  # the last reading seen, again
    assert stale is not None
    assert settle(r, state, stale) is None


@pytest.mark.parametrize(("hold", "status"), [("PT1M", Status.PENDING), ("PT0S", Status.FIRING)])
def test_a_pending_or_firing_state_is_not_settled(hold: str, status: Status) -> None:
    r = rule(CONDITIONS["threshold above"], hold_for=hold)
    state, _ = evaluated(r, RuleState(), [(T0, 90.0)])
    assert state.status is status
    run = run_of(((T0 + S, 50.0),))  # calm, but it cancels or starts clearing
    assert run is not None
    assert settle(r, state, run) is None


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    condition = dict(CONDITIONS[draw(st.sampled_from(sorted(CONDITIONS)))])
    if "window" in condition:
        condition["window"] = timedelta(seconds=draw(st.integers(min_value=5, max_value=300)))
    if "threshold" in condition:
        condition["threshold"] = draw(st.integers(min_value=30, max_value=90))
    if condition["kind"] == "rate_of_change":
        condition["threshold"] = draw(st.sampled_from([0.01, 0.1, 1.0]))
    return rule(condition, lateness=timedelta(seconds=draw(st.integers(0, 60))))


@st.composite
def streams(draw: st.DrawFn, near: float) -> tuple[list[Point], list[int]]:
    """Draw readings, newer each time, around `near`, drifting across it, cut into runs.

    Values on a half-unit grid hit integer thresholds exactly now and then: the edges of
    "calm" are where a fast path would go wrong.
    """
    level = near + draw(st.integers(min_value=-6, max_value=2))
    drift = draw(st.sampled_from([0.0, 0.0, 0.02, -0.02, 0.1, -0.1, 1.0]))
    steps = draw(
        st.lists(
            st.tuples(
                st.integers(min_value=1, max_value=30),  # seconds to the next reading
                st.integers(min_value=-3, max_value=3),  # noise, in half units
            ),
            min_size=1,
            max_size=80,
        )
    )
    points, ts = [], T0
    for seconds, noise in steps:
        ts += seconds * S
        level += drift * seconds
        points.append((ts, round(2 * level) / 2 + noise / 2))
    cuts = draw(st.lists(st.integers(min_value=1, max_value=len(points)), max_size=20))
    return points, sorted(set(cuts))


def near(r: Rule) -> float:
    """Return the value the rule's condition turns on."""
    condition = r.condition.model_dump()
    return float(condition.get("threshold", condition.get("high", 50)))


@PROPERTIES
@given(r=rules(), data=st.data())
def test_settling_runs_whenever_it_can_decides_as_evaluating_every_reading(
    r: Rule, data: st.DataObject
) -> None:
    points, cuts = data.draw(streams(near(r)))
    one_by_one, runs = RuleState(), RuleState()
    start = 0
    for end in [*cuts, len(points)]:
        if end <= start:
            continue
        chunk = tuple(points[start:end])
        start = end
        one_by_one, expected_events = evaluated(r, one_by_one, chunk)
        run = run_of(chunk)
        assert run is not None
        settled = settle(r, runs, run)
        if settled is None:
            runs, events = evaluated(r, runs, chunk)
            assert events == expected_events
        else:
            runs = settled
            assert expected_events == []
        assert runs == one_by_one


@st.composite
def rule_sets(draw: st.DrawFn) -> list[Rule]:
    """Draw a few rules of any kind on one metric, with distinct ids and timings."""
    drawn = draw(st.lists(rules(), min_size=1, max_size=5))
    return [
        Rule.model_validate(
            {
                **r.model_dump(),
                "id": f"r{index}",
                "hold_for": timedelta(seconds=draw(st.sampled_from([0, 0, 20]))),
                "quiet_period": timedelta(seconds=draw(st.sampled_from([0, 15]))),
            }
        )
        for index, r in enumerate(drawn)
    ]


@st.composite
def interleaved(draw: st.DrawFn, near: float) -> list[Reading]:
    """Draw readings of two assets: runs of one asset, interleaving, late ones and repeats."""
    readings: list[Reading] = []
    clock = {"a": T0, "b": T0}
    for asset_id, count in draw(
        st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 6)), max_size=15)
    ):
        points, _ = draw(streams(near))
        offset = clock[asset_id] - T0
        for ts, value in points[:count]:
            readings.append(Reading(asset_id, "temperature_c", ts + offset, value))
        clock[asset_id] = readings[-1].ts_ms if points[:count] else clock[asset_id]
        repeat: bool = draw(st.booleans())
        if readings and repeat:
            again = draw(st.sampled_from(readings))  # a repeat, or late for its series
            readings.append(again._replace(value=again.value + draw(st.sampled_from([0, 1]))))
    return readings


@settings(PROPERTIES, max_examples=400)
@given(rule_set=rule_sets(), data=st.data())
def test_the_engine_decides_for_each_key_what_evaluating_it_alone_would(
    rule_set: list[Rule], data: st.DataObject
) -> None:
    readings = data.draw(interleaved(near(rule_set[0])))
    cuts = data.draw(st.lists(st.integers(0, len(readings)), max_size=6))
    engine = RuleEngine(rule_set)
    alone: dict[StateKey, RuleState] = {}
    got: dict[StateKey, list[Event]] = {}
    expected: dict[StateKey, list[Event]] = {}
    now = T0
    for batch in split(readings, cuts):
        for outcome in engine.apply(batch, lambda _: None):
            got.setdefault(outcome.key, []).extend(outcome.events)
        for asset_id, metric, ts_ms, value in batch:
            for r in rule_set:
                key = StateKey(r.id, asset_id, metric)
                alone[key], events = evaluate(r, alone.get(key, RuleState()), ts_ms, value)
                expected.setdefault(key, []).extend(events)
        now = max([now, *(r.ts_ms for r in batch)]) + data.draw(st.sampled_from([0, 5 * S]))
        for outcome in engine.tick(now):
            got.setdefault(outcome.key, []).extend(outcome.events)
        for key in list(alone):
            r = next(r for r in rule_set if r.id == key.rule_id)
            alone[key], events = tick(r, alone[key], now)
            expected.setdefault(key, []).extend(events)
    assert {k: v for k, v in got.items() if v} == {k: v for k, v in expected.items() if v}
    for key, state in alone.items():
        assert engine.state(key) == state, key
