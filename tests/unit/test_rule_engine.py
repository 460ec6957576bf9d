"""The rule engine: which rules a series matches, when it speaks, timers, warm-up and restarts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from core.assets import Asset
from core.telemetry import Reading
from rules.engine import (
    MIN_WARMUP_MS,
    KeyedOutcome,
    RuleEngine,
    RuleIndex,
    StateKey,
    selects,
)
from rules.evaluate import (
    Event,
    Point,
    RuleFired,
    RuleResolved,
    RuleState,
    Status,
    tick,
)
from rules.model import Rule, Selector

T0 = 1_795_330_800_000  # 2026-11-22T07:00:00Z in epoch ms
S = 1000
MINUTE = 60 * S
TEMP = "temperature_c"
VIB = "vibration_mm_s"

ABOVE_80 = {"kind": "threshold", "comparison": "above", "threshold": 80}
NO_DATA_60S = {"kind": "no_data", "silence": "PT60S"}


def rule(
    rule_id: str, condition: Mapping[str, Any], selector: Mapping[str, Any], **timing: Any
) -> Rule:
    return Rule.model_validate(
        {
            "id": rule_id,
            "name": f"rule {rule_id}",
            "selector": {"metric": TEMP, **selector},
            "condition": condition,
            **timing,
        }
    )


def rolling(aggregate: str, window: str, threshold: float = 50) -> dict[str, Any]:
    return {
        "kind": "rolling",
        "aggregate": aggregate,
        "comparison": "above",
        "threshold": threshold,
        "window": window,
    }


def trend(window: str) -> dict[str, Any]:
    return {
        "kind": "trend",
        "comparison": "above",
        "threshold": 100,
        "window": window,
        "horizon": "PT1H",
    }


def asset(asset_id: str, type_: str = "pump", site: str = "north", **tags: str) -> Asset:
    return Asset(id=asset_id, name=asset_id, type=type_, site=site, tags=tags)


FLEET = {
    a.id: a
    for a in (
        asset("pump-1", "pump", "north", zone="a", line="1"),
        asset("pump-2", "pump", "south", zone="a", line="2"),
        asset("fan-1", "fan", "north", zone="b"),
    )
}


def lookup(asset_id: str) -> Asset | None:
    return FLEET.get(asset_id)


def series(
    asset_id: str, start_ms: int, values: Iterable[float], step_ms: int = 10 * S
) -> list[Reading]:
    return [Reading(asset_id, TEMP, start_ms + i * step_ms, v) for i, v in enumerate(values)]


def events_of(outcomes: Iterable[KeyedOutcome]) -> list[tuple[StateKey, Event]]:
    return [(o.key, e) for o in outcomes for e in o.events]


def kinds(outcomes: Iterable[KeyedOutcome]) -> list[str]:
    return [type(e).__name__ for _, e in events_of(outcomes)]


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


# --- selectors and the index -------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "asset_id", "expected"),
    [
        ({"asset_id": "pump-1"}, "pump-1", True),
        ({"asset_id": "pump-1"}, "pump-2", False),
        ({"asset_type": "pump"}, "pump-2", True),
        ({"asset_type": "pump"}, "fan-1", False),
        ({"site": "north"}, "fan-1", True),
        ({"site": "north"}, "pump-2", False),
        ({"tags": {"zone": "a"}}, "pump-2", True),
        ({"tags": {"zone": "a", "line": "1"}}, "pump-1", True),  # extra asset tags are fine
        ({"tags": {"zone": "a", "line": "1"}}, "pump-2", False),  # every tag must match
        ({"tags": {"zone": "b", "line": "1"}}, "fan-1", False),  # a missing tag is no match
        ({"asset_type": "pump", "site": "north"}, "pump-1", True),
        ({"asset_type": "pump", "site": "north"}, "pump-2", False),  # type AND site
        ({"asset_type": "pump", "site": "north"}, "fan-1", False),
        ({"asset_type": "pump", "tags": {"line": "2"}}, "pump-2", True),
        ({"asset_id": "pump-1", "asset_type": "fan"}, "pump-1", False),
        ({}, "fan-1", True),
        # An unknown asset: only an asset-id or a match-all selector can pick it.
        ({"asset_id": "ghost-1"}, "ghost-1", True),
        ({}, "ghost-1", True),
        ({"asset_type": "pump"}, "ghost-1", False),
        ({"site": "north"}, "ghost-1", False),
        ({"tags": {"zone": "a"}}, "ghost-1", False),
        ({"asset_id": "ghost-1", "site": "north"}, "ghost-1", False),
    ],
)  # fmt: skip
def test_selects(selector: dict[str, Any], asset_id: str, expected: bool) -> None:
    assert selects(Selector(metric=TEMP, **selector), asset_id, lookup(asset_id)) is expected


INDEXED = [
    rule("by-id", ABOVE_80, {"asset_id": "pump-1"}),
    rule("by-type", ABOVE_80, {"asset_type": "pump"}),
    rule("by-site", ABOVE_80, {"site": "north"}),
    rule("by-tags", ABOVE_80, {"tags": {"zone": "a"}}),
    rule("by-type-site", ABOVE_80, {"asset_type": "pump", "site": "south"}),
    rule("all", ABOVE_80, {}),
    rule("vibration", ABOVE_80, {"asset_type": "pump", "metric": VIB}),
    rule("disabled-id", ABOVE_80, {"asset_id": "pump-1"}, enabled=False),
    rule("disabled-all", ABOVE_80, {}, enabled=False),
]


@pytest.mark.parametrize(
    ("asset_id", "metric", "expected"),
    [
        ("pump-1", TEMP, {"by-id", "by-type", "by-site", "by-tags", "all"}),
        ("pump-2", TEMP, {"by-type", "by-tags", "by-type-site", "all"}),
        ("fan-1", TEMP, {"by-site", "all"}),
        ("ghost-1", TEMP, {"all"}),
        ("pump-1", VIB, {"vibration"}),
        ("fan-1", VIB, set()),
        ("pump-1", "pressure_bar", set()),
    ],
)
def test_index_finds_exactly_the_enabled_rules_that_select_the_series(
    asset_id: str, metric: str, expected: set[str]
) -> None:
    index = RuleIndex(INDEXED)
    found = index.match(asset_id, metric, lookup(asset_id))
    assert {r.id for r in found} == expected
    assert len(found) == len(expected)  # no rule found twice
    # The index agrees with checking every enabled rule one by one.
    brute = {
        r.id
        for r in INDEXED
        if r.enabled
        and r.selector.metric == metric
        and selects(r.selector, asset_id, lookup(asset_id))
    }
    assert brute == expected
    assert index.match(asset_id, metric, lookup(asset_id)) == found  # cached, same answer


def test_forget_asset_rematches_after_its_attributes_change() -> None:
    by_type = rule("pumps", ABOVE_80, {"asset_type": "pump"})
    by_site = rule("south", ABOVE_80, {"site": "south"})
    engine = RuleEngine([by_type, by_site])
    fleet: dict[str, Asset] = {}
    # First seen before it was registered: attributes unknown, nothing matches.
    assert engine.apply(series("new-1", T0, [90]), fleet.get) == []
    fleet["new-1"] = asset("new-1", "pump", "north")
    engine.forget_asset("new-1")
    assert [r.id for r in engine.matching("new-1", TEMP, fleet["new-1"])] == ["pumps"]
    fleet["new-1"] = asset("new-1", "fan", "south")
    engine.forget_asset("new-1")
    outcomes = engine.apply(series("new-1", T0 + 10 * S, [90]), fleet.get)
    assert [(o.key, kinds([o])) for o in outcomes] == [
        (StateKey("south", "new-1", TEMP), ["RuleFired"])
    ]


def test_forget_asset_leaves_other_assets_cached() -> None:
    engine = RuleEngine([rule("pumps", ABOVE_80, {"asset_type": "pump"})])
    fleet = dict(FLEET)
    assert len(engine.matching("pump-1", TEMP, fleet["pump-1"])) == 1
    assert len(engine.matching("pump-2", TEMP, fleet["pump-2"])) == 1
    fleet["pump-1"] = asset("pump-1", "fan")
    fleet["pump-2"] = asset("pump-2", "fan")
    engine.forget_asset("pump-1")
    assert engine.matching("pump-1", TEMP, fleet["pump-1"]) == ()
    # Not forgotten: still matched as it was, which is why callers must forget on change.
    assert len(engine.matching("pump-2", TEMP, fleet["pump-2"])) == 1


# --- apply ---------------------------------------------------------------------------------


def test_a_steady_healthy_stream_produces_no_outcomes() -> None:
    engine = RuleEngine(
        [
            rule("hot", {**ABOVE_80, "clear": 75}, {"asset_type": "pump"}, hold_for="PT30S"),
            rule("mean", rolling("mean", "PT5M", 80), {"asset_id": "pump-1"}),
            rule("silent", NO_DATA_60S, {"asset_id": "pump-1"}),
        ]
    )
    readings = series("pump-1", T0, [70 + (i % 3) for i in range(100)])
    assert engine.apply(readings, lookup) == []
    # The keys are still kept: the stream advanced them, silently.
    assert {key.rule_id: s.last_ts_ms for key, s in engine.states().items()} == {
        "hot": readings[-1].ts_ms,
        "mean": readings[-1].ts_ms,
        "silent": readings[-1].ts_ms,
    }


def test_outcomes_come_only_with_events_or_a_durable_change() -> None:
    r = rule("hot", {**ABOVE_80, "clear": 75}, {"asset_id": "pump-1"}, quiet_period="PT30S")
    engine = RuleEngine([r])
    key = StateKey("hot", "pump-1", TEMP)
    # 70 quiet, 85 fires, 90 stays firing, 74 starts the quiet period, 86 relapses,
    # 74 starts it again, 73 is still inside it, 72 completes it.
    values = [70, 85, 90, 74, 86, 74, 73, 72, 72]
    steps = [engine.apply([reading], lookup) for reading in series("pump-1", T0, values, 20 * S)]
    assert [len(o) for o in steps] == [0, 1, 0, 1, 1, 1, 0, 1, 0]
    assert [kinds(o) for o in steps if o] == [["RuleFired"], [], [], [], ["RuleResolved"]]
    # The silent durable changes are the quiet period starting, being reset, starting again.
    clear_since = [o[0].state.clear_since_ms for o in steps[3:6]]
    assert clear_since == [T0 + 60 * S, None, T0 + 100 * S]
    assert all(o.key == key and o.rule is r for step in steps for o in step)
    assert steps[-2][0].events == (RuleResolved(at(T0 + 130 * S), 1),)


def test_events_carry_the_key_of_their_series() -> None:
    engine = RuleEngine([rule("hot", ABOVE_80, {"asset_type": "pump"}, hold_for="PT10S")])
    readings = [
        Reading("pump-1", TEMP, T0, 85),
        Reading("pump-2", TEMP, T0, 70),
        Reading("pump-2", TEMP, T0 + 10 * S, 90),
        Reading("pump-1", TEMP, T0 + 10 * S, 86),
        Reading("fan-1", TEMP, T0 + 10 * S, 99),  # not a pump
    ]
    got = [
        (key.asset_id, type(e).__name__, e.at)
        for key, e in events_of(engine.apply(readings, lookup))
    ]
    assert got == [
        ("pump-1", "RulePending", at(T0)),
        ("pump-2", "RulePending", at(T0 + 10 * S)),
        ("pump-1", "RuleFired", at(T0 + 10 * S)),
    ]
    assert engine.state(StateKey("hot", "fan-1", TEMP)) == RuleState()


def test_several_rules_on_one_series_each_keep_their_own_state() -> None:
    engine = RuleEngine(
        [
            rule("now", ABOVE_80, {"asset_id": "pump-1"}),
            rule("held", ABOVE_80, {"asset_type": "pump"}, hold_for="PT20S"),
            rule("mean", rolling("mean", "PT1M", 82), {"site": "north"}),
        ]
    )
    outcomes = engine.apply(series("pump-1", T0, [70, 70, 90, 95, 99]), lookup)
    assert [(key.rule_id, type(e).__name__, e.at) for key, e in events_of(outcomes)] == [
        ("now", "RuleFired", at(T0 + 20 * S)),
        ("held", "RulePending", at(T0 + 20 * S)),
        ("held", "RuleFired", at(T0 + 40 * S)),
        ("mean", "RuleFired", at(T0 + 40 * S)),  # 81.25 at 30 s, then 84.8
    ]
    statuses = {key.rule_id: s.status for key, s in engine.states().items()}
    assert statuses == {"now": Status.FIRING, "held": Status.FIRING, "mean": Status.FIRING}


@pytest.mark.parametrize("before", [0, 5, 18, 19, 40])
def test_evidence_is_the_last_twenty_readings_of_the_series(before: int) -> None:
    engine = RuleEngine([rule("hot", ABOVE_80, {"asset_id": "pump-1"})])
    readings = series("pump-1", T0, [70.0 + i / 100 for i in range(before)] + [90.0])
    [(_, fired)] = events_of(engine.apply(readings, lookup))
    assert isinstance(fired, RuleFired)
    assert fired.evidence == tuple((r.ts_ms, r.value) for r in readings[-20:])


def test_series_without_rules_produce_nothing_and_keep_no_state() -> None:
    engine = RuleEngine([rule("pumps", ABOVE_80, {"asset_type": "pump"})])
    readings = [
        *series("fan-1", T0, [99] * 5),
        *series("ghost-1", T0, [99] * 5),
        Reading("pump-1", VIB, T0, 99),
    ]
    assert engine.apply(readings, lookup) == []
    assert engine.states() == {}
    assert engine.tick(T0 + 60 * MINUTE) == []


# --- tick ----------------------------------------------------------------------------------


def test_tick_fires_a_for_period_at_its_expiry_without_a_further_reading() -> None:
    engine = RuleEngine([rule("hot", ABOVE_80, {"asset_id": "pump-1"}, hold_for="PT30S")])
    key = StateKey("hot", "pump-1", TEMP)
    pending = engine.apply(series("pump-1", T0, [85, 86]), lookup)
    assert kinds(pending) == ["RulePending"]
    assert engine.tick(T0 + 29 * S) == []
    fired = engine.tick(T0 + 45 * S)
    assert [(o.key, o.state.status) for o in fired] == [(key, Status.FIRING)]
    [(_, event)] = events_of(fired)
    assert isinstance(event, RuleFired)
    assert (event.at, event.episode, event.value) == (at(T0 + 30 * S), 1, 86)
    assert engine.tick(T0 + 60 * S) == []  # fires once
    assert engine.apply(series("pump-1", T0 + 40 * S, [87]), lookup) == []


def test_tick_fires_no_data_after_silence_of_a_tracked_series() -> None:
    engine = RuleEngine([rule("silent", NO_DATA_60S, {"asset_type": "pump"})])
    key = StateKey("silent", "pump-2", TEMP)
    assert engine.tick(T0 + 10 * MINUTE) == []  # nothing tracked yet: nothing to say
    engine.track(key, T0)
    engine.track(key, T0 - 30 * S)  # an older seed does not move it back
    assert engine.tick(T0 + 59 * S) == []
    fired = engine.tick(T0 + 61 * S)
    assert [(o.key, e.at) for o in fired for e in o.events] == [(key, at(T0 + 60 * S))]
    assert engine.tick(T0 + 10 * MINUTE) == []
    back = engine.apply(series("pump-2", T0 + 11 * MINUTE, [50]), lookup)
    assert [(o.key, kinds([o])) for o in back] == [(key, ["RuleResolved"])]
    # Watched again from the new reading: silence fires a second episode.
    again = engine.tick(T0 + 12 * MINUTE + 1 * S)
    assert [(e.at, e.episode) for _, e in events_of(again) if isinstance(e, RuleFired)] == [
        (at(T0 + 12 * MINUTE), 2)
    ]


def test_track_ignores_unknown_rules() -> None:
    engine = RuleEngine([rule("silent", NO_DATA_60S, {})])
    engine.track(StateKey("gone", "pump-1", TEMP), T0)
    assert engine.states() == {}
    assert engine.tick(T0 + MINUTE * 10) == []


def test_tick_resolves_after_the_quiet_period() -> None:
    engine = RuleEngine([rule("hot", ABOVE_80, {"asset_id": "pump-1"}, quiet_period="PT2M")])
    engine.apply(series("pump-1", T0, [90, 70]), lookup)
    assert engine.tick(T0 + 2 * MINUTE + 9 * S) == []
    resolved = engine.tick(T0 + 2 * MINUTE + 10 * S)
    assert [(o.state.status, o.events) for o in resolved] == [
        (Status.RESOLVED, (RuleResolved(at(T0 + 2 * MINUTE + 10 * S), 1),))
    ]
    assert engine.tick(T0 + 10 * MINUTE) == []


def test_tick_hands_only_keys_that_wait_on_time_to_the_evaluator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The evaluator's `tick` is the engine's collaborator: what it is handed is observable.
    handed: list[tuple[str, Status]] = []

    def spy(r: Rule, state: RuleState, now_ms: int) -> tuple[RuleState, list[Event]]:
        handed.append((r.id, state.status))
        return tick(r, state, now_ms)

    monkeypatch.setattr("rules.engine.tick", spy)
    engine = RuleEngine(
        [
            rule("hot", ABOVE_80, {"asset_type": "pump"}, hold_for="PT1M", quiet_period="PT1M"),
            rule("now", ABOVE_80, {"site": "north"}),
            rule("silent", NO_DATA_60S, {"asset_id": "pump-2"}),
        ]
    )
    fleet = {**FLEET, **{f"idle-{i}": asset(f"idle-{i}", "pump", "north") for i in range(200)}}
    engine.apply([Reading(f"idle-{i}", TEMP, T0, 20) for i in range(200)], fleet.get)
    engine.apply(
        [
            Reading("pump-1", TEMP, T0, 90),  # hot: pending; now: firing
            Reading("pump-2", TEMP, T0, 20),  # hot: inactive; silent: watched
            Reading("fan-1", TEMP, T0, 90),  # now: firing
        ],
        fleet.get,
    )
    assert len(engine.states()) == 2 * 200 + 5
    assert engine.tick(T0 + 30 * S) == []
    assert sorted(handed) == [("hot", Status.PENDING), ("silent", Status.INACTIVE)]
    # Once fired, `hot` waits on a reading, not on time; `silent` fires and waits too.
    assert kinds(engine.tick(T0 + 90 * S)) == ["RuleFired", "RuleFired"]
    handed.clear()
    assert engine.tick(T0 + 10 * MINUTE) == []
    assert handed == []
    # A clear reading starts the quiet period: the key waits on time again.
    engine.apply([Reading("pump-1", TEMP, T0 + 11 * MINUTE, 20)], fleet.get)
    assert kinds(engine.tick(T0 + 12 * MINUTE)) == ["RuleResolved"]
    assert handed == [("hot", Status.FIRING)]


def test_disabled_and_deleted_rules_do_not_tick() -> None:
    hot = rule("hot", ABOVE_80, {"asset_id": "pump-1"}, hold_for="PT1M")
    other = rule("other", ABOVE_80, {"asset_id": "pump-2"}, hold_for="PT1M")
    engine = RuleEngine([hot, other])
    engine.apply([Reading("pump-1", TEMP, T0, 90), Reading("pump-2", TEMP, T0, 90)], lookup)
    engine.set_rules([hot.model_copy(update={"enabled": False})])
    assert engine.tick(T0 + 2 * MINUTE) == []
    assert engine.state(StateKey("hot", "pump-1", TEMP)).status is Status.PENDING
    assert StateKey("other", "pump-2", TEMP) not in engine.states()
    engine.set_rules([hot])  # enabled again: its timer runs again
    assert kinds(engine.tick(T0 + 2 * MINUTE)) == ["RuleFired"]


# --- warm-up, cold series and rule changes -------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "span_ms"),
    [
        ([ABOVE_80], MIN_WARMUP_MS),
        ([NO_DATA_60S], MIN_WARMUP_MS),
        ([rolling("mean", "PT5M")], MIN_WARMUP_MS),
        ([rolling("max", "PT15M")], 15 * MINUTE),
        ([trend("PT30M")], 30 * MINUTE),
        ([ABOVE_80, rolling("max", "PT15M"), trend("PT30M")], 30 * MINUTE),
    ],
)
def test_cold_series_covers_the_longest_window_up_to_the_first_reading(
    conditions: list[dict[str, Any]], span_ms: int
) -> None:
    engine = RuleEngine(
        [rule(f"r{i}", c, {"asset_type": "pump"}) for i, c in enumerate(conditions)]
    )
    batch = [
        Reading("pump-1", TEMP, T0 + 5 * S, 1),
        Reading("pump-1", TEMP, T0, 1),  # out of order: the earliest one counts
        Reading("pump-2", TEMP, T0 + 7 * S, 1),
        Reading("fan-1", TEMP, T0, 1),  # no rule
        Reading("pump-1", VIB, T0, 1),  # no rule
    ]
    assert engine.cold_series(batch, lookup) == {
        ("pump-1", TEMP): (T0 - span_ms, T0),
        ("pump-2", TEMP): (T0 + 7 * S - span_ms, T0 + 7 * S),
    }


def test_a_warmed_or_evaluated_series_is_not_cold_again() -> None:
    engine = RuleEngine([rule("mean", rolling("mean", "PT5M"), {"asset_type": "pump"})])
    batch = series("pump-1", T0, [40]) + series("pump-2", T0, [40])
    assert set(engine.cold_series(batch, lookup)) == {("pump-1", TEMP), ("pump-2", TEMP)}
    engine.warm("pump-1", TEMP, [], lookup("pump-1"))  # nothing stored yet: still warm
    engine.apply(batch[1:], lookup)
    later = series("pump-1", T0 + 10 * S, [40]) + series("pump-2", T0 + 10 * S, [40])
    assert engine.cold_series(later, lookup) == {}
    assert engine.states().keys() == {StateKey("mean", "pump-2", TEMP)}


def test_a_new_rule_makes_its_series_cold_for_its_own_window_only() -> None:
    short = rule("short", ABOVE_80, {"asset_id": "pump-1"})
    engine = RuleEngine([short])
    engine.warm("pump-1", TEMP, [(T0 - S, 50)], lookup("pump-1"))
    batch = series("pump-1", T0, [50])
    assert engine.cold_series(batch, lookup) == {}
    engine.set_rules([short, rule("long", rolling("max", "PT20M"), {"asset_type": "pump"})])
    assert engine.cold_series(batch, lookup) == {("pump-1", TEMP): (T0 - 20 * MINUTE, T0)}


def test_warm_lets_a_rolling_rule_evaluate_over_history_without_events() -> None:
    mean = rule("mean", rolling("mean", "PT5M"), {"asset_id": "pump-1"})
    history: list[Point] = [(T0 - i * 30 * S, 40.0) for i in range(9, 0, -1)]  # 4.5 min of 40
    # Cold, a single 100 is the whole window and fires.
    cold = RuleEngine([mean])
    assert kinds(cold.apply(series("pump-1", T0, [100]), lookup)) == ["RuleFired"]
    # Warm, it is one point in ten: (9 * 40 + 100) / 10 = 46, below 50.
    warm = RuleEngine([mean])
    assert warm.cold_series(series("pump-1", T0, [100]), lookup) == {
        ("pump-1", TEMP): (T0 - MIN_WARMUP_MS, T0)
    }
    warm.warm("pump-1", TEMP, history, lookup("pump-1"))
    key = StateKey("mean", "pump-1", TEMP)
    assert warm.state(key) == RuleState(last_ts_ms=T0 - 30 * S, window=tuple(history))
    assert warm.apply(series("pump-1", T0, [100]), lookup) == []
    assert warm.state(key).window[-1] == (T0, 100)


def test_warm_over_bad_history_changes_no_status_and_fires_nothing() -> None:
    mean = rule("mean", rolling("mean", "PT5M"), {"asset_id": "pump-1"}, hold_for="PT1M")
    engine = RuleEngine([mean])
    history: list[Point] = [(T0 - i * 30 * S, 60.0) for i in range(9, 0, -1)]
    engine.warm("pump-1", TEMP, history, lookup("pump-1"))
    key = StateKey("mean", "pump-1", TEMP)
    assert engine.state(key).status is Status.INACTIVE
    assert engine.tick(T0 + 10 * MINUTE) == []  # inactive, no timer
    # The history still counts: 40 is healthy alone, but the mean is (9 * 60 + 40) / 10 = 58.
    outcomes = engine.apply(series("pump-1", T0, [40]), lookup)
    assert [(o.key, kinds([o])) for o in outcomes] == [(key, ["RulePending"])]


def test_warming_a_key_that_already_saw_readings_changes_nothing() -> None:
    engine = RuleEngine([rule("mean", rolling("mean", "PT5M"), {"asset_id": "pump-1"})])
    engine.apply(series("pump-1", T0, [45, 47]), lookup)
    key = StateKey("mean", "pump-1", TEMP)
    before = engine.state(key)
    # Warming a key that already saw readings is a no-op: it is warm.
    engine.warm("pump-1", TEMP, [(T0 - 60 * S, 1.0), (T0, 99.0)], lookup("pump-1"))
    assert engine.state(key) == before


def test_set_rules_drops_deleted_rules_and_keeps_the_rest() -> None:
    keep = rule("keep", ABOVE_80, {"asset_type": "pump"}, hold_for="PT1M")
    drop = rule("drop", ABOVE_80, {"asset_type": "pump"}, hold_for="PT1M")
    engine = RuleEngine([keep, drop])
    engine.apply(series("pump-1", T0, [90, 91]), lookup)
    kept = engine.state(StateKey("keep", "pump-1", TEMP))
    assert kept.status is Status.PENDING
    engine.set_rules([keep])
    assert set(engine.states()) == {StateKey("keep", "pump-1", TEMP)}
    assert engine.state(StateKey("keep", "pump-1", TEMP)) is kept
    assert engine.rules.keys() == {"keep"}
    fired = engine.tick(T0 + 2 * MINUTE)
    assert [o.key.rule_id for o in fired] == ["keep"]
    # The deleted rule comes back as new: no stale state, no stale episode.
    engine.set_rules([keep, drop])
    back = engine.apply(series("pump-1", T0 + 2 * MINUTE, [92]), lookup)
    assert [(o.key.rule_id, kinds([o])) for o in back] == [("drop", ["RulePending"])]


# --- restarts ------------------------------------------------------------------------------


class Deployment:
    """An engine fed like the ingest side feeds it: store, warm cold series, apply, persist."""

    def __init__(self, rules_: Sequence[Rule], stored: list[Reading] | None = None) -> None:
        self.rules = list(rules_)
        self.stored: list[Reading] = [] if stored is None else stored
        self.persisted: dict[StateKey, RuleState] = {}
        self.engine = RuleEngine(self.rules)
        self.events: list[tuple[StateKey, Event]] = []

    def ingest(self, batch: Sequence[Reading], *, warm: bool = True) -> None:
        self.stored.extend(batch)
        cold = self.engine.cold_series(batch, lookup) if warm else {}
        for (asset_id, metric), (from_ms, to_ms) in cold.items():
            points = sorted(
                (r.ts_ms, r.value)
                for r in self.stored
                if (r.asset_id, r.metric) == (asset_id, metric) and from_ms <= r.ts_ms < to_ms
            )
            self.engine.warm(asset_id, metric, points, lookup(asset_id))
        self.record(self.engine.apply(batch, lookup))

    def tick(self, now_ms: int) -> None:
        self.record(self.engine.tick(now_ms))

    def record(self, outcomes: Sequence[KeyedOutcome]) -> None:
        for outcome in outcomes:
            # What an AlertStore keeps: the durable part; windows come back from telemetry.
            self.persisted[outcome.key] = outcome.state._replace(window=())
            self.events += [(outcome.key, e) for e in outcome.events]

    def restart(self) -> Deployment:
        after = Deployment(self.rules, self.stored)
        after.persisted = dict(self.persisted)
        after.engine = RuleEngine(self.rules, after.persisted)
        return after


HELD = rule("held", ABOVE_80, {"asset_id": "pump-1"}, hold_for="PT1M")
# 70 until T0+20s, then 85: pending from T0+30s, due at T0+90s.
RISING = series("pump-1", T0, [70, 70, 70] + [85] * 12)


def in_batches(readings: Sequence[Reading], size: int) -> list[list[Reading]]:
    return [list(readings[i : i + size]) for i in range(0, len(readings), size)]


@pytest.mark.parametrize("crash_after", [4, 5, 6, 7, 8])
def test_a_restart_mid_for_fires_once_at_pending_since_plus_hold_for(crash_after: int) -> None:
    before = Deployment([HELD])
    before.ingest(RISING[:crash_after])
    assert before.persisted[StateKey("held", "pump-1", TEMP)].status is Status.PENDING
    after = before.restart()
    for batch in in_batches(RISING[crash_after:], 2):
        after.ingest(batch)
    fired = [e for _, e in after.events if isinstance(e, RuleFired)]
    assert [(e.at, e.episode, e.value) for e in fired] == [(at(T0 + 90 * S), 1, 85)]
    # The evidence is what an uninterrupted engine would have shown.
    whole = Deployment([HELD])
    whole.ingest(RISING)
    assert [e for _, e in whole.events if isinstance(e, RuleFired)] == fired


def test_a_restart_mid_for_fires_on_the_timer_with_the_warmed_evidence() -> None:
    before = Deployment([HELD])
    before.ingest(RISING[:6])  # up to T0+50s, pending since T0+30s
    after = before.restart()
    after.ingest(RISING[6:7])  # T0+60s: warms the series
    after.tick(T0 + 89 * S)
    assert after.events == []
    after.tick(T0 + 95 * S)
    [(key, fired)] = after.events
    assert isinstance(fired, RuleFired)
    assert (key, fired.at, fired.value) == (StateKey("held", "pump-1", TEMP), at(T0 + 90 * S), 85)
    assert [p[0] for p in fired.evidence] == [r.ts_ms for r in RISING[:7]]
    after.ingest(RISING[7:])
    after.tick(T0 + 10 * MINUTE)
    assert len(after.events) == 1


@pytest.mark.parametrize("replay_from", [0, 3, 6, 9, 10])
def test_replaying_readings_seen_before_a_restart_fires_nothing_twice(replay_from: int) -> None:
    before = Deployment([HELD])
    before.ingest(RISING[:11])  # fired at T0+90s, persisted as firing
    assert [type(e).__name__ for _, e in before.events] == ["RulePending", "RuleFired"]
    after = before.restart()
    for batch in in_batches(RISING[replay_from:], 3):
        after.ingest(batch)
    assert after.events == []
    assert after.engine.state(StateKey("held", "pump-1", TEMP)).episode == 1


# A longer story for the restart sweep: a held threshold with hysteresis and a quiet
# period, a rolling mean and a rate of change on the same series.
STORY_RULES = [
    rule(
        "held",
        {**ABOVE_80, "clear": 75},
        {"asset_id": "pump-1"},
        hold_for="PT30S",
        quiet_period="PT20S",
    ),
    rule("mean", rolling("mean", "PT2M", 78), {"asset_type": "pump"}),
    rule(
        "rate",
        {"kind": "rate_of_change", "comparison": "above", "threshold": 0.2, "window": "PT1M"},
        {"site": "north"},
    ),
]
STORY = series(
    "pump-1",
    T0,
    [70, 72, 79, 84, 78, 86, 83, 88, 81, 77, 74, 76, 73, 72, 71, 82, 85, 84, 86, 74, 72, 70, 70],
)


def story_events(deployment: Deployment) -> list[tuple[str, str, datetime]]:
    return [(key.rule_id, type(e).__name__, e.at) for key, e in deployment.events]


def test_the_restart_sweep_story_has_something_to_lose() -> None:
    whole = Deployment(STORY_RULES)
    whole.ingest(STORY)
    counts = {
        name: [k for k, *_ in story_events(whole)].count(name) for name in ("held", "mean", "rate")
    }
    assert all(n >= 2 for n in counts.values()), counts
    kinds_seen = {kind for _, kind, _ in story_events(whole)}
    assert kinds_seen == {"RulePending", "RuleFired", "RuleCancelled", "RuleResolved"}


@pytest.mark.parametrize("crash_after", range(1, len(STORY)))
def test_a_restart_anywhere_with_any_replay_is_invisible(crash_after: int) -> None:
    whole = Deployment(STORY_RULES)
    for batch in in_batches(STORY, 2):
        whole.ingest(batch)
    for replay_from in range(crash_after + 1):  # the broker redelivers from here
        before = Deployment(STORY_RULES)
        for batch in in_batches(STORY[:crash_after], 2):
            before.ingest(batch)
        after = before.restart()
        for batch in in_batches(STORY[replay_from:], 2):
            after.ingest(batch)
        # Nothing lost, nothing twice, values, evidence and windows as if nothing happened.
        assert before.events + after.events == whole.events, f"replay from {replay_from}"
        assert after.engine.states() == whole.engine.states(), f"replay from {replay_from}"


def test_without_warm_up_a_restart_would_lose_the_window() -> None:
    # The control for the sweep: skip the warm-up and the rolling mean answers differently.
    before = Deployment(STORY_RULES)
    before.ingest(STORY[:10])
    after = before.restart()
    for batch in in_batches(STORY[10:], 2):
        after.ingest(batch, warm=False)
    whole = Deployment(STORY_RULES)
    whole.ingest(STORY)
    assert before.events + after.events != whole.events


def test_windows_are_rebuilt_identically_after_a_restart() -> None:
    whole = Deployment(STORY_RULES)
    whole.ingest(STORY)
    before = Deployment(STORY_RULES)
    before.ingest(STORY[:12])
    after = before.restart()
    after.ingest(STORY[12:])
    assert dict(after.engine.states()) == dict(whole.engine.states())


@pytest.mark.parametrize(
    ("persisted_ms", "end_ms"),
    [
        (None, T0),  # nothing persisted: up to the batch
        (T0 - 40 * S, T0),  # persisted behind the batch: up to the batch
        (T0, T0 + 1),  # the batch starts with a replay of the last evaluated reading
        (T0 + 30 * S, T0 + 30 * S + 1),  # a replay of readings up to T0+30s
    ],
)
def test_a_cold_series_includes_what_its_persisted_states_had_evaluated(
    persisted_ms: int | None, end_ms: int
) -> None:
    mean = rule("mean", rolling("mean", "PT20M"), {"asset_id": "pump-1"})
    states = (
        {}
        if persisted_ms is None
        else {StateKey("mean", "pump-1", TEMP): RuleState(last_ts_ms=persisted_ms)}
    )
    engine = RuleEngine([mean], states)
    batch = series("pump-1", T0, [50] * 6)
    assert engine.cold_series(batch, lookup) == {("pump-1", TEMP): (end_ms - 20 * MINUTE, end_ms)}


def test_a_no_data_seed_does_not_hide_a_batch_stored_but_never_evaluated() -> None:
    now = rule("now", ABOVE_80, {"asset_id": "pump-1"})
    silent = rule("silent", NO_DATA_60S, {"asset_id": "pump-1"})
    before = Deployment([now, silent])
    before.ingest(RISING[:3])
    # The next batch was stored, then the process died before its outcomes were recorded.
    before.stored.extend(RISING[3:6])
    after = before.restart()
    # On start, silent series are seeded from the store's newest reading (T0+50s).
    after.engine.track(StateKey("silent", "pump-1", TEMP), RISING[5].ts_ms)
    after.ingest(RISING[3:8])  # redelivered, then new
    assert [(k.rule_id, type(e).__name__, e.at) for k, e in after.events] == [
        ("now", "RuleFired", at(T0 + 30 * S))
    ]
