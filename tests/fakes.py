"""In-memory implementations of the ports, for unit tests. They honour the same contracts."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from core.assets import Asset
from core.deadletters import DeadLetter
from core.errors import ConflictError, NotFoundError, StoreRejectedError, StoreUnavailableError
from core.telemetry import (
    Reading,
    TelemetryBucket,
    TelemetryPoint,
    datetime_to_ms,
    ms_to_datetime,
)


class InMemoryTelemetryStore:
    """A telemetry store in a dict keyed by (asset, metric, ts): rewrites overwrite."""

    def __init__(self) -> None:
        self.points: dict[tuple[str, str, int], float] = {}
        self.writes = 0
        self.down = False
        self.rejected_assets: set[str] = set()
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailableError("telemetry store is unreachable")

    def write(self, readings: Sequence[Reading]) -> None:
        """Store readings, or fail as a real store would when told to."""
        self._check()
        if any(r.asset_id in self.rejected_assets for r in readings):
            raise StoreRejectedError("field type conflict")
        with self._lock:
            for r in readings:
                self.points[(r.asset_id, r.metric, r.ts_ms)] = r.value
            self.writes += 1

    def read(
        self, asset_id: str, metric: str, start_at: datetime, end_at: datetime, limit: int
    ) -> list[TelemetryPoint]:
        """Return points in [start_at, end_at), oldest first."""
        self._check()
        start, end = datetime_to_ms(start_at), datetime_to_ms(end_at)
        found = sorted(
            (ts, v)
            for (a, m, ts), v in self.points.items()
            if a == asset_id and m == metric and start <= ts < end
        )
        return [TelemetryPoint(ms_to_datetime(ts), v) for ts, v in found[:limit]]

    def downsample(
        self, asset_id: str, metric: str, start_at: datetime, end_at: datetime, every: timedelta
    ) -> list[TelemetryBucket]:
        """Aggregate per interval aligned to the epoch."""
        step = int(every.total_seconds() * 1000)
        buckets: dict[int, list[float]] = {}
        for point in self.read(asset_id, metric, start_at, end_at, 10**9):
            ts = datetime_to_ms(point.at)
            buckets.setdefault(ts - ts % step, []).append(point.value)
        return [
            TelemetryBucket(ms_to_datetime(k), sum(v) / len(v), min(v), max(v), len(v))
            for k, v in sorted(buckets.items())
        ]

    def latest(self, asset_id: str) -> dict[str, TelemetryPoint]:
        """Return the newest point per metric."""
        self._check()
        newest: dict[str, tuple[int, float]] = {}
        for (a, m, ts), v in self.points.items():
            if a == asset_id and (m not in newest or ts > newest[m][0]):
                newest[m] = (ts, v)
        return {m: TelemetryPoint(ms_to_datetime(ts), v) for m, (ts, v) in newest.items()}

    def ping(self) -> bool:
        """Answer unless told to be down."""
        return not self.down

    def close(self) -> None:
        """Nothing to release."""


class InMemoryAssetRepository:
    """The asset registry in a dict."""

    def __init__(self, assets: Iterable[Asset] = ()) -> None:
        self.assets = {asset.id: asset for asset in assets}
        self.down = False

    def add(self, asset: Asset) -> Asset:
        """Insert, refusing duplicates."""
        if asset.id in self.assets:
            raise ConflictError(f"asset {asset.id} exists")
        self.assets[asset.id] = asset
        return asset

    def get(self, asset_id: str) -> Asset:
        """Return an asset or raise NotFoundError."""
        try:
            return self.assets[asset_id]
        except KeyError:
            raise NotFoundError(f"asset {asset_id} not found") from None

    def update(self, asset_id: str, changes: dict[str, Any]) -> Asset:
        """Apply changes."""
        updated = self.get(asset_id).model_copy(update=changes)
        self.assets[asset_id] = updated
        return updated

    def list(
        self,
        *,
        site: str | None = None,
        type: str | None = None,
        after_id: str | None = None,
        limit: int = 100,
    ) -> list[Asset]:
        """Return assets by id."""
        found = [
            a
            for i, a in sorted(self.assets.items())
            if (site is None or a.site == site)
            and (type is None or a.type == type)
            and (after_id is None or i > after_id)
        ]
        return found[:limit]

    def existing_ids(self, asset_ids: Iterable[str]) -> set[str]:
        """Return the registered ids among `asset_ids`."""
        if self.down:
            raise StoreUnavailableError("registry is down")
        return set(asset_ids) & set(self.assets)

    def register_missing(self, asset_ids: Iterable[str], registered_at: datetime) -> set[str]:
        """Register unknown ids."""
        created = set(asset_ids) - set(self.assets)
        for asset_id in created:
            self.assets[asset_id] = Asset(
                id=asset_id,
                name=asset_id,
                type="unregistered",
                site="unassigned",
                auto_registered=True,
                created_at=registered_at,
            )
        return created


class InMemoryDeadLetterRepository:
    """Dead letters in a list."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self.down = False

    def add_many(self, letters: Sequence[DeadLetter]) -> None:
        """Append letters with ids."""
        if self.down:
            raise StoreUnavailableError("database is down")
        for letter in letters:
            self.letters.append(replace(letter, id=len(self.letters) + 1))

    def list(
        self, *, asset_id: str | None = None, before_id: int | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Return newest first."""
        found = [
            d
            for d in reversed(self.letters)
            if (asset_id is None or d.asset_id == asset_id)
            and (before_id is None or (d.id or 0) < before_id)
        ]
        return found[:limit]

    def count(self) -> int:
        """Return how many are stored."""
        return len(self.letters)
