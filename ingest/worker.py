"""The ingest writer: buffer decoded messages, store them durably, then acknowledge."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple, TypeVar

from core.clock import Clock
from core.deadletters import DeadLetter
from core.errors import StoreRejectedError, StoreUnavailableError
from core.ports import AssetRepository, DeadLetterRepository, TelemetryStore
from core.settings import IngestSettings, UnknownAssetPolicy
from core.telemetry import Reading
from ingest.metrics import IngestMetrics
from ingest.payloads import PayloadDecoder, PayloadError

log = logging.getLogger(__name__)

T = TypeVar("T")


class RawMessage(NamedTuple):
    """A message as paho handed it over; `session` tells which connection must ack it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    received_ms: int
    session: int


Acknowledger = Callable[[Sequence[RawMessage]], None]
# Called with the readings of a batch once they are durably stored, before the batch is
# acknowledged (the rules engine); it may raise, and is retried like a store.
AfterStore = Callable[[Sequence[Reading]], None]

# A message with what decoding made of it: its readings, or why it was refused.
_Decoded = tuple[RawMessage, "list[Reading] | PayloadError"]


class _StoppedError(Exception):
    """Raised out of a retry loop when the worker is stopped before the store came back."""


@dataclass
class _Batch:
    """Messages handled together and what validation made of them."""

    messages: list[RawMessage] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    # Index in `readings` where each message's readings start, to split a rejected batch.
    spans: list[tuple[int, int]] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)
    # The readings the store accepted, when it refused some messages of the batch.
    stored: list[Reading] | None = None


class IngestWorker:
    """Turn raw MQTT messages into stored readings and dead letters, never losing one.

    paho's thread calls `offer`, which decodes the message (parse and hand off, no I/O)
    and appends it to a bounded buffer; `offer` blocks while the buffer is full, which is
    the backpressure. The writer thread (`run`) wakes once per batch, not per message, so
    the two threads do not trade the GIL on every message. It acknowledges a QoS 1 message
    only after its readings, or its dead letter, are durably stored; until then the
    broker keeps it.
    """

    def __init__(
        self,
        *,
        decoder: PayloadDecoder,
        store: TelemetryStore,
        deadletters: DeadLetterRepository,
        assets: AssetRepository,
        settings: IngestSettings,
        metrics: IngestMetrics,
        clock: Clock,
        acknowledge: Acknowledger,
        after_store: AfterStore | None = None,
    ) -> None:
        self._decode = decoder.decode
        self._store = store
        self._deadletters = deadletters
        self._assets = assets
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self.acknowledge = acknowledge
        self._after_store = after_store
        self._pending: list[_Decoded] = []
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._batch_ready = threading.Event()
        self._stop = threading.Event()
        self._known_assets: set[str] = set()
        self._store_down_since: float | None = None
        metrics.track_queue(lambda: len(self._pending))

    def offer(self, message: RawMessage) -> None:
        """Decode a message and buffer it for the writer; block while the buffer is full."""
        if self._stop.is_set():
            return  # stopping: unacknowledged, so the broker redelivers it on the next start
        try:
            decoded: _Decoded = (
                message,
                self._decode(message.topic, message.payload, message.received_ms),
            )
        except PayloadError as error:
            decoded = (message, error)
        limit = self._settings.queue_size
        with self._lock:
            while len(self._pending) >= limit:
                if self._stop.is_set():
                    # Not acknowledged, so a QoS 1 message comes back on the next start.
                    return
                self._not_full.wait(0.5)
            self._pending.append(decoded)
            if len(self._pending) == self._settings.batch_points:
                self._batch_ready.set()

    def stop(self) -> None:
        """Ask the writer loop to finish what is buffered and return."""
        self._stop.set()
        self._batch_ready.set()

    @property
    def queue_depth(self) -> int:
        """Return how many messages wait for the writer."""
        return len(self._pending)

    def run(self) -> None:
        """Write batches until stopped, then drain what is already buffered."""
        flush_interval_s = self._settings.flush_interval_ms / 1000
        while not self._stop.is_set():
            # Woken early by a full batch; otherwise flush whatever came within the interval.
            self._batch_ready.wait(flush_interval_s)
            self._batch_ready.clear()
            self._flush()
        while self._flush():
            pass

    def _flush(self) -> bool:
        """Handle up to one batch of buffered messages; tell whether there was any."""
        limit = self._settings.batch_points
        with self._lock:
            taken = self._pending[:limit]
            del self._pending[:limit]
            more = len(self._pending) >= limit
            self._not_full.notify_all()
        if more:
            self._batch_ready.set()
        if taken:
            self._handle(taken)
        return bool(taken)

    def _handle(self, items: list[_Decoded]) -> None:
        batch = self._assemble(items)
        try:
            self._apply_unknown_asset_policy(batch)
            if batch.readings:
                self._write_readings(batch)
            if batch.deadletters:
                self._retry(
                    "dead-letter store", lambda: self._deadletters.add_many(batch.deadletters)
                )
            stored = batch.readings if batch.stored is None else batch.stored
            if self._after_store is not None and stored:
                after_store = self._after_store
                self._retry("rules engine", lambda: after_store(stored))
        except _StoppedError:
            return  # stopped while a store was down: unacknowledged, so redelivered
        if batch.deadletters:
            self._count_deadletters(batch.deadletters)
        self._observe_lag(batch)
        self._metrics.messages_received.inc(len(batch.messages))
        self.acknowledge(batch.messages)

    def _count_deadletters(self, letters: list[DeadLetter]) -> None:
        """Count dead letters and log one line per batch, so a flood of bad input stays cheap."""
        codes = Counter(letter.code for letter in letters)
        self._metrics.deadletters.inc(len(letters))
        for code, count in codes.items():
            self._metrics.deadletter_codes.labels(code=code).inc(count)
        first = letters[0]
        log.warning(
            "%d dead letter(s) (%s); first on %s: %s",
            len(letters),
            ", ".join(f"{code} x{count}" for code, count in codes.most_common()),
            first.topic,
            first.reason,
            extra={"deadletters": dict(codes)},
        )

    def _observe_lag(self, batch: _Batch) -> None:
        """Record event-time-to-stored lag once per message, not per reading (hot path)."""
        stored_ms = time.time_ns() // 1_000_000
        observe = self._metrics.lag.observe
        readings = batch.readings
        for start, end in batch.spans:
            if start != end:
                observe(max(0, stored_ms - readings[start].ts_ms) / 1000)

    def _assemble(self, items: list[_Decoded]) -> _Batch:
        batch = _Batch()
        messages, readings, spans = batch.messages, batch.readings, batch.spans
        for message, decoded in items:
            messages.append(message)
            start = len(readings)
            if isinstance(decoded, PayloadError):
                batch.deadletters.append(
                    self._deadletter(message, decoded.code, decoded.reason, decoded.asset_id)
                )
            else:
                readings.extend(decoded)
            spans.append((start, len(readings)))
        return batch

    def _apply_unknown_asset_policy(self, batch: _Batch) -> None:
        """Register unknown assets, or turn their messages into dead letters, per policy."""
        seen = {reading.asset_id for reading in batch.readings}
        unknown = seen - self._known_assets
        if not unknown:
            return
        known = self._retry("asset registry", lambda: self._assets.existing_ids(unknown))
        self._known_assets |= known
        unknown -= known
        if not unknown:
            return
        if self._settings.unknown_assets is UnknownAssetPolicy.AUTO_REGISTER:
            now = self._clock.now()
            self._retry("asset registry", lambda: self._assets.register_missing(unknown, now))
            self._known_assets |= unknown
            return
        self._refuse_unknown(batch, unknown)

    def _refuse_unknown(self, batch: _Batch, unknown: set[str]) -> None:
        kept: list[Reading] = []
        spans: list[tuple[int, int]] = []
        for message, (start, end) in zip(batch.messages, batch.spans, strict=True):
            readings = batch.readings[start:end]
            if readings and readings[0].asset_id in unknown:
                asset_id = readings[0].asset_id
                batch.deadletters.append(
                    self._deadletter(
                        message,
                        "unknown_asset",
                        f"asset {asset_id!r} is not registered and the unknown-asset policy "
                        "is dead_letter; register it (POST /api/v1/assets) and republish",
                        asset_id,
                    )
                )
                spans.append((len(kept), len(kept)))
                continue
            spans.append((len(kept), len(kept) + len(readings)))
            kept.extend(readings)
        batch.readings, batch.spans = kept, spans

    def _write_readings(self, batch: _Batch) -> None:
        """Write the batch's readings; on a permanent refusal, dead-letter message by message."""
        try:
            self._retry("telemetry store", lambda: self._timed_write(batch.readings))
            return
        except StoreRejectedError as error:
            log.warning("telemetry store refused a batch (%s); retrying message by message", error)
        batch.stored = []
        for message, (start, end) in zip(batch.messages, batch.spans, strict=True):
            if start == end:
                continue
            readings = batch.readings[start:end]
            try:
                self._retry("telemetry store", partial(self._timed_write, readings))
                batch.stored += readings
            except StoreRejectedError as error:
                batch.deadletters.append(
                    self._deadletter(
                        message,
                        "store_rejected",
                        f"the telemetry store refused the readings: {error}",
                        readings[0].asset_id,
                    )
                )

    def _timed_write(self, readings: Sequence[Reading]) -> None:
        started = time.perf_counter()
        self._store.write(readings)
        self._metrics.write_latency.observe(time.perf_counter() - started)
        self._metrics.batch_points.observe(len(readings))
        self._metrics.points_written.inc(len(readings))

    def _retry(self, what: str, action: Callable[[], T]) -> T:
        """Run `action` until it succeeds, backing off while the store is unavailable.

        Raises _StoppedError when stopped first. Logs once when the store is lost and once when
        it is back, not on every attempt.
        """
        delay = self._settings.retry_initial_s
        while True:
            try:
                result = action()
            except StoreRejectedError:
                raise
            except Exception as error:
                # Anything but a refusal is retried: an unexpected error must stall ingest
                # (visibly, in the log and store_up) rather than end the writer thread and
                # leave every later message unacknowledged.
                if self._store_down_since is None:
                    self._store_down_since = time.monotonic()
                    self._metrics.store_up.set(0)
                    log.error(
                        "%s unavailable, holding %d buffered messages and retrying: %s",
                        what,
                        len(self._pending),
                        error,
                        exc_info=not isinstance(error, StoreUnavailableError),
                        extra={"event": "store_lost", "store": what},
                    )
                self._metrics.store_retries.inc()
                if self._stop.wait(delay):
                    raise _StoppedError from error
                delay = min(delay * 2, self._settings.retry_max_s)
                continue
            if self._store_down_since is not None:
                outage_s = time.monotonic() - self._store_down_since
                self._store_down_since = None
                self._metrics.store_up.set(1)
                log.warning(
                    "%s is back after %.1fs; resuming",
                    what,
                    outage_s,
                    extra={"event": "store_back", "store": what, "outage_s": round(outage_s, 3)},
                )
            return result

    def _deadletter(
        self, message: RawMessage, code: str, reason: str, asset_id: str | None
    ) -> DeadLetter:
        return DeadLetter(
            topic=message.topic,
            payload=message.payload[: self._settings.deadletter_payload_bytes],
            payload_size=len(message.payload),
            code=code,
            reason=reason,
            received_at=self._clock.now(),
            asset_id=asset_id,
        )
