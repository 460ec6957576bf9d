"""Alerts and the pure decisions that turn rule events into alerts and work orders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeGuard

from pydantic import BaseModel, ConfigDict, Field

from core.assets import Asset
from core.priority import Priority
from core.workorders import (
    Evidence,
    EvidencePoint,
    WorkOrder,
    WorkOrderStatus,
)
from rules.evaluate import RuleFired, RuleResolved, to_datetime
from rules.model import PRIORITY_BY_SEVERITY, Rule, Severity


class AlertStatus(StrEnum):
    """Where an alert stands: firing, then acknowledged by a person, then resolved."""

    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


OPEN_ALERT_STATUSES = frozenset({AlertStatus.FIRING, AlertStatus.ACKNOWLEDGED})


class Alert(BaseModel):
    """A rule fired on one (asset, metric): what, when, why, and what became of it."""

    model_config = ConfigDict(frozen=True)

    id: int
    rule_id: str
    asset_id: str
    metric: str
    severity: Severity
    status: AlertStatus
    # The rule episode that opened the alert, and the latest one folded into it (flapping).
    episode: int
    last_episode: int
    fired_at: datetime
    value: float
    threshold: float | None = None
    predicted_crossing_at: datetime | None = None
    evidence: list[EvidencePoint] = Field(default_factory=list)
    # Recorded while the asset had a work order in progress: nobody is paged for it.
    suppressed: bool = False
    # The rule fired again soon after clearing; the re-fires were folded into this alert.
    flapping: bool = False
    fire_count: int = 1
    work_order_id: int | None = None
    recorded_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None  # None when the rule cleared it
    note: str | None = None


class AlertPolicy(BaseModel):
    """How alerts are damped and how predictive work orders recur."""

    model_config = ConfigDict(frozen=True)

    # A re-fire this soon after the key's last alert cleared reopens that alert (flapping)
    # instead of opening a new one and paging again.
    flap_window: timedelta = timedelta(minutes=15)
    # A re-fire this soon after the (rule, asset) work order was resolved reopens it and
    # counts a repeat failure.
    reopen_window: timedelta = timedelta(days=7)


def is_flap(previous: Alert | None, fired_at: datetime, policy: AlertPolicy) -> bool:
    """Tell whether a firing should be folded into the key's previous, resolved alert."""
    if previous is None or previous.status is not AlertStatus.RESOLVED:
        return False
    if previous.resolved_by is not None or previous.resolved_at is None:
        return False  # a person resolved it: a new firing is news, not flapping
    return fired_at - previous.resolved_at <= policy.flap_window


def is_replay(previous: Alert | None, fired: RuleFired) -> TypeGuard[Alert]:
    """Tell whether a firing is already recorded in the key's latest alert.

    By event time, not episode number: a key's firings only move forward in event time,
    whereas its episode count starts over if the rule is deleted and created again.
    """
    return previous is not None and previous.fired_at >= fired.at


def resolves(alert: Alert, resolved: RuleResolved) -> bool:
    """Tell whether a rule's resolution closes this alert (its key's latest).

    Only an open alert that fired before the resolution: a replayed, older resolution must
    not close a newer alert, and a person's resolution stands.
    """
    return alert.status in OPEN_ALERT_STATUSES and alert.fired_at <= resolved.at


def should_reopen(order: WorkOrder | None, fired_at: datetime, policy: AlertPolicy) -> bool:
    """Tell whether a firing reopens a resolved predictive work order (a repeat failure)."""
    if order is None or order.status is not WorkOrderStatus.RESOLVED or order.resolved_at is None:
        return False
    return fired_at - order.resolved_at <= policy.reopen_window


def priority_for(severity: Severity) -> Priority:
    """Map a rule's severity onto work-order priority."""
    return Priority(PRIORITY_BY_SEVERITY[severity])


def evidence_points(fired: RuleFired) -> list[EvidencePoint]:
    """Turn the readings that fired a rule into evidence points."""
    return [EvidencePoint(ts=to_datetime(ts), value=value) for ts, value in fired.evidence]


def evidence_for(fired: RuleFired, metric: str, alert_id: int | None) -> Evidence:
    """Summarise one firing as work-order evidence."""
    return Evidence(
        alert_id=alert_id,
        metric=metric,
        fired_at=fired.at,
        value=fired.value,
        threshold=fired.threshold,
        predicted_crossing_at=fired.predicted_crossing_at,
        points=evidence_points(fired),
    )


def work_order_text(
    rule: Rule, asset: Asset | None, asset_id: str, metric: str, fired: RuleFired
) -> tuple[str, str]:
    """Render a predictive work order's title and description from its template."""
    where = f"{asset.name} ({asset_id}) at {asset.site}" if asset else asset_id
    title = f"[{rule.severity.value}] {rule.name}: {asset.name if asset else asset_id}"[:200]
    lines = [
        f"Rule {rule.id!r} ({rule.name}) fired on {where}.",
        f"Metric {metric} was {fired.value:g} at {fired.at.isoformat()}"
        + (f"; the threshold is {fired.threshold:g}." if fired.threshold is not None else "."),
    ]
    if fired.predicted_crossing_at is not None:
        lines.append(
            "The trend predicts the threshold will be crossed at "
            f"{fired.predicted_crossing_at.isoformat()}: inspect before then."
        )
    if fired.evidence:
        first, last = fired.evidence[0], fired.evidence[-1]
        lines.append(
            f"Evidence: {len(fired.evidence)} readings from {first[1]:g} to {last[1]:g}; "
            "see the linked alert for the full window."
        )
    return title, "\n".join(lines)


class AlertAction(StrEnum):
    """What a firing does to the key's alerts."""

    SKIP = "skip"  # already recorded: a replay after a restart or a redelivery
    OPEN = "open"  # a new alert
    FOLD = "fold"  # folded into the previous alert (still open, or flapping)


class OrderAction(StrEnum):
    """What a firing does to the (rule, asset) predictive work order."""

    NONE = "none"
    APPEND = "append"  # add evidence to the open order
    REOPEN = "reopen"  # a repeat failure within the reopen window
    CREATE = "create"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to record for one firing."""

    alert: AlertAction
    order: OrderAction
    suppressed: bool
    flapping: bool

    @property
    def pages(self) -> bool:
        """Tell whether somebody should be paged: a new alert on an asset not in maintenance."""
        return self.alert is AlertAction.OPEN and not self.suppressed


def decide(
    fired: RuleFired,
    *,
    previous_alert: Alert | None,
    open_order: WorkOrder | None,
    last_resolved_order: WorkOrder | None,
    under_maintenance: bool,
    policy: AlertPolicy,
) -> Decision:
    """Decide what one firing records; the same answer live, in a backtest and in a replay.

    - `previous_alert` is the key's latest alert, `open_order` the (rule, asset) predictive
      order still open, `last_resolved_order` the latest resolved one.
    - A firing on an asset with work in progress is suppressed: recorded, not paged, and it
      opens no new order (the technician is already there); it still adds evidence to an
      open order.
    """
    if is_replay(previous_alert, fired):
        return Decision(AlertAction.SKIP, OrderAction.NONE, previous_alert.suppressed, False)
    flapping = is_flap(previous_alert, fired.at, policy)
    still_open = previous_alert is not None and previous_alert.status in OPEN_ALERT_STATUSES
    action = AlertAction.FOLD if flapping or still_open else AlertAction.OPEN
    if open_order is not None:
        order = OrderAction.APPEND
    elif under_maintenance:
        order = OrderAction.NONE
    elif should_reopen(last_resolved_order, fired.at, policy):
        order = OrderAction.REOPEN
    else:
        order = OrderAction.CREATE
    return Decision(action, order, under_maintenance, flapping)


def folded(previous: Alert, fired: RuleFired, decision: Decision) -> dict[str, Any]:
    """Return the fields a firing folded into `previous` changes (live, fake and backtest).

    The alert fires again, so it wants a new acknowledgement as well as a new resolution.
    """
    return {
        "status": AlertStatus.FIRING,
        "last_episode": fired.episode,
        "fire_count": previous.fire_count + 1,
        "flapping": previous.flapping or decision.flapping,
        "suppressed": decision.suppressed,
        "fired_at": fired.at,
        "value": fired.value,
        "threshold": fired.threshold,
        "predicted_crossing_at": fired.predicted_crossing_at,
        "evidence": evidence_points(fired),
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
    }
