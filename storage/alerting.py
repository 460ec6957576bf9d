"""SQL stores of rule states, alerts and work orders (SQLite and PostgreSQL)."""

from __future__ import annotations

import builtins
import functools
import logging
from collections.abc import Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, RowMapping, exists, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from core.assets import Asset
from core.clock import Clock, SystemClock
from core.errors import ConflictError, NotFoundError, ValidationError
from core.priority import Priority
from core.sla import (
    ActualTimes,
    Breach,
    Deadlines,
    SlaPolicy,
    SlaPolicyOverride,
    breaches,
    deadlines_for,
    default_policy,
    new_breaches,
)
from core.technicians import check_not_finished
from core.workorders import (
    Action,
    Escalation,
    Evidence,
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
    Decision,
    OrderAction,
    decide,
    evidence_for,
    evidence_points,
    folded,
    is_replay,
    priority_for,
    work_order_text,
)
from rules.engine import KeyedOutcome, StateKey
from rules.evaluate import RuleFired, RuleResolved, RuleState, Status
from storage.repositories import insert_ignoring_duplicates
from storage.tables import (
    alerts,
    assets,
    rule_states,
    sla_escalations,
    sla_overrides,
    work_order_events,
    work_orders,
)

log = logging.getLogger(__name__)

RULES_ACTOR = "rules"
SYSTEM_ACTOR = "system"
# A batch that lost a race (another writer opened the same order first) is replayed this
# often; the replay sees the winner's rows and appends to them instead.
_RECORD_ATTEMPTS = 3
_OPEN_ALERT_VALUES = sorted(status.value for status in OPEN_ALERT_STATUSES)
_PG_UNIQUE_VIOLATION = "23505"


class TransitionHook(Protocol):
    """Work that commits with a work order's move, or not at all (it runs in its transaction).

    The composition root settles part reservations this way: a cancel releases them, a
    close issues what was used. A hook that raises rolls the move back.
    """

    def __call__(
        self,
        connection: Connection,
        order: WorkOrder,
        *,
        from_status: WorkOrderStatus,
        actor: str,
        note: str | None,
        now: datetime,
    ) -> None:
        """Act on `order`, just moved from `from_status`, inside the move's transaction."""
        ...


class _LostRaceError(Exception):
    """A row this batch read was changed by a concurrent writer: replay the batch."""


def open_key(rule_id: str, asset_id: str) -> str:
    """Return the key that marks the one open predictive order of a (rule, asset)."""
    return f"{rule_id}|{asset_id}"


def _reopened_key(order: WorkOrder) -> str | None:
    """Return the open key a reopened order takes back: predictive orders hold one."""
    if order.kind is WorkOrderKind.PREDICTIVE and order.rule_id is not None:
        return open_key(order.rule_id, order.asset_id)
    return None


def is_unique_violation(error: IntegrityError) -> bool:
    original = error.orig
    if getattr(original, "sqlstate", None) == _PG_UNIQUE_VIOLATION:
        return True
    return "UNIQUE constraint failed" in str(original)


def _state_row(key: StateKey, state: RuleState, now: datetime) -> dict[str, Any]:
    return {
        "rule_id": key.rule_id,
        "asset_id": key.asset_id,
        "metric": key.metric,
        "status": state.status.value,
        "last_ts_ms": state.last_ts_ms,
        "pending_since_ms": state.pending_since_ms,
        "firing_since_ms": state.firing_since_ms,
        "clear_since_ms": state.clear_since_ms,
        "episode": state.episode,
        "updated_at": now,
    }


_STATE_KEY = ["rule_id", "asset_id", "metric"]
_STATE_FIELDS = [
    "status",
    "last_ts_ms",
    "pending_since_ms",
    "firing_since_ms",
    "clear_since_ms",
    "episode",
    "updated_at",
]


@functools.cache
def _state_upsert(dialect: str) -> Any:
    """Return the INSERT ... ON CONFLICT DO UPDATE of rule_states, built once per dialect."""
    if dialect == "postgresql":
        pg = postgresql.insert(rule_states)
        return pg.on_conflict_do_update(
            index_elements=_STATE_KEY, set_={name: pg.excluded[name] for name in _STATE_FIELDS}
        )
    if dialect == "sqlite":
        lite = sqlite.insert(rule_states)
        return lite.on_conflict_do_update(
            index_elements=_STATE_KEY, set_={name: lite.excluded[name] for name in _STATE_FIELDS}
        )
    raise NotImplementedError(f"no upsert for {dialect}")


def _alert_from_row(row: RowMapping) -> Alert:
    return Alert.model_validate(dict(row))


def _order_from_row(row: RowMapping, alert_ids: builtins.list[int]) -> WorkOrder:
    return WorkOrder.model_validate(
        {**row, "alert_ids": alert_ids, "breaches": row["breaches"] or []}
    )


def _evidence_json(evidence: Sequence[Evidence]) -> builtins.list[dict[str, Any]]:
    return [item.model_dump(mode="json") for item in evidence]


def _with_note(what: str, note: str | None) -> str:
    """Return an audit note saying what happened, then the caller's note if any."""
    return f"{what}: {note}" if note else what


def _audit(
    connection: Connection,
    order_id: int,
    *,
    at: datetime,
    actor: str,
    from_status: WorkOrderStatus | None,
    to_status: WorkOrderStatus,
    note: str | None = None,
) -> None:
    connection.execute(
        insert(work_order_events).values(
            work_order_id=order_id,
            at=at,
            actor=actor,
            from_status=from_status.value if from_status is not None else None,
            to_status=to_status.value,
            note=note,
        )
    )


def _read_order(connection: Connection, order_id: int) -> WorkOrder:
    row = connection.execute(select(work_orders).where(work_orders.c.id == order_id)).first()
    if row is None:
        raise NotFoundError(f"work order {order_id} not found", work_order_id=order_id)
    alert_ids = connection.execute(
        select(alerts.c.id).where(alerts.c.work_order_id == order_id).order_by(alerts.c.id)
    ).scalars()
    return _order_from_row(row._mapping, list(alert_ids))


def read_order(connection: Connection, order_id: int) -> WorkOrder:
    """Return a work order inside the caller's transaction; NotFoundError if absent."""
    return _read_order(connection, order_id)


def _read_alert(connection: Connection, alert_id: int) -> Alert:
    row = connection.execute(select(alerts).where(alerts.c.id == alert_id)).first()
    if row is None:
        raise NotFoundError(f"alert {alert_id} not found", alert_id=alert_id)
    return _alert_from_row(row._mapping)


def sla_policy_for(connection: Connection, asset_id: str, base: SlaPolicy) -> SlaPolicy:
    """Return the SLA policy of an asset: `base`, with its customer's override if any."""
    customer = connection.execute(select(assets.c.customer).where(assets.c.id == asset_id)).scalar()
    if customer is None:
        return base
    override = connection.execute(
        select(sla_overrides.c.policy).where(sla_overrides.c.customer == customer)
    ).scalar()
    return base if override is None else base.merged(SlaPolicyOverride.model_validate(override))


def _deadline_values(
    connection: Connection, priority: Priority, asset_id: str, created_at: datetime, base: SlaPolicy
) -> dict[str, datetime | None]:
    return deadline_fields(
        deadlines_for(priority, created_at, sla_policy_for(connection, asset_id, base))
    )


def _missed_by(order: WorkOrder, now: datetime) -> frozenset[Breach]:
    """Return the SLA targets `order` has missed by `now`, flagged or not."""
    deadlines = Deadlines(
        response_due=order.response_due_at,
        on_site_due=order.on_site_due_at,
        resolution_due=order.resolution_due_at,
    )
    actuals = ActualTimes(
        responded_at=order.responded_at,
        arrived_at=order.arrived_at,
        resolved_at=order.resolved_at,
    )
    return frozenset(breaches(deadlines, actuals, now))


def flag_breaches(connection: Connection, order: WorkOrder, now: datetime) -> list[Escalation]:
    """Flag the SLA targets `order` has missed by `now` and not flagged yet; escalate each once.

    The unique (work order, breach) key of `sla_escalations` decides who flags a breach when
    sweeps race: only the insert that lands escalates it.
    """
    missed = _missed_by(order, now)
    due_of = {
        Breach.RESPONSE: order.response_due_at,
        Breach.ON_SITE: order.on_site_due_at,
        Breach.RESOLUTION: order.resolution_due_at,
    }
    escalated: list[Escalation] = []
    for breach in sorted(new_breaches(missed, set(order.breaches))):
        due_at = due_of[breach]
        if due_at is None:
            continue
        inserted = connection.execute(
            insert_ignoring_duplicates(connection, sla_escalations)
            .values(work_order_id=order.id, breach=breach.value, due_at=due_at, at=now)
            .returning(sla_escalations.c.id)
        ).scalar()
        if inserted is not None:
            escalated.append(
                Escalation(
                    id=int(inserted), work_order_id=order.id, breach=breach, due_at=due_at, at=now
                )
            )
    if missed - set(order.breaches):
        flagged = sorted({*order.breaches, *missed})
        connection.execute(
            update(work_orders)
            .where(work_orders.c.id == order.id)
            .values(breaches=[b.value for b in flagged])
        )
    return escalated


class SqlAlertStore:
    """Rule states, alerts and the predictive work orders they open, in a SQL database."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock | None = None,
        policy: AlertPolicy | None = None,
        sla: SlaPolicy | None = None,
    ) -> None:
        self._engine = engine
        self._sla = sla or default_policy()
        # Unused for now: every method is handed its `now`. Kept so all Sql* stores are
        # built alike, (engine, clock, ...), by the composition root.
        self._clock = clock or SystemClock()
        self._policy = policy or AlertPolicy()

    def load_states(self) -> dict[StateKey, RuleState]:
        """Return every persisted rule state; windows are empty until rebuilt from telemetry."""
        with self._engine.connect() as connection:
            rows = connection.execute(select(rule_states))
            return {
                StateKey(row.rule_id, row.asset_id, row.metric): RuleState(
                    status=Status(row.status),
                    last_ts_ms=row.last_ts_ms,
                    pending_since_ms=row.pending_since_ms,
                    firing_since_ms=row.firing_since_ms,
                    clear_since_ms=row.clear_since_ms,
                    episode=row.episode,
                )
                for row in rows
            }

    def record(self, outcomes: Sequence[KeyedOutcome], now: datetime) -> builtins.list[Alert]:
        """Persist states and turn their events into alerts and work orders, in one transaction.

        Return, in event order, each alert this batch opened (`fire_count` 1, not `flapping`)
        or reopened (`flapping`: folded into an alert the rule had just cleared), as it stood
        right after that firing, so a spike that also clears within the batch is still seen
        opening. Page for those neither `suppressed` nor `flapping`: that is `Decision.pages`.
        A firing folded into an alert that is still open is not returned. Replaying an outcome
        already recorded changes nothing and returns nothing for it.
        """
        if not outcomes:
            return []
        for attempt in range(1, _RECORD_ATTEMPTS + 1):
            try:
                with self._engine.begin() as connection:
                    return self._record(connection, outcomes, now)
            except IntegrityError as exc:
                if attempt == _RECORD_ATTEMPTS or not is_unique_violation(exc):
                    raise
                log.info("alert batch lost a race (%s); replaying it", exc.orig)
            except _LostRaceError as exc:
                if attempt == _RECORD_ATTEMPTS:
                    raise ConflictError(f"alert batch kept losing races: {exc}") from exc
                log.info("alert batch lost a race (%s); replaying it", exc)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _record(
        self, connection: Connection, outcomes: Sequence[KeyedOutcome], now: datetime
    ) -> builtins.list[Alert]:
        opened: builtins.list[Alert] = []
        # The state rows are written first, in one executemany: on PostgreSQL their row
        # locks queue concurrent batches of the same keys behind this one before they read
        # any alert. Sorted by key (a stable sort: several outcomes of one key still apply in
        # order, the last one stays) so two batches never lock the same rows in opposite orders.
        connection.execute(
            _state_upsert(connection.dialect.name),
            sorted(
                (_state_row(outcome.key, outcome.state, now) for outcome in outcomes),
                key=itemgetter("rule_id", "asset_id", "metric"),
            ),
        )
        for outcome in outcomes:
            for event in outcome.events:
                if isinstance(event, RuleFired):
                    alert = self._fired(connection, outcome, event, now)
                    if alert is not None:
                        opened.append(alert)
                elif isinstance(event, RuleResolved):
                    self._resolved(connection, outcome.key, event)
        return opened

    def _fired(
        self, connection: Connection, outcome: KeyedOutcome, fired: RuleFired, now: datetime
    ) -> Alert | None:
        key = outcome.key
        previous_row = connection.execute(
            select(alerts)
            .where(
                alerts.c.rule_id == key.rule_id,
                alerts.c.asset_id == key.asset_id,
                alerts.c.metric == key.metric,
            )
            .order_by(alerts.c.id.desc())
            .limit(1)
        ).first()
        previous = _alert_from_row(previous_row._mapping) if previous_row is not None else None
        if is_replay(previous, fired):
            return None  # a replay: skip the reads decide() would not need
        # FOR UPDATE so two batches of the same (rule, asset) cannot both append evidence
        # from the same read and lose one of them (SQLite serialises writers anyway).
        open_row = connection.execute(
            select(work_orders)
            .where(work_orders.c.open_key == open_key(key.rule_id, key.asset_id))
            .with_for_update()
        ).first()
        resolved_row = connection.execute(
            select(work_orders)
            .where(
                work_orders.c.kind == WorkOrderKind.PREDICTIVE.value,
                work_orders.c.rule_id == key.rule_id,
                work_orders.c.asset_id == key.asset_id,
                work_orders.c.status == WorkOrderStatus.RESOLVED.value,
            )
            .order_by(work_orders.c.resolved_at.desc(), work_orders.c.id.desc())
            .limit(1)
        ).first()
        under_maintenance = bool(
            connection.execute(
                select(
                    exists().where(
                        work_orders.c.asset_id == key.asset_id,
                        work_orders.c.status == WorkOrderStatus.IN_PROGRESS.value,
                    )
                )
            ).scalar()
        )
        open_order = _order_from_row(open_row._mapping, []) if open_row is not None else None
        resolved = _order_from_row(resolved_row._mapping, []) if resolved_row is not None else None
        decision = decide(
            fired,
            previous_alert=previous,
            open_order=open_order,
            last_resolved_order=resolved,
            under_maintenance=under_maintenance,
            policy=self._policy,
        )
        if decision.alert is AlertAction.SKIP:
            return None
        if decision.alert is AlertAction.FOLD and previous is not None:
            alert_id = previous.id
            self._fold_alert(connection, previous, fired, decision)
        else:
            alert_id = self._open_alert(connection, outcome, fired, decision, now)
        order_id = self._apply_order(
            connection,
            decision.order,
            outcome=outcome,
            fired=fired,
            alert_id=alert_id,
            open_order=open_order,
            resolved=resolved,
            now=now,
        )
        if order_id is not None:
            connection.execute(
                update(alerts).where(alerts.c.id == alert_id).values(work_order_id=order_id)
            )
        if decision.alert is AlertAction.OPEN or decision.flapping:
            return _read_alert(connection, alert_id)
        return None

    def _open_alert(
        self,
        connection: Connection,
        outcome: KeyedOutcome,
        fired: RuleFired,
        decision: Decision,
        now: datetime,
    ) -> int:
        key = outcome.key
        statement = (
            insert(alerts)
            .values(
                rule_id=key.rule_id,
                asset_id=key.asset_id,
                metric=key.metric,
                severity=outcome.rule.severity.value,
                status=AlertStatus.FIRING.value,
                episode=fired.episode,
                last_episode=fired.episode,
                fired_at=fired.at,
                value=fired.value,
                threshold=fired.threshold,
                predicted_crossing_at=fired.predicted_crossing_at,
                evidence=[point.model_dump(mode="json") for point in evidence_points(fired)],
                suppressed=decision.suppressed,
                flapping=decision.flapping,
                fire_count=1,
                recorded_at=now,
            )
            .returning(alerts.c.id)
        )
        return int(connection.execute(statement).scalar_one())

    def _fold_alert(
        self, connection: Connection, previous: Alert, fired: RuleFired, decision: Decision
    ) -> None:
        changes = folded(previous, fired, decision)
        changes["status"] = changes["status"].value
        changes["evidence"] = [point.model_dump(mode="json") for point in changes["evidence"]]
        # Counted in SQL: the row is the truth, whatever `previous` was read as.
        changes["fire_count"] = alerts.c.fire_count + 1
        connection.execute(update(alerts).where(alerts.c.id == previous.id).values(**changes))

    def _apply_order(
        self,
        connection: Connection,
        action: OrderAction,
        *,
        outcome: KeyedOutcome,
        fired: RuleFired,
        alert_id: int,
        open_order: WorkOrder | None,
        resolved: WorkOrder | None,
        now: datetime,
    ) -> int | None:
        key = outcome.key
        evidence = evidence_for(fired, key.metric, alert_id)
        if action is OrderAction.APPEND and open_order is not None:
            connection.execute(
                update(work_orders)
                .where(work_orders.c.id == open_order.id)
                .values(evidence=_evidence_json([*open_order.evidence, evidence]), updated_at=now)
            )
            return open_order.id
        if action is OrderAction.REOPEN and resolved is not None:
            result = connection.execute(
                update(work_orders)
                .where(
                    work_orders.c.id == resolved.id,
                    work_orders.c.status == WorkOrderStatus.RESOLVED.value,
                )
                .values(
                    status=WorkOrderStatus.REOPENED.value,
                    repeat_count=work_orders.c.repeat_count + 1,
                    open_key=open_key(key.rule_id, key.asset_id),
                    resolved_at=None,
                    resolution_note=None,  # kept in the audit row of the resolution
                    evidence=_evidence_json([*resolved.evidence, evidence]),
                    updated_at=now,
                )
            )
            if result.rowcount == 0:
                raise _LostRaceError(f"work order {resolved.id} changed while being reopened")
            _audit(
                connection,
                resolved.id,
                at=now,
                actor=RULES_ACTOR,
                from_status=WorkOrderStatus.RESOLVED,
                to_status=WorkOrderStatus.REOPENED,
                note=f"rule {key.rule_id} fired again within the reopen window",
            )
            return resolved.id
        if action is OrderAction.CREATE:
            return self._create_order(connection, outcome, fired, evidence, now)
        return None

    def _create_order(
        self,
        connection: Connection,
        outcome: KeyedOutcome,
        fired: RuleFired,
        evidence: Evidence,
        now: datetime,
    ) -> int:
        key, rule = outcome.key, outcome.rule
        asset_row = connection.execute(select(assets).where(assets.c.id == key.asset_id)).first()
        asset = Asset.model_validate(dict(asset_row._mapping)) if asset_row is not None else None
        title, description = work_order_text(rule, asset, key.asset_id, key.metric, fired)
        priority = priority_for(rule.severity)
        statement = (
            insert(work_orders)
            .values(
                **_deadline_values(connection, priority, key.asset_id, now, self._sla),
                kind=WorkOrderKind.PREDICTIVE.value,
                status=WorkOrderStatus.REQUESTED.value,
                priority=priority.value,
                asset_id=key.asset_id,
                title=title,
                description=description,
                rule_id=key.rule_id,
                open_key=open_key(key.rule_id, key.asset_id),
                evidence=_evidence_json([evidence]),
                repeat_count=0,
                created_at=now,
                updated_at=now,
            )
            .returning(work_orders.c.id)
        )
        order_id = int(connection.execute(statement).scalar_one())
        _audit(
            connection,
            order_id,
            at=now,
            actor=RULES_ACTOR,
            from_status=None,
            to_status=WorkOrderStatus.REQUESTED,
            note=f"rule {key.rule_id} fired on {key.metric}",
        )
        return order_id

    def _resolved(self, connection: Connection, key: StateKey, event: RuleResolved) -> None:
        # The key's open alert (at most one), if it fired before this resolution: see
        # rules.alerting.resolves. A person's resolution stands.
        connection.execute(
            update(alerts)
            .where(
                alerts.c.rule_id == key.rule_id,
                alerts.c.asset_id == key.asset_id,
                alerts.c.metric == key.metric,
                alerts.c.fired_at <= event.at,
                alerts.c.status.in_(_OPEN_ALERT_VALUES),
            )
            .values(status=AlertStatus.RESOLVED.value, resolved_at=event.at, resolved_by=None)
        )

    def get_alert(self, alert_id: int) -> Alert:
        """Return an alert; raise NotFoundError if absent."""
        with self._engine.connect() as connection:
            return _read_alert(connection, alert_id)

    def list_alerts(
        self,
        *,
        status: AlertStatus | None = None,
        asset_id: str | None = None,
        rule_id: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> builtins.list[Alert]:
        """Return alerts newest first, before `before_id` (keyset pagination)."""
        query = select(alerts).order_by(alerts.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(alerts.c.status == AlertStatus(status).value)
        if asset_id is not None:
            query = query.where(alerts.c.asset_id == asset_id)
        if rule_id is not None:
            query = query.where(alerts.c.rule_id == rule_id)
        if before_id is not None:
            query = query.where(alerts.c.id < before_id)
        with self._engine.connect() as connection:
            return [_alert_from_row(row._mapping) for row in connection.execute(query)]

    def acknowledge(self, alert_id: int, actor: str, note: str | None, now: datetime) -> Alert:
        """Mark a firing alert acknowledged; InvalidTransitionError if it is not firing."""
        values: dict[str, Any] = {
            "status": AlertStatus.ACKNOWLEDGED.value,
            "acknowledged_at": now,
            "acknowledged_by": actor,
        }
        return self._transition(
            alert_id, [AlertStatus.FIRING.value], values, note, AlertStatus.ACKNOWLEDGED
        )

    def resolve(self, alert_id: int, actor: str, note: str | None, now: datetime) -> Alert:
        """Resolve an open alert by hand; InvalidTransitionError if already resolved."""
        values: dict[str, Any] = {
            "status": AlertStatus.RESOLVED.value,
            "resolved_at": now,
            "resolved_by": actor,
        }
        return self._transition(alert_id, _OPEN_ALERT_VALUES, values, note, AlertStatus.RESOLVED)

    def _transition(
        self,
        alert_id: int,
        allowed: builtins.list[str],
        values: dict[str, Any],
        note: str | None,
        target: AlertStatus,
    ) -> Alert:
        if note is not None:
            values["note"] = note
        # The status guard in the WHERE clause makes concurrent transitions race-free:
        # whichever commits second matches no row.
        with self._engine.begin() as connection:
            row = connection.execute(
                update(alerts)
                .where(alerts.c.id == alert_id, alerts.c.status.in_(allowed))
                .values(values)
                .returning(*alerts.c)
            ).first()
            if row is not None:
                return _alert_from_row(row._mapping)
            current = _read_alert(connection, alert_id)
        raise InvalidTransitionError(
            f"cannot move an alert that is {current.status.value} to {target.value}",
            status=current.status.value,
            target=target.value,
        )


class SqlWorkOrderRepository:
    """Work orders and their audit trail in a SQL database."""

    def __init__(
        self,
        engine: Engine,
        sla: SlaPolicy | None = None,
        on_transition: Sequence[TransitionHook] = (),
    ) -> None:
        self._engine = engine
        self._sla = sla or default_policy()
        self._on_transition = tuple(on_transition)

    def create(self, order: NewWorkOrder, now: datetime, actor: str = SYSTEM_ACTOR) -> WorkOrder:
        """Open a corrective or preventive work order by hand; predictive ones come from rules."""
        kind = WorkOrderKind(order.kind)
        if kind is WorkOrderKind.PREDICTIVE:
            raise ValidationError(
                "predictive work orders are opened by rules, not by hand", kind=kind.value
            )
        with self._engine.connect() as connection:
            known = connection.execute(
                select(assets.c.id).where(assets.c.id == order.asset_id)
            ).first()
        if known is None:
            raise ValidationError(
                f"asset {order.asset_id!r} is not registered", asset_id=order.asset_id
            )
        with self._engine.begin() as connection:
            order_id = int(
                connection.execute(
                    insert(work_orders)
                    .values(
                        **_deadline_values(
                            connection, order.priority, order.asset_id, now, self._sla
                        ),
                        kind=kind.value,
                        status=WorkOrderStatus.REQUESTED.value,
                        priority=order.priority.value,
                        asset_id=order.asset_id,
                        title=order.title,
                        description=order.description,
                        rule_id=None,
                        open_key=None,
                        evidence=[],
                        repeat_count=0,
                        created_at=now,
                        updated_at=now,
                        request=None
                        if order.request is None
                        else order.request.model_dump(mode="json"),
                    )
                    .returning(work_orders.c.id)
                ).scalar_one()
            )
            _audit(
                connection,
                order_id,
                at=now,
                actor=actor,
                from_status=None,
                to_status=WorkOrderStatus.REQUESTED,
            )
            return _read_order(connection, order_id)

    def get(self, order_id: int) -> WorkOrder:
        """Return a work order with the ids of its alerts; raise NotFoundError if absent."""
        with self._engine.connect() as connection:
            return _read_order(connection, order_id)

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
        """Return work orders newest first, before `before_id` (keyset pagination)."""
        query = select(work_orders).order_by(work_orders.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(work_orders.c.status == WorkOrderStatus(status).value)
        if kind is not None:
            query = query.where(work_orders.c.kind == WorkOrderKind(kind).value)
        if priority is not None:
            query = query.where(work_orders.c.priority == Priority(priority).value)
        if asset_id is not None:
            query = query.where(work_orders.c.asset_id == asset_id)
        if site is not None:
            query = query.where(
                work_orders.c.asset_id.in_(select(assets.c.id).where(assets.c.site == site))
            )
        if created_from is not None:
            query = query.where(work_orders.c.created_at >= created_from)
        if created_to is not None:
            query = query.where(work_orders.c.created_at < created_to)
        if rule_id is not None:
            query = query.where(work_orders.c.rule_id == rule_id)
        if technician_id is not None:
            query = query.where(work_orders.c.technician_id == technician_id)
        if before_id is not None:
            query = query.where(work_orders.c.id < before_id)
        with self._engine.connect() as connection:
            rows = [row._mapping for row in connection.execute(query)]
            alert_ids: dict[int, builtins.list[int]] = {row["id"]: [] for row in rows}
            if alert_ids:
                linked = connection.execute(
                    select(alerts.c.work_order_id, alerts.c.id)
                    .where(alerts.c.work_order_id.in_(list(alert_ids)))
                    .order_by(alerts.c.id)
                )
                for order_id, alert_id in linked:
                    alert_ids[order_id].append(alert_id)
        return [_order_from_row(row, alert_ids[row["id"]]) for row in rows]

    def events(self, order_id: int) -> builtins.list[WorkOrderEvent]:
        """Return a work order's audit trail, oldest first; NotFoundError if absent."""
        with self._engine.connect() as connection:
            _read_order(connection, order_id)
            rows = connection.execute(
                select(
                    work_order_events.c.at,
                    work_order_events.c.actor,
                    work_order_events.c.from_status,
                    work_order_events.c.to_status,
                    work_order_events.c.note,
                )
                .where(work_order_events.c.work_order_id == order_id)
                .order_by(work_order_events.c.id)
            )
            return [WorkOrderEvent.model_validate(dict(row._mapping)) for row in rows]

    def transition(
        self,
        order_id: int,
        action: Action,
        details: TransitionDetails,
        *,
        actor: str,
        now: datetime,
    ) -> WorkOrder:
        """Apply one lifecycle action; InvalidTransitionError (409) when the status forbids it.

        Nothing changes on a refusal. Resolving clears the order's open key, so the next
        firing of its rule opens (or reopens) an order; reopening counts a repeat failure.
        """
        check_details(action, details)
        current = self.get(order_id)
        target = next_status(current.status, action, current.held_from)
        values: dict[str, Any] = {"updated_at": now, **milestone_fields(current, action, now)}
        if action is Action.HOLD:
            values["held_from"] = current.status.value
        elif action is Action.RESUME:
            values["held_from"] = None
        elif action is Action.RESOLVE:
            values.update(resolved_at=now, resolution_note=details.note, open_key=None)
            if details.completion is not None:
                values["completion"] = details.completion.model_dump(mode="json")
        elif action is Action.CLOSE:
            completion, sign_off = check_closable(
                current, details, customer=self._customer_of(current.asset_id)
            )
            values.update(
                closed_at=now,
                completion=completion.model_dump(mode="json"),
                sign_off=None if sign_off is None else sign_off.model_dump(mode="json"),
            )
        elif action is Action.CANCEL:
            values["open_key"] = None
        elif action is Action.REOPEN:
            values.update(
                resolved_at=None,
                repeat_count=current.repeat_count + 1,
                open_key=_reopened_key(current),
            )
        return self._transition(
            current, target, actor=actor, note=details.note, now=now, values=values
        )

    def assign(
        self, order_id: int, technician_id: str, *, actor: str, note: str | None, now: datetime
    ) -> WorkOrder:
        """Give an order to a technician, audited; the status does not change.

        The caller checks the technician (core.technicians.check_assignment). Assigning the
        technician already assigned changes nothing; a closed or cancelled order is refused.
        """
        current = self.get(order_id)
        check_not_finished(current)
        if current.technician_id == technician_id:
            return current
        was = f" (was {current.technician_id!r})" if current.technician_id else ""
        return self._reassign(
            current,
            technician_id,
            actor=actor,
            note=_with_note(f"assigned to technician {technician_id!r}{was}", note),
            now=now,
        )

    def unassign(self, order_id: int, *, actor: str, note: str | None, now: datetime) -> WorkOrder:
        """Take an order off its technician, audited; nothing changes if nobody has it."""
        current = self.get(order_id)
        check_not_finished(current)
        if current.technician_id is None:
            return current
        return self._reassign(
            current,
            None,
            actor=actor,
            note=_with_note(f"unassigned from technician {current.technician_id!r}", note),
            now=now,
        )

    def _reassign(
        self,
        current: WorkOrder,
        technician_id: str | None,
        *,
        actor: str,
        note: str,
        now: datetime,
    ) -> WorkOrder:
        # Guarded like _transition: a concurrent close, cancel or reassignment in between
        # matches no row, and the audit never names the wrong previous technician.
        with self._engine.begin() as connection:
            result = connection.execute(
                update(work_orders)
                .where(
                    work_orders.c.id == current.id,
                    work_orders.c.status == current.status.value,
                    work_orders.c.technician_id.is_not_distinct_from(current.technician_id),
                )
                .values(
                    technician_id=technician_id,
                    assigned_at=None if technician_id is None else now,
                    updated_at=now,
                )
            )
            if result.rowcount == 0:
                raise ConflictError(
                    f"work order {current.id} changed while being updated; read it again",
                    work_order_id=current.id,
                )
            _audit(
                connection,
                current.id,
                at=now,
                actor=actor,
                from_status=current.status,
                to_status=current.status,
                note=note,
            )
            return _read_order(connection, current.id)

    def sweep_breaches(self, now: datetime, limit: int = 500) -> builtins.list[Escalation]:
        """Flag every SLA target missed by `now`; return the escalations this sweep made.

        Looks at orders not closed or cancelled with a deadline passed; a breach flagged
        before (by an earlier sweep, another process, or a late transition) is not again.
        """
        due = or_(
            work_orders.c.response_due_at <= now,
            work_orders.c.on_site_due_at <= now,
            work_orders.c.resolution_due_at <= now,
        )
        finished = [WorkOrderStatus.CLOSED.value, WorkOrderStatus.CANCELLED.value]
        escalated: builtins.list[Escalation] = []
        after = 0
        while True:
            with self._engine.begin() as connection:
                rows = connection.execute(
                    select(work_orders)
                    .where(due, work_orders.c.status.not_in(finished), work_orders.c.id > after)
                    .order_by(work_orders.c.id)
                    .limit(limit)
                ).all()
                for row in rows:
                    escalated += flag_breaches(connection, _order_from_row(row._mapping, []), now)
            if len(rows) < limit:
                return escalated
            after = rows[-1].id

    def escalations(
        self, *, work_order_id: int | None = None, before_id: int | None = None, limit: int = 100
    ) -> builtins.list[Escalation]:
        """Return SLA escalations newest first, before `before_id` (keyset pagination)."""
        query = select(sla_escalations).order_by(sla_escalations.c.id.desc()).limit(limit)
        if work_order_id is not None:
            query = query.where(sla_escalations.c.work_order_id == work_order_id)
        if before_id is not None:
            query = query.where(sla_escalations.c.id < before_id)
        with self._engine.connect() as connection:
            return [
                Escalation.model_validate(dict(row._mapping)) for row in connection.execute(query)
            ]

    def set_sla_override(
        self, customer: str, override: SlaPolicyOverride, now: datetime
    ) -> SlaPolicy:
        """Store a customer's SLA override (replacing any); return the policy it yields.

        Orders keep the deadlines they were opened with; the override applies to new ones.
        """
        document = override.model_dump(mode="json", exclude_unset=True)
        with self._engine.begin() as connection:
            updated = connection.execute(
                update(sla_overrides)
                .where(sla_overrides.c.customer == customer)
                .values(policy=document, updated_at=now)
            ).rowcount
            if not updated:
                connection.execute(
                    insert(sla_overrides).values(customer=customer, policy=document, updated_at=now)
                )
        return self._sla.merged(override)

    def sla_policy(self, customer: str | None = None) -> SlaPolicy:
        """Return the SLA policy in force for a customer (the base policy without one)."""
        if customer is None:
            return self._sla
        with self._engine.connect() as connection:
            override = connection.execute(
                select(sla_overrides.c.policy).where(sla_overrides.c.customer == customer)
            ).scalar()
        return (
            self._sla
            if override is None
            else self._sla.merged(SlaPolicyOverride.model_validate(override))
        )

    def _customer_of(self, asset_id: str) -> str | None:
        with self._engine.connect() as connection:
            customer = connection.execute(
                select(assets.c.customer).where(assets.c.id == asset_id)
            ).scalar()
        return None if customer is None else str(customer)

    def _transition(
        self,
        current: WorkOrder,
        target: WorkOrderStatus,
        *,
        actor: str,
        note: str | None,
        now: datetime,
        values: dict[str, Any],
    ) -> WorkOrder:
        # The status was checked outside the transaction (SQLite cannot upgrade a read to a
        # write when another writer got in between); the guard below makes the check hold.
        with self._engine.begin() as connection:
            try:
                result = connection.execute(
                    update(work_orders)
                    .where(
                        work_orders.c.id == current.id,
                        work_orders.c.status == current.status.value,
                    )
                    .values(status=target.value, **values)
                )
            except IntegrityError as error:
                if not is_unique_violation(error):
                    raise
                raise ConflictError(
                    f"work order {current.id} cannot be reopened: its rule has opened another "
                    "order on this asset since",
                    work_order_id=current.id,
                ) from None
            if result.rowcount == 0:
                raise ConflictError(
                    f"work order {current.id} changed while being updated; read it again",
                    work_order_id=current.id,
                )
            _audit(
                connection,
                current.id,
                at=now,
                actor=actor,
                from_status=current.status,
                to_status=target,
                note=note,
            )
            order = _read_order(connection, current.id)
            # A target met late is a breach even if no sweep ran while it was overdue.
            if new_breaches(_missed_by(order, now), set(order.breaches)):
                flag_breaches(connection, order, now)
                order = _read_order(connection, current.id)
            for hook in self._on_transition:
                hook(connection, order, from_status=current.status, actor=actor, note=note, now=now)
            return order
