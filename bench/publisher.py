"""A fast benchmark publisher: N messages of K readings each, as fast as possible or paced.

Each reading carries its own event timestamp in epoch milliseconds. Paced runs stamp the
publish time, so the ingest lag histogram measures publish-to-stored latency.

Flat out (loading a backlog) it publishes with paho. Paced (`--rate`, the latency runs)
it writes MQTT 3.1.1 packets straight to a socket: a few microseconds per message instead
of paho's tens, so on a small machine the load generator leaves the CPU to the ingest it
measures, and a message is on the wire within a millisecond of its timestamp.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def payload(asset_index: int, sequence: int, readings: int, ts_ms: int) -> bytes:
    """Return one message: an object, or a batch array of `readings` objects."""
    items = [
        {"ts": ts_ms + i, "metrics": {"temperature_c": 20.0 + (sequence % 1000) / 10}}
        for i in range(readings)
    ]
    return json.dumps(items[0] if readings == 1 else items).encode()


def _remaining_length(length: int) -> bytes:
    """Encode an MQTT variable-length integer."""
    out = bytearray()
    while True:
        length, digit = divmod(length, 128)
        out.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


_PUBACK = 0x40
_TICK_S = 0.0005


class RawPacedPublisher:
    """A minimal MQTT 3.1.1 publisher on a plain socket, paced in 0.5 ms ticks.

    Each tick sends, in one write, every message due by then. PUBACKs are only counted.
    """

    def __init__(self, port: int, client_id: str, qos: int) -> None:
        self.qos = qos
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # CONNECT: protocol "MQTT" level 4, clean session, keepalive 60 s.
        body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _utf8(client_id)
        self.sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
        connack = self._read_exactly(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the connection: {connack!r}")
        self.sock.setblocking(False)
        self._pending = b""
        self.acked = 0
        self._mid = 0

    def _read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    def packet(self, topic: bytes, payload: bytes) -> bytes:
        """Return one PUBLISH packet (QoS 0 or 1)."""
        if self.qos:
            self._mid = self._mid % 65535 + 1
            variable = topic + struct.pack("!H", self._mid)
            header = 0x32
        else:
            variable = topic
            header = 0x30
        return (
            bytes([header]) + _remaining_length(len(variable) + len(payload)) + variable + payload
        )

    def send(self, data: bytes) -> None:
        """Write `data` (blocking until the kernel took it all), counting PUBACKs meanwhile."""
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)
        self.read_acks()

    def read_acks(self) -> None:
        """Count the PUBACKs that have arrived."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data = self._pending + chunk
            whole = len(data) - len(data) % 4
            for offset in range(0, whole, 4):
                if data[offset] != _PUBACK:
                    raise ConnectionError(f"unexpected packet {data[offset]:#x} from the broker")
            self.acked += whole // 4
            self._pending = data[whole:]

    def close(self) -> None:
        """Send DISCONNECT and close."""
        self.sock.setblocking(True)
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def publish_paced(args: argparse.Namespace) -> dict[str, float]:
    """Publish `args.messages` at `args.rate` msg/s on a raw socket; return the report."""
    client = RawPacedPublisher(args.port, f"bench-pub-{time.time_ns()}", args.qos)
    topics = [_utf8(f"pmk/bench-{args.asset_offset + i:04d}/telemetry") for i in range(args.assets)]
    started = time.perf_counter()
    sent = 0
    # Messages stamped with the current millisecond: at most one per asset, so that every
    # (asset, timestamp) stays a distinct point even if this process was held up.
    current_ms, in_ms = 0, 0
    while sent < args.messages:
        due = min(args.messages, int((time.perf_counter() - started) * args.rate) + 1)
        # Everything sent in this tick carries the same timestamp: the time it is sent.
        ts_ms = time.time_ns() // 1_000_000
        if ts_ms != current_ms:
            current_ms, in_ms = ts_ms, 0
        due = min(due, sent + args.assets - in_ms)
        if due > sent:
            in_ms += due - sent
            burst = bytearray()
            for n in range(sent, due):
                asset = n % args.assets
                burst += client.packet(topics[asset], payload(asset, n, args.readings, ts_ms))
            client.send(bytes(burst))
            sent = due
        else:
            client.read_acks()
            time.sleep(_TICK_S)
    sent_s = time.perf_counter() - started
    deadline = time.monotonic() + 120
    while args.qos and client.acked < args.messages:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{client.acked} of {args.messages} PUBACKs after 120 s")
        time.sleep(0.001)
        client.read_acks()
    client.close()
    return {"published": args.messages, "seconds": sent_s, "rate": args.messages / sent_s}


def main() -> int:
    """Publish and print one JSON line with the achieved rate."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--readings", type=int, default=1)
    parser.add_argument("--assets", type=int, default=100)
    parser.add_argument(
        "--asset-offset", type=int, default=0, help="first asset number, for parallel publishers"
    )
    parser.add_argument("--qos", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s; 0 = flat out")
    parser.add_argument("--base-ts", type=int, default=0, help="epoch ms of the first reading")
    args = parser.parse_args()
    if args.rate:
        print(json.dumps(publish_paced(args)))
        return 0

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-pub-{time.time_ns()}",
        protocol=mqtt.MQTTv5,
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    base_ts = args.base_ts or time.time_ns() // 1_000_000
    topics = [f"pmk/bench-{args.asset_offset + i:04d}/telemetry" for i in range(args.assets)]
    started = time.perf_counter()
    last_info = None
    for n in range(args.messages):
        # Unique per (asset, reading) so every reading is its own point.
        ts_ms = base_ts + (n // args.assets) * args.readings
        asset = n % args.assets
        last_info = client.publish(topics[asset], payload(asset, n, args.readings, ts_ms), args.qos)
        if n % 5000 == 4999:
            # Keep paho's outgoing queue bounded when publishing flat out.
            last_info.wait_for_publish(60)
    if last_info is not None:
        last_info.wait_for_publish(120)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    print(
        json.dumps(
            {"published": args.messages, "seconds": elapsed, "rate": args.messages / elapsed}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
