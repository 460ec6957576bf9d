"""The asset registry's domain type."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

ASSET_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_ASSET_ID_RE = re.compile(ASSET_ID_PATTERN)


def is_valid_asset_id(value: str) -> bool:
    """Tell whether `value` can name an asset (and so an MQTT topic level)."""
    # fullmatch: with match, `$` would also accept a trailing newline.
    return bool(_ASSET_ID_RE.fullmatch(value))


class Criticality(StrEnum):
    """How much an asset's failure hurts; drives priorities later."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Asset(BaseModel):
    """A piece of equipment deployed at a site."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=ASSET_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=100)
    site: str = Field(min_length=1, max_length=100)
    location: str | None = Field(default=None, max_length=200)
    customer: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=200)
    serial: str | None = Field(default=None, max_length=200)
    commissioned_at: datetime | None = None
    warranty_until: datetime | None = None
    criticality: Criticality = Criticality.MEDIUM
    tags: dict[str, str] = Field(default_factory=dict)
    auto_registered: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @field_validator("commissioned_at", "warranty_until", "created_at", "updated_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("datetimes must carry a time zone (use Z for UTC)")
        return value
