"""Work orders: the domain types every part of pmkeeper opens, links and resolves."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from core.errors import ConflictError


class WorkOrderKind(StrEnum):
    """Where a work order came from."""

    PREDICTIVE = "predictive"  # a rule fired
    PREVENTIVE = "preventive"  # a maintenance plan fell due
    CORRECTIVE = "corrective"  # somebody reported a fault


class WorkOrderStatus(StrEnum):
    """Where a work order stands in its lifecycle."""

    REQUESTED = "requested"
    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    ON_HOLD = "on_hold"
    RESOLVED = "resolved"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    REOPENED = "reopened"


# Statuses in which the work is still to be done: a re-fire adds evidence to such an order.
OPEN_STATUSES = frozenset(
    {
        WorkOrderStatus.REQUESTED,
        WorkOrderStatus.ACCEPTED,
        WorkOrderStatus.SCHEDULED,
        WorkOrderStatus.IN_PROGRESS,
        WorkOrderStatus.ON_HOLD,
        WorkOrderStatus.REOPENED,
    }
)

# The transitions this release implements; the full lifecycle arrives with issue 4.
_STARTABLE = frozenset(
    {
        WorkOrderStatus.REQUESTED,
        WorkOrderStatus.ACCEPTED,
        WorkOrderStatus.SCHEDULED,
        WorkOrderStatus.REOPENED,
        WorkOrderStatus.ON_HOLD,
    }
)


class Priority(StrEnum):
    """How urgent a work order is; SLA targets hang off it."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class InvalidTransitionError(ConflictError):
    """Raise when a work order cannot move from its status to the one asked for."""

    code = "invalid_transition"


class EvidencePoint(BaseModel):
    """One reading that made a rule fire."""

    model_config = ConfigDict(frozen=True)

    ts: datetime
    value: float


class Evidence(BaseModel):
    """Why a predictive work order exists: one firing of its rule."""

    model_config = ConfigDict(frozen=True)

    alert_id: int | None = None
    metric: str
    fired_at: datetime
    value: float
    threshold: float | None = None
    predicted_crossing_at: datetime | None = None
    points: list[EvidencePoint] = Field(default_factory=list)


class WorkOrder(BaseModel):
    """A piece of maintenance work on one asset."""

    model_config = ConfigDict(frozen=True)

    id: int
    kind: WorkOrderKind
    status: WorkOrderStatus
    priority: Priority
    asset_id: str
    title: str
    description: str
    rule_id: str | None = None
    alert_ids: list[int] = Field(default_factory=list)
    evidence: list[Evidence] = Field(default_factory=list)
    # How often the fault came back within the reopen window after being resolved.
    repeat_count: int = 0
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None = None
    resolution_note: str | None = None


class NewWorkOrder(BaseModel):
    """What it takes to open a work order by hand (kind corrective or preventive)."""

    model_config = ConfigDict(frozen=True)

    kind: WorkOrderKind
    priority: Priority
    asset_id: str
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)


def check_start(status: WorkOrderStatus) -> None:
    """Refuse to start work that is finished or already under way."""
    if status not in _STARTABLE:
        raise InvalidTransitionError(
            f"cannot start a work order that is {status.value}",
            status=status.value,
            target=WorkOrderStatus.IN_PROGRESS.value,
        )


def check_resolve(status: WorkOrderStatus) -> None:
    """Refuse to resolve work that is not open."""
    if status not in OPEN_STATUSES:
        raise InvalidTransitionError(
            f"cannot resolve a work order that is {status.value}",
            status=status.value,
            target=WorkOrderStatus.RESOLVED.value,
        )
