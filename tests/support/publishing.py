"""Publish test telemetry through a real broker with paho-mqtt, as a device would."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class Publisher:
    """A connected paho client that publishes and waits for the broker's acknowledgements."""

    def __init__(self, url: str, *, inflight: int = 1000) -> None:
        parts = urlsplit(url)
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-device-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(inflight)
        self.client.max_queued_messages_set(0)
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()

    def publish(
        self,
        messages: Sequence[tuple[str, bytes]],
        qos: int = 1,
        rate: float | None = None,
        stop: threading.Event | None = None,
    ) -> int:
        """Publish in order, optionally paced at `rate` msg/s; return how many went out."""
        started = time.monotonic()
        infos = []
        for index, (topic, payload) in enumerate(messages):
            if stop is not None and stop.is_set():
                break
            if rate:
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            infos.append(self.client.publish(topic, payload, qos))
        for info in infos:
            info.wait_for_publish(60)
            if not info.is_published():
                raise AssertionError(f"broker did not acknowledge message {info.mid}")
        return len(infos)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def publish(url: str, messages: Sequence[tuple[str, bytes]], qos: int = 1) -> None:
    """Publish messages and wait until the broker acknowledged every one."""
    publisher = Publisher(url)
    try:
        publisher.publish(messages, qos)
    finally:
        publisher.close()
