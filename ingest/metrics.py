"""Prometheus metrics of the ingest role."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    """The counters, gauges and histograms ingest exposes at /metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages_received = Counter(
            "pmkeeper_messages_received",
            "MQTT messages taken off the broker",
            registry=registry,
        )
        self.points_written = Counter(
            "pmkeeper_points_written",
            "Readings durably written to the telemetry store",
            registry=registry,
        )
        self.deadletters = Counter(
            "pmkeeper_deadletters",
            "Messages refused and kept as dead letters",
            registry=registry,
        )
        self.deadletter_codes = Counter(
            "pmkeeper_deadletter_codes",
            "Dead letters by reason code",
            ["code"],
            registry=registry,
        )
        self.write_latency = Histogram(
            "pmkeeper_write_latency_seconds",
            "Time to durably write one batch to the telemetry store",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.lag = Histogram(
            "pmkeeper_ingest_lag_seconds",
            "Event time of a message's first reading to its durable write (includes clock skew)",
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.0075,
                0.01,
                0.015,
                0.02,
                0.03,
                0.05,
                0.075,
                0.1,
                0.15,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
            registry=registry,
        )
        self.batch_points = Histogram(
            "pmkeeper_write_batch_points",
            "Readings per telemetry write",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000),
            registry=registry,
        )
        self.queue_depth = Gauge(
            "pmkeeper_ingest_queue_depth",
            "Messages waiting between the MQTT thread and the writer",
            registry=registry,
        )
        self.reconnects = Counter(
            "pmkeeper_mqtt_reconnects",
            "Reconnections to the MQTT broker after a lost connection",
            registry=registry,
        )
        self.store_retries = Counter(
            "pmkeeper_store_retries",
            "Telemetry or dead-letter writes retried after the store was unavailable",
            registry=registry,
        )
        self.store_up = Gauge(
            "pmkeeper_store_up",
            "1 while the telemetry store accepts writes, 0 while ingest is backing off",
            registry=registry,
        )
        self.store_up.set(1)
        self.mqtt_connected = Gauge(
            "pmkeeper_mqtt_connected",
            "1 while connected to the MQTT broker",
            registry=registry,
        )

    def track_queue(self, depth: Callable[[], int]) -> None:
        """Report the hand-off queue's depth when scraped rather than on every message."""
        self.queue_depth.set_function(lambda: float(depth()))
