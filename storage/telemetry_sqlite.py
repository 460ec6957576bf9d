"""Keep telemetry in a local SQLite file: the embedded default behind the TelemetryStore port."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from math import isfinite
from pathlib import Path

from core.errors import StoreRejectedError, StoreUnavailableError
from core.ports import SeriesRange
from core.telemetry import (
    Reading,
    StampedValue,
    TelemetryBucket,
    TelemetryPoint,
    datetime_to_ms,
    ms_to_datetime,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS telemetry (
    asset_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (asset_id, metric, ts_ms)
) WITHOUT ROWID
"""

_UPSERT = """
INSERT INTO telemetry (asset_id, metric, ts_ms, value) VALUES (?, ?, ?, ?)
ON CONFLICT (asset_id, metric, ts_ms) DO UPDATE SET value = excluded.value
"""

_READ = """
SELECT ts_ms, value FROM telemetry
WHERE asset_id = ? AND metric = ? AND ts_ms >= ? AND ts_ms < ?
ORDER BY ts_ms LIMIT ?
"""

# `ts_ms - ((ts_ms % e) + e) % e` floors to a multiple of `e` even before 1970, where
# SQLite's % keeps the dividend's sign; it matches InfluxDB's epoch-aligned GROUP BY time.
_DOWNSAMPLE = """
SELECT ts_ms - ((ts_ms % :every) + :every) % :every AS bucket,
       AVG(value), MIN(value), MAX(value), COUNT(*)
FROM telemetry
WHERE asset_id = :asset_id AND metric = :metric AND ts_ms >= :start AND ts_ms < :end
GROUP BY bucket ORDER BY bucket
"""

# A skip-scan over the primary key: each step seeks the next metric name and each
# MAX(ts_ms) seeks the newest row, so the cost grows with the number of metrics of the
# asset rather than with its history.
_LATEST = """
WITH RECURSIVE metrics(metric) AS (
    SELECT MIN(metric) FROM telemetry WHERE asset_id = :asset_id
    UNION ALL
    SELECT (SELECT MIN(metric) FROM telemetry WHERE asset_id = :asset_id AND metric > m.metric)
    FROM metrics AS m WHERE m.metric IS NOT NULL
)
SELECT t.metric, t.ts_ms, t.value
FROM metrics AS m
JOIN telemetry AS t
  ON t.asset_id = :asset_id
 AND t.metric = m.metric
 AND t.ts_ms = (
     SELECT MAX(ts_ms) FROM telemetry WHERE asset_id = :asset_id AND metric = m.metric
 )
"""


class SqliteTelemetryStore:
    """Store readings in one SQLite file (WAL), one row per (asset, metric, timestamp)."""

    def __init__(self, path: Path, busy_timeout_s: float = 5.0) -> None:
        self._path = path
        self._busy_timeout_s = busy_timeout_s
        # Ingest has one writer thread, but the lock keeps a second caller (a backfill, a
        # test) from interleaving with it inside one transaction.
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        # Readers borrow from a pool rather than one connection per thread so that API
        # worker threads coming and going do not leak connections.
        self._idle_readers: list[sqlite3.Connection] = []
        self._closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._translate_errors("open"), self._write_lock:
            conn = self._writer_connection()
            # WAL lets API readers run against the last commit while the writer appends,
            # so neither blocks the other; the mode is stored in the file.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)

    def write(self, readings: Sequence[Reading]) -> None:
        """Durably write a batch; a reading for an existing (asset, metric, ts) replaces it."""
        if not readings:
            return
        rows = [(r.asset_id, r.metric, r.ts_ms, r.value) for r in readings]
        for asset_id, metric, _, value in rows:
            # SQLite would store NaN as NULL and accept infinities that InfluxDB refuses;
            # refusing both here keeps the two stores interchangeable.
            if not isfinite(value):
                raise StoreRejectedError(
                    f"non-finite value {value!r} for {asset_id}/{metric}",
                    asset_id=asset_id,
                    metric=metric,
                )
        with self._translate_errors("write"), self._write_lock:
            conn = self._writer_connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_UPSERT, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def read(
        self, asset_id: str, metric: str, start_at: datetime, end_at: datetime, limit: int
    ) -> list[TelemetryPoint]:
        """Return one metric's points in [start_at, end_at), oldest first, at most `limit`."""
        if limit <= 0:
            return []
        params = (asset_id, metric, datetime_to_ms(start_at), datetime_to_ms(end_at), limit)
        with self._translate_errors("read"), self._reader() as conn:
            rows = conn.execute(_READ, params).fetchall()
        return [TelemetryPoint(at=ms_to_datetime(ts_ms), value=value) for ts_ms, value in rows]

    def read_many(self, requests: Sequence[SeriesRange], limit: int) -> list[list[StampedValue]]:
        """Return each series' points, all read on one connection."""
        if limit <= 0:
            return [[] for _ in requests]
        found: list[list[StampedValue]] = []
        with self._translate_errors("read"), self._reader() as conn:
            for asset_id, metric, start_at, end_at in requests:
                params = (
                    asset_id,
                    metric,
                    datetime_to_ms(start_at),
                    datetime_to_ms(end_at),
                    limit,
                )
                rows = conn.execute(_READ, params).fetchall()
                found.append([(int(ts_ms), float(value)) for ts_ms, value in rows])
        return found

    def downsample(
        self, asset_id: str, metric: str, start_at: datetime, end_at: datetime, every: timedelta
    ) -> list[TelemetryBucket]:
        """Return mean, min, max and count per epoch-aligned `every`; skip empty intervals."""
        every_ms = every // timedelta(milliseconds=1)
        if every_ms <= 0:
            raise ValueError(f"every must be at least 1 ms, not {every}")
        params = {
            "every": every_ms,
            "asset_id": asset_id,
            "metric": metric,
            "start": datetime_to_ms(start_at),
            "end": datetime_to_ms(end_at),
        }
        with self._translate_errors("downsample"), self._reader() as conn:
            rows = conn.execute(_DOWNSAMPLE, params).fetchall()
        return [
            TelemetryBucket(
                start_at=ms_to_datetime(bucket), mean=mean, min=low, max=high, count=count
            )
            for bucket, mean, low, high, count in rows
        ]

    def latest(self, asset_id: str) -> dict[str, TelemetryPoint]:
        """Return the newest point of each metric of an asset."""
        with self._translate_errors("latest"), self._reader() as conn:
            rows = conn.execute(_LATEST, {"asset_id": asset_id}).fetchall()
        return {
            metric: TelemetryPoint(at=ms_to_datetime(ts_ms), value=value)
            for metric, ts_ms, value in rows
        }

    def ping(self) -> bool:
        """Tell whether the database file can be queried right now."""
        try:
            with self._reader() as conn:
                conn.execute("SELECT 1 FROM telemetry LIMIT 1").fetchall()
        except (sqlite3.Error, StoreUnavailableError):
            return False
        return True

    def close(self) -> None:
        """Close the connections; readers still borrowed are closed when given back."""
        with self._write_lock:
            self._closed = True
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        while self._idle_readers:
            self._idle_readers.pop().close()

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailableError("telemetry store is closed", path=str(self._path))
        # check_same_thread=False because pooled connections move between threads; each
        # is used by one thread at a time.
        conn = sqlite3.connect(
            self._path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        # FULL fsyncs the WAL on every commit. Ingest acknowledges MQTT messages only
        # after write() returns, so a commit that a power cut could undo (NORMAL would
        # allow that) would lose readings the broker no longer holds.
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _writer_connection(self) -> sqlite3.Connection:
        if self._writer is None:
            self._writer = self._open()
        return self._writer

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        try:
            # list.pop and list.append are atomic, so the pool needs no lock of its own.
            conn = self._idle_readers.pop()
        except IndexError:
            conn = self._open()
        try:
            yield conn
        finally:
            if self._closed:
                conn.close()
            else:
                self._idle_readers.append(conn)

    @contextmanager
    def _translate_errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            # Disk I/O errors, a full disk, or a lock held past the busy timeout: transient
            # from the caller's point of view, which retries with backoff and logs the loss
            # once, so this only logs at debug level.
            log.debug("telemetry sqlite %s failed: %s", operation, exc)
            raise StoreUnavailableError(
                f"telemetry store unavailable during {operation}: {exc}", path=str(self._path)
            ) from exc
