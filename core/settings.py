"""Settings from `PMK_` environment variables (nested with `__`) and an optional config file."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)


class UnknownAssetPolicy(StrEnum):
    """What ingest does with telemetry for an asset nobody registered."""

    AUTO_REGISTER = "auto_register"
    DEAD_LETTER = "dead_letter"


class MqttSettings(BaseModel):
    """Broker connection; no URL means `serve` runs the embedded broker."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    topic: str = "pmk/+/telemetry"
    # Also subscribe to `<topic>/+`, where a bare number arrives per metric.
    metric_topics: bool = True
    # Set to a group name to consume through `$share/<group>/<topic>` (scale-out).
    shared_group: str | None = None
    client_id: str = "pmkeeper-ingest"
    # An int rather than Literal[0, 1]: environment variables arrive as strings.
    qos: int = Field(default=1, ge=0, le=1)
    # "auto" uses MQTT v5 when the broker accepts it. paho parses v5 properties on every
    # PUBLISH, which costs throughput (see docs/benchmarks.md); "3.1.1" skips that, and
    # then the broker's max_inflight_messages alone bounds the in-flight window.
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    # Receive Maximum sent to MQTT v5 brokers: how many QoS 1 messages may be unacked at once.
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError("broker URL must start with mqtt:// or mqtts://")
        return value


class InfluxSettings(BaseModel):
    """InfluxDB connection; no URL means telemetry goes to the embedded SQLite store."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    token: SecretStr = SecretStr("")
    org: str = "pmkeeper"
    bucket: str = "telemetry"
    measurement: str = "telemetry"
    timeout_s: float = Field(default=10.0, gt=0)


class DatabaseSettings(BaseModel):
    """Relational store; no URL means a SQLite file in the data directory."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None


class ApiSettings(BaseModel):
    """HTTP API address."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Seconds a valid token is trusted without a database lookup; a revoked token keeps
    # working for up to this long. 0 looks every token up on every request.
    token_cache_s: float = Field(default=5.0, ge=0, le=300)


class IngestSettings(BaseModel):
    """Validation limits, batching and backpressure of the ingest role."""

    model_config = ConfigDict(extra="forbid")

    unknown_assets: UnknownAssetPolicy = UnknownAssetPolicy.AUTO_REGISTER
    max_payload_bytes: int = Field(default=256 * 1024, ge=64)
    max_batch_items: int = Field(default=1000, ge=1)
    max_metrics_per_reading: int = Field(default=100, ge=1)
    # Readings stamped further than this from arrival time are refused.
    max_future_s: int = Field(default=300, ge=0)
    max_past_s: int = Field(default=30 * 24 * 3600, ge=0)
    deadletter_payload_bytes: int = Field(default=4096, ge=0)
    # Bounded hand-off queue between paho's thread and the writer, in messages.
    queue_size: int = Field(default=20000, ge=1)
    # A write batch flushes at this many points or after this long, whichever first.
    batch_points: int = Field(default=5000, ge=1)
    # 10 ms, not 50: it bounds how long a crossing reading waits before its alert is
    # recorded, and 5 ms cost no throughput at QoS 1 (docs/benchmarks.md).
    flush_interval_ms: int = Field(default=10, ge=1)
    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=10.0, gt=0)
    # Port of the standalone `pmkeeper ingest` /metrics endpoint; 0 disables it. With
    # several workers, worker i serves on metrics_port + i.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # `pmkeeper ingest` processes on one shared subscription: one uses one core at most.
    workers: int = Field(default=1, ge=1, le=64)


class RulesSettings(BaseModel):
    """The rules engine inside ingest: timers, refresh and alert damping."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # Set by `pmkeeper ingest --workers N` on the one process that evaluates rules: it
    # takes every message on a subscription of its own and stores nothing (the workers,
    # on the shared subscription, do). Rule state needs every reading of a series in one
    # place, and a shared subscription spreads a series across the workers.
    evaluate_only: bool = False
    # How often the timer checks `for` expiries, quiet periods and silences (no data).
    tick_interval_s: float = Field(default=1.0, gt=0, le=60)
    # How often rule definitions and asset attributes are re-read from the database.
    refresh_s: float = Field(default=5.0, gt=0, le=3600)
    # A re-fire this soon after the key's alert cleared reopens it as flapping, unpaged.
    flap_window: timedelta = timedelta(minutes=15)
    # A re-fire this soon after its predictive work order was resolved reopens the order
    # and counts a repeat failure.
    reopen_window: timedelta = timedelta(days=7)


class SlaSettings(BaseModel):
    """The SLA watch: how often work orders are checked for missed deadlines."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # A missed deadline is flagged (and escalated) at most this long after it passed.
    sweep_interval_s: float = Field(default=30.0, gt=0, le=3600)


class InventorySettings(BaseModel):
    """The reservation watch: expiry of unused reservations, and stale ones released."""

    model_config = ConfigDict(extra="forbid")

    expiry_enabled: bool = True
    # A reservation past its expiry (or held by a cancelled or closed work order) gives
    # its stock back at most this long later.
    expiry_sweep_s: float = Field(default=60.0, gt=0, le=3600)


class SchedulerSettings(BaseModel):
    """The scheduler role: plan generation and the periodic sweeps, run by APScheduler."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # Plans are looked at this often; what falls due within a plan's lead time is generated.
    generate_every_s: float = Field(default=60.0, gt=0, le=86_400)
    # A follower tries to become leader this often; a leader checks its lock as often.
    elect_every_s: float = Field(default=5.0, gt=0, le=600)
    # A run this late (the process was busy or paused) still runs; later ones are skipped
    # and, coalesced, run once.
    misfire_grace_s: int = Field(default=300, ge=1, le=86_400)


class Settings(BaseSettings):
    """Everything pmkeeper can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="PMK_", env_nested_delimiter="__", extra="ignore", case_sensitive=False
    )

    data_dir: Path = Path("./data")
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    mqtt: MqttSettings = MqttSettings()
    influx: InfluxSettings = InfluxSettings()
    database: DatabaseSettings = DatabaseSettings()
    api: ApiSettings = ApiSettings()
    ingest: IngestSettings = IngestSettings()
    rules: RulesSettings = RulesSettings()
    sla: SlaSettings = SlaSettings()
    inventory: InventorySettings = InventorySettings()
    scheduler: SchedulerSettings = SchedulerSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the config file, as operators expect from twelve-factor apps.
        return (init_settings, env_settings, *_file_sources(settings_cls))

    @property
    def database_url(self) -> str:
        """Return the SQLAlchemy URL, defaulting to a SQLite file in the data directory."""
        return self.database.url or f"sqlite:///{self.data_dir / 'pmkeeper.db'}"

    @property
    def telemetry_sqlite_path(self) -> Path:
        """Return where the embedded telemetry store keeps its file."""
        return self.data_dir / "telemetry.db"


_config_file: Path | None = None


def _file_sources(settings_cls: type[BaseSettings]) -> list[PydanticBaseSettingsSource]:
    path = _config_file
    if path is None:
        return []
    if path.suffix in {".yaml", ".yml"}:
        return [YamlConfigSettingsSource(settings_cls, yaml_file=path)]
    if path.suffix == ".toml":
        return [TomlConfigSettingsSource(settings_cls, toml_file=path)]
    raise ValueError(f"config file must be .yaml, .yml or .toml, not {path.name}")


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment, then `config_file` (YAML or TOML), then defaults."""
    global _config_file  # noqa: PLW0603 - pydantic-settings reads sources from a classmethod
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"config file not found: {config_file}")
    _config_file = config_file
    try:
        return Settings(**overrides)
    finally:
        _config_file = None
