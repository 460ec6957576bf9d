"""The baseline: a bare paho subscriber that only counts messages.

Run as a child process by the benchmark. It connects with a persistent session, so the
broker queues a backlog for it while it is away, then drains that backlog and prints one
JSON line: how many messages it received and how long the drain took.
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


def main() -> int:
    """Subscribe, count `--expect` messages (or only register with --register), report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", default="pmk/+/telemetry")
    parser.add_argument("--qos", type=int, default=1)
    parser.add_argument("--client-id", default="bench-bare")
    parser.add_argument("--receive-maximum", type=int, default=1000)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--register", action="store_true", help="subscribe, then leave")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()

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

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=mqtt.MQTTv5,
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    properties.ReceiveMaximum = args.receive_maximum
    client.connect("127.0.0.1", args.port, clean_start=False, properties=properties)
    client.loop_start()
    started = time.perf_counter()
    if args.register:
        ok = subscribed.wait(10)
        client.disconnect()
        client.loop_stop()
        return 0 if ok else 1
    done.wait(args.timeout)
    client.disconnect()
    client.loop_stop()
    first, last = state["first"], state["last"]
    drain_s = (last - first) if first is not None and last is not None else None
    print(
        json.dumps(
            {
                "received": state["count"],
                "drain_s": drain_s,
                "since_start_s": (last - started) if last is not None else None,
                # CPU seconds of the whole process (both threads) since the first message.
                "cpu_s": time.process_time() - state["cpu_first"],
                # Linux reports ru_maxrss in KiB: the peak RSS of this process.
                "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )
    return 0 if state["count"] >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())
