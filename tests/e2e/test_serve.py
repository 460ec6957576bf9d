"""`pmkeeper serve` on embedded defaults, driven through the real CLI and the HTTP API."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pmkeeper.embedded_broker import EmbeddedBroker
from tests.support.binaries import free_port
from tests.support.polling import wait_until
from tests.support.processes import PmkeeperProcess


def _cli(workdir: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pmkeeper", *args],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_serve_on_embedded_defaults_ingests_what_simulate_sends(tmp_path: Path) -> None:
    port = free_port()
    serve = PmkeeperProcess(["serve"], {"PMK_API__PORT": str(port)}, tmp_path)
    serve.env.pop("PMK_MQTT__URL", None)
    serve.env.pop("PMK_INFLUX__URL", None)
    serve.env.pop("PMK_DATABASE__URL", None)
    serve.start()
    api = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(api), timeout_s=60, what="serve ready")
        broker_url = (tmp_path / "data" / "embedded-broker.url").read_text().strip()
        assert broker_url.startswith("mqtt://127.0.0.1:")

        token = _cli(tmp_path, serve.env, "token", "create", "--role", "admin").splitlines()[-1]
        viewer = _cli(tmp_path, serve.env, "token", "create", "--role", "viewer").splitlines()[-1]
        sent = _cli(
            tmp_path,
            serve.env,
            "simulate",
            "--assets",
            "3",
            "--rate",
            "200",
            "--count",
            "60",
            "--qos",
            "1",
            "--scenario",
            "sim-0002=overheating",
        )
        assert "sent 60 messages" in sent
        headers = {"Authorization": f"Bearer {token}"}

        def points() -> list[dict[str, object]]:
            answer = httpx.get(
                f"{api}/api/v1/assets/sim-0002/telemetry",
                params={"metric": "temperature_c", "start": "2000-01-01T00:00:00Z"},
                headers=headers,
            )
            assert answer.status_code == 200, answer.text
            found: list[dict[str, object]] = answer.json()["points"]
            return found

        wait_until(lambda: len(points()) == 20, what="20 readings")
        assert all(isinstance(p["value"], float) for p in points())

        assets = httpx.get(f"{api}/api/v1/assets", headers=headers).json()["items"]
        assert {"sim-0001", "sim-0002", "sim-0003"} <= {a["id"] for a in assets}
        created = httpx.post(
            f"{api}/api/v1/assets",
            json={"id": "pump-9", "name": "Pump 9", "type": "pump", "site": "north"},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        refused = httpx.post(
            f"{api}/api/v1/assets",
            json={"id": "pump-10", "name": "Pump 10", "type": "pump", "site": "north"},
            headers={"Authorization": f"Bearer {viewer}"},
        )
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")

        _publish_raw(broker_url, "pmk/sim-0001/telemetry", b"{broken")
        wait_until(lambda: "bad_json" in _cli(tmp_path, serve.env, "deadletters"), what="DL")
        listed = httpx.get(f"{api}/api/v1/deadletters", headers=headers).json()["items"]
        assert [d["code"] for d in listed] == ["bad_json"]
        assert listed[0]["payload"] == "{broken"

        metrics = httpx.get(f"{api}/metrics").text
        assert "pmkeeper_messages_received_total 61.0" in metrics
        assert "pmkeeper_points_written_total 300.0" in metrics  # 60 messages x 5 metrics
        assert "pmkeeper_deadletters_total 1.0" in metrics
        assert 'pmkeeper_deadletter_codes_total{code="bad_json"} 1.0' in metrics
        for name in (
            "pmkeeper_write_latency_seconds_count",
            "pmkeeper_ingest_queue_depth",
            "pmkeeper_mqtt_reconnects_total",
            "pmkeeper_ingest_lag_seconds_count",
            "pmkeeper_store_up",
        ):
            assert f"\n{name} " in metrics, name
    finally:
        code = serve.terminate()
    assert code == 0, serve.log_path.read_text()[-3000:]
    assert not (tmp_path / "data" / "embedded-broker.url").exists()


def _ready(api: str) -> bool:
    try:
        return httpx.get(f"{api}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _publish_raw(url: str, topic: str, payload: bytes) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect(host, int(port))
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def test_embedded_broker_moves_off_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        broker = EmbeddedBroker(preferred_port=busy)
        broker.start()
        try:
            assert broker.port != busy
            _publish_raw(broker.url, "pmk/x/telemetry", b"1")  # it really serves MQTT
        finally:
            broker.stop()


@pytest.mark.parametrize("args", [["token", "create", "--role", "root"], ["nonsense"]])
def test_cli_refuses_bad_arguments(tmp_path: Path, args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pmkeeper", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "invalid choice" in done.stderr
