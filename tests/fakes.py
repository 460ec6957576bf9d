"""In-memory implementations of the ports, for unit tests. They honour the same contracts."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from core.assets import Asset
from core.deadletters import DeadLetter
from core.errors import (
    ConflictError,
    NotFoundError,
    StoreRejectedError,
    StoreUnavailableError,
    ValidationError,
)
from core.ports import SeriesRange
from core.priority import Priority
from core.sla import SlaPolicy, SlaPolicyOverride, deadlines_for, default_policy
from core.technicians import check_not_finished
from core.telemetry import (
    Reading,
    StampedValue,
    TelemetryBucket,
    TelemetryPoint,
    datetime_to_ms,
    ms_to_datetime,
)
from core.workorders import (
    OPEN_STATUSES,
    Action,
    Escalation,
    InvalidTransitionError,
    NewWorkOrder,
    TransitionDetails,
    WorkOrder,
    WorkOrderEvent,
    WorkOrderKind,
    WorkOrderStatus,
    check_closable,
    check_details,
    deadline_fields,
    milestone_fields,
    next_status,
)
from rules.alerting import (
    OPEN_ALERT_STATUSES,
    Alert,
    AlertAction,
    AlertPolicy,
    AlertStatus,
    OrderAction,
    decide,
    evidence_for,
    evidence_points,
    folded,
    priority_for,
    resolves,
    work_order_text,
)
from rules.engine import KeyedOutcome, StateKey
from rules.evaluate import RuleFired, RuleResolved, RuleState


def _noted(what: str, note: str | None) -> str:
    """Return an audit note saying what happened, then the caller's note if any."""
    return f"{what}: {note}" if note else what


class InMemoryTelemetryStore:
    """A telemetry store in a dict keyed by (asset, metric, ts): rewrites overwrite."""

    def __init__(self) -> None:
        self.points: dict[tuple[str, str, int], float] = {}
        self.writes = 0
        self.read_many_calls = 0
        self.down = False
        self.rejected_assets: set[str] = set()
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailableError("telemetry store is unreachable")

    def write(self, readings: Sequence[Reading]) -> None:
        """Store readings, or fail as a real store would when told to."""
        self._check()
        if any(r.asset_id in self.rejected_assets for r in readings):
            raise StoreRejectedError("field type conflict")
        with self._lock:
            for r in readings:
                self.points[(r.asset_id, r.metric, r.ts_ms)] = r.value
            self.writes += 1

    def read(
        self, asset_id: str, metric: str, start_at: datetime, end_at: datetime, limit: int
    ) -> list[TelemetryPoint]:
        """Return points in [start_at, end_at), oldest first."""
        self._check()
        start, end = datetime_to_ms(start_at), datetime_to_ms(end_at)
        found = sorted(
            (ts, v)
            for (a, m, ts), v in self.points.items()
            if a == asset_id and m == metric and start <= ts < end
        )
        return [TelemetryPoint(ms_to_datetime(ts), v) for ts, v in found[:limit]]

    def read_many(self, requests: Sequence[SeriesRange], limit: int) -> list[list[StampedValue]]:
        """Read each series in turn."""
        self.read_many_calls += 1
        return [
            [(datetime_to_ms(p.at), p.value) for p in self.read(a, m, start, end, limit)]
            for a, m, start, end in requests
        ]

    def downsample(
        self, asset_id: str, metric: str, start_at: datetime, end_at: datetime, every: timedelta
    ) -> list[TelemetryBucket]:
        """Aggregate per interval aligned to the epoch."""
        step = int(every.total_seconds() * 1000)
        buckets: dict[int, list[float]] = {}
        for point in self.read(asset_id, metric, start_at, end_at, 10**9):
            ts = datetime_to_ms(point.at)
            buckets.setdefault(ts - ts % step, []).append(point.value)
        return [
            TelemetryBucket(ms_to_datetime(k), sum(v) / len(v), min(v), max(v), len(v))
            for k, v in sorted(buckets.items())
        ]

    def latest(self, asset_id: str) -> dict[str, TelemetryPoint]:
        """Return the newest point per metric."""
        self._check()
        newest: dict[str, tuple[int, float]] = {}
        for (a, m, ts), v in self.points.items():
            if a == asset_id and (m not in newest or ts > newest[m][0]):
                newest[m] = (ts, v)
        return {m: TelemetryPoint(ms_to_datetime(ts), v) for m, (ts, v) in newest.items()}

    def ping(self) -> bool:
        """Answer unless told to be down."""
        return not self.down

    def close(self) -> None:
        """Nothing to release."""


class InMemoryAssetRepository:
    """The asset registry in a dict."""

    def __init__(self, assets: Iterable[Asset] = ()) -> None:
        self.assets = {asset.id: asset for asset in assets}
        self.down = False

    def add(self, asset: Asset) -> Asset:
        """Insert, refusing duplicates."""
        if asset.id in self.assets:
            raise ConflictError(f"asset {asset.id} exists")
        self.assets[asset.id] = asset
        return asset

    def get(self, asset_id: str) -> Asset:
        """Return an asset or raise NotFoundError."""
        try:
            return self.assets[asset_id]
        except KeyError:
            raise NotFoundError(f"asset {asset_id} not found") from None

    def update(self, asset_id: str, changes: dict[str, Any]) -> Asset:
        """Apply changes."""
        updated = self.get(asset_id).model_copy(update=changes)
        self.assets[asset_id] = updated
        return updated

    def list(
        self,
        *,
        site: str | None = None,
        type: str | None = None,
        after_id: str | None = None,
        limit: int = 100,
    ) -> list[Asset]:
        """Return assets by id."""
        found = [
            a
            for i, a in sorted(self.assets.items())
            if (site is None or a.site == site)
            and (type is None or a.type == type)
            and (after_id is None or i > after_id)
        ]
        return found[:limit]

    def existing_ids(self, asset_ids: Iterable[str]) -> set[str]:
        """Return the registered ids among `asset_ids`."""
        if self.down:
            raise StoreUnavailableError("registry is down")
        return set(asset_ids) & set(self.assets)

    def register_missing(self, asset_ids: Iterable[str], registered_at: datetime) -> set[str]:
        """Register unknown ids."""
        created = set(asset_ids) - set(self.assets)
        for asset_id in created:
            self.assets[asset_id] = Asset(
                id=asset_id,
                name=asset_id,
                type="unregistered",
                site="unassigned",
                auto_registered=True,
                created_at=registered_at,
            )
        return created


class InMemoryDeadLetterRepository:
    """Dead letters in a list."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self.down = False

    def add_many(self, letters: Sequence[DeadLetter]) -> None:
        """Append letters with ids."""
        if self.down:
            raise StoreUnavailableError("database is down")
        for letter in letters:
            self.letters.append(replace(letter, id=len(self.letters) + 1))

    def list(
        self, *, asset_id: str | None = None, before_id: int | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Return newest first."""
        found = [
            d
            for d in reversed(self.letters)
            if (asset_id is None or d.asset_id == asset_id)
            and (before_id is None or (d.id or 0) < before_id)
        ]
        return found[:limit]

    def count(self) -> int:
        """Return how many are stored."""
        return len(self.letters)


class InMemoryWorkOrderRepository:
    """Work orders in a dict, with the SQL repository's transitions and audit trail."""

    def __init__(self, asset_ids: Iterable[str] | None = None) -> None:
        self.orders: dict[int, WorkOrder] = {}
        # Each order's audit trail, oldest first.
        self.audit: dict[int, list[WorkOrderEvent]] = {}
        self.asset_ids = None if asset_ids is None else set(asset_ids)
        # The customer owning an asset, for the sign-off closing its orders needs.
        self.customers: dict[str, str] = {}
        # The site of an asset, for listing by site.
        self.sites: dict[str, str] = {}
        self.sla_overrides: dict[str, SlaPolicyOverride] = {}

    def next_id(self) -> int:
        """Return the id the next order gets."""
        return max(self.orders, default=0) + 1

    def note(
        self,
        order: WorkOrder,
        actor: str,
        from_status: WorkOrderStatus | None,
        note: str | None = None,
    ) -> WorkOrder:
        """Store an order and audit its move from `from_status`."""
        self.orders[order.id] = order
        event = WorkOrderEvent(
            at=order.updated_at,
            actor=actor,
            from_status=from_status,
            to_status=order.status,
            note=note,
        )
        self.audit.setdefault(order.id, []).append(event)
        return order

    def escalations(
        self, *, work_order_id: int | None = None, before_id: int | None = None, limit: int = 100
    ) -> builtins.list[Escalation]:
        """Return no escalations: the fake keeps no SLA clock."""
        return []

    def sla_policy(self, customer: str | None = None) -> SlaPolicy:
        """Return the default policy with the customer's override, if one was set."""
        override = self.sla_overrides.get(customer) if customer is not None else None
        return default_policy() if override is None else default_policy().merged(override)

    def set_sla_override(
        self, customer: str, override: SlaPolicyOverride, now: datetime
    ) -> SlaPolicy:
        """Keep a customer's override."""
        self.sla_overrides[customer] = override
        return self.sla_policy(customer)

    def events(self, order_id: int) -> builtins.list[WorkOrderEvent]:
        """Return an order's audit trail."""
        self.get(order_id)
        return list(self.audit[order_id])

    def create(self, order: NewWorkOrder, now: datetime, actor: str = "system") -> WorkOrder:
        """Open a corrective or preventive order; refuse predictive ones and unknown assets."""
        if order.kind is WorkOrderKind.PREDICTIVE:
            raise ValidationError("predictive work orders are opened by rules, not by hand")
        if self.asset_ids is not None and order.asset_id not in self.asset_ids:
            raise ValidationError(f"asset {order.asset_id!r} is not registered")
        created = WorkOrder(
            id=self.next_id(),
            status=WorkOrderStatus.REQUESTED,
            created_at=now,
            updated_at=now,
            **deadline_fields(deadlines_for(order.priority, now, default_policy())),
            **order.model_dump(),
        )
        return self.note(created, actor, None)

    def get(self, order_id: int) -> WorkOrder:
        """Return an order or raise NotFoundError."""
        try:
            return self.orders[order_id]
        except KeyError:
            raise NotFoundError(f"work order {order_id} not found") from None

    def list(
        self,
        *,
        status: WorkOrderStatus | None = None,
        kind: WorkOrderKind | None = None,
        priority: Priority | None = None,
        asset_id: str | None = None,
        site: str | None = None,
        rule_id: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
        technician_id: str | None = None,
    ) -> builtins.list[WorkOrder]:
        """Return orders newest first."""
        found = [
            o
            for i, o in sorted(self.orders.items(), reverse=True)
            if (status is None or o.status == status)
            and (kind is None or o.kind == kind)
            and (priority is None or o.priority == priority)
            and (asset_id is None or o.asset_id == asset_id)
            and (site is None or self.sites.get(o.asset_id) == site)
            and (rule_id is None or o.rule_id == rule_id)
            and (created_from is None or o.created_at >= created_from)
            and (created_to is None or o.created_at < created_to)
            and (before_id is None or i < before_id)
            and (technician_id is None or o.technician_id == technician_id)
        ]
        return found[:limit]

    def assign(
        self, order_id: int, technician_id: str, *, actor: str, note: str | None, now: datetime
    ) -> WorkOrder:
        """Give an order to a technician, audited, as the SQL repository does."""
        current = self.get(order_id)
        check_not_finished(current)
        if current.technician_id == technician_id:
            return current
        update = {"technician_id": technician_id, "assigned_at": now, "updated_at": now}
        text = f"assigned to technician {technician_id!r}"
        return self.note(
            current.model_copy(update=update), actor, current.status, _noted(text, note)
        )

    def unassign(self, order_id: int, *, actor: str, note: str | None, now: datetime) -> WorkOrder:
        """Take an order off its technician, audited, as the SQL repository does."""
        current = self.get(order_id)
        check_not_finished(current)
        if current.technician_id is None:
            return current
        update = {"technician_id": None, "assigned_at": None, "updated_at": now}
        text = f"unassigned from technician {current.technician_id!r}"
        return self.note(
            current.model_copy(update=update), actor, current.status, _noted(text, note)
        )

    def transition(
        self,
        order_id: int,
        action: Action,
        details: TransitionDetails,
        *,
        actor: str,
        now: datetime,
    ) -> WorkOrder:
        """Apply a lifecycle action with the same rules as the SQL repository."""
        check_details(action, details)
        current = self.get(order_id)
        target = next_status(current.status, action, current.held_from)
        update: dict[str, Any] = {
            "status": target,
            "updated_at": now,
            **milestone_fields(current, action, now),
        }
        if action is Action.HOLD:
            update["held_from"] = current.status
        elif action is Action.RESUME:
            update["held_from"] = None
        elif action is Action.RESOLVE:
            update.update(resolved_at=now, resolution_note=details.note)
            if details.completion is not None:
                update["completion"] = details.completion
        elif action is Action.CLOSE:
            completion, sign_off = check_closable(
                current, details, customer=self.customers.get(current.asset_id)
            )
            update.update(closed_at=now, completion=completion, sign_off=sign_off)
        elif action is Action.REOPEN:
            update.update(resolved_at=None, repeat_count=current.repeat_count + 1)
        return self.note(current.model_copy(update=update), actor, current.status, details.note)


class InMemoryAlertStore:
    """Rule states and alerts in dicts, deciding with `rules.alerting.decide` like the SQL one.

    Predictive orders go to `work_orders`; a batch that fails midway leaves nothing behind.
    """

    def __init__(
        self,
        work_orders: InMemoryWorkOrderRepository | None = None,
        policy: AlertPolicy | None = None,
        assets: Mapping[str, Asset] | None = None,
    ) -> None:
        self.work_orders = work_orders or InMemoryWorkOrderRepository()
        self.policy = policy or AlertPolicy()
        self.assets = dict(assets or {})
        self.states: dict[StateKey, RuleState] = {}
        self.alerts: dict[int, Alert] = {}
        self.down = False

    def load_states(self) -> dict[StateKey, RuleState]:
        """Return every state, windows empty."""
        return dict(self.states)

    def record(self, outcomes: Sequence[KeyedOutcome], now: datetime) -> list[Alert]:
        """Store a batch all or nothing; return each alert opened or reopened, as it was then."""
        if self.down:
            raise StoreUnavailableError("database is down")
        orders = self.work_orders
        saved = (
            dict(self.states),
            dict(self.alerts),
            dict(orders.orders),
            {k: list(v) for k, v in orders.audit.items()},
        )
        opened: list[Alert] = []
        try:
            for outcome in outcomes:
                self.states[outcome.key] = outcome.state._replace(window=())
                for event in outcome.events:
                    if isinstance(event, RuleFired):
                        alert = self._fired(outcome, event, now)
                        if alert is not None:
                            opened.append(alert)
                    elif isinstance(event, RuleResolved):
                        self._resolved(outcome.key, event)
        except BaseException:
            self.states, self.alerts, orders.orders, orders.audit = saved
            raise
        return opened

    def _fired(self, outcome: KeyedOutcome, fired: RuleFired, now: datetime) -> Alert | None:
        key, rule = outcome.key, outcome.rule
        previous = max(
            (a for a in self.alerts.values() if (a.rule_id, a.asset_id, a.metric) == key),
            key=lambda a: a.id,
            default=None,
        )
        mine = [
            o
            for o in self.work_orders.orders.values()
            if o.kind is WorkOrderKind.PREDICTIVE
            and (o.rule_id, o.asset_id) == (key.rule_id, key.asset_id)
        ]
        open_order = next((o for o in mine if o.status in OPEN_STATUSES), None)
        last = max(
            (o for o in mine if o.status is WorkOrderStatus.RESOLVED),
            key=lambda o: (o.resolved_at or now, o.id),
            default=None,
        )
        decision = decide(
            fired,
            previous_alert=previous,
            open_order=open_order,
            last_resolved_order=last,
            under_maintenance=any(
                o.asset_id == key.asset_id and o.status is WorkOrderStatus.IN_PROGRESS
                for o in self.work_orders.orders.values()
            ),
            policy=self.policy,
        )
        if decision.alert is AlertAction.SKIP:
            return None
        firing: dict[str, Any] = {
            "status": AlertStatus.FIRING,
            "last_episode": fired.episode,
            "fired_at": fired.at,
            "value": fired.value,
            "threshold": fired.threshold,
            "predicted_crossing_at": fired.predicted_crossing_at,
            "evidence": evidence_points(fired),
            "suppressed": decision.suppressed,
        }
        if decision.alert is AlertAction.FOLD and previous is not None:
            alert = previous.model_copy(update=folded(previous, fired, decision))
        else:
            alert = Alert(
                id=max(self.alerts, default=0) + 1,
                rule_id=key.rule_id,
                asset_id=key.asset_id,
                metric=key.metric,
                severity=rule.severity,
                episode=fired.episode,
                recorded_at=now,
                **firing,
            )
        evidence = evidence_for(fired, key.metric, alert.id)
        order: WorkOrder | None = None
        if decision.order is OrderAction.APPEND and open_order is not None:
            order = open_order.model_copy(
                update={"evidence": [*open_order.evidence, evidence], "updated_at": now}
            )
        elif decision.order is OrderAction.REOPEN and last is not None:
            order = self.work_orders.note(
                last.model_copy(
                    update={
                        "status": WorkOrderStatus.REOPENED,
                        "repeat_count": last.repeat_count + 1,
                        "resolved_at": None,
                        "resolution_note": None,
                        "evidence": [*last.evidence, evidence],
                        "updated_at": now,
                    }
                ),
                "rules",
                WorkOrderStatus.RESOLVED,
            )
        elif decision.order is OrderAction.CREATE:
            title, description = work_order_text(
                rule, self.assets.get(key.asset_id), key.asset_id, key.metric, fired
            )
            order = self.work_orders.note(
                WorkOrder(
                    id=self.work_orders.next_id(),
                    kind=WorkOrderKind.PREDICTIVE,
                    status=WorkOrderStatus.REQUESTED,
                    priority=priority_for(rule.severity),
                    asset_id=key.asset_id,
                    title=title,
                    description=description,
                    rule_id=key.rule_id,
                    evidence=[evidence],
                    created_at=now,
                    updated_at=now,
                    **deadline_fields(
                        deadlines_for(priority_for(rule.severity), now, default_policy())
                    ),
                ),
                "rules",
                None,
            )
        if order is not None:
            linked = sorted({*order.alert_ids, alert.id})
            self.work_orders.orders[order.id] = order.model_copy(update={"alert_ids": linked})
            alert = alert.model_copy(update={"work_order_id": order.id})
        self.alerts[alert.id] = alert
        return alert if decision.alert is AlertAction.OPEN or decision.flapping else None

    def _resolved(self, key: StateKey, event: RuleResolved) -> None:
        for alert in list(self.alerts.values()):
            if (alert.rule_id, alert.asset_id, alert.metric) == key and resolves(alert, event):
                self.alerts[alert.id] = alert.model_copy(
                    update={"status": AlertStatus.RESOLVED, "resolved_at": event.at}
                )

    def get_alert(self, alert_id: int) -> Alert:
        """Return an alert or raise NotFoundError."""
        try:
            return self.alerts[alert_id]
        except KeyError:
            raise NotFoundError(f"alert {alert_id} not found") from None

    def list_alerts(
        self,
        *,
        status: AlertStatus | None = None,
        asset_id: str | None = None,
        rule_id: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> builtins.list[Alert]:
        """Return alerts newest first."""
        found = [
            a
            for i, a in sorted(self.alerts.items(), reverse=True)
            if (status is None or a.status == status)
            and (asset_id is None or a.asset_id == asset_id)
            and (rule_id is None or a.rule_id == rule_id)
            and (before_id is None or i < before_id)
        ]
        return found[:limit]

    def acknowledge(self, alert_id: int, actor: str, note: str | None, now: datetime) -> Alert:
        """Acknowledge a firing alert."""
        changes = {"acknowledged_at": now, "acknowledged_by": actor}
        return self._move(alert_id, {AlertStatus.FIRING}, AlertStatus.ACKNOWLEDGED, note, changes)

    def resolve(self, alert_id: int, actor: str, note: str | None, now: datetime) -> Alert:
        """Resolve an open alert by hand."""
        changes = {"resolved_at": now, "resolved_by": actor}
        return self._move(alert_id, OPEN_ALERT_STATUSES, AlertStatus.RESOLVED, note, changes)

    def _move(
        self,
        alert_id: int,
        allowed: Iterable[AlertStatus],
        target: AlertStatus,
        note: str | None,
        changes: dict[str, Any],
    ) -> Alert:
        current = self.get_alert(alert_id)
        if current.status not in set(allowed):
            raise InvalidTransitionError(f"cannot move a {current.status} alert to {target}")
        if note is not None:
            changes["note"] = note
        moved = current.model_copy(update={**changes, "status": target})
        self.alerts[alert_id] = moved
        return moved
