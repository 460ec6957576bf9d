"""A fast benchmark publisher: N messages of K readings each, as fast as possible or paced.

Each reading carries its own event timestamp in epoch milliseconds. Paced runs stamp the
publish time, so the ingest lag histogram measures publish-to-stored latency.
"""

from __future__ import annotations

import argparse
import json
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
        if args.rate:
            due = started + n / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            ts_ms = time.time_ns() // 1_000_000
        else:
            # Unique per (asset, reading) so every reading is its own point.
            ts_ms = base_ts + (n // args.assets) * args.readings
        asset = n % args.assets
        last_info = client.publish(topics[asset], payload(asset, n, args.readings, ts_ms), args.qos)
        if not args.rate and n % 5000 == 4999:
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
