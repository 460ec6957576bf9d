"""The MQTT side of ingest: subscribe with paho-mqtt 2.x and hand messages to the writer."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.settings import MqttSettings
from ingest.metrics import IngestMetrics
from ingest.worker import RawMessage

log = logging.getLogger(__name__)

# CONNACK answers that mean "this broker does not speak MQTT v5": v5's 0x84, and
# v3.1.1's return code 1 that older brokers send to a protocol level they do not know.
_UNSUPPORTED_PROTOCOL = {132, 1}
_PROTOCOLS = {"5": MQTTProtocolVersion.MQTTv5, "3.1.1": MQTTProtocolVersion.MQTTv311}


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker listens, parsed from `mqtt://` or `mqtts://` URLs."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse a broker URL; the port defaults to 1883, or 8883 for mqtts."""
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
            raise ValueError(f"not a broker URL (mqtt://host:port or mqtts://host:port): {url}")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls)


def subscription_filter(topic: str, shared_group: str | None) -> str:
    """Return the filter to subscribe to, as a shared subscription when a group is set."""
    if shared_group and not topic.startswith("$share/"):
        return f"$share/{shared_group}/{topic}"
    return topic


def _new_client(
    settings: MqttSettings, client_id: str, protocol: MQTTProtocolVersion
) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        # A persistent session: the broker keeps unacknowledged and queued QoS 1
        # messages while ingest is down, and redelivers them when it is back.
        clean_session=None if protocol == mqtt.MQTTv5 else False,
        manual_ack=True,
    )
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.url and BrokerAddress.parse(settings.url).tls:
        client.tls_set(
            ca_certs=str(settings.ca_file) if settings.ca_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return client


def detect_protocol(
    settings: MqttSettings, address: BrokerAddress, timeout_s: float = 5.0
) -> MQTTProtocolVersion:
    """Tell whether the broker accepts MQTT v5; answer MQTTv311 when it does not.

    Raises OSError when the broker cannot be reached at all.
    """
    answer: dict[str, int] = {}
    probe = _new_client(settings, f"{settings.client_id}-probe", mqtt.MQTTv5)

    def on_connect(
        client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        answer["rc"] = reason.value

    def on_disconnect(
        client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        answer.setdefault("rc", -1)

    probe.on_connect = on_connect
    probe.on_disconnect = on_disconnect
    probe.connect(address.host, address.port, keepalive=10, clean_start=True)
    deadline = time.monotonic() + timeout_s
    try:
        while "rc" not in answer and time.monotonic() < deadline:
            if probe.loop(timeout=0.1) not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                answer.setdefault("rc", -1)
    finally:
        probe.disconnect()
    rc = answer.get("rc", -1)
    if rc == 0:
        return mqtt.MQTTv5
    if rc in _UNSUPPORTED_PROTOCOL or rc == -1:
        # A 3.1.1-only broker may refuse v5 or simply hang up on it.
        log.info("broker does not accept MQTT v5 (answer %s); using MQTT 3.1.1", rc)
        return mqtt.MQTTv311
    raise ConnectionRefusedError(f"broker refused the connection: {ReasonCode(2, identifier=rc)}")


class MqttSubscriber:
    """Hold one persistent MQTT session and hand every message to `deliver`.

    Callbacks only parse and hand off; they never do I/O on paho's network thread. The
    subscription is made in on_connect so that a reconnect resubscribes.
    """

    def __init__(
        self,
        settings: MqttSettings,
        filters: Sequence[str],
        deliver: Callable[[RawMessage], None],
        metrics: IngestMetrics,
    ) -> None:
        if settings.url is None:
            raise ValueError("MqttSubscriber needs a broker URL")
        self._settings = settings
        self._address = BrokerAddress.parse(settings.url)
        self._filters = [subscription_filter(f, settings.shared_group) for f in filters]
        self._deliver = deliver
        self._metrics = metrics
        self._client: mqtt.Client | None = None
        self._protocol: MQTTProtocolVersion = mqtt.MQTTv5
        # Bumped on every successful connect: a message is only acknowledged on the
        # connection that delivered it, since packet ids are reused across connections.
        self._session = 0
        self._connected = threading.Event()
        self._ever_connected = False
        self._lost_at: float | None = None

    @property
    def protocol(self) -> MQTTProtocolVersion:
        """Return the MQTT protocol version in use."""
        return self._protocol

    def start(self, stop: threading.Event) -> None:
        """Connect (waiting for the broker if it is not up yet) and start paho's loop."""
        delay = 0.5
        forced = _PROTOCOLS.get(self._settings.protocol)
        while not stop.is_set():
            if forced is not None:
                self._protocol = forced
                break
            try:
                self._protocol = detect_protocol(self._settings, self._address)
                break
            except OSError as error:
                log.warning("MQTT broker %s unreachable (%s); retrying", self._settings.url, error)
                stop.wait(delay)
                delay = min(delay * 2, 10)
        client = _new_client(self._settings, self._settings.client_id, self._protocol)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        properties = None
        if self._protocol == mqtt.MQTTv5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self._settings.session_expiry_s
            # How many unacknowledged QoS 1 messages the broker may send at once; sized
            # with the writer's batch so acknowledging after the write does not stall.
            properties.ReceiveMaximum = self._settings.receive_maximum
        client.connect_async(
            self._address.host,
            self._address.port,
            keepalive=self._settings.keepalive_s,
            clean_start=False
            if self._protocol == mqtt.MQTTv5
            else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client = client
        client.loop_start()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected and subscribed, or the timeout passes."""
        return self._connected.wait(timeout_s)

    def acknowledge(self, messages: Sequence[RawMessage]) -> None:
        """Send PUBACK for the QoS 1 messages delivered on the current connection."""
        client = self._client
        if client is None:
            return
        session = self._session
        for message in messages:
            # Older sessions' messages are redelivered by the broker; their copies are
            # acknowledged when they arrive again (the store overwrites, no duplicates).
            if message.qos and message.session == session:
                client.ack(message.mid, message.qos)

    def stop(self) -> None:
        """Disconnect and stop paho's loop."""
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        client.loop_stop()
        self._metrics.mqtt_connected.set(0)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the connection: %s", reason)
            return
        self._session += 1
        qos: int = self._settings.qos
        client.subscribe([(topic, qos) for topic in self._filters])
        self._metrics.mqtt_connected.set(1)
        if self._ever_connected:
            self._metrics.reconnects.inc()
            down_s = time.monotonic() - self._lost_at if self._lost_at else 0.0
            log.warning("MQTT connection back after %.1fs; resubscribed", down_s)
        else:
            log.info(
                "connected to MQTT broker %s (MQTT %s), subscribed to %s",
                self._settings.url,
                "5" if self._protocol == mqtt.MQTTv5 else "3.1.1",
                ", ".join(self._filters),
            )
        self._ever_connected = True
        self._lost_at = None
        self._connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._connected.clear()
        self._metrics.mqtt_connected.set(0)
        if self._lost_at is None and self._client is not None:
            self._lost_at = time.monotonic()
            log.error("MQTT connection lost (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            # MQTT requires UTF-8 topics; keep the message (it becomes a dead letter for
            # its topic) rather than let the exception end paho's network thread.
            topic = message._topic.decode("utf-8", "replace")
        self._deliver(
            RawMessage(
                topic,
                cast(bytes, message.payload),  # paho hands over bytes; avoid a copy
                message.mid,
                message.qos,
                time.time_ns() // 1_000_000,
                self._session,
            )
        )
