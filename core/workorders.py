"""Work orders: the domain types every part of pmkeeper opens, links and resolves."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from core.errors import ConflictError, ValidationError
from core.priority import Priority
from core.sla import Breach, Deadlines


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


class InvalidTransitionError(ConflictError):
    """Raise when a work order cannot move from its status to the one asked for."""

    code = "invalid_transition"


class ClosureRefusedError(ConflictError):
    """Raise when a resolved work order lacks what closing it needs."""

    code = "closure_refused"


class Action(StrEnum):
    """What can be done to a work order; each has its own endpoint."""

    ACCEPT = "accept"
    SCHEDULE = "schedule"
    START = "start"
    HOLD = "hold"
    RESUME = "resume"
    RESOLVE = "resolve"
    CLOSE = "close"
    CANCEL = "cancel"
    REOPEN = "reopen"


_S = WorkOrderStatus

# Each action: the statuses it applies to, and the status it leads to. Resume leads back to
# where the order was when it was put on hold (None here).
LIFECYCLE: dict[Action, tuple[frozenset[WorkOrderStatus], WorkOrderStatus | None]] = {
    Action.ACCEPT: (frozenset({_S.REQUESTED, _S.REOPENED}), _S.ACCEPTED),
    Action.SCHEDULE: (frozenset({_S.ACCEPTED, _S.REOPENED}), _S.SCHEDULED),
    Action.START: (frozenset({_S.ACCEPTED, _S.SCHEDULED}), _S.IN_PROGRESS),
    Action.HOLD: (frozenset({_S.ACCEPTED, _S.SCHEDULED, _S.IN_PROGRESS}), _S.ON_HOLD),
    Action.RESUME: (frozenset({_S.ON_HOLD}), None),
    Action.RESOLVE: (frozenset({_S.IN_PROGRESS}), _S.RESOLVED),
    Action.CLOSE: (frozenset({_S.RESOLVED}), _S.CLOSED),
    Action.CANCEL: (
        frozenset({_S.REQUESTED, _S.ACCEPTED, _S.SCHEDULED, _S.ON_HOLD, _S.REOPENED}),
        _S.CANCELLED,
    ),
    Action.REOPEN: (frozenset({_S.RESOLVED}), _S.REOPENED),
}

# Actions whose audit entry must say why (the note is required).
NEEDS_REASON = frozenset({Action.HOLD, Action.CANCEL, Action.REOPEN})


def allowed_actions(status: WorkOrderStatus) -> list[Action]:
    """Return the actions a work order in `status` accepts, in lifecycle order."""
    return [action for action, (sources, _) in LIFECYCLE.items() if status in sources]


def next_status(
    status: WorkOrderStatus, action: Action, held_from: WorkOrderStatus | None = None
) -> WorkOrderStatus:
    """Return where `action` takes an order in `status`; InvalidTransitionError if nowhere."""
    sources, target = LIFECYCLE[action]
    if status not in sources:
        allowed = ", ".join(a.value for a in allowed_actions(status)) or "none"
        raise InvalidTransitionError(
            f"cannot {action.value} a work order that is {status.value} (allowed: {allowed})",
            status=status.value,
            action=action.value,
            allowed=[a.value for a in allowed_actions(status)],
        )
    if target is None:  # resume: back to where it was held
        return held_from if held_from is not None else WorkOrderStatus.ACCEPTED
    return target


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


class Channel(StrEnum):
    """How a corrective request reached the maintenance team."""

    PHONE = "phone"
    EMAIL = "email"
    PORTAL = "portal"
    WALK_IN = "walk_in"
    API = "api"


class Impact(StrEnum):
    """What the fault does to operations, as the requester reports it."""

    NONE = "none"
    DEGRADED = "degraded"
    STOPPED = "stopped"
    SAFETY = "safety"


class CorrectiveRequest(BaseModel):
    """What a reported fault comes with: who reported it, how, what and how bad."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Channel
    fault: str = Field(min_length=1, max_length=5_000)
    impact: Impact
    contact_name: str = Field(min_length=1, max_length=200)
    contact_phone: str | None = Field(default=None, min_length=3, max_length=50)
    contact_email: str | None = Field(
        default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
    )

    @model_validator(mode="after")
    def _reachable(self) -> CorrectiveRequest:
        if self.contact_phone is None and self.contact_email is None:
            raise ValueError("a contact needs a phone number or an e-mail address")
        return self


class PartUsed(BaseModel):
    """A part consumed by the work."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str = Field(min_length=1, max_length=64)
    quantity: float = Field(gt=0, le=1_000_000)


class Completion(BaseModel):
    """What the work found and took: recorded on resolution, required to close."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    findings: str = Field(min_length=1, max_length=10_000)
    failure_code: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
    labour_minutes: int = Field(ge=0, le=1_000_000)
    parts_used: list[PartUsed] = Field(default_factory=list, max_length=500)
    downtime_minutes: int = Field(ge=0, le=10_000_000)


class SignOff(BaseModel):
    """The customer's acceptance of the work on their asset."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    signed_at: AwareDatetime


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
    closed_at: datetime | None = None
    # SLA: deadlines fixed when the order was opened, and when each was actually met.
    response_due_at: datetime | None = None
    on_site_due_at: datetime | None = None
    resolution_due_at: datetime | None = None
    responded_at: datetime | None = None
    arrived_at: datetime | None = None
    breaches: list[Breach] = Field(default_factory=list)  # flagged, each exactly once
    request: CorrectiveRequest | None = None
    completion: Completion | None = None
    sign_off: SignOff | None = None
    # The status the order had when put on hold, where resuming takes it back.
    held_from: WorkOrderStatus | None = None
    # The technician who does the work (see core.technicians), and since when.
    technician_id: str | None = None
    assigned_at: datetime | None = None
    # Preventive orders: the maintenance plan that generated them, and the occurrence's due time.
    plan_id: str | None = None
    due_at: datetime | None = None


class WorkOrderEvent(BaseModel):
    """One entry of a work order's audit trail: who moved it, when, from where, to where, why."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    actor: str
    from_status: WorkOrderStatus | None
    to_status: WorkOrderStatus
    note: str | None = None


class Escalation(BaseModel):
    """A missed SLA target of one work order: flagged once, for on-call to act on."""

    model_config = ConfigDict(frozen=True)

    id: int
    work_order_id: int
    breach: Breach
    due_at: datetime
    at: datetime


class NewWorkOrder(BaseModel):
    """What it takes to open a work order by hand (kind corrective or preventive)."""

    model_config = ConfigDict(frozen=True)

    kind: WorkOrderKind
    priority: Priority
    asset_id: str
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    # Required for corrective work: the fault as reported.
    request: CorrectiveRequest | None = None

    @model_validator(mode="after")
    def _requested(self) -> NewWorkOrder:
        check_request(self.kind, self.request)
        return self


def check_request(kind: WorkOrderKind | str, request: CorrectiveRequest | None) -> None:
    """Refuse (ValueError) corrective work without its request, and a request on other work."""
    corrective = WorkOrderKind(kind) is WorkOrderKind.CORRECTIVE
    if corrective and request is None:
        raise ValueError(
            "a corrective work order needs its request: channel, fault, impact and contact"
        )
    if not corrective and request is not None:
        raise ValueError("only corrective work orders carry a request")


class TransitionDetails(BaseModel):
    """What one transition carries besides its action: a note, completion, sign-off."""

    model_config = ConfigDict(frozen=True)

    note: str | None = Field(default=None, max_length=10_000)
    completion: Completion | None = None
    sign_off: SignOff | None = None


def check_details(action: Action, details: TransitionDetails) -> None:
    """Refuse details the action does not take, and a missing reason where one is needed."""
    if action in NEEDS_REASON and not (details.note and details.note.strip()):
        raise ValidationError(f"{action.value} needs a reason in `note`", action=action.value)
    if details.completion is not None and action not in (Action.RESOLVE, Action.CLOSE):
        raise ValidationError(
            f"completion data belongs to resolve or close, not {action.value}",
            action=action.value,
        )
    if details.sign_off is not None and action is not Action.CLOSE:
        raise ValidationError("a sign-off belongs to close", action=action.value)


def check_closable(
    order: WorkOrder, details: TransitionDetails, *, customer: str | None
) -> tuple[Completion, SignOff | None]:
    """Return the completion and sign-off a close records; ClosureRefusedError if missing.

    Closing needs the completion data (given now or at resolution), and a sign-off when the
    asset belongs to a customer.
    """
    completion = details.completion or order.completion
    sign_off = details.sign_off or order.sign_off
    missing = []
    if completion is None:
        missing.append("completion (findings, failure code, labour, parts used, downtime)")
    if customer is not None and sign_off is None:
        missing.append(f"the sign-off of customer {customer!r}")
    if missing or completion is None:
        raise ClosureRefusedError(
            f"work order {order.id} cannot be closed without " + " and ".join(missing),
            missing=missing,
        )
    return completion, sign_off


def deadline_fields(deadlines: Deadlines) -> dict[str, datetime | None]:
    """Return a work order's SLA deadline fields from computed deadlines."""
    return {
        "response_due_at": deadlines.response_due,
        "on_site_due_at": deadlines.on_site_due,
        "resolution_due_at": deadlines.resolution_due,
    }


def milestone_fields(order: WorkOrder, action: Action, now: datetime) -> dict[str, datetime]:
    """Return the SLA actual times an action records: the first accept answers the call, the
    first start is the arrival on site."""
    if action is Action.ACCEPT and order.responded_at is None:
        return {"responded_at": now}
    if action is Action.START and order.arrived_at is None:
        return {"arrived_at": now}
    return {}
