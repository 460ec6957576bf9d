"""Start a real influxd (1.6.7) and the /api/v2/write proxy in front of it, for tests.

`InfluxServer.url` is the proxy, which is what stores under test should use: see
tests/support/influx_proxy.py for why it exists. `direct_url` reaches influxd itself.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from pydantic import SecretStr

from core.settings import InfluxSettings
from tests.support.binaries import free_port, require_binary, wait_for_port
from tests.support.polling import wait_until

_REPO_ROOT = Path(__file__).resolve().parents[2]

# Everything not needed by the tests is switched off, and every listener is bound to a
# loopback port chosen per server, so parallel runs and a system influxd never collide.
INFLUXD_CONF_TEMPLATE = """\
# No usage reports to InfluxData from a test run.
reporting-disabled = true
# The backup/restore RPC service defaults to :8088 on all interfaces; move it aside.
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  # fsync every write, as the production default does: tests restart influxd and
  # expect acknowledged points to still be there.
  wal-fsync-delay = "0s"

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[monitor]
  # Otherwise influxd writes its own statistics into _internal every 10 s.
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false

[ifql]
  enabled = false

[logging]
  suppress-logo = true

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false
"""

_live_servers: set[InfluxServer] = set()


class InfluxServer:
    """Run a private influxd on free loopback ports, with the v2-write proxy in front."""

    def __init__(
        self,
        root: Path,
        *,
        binary: str | None = None,
        bucket: str = "pmkeeper",
        org: str = "pmkeeper",
        token: str = "test-token",  # noqa: S107 - influxd runs with auth disabled
    ) -> None:
        self.binary = binary or require_binary("influxd")
        self.root = root
        self.bucket = bucket
        self.org = org
        # influxd 1.6 with auth disabled ignores the header; a non-empty token still
        # exercises the code that sends it.
        self.token = token
        # Ports are fixed for the server's lifetime so restart() comes back on the same one.
        self.port = free_port()
        self.rpc_port = free_port()
        self.proxy_port = free_port()
        self.config_path = root / "influxdb.conf"
        self.log_path = root / "influxd.log"
        self.proxy_log_path = root / "influx-proxy.log"
        self._influxd: subprocess.Popen[bytes] | None = None
        self._proxy: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []

    @property
    def url(self) -> str:
        """Return the proxy URL that InfluxDB clients under test should use."""
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def direct_url(self) -> str:
        """Return influxd's own URL (no /api/v2/write there)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Tell whether the influxd process is alive."""
        return self._influxd is not None and self._influxd.poll() is None

    def start(self, timeout_s: float = 30.0) -> None:
        """Start influxd (and the proxy if not yet up), wait for /ping, create the bucket."""
        if self.running:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        _live_servers.add(self)
        if self._proxy is None or self._proxy.poll() is not None:
            self._start_proxy()
        self.config_path.write_text(
            INFLUXD_CONF_TEMPLATE.format(
                root=self.root, rpc_port=self.rpc_port, http_port=self.port
            )
        )
        log = self._open_log(self.log_path)
        self._influxd = subprocess.Popen(
            [self.binary, "-config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_until(self._answers_ping, timeout_s=timeout_s, what=f"influxd /ping on {self.port}")
        self.create_database(self.bucket)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop influxd gracefully (SIGTERM), killing it if it overstays; the proxy stays up."""
        _terminate(self._influxd, timeout_s)

    def kill(self) -> None:
        """Kill influxd without letting it shut down cleanly; the proxy stays up."""
        if self._influxd is not None and self._influxd.poll() is None:
            self._influxd.kill()
            self._influxd.wait()

    def restart(self, timeout_s: float = 30.0) -> None:
        """Stop influxd and start it again on the same port and data directory."""
        self.stop()
        self.start(timeout_s=timeout_s)

    def close(self) -> None:
        """Stop influxd and the proxy and close their log files."""
        try:
            self.stop()
        finally:
            _terminate(self._proxy, 5.0)
            for log in self._logs:
                log.close()
            self._logs.clear()
            _live_servers.discard(self)

    def influx_settings(self, bucket: str | None = None) -> InfluxSettings:
        """Return settings that point pmkeeper at this server (through the proxy)."""
        return InfluxSettings(
            url=self.url,
            token=SecretStr(self.token),
            org=self.org,
            bucket=bucket or self.bucket,
            timeout_s=5.0,
        )

    def create_database(self, name: str) -> None:
        """Create a database (a bucket, to a v2 client); creating an existing one is a no-op."""
        self._statement(f"CREATE DATABASE {_quote_identifier(name)}")

    def drop_database(self, name: str) -> None:
        """Drop a database and its data."""
        self._statement(f"DROP DATABASE {_quote_identifier(name)}")

    def query(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """Run InfluxQL directly on influxd; return every row as a dict, tags included."""
        response = httpx.post(
            f"{self.direct_url}/query",
            params={"db": db or self.bucket, "epoch": "ms"},
            data={"q": q},
            timeout=10.0,
        )
        response.raise_for_status()
        rows: list[dict[str, Any]] = []
        for result in response.json()["results"]:
            if "error" in result:
                raise AssertionError(f"influxd refused {q!r}: {result['error']}")
            for series in result.get("series", ()):
                tags = series.get("tags", {})
                for values in series.get("values", ()):
                    rows.append({**tags, **dict(zip(series["columns"], values, strict=True))})
        return rows

    def log_tail(self, lines: int = 30) -> str:
        """Return the end of influxd's log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _statement(self, q: str) -> None:
        response = httpx.post(f"{self.direct_url}/query", data={"q": q}, timeout=10.0)
        response.raise_for_status()
        for result in response.json()["results"]:
            if "error" in result:
                raise AssertionError(f"influxd refused {q!r}: {result['error']}")

    def _answers_ping(self) -> bool:
        if self._influxd is None or self._influxd.poll() is not None:
            raise RuntimeError(f"influxd exited during start-up:\n{self.log_tail()}")
        try:
            return httpx.get(f"{self.direct_url}/ping", timeout=1.0).status_code == 204
        except httpx.HTTPError:
            return False

    def _start_proxy(self) -> None:
        log = self._open_log(self.proxy_log_path)
        self._proxy = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.influx_proxy",
                "--listen-port",
                str(self.proxy_port),
                "--upstream-port",
                str(self.port),
                "--db",
                self.bucket,
            ],
            cwd=_REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(_REPO_ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.proxy_port, timeout_s=10.0)
        except TimeoutError as exc:
            raise RuntimeError(
                f"influx proxy did not start:\n{self.proxy_log_path.read_text()}"
            ) from exc

    def _open_log(self, path: Path) -> IO[bytes]:
        log = path.open("ab")
        self._logs.append(log)
        return log


def _terminate(process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _quote_identifier(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@atexit.register
def _close_leftovers() -> None:
    # Fixture teardown normally does this; the hook covers an interpreter exiting early.
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.close()


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """Start one influxd (and proxy) for the whole session; tests use `influx_bucket`."""
    server = InfluxServer(tmp_path_factory.mktemp("influxd"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def influx_bucket(influxd: InfluxServer) -> Iterator[str]:
    """Create a database of the session influxd for one test, and drop it afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    influxd.create_database(name)
    yield name
    if influxd.running:
        influxd.drop_database(name)


@pytest.fixture
def influx_settings(influxd: InfluxServer, influx_bucket: str) -> InfluxSettings:
    """Return settings pointing at this test's own bucket on the session influxd."""
    return influxd.influx_settings(influx_bucket)


@pytest.fixture
def influxd_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], InfluxServer]]:
    """Start private influxd servers a test may stop, kill and restart; all closed at teardown."""
    servers: list[InfluxServer] = []

    def start() -> InfluxServer:
        server = InfluxServer(tmp_path_factory.mktemp("influxd-private"))
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in reversed(servers):
            server.close()
