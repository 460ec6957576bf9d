"""The embedded MQTT broker (amqtt) that `serve` runs when no broker is configured."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

from amqtt.broker import Broker

log = logging.getLogger(__name__)


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """Run amqtt on its own event-loop thread, on 1883 if free or else any free port."""

    def __init__(self, host: str = "127.0.0.1", preferred_port: int = 1883) -> None:
        self.host = host
        self.preferred_port = preferred_port
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """Return the broker's mqtt:// URL."""
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and return once it accepts connections."""
        # Another broker (often a system mosquitto) may own 1883; pmkeeper must still start.
        if _port_is_free(self.host, self.preferred_port):
            self.port = self.preferred_port
        else:
            self.port = _free_port(self.host)
            log.warning(
                "port %d is taken; the embedded MQTT broker listens on %d instead",
                self.preferred_port,
                self.port,
            )
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("embedded MQTT broker did not start")
        if self._failure is not None:
            raise RuntimeError(f"embedded MQTT broker failed: {self._failure}")
        log.info("embedded MQTT broker (amqtt) listening on %s", self.url)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start_broker())
        except Exception as error:  # noqa: BLE001 - reported to the starting thread
            self._failure = error
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _start_broker(self) -> None:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        self._broker = Broker(config)
        await self._broker.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the broker down and join its thread."""
        loop, broker = self._loop, self._broker
        if loop is None or broker is None:
            return
        future = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
        try:
            future.result(timeout_s)
        except Exception as error:  # noqa: BLE001 - shutting down; log and carry on
            log.warning("embedded MQTT broker did not shut down cleanly: %s", error)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout_s)
