"""`pmkeeper ingest` end to end: real mosquitto in, real influxd or SQLite out, nothing lost."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.ports import TelemetryStore
from core.settings import InfluxSettings
from core.telemetry import datetime_to_ms
from storage.db import create_engine_for
from storage.repositories import SqlDeadLetterRepository
from storage.telemetry_influx import InfluxTelemetryStore
from storage.telemetry_sqlite import SqliteTelemetryStore
from tests.e2e.conftest import StartIngest
from tests.support.influx import InfluxServer
from tests.support.mosquitto import MosquittoBroker
from tests.support.polling import wait_until
from tests.support.processes import PmkeeperProcess
from tests.support.publishing import Publisher, publish

pytestmark = [pytest.mark.external_service]

T0 = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=5)
T0_MS = datetime_to_ms(T0)


def _store_for(child: PmkeeperProcess, influx: InfluxSettings | None) -> TelemetryStore:
    if influx is not None:
        return InfluxTelemetryStore(influx)
    return SqliteTelemetryStore(child.workdir / "data" / "telemetry.db")


def _count(store: TelemetryStore, asset: str, metric: str) -> int:
    window_end = datetime.now(tz=UTC) + timedelta(hours=1)
    return len(store.read(asset, metric, T0 - timedelta(days=1), window_end, 1_000_000))


def _deadletters(child: PmkeeperProcess) -> SqlDeadLetterRepository:
    return SqlDeadLetterRepository(create_engine_for(f"sqlite:///{child.workdir}/pmkeeper.db"))


@pytest.mark.parametrize("backend", ["influx", "sqlite"])
def test_published_readings_come_back_with_device_time_tags_and_values(
    backend: str,
    mosquitto: MosquittoBroker,
    influxd: InfluxServer,
    influx_settings: InfluxSettings,
    start_ingest: StartIngest,
) -> None:
    influx = influx_settings if backend == "influx" else None
    child = start_ingest(mosquitto.url, influx)
    before_ms = time.time_ns() // 1_000_000
    publish(
        mosquitto.url,
        [
            (
                "pmk/pump-1/telemetry",
                json.dumps(
                    {
                        "ts": T0.isoformat().replace("+00:00", "Z"),
                        "metrics": {"temperature_c": 71.3, "vibration_mm_s": 4.2},
                    }
                ).encode(),
            ),
            (
                "pmk/pump-2/telemetry",
                json.dumps(
                    [
                        {"ts": T0_MS + i * 1000, "metrics": {"temperature_c": 60 + i}}
                        for i in range(3)
                    ]
                ).encode(),
            ),
            ("pmk/pump-1/telemetry/pressure_bar", b"2.5"),
        ],
    )
    store = _store_for(child, influx)
    wait_until(lambda: child.metric("pmkeeper_points_written_total") >= 6, what="6 points")
    after_ms = time.time_ns() // 1_000_000
    end = datetime.now(tz=UTC) + timedelta(minutes=1)

    def series(asset: str, metric: str) -> list[tuple[int, float]]:
        points = store.read(asset, metric, T0 - timedelta(minutes=1), end, 100)
        return [(datetime_to_ms(p.at), p.value) for p in points]

    assert series("pump-1", "temperature_c") == [(T0_MS, 71.3)]
    assert series("pump-1", "vibration_mm_s") == [(T0_MS, 4.2)]
    assert series("pump-2", "temperature_c") == [(T0_MS + i * 1000, 60.0 + i) for i in range(3)]
    [(pressure_ms, pressure)] = series("pump-1", "pressure_bar")
    assert pressure == 2.5
    assert before_ms <= pressure_ms <= after_ms  # a bare number is stamped on receipt
    if influx is not None:
        # Exactly the device's tags and values: one tag, the metrics as float fields.
        rows = influxd.query("SELECT * FROM telemetry WHERE asset_id = 'pump-1'", influx.bucket)
        ts_row = next(r for r in rows if r.get("temperature_c") is not None)
        assert {k for k, v in ts_row.items() if v is not None} == {
            "time",
            "asset_id",
            "temperature_c",
            "vibration_mm_s",
        }
    store.close()


def test_sigkill_during_a_qos1_stream_loses_and_duplicates_nothing(
    mosquitto: MosquittoBroker,
    influx_settings: InfluxSettings,
    influxd: InfluxServer,
    start_ingest: StartIngest,
) -> None:
    total, assets = 20_000, 20
    messages = [
        (
            f"pmk/kill-{n % assets:02d}/telemetry",
            b'{"ts": %d, "metrics": {"seq": %d}}' % (T0_MS + n, n),
        )
        for n in range(total)
    ]
    child = start_ingest(mosquitto.url, influx_settings, PMK_INGEST__BATCH_POINTS="500")
    publisher = Publisher(mosquitto.url)
    sent = threading.Thread(target=publisher.publish, args=(messages, 1, 5000.0))
    sent.start()
    try:
        wait_until(lambda: child.metric("pmkeeper_points_written_total") >= 2000, what="2000")
        child.kill()
        killed_after = sum(
            int(r["count"])
            for r in influxd.query("SELECT count(seq) FROM telemetry", influx_settings.bucket)
        )
        assert 0 < killed_after < total, "the kill must land mid-stream"
        child.start()  # same client id: the broker resumes the persistent session
    finally:
        sent.join(120)
        publisher.close()

    def stored() -> int:
        rows = influxd.query("SELECT count(seq) FROM telemetry", influx_settings.bucket)
        return sum(int(r["count"]) for r in rows)

    wait_until(lambda: stored() >= total, timeout_s=90, what=f"{total} readings stored")
    rows = influxd.query("SELECT seq FROM telemetry", influx_settings.bucket)
    values = sorted(int(r["seq"]) for r in rows)
    assert values == list(range(total))  # every reading, each exactly once
    assert child.metric("pmkeeper_points_written_total") > 0  # the restart did real work


def test_store_outage_holds_the_stream_and_recovers_by_itself(
    mosquitto: MosquittoBroker,
    influxd_factory: Callable[[], InfluxServer],
    start_ingest: StartIngest,
) -> None:
    private = influxd_factory()
    private.create_database("outage")
    settings = private.influx_settings("outage")
    child = start_ingest(mosquitto.url, settings, PMK_INGEST__RETRY_MAX_S="1")
    total = 3000
    messages = [
        ("pmk/outage-1/telemetry", b'{"ts": %d, "metrics": {"seq": %d}}' % (T0_MS + n, n))
        for n in range(total)
    ]
    publisher = Publisher(mosquitto.url)
    sent = threading.Thread(target=publisher.publish, args=(messages, 1, 600.0))
    sent.start()
    try:
        wait_until(lambda: child.metric("pmkeeper_points_written_total") >= 300, what="flowing")
        private.stop()
        wait_until(lambda: child.metric("pmkeeper_store_retries_total") >= 4, what="retrying")
        assert child.metric("pmkeeper_store_up") == 0
        private.start()
    finally:
        sent.join(60)
        publisher.close()

    def stored() -> int:
        rows = private.query("SELECT count(seq) FROM telemetry", "outage")
        return sum(int(r["count"]) for r in rows)

    wait_until(lambda: stored() == total, timeout_s=60, what="all readings after the outage")
    assert child.metric("pmkeeper_store_up") == 1
    events = [e.get("event") for e in child.log_events()]
    assert events.count("store_lost") == 1
    assert events.count("store_back") == 1


def test_broker_restart_reconnects_and_resubscribes(
    mosquitto_factory: Callable[[], MosquittoBroker],
    start_ingest: StartIngest,
) -> None:
    broker = mosquitto_factory()
    child = start_ingest(broker.url)
    first = [
        ("pmk/br-1/telemetry", b'{"ts": %d, "metrics": {"seq": %d}}' % (T0_MS + n, n))
        for n in range(50)
    ]
    publish(broker.url, first)
    wait_until(lambda: child.metric("pmkeeper_points_written_total") == 50, what="50 points")
    broker.stop()
    wait_until(lambda: child.metric("pmkeeper_mqtt_connected") == 0, what="disconnect noticed")
    broker.start()
    wait_until(
        lambda: (
            child.metric("pmkeeper_mqtt_reconnects_total") >= 1
            and child.metric("pmkeeper_mqtt_connected") == 1
        ),
        timeout_s=30,
        what="reconnected",
    )
    second = [
        ("pmk/br-1/telemetry", b'{"ts": %d, "metrics": {"seq": %d}}' % (T0_MS + n, n))
        for n in range(50, 100)
    ]
    publish(broker.url, second)
    # Count stored points, not writes: messages whose PUBACK the restart cut off are
    # redelivered and rewritten, which the counter sees twice and the store keeps once.
    store = SqliteTelemetryStore(child.workdir / "data" / "telemetry.db")
    wait_until(lambda: _count(store, "br-1", "seq") == 100, what="100 stored points")
    store.close()
    messages = [e.get("msg", "") for e in child.log_events()]
    assert sum("MQTT connection lost" in m for m in messages) == 1
    assert sum("MQTT connection back" in m for m in messages) == 1


def test_unknown_asset_policy_dead_letter(
    mosquitto: MosquittoBroker, start_ingest: StartIngest, tmp_path: Path
) -> None:
    child = start_ingest(mosquitto.url, PMK_INGEST__UNKNOWN_ASSETS="dead_letter")
    publish(mosquitto.url, [("pmk/ghost-1/telemetry", b'{"ts": %d, "metrics": {"t": 1}}' % T0_MS)])
    wait_until(lambda: child.metric("pmkeeper_deadletters_total") == 1, what="dead letter")
    [letter] = _deadletters(child).list()
    assert (letter.code, letter.asset_id, letter.topic) == (
        "unknown_asset",
        "ghost-1",
        "pmk/ghost-1/telemetry",
    )
    assert child.metric("pmkeeper_points_written_total") == 0


def test_graceful_stop_keeps_the_session_so_nothing_published_meanwhile_is_lost(
    mosquitto: MosquittoBroker, start_ingest: StartIngest
) -> None:
    child = start_ingest(mosquitto.url)
    assert child.terminate() == 0
    publish(
        mosquitto.url,
        [
            ("pmk/down-1/telemetry", b'{"ts": %d, "metrics": {"seq": %d}}' % (T0_MS + n, n))
            for n in range(100)
        ],
    )
    child.start()  # same client id, same persistent session
    store = SqliteTelemetryStore(child.workdir / "data" / "telemetry.db")
    wait_until(lambda: _count(store, "down-1", "seq") == 100, what="the 100 queued readings")
    store.close()


@pytest.mark.parametrize(("qos", "protocol"), [("0", "3.1.1"), ("1", "3.1.1"), ("0", "5")])
def test_qos_and_protocol_come_from_the_environment(
    mosquitto: MosquittoBroker, start_ingest: StartIngest, qos: str, protocol: str
) -> None:
    child = start_ingest(mosquitto.url, PMK_MQTT__QOS=qos, PMK_MQTT__PROTOCOL=protocol)
    publish(mosquitto.url, [("pmk/proto-1/telemetry", b'{"ts": %d, "metrics": {"a": 1}}' % T0_MS)])
    wait_until(lambda: child.metric("pmkeeper_points_written_total") == 1, what="1 point")
    version = "3.1.1" if protocol == "3.1.1" else "5"
    assert any(f"(MQTT {version})" in e.get("msg", "") for e in child.log_events())
