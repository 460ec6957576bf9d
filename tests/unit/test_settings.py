"""Settings: `PMK_` environment variables nested with `__`, a YAML or TOML file, defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings, UnknownAssetPolicy, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide the developer's own PMK_ variables and any config in the working directory."""
    for name in list(os.environ):
        if name.upper().startswith("PMK_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_run_embedded_everything() -> None:
    settings = load_settings()
    assert settings.mqtt.url is None
    assert settings.mqtt.topic == "pmk/+/telemetry"
    assert settings.influx.url is None
    assert settings.database.url is None
    assert settings.data_dir == Path("data")
    assert settings.database_url == "sqlite:///data/pmkeeper.db"
    assert settings.telemetry_sqlite_path == Path("data/telemetry.db")
    assert (settings.api.host, settings.api.port) == ("127.0.0.1", 8000)
    assert settings.ingest.unknown_assets is UnknownAssetPolicy.AUTO_REGISTER


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMK_MQTT__URL", "mqtts://broker.example:8883")
    monkeypatch.setenv("PMK_MQTT__USERNAME", "ingest")
    monkeypatch.setenv("PMK_MQTT__PASSWORD", "s3cret")
    monkeypatch.setenv("PMK_MQTT__TOPIC", "plant/+/telemetry")
    monkeypatch.setenv("PMK_INFLUX__URL", "http://influx:8086")
    monkeypatch.setenv("PMK_INFLUX__TOKEN", "influx-token")
    monkeypatch.setenv("PMK_INFLUX__ORG", "acme")
    monkeypatch.setenv("PMK_INFLUX__BUCKET", "tele")
    monkeypatch.setenv("PMK_DATABASE__URL", "postgresql://pm@db/pmkeeper")
    monkeypatch.setenv("PMK_API__PORT", "9001")
    monkeypatch.setenv("PMK_INGEST__UNKNOWN_ASSETS", "dead_letter")
    settings = load_settings()
    assert settings.mqtt.url == "mqtts://broker.example:8883"
    assert settings.mqtt.username == "ingest"
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.mqtt.topic == "plant/+/telemetry"
    assert settings.influx.url == "http://influx:8086"
    assert settings.influx.token.get_secret_value() == "influx-token"
    assert (settings.influx.org, settings.influx.bucket) == ("acme", "tele")
    assert settings.database_url == "postgresql://pm@db/pmkeeper"
    assert settings.api.port == 9001
    assert settings.ingest.unknown_assets is UnknownAssetPolicy.DEAD_LETTER


def test_data_dir_moves_the_default_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMK_DATA_DIR", "/var/lib/pmkeeper")
    settings = load_settings()
    assert settings.data_dir == Path("/var/lib/pmkeeper")
    assert settings.database_url == "sqlite:////var/lib/pmkeeper/pmkeeper.db"
    assert settings.telemetry_sqlite_path == Path("/var/lib/pmkeeper/telemetry.db")


def test_yaml_config_file(tmp_path: Path) -> None:
    config = write(
        tmp_path / "pmkeeper.yaml",
        """
mqtt:
  url: mqtt://mosquitto:1883
  qos: 0
influx:
  url: http://influx:8086
api:
  port: 8080
ingest:
  unknown_assets: dead_letter
  batch_points: 250
""",
    )
    settings = load_settings(config)
    assert settings.mqtt.url == "mqtt://mosquitto:1883"
    assert settings.mqtt.qos == 0
    assert settings.influx.url == "http://influx:8086"
    assert settings.api.port == 8080
    assert settings.ingest.unknown_assets is UnknownAssetPolicy.DEAD_LETTER
    assert settings.ingest.batch_points == 250
    assert settings.mqtt.topic == "pmk/+/telemetry"


def test_toml_config_file(tmp_path: Path) -> None:
    config = write(
        tmp_path / "pmkeeper.toml",
        """
data_dir = "/srv/pm"

[mqtt]
url = "mqtts://broker:8883"

[database]
url = "postgresql://pm@db/pm"
""",
    )
    settings = load_settings(config)
    assert settings.data_dir == Path("/srv/pm")
    assert settings.mqtt.url == "mqtts://broker:8883"
    assert settings.database_url == "postgresql://pm@db/pm"


def test_environment_beats_the_file_field_by_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path / "pmkeeper.yaml",
        "mqtt:\n  url: mqtt://from-file:1883\n  username: file-user\napi:\n  port: 8080\n",
    )
    monkeypatch.setenv("PMK_MQTT__URL", "mqtt://from-env:1883")
    monkeypatch.setenv("PMK_API__HOST", "0.0.0.0")
    settings = load_settings(config)
    assert settings.mqtt.url == "mqtt://from-env:1883"
    # Nested sections merge: the file's other fields survive an env override of one field.
    assert settings.mqtt.username == "file-user"
    assert (settings.api.host, settings.api.port) == ("0.0.0.0", 8080)


def test_explicit_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMK_LOG_LEVEL", "DEBUG")
    assert load_settings(log_level="WARNING").log_level == "WARNING"


def test_the_file_only_applies_to_the_call_that_names_it(tmp_path: Path) -> None:
    config = write(tmp_path / "pmkeeper.yaml", "api:\n  port: 8080\n")
    assert load_settings(config).api.port == 8080
    assert load_settings().api.port == 8000
    assert Settings().api.port == 8000


@pytest.mark.parametrize(
    "url", ["http://broker:1883", "tcp://broker:1883", "broker:1883", "ws://broker/mqtt"]
)
def test_a_broker_url_with_another_scheme_is_refused(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("PMK_MQTT__URL", url)
    with pytest.raises(ValidationError, match="mqtt:// or mqtts://") as caught:
        load_settings()
    assert caught.value.errors()[0]["loc"] == ("mqtt", "url")


def test_a_broker_url_with_another_scheme_is_refused_in_a_file(tmp_path: Path) -> None:
    config = write(tmp_path / "pmkeeper.toml", '[mqtt]\nurl = "amqp://broker"\n')
    with pytest.raises(ValidationError, match="mqtt:// or mqtts://"):
        load_settings(config)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PMK_API__PORT", "70000"),
        ("PMK_API__PORT", "eighty"),
        ("PMK_MQTT__QOS", "2"),
        ("PMK_INGEST__UNKNOWN_ASSETS", "ignore"),
        ("PMK_LOG_FORMAT", "xml"),
    ],
)
def test_out_of_range_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        load_settings()


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.yaml"):
        load_settings(tmp_path / "nowhere.yaml")


def test_an_unsupported_config_format_is_an_error(tmp_path: Path) -> None:
    config = write(tmp_path / "pmkeeper.ini", "[api]\nport = 1\n")
    with pytest.raises(ValueError, match=r"\.yaml, \.yml or \.toml"):
        load_settings(config)


def test_a_misspelt_key_in_a_config_file_is_refused_not_ignored(tmp_path: Path) -> None:
    config = tmp_path / "pmkeeper.yaml"
    config.write_text("mqtt:\n  ulr: mqtt://broker:1883\n")
    with pytest.raises(ValidationError, match=r"mqtt\.ulr"):
        load_settings(config)


def test_a_misspelt_nested_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMK_INFLUX__TOKN", "secret")
    with pytest.raises(ValidationError, match=r"influx\.tokn"):
        load_settings()


@pytest.mark.parametrize(("raw", "qos"), [("0", 0), ("1", 1)])
def test_qos_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str, qos: int) -> None:
    monkeypatch.setenv("PMK_MQTT__QOS", raw)
    assert load_settings().mqtt.qos == qos
