"""With a broker, InfluxDB and PostgreSQL configured, pmkeeper uses them; ingest scales out."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from core.settings import InfluxSettings
from rules.model import Rule
from storage.db import create_engine_for, migrate
from storage.repositories import SqlRuleRepository
from tests.e2e.conftest import StartIngest, influx_env
from tests.support.binaries import free_port
from tests.support.influx import InfluxServer
from tests.support.mosquitto import MosquittoBroker
from tests.support.polling import wait_until
from tests.support.processes import PmkeeperProcess
from tests.support.publishing import publish

pytestmark = [pytest.mark.external_service]


def test_serve_uses_the_configured_broker_influx_and_postgres(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    influxd: InfluxServer,
    influx_settings: InfluxSettings,
    postgres_url: str,
) -> None:
    port = free_port()
    serve = PmkeeperProcess(
        ["serve"],
        {
            "PMK_API__PORT": str(port),
            "PMK_MQTT__URL": mosquitto.url,
            "PMK_MQTT__CLIENT_ID": f"serve-{uuid.uuid4().hex[:8]}",
            "PMK_DATABASE__URL": postgres_url,
            **influx_env(influx_settings),
        },
        tmp_path,
    )
    serve.start()
    try:
        serve.wait_subscribed()
        now_ms = time.time_ns() // 1_000_000
        payload = {"ts": now_ms, "metrics": {"temperature_c": 55.5}}
        publish(mosquitto.url, [("pmk/pg-asset-1/telemetry", json.dumps(payload).encode())])

        def influx_rows() -> list[dict[str, object]]:
            return influxd.query("SELECT * FROM telemetry", influx_settings.bucket)

        [row] = wait_until(influx_rows, what="the reading in influxd")
        assert row["asset_id"] == "pg-asset-1"
        assert row["temperature_c"] == 55.5
        # The auto-registered asset is in PostgreSQL, and nothing went to embedded files.
        dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(dsn) as connection:
            ids = [r[0] for r in connection.execute("SELECT id FROM assets").fetchall()]
        assert ids == ["pg-asset-1"]
        assert not (tmp_path / "data" / "telemetry.db").exists()
        assert not (tmp_path / "data" / "pmkeeper.db").exists()
        assert not (tmp_path / "data" / "embedded-broker.url").exists()
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        assert ready["checks"] == {"database": True, "telemetry_store": True, "mqtt": True}
    finally:
        assert serve.terminate() == 0


def test_two_ingest_processes_share_one_subscription(
    mosquitto: MosquittoBroker, influxd: InfluxServer, influx_settings: InfluxSettings,
    start_ingest: StartIngest,
) -> None:  # fmt: skip
    group = f"pmk-{uuid.uuid4().hex[:6]}"
    first = start_ingest(mosquitto.url, influx_settings, PMK_MQTT__SHARED_GROUP=group)
    second = start_ingest(mosquitto.url, influx_settings, PMK_MQTT__SHARED_GROUP=group)
    now_ms = time.time_ns() // 1_000_000
    total = 400
    publish(
        mosquitto.url,
        [
            (
                f"pmk/share-{n % 8}/telemetry",
                b'{"ts": %d, "metrics": {"seq": %d}}' % (now_ms - n, n),
            )
            for n in range(total)
        ],
    )

    def stored() -> int:
        rows = influxd.query("SELECT count(seq) FROM telemetry", influx_settings.bucket)
        return sum(int(r["count"]) for r in rows)

    wait_until(lambda: stored() == total, what="all readings")
    written = [p.metric("pmkeeper_points_written_total") for p in (first, second)]
    assert sum(written) == total  # each message went to exactly one of them
    assert all(w > 0 for w in written), f"the broker did not spread the load: {written}"


def test_ingest_workers_share_the_load_and_a_killed_worker_comes_back(
    tmp_path: Path, mosquitto: MosquittoBroker, influxd: InfluxServer,
    influx_settings: InfluxSettings,
) -> None:  # fmt: skip
    base_port = free_port()
    database_url = f"sqlite:///{tmp_path / 'pmkeeper.db'}"
    engine = create_engine_for(database_url)
    migrate(engine)
    SqlRuleRepository(engine).add(
        Rule.model_validate(
            {
                "id": "hot",
                "name": "Hot",
                "selector": {"metric": "temperature_c", "asset_id": "hot-1"},
                "condition": {"kind": "threshold", "comparison": "above", "threshold": 80},
            }
        )
    )
    parent = PmkeeperProcess(
        ["ingest", "--workers", "2"],
        {
            "PMK_MQTT__URL": mosquitto.url,
            "PMK_MQTT__CLIENT_ID": f"workers-{uuid.uuid4().hex[:6]}",
            "PMK_DATABASE__URL": database_url,
            "PMK_INGEST__METRICS_PORT": str(base_port),
            **influx_env(influx_settings),
        },
        tmp_path,
    )
    # Two storing workers on the shared subscription, and the rules process (base port + 2).
    workers = [PmkeeperProcess(["ingest"], {}, tmp_path) for _ in range(3)]
    for index, worker in enumerate(workers):
        worker.metrics_port = base_port + index  # scrape each worker of the parent
    parent.start()
    try:
        for worker in workers:
            worker.wait_subscribed()
        now_ms = time.time_ns() // 1_000_000

        def batch(first: int) -> list[tuple[str, bytes]]:
            return [
                (
                    f"pmk/w-{n % 8}/telemetry",
                    b'{"ts": %d, "metrics": {"seq": %d}}' % (now_ms - n, n),
                )
                for n in range(first, first + 400)
            ]

        def stored() -> int:
            rows = influxd.query("SELECT count(seq) FROM telemetry", influx_settings.bucket)
            return sum(int(r["count"]) for r in rows)

        publish(mosquitto.url, batch(0))
        wait_until(lambda: stored() == 400, what="first 400 readings")
        written = [w.metric("pmkeeper_points_written_total") for w in workers[:2]]
        assert sum(written) == 400
        assert all(w > 0 for w in written), f"one worker did all the work: {written}"

        [victim, *_] = [e["worker_pid"] for e in parent.log_events() if "worker_pid" in e]
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: sum("worker_pid" in e for e in parent.log_events()) == 4,
            what="the killed worker restarted",
        )
        for worker in workers:
            worker.wait_subscribed()
        publish(mosquitto.url, batch(400))
        wait_until(lambda: stored() == 800, what="all 800 readings")

        # The rules process sees every reading of a series, whichever worker stored it,
        # and fires once; it stores nothing itself (the count above stayed exact).
        hot = [
            (
                "pmk/hot-1/telemetry",
                b'{"ts": %d, "metrics": {"temperature_c": %d}}' % (now_ms + i, 70 + 5 * i),
            )
            for i in range(8)
        ]
        publish(mosquitto.url, hot)
        wait_until(
            lambda: workers[2].metric("pmkeeper_rule_evaluations_total") >= 808,
            what="the rules process evaluated the hot readings",
        )
        with engine.connect() as connection:
            alerts = connection.exec_driver_sql("SELECT asset_id, value FROM alerts").all()
        assert [tuple(row) for row in alerts] == [("hot-1", 85.0)]
        assert stored() == 800
        assert sum(w.metric("pmkeeper_rule_evaluations_total") for w in workers[:2]) == 0
    finally:
        engine.dispose()
        assert parent.terminate() == 0
