"""Ports the rules engine needs: rule definitions, states, alerts and work orders."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from core.priority import Priority
from core.sla import SlaPolicy, SlaPolicyOverride
from core.workorders import (
    Action,
    Escalation,
    NewWorkOrder,
    TransitionDetails,
    WorkOrder,
    WorkOrderEvent,
    WorkOrderKind,
    WorkOrderStatus,
)
from rules.alerting import Alert, AlertStatus
from rules.engine import KeyedOutcome, StateKey
from rules.evaluate import RuleState
from rules.model import Rule


class RuleRepository(Protocol):
    """Rule definitions, by id."""

    def add(self, rule: Rule) -> Rule:
        """Insert a new rule; raise ConflictError if the id exists."""
        ...

    def get(self, rule_id: str) -> Rule:
        """Return a rule; raise NotFoundError if absent."""
        ...

    def replace(self, rule: Rule) -> Rule:
        """Replace a rule's whole definition; raise NotFoundError if absent."""
        ...

    def delete(self, rule_id: str) -> None:
        """Delete a rule; raise NotFoundError if absent."""
        ...

    def list(self, *, after_id: str | None = None, limit: int = 100) -> builtins.list[Rule]:
        """Return rules ordered by id, after `after_id` (keyset pagination)."""
        ...


class AlertStore(Protocol):
    """Rule states, alerts and the predictive work orders they open, kept together.

    `record` is one transaction: the states, the alerts and the work-order changes of a
    batch are all stored, or none is, so a crash can neither lose an alert nor fire it twice.
    """

    def load_states(self) -> dict[StateKey, RuleState]:
        """Return every persisted rule state (windows are rebuilt from telemetry)."""
        ...

    def record(self, outcomes: Sequence[KeyedOutcome], now: datetime) -> list[Alert]:
        """Persist states and turn their events into alerts and work orders, atomically.

        Return the alerts opened or reopened (with `suppressed` set when nobody should be
        paged). Replaying an outcome already recorded changes nothing.
        """
        ...

    def get_alert(self, alert_id: int) -> Alert:
        """Return an alert; raise NotFoundError if absent."""
        ...

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
        ...

    def acknowledge(self, alert_id: int, actor: str, note: str | None, now: datetime) -> Alert:
        """Mark a firing alert acknowledged; InvalidTransitionError if it is not firing."""
        ...

    def resolve(self, alert_id: int, actor: str, note: str | None, now: datetime) -> Alert:
        """Resolve an open alert by hand; InvalidTransitionError if already resolved."""
        ...


class WorkOrderRepository(Protocol):
    """Work orders: create, read, list, and move through their lifecycle."""

    def create(self, order: NewWorkOrder, now: datetime, actor: str = "system") -> WorkOrder:
        """Open a work order by hand; `actor` is who the audit trail names."""
        ...

    def get(self, order_id: int) -> WorkOrder:
        """Return a work order; raise NotFoundError if absent."""
        ...

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
        """Return work orders newest first, before `before_id` (keyset pagination), created in
        [created_from, created_to) when given, on the assets of `site` when given, assigned
        to `technician_id` when given."""
        ...

    def escalations(
        self, *, work_order_id: int | None = None, before_id: int | None = None, limit: int = 100
    ) -> builtins.list[Escalation]:
        """Return SLA escalations newest first, before `before_id` (keyset pagination)."""
        ...

    def sla_policy(self, customer: str | None = None) -> SlaPolicy:
        """Return the SLA policy in force for a customer (the base policy without one)."""
        ...

    def set_sla_override(
        self, customer: str, override: SlaPolicyOverride, now: datetime
    ) -> SlaPolicy:
        """Store a customer's SLA override; return the policy it yields for new orders."""
        ...

    def events(self, order_id: int) -> builtins.list[WorkOrderEvent]:
        """Return a work order's audit trail, oldest first; NotFoundError if absent."""
        ...

    def transition(
        self,
        order_id: int,
        action: Action,
        details: TransitionDetails,
        *,
        actor: str,
        now: datetime,
    ) -> WorkOrder:
        """Apply one lifecycle action (`core.workorders.LIFECYCLE`), audited; nothing changes
        on a refusal (InvalidTransitionError, ClosureRefusedError, ValidationError)."""
        ...

    def assign(
        self, order_id: int, technician_id: str, *, actor: str, note: str | None, now: datetime
    ) -> WorkOrder:
        """Give an order to a technician (checked by the caller), audited, status unchanged;
        WorkOrderFinishedError if it is closed or cancelled."""
        ...

    def unassign(self, order_id: int, *, actor: str, note: str | None, now: datetime) -> WorkOrder:
        """Take an order off its technician, audited; nothing changes if nobody has it."""
        ...
