"""Benchmark ingest with the rules engine on against off, and the latency of an alert.

Run `python -m bench.ingest_rules` (`make bench-ingest-rules`). Like bench/ingest_throughput.py
it starts a private mosquitto and influxd (with the /api/v2/write proxy) in a temporary
directory on 127.0.0.1 and tears everything down at the end.

Throughput (rules on vs off, same run): the backlog drain of ingest_throughput. Two
single-process `pmkeeper ingest` children, one with `PMK_RULES__ENABLED=true` and a rule
set in its database, one with `PMK_RULES__ENABLED=false`, register persistent sessions;
the bench loads one backlog, which the broker queues for both, and each drains it in
turn, alone on the machine, the order alternating between runs. Both databases hold the
same registered fleet (types, sites, tags), and both Influx databases the same 30 minutes
of history, which the rules-on ingest reads back to warm each series' windows when it
first sees it, as after a restart. The devices report healthy values with realistic
timestamps (one sample every `--interval-s` per asset), so windows hold what they would
in production. Every point must arrive in influxd, with no dead letters, and the rules-on
ingest must have evaluated every reading. The targets are judged on the steady rate, in
stored points from a quarter of the backlog on, once every series' history has been read
back.

Alert latency: a live rules-on ingest at half the sustained rules-on rate. The paced
publisher stamps each message with its publish time (ms); one message in `--probe-every`
goes to a fresh probe asset with a value past a hold-0 threshold rule. Latency is
`recorded_at - fired_at` of those alerts, read from the ingest's `alerts` table, where
`fired_at` is the crossing reading's event time (= its publish time) and `recorded_at` the
wall clock when the recording transaction started. Measured for each `--flush-interval-ms`
and each `--probe-every`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from sqlalchemy import Engine, func, select

from bench.broker import BenchBroker
from bench.histogram import cumulative_buckets, quantile, subtract
from bench.hotspots import HotspotReport, summarize_raw_profile
from bench.ingest_child import (
    REPO_ROOT,
    IngestChild,
    cpu_seconds,
    machine_cpu,
    sleep_until,
    sum_samples,
)
from bench.ingest_throughput import (
    MEASUREMENT,
    METRIC,
    POLL_INTERVAL_S,
    RESULTS_DIR,
    Bench,
    BenchError,
    IngestVariant,
    broker_settings,
    forget_session,
    fresh_bucket,
    ingest_child,
    ingest_settings,
    machine,
    register_ingests,
    running,
    service_pids,
    stored_points,
    wait_received,
)
from bench.publisher import RawPacedPublisher
from core.assets import Asset
from core.settings import IngestSettings, RulesSettings
from rules.engine import RuleEngine
from rules.model import (
    Band,
    Comparison,
    NoData,
    RateOfChange,
    Rolling,
    Rule,
    Selector,
    Severity,
    Threshold,
    Trend,
)
from storage.db import create_engine_for, migrate
from storage.repositories import SqlAssetRepository, SqlRuleRepository
from storage.tables import alerts
from tests.support.binaries import require_binary
from tests.support.influx import InfluxServer

TARGET_RATIO = 0.80
TARGET_P99_MS = 50.0

ASSET_TYPES = ("pump", "compressor", "motor", "fan", "chiller")
SITES = ("plant-north", "plant-south", "plant-east")
# One asset in HOT_EVERY runs warm: realistic, and it makes a few rules fire.
HOT_EVERY = 100
HOT_OFFSET = 42
PROBE_VALUE = 150.0
PROBE_WARMUP_VALUE = 50.0
# The hold-0 threshold each probe crosses; one per asset type, so one alert per probe.
CRITICAL_THRESHOLD = 95.0
HISTORY = timedelta(minutes=30)
# The steady rate is measured from this share of the backlog on: by then every series has
# been seen, so the rules-on ingest has read back every series' windows.
STEADY_FROM = 0.25
_HOUR_MS = 3_600_000

# The code this bench measures; their digests go into the results (see code_digests()).
MEASURED_SOURCES = (
    "rules/evaluate.py",
    "rules/engine.py",
    "rules/alerting.py",
    "ingest/evaluation.py",
    "ingest/worker.py",
    "ingest/mqtt.py",
    "ingest/payloads.py",
    "storage/alerting.py",
    "storage/telemetry_influx.py",
    "pmkeeper/container.py",
)

RULES_ON = "rules on"
RULES_OFF = "rules off"

TIMES = "\N{MULTIPLICATION SIGN}"


# --- the fleet, its values and its rules -----------------------------------------------


def fleet_id(index: int) -> str:
    """Return the id of fleet asset `index` (also its topic level)."""
    return f"bench-{index:04d}"


def probe_id(index: int) -> str:
    """Return the id of latency probe asset `index`."""
    return f"probe-{index:04d}"


def fleet_asset(index: int) -> Asset:
    """Return fleet asset `index`: type, site and tags spread so selectors overlap."""
    tags = {"line": str(index % 4 + 1)}
    if (index // 4) % 4 == 0:
        tags["monitoring"] = "predictive"
    return Asset(
        id=fleet_id(index),
        name=f"Bench asset {index}",
        type=ASSET_TYPES[index % len(ASSET_TYPES)],
        site=SITES[index % len(SITES)],
        tags=tags,
    )


def probe_asset(index: int) -> Asset:
    """Return latency probe `index`: an ordinary asset that will cross a critical threshold."""
    return Asset(
        id=probe_id(index),
        name=f"Latency probe {index}",
        type=ASSET_TYPES[index % len(ASSET_TYPES)],
        site=SITES[index % len(SITES)],
        tags={"line": "3"},
    )


def temperature(index: int, ts_ms: int, *, noisy: bool = True) -> float:
    """Return fleet asset `index`'s healthy temperature at `ts_ms`, the same in every run.

    A per-asset level (45-64 °C; 86 °C for the warm ones), an hourly swing of ±2 °C and,
    if `noisy`, ±0.3 °C of deterministic noise. The live run leaves the noise out: it
    sends each asset a reading every fraction of a second, and noise that dense would
    make the 30-minute trend rule extrapolate to 100 °C.
    """
    level = 86.0 if index % HOT_EVERY == HOT_OFFSET else 45.0 + index % 20
    swing = 2.0 * math.sin(2 * math.pi * ts_ms / _HOUR_MS + index)
    noise = ((index * 7_919 + (ts_ms // 1000) * 104_729) % 601) / 1000 - 0.3 if noisy else 0.0
    return round(level + swing + noise, 2)


def rule_set(fleet_size: int) -> list[Rule]:
    """Return 40 rules on the bench metric, selecting by type, site, tags and single assets."""

    def selector(**parts: Any) -> Selector:
        return Selector(metric=METRIC, **parts)

    rules: list[Rule] = []
    for asset_type in ASSET_TYPES:
        rules += [
            Rule(
                id=f"{asset_type}-hot",
                name=f"{asset_type} running hot",
                selector=selector(asset_type=asset_type),
                condition=Threshold(comparison=Comparison.ABOVE, threshold=85, clear=80),
                hold_for=timedelta(minutes=2),
            ),
            Rule(
                id=f"{asset_type}-critical",
                name=f"{asset_type} overheating",
                selector=selector(asset_type=asset_type),
                condition=Threshold(comparison=Comparison.ABOVE, threshold=CRITICAL_THRESHOLD),
                severity=Severity.CRITICAL,
            ),
        ]
    for asset_type in ("fan", "chiller"):
        rules.append(
            Rule(
                id=f"{asset_type}-frost",
                name=f"{asset_type} near freezing",
                selector=selector(asset_type=asset_type),
                condition=Threshold(comparison=Comparison.BELOW, threshold=5, clear=8),
                severity=Severity.INFO,
                hold_for=timedelta(minutes=5),
            )
        )
    for site in SITES:
        rules.append(
            Rule(
                id=f"{site}-band",
                name=f"{site}: temperature out of band",
                selector=selector(site=site),
                condition=Band(low=0, high=90, clear_low=2, clear_high=88),
                hold_for=timedelta(minutes=1),
            )
        )
    for site in SITES[:2]:
        rules.append(
            Rule(
                id=f"{site}-mean-5m",
                name=f"{site}: 5-minute mean high",
                selector=selector(site=site),
                condition=Rolling(
                    aggregate="mean",
                    comparison=Comparison.ABOVE,
                    threshold=80,
                    clear=75,
                    window=timedelta(minutes=5),
                ),
            )
        )
    rules.append(
        Rule(
            id=f"{SITES[2]}-max-5m",
            name=f"{SITES[2]}: 5-minute maximum high",
            selector=selector(site=SITES[2]),
            condition=Rolling(
                aggregate="max",
                comparison=Comparison.ABOVE,
                threshold=92,
                window=timedelta(minutes=5),
            ),
        )
    )
    for line in ("1", "2"):
        rules.append(
            Rule(
                id=f"line-{line}-heating-fast",
                name=f"line {line}: heating fast",
                selector=selector(tags={"line": line}),
                condition=RateOfChange(
                    comparison=Comparison.ABOVE, threshold=0.5, window=timedelta(minutes=2)
                ),
                hold_for=timedelta(seconds=30),
            )
        )
    rules += [
        Rule(
            id="predictive-trend-30m",
            name="heading for 100 °C within the hour",
            selector=selector(tags={"monitoring": "predictive"}),
            condition=Trend(
                comparison=Comparison.ABOVE,
                threshold=100,
                window=timedelta(minutes=30),
                horizon=timedelta(hours=1),
                min_points=10,
            ),
        ),
        Rule(
            id="fleet-silent",
            name="no temperature for two hours",
            selector=selector(),
            # Longer than a backlog's event-time span: a drain must not look like silence.
            condition=NoData(silence=timedelta(hours=2)),
            severity=Severity.INFO,
        ),
    ]
    step = max(1, fleet_size // 15)
    for index in range(0, step * 15, step):
        asset_id = fleet_id(index % fleet_size)
        rules.append(
            Rule(
                id=f"{asset_id}-limit",
                name=f"{asset_id}: site-specific limit",
                selector=selector(asset_id=asset_id),
                condition=Threshold(comparison=Comparison.ABOVE, threshold=75, clear=70),
                hold_for=timedelta(seconds=30),
            )
        )
    for asset_type in ASSET_TYPES[:3]:
        rules.append(
            Rule(
                id=f"{asset_type}-legacy",
                name=f"{asset_type}: legacy limit (disabled)",
                selector=selector(asset_type=asset_type),
                condition=Threshold(comparison=Comparison.ABOVE, threshold=70),
                enabled=False,
            )
        )
    return rules


def critical_rule_ids() -> list[str]:
    """Return the hold-0 threshold rules a probe crosses (one per asset type)."""
    return [f"{asset_type}-critical" for asset_type in ASSET_TYPES]


def matched_rules(rules: Sequence[Rule], assets: Sequence[Asset]) -> dict[str, Any]:
    """Return the mean number of rules a fleet reading matches, overall and by condition kind.

    The backlog is spread evenly over the fleet, so this is also the mean per reading.
    """
    engine = RuleEngine(rules)
    kinds: Counter[str] = Counter()
    total = 0
    for asset in assets:
        found = engine.matching(asset.id, METRIC, asset)
        total += len(found)
        kinds.update(rule.condition.kind for rule in found)
    count = max(1, len(assets))
    return {
        "rules": len(rules),
        "enabled": sum(rule.enabled for rule in rules),
        "mean_per_reading": total / count,
        "mean_by_kind": {kind: n / count for kind, n in sorted(kinds.items())},
    }


# --- databases --------------------------------------------------------------------------


def build_database(path: Path, assets: Sequence[Asset], rules: Sequence[Rule]) -> None:
    """Create a migrated SQLite database holding `assets` and `rules`, to copy per ingest."""
    engine = create_engine_for(f"sqlite:///{path}")
    try:
        migrate(engine)
        asset_repository = SqlAssetRepository(engine)
        for asset in assets:
            asset_repository.add(asset)
        rule_repository = SqlRuleRepository(engine)
        for rule in rules:
            rule_repository.add(rule)
    finally:
        engine.dispose()
    # Closing the last connection checkpoints the WAL into the file: one file to copy.
    if Path(f"{path}-wal").exists():
        raise BenchError(f"{path} still has a write-ahead log after closing")


def database_path(child: IngestChild) -> Path:
    """Return the SQLite file an ingest child uses."""
    url = child.env["PMK_DATABASE__URL"]
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise BenchError(f"expected a SQLite database, not {url}")
    return Path(url[len(prefix) :])


def install_database(template: Path, child: IngestChild) -> Path:
    """Give an ingest child (not started yet) its own copy of a template database."""
    path = database_path(child)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)
    return path


@contextlib.contextmanager
def opened(path: Path) -> Iterator[Engine]:
    """Open an ingest's SQLite database for reading, and close it afterwards."""
    engine = create_engine_for(f"sqlite:///{path}")
    try:
        yield engine
    finally:
        engine.dispose()


def alerts_by_rule(path: Path) -> dict[str, int]:
    """Return how many alerts each rule opened in an ingest's database."""
    with opened(path) as engine, engine.connect() as connection:
        rows = connection.execute(
            select(alerts.c.rule_id, func.count()).group_by(alerts.c.rule_id)
        ).all()
    return {str(rule_id): int(count) for rule_id, count in rows}


# --- publishing -------------------------------------------------------------------------


def _topic(asset_id: str) -> bytes:
    raw = f"pmk/{asset_id}/telemetry".encode()
    return struct.pack("!H", len(raw)) + raw


def _reading(ts_ms: int, value: float) -> dict[str, Any]:
    return {"ts": ts_ms, "metrics": {METRIC: value}}


def _fleet_payload(index: int, stamps: Sequence[int], *, noisy: bool = True) -> bytes:
    items = [_reading(ts_ms, temperature(index, ts_ms, noisy=noisy)) for ts_ms in stamps]
    return json.dumps(items[0] if len(items) == 1 else items).encode()


@dataclass(frozen=True)
class Timeline:
    """Event times of one backlog: each asset samples every `sample_ms` up to `end_ms`."""

    fleet: int
    messages: int
    readings: int
    sample_ms: int
    end_ms: int

    @property
    def samples_per_asset(self) -> int:
        """Return how many readings each asset sends in the backlog."""
        return -(-self.messages // self.fleet) * self.readings

    @property
    def start_ms(self) -> int:
        """Return the event time of each asset's first backlog reading."""
        return self.end_ms - self.samples_per_asset * self.sample_ms

    def stamps(self, message: int) -> list[int]:
        """Return the event times of message `message`'s readings."""
        first = self.start_ms + (message // self.fleet) * self.readings * self.sample_ms
        return [first + i * self.sample_ms for i in range(self.readings)]


def load_backlog(broker: BenchBroker, qos: int, timeline: Timeline) -> float:
    """Publish the backlog as fast as the broker takes it; return the rate (msg/s)."""
    publisher = RawPacedPublisher(broker.port, f"bench-load-{uuid.uuid4().hex[:8]}", qos)
    topics = [_topic(fleet_id(i)) for i in range(timeline.fleet)]
    started = time.perf_counter()
    chunk = bytearray()
    for message in range(timeline.messages):
        index = message % timeline.fleet
        chunk += publisher.packet(topics[index], _fleet_payload(index, timeline.stamps(message)))
        if len(chunk) > 256 * 1024 or message == timeline.messages - 1:
            publisher.send(bytes(chunk))
            chunk.clear()
            # Packet ids wrap at 65,535: keep far fewer than that unacknowledged.
            while qos and message + 1 - publisher.acked > 20_000:
                time.sleep(0.001)
                publisher.read_acks()
    _wait_acks(publisher, timeline.messages if qos else 0)
    seconds = time.perf_counter() - started
    publisher.close()
    return timeline.messages / seconds


def _wait_acks(publisher: RawPacedPublisher, expected: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while publisher.acked < expected:
        if time.monotonic() > deadline:
            raise BenchError(f"{publisher.acked} of {expected} PUBACKs after {timeout_s}s")
        time.sleep(0.001)
        publisher.read_acks()


def preload_history(bench: Bench, bucket: str, timeline: Timeline, span: timedelta) -> int:
    """Write `span` of healthy history before the backlog, straight to influxd; return points."""
    sample_ms = timeline.sample_ms
    count = int(span / timedelta(milliseconds=sample_ms))
    lines: list[str] = []
    written = 0
    with httpx.Client(base_url=bench.influx.direct_url, timeout=60.0) as client:
        for index in range(timeline.fleet):
            asset_id = fleet_id(index)
            for step in range(count, 0, -1):
                ts_ms = timeline.start_ms - step * sample_ms
                value = temperature(index, ts_ms)
                lines.append(f"{MEASUREMENT},asset_id={asset_id} {METRIC}={value!r} {ts_ms}")
            if len(lines) >= 20_000 or index == timeline.fleet - 1:
                response = client.post(
                    "/write", params={"db": bucket, "precision": "ms"}, content="\n".join(lines)
                )
                if response.status_code != 204:
                    raise BenchError(f"influxd refused the history: {response.text}")
                written += len(lines)
                lines = []
    return written


def publish_probed(
    broker: BenchBroker, *, rate: float, messages: int, fleet: int, probes: int, probe_every: int
) -> dict[str, float]:
    """Publish live at `rate`, stamped with the publish time; every `probe_every`th is a probe.

    Healthy messages go round the fleet; probe k goes to probe asset k with a value past
    the critical threshold. Written like bench/publisher.py's paced mode: raw MQTT 3.1.1
    packets in 0.5 ms ticks, at most one message per asset per millisecond.
    """
    publisher = RawPacedPublisher(broker.port, f"bench-live-{uuid.uuid4().hex[:8]}", qos=1)
    fleet_topics = [_topic(fleet_id(i)) for i in range(fleet)]
    probe_topics = [_topic(probe_id(i)) for i in range(probes)]
    started = time.perf_counter()
    sent = healthy = probed = 0
    current_ms = in_ms = 0
    while sent < messages:
        due = min(messages, int((time.perf_counter() - started) * rate) + 1)
        ts_ms = time.time_ns() // 1_000_000
        if ts_ms != current_ms:
            current_ms, in_ms = ts_ms, 0
        due = min(due, sent + fleet - in_ms)
        if due <= sent:
            publisher.read_acks()
            time.sleep(0.0005)
            continue
        in_ms += due - sent
        burst = bytearray()
        for message in range(sent, due):
            if message % probe_every == probe_every - 1 and probed < probes:
                payload = json.dumps(_reading(ts_ms, PROBE_VALUE)).encode()
                burst += publisher.packet(probe_topics[probed], payload)
                probed += 1
            else:
                index = healthy % fleet
                payload = _fleet_payload(index, [ts_ms], noisy=False)
                burst += publisher.packet(fleet_topics[index], payload)
                healthy += 1
        publisher.send(bytes(burst))
        sent = due
    seconds = time.perf_counter() - started
    _wait_acks(publisher, messages)
    publisher.close()
    return {"published": messages, "seconds": seconds, "rate": messages / seconds, "probes": probed}


def publish_warmup(broker: BenchBroker, fleet: int, probes: int) -> int:
    """Publish one healthy reading per asset, so every series is seen before measuring.

    Return how many messages that was.
    """
    publisher = RawPacedPublisher(broker.port, f"bench-warm-{uuid.uuid4().hex[:8]}", qos=1)
    ts_ms = time.time_ns() // 1_000_000 - 1_000
    chunk = bytearray()
    for index in range(fleet):
        payload = _fleet_payload(index, [ts_ms], noisy=False)
        chunk += publisher.packet(_topic(fleet_id(index)), payload)
    for index in range(probes):
        payload = json.dumps(_reading(ts_ms, PROBE_WARMUP_VALUE)).encode()
        chunk += publisher.packet(_topic(probe_id(index)), payload)
    publisher.send(bytes(chunk))
    _wait_acks(publisher, fleet + probes)
    publisher.close()
    return fleet + probes


# --- throughput ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One throughput configuration: QoS, readings per message, writer flush interval."""

    qos: int
    readings: int
    flush_interval_ms: int

    @property
    def label(self) -> str:
        """Return e.g. 'QoS 1, 10 readings/msg, flush 50 ms'."""
        return (
            f"QoS {self.qos}, {self.readings} reading{'s' if self.readings > 1 else ''}/msg, "
            f"flush {self.flush_interval_ms} ms"
        )


@dataclass
class Drain:
    """One ingest (rules on or off) draining one backlog."""

    mode: str
    qos: int
    readings: int
    flush_interval_ms: int
    run: int
    messages: int
    points: int
    seconds: float
    msg_per_s: float
    points_per_s: float
    # From STEADY_FROM of the backlog on: every series seen, every window read back.
    steady_msg_per_s: float | None
    steady_points_per_s: float | None
    publish_msg_per_s: float
    peak_rss_kib: int
    cpu_share: dict[str, float] = field(default_factory=dict)
    rule_evaluations: float = 0.0
    rule_batches: float = 0.0
    rule_seconds: float = 0.0
    # Evaluating and recording, per reading and readings per batch, in the steady part.
    steady_rule_us_per_reading: float | None = None
    steady_readings_per_batch: float | None = None
    warmups: float = 0.0
    warmed_before_steady: bool | None = None
    alerts: dict[str, int] = field(default_factory=dict)


@dataclass
class Templates:
    """Template databases copied into every ingest's directory."""

    rules_on: Path
    rules_off: Path


def _variant(mode: str, config: Config) -> IngestVariant:
    return IngestVariant(
        mode,
        1,
        (
            ("PMK_RULES__ENABLED", "true" if mode == RULES_ON else "false"),
            ("PMK_INGEST__FLUSH_INTERVAL_MS", str(config.flush_interval_ms)),
        ),
    )


def throughput_run(
    bench: Bench, templates: Templates, config: Config, run: int, *, profile: Path | None = None
) -> list[Drain]:
    """Load one backlog for a rules-on and a rules-off ingest; let each drain it in turn.

    With `profile`, only the rules-on ingest drains, under py-spy (not counted).
    """
    args = bench.args
    messages = args.messages if config.readings == 1 else args.messages_batch
    modes = [RULES_ON] if profile else [RULES_ON, RULES_OFF]
    tag = (
        f"q{config.qos}r{config.readings}f{config.flush_interval_ms}n{run}"
        f"{'p' if profile else ''}-{uuid.uuid4().hex[:6]}"
    )
    drains: list[Drain] = []
    with contextlib.ExitStack() as stack:
        ingests: dict[str, tuple[IngestChild, str, Path]] = {}
        for mode in modes:
            bucket = stack.enter_context(fresh_bucket(bench, mode.replace(" ", "_")))
            client_id = f"bench-{mode.replace(' ', '-')}-{tag}"
            child = ingest_child(
                bench, bench.broker, config.qos, client_id, bucket, variant=_variant(mode, config)
            )
            template = templates.rules_on if mode == RULES_ON else templates.rules_off
            ingests[mode] = (child, bucket, install_database(template, child))
        try:
            register_ingests([child for child, _, _ in ingests.values()])
            timeline = Timeline(
                fleet=args.assets,
                messages=messages,
                readings=config.readings,
                sample_ms=int(args.interval_s * 1000),
                # A second before now: inside the validation window, and unique per asset.
                end_ms=time.time_ns() // 1_000_000 - 1_000,
            )
            history = {
                mode: preload_history(bench, bucket, timeline, HISTORY)
                for mode, (_, bucket, _) in ingests.items()
            }
            publish_rate = load_backlog(bench.broker, config.qos, timeline)
            order = modes if run % 2 == 0 else list(reversed(modes))
            for mode in order:
                child, bucket, database = ingests[mode]
                drains.append(
                    drain(
                        bench,
                        child,
                        bucket,
                        database,
                        mode=mode,
                        config=config,
                        run=run,
                        timeline=timeline,
                        history_points=history[mode],
                        publish_rate=publish_rate,
                        profile=profile,
                    )
                )
        finally:
            for child, _, _ in ingests.values():
                child.kill()
            for child, _, _ in ingests.values():
                forget_session(bench.broker, child.env["PMK_MQTT__CLIENT_ID"])
    return drains


@dataclass(frozen=True)
class _Progress:
    """One scrape of a draining ingest."""

    at: float
    received: float
    written: float
    warmups: float
    rule_seconds: float
    rule_batches: float
    evaluations: float

    @classmethod
    def scraped(cls, at: float, samples: Mapping[str, float]) -> _Progress:
        """Read the counters that matter here from a scrape taken at `at`."""
        return cls(
            at=at,
            received=samples.get("pmkeeper_messages_received_total", 0.0),
            written=samples.get("pmkeeper_points_written_total", 0.0),
            warmups=samples.get("pmkeeper_rule_warmups_total", 0.0),
            rule_seconds=samples.get("pmkeeper_rule_evaluation_seconds_sum", 0.0),
            rule_batches=samples.get("pmkeeper_rule_evaluation_seconds_count", 0.0),
            evaluations=samples.get("pmkeeper_rule_evaluations_total", 0.0),
        )


def drain(
    bench: Bench,
    child: IngestChild,
    bucket: str,
    database: Path,
    *,
    mode: str,
    config: Config,
    run: int,
    timeline: Timeline,
    history_points: int,
    publish_rate: float,
    profile: Path | None,
) -> Drain:
    """Start an ingest on its queued backlog and time it to the last message; check every point.

    The rate is taken from the first scrape that shows progress to the one that shows
    every message, as in ingest_throughput; the steady rate from the first scrape at or
    past STEADY_FROM of the backlog.
    """
    messages = timeline.messages
    points = messages * timeline.readings
    steady_from = int(messages * STEADY_FROM)
    deadline = time.monotonic() + bench.args.timeout
    trace: list[_Progress] = []
    pids: dict[str, int] = {}
    cpu_at_first: dict[str, float] = {}
    machine_at_first = machine_cpu()
    cpu_used: dict[str, float] = {}
    samples: dict[str, float] = {}
    profiler: subprocess.Popen[bytes] | None = None
    with running(child):
        try:
            tick = time.perf_counter()
            while True:
                child.check_alive()
                if time.monotonic() > deadline:
                    done = trace[-1].received if trace else 0
                    raise BenchError(
                        f"{mode} drained {done:.0f} of {messages} messages in "
                        f"{bench.args.timeout}s:\n{child.log_tail()}"
                    )
                before = time.perf_counter()
                samples = sum_samples(child.worker_metrics_or_empty())
                at = (before + time.perf_counter()) / 2
                received = samples.get("pmkeeper_messages_received_total", 0.0)
                if received > 0:
                    if not trace:
                        pids = {
                            "pmkeeper": child.pid,
                            **service_pids(bench, bench.broker),
                            "bench": os.getpid(),
                        }
                        cpu_at_first = {name: cpu_seconds(pid) for name, pid in pids.items()}
                        machine_at_first = machine_cpu()
                        if profile is not None:
                            profiler = start_profiler(child.pid, profile, bench.args.timeout)
                    trace.append(_Progress.scraped(at, samples))
                if received >= messages:
                    cpu_used = {
                        name: cpu_seconds(pid) - cpu_at_first[name] for name, pid in pids.items()
                    }
                    machine_used = machine_cpu() - machine_at_first
                    cpu_used["others"] = max(0.0, machine_used.busy_s - sum(cpu_used.values()))
                    cpu_used["steal"] = machine_used.steal_s
                    break
                tick += POLL_INTERVAL_S
                sleep_until(tick)
            rss = child.peak_rss_kib()
        finally:
            if profiler is not None:
                stop_profiler(profiler)
        if child.terminate() != 0:
            raise BenchError(f"{mode} ingest did not stop cleanly:\n{child.log_tail()}")
    written = samples.get("pmkeeper_points_written_total", 0.0)
    deadletters = samples.get("pmkeeper_deadletters_total", 0.0)
    received = trace[-1].received
    if received != messages or written != points or deadletters:
        raise BenchError(
            f"{mode} counted {received:.0f}/{messages} messages, {written:.0f}/{points} points "
            f"and {deadletters:.0f} dead letters:\n{child.log_tail()}"
        )
    evaluations = samples.get("pmkeeper_rule_evaluations_total", 0.0)
    if mode == RULES_ON and evaluations != points:
        raise BenchError(f"rules evaluated {evaluations:.0f} of {points} readings")
    stored = stored_points(bench, bucket)
    if stored != points + history_points:
        raise BenchError(
            f"influxd holds {stored} points in {bucket}, expected {points} + {history_points}"
        )
    first, last = trace[0], trace[-1]
    seconds = last.at - first.at
    if first.received >= messages or seconds <= 0:
        raise BenchError(f"the drain finished within one poll; raise --messages ({messages})")
    rate = (last.received - first.received) / seconds
    # Counted in stored points, not received messages: received runs ahead of stored by
    # the in-flight window, which a slower writer keeps fuller at the start of the window.
    steady = next(
        (entry for entry in trace if entry.written >= steady_from * config.readings), last
    )
    steady_rate = None
    if steady is not last:
        steady_rate = (last.written - steady.written) / (last.at - steady.at) / config.readings
    evaluated = last.evaluations - steady.evaluations
    return Drain(
        mode=mode,
        qos=config.qos,
        readings=config.readings,
        flush_interval_ms=config.flush_interval_ms,
        run=run,
        messages=messages,
        points=points,
        seconds=seconds,
        msg_per_s=rate,
        points_per_s=rate * config.readings,
        steady_msg_per_s=steady_rate,
        steady_points_per_s=None if steady_rate is None else steady_rate * config.readings,
        publish_msg_per_s=publish_rate,
        peak_rss_kib=rss,
        cpu_share={name: round(used / seconds, 3) for name, used in cpu_used.items()},
        rule_evaluations=evaluations,
        rule_batches=last.rule_batches,
        rule_seconds=last.rule_seconds,
        steady_rule_us_per_reading=(
            (last.rule_seconds - steady.rule_seconds) / evaluated * 1e6 if evaluated else None
        ),
        steady_readings_per_batch=(
            evaluated / (last.rule_batches - steady.rule_batches) if evaluated else None
        ),
        warmups=last.warmups,
        warmed_before_steady=steady.warmups >= timeline.fleet if mode == RULES_ON else None,
        alerts=alerts_by_rule(database) if mode == RULES_ON else {},
    )


def start_profiler(pid: int, output: Path, duration_s: float) -> subprocess.Popen[bytes]:
    """Record the GIL-holding thread of `pid` with py-spy (raw format) until stopped."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    output.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--threads",
            "--gil",
            "--rate",
            "200",
            "--duration",
            str(int(duration_s)),
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(output.parent / "py-spy.log").open("ab"),
        stdin=subprocess.DEVNULL,
    )


def stop_profiler(process: subprocess.Popen[bytes]) -> None:
    """Interrupt py-spy, which then writes its output, as on Ctrl-C."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- latency ------------------------------------------------------------------------------


@dataclass
class Latency:
    """Alert latency (recorded_at - fired_at) of the probes of one live run."""

    flush_interval_ms: int
    probe_every: int
    target_msg_per_s: float
    achieved_msg_per_s: float
    messages: int
    probes: int
    alerts: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float
    mean_ms: float
    # Every message's publish-to-stored lag, from the ingest's histogram (bucketed).
    lag_p50_ms: float
    lag_p99_ms: float
    write_p50_ms: float
    write_p99_ms: float
    # Evaluating and recording one written batch (pmkeeper_rule_evaluation_seconds).
    rule_p50_ms: float
    rule_p99_ms: float
    rule_batches: float
    # CPU used while publishing, in cores: whether the ingest (or the machine) was saturated.
    cpu_share: dict[str, float] = field(default_factory=dict)
    other_alerts: dict[str, int] = field(default_factory=dict)
    # (seconds since the first probe fired, latency ms) of every probe, in firing order.
    probe_latencies: list[tuple[float, float]] = field(default_factory=list)


def exact_quantile(values: Sequence[float], q: float) -> float:
    """Return the q-quantile of `values` by linear interpolation between order statistics."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_run(
    bench: Bench,
    template: Path,
    flush_interval_ms: int,
    rate: float,
    probe_every: int,
    *,
    profile: Path | None = None,
) -> Latency:
    """Run the fleet live at `rate` with probes; return the probes' alert latency.

    With `profile`, py-spy records the ingest from the warm-up's end to the last alert.
    """
    args = bench.args
    messages = max(probe_every, int(rate * args.latency_seconds))
    probes = messages // probe_every
    fleet = args.assets
    tag = f"lat-f{flush_interval_ms}-{uuid.uuid4().hex[:6]}"
    config = Config(1, 1, flush_interval_ms)
    with fresh_bucket(bench, "latency") as bucket:
        child = ingest_child(
            bench, bench.broker, 1, f"bench-{tag}", bucket, variant=_variant(RULES_ON, config)
        )
        database = install_database(template, child)
        try:
            with running(child):
                child.wait_subscribed()
                # Every series seen once first: the windows' read-back is not in the figure.
                warm = publish_warmup(bench.broker, fleet, probes)
                wait_received(bench, child, warm)
                before = child.metrics()
                profiler = None if profile is None else start_profiler(child.pid, profile, 600)
                pids = {"pmkeeper": child.pid, **service_pids(bench, bench.broker)}
                pids["bench (publisher)"] = os.getpid()
                cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                machine_before = machine_cpu()
                published = publish_probed(
                    bench.broker,
                    rate=rate,
                    messages=messages,
                    fleet=fleet,
                    probes=probes,
                    probe_every=probe_every,
                )
                machine_used = machine_cpu() - machine_before
                cpu_used = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
                cpu_used["others"] = max(0.0, machine_used.busy_s - sum(cpu_used.values()))
                cpu_used["steal"] = machine_used.steal_s
                wait_received(bench, child, warm + messages)
                fired = _wait_alerts(bench, child, database, probes)
                if profiler is not None:
                    stop_profiler(profiler)
                after = child.metrics()
                if child.terminate() != 0:
                    raise BenchError(f"latency ingest did not stop cleanly:\n{child.log_tail()}")
        finally:
            forget_session(bench.broker, child.env["PMK_MQTT__CLIENT_ID"])
        points = warm + messages
        written = after.get("pmkeeper_points_written_total", 0.0)
        if written != points or after.get("pmkeeper_deadletters_total", 0.0):
            raise BenchError(f"latency run wrote {written:.0f} of {points} points")
        stored = stored_points(bench, bucket)
        if stored != points:
            raise BenchError(f"influxd holds {stored} of {points} points in {bucket}")
    fired.sort()
    latencies = [(recorded_at - fired_at).total_seconds() * 1000 for fired_at, recorded_at in fired]
    first_fired = fired[0][0]
    histograms = {
        name: subtract(cumulative_buckets(after, name), cumulative_buckets(before, name))
        for name in (
            "pmkeeper_ingest_lag_seconds",
            "pmkeeper_write_latency_seconds",
            "pmkeeper_rule_evaluation_seconds",
        )
    }

    def ms(name: str, q: float) -> float:
        return quantile(q, histograms[name]).value * 1000

    others = alerts_by_rule(database)
    for rule_id in critical_rule_ids():
        others.pop(rule_id, None)
    return Latency(
        flush_interval_ms=flush_interval_ms,
        probe_every=probe_every,
        target_msg_per_s=rate,
        achieved_msg_per_s=float(published["rate"]),
        messages=messages,
        probes=int(published["probes"]),
        alerts=len(latencies),
        p50_ms=exact_quantile(latencies, 0.5),
        p90_ms=exact_quantile(latencies, 0.9),
        p99_ms=exact_quantile(latencies, 0.99),
        max_ms=max(latencies),
        min_ms=min(latencies),
        mean_ms=statistics.fmean(latencies),
        lag_p50_ms=ms("pmkeeper_ingest_lag_seconds", 0.5),
        lag_p99_ms=ms("pmkeeper_ingest_lag_seconds", 0.99),
        write_p50_ms=ms("pmkeeper_write_latency_seconds", 0.5),
        write_p99_ms=ms("pmkeeper_write_latency_seconds", 0.99),
        rule_p50_ms=ms("pmkeeper_rule_evaluation_seconds", 0.5),
        rule_p99_ms=ms("pmkeeper_rule_evaluation_seconds", 0.99),
        rule_batches=histograms["pmkeeper_rule_evaluation_seconds"][-1][1],
        cpu_share={name: round(used / published["seconds"], 3) for name, used in cpu_used.items()},
        other_alerts=others,
        probe_latencies=[
            (round((fired_at - first_fired).total_seconds(), 3), round(latency, 3))
            for (fired_at, _), latency in zip(fired, latencies, strict=True)
        ],
    )


def _wait_alerts(
    bench: Bench, child: IngestChild, database: Path, probes: int
) -> list[tuple[dt.datetime, dt.datetime]]:
    """Poll the ingest's database until every probe's critical alert is recorded."""
    query = select(alerts.c.fired_at, alerts.c.recorded_at).where(
        alerts.c.rule_id.in_(critical_rule_ids()), alerts.c.asset_id.like("probe-%")
    )
    deadline = time.monotonic() + bench.args.timeout
    with opened(database) as engine:
        while True:
            child.check_alive()
            with engine.connect() as connection:
                rows = [(row.fired_at, row.recorded_at) for row in connection.execute(query)]
            if len(rows) >= probes:
                if len(rows) > probes:
                    raise BenchError(f"{len(rows)} probe alerts for {probes} probes")
                return rows
            if time.monotonic() > deadline:
                raise BenchError(f"{len(rows)} of {probes} probe alerts:\n{child.log_tail()}")
            time.sleep(POLL_INTERVAL_S)


# --- figures ------------------------------------------------------------------------------


@dataclass
class Summary:
    """Medians (and extremes) over the runs of one configuration and mode."""

    mode: str
    qos: int
    readings: int
    flush_interval_ms: int
    runs: int
    median_msg_per_s: float
    min_msg_per_s: float
    max_msg_per_s: float
    median_points_per_s: float
    median_steady_msg_per_s: float | None
    min_steady_msg_per_s: float | None
    max_steady_msg_per_s: float | None
    median_cpu_share: dict[str, float]
    peak_rss_kib: int
    # Rules on only, medians over the runs' steady parts: evaluation and recording time per
    # reading and readings per batch; and alerts opened per drain.
    rule_us_per_reading: float | None = None
    rule_readings_per_batch: float | None = None
    median_alerts: float | None = None


@dataclass
class Ratio:
    """Rules on over rules off for one configuration; judged on the steady rates."""

    qos: int
    readings: int
    flush_interval_ms: int
    steady_ratio: float | None
    ratio: float
    # The on/off ratio of each run (both drained the same backlog), for the spread.
    steady_run_ratios: list[float]
    run_ratios: list[float]
    met: bool


def summarize(drains: Sequence[Drain]) -> list[Summary]:
    """Group drains by configuration and mode; medians and extremes over the runs."""
    groups: dict[tuple[int, int, int, str], list[Drain]] = {}
    for item in drains:
        key = (item.qos, item.readings, item.flush_interval_ms, item.mode)
        groups.setdefault(key, []).append(item)
    summaries = []
    for (qos, readings, flush, mode), group in sorted(
        groups.items(), key=lambda entry: (entry[0][0], entry[0][1], -entry[0][2], entry[0][3])
    ):
        steady = [d.steady_msg_per_s for d in group if d.steady_msg_per_s is not None]
        names = list(dict.fromkeys(name for d in group for name in d.cpu_share))
        rule_us = [d.steady_rule_us_per_reading for d in group if d.steady_rule_us_per_reading]
        per_batch = [d.steady_readings_per_batch for d in group if d.steady_readings_per_batch]
        summaries.append(
            Summary(
                mode=mode,
                qos=qos,
                readings=readings,
                flush_interval_ms=flush,
                runs=len(group),
                median_msg_per_s=statistics.median(d.msg_per_s for d in group),
                min_msg_per_s=min(d.msg_per_s for d in group),
                max_msg_per_s=max(d.msg_per_s for d in group),
                median_points_per_s=statistics.median(d.points_per_s for d in group),
                median_steady_msg_per_s=statistics.median(steady) if steady else None,
                min_steady_msg_per_s=min(steady) if steady else None,
                max_steady_msg_per_s=max(steady) if steady else None,
                median_cpu_share={
                    name: round(statistics.median(d.cpu_share.get(name, 0.0) for d in group), 2)
                    for name in names
                },
                peak_rss_kib=max(d.peak_rss_kib for d in group),
                rule_us_per_reading=statistics.median(rule_us) if rule_us else None,
                rule_readings_per_batch=statistics.median(per_batch) if per_batch else None,
                median_alerts=(
                    statistics.median(sum(d.alerts.values()) for d in group)
                    if mode == RULES_ON
                    else None
                ),
            )
        )
    return summaries


def ratios(summaries: Sequence[Summary], drains: Sequence[Drain]) -> list[Ratio]:
    """Return rules on / rules off per configuration, from the medians and per run."""
    by_key = {(s.qos, s.readings, s.flush_interval_ms, s.mode): s for s in summaries}
    found = []
    for (qos, readings, flush, mode), on in by_key.items():
        off = by_key.get((qos, readings, flush, RULES_OFF))
        if mode != RULES_ON or off is None:
            continue
        runs: dict[int, dict[str, Drain]] = {}
        for d in drains:
            if (d.qos, d.readings, d.flush_interval_ms) == (qos, readings, flush):
                runs.setdefault(d.run, {})[d.mode] = d
        pairs = [(r[RULES_ON], r[RULES_OFF]) for r in runs.values() if len(r) == 2]
        steady = None
        if on.median_steady_msg_per_s and off.median_steady_msg_per_s:
            steady = on.median_steady_msg_per_s / off.median_steady_msg_per_s
        ratio = on.median_msg_per_s / off.median_msg_per_s
        found.append(
            Ratio(
                qos=qos,
                readings=readings,
                flush_interval_ms=flush,
                steady_ratio=steady,
                ratio=ratio,
                steady_run_ratios=[
                    a.steady_msg_per_s / b.steady_msg_per_s
                    for a, b in pairs
                    if a.steady_msg_per_s and b.steady_msg_per_s
                ],
                run_ratios=[a.msg_per_s / b.msg_per_s for a, b in pairs],
                met=(ratio if steady is None else steady) >= TARGET_RATIO,
            )
        )
    return found


def _k(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render_table(result: Mapping[str, Any]) -> str:
    """Render the figures as plain text for the terminal."""
    rows = [
        f"{'configuration':<38} {'mode':<9} {'runs':>4} {'msg/s med':>9} {'min':>7} {'max':>7} "
        f"{'points/s':>9} {'steady':>7} {'µs/rd':>6} {'alerts':>6}"
    ]
    for s in result["summary"]:
        label = Config(s["qos"], s["readings"], s["flush_interval_ms"]).label
        rule_us = "" if s["rule_us_per_reading"] is None else f"{s['rule_us_per_reading']:.1f}"
        alerts_shown = "" if s["median_alerts"] is None else f"{s['median_alerts']:.0f}"
        rows.append(
            f"{label:<38} {s['mode']:<9} {s['runs']:>4} {_k(s['median_msg_per_s']):>9} "
            f"{_k(s['min_msg_per_s']):>7} {_k(s['max_msg_per_s']):>7} "
            f"{_k(s['median_points_per_s']):>9} {_k(s['median_steady_msg_per_s']):>7} "
            f"{rule_us:>6} {alerts_shown:>6}"
        )
    rows.append("")
    for r in result["ratios"]:
        label = Config(r["qos"], r["readings"], r["flush_interval_ms"]).label
        steady = "-" if r["steady_ratio"] is None else f"{r['steady_ratio']:.0%}"
        spread = ", ".join(f"{x:.0%}" for x in r["steady_run_ratios"])
        verdict = "MET" if r["met"] else "MISSED"
        rows.append(
            f"{verdict:<7} rules on / off, {label}: steady {steady} (per run {spread}), "
            f"whole drain {r['ratio']:.0%}; target ≥ {TARGET_RATIO:.0%}"
        )
    for lat in result["latency"]:
        verdict = "MET" if lat["p99_ms"] < TARGET_P99_MS else "MISSED"
        rows.append(
            f"{verdict:<7} alert latency, flush {lat['flush_interval_ms']} ms, 1 probe in "
            f"{lat['probe_every']} at {lat['achieved_msg_per_s']:,.0f} msg/s: "
            f"{lat['alerts']} alerts, "
            f"p50 {lat['p50_ms']:.1f}, p90 {lat['p90_ms']:.1f}, p99 {lat['p99_ms']:.1f}, "
            f"max {lat['max_ms']:.1f} ms (target p99 < {TARGET_P99_MS:g} ms); "
            f"cpu {lat['cpu_share']}"
        )
    return "\n".join(rows)


def render_markdown(result: Mapping[str, Any]) -> str:
    """Render the results as the markdown summary that goes into docs/benchmarks.md."""
    m = result["machine"]
    matched = result["rule_set"]
    lines = [
        f"Run {result['started_at']} with `{result['command']}` ({result['wall_s']:.0f} s wall).",
        "",
        f"Machine: {m['nproc']} cores, {m['cpu_model']}, Linux {m['kernel']}, load average "
        f"{', '.join(f'{x:.2f}' for x in m['load_average_at_start'])} at start. "
        f"{m['mosquitto']}; influxd {m['influxd']}; Python {m['python']}.",
        "",
        "Settings: "
        + ", ".join(f"`{k}={v}`" for k, v in result["ingest_settings"].items())
        + "; broker "
        + ", ".join(f"`{k} {v}`" for k, v in result["broker_settings"].items())
        + ".",
        "",
        "Code (SHA-256, 12 digits): "
        + ", ".join(f"`{name}` {digest}" for name, digest in result["code"].items())
        + "."
        + (
            f" **Changed during the run: {', '.join(result['code_changed_during_run'])}.**"
            if result["code_changed_during_run"]
            else ""
        ),
        "",
        f"Fleet: {result['args']['assets']} assets, one sample every "
        f"{result['args']['interval_s']:g} s each, {HISTORY.total_seconds() / 60:.0f} min of "
        f"history in influxd. Rules: {matched['rules']} ({matched['enabled']} enabled); a "
        f"reading matches {matched['mean_per_reading']:.2f} on average ("
        + ", ".join(f"{kind} {n:.2f}" for kind, n in matched["mean_by_kind"].items())
        + ").",
        "",
        "| configuration | mode | runs | msg/s median (min-max) | points/s median "
        "| steady msg/s median (min-max) | rules µs/reading | readings/batch | alerts/drain "
        "| CPU (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in result["summary"]:
        label = Config(s["qos"], s["readings"], s["flush_interval_ms"]).label
        cpu = ", ".join(
            f"{k} {v:.2f}" for k, v in s["median_cpu_share"].items() if v >= 0.01 or k == "steal"
        )
        rule_us = "" if s["rule_us_per_reading"] is None else f"{s['rule_us_per_reading']:.1f}"
        per_batch = (
            "" if s["rule_readings_per_batch"] is None else f"{s['rule_readings_per_batch']:.0f}"
        )
        alerts_shown = "" if s["median_alerts"] is None else f"{s['median_alerts']:.0f}"
        lines.append(
            f"| {label} | {s['mode']} | {s['runs']} "
            f"| {_k(s['median_msg_per_s'])} ({_k(s['min_msg_per_s'])}-{_k(s['max_msg_per_s'])}) "
            f"| {_k(s['median_points_per_s'])} "
            f"| {_k(s['median_steady_msg_per_s'])} "
            f"({_k(s['min_steady_msg_per_s'])}-{_k(s['max_steady_msg_per_s'])}) "
            f"| {rule_us} | {per_batch} | {alerts_shown} | {cpu} |"
        )
    lines += [
        "",
        "| configuration | rules on ÷ off, steady (medians) | per run | whole drain (medians) "
        "| per run | target ≥ 80 % (steady) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["ratios"]:
        label = Config(r["qos"], r["readings"], r["flush_interval_ms"]).label
        steady = "-" if r["steady_ratio"] is None else f"{r['steady_ratio']:.0%}"
        steady_spread = ", ".join(f"{x:.0%}" for x in r["steady_run_ratios"])
        spread = ", ".join(f"{x:.0%}" for x in r["run_ratios"])
        lines.append(
            f"| {label} | {steady} | {steady_spread} | {r['ratio']:.0%} | {spread} "
            f"| {'yes' if r['met'] else '**no**'} |"
        )
    if result["latency"]:
        lines += [
            "",
            "| flush interval | probes | rate target (achieved) msg/s | messages | probe alerts "
            "| p50 | p90 | p99 | max | target p99 < 50 ms | lag p50 / p99 (all messages) "
            "| write p50 / p99 | evaluate + record p50 / p99 per batch "
            "| CPU while publishing (cores) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for lat in result["latency"]:
            met = "yes" if lat["p99_ms"] < TARGET_P99_MS else "**no**"
            lines.append(
                f"| {lat['flush_interval_ms']} ms | 1 in {lat['probe_every']} "
                f"| {_k(lat['target_msg_per_s'])} ({_k(lat['achieved_msg_per_s'])}) "
                f"| {_k(lat['messages'])} | {lat['alerts']} "
                f"| {lat['p50_ms']:.1f} ms | {lat['p90_ms']:.1f} ms | {lat['p99_ms']:.1f} ms "
                f"| {lat['max_ms']:.1f} ms | {met} "
                f"| {lat['lag_p50_ms']:.1f} / {lat['lag_p99_ms']:.1f} ms "
                f"| {lat['write_p50_ms']:.1f} / {lat['write_p99_ms']:.1f} ms "
                f"| {lat['rule_p50_ms']:.1f} / {lat['rule_p99_ms']:.1f} ms "
                f"| {', '.join(f'{k} {v:.2f}' for k, v in lat['cpu_share'].items())} |"
            )
    return "\n".join(lines) + "\n"


# --- main ---------------------------------------------------------------------------------


def code_digests() -> dict[str, str]:
    """Return a short SHA-256 of each measured source file, to tell which code was measured.

    Each ingest child imports the code when it starts, so a file changed during a run
    changes what later children measure: main() compares the digests at start and end.
    """
    digests = {}
    for name in MEASURED_SOURCES:
        path = REPO_ROOT / name
        digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else ""
    return digests


def _raise_on_signal(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so the finally blocks tear every child down.
    raise SystemExit(128 + signum)


def build_parser() -> argparse.ArgumentParser:
    """Return the benchmark's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest_rules", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="repetitions per throughput configuration (0, with --rate: latency only)",
    )
    parser.add_argument(
        "--messages", type=int, default=40_000, help="backlog of 1-reading messages"
    )
    parser.add_argument(
        "--messages-batch", type=int, default=20_000, help="backlog of 10-reading messages"
    )
    parser.add_argument("--qos", type=int, nargs="+", choices=(0, 1), default=[1])
    parser.add_argument("--readings", type=int, nargs="+", default=[1, 10])
    parser.add_argument(
        "--flush-interval-ms",
        type=int,
        nargs="+",
        default=[IngestSettings().flush_interval_ms, 5],
        help="writer flush intervals: the first for every throughput configuration and the "
        "latency rate; each other one re-measures QoS 1, 1 reading/msg throughput; latency "
        "is measured at each",
    )
    parser.add_argument("--assets", type=int, default=1_000, help="fleet size")
    parser.add_argument(
        "--interval-s", type=float, default=15.0, help="seconds between an asset's samples"
    )
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="latency msg/s (default: half the median steady rules-on QoS 1, 1 reading rate)",
    )
    parser.add_argument(
        "--probe-every",
        type=int,
        nargs="+",
        default=[50, 1000],
        help="one live message in N crosses a threshold (each N is a latency run per flush "
        "interval)",
    )
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards drain once more per configuration with rules on, and repeat the "
        "first latency run, under py-spy (not counted), and print the hot spots",
    )
    parser.add_argument(
        "--ingest-env",
        action="append",
        default=[],
        metavar="PMK_NAME=VALUE",
        help="extra setting for every ingest child (repeatable), e.g. to try a refresh period",
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="per drain, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    return parser


def configurations(args: argparse.Namespace) -> list[Config]:
    """Return the throughput configurations, the default flush interval's first."""
    default, *others = args.flush_interval_ms
    configs = [Config(qos, readings, default) for qos in args.qos for readings in args.readings]
    if 1 in args.qos and 1 in args.readings:
        configs += [Config(1, 1, flush) for flush in others]
    return configs


def latency_rate(args: argparse.Namespace, summaries: Sequence[Summary]) -> float:
    """Return the latency run's rate: --rate, or half the sustained rules-on rate.

    Sustained is the whole drain, first message to last: the steady part alone overstates
    what a live stream can keep up with (a paced stream costs more per message than a
    backlog, and the steady figures of short drains are noisy).
    """
    if args.rate:
        return float(args.rate)
    default = args.flush_interval_ms[0]
    for s in summaries:
        if (s.mode, s.qos, s.readings, s.flush_interval_ms) == (RULES_ON, 1, 1, default):
            return s.median_msg_per_s / 2
    raise SystemExit("no QoS 1, 1-reading rules-on rate measured: pass --rate")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write bench/results/ingest-rules-<stamp>.*."""
    args = build_parser().parse_args(argv)
    if args.runs < (0 if args.rate else 1):
        raise SystemExit("--runs must be at least 1, or 0 with --rate (latency only)")
    if min(args.messages, args.messages_batch) < 2 * args.assets:
        raise SystemExit("backlogs must hold at least 2 messages per asset")
    if args.assets < 15 or min(args.probe_every) < 2:
        raise SystemExit("--assets must be at least 15 and --probe-every at least 2")
    ingest_env = dict(item.split("=", 1) for item in args.ingest_env)
    if any(not key.startswith("PMK_") for key in ingest_env):
        raise SystemExit("--ingest-env takes PMK_NAME=VALUE")
    signal.signal(signal.SIGTERM, _raise_on_signal)
    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    root = Path(tempfile.mkdtemp(prefix="pmk-bench-rules-"))
    fleet = [fleet_asset(i) for i in range(args.assets)]
    rules = rule_set(args.assets)
    drains: list[Drain] = []
    latencies: list[Latency] = []
    hotspots: list[HotspotReport] = []
    mosquitto, influxd = require_binary("mosquitto"), require_binary("influxd")
    rules_settings = RulesSettings()
    result: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.ingest_rules", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "ingest_settings": {
            **ingest_settings({}),
            "PMK_RULES__TICK_INTERVAL_S": rules_settings.tick_interval_s,
            "PMK_RULES__REFRESH_S": rules_settings.refresh_s,
            **ingest_env,
        },
        "args": vars(args),
        "code": code_digests(),
        "rule_set": matched_rules(rules, fleet),
        "rules": [rule.model_dump(mode="json") for rule in rules],
    }
    print(
        f"{len(rules)} rules; a fleet reading matches "
        f"{result['rule_set']['mean_per_reading']:.2f} on average",
        flush=True,
    )
    with contextlib.ExitStack() as teardown:
        if not args.keep:
            teardown.callback(shutil.rmtree, root, ignore_errors=True)
        broker = BenchBroker(root / "mosquitto", binary=mosquitto)
        teardown.callback(broker.close)
        broker.start()
        influx = InfluxServer(root / "influxd", binary=influxd)
        teardown.callback(influx.close)
        influx.start()
        bench = Bench(root=root, broker=broker, influx=influx, args=args, ingest_env=ingest_env)
        result["broker_settings"] = broker_settings(broker)
        templates = Templates(root / "rules-on.db", root / "rules-off.db")
        build_database(templates.rules_on, fleet, rules)
        build_database(templates.rules_off, fleet, [])
        for config in configurations(args):
            for run in range(args.runs):
                for item in throughput_run(bench, templates, config, run):
                    drains.append(item)
                    steady = _k(item.steady_msg_per_s)
                    print(
                        f"{config.label}, {item.mode:<9} run {run}: {item.msg_per_s:,.0f} msg/s "
                        f"(steady {steady}), {item.points_per_s:,.0f} points/s, "
                        f"{item.seconds:.2f} s, {sum(item.alerts.values())} alerts, "
                        f"cpu {item.cpu_share}",
                        flush=True,
                    )
        summaries = summarize(drains)
        if not args.no_latency:
            rate = latency_rate(args, summaries)
            probes = int(rate * args.latency_seconds) // min(args.probe_every) + 1
            template = root / "latency.db"
            build_database(template, fleet + [probe_asset(i) for i in range(probes)], rules)
            for probe_every in args.probe_every:
                for flush in args.flush_interval_ms:
                    latencies.append(latency_run(bench, template, flush, rate, probe_every))
                    print(f"latency: {latencies[-1]}", flush=True)
            if args.profile:
                probe_every, flush = min(args.probe_every), args.flush_interval_ms[0]
                output = root / "profiles" / f"latency-f{flush}-p{probe_every}.txt"
                latency_run(bench, template, flush, rate, probe_every, profile=output)
                hotspots.append(
                    summarize_raw_profile(
                        output, f"live rules on, flush {flush} ms, 1 probe in {probe_every}"
                    )
                )
        if args.profile:
            for config in configurations(args):
                output = root / "profiles" / f"q{config.qos}r{config.readings}.txt"
                throughput_run(bench, templates, config, 0, profile=output)
                hotspots.append(summarize_raw_profile(output, f"rules on, {config.label}"))
    changed = [name for name, digest in code_digests().items() if result["code"][name] != digest]
    if changed:
        print(f"WARNING: changed during the run, so runs measured different code: {changed}")
    result.update(
        code_changed_during_run=changed,
        wall_s=time.monotonic() - started,
        drains=[asdict(d) for d in drains],
        summary=[asdict(s) for s in summaries],
        ratios=[asdict(r) for r in ratios(summaries, drains)],
        latency=[asdict(lat) for lat in latencies],
        hotspots=[asdict(h) for h in hotspots],
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    json_path = RESULTS_DIR / f"ingest-rules-{stamp}.json"
    md_path = RESULTS_DIR / f"ingest-rules-{stamp}.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(render_markdown(result))
    print()
    print(render_table(result))
    for report in hotspots:
        print()
        print(report.render())
    print(f"\nwall {result['wall_s']:.0f} s")
    print(f"wrote {json_path.relative_to(REPO_ROOT)} and {md_path.relative_to(REPO_ROOT)}")
    if args.keep:
        print(f"kept {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
