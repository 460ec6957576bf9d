"""Properties of the engine and alert decisions over duplicates, late data, restarts, batches."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.assets import Asset
from core.telemetry import Reading
from core.workorders import OPEN_STATUSES, WorkOrder, WorkOrderKind, WorkOrderStatus
from rules.alerting import (
    OPEN_ALERT_STATUSES,
    Alert,
    AlertAction,
    AlertPolicy,
    AlertStatus,
    OrderAction,
    decide,
    priority_for,
    resolves,
)
from rules.backtest import BacktestAlert, BacktestWorkOrder, backtest
from rules.engine import KeyedOutcome, RuleEngine, StateKey
from rules.evaluate import Event, RuleFired, RuleResolved, RuleState, to_datetime
from rules.model import Rule

T0 = 1_795_330_800_000  # 2026-11-22T07:00:00Z in epoch ms
S = 1000
METRIC = "temperature_c"
ASSETS = ("a", "b", "c")
PROPERTIES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def no_asset(_asset_id: str) -> Asset | None:
    return None


# --- strategies ------------------------------------------------------------------------


@st.composite
def threshold_rules(draw: st.DrawFn, longest_s: int = 20) -> Rule:
    """Draw a threshold rule above 80 with random hysteresis and timing."""
    seconds = st.integers(min_value=0, max_value=longest_s)
    return Rule.model_validate(
        {
            "id": "r1",
            "name": "hot",
            "selector": {"metric": METRIC},
            "condition": {
                "kind": "threshold",
                "comparison": "above",
                "threshold": 80,
                "clear": draw(st.none() | st.integers(min_value=72, max_value=80)),
            },
            "hold_for": timedelta(seconds=draw(seconds)),
            "quiet_period": timedelta(seconds=draw(seconds)),
            "max_gap": timedelta(seconds=draw(st.integers(min_value=5, max_value=60))),
            "lateness": timedelta(seconds=draw(st.integers(min_value=0, max_value=40))),
        }
    )


@st.composite
def rolling_rules(draw: st.DrawFn) -> Rule:
    """Draw a rolling-mean rule, whose state depends on a whole window of readings."""
    rule = draw(threshold_rules())
    condition = {
        "kind": "rolling",
        "aggregate": "mean",
        "comparison": "above",
        "threshold": 80,
        "window": timedelta(seconds=draw(st.integers(min_value=1, max_value=60))),
    }
    return Rule.model_validate({**rule.model_dump(), "condition": condition})


@st.composite
def no_data_rules(draw: st.DrawFn) -> Rule:
    """Draw a no-data rule, which only the timer fires."""
    rule = draw(threshold_rules())
    condition = {
        "kind": "no_data",
        "silence": timedelta(seconds=draw(st.integers(min_value=1, max_value=60))),
    }
    return Rule.model_validate({**rule.model_dump(), "condition": condition})


any_rules = threshold_rules(longest_s=90) | rolling_rules() | no_data_rules()

policies = st.builds(
    AlertPolicy,
    flap_window=st.integers(min_value=0, max_value=120).map(lambda s: timedelta(seconds=s)),
    reopen_window=st.integers(min_value=0, max_value=300).map(lambda s: timedelta(seconds=s)),
)


@st.composite
def arrivals(draw: st.DrawFn, *, late: bool = True) -> list[Reading]:
    """Draw readings in arrival order: mostly advancing, some at the same time, some late."""
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(ASSETS),
                st.integers(min_value=-45 if late else 0, max_value=20),  # seconds; < 0 is late
                st.integers(min_value=70, max_value=90),
            ),
            max_size=60,
        )
    )
    clock, readings = T0, []
    for asset_id, delta, value in steps:
        if delta >= 0:
            clock += delta * S
        readings.append(Reading(asset_id, METRIC, clock + min(delta, 0) * S, float(value)))
    return readings


def consistent(readings: Iterable[Reading]) -> list[Reading]:
    """Give every (asset, time) one value, so that repeats are exact duplicates."""
    first: dict[tuple[str, int], float] = {}
    return [r._replace(value=first.setdefault((r.asset_id, r.ts_ms), r.value)) for r in readings]


def split(items: Sequence[Reading], cuts: Iterable[int]) -> list[list[Reading]]:
    """Split a sequence at the given positions (out-of-range and repeated cuts ignored)."""
    bounds = sorted({0, len(items), *(c for c in cuts if 0 < c < len(items))})
    return [list(items[a:b]) for a, b in pairwise(bounds)]


# --- live-style recording, kept in memory ----------------------------------------------


@dataclass
class Ledger:
    """Alerts and predictive work orders recorded the way live recording does, via `decide`."""

    rule: Rule
    policy: AlertPolicy
    alerts: list[Alert] = field(default_factory=list)
    orders: list[WorkOrder] = field(default_factory=list)
    maintenance: set[str] = field(default_factory=set)
    fired: list[tuple[StateKey, datetime, int]] = field(default_factory=list)
    opened_at: list[datetime] = field(default_factory=list)  # by alert id

    def record(self, outcomes: Iterable[KeyedOutcome]) -> None:
        for outcome in outcomes:
            for event in outcome.events:
                if isinstance(event, RuleFired):
                    self.fired.append((outcome.key, event.at, event.episode))
                    self._fired(outcome.key, event)
                elif isinstance(event, RuleResolved):
                    self._resolved(outcome.key, event)
            self.check()

    def latest_alert(self, key: StateKey) -> Alert | None:
        mine = [a for a in self.alerts if (a.rule_id, a.asset_id, a.metric) == key]
        return mine[-1] if mine else None

    def open_order(self, asset_id: str) -> WorkOrder | None:
        open_ = [o for o in self.orders if o.asset_id == asset_id and o.status in OPEN_STATUSES]
        return open_[-1] if open_ else None

    def last_resolved_order(self, asset_id: str) -> WorkOrder | None:
        done = [
            o
            for o in self.orders
            if o.asset_id == asset_id and o.status is WorkOrderStatus.RESOLVED
        ]
        return max(done, key=lambda o: o.resolved_at or o.created_at) if done else None

    def _put_alert(self, alert: Alert) -> None:
        self.alerts[alert.id - 1] = alert

    def _put_order(self, order: WorkOrder) -> None:
        self.orders[order.id - 1] = order

    def _fired(self, key: StateKey, fired: RuleFired) -> None:
        previous = self.latest_alert(key)
        open_order = self.open_order(key.asset_id)
        last_resolved = self.last_resolved_order(key.asset_id)
        decision = decide(
            fired,
            previous_alert=previous,
            open_order=open_order,
            last_resolved_order=last_resolved,
            under_maintenance=key.asset_id in self.maintenance,
            policy=self.policy,
        )
        if decision.alert is AlertAction.SKIP:
            return
        if decision.alert is AlertAction.OPEN or previous is None:
            alert = Alert(
                id=len(self.alerts) + 1,
                rule_id=key.rule_id,
                asset_id=key.asset_id,
                metric=key.metric,
                severity=self.rule.severity,
                status=AlertStatus.FIRING,
                episode=fired.episode,
                last_episode=fired.episode,
                fired_at=fired.at,
                value=fired.value,
                threshold=fired.threshold,
                predicted_crossing_at=fired.predicted_crossing_at,
                suppressed=decision.suppressed,
                recorded_at=fired.at,
            )
            self.alerts.append(alert)
            self.opened_at.append(fired.at)
        else:
            # As live recording folds: the alert fires again, wanting a new acknowledgement.
            alert = previous.model_copy(
                update={
                    "status": AlertStatus.FIRING,
                    "last_episode": fired.episode,
                    "fire_count": previous.fire_count + 1,
                    "flapping": previous.flapping or decision.flapping,
                    "suppressed": decision.suppressed,
                    "fired_at": fired.at,
                    "value": fired.value,
                    "threshold": fired.threshold,
                    "predicted_crossing_at": fired.predicted_crossing_at,
                    "acknowledged_at": None,
                    "resolved_at": None,
                    "resolved_by": None,
                }
            )
            self._put_alert(alert)
        if decision.order is OrderAction.CREATE:
            self.orders.append(
                WorkOrder(
                    id=len(self.orders) + 1,
                    kind=WorkOrderKind.PREDICTIVE,
                    status=WorkOrderStatus.REQUESTED,
                    priority=priority_for(self.rule.severity),
                    asset_id=key.asset_id,
                    title=self.rule.name,
                    description="",
                    rule_id=key.rule_id,
                    alert_ids=[alert.id],
                    created_at=fired.at,
                    updated_at=fired.at,
                )
            )
        elif decision.order is OrderAction.APPEND:
            assert open_order is not None
            self._put_order(self._linked(open_order, alert.id, fired.at))
        elif decision.order is OrderAction.REOPEN:
            assert last_resolved is not None
            linked = self._linked(last_resolved, alert.id, fired.at)
            self._put_order(
                linked.model_copy(
                    update={
                        "status": WorkOrderStatus.REOPENED,
                        "resolved_at": None,
                        "repeat_count": linked.repeat_count + 1,
                    }
                )
            )

    @staticmethod
    def _linked(order: WorkOrder, alert_id: int, at: datetime) -> WorkOrder:
        ids = order.alert_ids if alert_id in order.alert_ids else [*order.alert_ids, alert_id]
        return order.model_copy(update={"alert_ids": ids, "updated_at": at})

    def _resolved(self, key: StateKey, resolved: RuleResolved) -> None:
        alert = self.latest_alert(key)
        if alert is not None and resolves(alert, resolved):
            self._put_alert(
                alert.model_copy(
                    update={"status": AlertStatus.RESOLVED, "resolved_at": resolved.at}
                )
            )

    # People, at moments hypothesis chooses.

    def resolve_order(self, asset_id: str, now_ms: int) -> None:
        order = self.open_order(asset_id)
        if order is not None:
            at = to_datetime(now_ms)
            self._put_order(
                order.model_copy(
                    update={"status": WorkOrderStatus.RESOLVED, "resolved_at": at, "updated_at": at}
                )
            )

    def start_order(self, asset_id: str) -> None:
        order = self.open_order(asset_id)
        if order is not None and order.status is not WorkOrderStatus.IN_PROGRESS:
            self._put_order(order.model_copy(update={"status": WorkOrderStatus.IN_PROGRESS}))

    def resolve_alert(self, asset_id: str, now_ms: int) -> None:
        alert = self.latest_alert(StateKey(self.rule.id, asset_id, METRIC))
        if alert is not None and alert.status in OPEN_ALERT_STATUSES:
            self._put_alert(
                alert.model_copy(
                    update={
                        "status": AlertStatus.RESOLVED,
                        "resolved_at": to_datetime(now_ms),
                        "resolved_by": "tech",
                    }
                )
            )

    def check(self) -> None:
        """At most one open predictive order per (rule, asset) and one open alert per key."""
        open_orders: dict[tuple[str | None, str], int] = defaultdict(int)
        for order in self.orders:
            if order.status in OPEN_STATUSES:
                open_orders[order.rule_id, order.asset_id] += 1
        assert all(n <= 1 for n in open_orders.values()), self.orders
        open_alerts: dict[tuple[str, str, str], int] = defaultdict(int)
        for alert in self.alerts:
            if alert.status in OPEN_ALERT_STATUSES:
                open_alerts[alert.rule_id, alert.asset_id, alert.metric] += 1
        assert all(n <= 1 for n in open_alerts.values()), self.alerts

    def as_backtest(self) -> tuple[list[BacktestAlert], list[BacktestWorkOrder]]:
        alerts = [
            BacktestAlert(
                a.asset_id,
                a.metric,
                a.fired_at,
                a.episode,
                a.value,
                a.threshold,
                a.predicted_crossing_at,
                a.resolved_at,
                a.fire_count,
                a.flapping,
            )
            for a in self.alerts
        ]
        orders = [
            BacktestWorkOrder(o.asset_id, o.created_at, len(o.alert_ids), o.priority)
            for o in self.orders
        ]
        opened = sorted(range(len(alerts)), key=lambda i: (self.opened_at[i], alerts[i].asset_id))
        return (
            [alerts[i] for i in opened],
            sorted(orders, key=lambda o: (o.opened_at, o.asset_id)),
        )


def by_key(events: Iterable[tuple[StateKey, Event]]) -> dict[StateKey, list[Event]]:
    """Group events per key: one tick hands out different keys' events in no set order."""
    grouped: dict[StateKey, list[Event]] = defaultdict(list)
    for key, event in events:
        grouped[key].append(event)
    return dict(grouped)


def episodes_alternate(ledger_events: Iterable[tuple[StateKey, Event]]) -> None:
    """Check each key fires episode n+1 only after resolving episode n."""
    open_episode: dict[StateKey, int | None] = {}
    last_episode: dict[StateKey, int] = defaultdict(int)
    for key, event in ledger_events:
        if isinstance(event, RuleFired):
            assert open_episode.get(key) is None, (key, event)
            assert event.episode == last_episode[key] + 1, (key, event)
            open_episode[key] = last_episode[key] = event.episode
        elif isinstance(event, RuleResolved):
            assert open_episode.get(key) == event.episode, (key, event)
            open_episode[key] = None


# --- 1. one open order per (rule, asset), one open alert per key -----------------------

Action = tuple[Literal["resolve_order", "start_order", "resolve_alert", "maintenance"], str]
actions = st.tuples(
    st.sampled_from(["resolve_order", "start_order", "resolve_alert", "maintenance"]),
    st.sampled_from(ASSETS),
)


@PROPERTIES
@given(
    rule=threshold_rules(),
    policy=policies,
    readings=arrivals(),
    people=st.lists(st.tuples(st.integers(min_value=0, max_value=60), actions), max_size=25),
)
def test_never_more_than_one_open_order_per_asset_or_open_alert_per_key(
    rule: Rule,
    policy: AlertPolicy,
    readings: list[Reading],
    people: list[tuple[int, Action]],
) -> None:
    engine = RuleEngine([rule])
    ledger = Ledger(rule, policy)
    when: dict[int, list[Action]] = defaultdict(list)
    for position, action in people:
        when[position].append(action)
    events: list[tuple[StateKey, Event]] = []
    now = T0
    for position, reading in enumerate(readings):
        for kind, asset_id in when.get(position, ()):
            if kind == "resolve_order":
                ledger.resolve_order(asset_id, now)
            elif kind == "start_order":
                ledger.start_order(asset_id)
            elif kind == "resolve_alert":
                ledger.resolve_alert(asset_id, now)
            else:
                ledger.maintenance ^= {asset_id}
            ledger.check()
        now = max(now, reading.ts_ms)
        for outcomes in (engine.tick(now), engine.apply([reading], no_asset)):
            events += [(o.key, e) for o in outcomes for e in o.events]
            ledger.record(outcomes)
    ledger.record(engine.tick(now + 3600 * S))
    episodes_alternate(events)


# --- 2. duplicates and restarts change nothing -----------------------------------------


def run_live(
    rule: Rule,
    policy: AlertPolicy,
    batches: Sequence[Sequence[Reading]],
    *,
    crash_at: int | None = None,
    recorded_before_crash: bool = False,
    tick_after_restart: bool = False,
) -> Ledger:
    """Drive the engine as ingest does: store, warm, apply, record, tick after each batch.

    With `crash_at`, the process dies while handling that batch (after or before recording
    it), restarts from the persisted states (no windows) and gets the batch redelivered.
    """
    engine = RuleEngine([rule])
    ledger = Ledger(rule, policy)
    store: dict[tuple[str, int], float] = {}
    persisted: dict[StateKey, RuleState] = {}

    def record(outcomes: Sequence[KeyedOutcome]) -> None:
        persisted.update((o.key, o.state) for o in outcomes)
        ledger.record(outcomes)

    now, index, crashed = T0, 0, False
    while index < len(batches):
        batch = batches[index]
        store.update(((r.asset_id, r.ts_ms), r.value) for r in batch)
        for (asset_id, metric), (from_ms, to_ms) in engine.cold_series(batch, no_asset).items():
            points = sorted(
                (ts, v) for (a, ts), v in store.items() if a == asset_id and from_ms <= ts < to_ms
            )
            engine.warm(asset_id, metric, points, None)
        outcomes = engine.apply(batch, no_asset)
        if index == crash_at and not crashed:
            crashed = True
            if recorded_before_crash:
                record(outcomes)
            engine = RuleEngine([rule], {k: s._replace(window=()) for k, s in persisted.items()})
            if tick_after_restart:
                # The timer starts before the broker redelivers; it ticks where it left off.
                record(engine.tick(now))
            continue  # the batch was not acknowledged: the broker delivers it again
        record(outcomes)
        now = max(now, *(r.ts_ms for r in batch))
        record(engine.tick(now))
        index += 1
    record(engine.tick(now + 3600 * S))
    return ledger


def first_firings(ledger: Ledger) -> list[tuple[StateKey, datetime, int]]:
    """Return each (key, episode) firing once, checking that replays fired at the same time."""
    seen: dict[tuple[StateKey, int], datetime] = {}
    for key, at, episode in ledger.fired:
        assert seen.setdefault((key, episode), at) == at, (key, episode, at)
    return [(key, at, episode) for (key, episode), at in seen.items()]


@PROPERTIES
@given(
    rule=threshold_rules() | rolling_rules(),
    policy=policies,
    readings=arrivals().map(consistent),
    data=st.data(),
)
def test_duplicated_readings_fire_the_same_events_and_backtest(
    rule: Rule, policy: AlertPolicy, readings: list[Reading], data: st.DataObject
) -> None:
    duplicated: list[Reading] = []
    later: dict[int, list[Reading]] = defaultdict(list)
    for position, reading in enumerate(readings):
        duplicated += [reading, *later.pop(position, [])]
        copies = data.draw(st.sampled_from(["none", "now", "later", "both"]))
        if copies in ("now", "both"):
            duplicated.append(reading)
        if copies in ("later", "both"):
            later[position + data.draw(st.integers(min_value=1, max_value=5))].append(reading)
    duplicated += [r for position in sorted(later) for r in later[position]]
    once = run_live(rule, policy, [[r] for r in readings])
    twice = run_live(rule, policy, [[r] for r in duplicated])
    assert sorted(once.fired) == sorted(twice.fired)
    assert once.as_backtest() == twice.as_backtest()

    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in sorted(readings, key=lambda r: r.ts_ms):
        series[r.asset_id].append((r.ts_ms, r.value))
    doubled = {asset_id: [p for p in points for p in (p, p)] for asset_id, points in series.items()}
    single = backtest(rule, series, start_ms=T0 - 3600 * S, end_ms=T0 + 3600 * S, policy=policy)
    double = backtest(rule, doubled, start_ms=T0 - 3600 * S, end_ms=T0 + 3600 * S, policy=policy)
    assert (double.alerts, double.work_orders) == (single.alerts, single.work_orders)


@PROPERTIES
@given(
    # Holds longer than max_gap too: a pending rule must survive a restart.
    rule=threshold_rules(longest_s=90),
    policy=policies,
    # In order (repeats aside): a late reading first seen after a restart is not covered.
    readings=arrivals(late=False).map(consistent),
    cuts=st.lists(st.integers(min_value=1, max_value=59), max_size=8),
    data=st.data(),
)
def test_a_restart_from_persisted_states_fires_the_same_events(
    rule: Rule,
    policy: AlertPolicy,
    readings: list[Reading],
    cuts: list[int],
    data: st.DataObject,
) -> None:
    batches = split(readings, cuts)
    crash_at = data.draw(st.integers(min_value=0, max_value=max(len(batches) - 1, 0)))
    baseline = run_live(rule, policy, batches)
    restarted = run_live(
        rule,
        policy,
        batches,
        crash_at=crash_at,
        recorded_before_crash=data.draw(st.booleans()),
        tick_after_restart=data.draw(st.booleans()),
    )
    assert sorted(first_firings(restarted)) == sorted(first_firings(baseline))
    without_values = [replace(a, value=0.0) for a in baseline.as_backtest()[0]]
    assert [replace(a, value=0.0) for a in restarted.as_backtest()[0]] == without_values
    assert restarted.as_backtest()[1] == baseline.as_backtest()[1]


# --- 3. batches are an implementation detail -------------------------------------------


@PROPERTIES
@given(
    rule=threshold_rules() | rolling_rules(),
    readings=arrivals(),
    cuts=st.lists(st.integers(min_value=1, max_value=59), max_size=10),
    ticks=st.lists(st.integers(min_value=1, max_value=59), max_size=10),
)
def test_any_batch_split_gives_the_same_events_as_one_pass(
    rule: Rule, readings: list[Reading], cuts: list[int], ticks: list[int]
) -> None:
    def run(batches: list[list[Reading]]) -> list[tuple[StateKey, Event]]:
        engine, events, now = RuleEngine([rule]), [], T0
        for position, batch in zip(positions(batches), batches, strict=True):
            if position in ticks:
                events += [(o.key, e) for o in engine.tick(now) for e in o.events]
            events += [(o.key, e) for o in engine.apply(batch, no_asset) for e in o.events]
            now = max([now, *(r.ts_ms for r in batch)])
        return events

    # The timer ticks at the same moments in both runs; only the grouping differs.
    one_pass = run(split(readings, ticks))
    assert by_key(run(split(readings, [*ticks, *cuts]))) == by_key(one_pass)


def positions(batches: Sequence[Sequence[Reading]]) -> list[int]:
    """Return where in the whole sequence each batch starts."""
    starts, at = [], 0
    for batch in batches:
        starts.append(at)
        at += len(batch)
    return starts


@PROPERTIES
@given(
    rule=threshold_rules() | rolling_rules(),
    policy=policies,
    readings=arrivals(),
)
def test_the_backtest_equals_live_evaluation_ticking_before_each_reading(
    rule: Rule, policy: AlertPolicy, readings: list[Reading]
) -> None:
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in sorted(consistent(readings), key=lambda r: r.ts_ms):
        if not series[r.asset_id] or series[r.asset_id][-1][0] != r.ts_ms:
            series[r.asset_id].append((r.ts_ms, r.value))
    in_order = sorted(
        (Reading(a, METRIC, ts, v) for a, points in series.items() for ts, v in points),
        key=lambda r: (r.ts_ms, r.asset_id),
    )
    end = T0 + 3600 * S
    # Live, with the timer (which ticks often) running before each reading, recorded by a
    # ledger written apart from the backtest's.
    engine, ledger = RuleEngine([rule]), Ledger(rule, policy)
    for reading in in_order:
        ledger.record(engine.tick(reading.ts_ms))
        ledger.record(engine.apply([reading], no_asset))
    ledger.record(engine.tick(end))
    result = backtest(rule, series, start_ms=T0 - 3600 * S, end_ms=end, policy=policy)
    assert (result.alerts, result.work_orders) == ledger.as_backtest()
    assert result.readings == len(in_order)


@PROPERTIES
@given(rule=any_rules, readings=arrivals(late=False))
def test_ticking_before_each_reading_decides_what_a_timer_ticking_every_second_does(
    rule: Rule, readings: list[Reading]
) -> None:
    # The backtest's premise: timers need no tick between readings, only before each one.
    def run(dense: bool) -> list[tuple[StateKey, Event]]:
        engine, events, ticked = RuleEngine([rule]), [], T0 - 60 * S
        for reading in [*readings, None]:
            now = ticked + 120 * S if reading is None else max(ticked, reading.ts_ms)
            for at in range(ticked + S, now + 1, S) if dense else [now]:
                events += [(o.key, e) for o in engine.tick(at) for e in o.events]
            ticked = now
            if reading is not None:
                events += [(o.key, e) for o in engine.apply([reading], no_asset) for e in o.events]
        return events

    assert by_key(run(dense=False)) == by_key(run(dense=True))
