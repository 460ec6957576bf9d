"""Serve InfluxDB 2.x's /api/v2/write in front of influxd 1.6.7, for tests.

Why this exists: the tests run the real `influxd` from the Debian package, which is
InfluxDB 1.6.7. It predates /api/v2/write (added in 1.8), which is the endpoint
influxdb-client writes to and which production's InfluxDB 2.x serves natively. This
proxy maps

    POST /api/v2/write?org=O&bucket=B&precision=ms  ->  POST /write?db=B&precision=ms

passing the body through untouched (gzip included) and the status and body back. Every
other path (/query, /ping, /health) is forwarded unchanged: reads already use InfluxQL on
/query, which all InfluxDB versions serve, so the store under test talks to influxd
exactly as it would in production except for this one path rename.

It runs as its own process (`python -m tests.support.influx_proxy --listen-port P
--upstream-port U --db NAME`) so it never competes for the GIL of the process under
test, keeps one keep-alive connection to influxd per client connection, and answers 503
while influxd is down, which is what a load balancer in front of InfluxDB would do.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from urllib.parse import parse_qs, urlencode, urlsplit

log = logging.getLogger(__name__)

# influxd 1.x spells precisions n/u/ms/s; 2.x spells them ns/us/ms/s.
_PRECISIONS = {"ns": "n", "us": "u", "ms": "ms", "s": "s", "n": "n", "u": "u"}
_FORWARDED_REQUEST_HEADERS = ("Content-Type", "Content-Encoding", "Authorization", "Accept")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class _UpstreamDownError(Exception):
    pass


class InfluxProxyHandler(BaseHTTPRequestHandler):
    """Forward one client connection's requests to influxd, renaming the v2 write path."""

    # HTTP/1.1 keeps client connections open, so a benchmark is not paying for a TCP
    # handshake per batch.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate sends; without this Nagle's algorithm plus the
    # client's delayed ACK would add ~40 ms to every response.
    disable_nagle_algorithm = True
    server: InfluxProxyServer

    def do_GET(self) -> None:
        """Forward a GET (/ping, /health, /query)."""
        self._forward()

    def do_POST(self) -> None:
        """Forward a POST, mapping /api/v2/write onto /write."""
        self._forward()

    def do_HEAD(self) -> None:
        """Forward a HEAD (/ping)."""
        self._forward()

    def log_message(self, format: str, *args: object) -> None:
        """Log at debug level only: a line per request would slow a benchmark down."""
        log.debug("%s " + format, self.address_string(), *args)

    def _forward(self) -> None:
        body = self._read_body()
        try:
            path = self._upstream_path()
        except ValueError as exc:
            self._answer(400, json.dumps({"code": "invalid", "message": str(exc)}).encode())
            return
        headers = {
            name: value
            for name in _FORWARDED_REQUEST_HEADERS
            if (value := self.headers.get(name)) is not None
        }
        try:
            status, response_headers, response_body = self._upstream_request(
                self.command, path, body, headers
            )
        except _UpstreamDownError as exc:
            message = {"code": "unavailable", "message": f"influxd is unreachable: {exc}"}
            self._answer(503, json.dumps(message).encode())
            return
        self._answer(status, response_body, response_headers)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0], 16)
                if size == 0:
                    # Skip trailers up to the blank line that ends the message.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _upstream_path(self) -> str:
        url = urlsplit(self.path)
        if url.path.rstrip("/") != "/api/v2/write":
            return self.path
        query = parse_qs(url.query)
        bucket = query.get("bucket", [""])[0] or self.server.default_db
        if not bucket:
            raise ValueError("bucket is required")
        precision = query.get("precision", ["ns"])[0]
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of ns, us, ms, s, not {precision!r}")
        # A v2 bucket "db/rp" names a 1.x database and retention policy.
        database, _, retention = bucket.partition("/")
        params = {"db": database, "precision": _PRECISIONS[precision]}
        if retention:
            params["rp"] = retention
        return "/write?" + urlencode(params)

    def _upstream_request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        # A keep-alive connection goes stale when influxd restarts; only a request that
        # failed on a reused connection is retried, once, on a fresh one. Writes are
        # idempotent in InfluxDB, so a duplicate is harmless.
        for attempt in range(2):
            connection, reused = self.server.upstream_connection()
            try:
                connection.request(method, path, body=body or None, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.server.drop_upstream_connection()
                if reused and attempt == 0:
                    continue
                raise _UpstreamDownError(f"{type(exc).__name__}: {exc}") from exc
            if response.will_close:
                self.server.drop_upstream_connection()
            kept = [
                (name, value)
                for name, value in response.getheaders()
                if name.lower() not in _HOP_BY_HOP
            ]
            return response.status, kept, payload
        raise AssertionError("unreachable")

    def _answer(
        self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None
    ) -> None:
        self.send_response_only(status)
        if headers is None:
            headers = [("Content-Type", "application/json")]
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)


class InfluxProxyServer(ThreadingHTTPServer):
    """A threading HTTP server with one upstream keep-alive connection per handler thread."""

    daemon_threads = True
    # A burst of benchmark clients must not be refused by a short accept backlog.
    request_queue_size = 128

    def __init__(
        self,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        timeout_s: float,
        default_db: str = "",
    ) -> None:
        super().__init__(listen, InfluxProxyHandler)
        self.upstream = upstream
        self.default_db = default_db
        self.timeout_s = timeout_s
        self._local = threading.local()

    def upstream_connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """Return this thread's connection to influxd and whether it was used before."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
        connection = http.client.HTTPConnection(*self.upstream, timeout=self.timeout_s)
        try:
            connection.connect()
        except OSError as exc:
            connection.close()
            raise _UpstreamDownError(f"{type(exc).__name__}: {exc}") from exc
        if connection.sock is not None:
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._local.connection = connection
        return connection, False

    def drop_upstream_connection(self) -> None:
        """Close this thread's connection to influxd so the next request opens a new one."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def main(argv: list[str] | None = None) -> int:
    """Run the proxy until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--upstream-host", default="127.0.0.1")
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--db", default="", help="database for writes that name no bucket")
    parser.add_argument("--timeout-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = InfluxProxyServer(
        (args.listen_host, args.listen_port),
        (args.upstream_host, args.upstream_port),
        args.timeout_s,
        args.db,
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    log.info(
        "influx proxy on %s:%s -> %s:%s (db %s)",
        args.listen_host,
        args.listen_port,
        args.upstream_host,
        args.upstream_port,
        args.db or "-",
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
