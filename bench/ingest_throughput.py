"""Benchmark ingest: real mosquitto -> `pmkeeper ingest` -> real influxd, against a bare subscriber.

Run `python -m bench.ingest_throughput` (what `make bench` does). Everything runs on
127.0.0.1 in a temporary directory: a private mosquitto, a private influxd with the
/api/v2/write proxy in front, and the children below. All of it is torn down at the end.

Throughput uses the backlog-drain method, which keeps the publisher's CPU out of the
figure on a small machine: each consumer first registers a persistent session and
leaves, the publisher loads N messages into the broker, then each consumer in turn
reconnects and drains its copy. The bare paho subscriber (bench/bare_subscriber.py) and
`pmkeeper ingest` drain the same backlog, one after the other, so their ratio comes from
the same run. `pmkeeper ingest` is measured with 1 process and with `--workers N`
(N processes on one shared subscription, each with its own session and half the
backlog); the bare subscriber is always one process. Every point pmkeeper reports
written is counted back in influxd.

Latency is a live, paced run at half the sustained QoS 1 rate of each worker count; it is
read from the ingest's `pmkeeper_ingest_lag_seconds` histogram (publish time stamped in
each reading to durable write), summed over the workers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench.broker import BenchBroker
from bench.histogram import cumulative_buckets, quantile, subtract
from bench.hotspots import HotspotReport, summarize_raw_profile
from bench.ingest_child import (
    REPO_ROOT,
    IngestChild,
    clean_environment,
    cpu_seconds,
    machine_cpu,
    peak_rss_kib,
    sleep_until,
    sum_samples,
)
from core.settings import IngestSettings, MqttSettings
from tests.support.influx import InfluxServer

POLL_INTERVAL_S = 0.05
ASSETS = 100
LATENCY_ASSETS = 1000
MEASUREMENT = "telemetry"
METRIC = "temperature_c"
RESULTS_DIR = REPO_ROOT / "bench" / "results"

TARGET_QOS0_MSG_PER_S = 20_000
TARGET_RATIO = 0.60
TARGET_POINTS_PER_S = 100_000

TIMES = "\N{MULTIPLICATION SIGN}"


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to, or data went missing."""


@dataclass(frozen=True)
class Backlog:
    """Messages loaded into the broker for one run, which each consumer drains."""

    qos: int
    readings: int
    run: int
    messages: int
    publish_msg_per_s: float


@dataclass(frozen=True)
class IngestVariant:
    """One way of running `pmkeeper ingest`: a label, a worker count, extra settings."""

    name: str
    workers: int = 1
    env: tuple[tuple[str, str], ...] = ()
    # The MQTT protocol its sessions use, for ending them (5 or 311).
    protocol: int = 5


@dataclass
class Drain:
    """One consumer draining one backlog."""

    consumer: str
    qos: int
    readings: int
    run: int
    messages: int
    points: int
    seconds: float
    msg_per_s: float
    points_per_s: float
    peak_rss_kib: int
    publish_msg_per_s: float
    # CPU used by each process during the drain, as a share of one core.
    cpu_share: dict[str, float] = field(default_factory=dict)
    # Processes of the consumer that did the work (workers; the supervisor is extra).
    workers: int = 1
    # Per worker: messages it took, and when it showed its first and its last progress,
    # in seconds from the first progress of any worker.
    per_worker: list[dict[str, float]] = field(default_factory=list)
    # Peak RSS (KiB) of each process of the consumer (supervisor and workers).
    peak_rss_by_process: dict[str, int] = field(default_factory=dict)


@dataclass
class Summary:
    """Medians (and extremes) of the runs of one consumer and configuration."""

    consumer: str
    qos: int
    readings: int
    runs: int
    median_msg_per_s: float
    min_msg_per_s: float
    max_msg_per_s: float
    median_points_per_s: float
    min_points_per_s: float
    max_points_per_s: float
    peak_rss_kib: int
    # pmkeeper's median over the bare (MQTT v5, one process) subscriber's median.
    ratio_to_bare: float | None
    median_cpu_share: dict[str, float]
    workers: int = 1
    # Share of the messages the busiest worker took, median over the runs (with workers).
    busiest_worker_share: float | None = None


@dataclass
class Latency:
    """Publish-to-stored latency of a paced live run, from the ingest's lag histogram."""

    consumer: str
    workers: int
    qos: int
    readings: int
    tcp_nodelay: bool
    target_msg_per_s: float
    achieved_msg_per_s: float
    messages: int
    p50_ms: float
    p50_bucket_ms: tuple[float, float]
    p99_ms: float
    p99_bucket_ms: tuple[float, float]
    write_p50_ms: float
    write_p99_ms: float
    peak_rss_kib: int
    per_worker_messages: list[int] = field(default_factory=list)
    publishers: int = 1


@dataclass
class Target:
    """One of the issue's targets and whether one consumer's medians meet it."""

    name: str
    consumer: str
    required: float
    measured: float | None
    met: bool | None
    note: str = ""


@dataclass
class Bench:
    """What every run shares: the services, the temp dir, the options."""

    root: Path
    broker: BenchBroker
    influx: InfluxServer
    args: argparse.Namespace
    ingest_env: dict[str, str]
    profile_dir: Path | None = None
    hotspots: list[HotspotReport] = field(default_factory=list)


# --- children -------------------------------------------------------------------------


def _bench_module(module: str, *arguments: str, timeout_s: float) -> str:
    """Run `python -m bench.<module>` to completion and return its stdout; raise on failure."""
    try:
        completed = subprocess.run(
            [sys.executable, "-m", f"bench.{module}", *arguments],
            cwd=REPO_ROOT,
            env=clean_environment(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"bench.{module} {' '.join(arguments)} took over {timeout_s}s") from exc
    if completed.returncode != 0:
        raise BenchError(
            f"bench.{module} {' '.join(arguments)} exited {completed.returncode}:\n"
            f"{completed.stdout}\n{completed.stderr}"
        )
    return completed.stdout


def _last_json(output: str) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"no JSON line in {output!r}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def publish(
    bench: Bench,
    *,
    broker: BenchBroker,
    messages: int,
    readings: int,
    qos: int,
    assets: int,
    rate: float = 0.0,
    base_ts_ms: int = 0,
    processes: int = 1,
) -> dict[str, Any]:
    """Run bench/publisher.py (in parallel on disjoint assets); return rate and duration."""
    expected_s = messages / rate if rate else messages / 2_000
    timeout_s = 60 + 3 * expected_s
    children = []
    for index in range(processes):
        arguments = [
            "--port",
            str(broker.port),
            "--messages",
            str(messages // processes + (index < messages % processes)),
            "--readings",
            str(readings),
            "--qos",
            str(qos),
            "--assets",
            str(assets // processes),
            "--asset-offset",
            str(index * (assets // processes)),
            "--rate",
            str(rate / processes),
        ]
        if base_ts_ms:
            arguments += ["--base-ts", str(base_ts_ms)]
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.publisher", *arguments],
                cwd=REPO_ROOT,
                env=clean_environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    reports = []
    try:
        for child in children:
            stdout, stderr = child.communicate(timeout=timeout_s)
            if child.returncode != 0:
                raise BenchError(f"publisher exited {child.returncode}:\n{stdout}\n{stderr}")
            reports.append(_last_json(stdout))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    seconds = max(float(report["seconds"]) for report in reports)
    published = sum(int(report["published"]) for report in reports)
    if published != messages:
        raise BenchError(f"published {published} of {messages} messages")
    return {"published": published, "seconds": seconds, "rate": published / seconds}


def bare(
    broker: BenchBroker,
    qos: int,
    client_id: str,
    *,
    expect: int = 0,
    protocol: int = 5,
    timeout_s: float = 30,
) -> dict[str, Any]:
    """Register (expect=0) or drain with bench/bare_subscriber.py; return its JSON report."""
    arguments = [
        "--port",
        str(broker.port),
        "--qos",
        str(qos),
        "--client-id",
        client_id,
        "--protocol",
        str(protocol),
        "--receive-maximum",
        str(MqttSettings().receive_maximum),
    ]
    if not expect:
        _bench_module("bare_subscriber", *arguments, "--register", timeout_s=timeout_s)
        return {}
    arguments += ["--expect", str(expect), "--timeout", str(timeout_s)]
    return _last_json(_bench_module("bare_subscriber", *arguments, timeout_s=timeout_s + 30))


def forget_session(broker: BenchBroker, client_id: str, protocol: int = 5) -> None:
    """End a client's persistent session, so later backlogs are not queued for it too.

    A forgotten MQTT 3.1.1 session would otherwise keep its subscription forever and the
    broker would pile every later backlog up for it (and rewrite them all on each autosave).
    """
    _bench_module(
        "bare_subscriber",
        "--port",
        str(broker.port),
        "--client-id",
        client_id,
        "--protocol",
        str(protocol),
        "--forget",
        timeout_s=30,
    )


def ingest_variants(
    args: argparse.Namespace, readings: int, *, profile: bool
) -> list[IngestVariant]:
    """Return the ways `pmkeeper ingest` is run on a backlog of `readings`-reading messages."""
    if profile:
        # py-spy follows one process: profile the single-process ingest only.
        return [IngestVariant("pmkeeper")]
    variants = [
        IngestVariant("pmkeeper" if workers == 1 else f"pmkeeper {TIMES}{workers} workers", workers)
        for workers in args.workers
    ]
    if args.ingest_v311 and readings == 1:
        variants.append(
            IngestVariant(
                "pmkeeper MQTT 3.1.1", 1, (("PMK_MQTT__PROTOCOL", "3.1.1"),), protocol=311
            )
        )
    return variants


def ingest_child(
    bench: Bench,
    broker: BenchBroker,
    qos: int,
    client_id: str,
    bucket: str,
    *,
    variant: IngestVariant,
) -> IngestChild:
    """Return (not start) a `pmkeeper ingest` wired to this bench's broker and bucket."""
    workdir = bench.root / "ingest" / client_id
    influx = bench.influx.influx_settings(bucket)
    env = {
        "PMK_MQTT__URL": broker.url,
        "PMK_MQTT__CLIENT_ID": client_id,
        "PMK_MQTT__QOS": str(qos),
        "PMK_INFLUX__URL": str(influx.url),
        "PMK_INFLUX__TOKEN": influx.token.get_secret_value(),
        "PMK_INFLUX__ORG": influx.org,
        "PMK_INFLUX__BUCKET": bucket,
        "PMK_DATABASE__URL": f"sqlite:///{workdir / 'pmkeeper.db'}",
        "PMK_INGEST__UNKNOWN_ASSETS": "auto_register",
        **bench.ingest_env,
        **dict(variant.env),
    }
    if variant.workers > 1:
        # A group of its own per run, so no other consumer's session is ever in it.
        env["PMK_MQTT__SHARED_GROUP"] = f"g-{client_id}"
    return IngestChild(env, workdir, "ingest", workers=variant.workers)


def session_ids(client_id: str, workers: int) -> list[str]:
    """Return the MQTT client ids an ingest child's sessions use (one per worker)."""
    return [client_id] if workers == 1 else [f"{client_id}-{i}" for i in range(workers)]


@contextlib.contextmanager
def running(child: IngestChild) -> Iterator[IngestChild]:
    """Start the child and make sure it is gone afterwards, whatever happens."""
    child.start()
    try:
        yield child
    finally:
        child.kill()


@contextlib.contextmanager
def fresh_bucket(bench: Bench, label: str) -> Iterator[str]:
    """Create an Influx database for one run and drop it afterwards."""
    bucket = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    bench.influx.create_database(bucket)
    try:
        yield bucket
    finally:
        if bench.influx.running:
            bench.influx.drop_database(bucket)


def stored_points(bench: Bench, bucket: str) -> int:
    """Count the points of the benchmark metric in a bucket, straight from influxd."""
    # Constants only: no outside input reaches this query.
    query = f'SELECT count("{METRIC}") FROM "{MEASUREMENT}"'  # noqa: S608
    rows = bench.influx.query(query, db=bucket)
    return int(rows[0]["count"]) if rows else 0


def service_pids(bench: Bench, broker: BenchBroker) -> dict[str, int]:
    """Return {name: pid} of the broker, influxd and the write proxy, for CPU accounting."""
    # InfluxServer keeps its processes private; the bench only reads their CPU time.
    pids = {"mosquitto": broker.pid}
    for name, attribute in (("influxd", "_influxd"), ("influx-proxy", "_proxy")):
        process = getattr(bench.influx, attribute, None)
        if isinstance(process, subprocess.Popen):
            pids[name] = process.pid
    return pids


# --- one drain run ----------------------------------------------------------------------


def drain_run(bench: Bench, qos: int, readings: int, run: int, *, profile: bool) -> list[Drain]:
    """Load one backlog into every consumer's session and drain it with each in turn."""
    messages = bench.args.messages if readings == 1 else bench.args.messages_batch
    tag = f"q{qos}r{readings}n{run}{'p' if profile else ''}-{uuid.uuid4().hex[:6]}"
    # Bare paho subscribers, by name and MQTT protocol; none while profiling.
    bares: dict[str, int] = {}
    if not profile:
        bares["bare"] = 5
        if bench.args.bare_v311 and readings == 1:
            bares["bare-v311"] = 311
    variants = {v.name: v for v in ingest_variants(bench.args, readings, profile=profile)}
    results: list[Drain] = []
    with contextlib.ExitStack() as stack:
        # One Influx database per ingest, so each one's points are counted on their own.
        ingests: dict[str, tuple[IngestChild, str, list[str]]] = {}
        for index, variant in enumerate(variants.values()):
            bucket = stack.enter_context(fresh_bucket(bench, f"q{qos}r{readings}i{index}"))
            client_id = f"bench-ingest{index}-{tag}"
            child = ingest_child(bench, bench.broker, qos, client_id, bucket, variant=variant)
            ingests[variant.name] = (child, bucket, session_ids(client_id, variant.workers))
        try:
            # Register every persistent session, then leave, so the broker queues the backlog.
            for name, protocol in bares.items():
                bare(bench.broker, qos, f"bench-{name}-{tag}", protocol=protocol)
            register_ingests([child for child, _, _ in ingests.values()])
            # Event timestamps end a second before now: inside the validation window, unique.
            span_ms = -(-messages // ASSETS) * readings
            base_ts_ms = time.time_ns() // 1_000_000 - span_ms - 1_000
            published = publish(
                bench,
                broker=bench.broker,
                messages=messages,
                readings=readings,
                qos=qos,
                assets=ASSETS,
                base_ts_ms=base_ts_ms,
                # Loading is not measured: use both cores to keep the bench short.
                processes=2,
            )
            backlog = Backlog(qos, readings, run, messages, float(published["rate"]))
            # Alternate who drains first, so slow drift of a noisy machine hits all alike.
            order = [*bares, *variants]
            if run % 2:
                order.reverse()
            for consumer in order:
                if consumer in variants:
                    child, bucket, _ = ingests[consumer]
                    drain = _drain_ingest(
                        bench, backlog, child, bucket, variants[consumer], profile=profile
                    )
                else:
                    drain = _drain_bare(bench, backlog, consumer, bares[consumer], tag)
                results.append(drain)
        finally:
            for child, _, _ in ingests.values():
                child.kill()
            for variant in variants.values():
                for client_id in ingests[variant.name][2]:
                    forget_session(bench.broker, client_id, variant.protocol)
            for name, protocol in bares.items():
                forget_session(bench.broker, f"bench-{name}-{tag}", protocol)
    return results


def register_ingests(children: Sequence[IngestChild]) -> None:
    """Start every ingest at once, wait until all workers subscribed, then stop them all.

    A graceful stop keeps each worker's persistent session and subscription, so the
    broker queues the coming backlog for it (with workers: spread over their sessions).
    """
    try:
        for child in children:
            if child.workers > 1:
                child.migrate_first()
            child.start()
        for child in children:
            child.wait_subscribed()
        # The gauge goes to 1 as SUBSCRIBE is sent; give the broker time to take it.
        time.sleep(0.5)
        for child in children:
            child.process_pids()  # all workers still there
            if child.terminate() != 0:
                raise BenchError(f"ingest did not stop cleanly:\n{child.log_tail()}")
    finally:
        for child in children:
            child.kill()


def _drain_bare(bench: Bench, backlog: Backlog, name: str, protocol: int, tag: str) -> Drain:
    qos, messages = backlog.qos, backlog.messages
    broker_cpu = cpu_seconds(bench.broker.pid)
    machine_before = machine_cpu()
    report = bare(
        bench.broker,
        qos,
        f"bench-{name}-{tag}",
        expect=messages,
        protocol=protocol,
        timeout_s=bench.args.timeout,
    )
    machine_used = machine_cpu() - machine_before
    broker_cpu = cpu_seconds(bench.broker.pid) - broker_cpu
    received = int(report["received"])
    if received != messages:
        raise BenchError(f"bare subscriber received {received} of {messages} messages")
    seconds = float(report["drain_s"])
    rate = (received - 1) / seconds
    return Drain(
        consumer=name,
        qos=qos,
        readings=backlog.readings,
        run=backlog.run,
        messages=messages,
        points=messages * backlog.readings,
        seconds=seconds,
        msg_per_s=rate,
        points_per_s=rate * backlog.readings,
        peak_rss_kib=int(report["peak_rss_kib"]),
        publish_msg_per_s=backlog.publish_msg_per_s,
        # The subscriber's own CPU over its drain; the broker's and the whole machine's
        # over the child's life, which also holds its start-up.
        cpu_share={
            "bare": round(float(report["cpu_s"]) / seconds, 3),
            "mosquitto": round(broker_cpu / seconds, 3),
            "machine": round(machine_used.busy_s / seconds, 3),
            "steal": round(machine_used.steal_s / seconds, 3),
        },
    )


@dataclass
class _WorkerProgress:
    """What the polls saw of one worker: its count, first and last progress."""

    received: float = 0.0
    first_at: float | None = None
    last_change_at: float | None = None

    def update(self, at: float, received: float) -> None:
        """Take one poll's count (a missed scrape reads as 0 and is ignored)."""
        if received > self.received:
            if self.first_at is None:
                self.first_at = at
            self.last_change_at = at
            self.received = received


def _drain_ingest(
    bench: Bench,
    backlog: Backlog,
    ingest: IngestChild,
    bucket: str,
    variant: IngestVariant,
    *,
    profile: bool,
) -> Drain:
    qos, readings, messages = backlog.qos, backlog.readings, backlog.messages
    points = messages * readings
    deadline = time.monotonic() + bench.args.timeout
    first: tuple[float, float] | None = None
    last: tuple[float, float] | None = None
    cpu_at_first: dict[str, float] = {}
    machine_at_first = machine_cpu()
    profiler: subprocess.Popen[bytes] | None = None
    profile_path: Path | None = None
    progress = [_WorkerProgress() for _ in range(variant.workers)]
    pids: dict[str, int] = {}
    samples: dict[str, float] = {}
    received = 0.0
    with running(ingest):
        try:
            tick = time.perf_counter()
            while True:
                ingest.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{variant.name} drained {last[1] if last else 0} of {messages} "
                        f"messages in {bench.args.timeout}s:\n{ingest.log_tail()}"
                    )
                before = time.perf_counter()
                # A worker that does not answer yet has taken nothing yet ({}).
                scrapes = ingest.worker_metrics_or_empty()
                # The counters were read somewhere inside the requests; take the midpoint.
                at = (before + time.perf_counter()) / 2
                samples = sum_samples(scrapes)
                for worker, scrape in zip(progress, scrapes, strict=True):
                    worker.update(at, scrape.get("pmkeeper_messages_received_total", 0.0))
                received = samples.get("pmkeeper_messages_received_total", 0.0)
                if received > 0 and first is None:
                    first = (at, received)
                    # Every worker exists by now (the supervisor starts them together).
                    ingest.pin_workers()
                    pids = {
                        **ingest.process_pids(),
                        **service_pids(bench, bench.broker),
                        "bench": os.getpid(),
                    }
                    cpu_at_first = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    machine_at_first = machine_cpu()
                    if profile:
                        # From the first progress on: start-up and imports are not the drain.
                        profiler, profile_path = _start_profiler(bench, ingest.pid, qos, readings)
                if received >= messages:
                    last = (at, received)
                    cpu_used = {
                        name: cpu_seconds(pid) - cpu_at_first[name] for name, pid in pids.items()
                    }
                    machine_used = machine_cpu() - machine_at_first
                    # Whatever else ran on the machine meanwhile (a shared box is noisy).
                    cpu_used["others"] = max(0.0, machine_used.busy_s - sum(cpu_used.values()))
                    cpu_used["steal"] = machine_used.steal_s
                    break
                last = (at, received)
                tick += POLL_INTERVAL_S
                sleep_until(tick)
            rss_by_process = ingest.peak_rss_by_process()
        finally:
            if profiler is not None:
                _stop_profiler(profiler)
        written = samples.get("pmkeeper_points_written_total", 0.0)
        deadletters = samples.get("pmkeeper_deadletters_total", 0.0)
        if ingest.terminate() != 0:
            raise BenchError(f"ingest did not stop cleanly:\n{ingest.log_tail()}")
    assert first is not None
    assert last is not None
    if received != messages or written != points or deadletters:
        raise BenchError(
            f"{variant.name} counted {received:.0f}/{messages} messages, {written:.0f}/{points} "
            f"points and {deadletters:.0f} dead letters:\n{ingest.log_tail()}"
        )
    stored = stored_points(bench, bucket)
    if stored != points:
        raise BenchError(f"influxd holds {stored} of {points} points in {bucket}")
    seconds = last[0] - first[0]
    if first[1] >= messages or seconds <= 0:
        raise BenchError(f"the drain finished within one poll; raise --messages ({messages})")
    rate = (last[1] - first[1]) / seconds
    if profile_path is not None:
        bench.hotspots.append(
            summarize_raw_profile(
                profile_path, f"pmkeeper ingest, QoS {qos}, {readings} reading(s)/message"
            )
        )
    cpu_share = {name: round(used / seconds, 3) for name, used in cpu_used.items()}
    if variant.workers > 1:
        own = [name for name in pids if name == "supervisor" or name.startswith("worker")]
        cpu_share = {"pmkeeper": round(sum(cpu_used[n] for n in own) / seconds, 3), **cpu_share}
    return Drain(
        consumer=variant.name,
        qos=qos,
        readings=readings,
        run=backlog.run,
        messages=messages,
        points=points,
        seconds=seconds,
        msg_per_s=rate,
        points_per_s=rate * readings,
        peak_rss_kib=sum(rss_by_process.values()),
        publish_msg_per_s=backlog.publish_msg_per_s,
        cpu_share=cpu_share,
        workers=variant.workers,
        per_worker=[
            {
                "messages": worker.received,
                "first_s": round((worker.first_at or at) - first[0], 3),
                "last_s": round((worker.last_change_at or at) - first[0], 3),
            }
            for worker in progress
        ],
        peak_rss_by_process=rss_by_process,
    )


def _start_profiler(
    bench: Bench, pid: int, qos: int, readings: int
) -> tuple[subprocess.Popen[bytes], Path]:
    assert bench.profile_dir is not None
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    output = bench.profile_dir / f"ingest-q{qos}-r{readings}.txt"
    process = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--threads",
            # Only samples of the thread holding the GIL: the drain is bound by one core of
            # Python, so that is where the time goes; waiting threads are left out.
            "--gil",
            "--rate",
            "200",
            "--duration",
            str(int(bench.args.timeout)),
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(bench.profile_dir / "py-spy.log").open("ab"),
        stdin=subprocess.DEVNULL,
    )
    return process, output


def _stop_profiler(process: subprocess.Popen[bytes]) -> None:
    # py-spy writes its output when interrupted, as on Ctrl-C.
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- latency --------------------------------------------------------------------------


def latency_run(
    bench: Bench,
    broker: BenchBroker,
    qos: int,
    readings: int,
    rate: float,
    *,
    variant: IngestVariant,
) -> Latency:
    """Publish at `rate` for a while to a live ingest; read p50/p99 from its lag histogram."""
    messages = max(1, int(rate * bench.args.latency_seconds))
    publishers = bench.args.latency_publishers
    tag = (
        f"lat-w{variant.workers}q{qos}r{readings}{'' if broker.tcp_nodelay else 'nagle'}"
        f"-{uuid.uuid4().hex[:6]}"
    )
    client_id = f"bench-ingest-{tag}"
    points = (LATENCY_ASSETS + messages) * readings
    with fresh_bucket(bench, "latency") as bucket:
        ingest = ingest_child(bench, broker, qos, client_id, bucket, variant=variant)
        if variant.workers > 1:
            ingest.migrate_first()
        try:
            with running(ingest):
                ingest.wait_subscribed()
                # Warm up: one message per asset, so auto-registration is not in the figure.
                publish(
                    bench,
                    broker=broker,
                    messages=LATENCY_ASSETS,
                    readings=readings,
                    qos=qos,
                    assets=LATENCY_ASSETS,
                )
                wait_received(bench, ingest, LATENCY_ASSETS)
                before = ingest.worker_metrics()
                published = publish(
                    bench,
                    broker=broker,
                    messages=messages,
                    readings=readings,
                    qos=qos,
                    assets=LATENCY_ASSETS,
                    rate=rate,
                    processes=publishers,
                )
                wait_received(bench, ingest, LATENCY_ASSETS + messages)
                after_each = ingest.worker_metrics()
                rss = ingest.peak_rss_kib()
                if ingest.terminate() != 0:
                    raise BenchError(f"ingest did not stop cleanly:\n{ingest.log_tail()}")
        finally:
            for session in session_ids(client_id, variant.workers):
                forget_session(broker, session, variant.protocol)
        after = sum_samples(after_each)
        written = after.get("pmkeeper_points_written_total", 0.0)
        if written != points or after.get("pmkeeper_deadletters_total", 0.0):
            raise BenchError(f"latency run wrote {written:.0f} of {points} points")
        stored = stored_points(bench, bucket)
        if stored != points:
            raise BenchError(f"influxd holds {stored} of {points} points in {bucket}")
    received = "pmkeeper_messages_received_total"
    per_worker = [
        int(a.get(received, 0.0) - b.get(received, 0.0))
        for a, b in zip(after_each, before, strict=True)
    ]
    lag = subtract(
        cumulative_buckets(after, "pmkeeper_ingest_lag_seconds"),
        cumulative_buckets(sum_samples(before), "pmkeeper_ingest_lag_seconds"),
    )
    write = subtract(
        cumulative_buckets(after, "pmkeeper_write_latency_seconds"),
        cumulative_buckets(sum_samples(before), "pmkeeper_write_latency_seconds"),
    )
    p50, p99 = quantile(0.5, lag), quantile(0.99, lag)
    return Latency(
        consumer=variant.name,
        workers=variant.workers,
        qos=qos,
        readings=readings,
        tcp_nodelay=broker.tcp_nodelay,
        target_msg_per_s=rate,
        achieved_msg_per_s=float(published["rate"]),
        messages=messages,
        p50_ms=p50.value * 1000,
        p50_bucket_ms=(p50.lower * 1000, p50.upper * 1000),
        p99_ms=p99.value * 1000,
        p99_bucket_ms=(p99.lower * 1000, p99.upper * 1000),
        write_p50_ms=quantile(0.5, write).value * 1000,
        write_p99_ms=quantile(0.99, write).value * 1000,
        peak_rss_kib=rss,
        per_worker_messages=per_worker,
        publishers=publishers,
    )


def wait_received(bench: Bench, ingest: IngestChild, messages: int) -> dict[str, float]:
    """Poll until the ingest has taken `messages` messages; return its last scrape."""
    deadline = time.monotonic() + bench.args.timeout
    while time.monotonic() < deadline:
        ingest.check_alive()
        samples = ingest.metrics()
        if samples.get("pmkeeper_messages_received_total", 0.0) >= messages:
            return samples
        time.sleep(POLL_INTERVAL_S)
    raise BenchError(f"pmkeeper did not take {messages} messages in time:\n{ingest.log_tail()}")


# --- figures ----------------------------------------------------------------------------


def _consumer_rank(name: str) -> tuple[int, str]:
    """Order the table: bare, bare-v311, pmkeeper, pmkeeper with workers, other variants."""
    if name == "bare":
        return (0, name)
    if name.startswith("bare"):
        return (1, name)
    if name == "pmkeeper":
        return (2, name)
    if "workers" in name:
        return (3, name)
    return (4, name)


def summarize(drains: Sequence[Drain]) -> list[Summary]:
    """Group drains by consumer and configuration; ratios are pmkeeper's median over bare's."""
    groups: dict[tuple[str, int, int], list[Drain]] = {}
    for drain in drains:
        groups.setdefault((drain.consumer, drain.qos, drain.readings), []).append(drain)
    medians = {key: statistics.median(d.msg_per_s for d in group) for key, group in groups.items()}
    summaries = []
    for (consumer, qos, readings), group in sorted(
        groups.items(), key=lambda item: (item[0][1], item[0][2], _consumer_rank(item[0][0]))
    ):
        bare_median = medians.get(("bare", qos, readings))
        ratio = (
            medians[(consumer, qos, readings)] / bare_median
            if consumer.startswith("pmkeeper") and bare_median
            else None
        )
        names = list(dict.fromkeys(name for d in group for name in d.cpu_share))
        workers = max(d.workers for d in group)
        busiest = None
        if workers > 1:
            busiest = statistics.median(
                max(w["messages"] for w in d.per_worker) / d.messages for d in group
            )
        summaries.append(
            Summary(
                consumer=consumer,
                qos=qos,
                readings=readings,
                runs=len(group),
                median_msg_per_s=medians[(consumer, qos, readings)],
                min_msg_per_s=min(d.msg_per_s for d in group),
                max_msg_per_s=max(d.msg_per_s for d in group),
                median_points_per_s=statistics.median(d.points_per_s for d in group),
                min_points_per_s=min(d.points_per_s for d in group),
                max_points_per_s=max(d.points_per_s for d in group),
                peak_rss_kib=max(d.peak_rss_kib for d in group),
                ratio_to_bare=ratio,
                median_cpu_share={
                    name: round(statistics.median(d.cpu_share.get(name, 0.0) for d in group), 2)
                    for name in names
                },
                workers=workers,
                busiest_worker_share=busiest,
            )
        )
    return summaries


def judge(summaries: Sequence[Summary]) -> list[Target]:
    """Compare each pmkeeper consumer's medians with the issue's targets."""
    by_key = {(s.consumer, s.qos, s.readings): s for s in summaries}
    consumers = list(dict.fromkeys(s.consumer for s in summaries if s.consumer.startswith("pmk")))
    targets: list[Target] = []
    for consumer in consumers:

        def add(name: str, required: float, value: float | None, consumer: str = consumer) -> None:
            met = None if value is None else value >= required
            targets.append(Target(name, consumer, required, value, met))

        qos0 = by_key.get((consumer, 0, 1))
        add(
            "QoS 0, 1 reading/message: messages/s",
            TARGET_QOS0_MSG_PER_S,
            qos0.median_msg_per_s if qos0 else None,
        )
        for qos in (0, 1):
            summary = by_key.get((consumer, qos, 1))
            add(
                f"QoS {qos}, 1 reading/message: ratio to the bare subscriber",
                TARGET_RATIO,
                summary.ratio_to_bare if summary else None,
            )
        for qos in (1, 0):
            summary = by_key.get((consumer, qos, 10))
            add(
                f"QoS {qos}, 10 readings/message: points/s",
                TARGET_POINTS_PER_S,
                summary.median_points_per_s if summary else None,
            )
    return targets


def machine() -> dict[str, Any]:
    """Describe the machine and the versions measured."""
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break

    def version(command: list[str]) -> str:
        try:
            completed = subprocess.run(
                command, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        return (completed.stdout + completed.stderr).strip().splitlines()[0]

    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": version([_binary("mosquitto"), "-h"]),
        "influxd": version([_binary("influxd"), "version"]),
        "paho_mqtt": importlib.metadata.version("paho-mqtt"),
        "influxdb_client": importlib.metadata.version("influxdb-client"),
        "prometheus_client": importlib.metadata.version("prometheus-client"),
        "load_average_at_start": os.getloadavg(),
    }


def ingest_settings(overrides: Mapping[str, str]) -> dict[str, Any]:
    """Return the ingest and broker settings that shape throughput, overrides applied."""
    defaults = IngestSettings()
    mqtt = MqttSettings()
    effective: dict[str, Any] = {
        "PMK_MQTT__RECEIVE_MAXIMUM": mqtt.receive_maximum,
        "PMK_INGEST__BATCH_POINTS": defaults.batch_points,
        "PMK_INGEST__FLUSH_INTERVAL_MS": defaults.flush_interval_ms,
        "PMK_INGEST__QUEUE_SIZE": defaults.queue_size,
    }
    effective.update(overrides)
    return effective


def broker_settings(broker: BenchBroker) -> dict[str, str]:
    """Return the broker config lines that matter here, as written to mosquitto.conf."""
    wanted = (
        "max_inflight_messages",
        "max_queued_messages",
        "set_tcp_nodelay",
        "queue_qos0_messages",
        "autosave_interval",
        "persistence",
    )
    settings: dict[str, str] = {}
    for line in broker.conf_path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key in wanted:
            settings[key] = value
    return settings


def _k(value: float) -> str:
    return f"{value:,.0f}"


def _shown(value: float, required: float) -> str:
    return f"{value:.0%}" if required < 1 else _k(value)


def render_markdown(result: Mapping[str, Any]) -> str:
    """Render the results as the markdown summary that goes into docs/benchmarks.md."""
    lines = []
    m = result["machine"]
    lines += [
        f"Run {result['started_at']} with `{result['command']}` ({result['wall_s']:.0f} s wall).",
        "",
        f"Machine: {m['nproc']} cores, {m['cpu_model']}, Linux {m['kernel']}, load average "
        f"{', '.join(f'{x:.2f}' for x in m['load_average_at_start'])} at start. "
        f"{m['mosquitto']}; influxd {m['influxd']}; Python {m['python']}, "
        f"paho-mqtt {m['paho_mqtt']}, influxdb-client {m['influxdb_client']}.",
        "",
        "Settings: "
        + ", ".join(f"`{k}={v}`" for k, v in result["ingest_settings"].items())
        + "; broker "
        + ", ".join(f"`{k} {v}`" for k, v in result["broker_settings"].items())
        + ".",
        "",
        f"The bare subscriber is ONE process. The ratio of a `{TIMES}N workers` row compares N "
        "worker processes (plus their supervisor) with that one process.",
        "",
        "| consumer | QoS | readings/msg | runs | msg/s median (min-max) "
        "| points/s median (min-max) | ratio to bare (1 process) | peak RSS "
        "| CPU during drain (cores) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in result["summary"]:
        ratio = "" if s["ratio_to_bare"] is None else f"{s['ratio_to_bare']:.0%}"
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in s["median_cpu_share"].items())
        lines.append(
            f"| {s['consumer']} | {s['qos']} | {s['readings']} | {s['runs']} "
            f"| {_k(s['median_msg_per_s'])} ({_k(s['min_msg_per_s'])}-{_k(s['max_msg_per_s'])}) "
            f"| {_k(s['median_points_per_s'])} "
            f"({_k(s['min_points_per_s'])}-{_k(s['max_points_per_s'])}) "
            f"| {ratio} | {s['peak_rss_kib'] / 1024:.0f} MiB | {cpu} |"
        )
    consumers = list(dict.fromkeys(t["consumer"] for t in result["targets"]))
    lines += [
        "",
        "| target | required | " + " | ".join(consumers) + " |",
        "|---|---|" + "---|" * len(consumers),
    ]
    for name in dict.fromkeys(t["name"] for t in result["targets"]):
        cells = []
        required = next(t["required"] for t in result["targets"] if t["name"] == name)
        for consumer in consumers:
            target = next(
                (t for t in result["targets"] if t["name"] == name and t["consumer"] == consumer),
                None,
            )
            if target is None or target["measured"] is None:
                cells.append("not measured")
                continue
            measured = target["measured"]
            verdict = "yes" if target["met"] else f"**no** ({measured / required:.0%} of target)"
            cells.append(f"{_shown(measured, required)}: {verdict}")
        shown_required = f"≥ {_shown(required, required)}"
        lines.append(f"| {name} | {shown_required} | " + " | ".join(cells) + " |")
    if result["latency"]:
        lines += [
            "",
            "| latency run | rate target (achieved) msg/s | messages | p50 ms | p99 ms "
            "| write p50 / p99 ms | messages per worker |",
            "|---|---|---|---|---|---|---|",
        ]
        for lat in result["latency"]:
            nagle = "set_tcp_nodelay true" if lat["tcp_nodelay"] else "set_tcp_nodelay false"
            p50_lo, p50_hi = lat["p50_bucket_ms"]
            p99_lo, p99_hi = lat["p99_bucket_ms"]
            split = " / ".join(_k(n) for n in lat["per_worker_messages"])
            lines.append(
                f"| {lat['consumer']}, QoS {lat['qos']}, {lat['readings']} reading(s), {nagle}, "
                f"{lat['publishers']} publisher(s) "
                f"| {_k(lat['target_msg_per_s'])} ({_k(lat['achieved_msg_per_s'])}) "
                f"| {_k(lat['messages'])} "
                f"| {lat['p50_ms']:.1f} (bucket {p50_lo:g}-{p50_hi:g}) "
                f"| {lat['p99_ms']:.1f} (bucket {p99_lo:g}-{p99_hi:g}) "
                f"| {lat['write_p50_ms']:.1f} / {lat['write_p99_ms']:.1f} | {split} |"
            )
    return "\n".join(lines) + "\n"


def render_table(result: Mapping[str, Any]) -> str:
    """Render a plain-text table for the terminal."""
    rows = [
        f"{'consumer':<22} {'QoS':>3} {'rd/msg':>6} {'runs':>4} {'msg/s med':>10} "
        f"{'min':>9} {'max':>9} {'points/s':>10} {'vs bare':>7} {'RSS MiB':>7}"
    ]
    for s in result["summary"]:
        ratio = "" if s["ratio_to_bare"] is None else f"{s['ratio_to_bare']:.0%}"
        rows.append(
            f"{s['consumer']:<22} {s['qos']:>3} {s['readings']:>6} {s['runs']:>4} "
            f"{_k(s['median_msg_per_s']):>10} {_k(s['min_msg_per_s']):>9} "
            f"{_k(s['max_msg_per_s']):>9} {_k(s['median_points_per_s']):>10} {ratio:>7} "
            f"{s['peak_rss_kib'] / 1024:>7.0f}"
        )
    rows.append("(vs bare: against the bare subscriber, which is one process)")
    rows.append("")
    for t in result["targets"]:
        met = {True: "MET", False: "MISSED", None: "not measured"}[t["met"]]
        rows.append(
            f"{met:<12} {t['consumer']}: {t['name']} "
            f"(required {t['required']:g}, got {t['measured']})"
        )
    for lat in result["latency"]:
        rows.append(
            f"latency {lat['consumer']} QoS {lat['qos']} nodelay={lat['tcp_nodelay']} at "
            f"{lat['achieved_msg_per_s']:.0f} msg/s: p50 {lat['p50_ms']:.1f} ms, "
            f"p99 {lat['p99_ms']:.1f} ms"
        )
    return "\n".join(rows)


def run_latencies(bench: Bench, summaries: Sequence[Summary], mosquitto: str) -> list[Latency]:
    """Run the latency runs: for each worker count at half its QoS 1 single-reading rate.

    One worker: QoS 1, QoS 0, and QoS 1 against a broker with Nagle on. More workers:
    QoS 1 only.
    """
    args = bench.args
    latencies: list[Latency] = []
    for workers in args.workers:
        variant = next(v for v in ingest_variants(args, 1, profile=False) if v.workers == workers)
        rate = args.latency_rate or next(
            (
                s.median_msg_per_s / 2
                for s in summaries
                if s.consumer == variant.name and s.qos == 1 and s.readings == 1
            ),
            0.0,
        )
        if not rate:
            print(f"latency skipped for {variant.name}: no QoS 1 single-reading rate")
            continue
        qos_list = sorted(args.qos, reverse=True) if workers == 1 else [1]
        for qos in qos_list:
            if qos not in args.qos:
                continue
            latencies.append(latency_run(bench, bench.broker, qos, 1, rate, variant=variant))
            print(f"latency: {latencies[-1]}", flush=True)
        if workers == 1 and not args.no_nagle_comparison and 1 in args.qos:
            nagle = BenchBroker(bench.root / "mosquitto-nagle", binary=mosquitto, tcp_nodelay=False)
            with contextlib.closing(nagle):
                nagle.start()
                latencies.append(latency_run(bench, nagle, 1, 1, rate, variant=variant))
            print(f"latency: {latencies[-1]}", flush=True)
    return latencies


# --- main -------------------------------------------------------------------------------


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/usr/local/bin")
    if path is None:
        raise SystemExit(f"{name} is not installed (apt-get install -y mosquitto influxdb)")
    return path


def _raise_on_signal(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so the finally blocks tear every child down.
    raise SystemExit(128 + signum)


def build_parser() -> argparse.ArgumentParser:
    """Return the benchmark's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest_throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions per configuration")
    parser.add_argument(
        "--messages", type=int, default=200_000, help="backlog of 1-reading messages"
    )
    parser.add_argument(
        "--messages-batch", type=int, default=100_000, help="backlog of 10-reading messages"
    )
    parser.add_argument("--qos", type=int, nargs="+", choices=(0, 1), default=[0, 1])
    parser.add_argument("--readings", type=int, nargs="+", default=[1, 10])
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="measure `pmkeeper ingest --workers N` for each N (1 = the plain process)",
    )
    parser.add_argument(
        "--no-ingest-v311",
        dest="ingest_v311",
        action="store_false",
        help="skip pmkeeper (1 worker) with PMK_MQTT__PROTOCOL=3.1.1 (1-reading backlogs)",
    )
    parser.add_argument(
        "--no-bare-v311",
        dest="bare_v311",
        action="store_false",
        help="skip the reference bare subscriber on MQTT 3.1.1 (1-reading backlogs)",
    )
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="msg/s (default: half the QoS 1 rate of each worker count)",
    )
    parser.add_argument(
        "--latency-publishers",
        type=int,
        default=1,
        help="paced publisher processes in latency runs",
    )
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument(
        "--no-nagle-comparison",
        action="store_true",
        help="skip the QoS 1 latency run on a broker with set_tcp_nodelay false",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the matrix, drain once more per configuration under py-spy "
        "(single-process ingest only; not counted in the figures) and print the hot spots",
    )
    parser.add_argument(
        "--ingest-env",
        action="append",
        default=[],
        metavar="PMK_NAME=VALUE",
        help="extra setting for the ingest child (repeatable), e.g. to try a batch size",
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="per drain, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write bench/results/<timestamp>.{json,md}."""
    args = build_parser().parse_args(argv)
    ingest_env = dict(item.split("=", 1) for item in args.ingest_env)
    if any(not key.startswith("PMK_") for key in ingest_env):
        raise SystemExit("--ingest-env takes PMK_NAME=VALUE")
    if args.runs < 1 or args.messages < 1_000 or args.messages_batch < 1_000:
        raise SystemExit("--runs must be at least 1 and backlogs at least 1000 messages")
    if any(not 1 <= w <= 64 for w in args.workers):
        raise SystemExit("--workers takes counts between 1 and 64")
    args.workers = sorted(set(args.workers))
    signal.signal(signal.SIGTERM, _raise_on_signal)
    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    root = Path(tempfile.mkdtemp(prefix="pmk-bench-"))
    drains: list[Drain] = []
    latencies: list[Latency] = []
    hotspots: list[HotspotReport] = []
    mosquitto, influxd = _binary("mosquitto"), _binary("influxd")
    result: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.ingest_throughput", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "ingest_settings": ingest_settings(ingest_env),
        "args": vars(args),
    }
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
        for qos in args.qos:
            for readings in args.readings:
                for run in range(args.runs):
                    for drain in drain_run(bench, qos, readings, run, profile=False):
                        drains.append(drain)
                        split = ""
                        if drain.per_worker and drain.workers > 1:
                            split = " split " + "/".join(
                                f"{w['messages']:.0f}" for w in drain.per_worker
                            )
                        print(
                            f"{drain.consumer:<22} QoS {qos} readings {readings} run {run}: "
                            f"{drain.msg_per_s:,.0f} msg/s, {drain.points_per_s:,.0f} points/s "
                            f"({drain.seconds:.2f} s; published at "
                            f"{drain.publish_msg_per_s:,.0f} msg/s; cpu {drain.cpu_share})"
                            f"{split}",
                            flush=True,
                        )
        summaries = summarize(drains)
        if not args.no_latency:
            latencies += run_latencies(bench, summaries, mosquitto)
        if args.profile:
            bench.profile_dir = root / "profiles"
            bench.profile_dir.mkdir()
            for qos in args.qos:
                for readings in args.readings:
                    drain_run(bench, qos, readings, 0, profile=True)
            hotspots = bench.hotspots
        result["broker_peak_rss_kib"] = peak_rss_kib(broker.pid)
    result.update(
        wall_s=time.monotonic() - started,
        drains=[asdict(d) for d in drains],
        summary=[asdict(s) for s in summaries],
        targets=[asdict(t) for t in judge(summaries)],
        latency=[asdict(lat) for lat in latencies],
        hotspots=[asdict(h) for h in hotspots],
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    json_path = RESULTS_DIR / f"{stamp}.json"
    md_path = RESULTS_DIR / f"{stamp}.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    markdown = render_markdown(result)
    md_path.write_text(markdown)
    print()
    print(render_table(result))
    for report in hotspots:
        print()
        print(report.render())
    print(f"\nwrote {json_path.relative_to(REPO_ROOT)} and {md_path.relative_to(REPO_ROOT)}")
    if args.keep:
        print(f"kept {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
