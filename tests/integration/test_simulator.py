"""The simulator against the real ingest decoder and a real mosquitto broker."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.settings import IngestSettings
from core.telemetry import Reading
from ingest.payloads import PayloadDecoder
from simulator.fleet import Fleet, FleetConfig, Sample
from simulator.publisher import SimulationReport, TsFormat, encode_payload, run_simulation
from tests.support.binaries import free_port
from tests.support.mosquitto import MosquittoBroker
from tests.support.polling import wait_until

START_MS = 1_795_330_800_000


def _expected_readings(samples: list[Sample]) -> list[Reading]:
    return [
        Reading(s.asset_id, name, s.ts_ms, value)
        for s in samples
        for name, value in s.metrics.items()
    ]


@pytest.mark.parametrize(
    ("ts_format", "batch"),
    [("ms", 1), ("iso", 1), ("ms", 10), ("iso", 10)],
    ids=["object-ms", "object-iso", "batch-ms", "batch-iso"],
)
def test_every_simulated_payload_decodes_with_the_ingest_decoder(
    ts_format: TsFormat, batch: int
) -> None:
    config = FleetConfig(
        assets=8,
        seed=3,
        scenarios={"sim-0002": "bearing_wear:12h", "sim-0003": "overheating:12h"},
    )
    fleet = Fleet(config, START_MS)
    decoder = PayloadDecoder(IngestSettings(), "pmk/+/telemetry")
    decoded = 0
    # Two days in 5-minute steps, with faults running past the end of their ramp.
    for at_ms in range(START_MS + 3_600_000, START_MS + 48 * 3_600_000, 300_000):
        for asset in fleet.assets:
            samples = [fleet.sample(asset.asset_id, at_ms - n * 1000) for n in range(batch)]
            present = [s for s in reversed(samples) if s is not None]
            payload = encode_payload(present, ts_format, batch=batch > 1)
            topic = f"pmk/{asset.asset_id}/telemetry"

            readings = decoder.decode(topic, payload, received_ms=at_ms)

            assert readings == _expected_readings(present)
            decoded += 1
    assert decoded > 4000


class Subscriber:
    """An MQTT v5 client with a persistent session that records every message it receives."""

    def __init__(self, broker: MosquittoBroker, topic_filter: str) -> None:
        self.topic_filter = topic_filter
        self.messages: list[tuple[str, bytes, int]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"sim-test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        # A persistent session keeps what arrives while a restarted broker comes back.
        self.client.connect(broker.host, broker.port, clean_start=False, properties=properties)
        self.client.loop_start()
        wait_until(self._subscribed.is_set, timeout_s=5, what="SUBACK")

    def received(self) -> list[tuple[str, bytes, int]]:
        """Return (topic, payload, received_ms) of every message so far."""
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # Subscribe on every connect so that a reconnect resubscribes.
        client.subscribe(self.topic_filter, qos=1)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), time.time_ns() // 10**6))


def _topic() -> str:
    """Return a topic pattern no other test on the shared broker publishes to."""
    return f"simtest-{uuid.uuid4().hex[:8]}/+/telemetry"


def _decode_all(
    messages: list[tuple[str, bytes, int]], pattern: str
) -> dict[str, list[list[Reading]]]:
    decoder = PayloadDecoder(IngestSettings(), pattern)
    by_asset: dict[str, list[list[Reading]]] = {}
    for topic, payload, received_ms in messages:
        readings = decoder.decode(topic, payload, received_ms)
        by_asset.setdefault(readings[0].asset_id, []).append(readings)
    return by_asset


@pytest.mark.external_service
def test_publisher_delivers_every_message_at_qos1(mosquitto: MosquittoBroker) -> None:
    pattern = _topic()
    subscriber = Subscriber(mosquitto, pattern)
    try:
        report = run_simulation(
            mosquitto.url, assets=5, rate=100.0, qos=1, seed=11, count=300, topic=pattern
        )
        wait_until(lambda: len(subscriber.received()) >= 300, timeout_s=10, what="300 messages")
        messages = subscriber.received()
    finally:
        subscriber.close()

    assert (report.messages_published, report.messages_sent) == (300, 300)
    assert (report.messages_failed, report.messages_unconfirmed) == (0, 0)
    assert (report.readings_sent, report.points_sent) == (300, 1500)
    assert len(messages) == 300
    by_asset = _decode_all(messages, pattern)
    assert sorted(by_asset) == [f"sim-{n:04d}" for n in range(1, 6)]
    assert all(len(per_message) == 60 for per_message in by_asset.values())
    for per_message in by_asset.values():
        stamps = [readings[0].ts_ms for readings in per_message]
        # Each asset publishes every 10 ms, with event times in order.
        assert stamps == sorted(stamps)
        assert all(b - a == 10 for a, b in itertools.pairwise(stamps))
        run_hours = [
            r.value for readings in per_message for r in readings if r.metric == "run_hours"
        ]
        assert run_hours == sorted(run_hours)


@pytest.mark.external_service
def test_publisher_holds_the_rate(mosquitto: MosquittoBroker) -> None:
    pattern = _topic()
    subscriber = Subscriber(mosquitto, pattern)
    try:
        report = run_simulation(
            mosquitto.url, assets=4, rate=50.0, qos=0, seed=1, duration_s=2.0, topic=pattern
        )
        wait_until(
            lambda: len(subscriber.received()) >= report.messages_sent,
            timeout_s=5,
            what="every sent message",
        )
        arrivals = [received_ms for _, _, received_ms in subscriber.received()]
    finally:
        subscriber.close()

    # 4 assets x 50 messages/s for 2 s is 400 slots; a late loop may lose a few at the end.
    assert 380 <= report.messages_sent <= 400
    assert report.elapsed_s == pytest.approx(2.0, abs=0.3)
    # Paced, not bursted: each half of the run carries about half of the messages.
    middle = arrivals[0] + 1000
    first_half = sum(1 for at in arrivals if at < middle)
    assert 170 <= first_half <= 230


@pytest.mark.external_service
def test_batches_with_iso_timestamps_arrive_whole(mosquitto: MosquittoBroker) -> None:
    pattern = _topic()
    subscriber = Subscriber(mosquitto, pattern)
    try:
        report = run_simulation(
            mosquitto.url,
            assets=3,
            rate=20.0,
            qos=1,
            seed=5,
            count=30,
            batch=5,
            ts_format="iso",
            topic=pattern,
        )
        wait_until(lambda: len(subscriber.received()) >= 30, timeout_s=10, what="30 messages")
        messages = subscriber.received()
    finally:
        subscriber.close()

    assert (report.messages_sent, report.readings_sent, report.points_sent) == (30, 150, 750)
    for _, payload, _ in messages:
        items = json.loads(payload)
        assert len(items) == 5
        assert all(item["ts"].endswith("Z") for item in items)
    readings = [r for per_message in _decode_all(messages, pattern).values() for r in per_message]
    assert sum(len(r) for r in readings) == 750


@pytest.mark.external_service
def test_silent_asset_goes_quiet(mosquitto: MosquittoBroker) -> None:
    pattern = _topic()
    subscriber = Subscriber(mosquitto, pattern)
    try:
        report = run_simulation(
            mosquitto.url,
            assets=3,
            rate=50.0,
            qos=1,
            seed=2,
            count=60,
            scenarios={"sim-0002": "silent:0s"},
            topic=pattern,
        )
        wait_until(lambda: len(subscriber.received()) >= 60, timeout_s=10, what="60 messages")
        topics = {topic for topic, _, _ in subscriber.received()}
    finally:
        subscriber.close()

    assert report.messages_sent == 60
    assert report.silent_skips >= 29
    assert topics == {pattern.replace("+", "sim-0001"), pattern.replace("+", "sim-0003")}


@pytest.mark.external_service
def test_stop_event_ends_an_endless_run_cleanly(mosquitto: MosquittoBroker) -> None:
    pattern = _topic()
    subscriber = Subscriber(mosquitto, pattern)
    stop = threading.Event()
    reports: list[SimulationReport] = []
    runner = threading.Thread(
        target=lambda: reports.append(
            run_simulation(mosquitto.url, assets=2, rate=100.0, topic=pattern, stop=stop)
        )
    )
    try:
        runner.start()
        wait_until(lambda: len(subscriber.received()) >= 50, timeout_s=10, what="50 messages")
        stop.set()
        runner.join(timeout=5)
        assert not runner.is_alive(), "the run did not notice the stop event"
        report = reports[0]
        wait_until(
            lambda: len(subscriber.received()) >= report.messages_sent,
            timeout_s=5,
            what="every sent message",
        )
        received = len(subscriber.received())
    finally:
        stop.set()
        runner.join(timeout=5)
        subscriber.close()

    assert report.stopped
    assert report.messages_sent >= 50
    assert report.messages_unconfirmed == 0
    assert received == report.messages_sent


@pytest.mark.external_service
def test_unreachable_broker_is_a_connection_error() -> None:
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="cannot reach the broker"):
        run_simulation(f"mqtt://127.0.0.1:{free_port()}", count=1)
    assert time.monotonic() - started < 5


@pytest.mark.external_service
@pytest.mark.slow
def test_publisher_rides_out_a_broker_restart_without_losing_qos1_messages(
    mosquitto_factory: Callable[[], MosquittoBroker],
) -> None:
    broker = mosquitto_factory()
    pattern = _topic()
    subscriber = Subscriber(broker, pattern)
    reports: list[SimulationReport] = []
    runner = threading.Thread(
        target=lambda: reports.append(
            run_simulation(broker.url, assets=3, rate=40.0, qos=1, count=600, topic=pattern)
        )
    )
    try:
        runner.start()
        wait_until(lambda: len(subscriber.received()) >= 100, timeout_s=10, what="100 messages")
        broker.restart()
        runner.join(timeout=30)
        assert not runner.is_alive(), "the run did not finish after the broker came back"
        report = reports[0]
        wait_until(
            lambda: len({p for _, p, _ in subscriber.received()}) >= 600,
            timeout_s=15,
            what="all 600 distinct messages",
        )
        distinct = {payload for _, payload, _ in subscriber.received()}
    finally:
        runner.join(timeout=5)
        subscriber.close()

    assert (report.messages_published, report.messages_sent) == (600, 600)
    assert report.messages_unconfirmed == 0
    # QoS 1 is at-least-once: duplicates are allowed, gaps are not.
    assert len(distinct) == 600
