"""Backtests: what a rule would have fired, and opened, over a stretch of stored history.

A backtest runs the live code path: a fresh `RuleEngine` fed the readings in time order,
its timer ticked before each reading (the live timer ticks every few seconds), and the
same `decide` live recording applies, over alerts and work orders kept in memory.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter

from core.assets import Asset
from core.priority import Priority
from core.telemetry import Reading
from core.workorders import WorkOrder, WorkOrderKind, WorkOrderStatus
from rules.alerting import (
    Alert,
    AlertAction,
    AlertPolicy,
    AlertStatus,
    OrderAction,
    decide,
    folded,
    priority_for,
    resolves,
    work_order_text,
)
from rules.engine import KeyedOutcome, RuleEngine, StateKey
from rules.evaluate import RuleFired, RuleResolved
from rules.model import Rule, Selector


@dataclass(frozen=True, slots=True)
class BacktestAlert:
    """An alert the rule would have opened on one asset, and how it stood at the end."""

    asset_id: str
    metric: str
    # As on a live alert: the latest firing folded in sets the time, value and prediction,
    # while `episode` stays the rule episode that opened the alert.
    fired_at: datetime
    episode: int
    value: float
    threshold: float | None
    predicted_crossing_at: datetime | None
    resolved_at: datetime | None  # None: still firing at the end of the backtest
    fire_count: int  # firings folded into this alert, the first one included
    flapping: bool


@dataclass(frozen=True, slots=True)
class BacktestWorkOrder:
    """The predictive work order the rule would have opened on one asset."""

    asset_id: str
    opened_at: datetime
    alert_count: int  # distinct alerts linked to the order; a flapping alert counts once
    priority: Priority


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """The alerts and work orders a rule would have produced, in the order they opened."""

    alerts: list[BacktestAlert]
    work_orders: list[BacktestWorkOrder]
    readings: int


def backtest(
    rule: Rule,
    series: Mapping[str, Sequence[tuple[int, float]]],
    *,
    start_ms: int,
    end_ms: int,
    policy: AlertPolicy,
) -> BacktestResult:
    """Replay `series` (asset id -> (ts_ms, value) points of the rule's metric) through `rule`.

    - Only readings in [start_ms, end_ms) count; windows start empty at `start_ms`.
    - Every series given is evaluated: the caller has already chosen the assets with the
      rule's selector. A disabled rule is evaluated too, so drafts can be tried out.
    - Nobody resolves anything by hand and no asset is under maintenance, so each asset
      has at most one predictive work order, which every later firing adds to.
    """
    metric = rule.selector.metric
    # Match every series given (selection is the caller's) without changing what fires.
    evaluated = rule.model_copy(update={"selector": Selector(metric=metric), "enabled": True})
    engine = RuleEngine([evaluated])
    ledger = _Ledger(rule, policy)
    count = 0
    ticked: int | None = None
    for reading in _merged(series, metric, start_ms, end_ms):
        if reading.ts_ms != ticked:
            ledger.record(engine.tick(reading.ts_ms))
            ticked = reading.ts_ms
        ledger.record(engine.apply((reading,), _unknown_asset))
        count += 1
    ledger.record(engine.tick(end_ms))
    return BacktestResult(ledger.alerts(), ledger.work_orders(), count)


def _unknown_asset(_asset_id: str) -> Asset | None:
    return None


def _merged(
    series: Mapping[str, Sequence[tuple[int, float]]], metric: str, start_ms: int, end_ms: int
) -> Iterator[Reading]:
    """Yield every asset's readings in [start_ms, end_ms) as one stream in time order."""
    streams = [
        [
            Reading(asset_id, metric, ts_ms, value)
            for ts_ms, value in sorted(points, key=itemgetter(0))  # linear when already sorted
            if start_ms <= ts_ms < end_ms
        ]
        for asset_id, points in sorted(series.items())
    ]
    return heapq.merge(*streams, key=itemgetter(2))


class _Ledger:
    """The alerts and work orders recorded so far, kept as live recording keeps them."""

    def __init__(self, rule: Rule, policy: AlertPolicy) -> None:
        self._rule = rule
        self._policy = policy
        self._alerts: list[Alert] = []  # alert id n is at index n - 1
        self._opened_at: list[datetime] = []  # by alert id too: folding moves `fired_at`
        self._latest: dict[StateKey, int] = {}
        self._orders: dict[str, WorkOrder] = {}

    def record(self, outcomes: Sequence[KeyedOutcome]) -> None:
        """Turn outcomes' events into alert and work-order changes."""
        for outcome in outcomes:
            for event in outcome.events:
                if isinstance(event, RuleFired):
                    self._fired(outcome.key, event)
                elif isinstance(event, RuleResolved):
                    self._resolved(outcome.key, event)

    def _latest_alert(self, key: StateKey) -> Alert | None:
        alert_id = self._latest.get(key)
        return None if alert_id is None else self._alerts[alert_id - 1]

    def _fired(self, key: StateKey, fired: RuleFired) -> None:
        previous = self._latest_alert(key)
        order = self._orders.get(key.asset_id)
        decision = decide(
            fired,
            previous_alert=previous,
            open_order=order,
            last_resolved_order=None,
            under_maintenance=False,
            policy=self._policy,
        )
        if decision.alert is AlertAction.SKIP:
            return
        if decision.alert is AlertAction.OPEN or previous is None:
            alert = Alert(
                id=len(self._alerts) + 1,
                rule_id=self._rule.id,
                asset_id=key.asset_id,
                metric=key.metric,
                severity=self._rule.severity,
                status=AlertStatus.FIRING,
                episode=fired.episode,
                last_episode=fired.episode,
                fired_at=fired.at,
                value=fired.value,
                threshold=fired.threshold,
                predicted_crossing_at=fired.predicted_crossing_at,
                recorded_at=fired.at,
            )
            self._alerts.append(alert)
            self._opened_at.append(fired.at)
            self._latest[key] = alert.id
        else:
            alert = previous.model_copy(update=folded(previous, fired, decision))
            self._alerts[alert.id - 1] = alert
        # Orders are never resolved and nothing is under maintenance here, so the decision
        # can only be CREATE (first firing on the asset) or APPEND.
        if decision.order is OrderAction.CREATE:
            title, description = work_order_text(self._rule, None, key.asset_id, key.metric, fired)
            self._orders[key.asset_id] = WorkOrder(
                id=len(self._orders) + 1,
                kind=WorkOrderKind.PREDICTIVE,
                status=WorkOrderStatus.REQUESTED,
                priority=priority_for(self._rule.severity),
                asset_id=key.asset_id,
                title=title,
                description=description,
                rule_id=self._rule.id,
                alert_ids=[alert.id],
                created_at=fired.at,
                updated_at=fired.at,
            )
        elif decision.order is OrderAction.APPEND and order is not None:
            linked = (
                order.alert_ids if alert.id in order.alert_ids else [*order.alert_ids, alert.id]
            )
            self._orders[key.asset_id] = order.model_copy(
                update={"alert_ids": linked, "updated_at": fired.at}
            )

    def _resolved(self, key: StateKey, resolved: RuleResolved) -> None:
        alert = self._latest_alert(key)
        if alert is None or not resolves(alert, resolved):
            return
        self._alerts[alert.id - 1] = alert.model_copy(
            update={"status": AlertStatus.RESOLVED, "resolved_at": resolved.at}
        )

    def alerts(self) -> list[BacktestAlert]:
        """Return every alert, by the time it opened, then asset."""
        found = [
            BacktestAlert(
                asset_id=alert.asset_id,
                metric=alert.metric,
                fired_at=alert.fired_at,
                episode=alert.episode,
                value=alert.value,
                threshold=alert.threshold,
                predicted_crossing_at=alert.predicted_crossing_at,
                resolved_at=alert.resolved_at,
                fire_count=alert.fire_count,
                flapping=alert.flapping,
            )
            for alert in self._alerts
        ]
        opened = sorted(range(len(found)), key=lambda i: (self._opened_at[i], found[i].asset_id))
        return [found[i] for i in opened]

    def work_orders(self) -> list[BacktestWorkOrder]:
        """Return every work order, by opening time then asset."""
        found = [
            BacktestWorkOrder(
                asset_id=order.asset_id,
                opened_at=order.created_at,
                alert_count=len(order.alert_ids),
                priority=order.priority,
            )
            for order in self._orders.values()
        ]
        return sorted(found, key=lambda order: (order.opened_at, order.asset_id))
