"""docker-compose.yml cannot run here (no Docker engine), so check its shape instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_has_the_four_services_from_one_dockerfile() -> None:
    services = _compose()["services"]
    assert set(services) == {"mosquitto", "influxdb", "postgres", "pmkeeper"}
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert services["influxdb"]["image"] == "influxdb:2"
    assert services["postgres"]["image"] == "postgres:16"
    assert services["pmkeeper"]["build"] == "."
    assert (ROOT / "Dockerfile").is_file()


def test_pmkeeper_waits_for_healthy_dependencies() -> None:
    services = _compose()["services"]
    depends = services["pmkeeper"]["depends_on"]
    assert set(depends) == {"mosquitto", "influxdb", "postgres"}
    for name, condition in depends.items():
        assert condition == {"condition": "service_healthy"}
        assert "healthcheck" in services[name], f"{name} has no healthcheck to wait for"


def test_pmkeeper_environment_is_valid_settings(monkeypatch: Any) -> None:
    environment = _compose()["services"]["pmkeeper"]["environment"]
    for key, value in environment.items():
        # Compose substitutes ${VAR:-default}; use the defaults as a user without .env would.
        resolved = str(value)
        while "${" in resolved:
            start = resolved.index("${")
            end = resolved.index("}", start)
            default = resolved[start + 2 : end].split(":-", 1)[1]
            resolved = resolved[:start] + default + resolved[end + 1 :]
        monkeypatch.setenv(key, resolved)
    settings = Settings()
    assert settings.mqtt.url == "mqtt://mosquitto:1883"
    assert settings.influx.url == "http://influxdb:8086"
    assert settings.influx.token.get_secret_value() == "pmkeeper-dev-token-change-me"
    assert settings.database_url.startswith("postgresql+psycopg://pmkeeper:")
    assert settings.api.host == "0.0.0.0"
    # The token InfluxDB is initialised with is the one pmkeeper uses.
    influx_env = _compose()["services"]["influxdb"]["environment"]
    assert influx_env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == environment["PMK_INFLUX__TOKEN"]
    assert influx_env["DOCKER_INFLUXDB_INIT_BUCKET"] == environment["PMK_INFLUX__BUCKET"]


def test_broker_config_mounted_and_sized_for_ack_after_write() -> None:
    mosquitto = _compose()["services"]["mosquitto"]
    mount = next(v for v in mosquitto["volumes"] if v.endswith("mosquitto.conf:ro"))
    conf_path = ROOT / mount.split(":")[0]
    options = dict(
        line.split(None, 1)
        for line in conf_path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert options["set_tcp_nodelay"] == "true"
    assert options["persistence"] == "true"
    assert int(options["max_inflight_messages"]) >= Settings().mqtt.receive_maximum
    assert int(options["max_queued_messages"]) >= 100_000
