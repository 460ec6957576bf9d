"""Start a real mosquitto broker on a free loopback port, for tests."""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.support.binaries import free_port, require_binary, wait_for_port

# mosquitto.conf for pmkeeper's broker. Each comment says why the line is there; the
# operator docs carry the same lines. mosquitto only accepts comments on their own line.
MOSQUITTO_CONF_TEMPLATE = """\
# Loopback only, on a port picked per broker: never the system broker's 1883.
listener {port} 127.0.0.1
# Started as root (CI containers), mosquitto switches to the `mosquitto` user, which
# cannot write the test's temporary directory: stay the user that runs the tests.
# (Test-only: a packaged broker keeps the default.)
user {user}
# Tests connect without credentials. mosquitto 2 refuses anonymous clients by default.
allow_anonymous true
# Keep persistent sessions, their subscriptions and queued QoS 1 messages across a
# broker restart; without it a restart silently drops what devices already handed over.
persistence true
# Where mosquitto.db lives; the trailing slash is required.
persistence_location {data_dir}/
# mosquitto writes mosquitto.db on clean shutdown and every autosave_interval seconds
# (default 1800). A crash loses what arrived since the last save, so save often; each
# save rewrites the file, so on a busy production broker weigh this against disk I/O.
autosave_interval 5
# Nagle's algorithm is on by default and holds small PUBLISH/PUBACK packets back,
# adding tens of milliseconds at p99.
set_tcp_nodelay true
# Unacknowledged QoS 1/2 messages in flight to one client (default 20). The ingest
# writer acknowledges after a batched write, so it needs a window as large as a batch.
max_inflight_messages 1000
# Messages queued per client beyond those in flight (default 1000). Excess messages are
# DROPPED, both for an offline persistent session and for a slow online consumer, so
# the limit is set far above any expected backlog rather than unlimited (0), which would
# let one stuck client exhaust the broker's memory.
max_queued_messages 1000000
# No byte limit on that queue either (0 is the default, stated for the reader).
max_queued_bytes 0
# Log to a file the tests can show when something fails.
log_dest file {log_path}
log_type error
log_type warning
log_type notice
log_type information
log_timestamp_format %Y-%m-%dT%H:%M:%S
"""

_live_brokers: set[MosquittoBroker] = set()


class MosquittoBroker:
    """Run a private mosquitto with persistence on a free loopback port."""

    host = "127.0.0.1"

    def __init__(self, root: Path, *, binary: str | None = None) -> None:
        self.binary = binary or require_binary("mosquitto")
        self.root = root
        # Fixed for the broker's lifetime so a restart comes back on the same port.
        self.port = free_port()
        self.conf_path = root / "mosquitto.conf"
        self.log_path = root / "mosquitto.log"
        self.data_dir = root / "data"
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the broker URL in the form PMK_MQTT__URL takes."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Tell whether the mosquitto process is alive."""
        return self._process is not None and self._process.poll() is None

    def config_text(self) -> str:
        """Return this broker's mosquitto.conf."""
        return MOSQUITTO_CONF_TEMPLATE.format(
            port=self.port,
            user=pwd.getpwuid(os.getuid()).pw_name,
            data_dir=self.data_dir,
            log_path=self.log_path,
        )

    def start(self, timeout_s: float = 10.0) -> None:
        """Write the config and start mosquitto (again, on the same port); wait until it listens."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config_text())
        _live_brokers.add(self)
        if self._output is None:
            # Start-up errors go to stderr before log_dest is read.
            self._output = (self.root / "mosquitto.out").open("ab")
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.conf_path)],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port, timeout_s=timeout_s, host=self.host)
        except TimeoutError as exc:
            self.kill()
            raise RuntimeError(f"mosquitto did not start:\n{self.log_tail()}") from exc

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop mosquitto with SIGTERM (it saves its persistence file); kill it if it hangs."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Kill mosquitto with SIGKILL: no final save, like a crash."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def restart(self, timeout_s: float = 10.0) -> None:
        """Stop mosquitto and start it again on the same port with the same persistence file."""
        self.stop()
        self.start(timeout_s=timeout_s)

    def close(self) -> None:
        """Stop mosquitto and close its output file."""
        try:
            self.stop()
        finally:
            if self._output is not None:
                self._output.close()
                self._output = None
            _live_brokers.discard(self)

    def log_tail(self, lines: int = 30) -> str:
        """Return the end of the broker's log and start-up output, for failure messages."""
        texts = []
        for path in (self.root / "mosquitto.out", self.log_path):
            with contextlib.suppress(FileNotFoundError):
                texts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(texts) or "(no log)"


@atexit.register
def _close_leftovers() -> None:
    # Fixture teardown normally does this; the hook covers an interpreter exiting early.
    for broker in list(_live_brokers):
        with contextlib.suppress(Exception):
            broker.close()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """Start one mosquitto for the whole session; tests must not restart it."""
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"))
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture
def mosquitto_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], MosquittoBroker]]:
    """Start private brokers a test may stop, kill and restart; all closed at teardown."""
    brokers: list[MosquittoBroker] = []

    def start() -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto-private"))
        brokers.append(broker)
        broker.start()
        return broker

    try:
        yield start
    finally:
        for broker in reversed(brokers):
            broker.close()
