"""Request and response bodies of the API, suffixed Create, Update and Read."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from core.assets import ASSET_ID_PATTERN, Asset, Criticality
from core.deadletters import DeadLetter
from core.telemetry import TelemetryBucket, TelemetryPoint
from rules.model import Rule

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
