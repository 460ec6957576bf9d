"""Telemetry value types shared by ingest, the stores and the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, NamedTuple

# What a metric may be called: a topic level, an InfluxDB field key and a SQL value alike.
METRIC_NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class Reading(NamedTuple):
    """One metric value of one asset at the device's event time.

    `ts_ms` is epoch milliseconds (UTC), an int rather than a datetime, and this is a
    NamedTuple rather than a frozen dataclass (half the construction cost), because
    ingest builds hundreds of thousands of these a second.
    """

    asset_id: str
    metric: str
    ts_ms: int
    value: float


# A stored value as (epoch ms, value): what bulk reads return to rebuild rule windows.
StampedValue = tuple[int, float]


@dataclass(frozen=True, slots=True)
class TelemetryPoint:
    """A stored value read back from a telemetry store."""

    at: datetime
    value: float


@dataclass(frozen=True, slots=True)
class TelemetryBucket:
    """Aggregates of one metric over one interval starting at `start_at`."""

    start_at: datetime
    mean: float
    min: float
    max: float
    count: int


def ms_to_datetime(ts_ms: int) -> datetime:
    """Convert epoch milliseconds to an aware UTC datetime."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


def datetime_to_ms(at: datetime) -> int:
    """Convert an aware datetime to epoch milliseconds."""
    if at.tzinfo is None:
        raise ValueError("naive datetime; pmkeeper only handles aware UTC times")
    return int(at.timestamp() * 1000)
