"""Ports: the protocols adapters implement and services depend on."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from core.assets import Asset
from core.deadletters import DeadLetter
from core.history import HistoryCursor, HistoryEntry
from core.telemetry import Reading, StampedValue, TelemetryBucket, TelemetryPoint

# (asset_id, metric, start_at, end_at): one series over [start_at, end_at).
SeriesRange = tuple[str, str, datetime, datetime]


class TelemetryStore(Protocol):
    """Where readings are kept: InfluxDB in production, SQLite embedded.

    Writing the same (asset, metric, ts) twice keeps one point: the last value wins.
    Transient failures raise `StoreUnavailableError` so the caller can retry.
    """

    def write(self, readings: Sequence[Reading]) -> None:
        """Durably write a batch; return only once it is stored."""
        ...

    def read(
        self, asset_id: str, metric: str, start_at: datetime, end_at: datetime, limit: int
    ) -> list[TelemetryPoint]:
        """Return one metric's points in [start_at, end_at), oldest first."""
        ...

    def read_many(self, requests: Sequence[SeriesRange], limit: int) -> list[list[StampedValue]]:
        """Return `read` of each (asset, metric, start_at, end_at) as (epoch ms, value) pairs,
        in as few round trips as the store allows: the rules engine rebuilds thousands of
        windows after a start, and keeps them in epoch ms."""
        ...

    def downsample(
        self, asset_id: str, metric: str, start_at: datetime, end_at: datetime, every: timedelta
    ) -> list[TelemetryBucket]:
        """Return mean, min, max and count per `every` interval; empty intervals are left out."""
        ...

    def latest(self, asset_id: str) -> dict[str, TelemetryPoint]:
        """Return the newest point of each metric of an asset."""
        ...

    def ping(self) -> bool:
        """Tell whether the store answers right now."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class AssetRepository(Protocol):
    """The asset registry."""

    def add(self, asset: Asset) -> Asset:
        """Insert a new asset; raise ConflictError if the id exists."""
        ...

    def get(self, asset_id: str) -> Asset:
        """Return an asset; raise NotFoundError if absent."""
        ...

    def update(self, asset_id: str, changes: dict[str, Any]) -> Asset:
        """Apply field changes and return the updated asset; NotFoundError if absent."""
        ...

    def list(
        self,
        *,
        site: str | None = None,
        type: str | None = None,
        after_id: str | None = None,
        limit: int = 100,
    ) -> list[Asset]:
        """Return assets ordered by id, after `after_id` (keyset pagination)."""
        ...

    def existing_ids(self, asset_ids: Iterable[str]) -> set[str]:
        """Return which of the given ids are registered."""
        ...

    def register_missing(self, asset_ids: Iterable[str], registered_at: datetime) -> set[str]:
        """Auto-register ids not yet known (race-safe); return the ids newly created."""
        ...


class DeadLetterRepository(Protocol):
    """Refused input, kept with its reason."""

    def add_many(self, letters: Sequence[DeadLetter]) -> None:
        """Durably store a batch of dead letters."""
        ...

    def list(
        self, *, asset_id: str | None = None, before_id: int | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Return dead letters newest first, before `before_id` (keyset pagination)."""
        ...

    def count(self) -> int:
        """Return how many dead letters are stored."""
        ...


class AssetHistory(Protocol):
    """What happened to an asset, across work orders, alerts and parts."""

    def history(
        self,
        asset_id: str,
        *,
        start_at: datetime | None,
        end_at: datetime | None,
        after: HistoryCursor | None,
        limit: int,
    ) -> list[HistoryEntry]:
        """Return up to `limit` entries in [start_at, end_at) after `after`, oldest first."""
        ...
