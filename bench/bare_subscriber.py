"""The baseline: a bare paho subscriber that only counts messages.

Run as a child process by the benchmark. It connects with a persistent session, so the
broker queues a backlog for it while it is away, then drains that backlog and prints one
JSON line: how many messages it received, how long the drain took, its CPU time and peak
RSS. After the drain it ends its session, so later backlogs are not queued for it.

Modes: `--register` subscribes and leaves; `--expect N` drains N messages; `--forget`
ends the session of `--client-id` (any client's, pmkeeper's included) and leaves.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_SESSION_EXPIRY_S = 3600


def _client(args: argparse.Namespace, *, clean: bool) -> mqtt.Client:
    v5 = args.protocol == 5
    return mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else clean,
    )


def _connect(client: mqtt.Client, args: argparse.Namespace, *, clean: bool) -> None:
    if args.protocol != 5:
        client.connect("127.0.0.1", args.port)
        return
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    # A clean start with expiry 0 ends the session when this connection closes.
    properties.SessionExpiryInterval = 0 if clean else _SESSION_EXPIRY_S
    properties.ReceiveMaximum = args.receive_maximum
    client.connect("127.0.0.1", args.port, clean_start=clean, properties=properties)


def _end_session(client: mqtt.Client, args: argparse.Namespace) -> None:
    """Disconnect; under MQTT v5 with Session Expiry 0, so the broker drops the session."""
    if args.protocol == 5:
        properties = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 0
        client.disconnect(properties=properties)
    else:
        client.disconnect()


def forget(args: argparse.Namespace) -> int:
    """End the persistent session of `--client-id`: connect clean, then leave."""
    connected = threading.Event()
    client = _client(args, clean=True)
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    _connect(client, args, clean=True)
    client.loop_start()
    ok = connected.wait(10)
    client.disconnect()
    client.loop_stop()
    return 0 if ok else 1


def main() -> int:
    """Subscribe, count `--expect` messages (or only register with --register), report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", default="pmk/+/telemetry")
    parser.add_argument("--qos", type=int, default=1)
    parser.add_argument("--client-id", default="bench-bare")
    parser.add_argument("--protocol", type=int, choices=(5, 311), default=5)
    parser.add_argument("--receive-maximum", type=int, default=1000)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--register", action="store_true", help="subscribe, then leave")
    parser.add_argument("--forget", action="store_true", help="end the client's session")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    if args.forget:
        return forget(args)

    done = threading.Event()
    subscribed = threading.Event()
    state: dict[str, Any] = {"count": 0, "first": None, "last": None, "cpu_first": 0.0}

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(args.topic, qos=args.qos)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        subscribed.set()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        if state["first"] is None:
            state["first"] = now
            state["cpu_first"] = time.process_time()
        state["count"] += 1
        state["last"] = now
        if state["count"] >= args.expect:
            done.set()

    client = _client(args, clean=False)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    _connect(client, args, clean=False)
    client.loop_start()
    started = time.perf_counter()
    if args.register:
        ok = subscribed.wait(10)
        client.disconnect()
        client.loop_stop()
        return 0 if ok else 1
    done.wait(args.timeout)
    # CPU seconds of the whole process (both threads) from the first message to the last.
    cpu_s = time.process_time() - state["cpu_first"]
    _end_session(client, args)
    client.loop_stop()
    first, last = state["first"], state["last"]
    drain_s = (last - first) if first is not None and last is not None else None
    print(
        json.dumps(
            {
                "received": state["count"],
                "drain_s": drain_s,
                "since_start_s": (last - started) if last is not None else None,
                "cpu_s": cpu_s,
                # Linux reports ru_maxrss in KiB: the peak RSS of this process.
                "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )
    return 0 if state["count"] >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())
