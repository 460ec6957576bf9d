"""Check that the service fixtures give the guarantees other tests rely on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.influx import InfluxServer
from tests.support.mosquitto import MosquittoBroker
from tests.support.polling import wait_until

pytestmark = pytest.mark.external_service

TOPIC = "pmk/pump-1/telemetry"


class Subscriber:
    """A persistent-session MQTT v5 client that records what it receives."""

    def __init__(self, broker: MosquittoBroker, client_id: str) -> None:
        self.broker = broker
        self.client_id = client_id
        self.payloads: list[bytes] = []
        self.session_present: bool | None = None
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._connected = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def connect(self) -> None:
        """Resume or create a session that outlives the connection by an hour."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        self._connected.clear()
        # clean_start=False on the very first connect too: mosquitto (2.0 and later) only
        # writes sessions whose latest CONNECT had Clean Start 0 to its persistence file,
        # so paho's default (clean on first connect only) loses the session on a restart.
        self.client.connect(
            self.broker.host, self.broker.port, clean_start=False, properties=properties
        )
        self.client.loop_start()
        wait_until(self._connected.is_set, timeout_s=5, what=f"{self.client_id} connected")

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK."""
        self.client.subscribe(topic, qos=1)
        wait_until(self._subscribed.is_set, timeout_s=5, what="SUBACK")

    def disconnect(self) -> None:
        """Disconnect cleanly, leaving the session on the broker."""
        self.client.disconnect()
        self.client.loop_stop()

    def received(self) -> list[bytes]:
        """Return the payloads received so far."""
        with self._lock:
            return list(self.payloads)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.session_present = flags.session_present
        self._connected.set()

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
            self.payloads.append(bytes(message.payload))


def publish_qos1(broker: MosquittoBroker, payloads: list[bytes]) -> None:
    """Publish payloads at QoS 1 and return once the broker has acknowledged every one."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="fixture-test-publisher",
        protocol=mqtt.MQTTv5,
    )
    client.max_inflight_messages_set(100)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(TOPIC, payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(timeout=10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def test_mosquitto_keeps_queued_qos1_messages_of_an_offline_session_across_a_restart(
    mosquitto_factory: Callable[[], MosquittoBroker],
) -> None:
    broker = mosquitto_factory()
    subscriber = Subscriber(broker, "fixture-test-subscriber")
    subscriber.connect()
    subscriber.subscribe(TOPIC)
    subscriber.disconnect()

    publish_qos1(broker, [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'])
    broker.restart()
    assert broker.running
    subscriber.connect()
    try:
        # No new SUBSCRIBE: the session, its subscription and the queue came from disk.
        assert subscriber.session_present is True
        wait_until(lambda: len(subscriber.received()) >= 3, timeout_s=5, what="queued messages")
        assert subscriber.received() == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    finally:
        subscriber.disconnect()


def test_mosquitto_queues_more_than_the_default_1000_messages_for_an_offline_session(
    mosquitto_factory: Callable[[], MosquittoBroker],
) -> None:
    broker = mosquitto_factory()
    subscriber = Subscriber(broker, "fixture-test-backlog")
    subscriber.connect()
    subscriber.subscribe(TOPIC)
    subscriber.disconnect()

    # mosquitto's default max_queued_messages (1000) would silently drop the rest.
    payloads = [str(n).encode() for n in range(2500)]
    publish_qos1(broker, payloads)
    subscriber.connect()
    try:
        wait_until(lambda: len(subscriber.received()) >= 2500, timeout_s=15, what="backlog")
        assert subscriber.received() == payloads
    finally:
        subscriber.disconnect()


def test_mosquitto_fixture_never_uses_the_system_broker_port(mosquitto: MosquittoBroker) -> None:
    assert mosquitto.port != 1883
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert f"listener {mosquitto.port} 127.0.0.1" in mosquitto.conf_path.read_text()


def test_influxd_restart_keeps_port_and_data(
    influxd_factory: Callable[[], InfluxServer],
) -> None:
    server = influxd_factory()
    port = server.port
    server.query("CREATE DATABASE extra")
    server.restart()

    assert server.port == port
    assert {"name": "extra"} in server.query("SHOW DATABASES")
