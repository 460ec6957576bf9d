"""Publish a simulated fleet's telemetry to an MQTT broker at a steady rate (paho-mqtt 2.x)."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from simulator.fleet import Fleet, FleetConfig, Sample

log = logging.getLogger(__name__)

TsFormat = Literal["ms", "iso"]
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_PROGRESS_EVERY_S: Final = 10.0
_KEEPALIVE_S: Final = 30
_CONNACK_TIMEOUT_S: Final = 10.0
# The longest the loop blocks in one go, which bounds how late stop() is noticed.
_MAX_WAIT_S: Final = 0.05
# Read acks every this many publishes. Reading after each one costs a syscall per message.
_SERVICE_EVERY: Final = 16
_RETRY_INITIAL_S: Final = 0.2
_RETRY_MAX_S: Final = 5.0
_QUEUED: Final = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN)
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker is and how to log in."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(
        cls, url: str, username: str | None = None, password: str | None = None
    ) -> BrokerAddress:
        """Parse `mqtt://[user:pass@]host[:port]` or `mqtts://...`; explicit credentials win."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"broker URL {url!r} has no host")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=username if username is not None else _unquoted(parts.username),
            password=password if password is not None else _unquoted(parts.password),
        )


@dataclass(frozen=True, slots=True)
class PublishPlan:
    """What to publish and how fast.

    Each asset publishes `rate_per_asset` MQTT messages per second. Assets take turns
    evenly, so the broker sees `assets * rate_per_asset` messages per second. With
    `batch` > 1, every message is a JSON array of that many readings, spaced evenly
    over the asset's interval, as a device that buffers would send them. The run ends
    at `duration_s`, after `count` published messages, or on stop, whichever comes first.
    """

    rate_per_asset: float = 1.0
    qos: Literal[0, 1] = 1
    duration_s: float | None = None
    count: int | None = None
    batch: int = 1
    ts_format: TsFormat = "ms"
    topic: str = "pmk/+/telemetry"
    # Unconfirmed messages allowed at once. Beyond it the loop waits for the broker.
    window: int = 200
    drain_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.rate_per_asset > 0 or math.isinf(self.rate_per_asset):
            raise ValueError(
                "the rate must be a positive number of messages per second per asset,"
                f" not {self.rate_per_asset}"
            )
        if self.qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, not {self.qos}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("duration_s must be positive")
        if self.count is not None and self.count < 0:
            raise ValueError("count must not be negative")
        if self.batch < 1:
            raise ValueError("batch must be at least 1")
        if self.ts_format not in ("ms", "iso"):
            raise ValueError(f"ts_format must be 'ms' or 'iso', not {self.ts_format!r}")
        levels = self.topic.split("/")
        if "+" not in levels or "#" in self.topic or self.topic.startswith("$"):
            raise ValueError(f"topic {self.topic!r} needs a '+' level for the asset id, no '#'")
        if self.window < 1:
            raise ValueError("window must be at least 1")

    def topic_for(self, asset_id: str) -> str:
        """Return the topic an asset publishes on: the first `+` replaced by its id."""
        return self.topic.replace("+", asset_id, 1)


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """What a run achieved.

    A message is sent once the broker acknowledged it (QoS 1) or once it was written
    to the socket (QoS 0).
    """

    messages_published: int
    messages_sent: int
    messages_failed: int
    messages_unconfirmed: int
    readings_sent: int
    points_sent: int
    silent_skips: int
    elapsed_s: float
    stopped: bool

    @property
    def send_rate(self) -> float:
        """Return the messages sent per second of wall time."""
        return self.messages_sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the counts as plain JSON-ready values."""
        values: dict[str, Any] = {name: getattr(self, name) for name in self.__slots__}
        values["elapsed_s"] = round(self.elapsed_s, 3)
        values["send_rate"] = round(self.send_rate, 1)
        return values

    def summary(self) -> str:
        """Return one human line with the counts, for the CLI to print."""
        return (
            f"sent {self.messages_sent} messages ({self.readings_sent} readings,"
            f" {self.points_sent} points) in {self.elapsed_s:.1f} s = {self.send_rate:.0f} msg/s;"
            f" published {self.messages_published}, failed {self.messages_failed},"
            f" unconfirmed {self.messages_unconfirmed}, silent skips {self.silent_skips}"
            + ("; stopped early" if self.stopped else "")
        )


class _Outbox:
    """Messages handed to paho and not yet confirmed, plus totals of the confirmed ones.

    QoS 1 messages are confirmed by their PUBACK, which paho reports to on_publish
    with the message id. QoS 0 messages count as confirmed once written to the
    socket. Paho writes them in order and flags each MessageInfo, so they skip
    on_publish, and paho does not build a ReasonCode and Properties for each one,
    about a quarter of its publish cost.
    """

    def __init__(self, qos: int) -> None:
        self._qos = qos
        self._by_mid: dict[int, tuple[int, int]] = {}
        self._in_order: deque[tuple[mqtt.MQTTMessageInfo, int, int]] = deque()
        self._acked: list[int] = []
        self.messages = self.readings = self.points = 0

    def add(self, info: mqtt.MQTTMessageInfo, readings: int, points: int) -> None:
        """Track a message paho accepted."""
        if self._qos == 1:
            self._by_mid[info.mid] = (readings, points)
        else:
            self._in_order.append((info, readings, points))

    def acknowledged(self, mid: int) -> None:
        """Record a PUBACK; counted at the next settle, after `add` has run for that mid."""
        self._acked.append(mid)

    def outstanding(self) -> int:
        """Settle confirmations, then return how many messages are still unconfirmed."""
        if self._qos == 1:
            acked, self._acked = self._acked, []
            for mid in acked:
                counts = self._by_mid.pop(mid, None)
                if counts is not None:
                    self._confirm(*counts)
            return len(self._by_mid)
        in_order = self._in_order
        while in_order and in_order[0][0].is_published():
            _, readings, points = in_order.popleft()
            self._confirm(readings, points)
        return len(in_order)

    def _confirm(self, readings: int, points: int) -> None:
        self.messages += 1
        self.readings += readings
        self.points += points


def encode_payload(
    samples: Sequence[Sample], ts_format: TsFormat = "ms", *, batch: bool = False
) -> bytes:
    """Encode samples as the wire format: one JSON object, or an array when `batch` is set."""
    objects = [{"ts": _format_ts(s.ts_ms, ts_format), "metrics": s.metrics} for s in samples]
    if not batch:
        if len(objects) != 1:
            raise ValueError("a non-batch payload carries exactly one sample")
        return _ENCODER.encode(objects[0]).encode()
    return _ENCODER.encode(objects).encode()


class TelemetryPublisher:
    """Publish a fleet's samples on MQTT at the plan's rate until done or stopped.

    The publishing thread also drives paho's network loop (no `loop_start`). With
    a separate network thread, every publish wakes that thread and hands over the
    GIL; on a 2-core machine that halved throughput. It also means paho's callbacks
    run on this thread, so the counters they update need no locks.
    """

    def __init__(
        self,
        fleet: Fleet,
        address: BrokerAddress,
        plan: PublishPlan,
        *,
        client_id: str | None = None,
        stop_event: threading.Event | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fleet = fleet
        self._address = address
        self._plan = plan
        self._client_id = client_id or f"pmkeeper-sim-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._stop = stop_event or threading.Event()
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._topics = [plan.topic_for(asset.asset_id) for asset in fleet.assets]
        self._outbox = _Outbox(plan.qos)
        self._connect_result: ReasonCode | None = None
        self._lost_since: float | None = None
        self._next_attempt = 0.0
        self._retry_s = _RETRY_INITIAL_S

    def stop(self) -> None:
        """Ask the run to finish; it drains what is in flight, then returns its report."""
        self._stop.set()

    def run(self, start_wall_ms: int | None = None) -> SimulationReport:
        """Connect, publish until the plan is done or stop() is called, drain, and disconnect.

        `start_wall_ms` is the event time of the first message. It defaults to now.
        The fleet's scenarios count from its own start time.
        """
        client = self._connect()
        try:
            return self._publish_all(client, start_wall_ms)
        finally:
            client.disconnect()
            # Let paho write the DISCONNECT packet before the socket closes.
            client.loop(0.1)

    def _connect(self) -> mqtt.Client:
        address = self._address
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if address.username is not None:
            client.username_pw_set(address.username, address.password)
        if address.tls:
            client.tls_set()
        client.max_inflight_messages_set(self._plan.window)
        client.on_connect = self._on_connect
        if self._plan.qos == 1:
            client.on_publish = self._on_publish
        where = f"{address.host}:{address.port}"
        try:
            client.connect(address.host, address.port, keepalive=_KEEPALIVE_S)
        except OSError as exc:
            raise ConnectionError(f"cannot reach the broker at {where}: {exc}") from exc
        deadline = self._monotonic() + _CONNACK_TIMEOUT_S
        while self._connect_result is None and self._monotonic() < deadline:
            if client.loop(0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        if self._connect_result is None or self._connect_result.is_failure:
            reason = self._connect_result or f"no CONNACK within {_CONNACK_TIMEOUT_S:.0f} s"
            client.disconnect()
            raise ConnectionError(f"broker at {where} refused the connection: {reason}")
        log.info("simulator connected to %s as %s", where, self._client_id)
        return client

    def _publish_all(self, client: mqtt.Client, start_wall_ms: int | None) -> SimulationReport:
        plan, fleet = self._plan, self._fleet
        assets = fleet.assets
        interval_s = 1.0 / (plan.rate_per_asset * len(assets))
        # Readings inside one batch are spread over the asset's own publish interval.
        spacing_ms = 1000 / plan.rate_per_asset / plan.batch
        wall0_ms = int(self._wall_clock() * 1000) if start_wall_ms is None else start_wall_ms
        started = self._monotonic()
        end = math.inf if plan.duration_s is None else started + plan.duration_s
        limit = math.inf if plan.count is None else plan.count
        outbox = self._outbox
        published = failed = skips = slot = 0
        next_progress = started + _PROGRESS_EVERY_S

        while published < limit and not self._stop.is_set():
            now = self._monotonic()
            due = started + slot * interval_s
            if now >= end or due >= end:
                break
            if now < due:
                self._service(client, min(due - now, _MAX_WAIT_S))
                continue
            if outbox.outstanding() >= plan.window:
                # Backpressure: the broker is behind, so wait for acks instead of queueing.
                self._service(client, _MAX_WAIT_S)
                continue
            asset = assets[slot % len(assets)]
            at_ms = wall0_ms + round(slot * interval_s * 1000)
            slot += 1
            samples = self._samples(asset.asset_id, at_ms, spacing_ms)
            if not samples:
                skips += 1
                if all(fleet.is_silent(a.asset_id, at_ms) for a in assets):
                    log.info("every simulated asset has gone silent; ending the run")
                    break
                continue
            payload = encode_payload(samples, plan.ts_format, batch=plan.batch > 1)
            info = client.publish(self._topics[asset.index], payload, qos=plan.qos)
            published += 1
            # MQTT_ERR_AGAIN: the socket is full and paho writes the message later.
            # QoS 1 messages also stay queued while disconnected and go out on reconnect.
            if info.rc in _QUEUED or (plan.qos == 1 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN):
                outbox.add(info, len(samples), sum(len(s.metrics) for s in samples))
            else:
                failed += 1
            if published % _SERVICE_EVERY == 0:
                self._service(client, 0.0)
            if now >= next_progress:
                next_progress = now + _PROGRESS_EVERY_S
                log.info("simulator: published %d, confirmed %d", published, outbox.messages)

        stopped = self._stop.is_set()
        self._drain(client)
        report = SimulationReport(
            messages_published=published,
            messages_sent=outbox.messages,
            messages_failed=failed,
            messages_unconfirmed=outbox.outstanding(),
            readings_sent=outbox.readings,
            points_sent=outbox.points,
            silent_skips=skips,
            elapsed_s=self._monotonic() - started,
            stopped=stopped,
        )
        log.info("simulator: %s", report.summary())
        return report

    def _samples(self, asset_id: str, at_ms: int, spacing_ms: float) -> list[Sample]:
        batch = self._plan.batch
        samples = []
        for position in range(batch):
            ts_ms = at_ms - round((batch - 1 - position) * spacing_ms)
            # The first batches would reach back before the run started; leave those out.
            if ts_ms < self._fleet.start_ms:
                continue
            sample = self._fleet.sample(asset_id, ts_ms)
            if sample is not None:
                samples.append(sample)
        return samples

    def _service(self, client: mqtt.Client, timeout_s: float) -> None:
        """Run paho's network loop once (acks, keepalive); reconnect if the link is down."""
        if self._lost_since is None:
            result = client.loop(timeout_s)
            if result == MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            self._lost_since = self._next_attempt = self._monotonic()
            log.warning("simulator lost the broker (%s); reconnecting", mqtt.error_string(result))
        now = self._monotonic()
        if now < self._next_attempt:
            # The stop event doubles as the back-off sleep.
            self._stop.wait(min(self._next_attempt - now, max(timeout_s, 0.001)))
            return
        try:
            client.reconnect()
        except OSError:
            self._next_attempt = now + self._retry_s
            self._retry_s = min(self._retry_s * 2, _RETRY_MAX_S)
            return
        log.info("simulator reconnected to the broker after %.1f s", now - self._lost_since)
        self._retry_s = _RETRY_INITIAL_S
        self._lost_since = None

    def _drain(self, client: mqtt.Client) -> None:
        deadline = self._monotonic() + self._plan.drain_timeout_s
        while self._outbox.outstanding():
            if self._monotonic() >= deadline:
                log.warning(
                    "simulator: %d messages still unconfirmed after %.0f s",
                    self._outbox.outstanding(),
                    self._plan.drain_timeout_s,
                )
                return
            self._service(client, _MAX_WAIT_S)

    # paho calls these from inside client.loop(), on this thread.

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        self._connect_result = reason_code

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        self._outbox.acknowledged(mid)


def run_simulation(
    url: str,
    *,
    assets: int = 10,
    rate: float = 1.0,
    qos: Literal[0, 1] = 1,
    seed: int = 0,
    duration_s: float | None = None,
    count: int | None = None,
    scenarios: Mapping[str, str] | None = None,
    topic: str = "pmk/+/telemetry",
    batch: int = 1,
    ts_format: TsFormat = "ms",
    sites: Sequence[str] = ("plant-north", "plant-south"),
    username: str | None = None,
    password: str | None = None,
    stop: threading.Event | None = None,
) -> SimulationReport:
    """Simulate `assets` machines publishing to the broker at `url`; return what was sent.

    `rate` is messages per second per asset. `scenarios` maps asset ids to
    specs such as `"bearing_wear:6h"`, `"overheating"` or `"silent:10m"`. Raise
    ValueError for bad arguments and ConnectionError when the broker cannot be used.
    """
    address = BrokerAddress.from_url(url, username, password)
    plan = PublishPlan(
        rate_per_asset=rate,
        qos=qos,
        duration_s=duration_s,
        count=count,
        batch=batch,
        ts_format=ts_format,
        topic=topic,
    )
    config = FleetConfig(
        assets=assets, seed=seed, sites=tuple(sites), scenarios=dict(scenarios or {})
    )
    start_ms = int(time.time() * 1000)
    # The fleet starts one publish interval early, so the first batches are full.
    fleet = Fleet(config, start_ms - math.ceil(1000 / rate))
    publisher = TelemetryPublisher(fleet, address, plan, stop_event=stop)
    return publisher.run(start_wall_ms=start_ms)


def _format_ts(ts_ms: int, ts_format: TsFormat) -> int | str:
    if ts_format == "ms":
        return ts_ms
    at = _EPOCH + timedelta(milliseconds=ts_ms)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _unquoted(value: str | None) -> str | None:
    return None if value is None else unquote(value)
