"""Request and response bodies of the API, suffixed Create, Update and Read."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from core.assets import ASSET_ID_PATTERN, Asset, Criticality
from core.deadletters import DeadLetter
from core.history import HistoryKind
from core.priority import Priority
from core.sla import Breach
from core.telemetry import TelemetryBucket, TelemetryPoint
from core.workorders import (
    Action,
    Completion,
    CorrectiveRequest,
    NewWorkOrder,
    SignOff,
    TransitionDetails,
    WorkOrder,
    WorkOrderKind,
    WorkOrderStatus,
    allowed_actions,
    check_request,
)
from rules.alerting import Alert, AlertStatus
from rules.model import Rule, Severity

MAX_TAGS = 50
MAX_TAG_KEY = 100
MAX_TAG_VALUE = 200


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _check_tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    for key, value in tags.items():
        if not 1 <= len(key) <= MAX_TAG_KEY:
            raise ValueError(f"tag names are 1 to {MAX_TAG_KEY} characters")
        if len(value) > MAX_TAG_VALUE:
            raise ValueError(f"tag values are at most {MAX_TAG_VALUE} characters")
    return tags


Tags = Annotated[dict[str, str], AfterValidator(_check_tags)]


class AssetCreate(BaseModel):
    """A new asset, as a planner registers it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ASSET_ID_PATTERN, examples=["pump-17"])
    name: str = Field(min_length=1, max_length=200, examples=["Feed pump 17"])
    type: str = Field(min_length=1, max_length=100, examples=["centrifugal_pump"])
    site: str = Field(min_length=1, max_length=100, examples=["plant-north"])
    location: str | None = Field(default=None, max_length=200)
    customer: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=200)
    serial: str | None = Field(default=None, max_length=200)
    commissioned_at: AwareDatetime | None = None
    warranty_until: AwareDatetime | None = None
    criticality: Criticality = Criticality.MEDIUM
    tags: Tags = Field(default_factory=dict)

    def to_asset(self) -> Asset:
        """Return the domain asset this body describes."""
        return Asset.model_validate(self.model_dump())


class AssetUpdate(BaseModel):
    """Changes to an asset: only the fields sent change, `null` clears an optional field."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    type: str | None = Field(default=None, min_length=1, max_length=100)
    site: str | None = Field(default=None, min_length=1, max_length=100)
    location: str | None = Field(default=None, max_length=200)
    customer: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=200)
    serial: str | None = Field(default=None, max_length=200)
    commissioned_at: AwareDatetime | None = None
    warranty_until: AwareDatetime | None = None
    criticality: Criticality | None = None
    tags: Tags | None = None

    @field_validator("name", "type", "site", "criticality", "tags", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Defaults are not validated, so this only fires for an explicit JSON null.
        if value is None:
            raise ValueError("this field cannot be cleared; leave it out to keep it")
        return value

    def changes(self) -> dict[str, Any]:
        """Return only the fields the client sent."""
        return self.model_dump(exclude_unset=True)


class AssetRead(BaseModel):
    """An asset as the API shows it."""

    id: str
    name: str
    type: str
    site: str
    location: str | None
    customer: str | None
    model: str | None
    serial: str | None
    commissioned_at: datetime | None
    warranty_until: datetime | None
    criticality: Criticality
    tags: dict[str, str]
    auto_registered: bool = Field(description="Created by ingest for an unknown asset id")
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_asset(cls, asset: Asset) -> AssetRead:
        """Return the API view of a domain asset, times in UTC."""
        data = asset.model_dump()
        for name in ("commissioned_at", "warranty_until", "created_at", "updated_at"):
            data[name] = _utc(data[name])
        return cls.model_validate(data)


class AssetListRead(BaseModel):
    """A page of assets ordered by id; pass `next_cursor` as `cursor` for the next page."""

    items: list[AssetRead]
    next_cursor: str | None


class DeadLetterRead(BaseModel):
    """A refused message with the reason it was refused."""

    id: int
    topic: str
    asset_id: str | None
    code: str
    reason: str
    received_at: datetime
    payload_size: int = Field(description="Size of the payload as received, in bytes")
    payload: str = Field(description="The kept payload as UTF-8, undecodable bytes replaced")
    payload_base64: str = Field(description="The kept payload, exactly")
    truncated: bool = Field(description="Whether only the start of the payload was kept")

    @classmethod
    def from_letter(cls, letter: DeadLetter) -> DeadLetterRead:
        """Return the API view of a dead letter."""
        if letter.id is None:
            raise ValueError("a stored dead letter has an id")
        return cls(
            id=letter.id,
            topic=letter.topic,
            asset_id=letter.asset_id,
            code=letter.code,
            reason=letter.reason,
            received_at=letter.received_at.astimezone(UTC),
            payload_size=letter.payload_size,
            payload=letter.payload.decode("utf-8", errors="replace"),
            payload_base64=base64.b64encode(letter.payload).decode("ascii"),
            truncated=letter.payload_size > len(letter.payload),
        )


class DeadLetterListRead(BaseModel):
    """A page of dead letters, newest first; pass `next_cursor` as `cursor` for older ones."""

    items: list[DeadLetterRead]
    next_cursor: str | None


class TelemetryPointRead(BaseModel):
    """One point of a series; downsampled points also carry min, max and count."""

    ts: datetime = Field(description="Event time (raw) or interval start (downsampled), UTC")
    value: float = Field(description="The reading, or the mean over the interval")
    min: float | None = None
    max: float | None = None
    count: int | None = None

    @classmethod
    def from_point(cls, point: TelemetryPoint) -> TelemetryPointRead:
        """Return the API view of a raw point."""
        return cls(ts=point.at.astimezone(UTC), value=point.value)

    @classmethod
    def from_bucket(cls, bucket: TelemetryBucket) -> TelemetryPointRead:
        """Return the API view of an interval's aggregates."""
        return cls(
            ts=bucket.start_at.astimezone(UTC),
            value=bucket.mean,
            min=bucket.min,
            max=bucket.max,
            count=bucket.count,
        )


class TelemetryRead(BaseModel):
    """One metric of one asset over [start, end)."""

    asset_id: str
    metric: str
    start: datetime
    end: datetime
    every_s: float | None = Field(default=None, description="Interval length, if downsampled")
    points: list[TelemetryPointRead]


class LatestTelemetryRead(BaseModel):
    """The newest point of each metric of an asset."""

    asset_id: str
    metrics: dict[str, TelemetryPointRead]


class HealthRead(BaseModel):
    """Liveness: the process answers."""

    status: Literal["ok"] = "ok"


class ReadinessRead(BaseModel):
    """Readiness: whether every dependency answers, and each one's result."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, bool]


class RuleCreate(Rule):
    """A rule definition, as created or replaced (see docs/rules.md for its semantics)."""


class RuleRead(Rule):
    """A stored rule."""

    @classmethod
    def from_rule(cls, rule: Rule) -> RuleRead:
        """Return the API view of a rule."""
        return cls.model_validate(rule.model_dump())


class RuleListRead(BaseModel):
    """A page of rules ordered by id; pass `next_cursor` as `cursor` for the next page."""

    items: list[RuleRead]
    next_cursor: str | None


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# Times the API answers with, always in UTC whatever zone the store handed back.
UtcTime = Annotated[datetime, AfterValidator(_to_utc)]
MAX_NOTE = 10_000


class EvidencePointRead(BaseModel):
    """One reading that made a rule fire."""

    ts: UtcTime
    value: float


class AlertRead(BaseModel):
    """An alert: a rule fired on one (asset, metric); what, when, why and what became of it."""

    id: int
    rule_id: str
    asset_id: str
    metric: str
    severity: Severity
    status: AlertStatus
    episode: int = Field(description="The rule episode that opened the alert")
    last_episode: int = Field(description="The latest episode folded into it")
    fired_at: UtcTime = Field(description="When the rule last fired into this alert")
    value: float
    threshold: float | None
    predicted_crossing_at: UtcTime | None
    evidence: list[EvidencePointRead]
    suppressed: bool = Field(description="Fired while the asset had work in progress: not paged")
    flapping: bool = Field(description="Fired again soon after clearing; folded in, not paged")
    fire_count: int
    work_order_id: int | None
    recorded_at: UtcTime
    acknowledged_at: UtcTime | None
    acknowledged_by: str | None
    resolved_at: UtcTime | None
    resolved_by: str | None = Field(description="Who resolved it; null when the rule cleared")
    note: str | None

    @classmethod
    def from_alert(cls, alert: Alert) -> AlertRead:
        """Return the API view of an alert, times in UTC."""
        return cls.model_validate(alert.model_dump())


class AlertListRead(BaseModel):
    """A page of alerts, newest first; pass `next_cursor` as `cursor` for older ones."""

    items: list[AlertRead]
    next_cursor: str | None


class AlertTransitionCreate(BaseModel):
    """An acknowledgement or resolution of an alert, with an optional note."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=MAX_NOTE)


class WorkOrderCreate(BaseModel):
    """A work order opened by hand; predictive ones are opened by rules only."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["corrective", "preventive"]
    priority: Priority
    asset_id: str = Field(pattern=ASSET_ID_PATTERN, examples=["pump-17"])
    title: str = Field(min_length=1, max_length=200, examples=["Seal leaking"])
    description: str = Field(default="", max_length=MAX_NOTE)
    request: CorrectiveRequest | None = Field(
        default=None, description="Required for corrective orders: the fault as reported"
    )

    @model_validator(mode="after")
    def _requested(self) -> WorkOrderCreate:
        check_request(self.kind, self.request)
        return self

    def to_new_work_order(self) -> NewWorkOrder:
        """Return the domain request this body describes."""
        return NewWorkOrder.model_validate(self.model_dump())


class EvidenceRead(BaseModel):
    """One firing of a rule, kept on the predictive work order it fed."""

    alert_id: int | None
    metric: str
    fired_at: UtcTime
    value: float
    threshold: float | None
    predicted_crossing_at: UtcTime | None
    points: list[EvidencePointRead]


class WorkOrderRead(BaseModel):
    """A work order as the API shows it."""

    id: int
    kind: WorkOrderKind
    status: WorkOrderStatus
    priority: Priority
    asset_id: str
    title: str
    description: str
    rule_id: str | None = Field(description="The rule that opened it (predictive orders)")
    alert_ids: list[int]
    evidence: list[EvidenceRead]
    repeat_count: int = Field(description="Times the fault came back soon after a resolution")
    created_at: UtcTime
    updated_at: UtcTime
    resolved_at: UtcTime | None
    resolution_note: str | None
    closed_at: UtcTime | None
    request: CorrectiveRequest | None
    completion: Completion | None
    sign_off: SignOff | None
    held_from: WorkOrderStatus | None = Field(description="Where resuming an on-hold order goes")
    actions: list[Action] = Field(description="What can be done to the order now")
    response_due_at: UtcTime | None = Field(description="SLA: answer by (None: no target)")
    on_site_due_at: UtcTime | None = Field(description="SLA: on site by")
    resolution_due_at: UtcTime | None = Field(description="SLA: resolved by")
    responded_at: UtcTime | None = Field(description="When the order was first accepted")
    arrived_at: UtcTime | None = Field(description="When the work first started on site")
    breaches: list[Breach] = Field(description="SLA targets missed, each flagged once")
    breached: bool = Field(description="Whether any SLA target was missed")
    technician_id: str | None = Field(default=None, description="Who does the work; null: nobody")
    assigned_at: UtcTime | None = Field(default=None, description="When they were assigned")
    plan_id: str | None = Field(
        default=None, description="The maintenance plan that generated it (preventive orders)"
    )
    due_at: UtcTime | None = Field(
        default=None, description="When the plan's occurrence falls due (preventive orders)"
    )

    @classmethod
    def from_work_order(cls, order: WorkOrder) -> WorkOrderRead:
        """Return the API view of a work order, times in UTC."""
        # The order's own attributes, nested models as they are: a model_dump() first would
        # convert the whole order twice, and this runs 50 times per page of a list.
        return cls.model_validate(
            {
                **order.__dict__,
                "actions": allowed_actions(order.status),
                "breached": bool(order.breaches),
            },
            from_attributes=True,
        )


class EscalationRead(BaseModel):
    """A missed SLA target: raised once, for on-call to act on."""

    id: int
    work_order_id: int
    breach: Breach
    due_at: UtcTime
    at: UtcTime = Field(description="When the breach was flagged")


class EscalationListRead(BaseModel):
    """A page of escalations, newest first; pass `next_cursor` as `cursor` for older ones."""

    items: list[EscalationRead]
    next_cursor: str | None


class WorkOrderListRead(BaseModel):
    """A page of work orders, newest first; pass `next_cursor` as `cursor` for older ones."""

    items: list[WorkOrderRead]
    next_cursor: str | None


class WorkOrderEventRead(BaseModel):
    """One transition of a work order, as audited."""

    at: UtcTime
    actor: str
    from_status: WorkOrderStatus | None = Field(description="Null for the creation")
    to_status: WorkOrderStatus
    note: str | None


class WorkOrderEventListRead(BaseModel):
    """A work order's audit trail, oldest first."""

    items: list[WorkOrderEventRead]


class TransitionCreate(BaseModel):
    """A lifecycle action with an optional note for the audit trail."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=MAX_NOTE)

    def details(self) -> TransitionDetails:
        """Return the domain details of this transition."""
        return TransitionDetails.model_validate(self.model_dump(exclude_none=True))


class ReasonCreate(TransitionCreate):
    """A lifecycle action that must say why (hold, cancel, reopen)."""

    note: str = Field(min_length=1, max_length=MAX_NOTE, description="Why: kept in the audit")


class WorkOrderResolveCreate(TransitionCreate):
    """The resolution of a work order: a note and, if known now, the completion data."""

    completion: Completion | None = None


class WorkOrderCloseCreate(TransitionCreate):
    """The closure: completion data unless given at resolution, and the customer's sign-off
    when the asset belongs to a customer."""

    completion: Completion | None = None
    sign_off: SignOff | None = None


class BacktestAlertRead(BaseModel):
    """An alert a rule would have opened in a backtest, and how it stood at the end."""

    asset_id: str
    metric: str
    fired_at: UtcTime = Field(description="When the rule last fired into this alert")
    episode: int = Field(description="The rule episode that opened the alert")
    value: float
    threshold: float | None
    predicted_crossing_at: UtcTime | None
    resolved_at: UtcTime | None = Field(description="Null when still firing at `end`")
    fire_count: int = Field(description="Firings folded into this alert, the first included")
    flapping: bool = Field(description="Fired again soon after clearing; folded in, not paged")


class BacktestWorkOrderRead(BaseModel):
    """The predictive work order a rule would have opened on one asset in a backtest."""

    asset_id: str
    opened_at: UtcTime
    alert_count: int = Field(description="Distinct alerts linked to the order")
    priority: Priority


class BacktestRead(BaseModel):
    """What a rule would have done over [start, end) of stored telemetry; nothing is written."""

    rule_id: str
    start: UtcTime
    end: UtcTime
    assets_evaluated: int = Field(description="Assets the rule's selector picks")
    readings: int = Field(description="Readings of the rule's metric replayed")
    alerts: list[BacktestAlertRead]
    work_orders: list[BacktestWorkOrderRead]
    alert_count: int
    work_order_count: int


class HistoryEntryRead(BaseModel):
    """One thing that happened to an asset."""

    at: UtcTime
    kind: HistoryKind
    id: int = Field(description="Of the audit row, alert or ledger entry behind the entry")
    summary: str
    work_order_id: int | None
    alert_id: int | None
    status: str | None = Field(description="The status moved to, or the alert's status now")
    actor: str | None
    note: str | None


class HistoryListRead(BaseModel):
    """A page of an asset's history, oldest first; pass `next_cursor` as `cursor` for more."""

    items: list[HistoryEntryRead]
    next_cursor: str | None
