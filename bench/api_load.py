"""Load-test the work-order list endpoint on PostgreSQL, alone and next to a live ingest.

Run `python -m bench.api_load` (`make bench-api`). It needs PostgreSQL on 127.0.0.1:5432
(user postgres, trust auth; `--pg-dsn` to change), and mosquitto and influxd for the run
with ingest. Everything else it starts itself, on free loopback ports, and removes at the
end, on error or Ctrl-C too.

1. A fresh database (`pmk_bench_<random>`, dropped at the end), migrated, with 1,000
   registered assets over 10 sites, the 40 rules of bench/ingest_rules.py, 100,000 work
   orders spread over kinds, priorities, statuses and two years of creation times (old
   orders mostly closed, recent ones open), one resolved alert per predictive order, and
   a viewer token. Seeded with SQLAlchemy Core executemany, not through the API.
2. For every measured run, a fresh `python -m pmkeeper api` child on that database (no
   PMK_ variable of this process leaks in), ready once /readyz answers 200.
3. An asyncio + httpx load generator in this process, `--concurrency` keep-alive
   connections, `GET /api/v1/work-orders?limit=50`: first pages, pages followed through
   `next_cursor` (up to 5 deep) and lists filtered by status, priority, site or asset.
   - closed loop: every connection sends its next request as soon as the last answered,
     for the ceiling;
   - paced (open loop): request i is due at start + i / rate, whichever connection is
     free takes it, and its latency runs from the time it was due, so time spent waiting
     for a free connection counts (no coordinated omission).
   A warm-up is not counted. Any answer but 200, and any transport error, is an error.
4. The paced run again while `pmkeeper ingest` (rules on, the same PostgreSQL database,
   a private mosquitto and influxd) takes a live QoS 1 stream of one reading per message
   at `--ingest-rate` from a raw-socket publisher in a process of its own.
5. `--configs reserve`: closed loop at `--concurrency`, `POST /api/v1/reservations` of 1 to
   3 units of one of 40 parts (1,000,000 units received each at one location, so a 409
   `insufficient_stock` is an error) for one of 1,000 accepted or scheduled work orders,
   with a technician token (bench/api_reserve.py). Only 201 counts as a success. After
   each run, per part, the held reservations must add up to `stock.reserved` and the
   ledger to `stock.on_hand`.

CPU is each process's user + system time over the measured window, in cores; `postgres`
is every postgres process on the machine (exited backends included, through the
postmaster's children's time), `others` the machine's busy time minus all of
the measured processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import hashlib
import json
import multiprocessing
import os
import random
import re
import secrets
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import URL, Engine, insert, make_url, select, text

from bench import api_reserve
from bench.api_reserve import Reserver, ReserveTargets
from bench.broker import BenchBroker
from bench.histogram import cumulative_buckets, quantile, subtract
from bench.hotspots import HotspotReport, summarize_raw_profile
from bench.ingest_child import (
    REPO_ROOT,
    IngestChild,
    MachineCpu,
    clean_environment,
    cpu_seconds,
    machine_cpu,
)
from bench.ingest_rules import (
    HISTORY,
    Timeline,
    exact_quantile,
    fleet_asset,
    fleet_id,
    matched_rules,
    preload_history,
    publish_warmup,
    rule_set,
    start_profiler,
    stop_profiler,
    temperature,
)
from bench.ingest_rules import SITES as RULE_SITES
from bench.ingest_throughput import (
    METRIC,
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
    running,
    service_pids,
    wait_received,
)
from bench.publisher import RawPacedPublisher
from core.assets import Asset
from core.auth import Role
from core.priority import Priority
from core.workorders import WorkOrderKind, WorkOrderStatus
from storage.db import create_engine_for, migrate
from storage.repositories import SqlAssetRepository, SqlRuleRepository, SqlTokenRepository
from storage.tables import alerts, work_orders
from tests.support.binaries import free_port, require_binary
from tests.support.influx import InfluxServer

TARGET_RATE = 300.0
TARGET_P99_MS = 50.0
LIST_PATH = "/api/v1/work-orders"
DEFAULT_PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
# The first three are the sites bench/ingest_rules.py's site rules select.
SITES = (*RULE_SITES, "plant-west", "harbour", "airport", "hospital", "campus", "mall", "depot")
SEED = 20261123
INSERT_CHUNK = 5_000
# How long a paced run may overrun its window before the slots not yet sent are given up.
GRACE_S = 10.0
BASELINE_S = 2.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REQUEST_TIMEOUT_S = 10.0
# The ingest publisher starts this long before the API run, so the stream is steady.
INGEST_LEAD_S = 3.0

DASH = "\N{EN DASH}"


@dataclass(frozen=True)
class Config:
    """One measured configuration: closed loop, or paced at `rate`, with or without ingest."""

    rate: float | None  # None: closed loop
    ingest_rate: float = 0.0  # msg/s of the live ingest; 0: no ingest
    reserve: bool = False  # POST /reservations instead of listing work orders

    @property
    def label(self) -> str:
        """Return e.g. 'paced 300 req/s + ingest 6,000 msg/s'."""
        if self.reserve:
            return "reserve, closed loop (max)"
        if self.rate is None:
            return "closed loop (max)"
        label = f"paced {self.rate:g} req/s"
        return f"{label} + ingest {self.ingest_rate:,.0f} msg/s" if self.ingest_rate else label

    @property
    def slug(self) -> str:
        """Return a short name for directories."""
        if self.reserve:
            return "reserve"
        if self.rate is None:
            return "closed"
        return f"paced{self.rate:g}" + (f"-ingest{self.ingest_rate:g}" if self.ingest_rate else "")


# The code this bench measures; their digests go into the results (see code_digests()).
MEASURED_SOURCES = (
    "api/routes/work_orders.py",
    "api/schemas.py",
    "api/dependencies.py",
    "api/app.py",
    "storage/alerting.py",
    "storage/repositories.py",
    "storage/db.py",
    "storage/tables.py",
    "core/workorders.py",
    "pmkeeper/container.py",
    "api/routes/inventory.py",
    "api/inventory_schemas.py",
    "storage/inventory.py",
)


# --- the database ------------------------------------------------------------------------


def sqlalchemy_url(dsn: str, database: str) -> str:
    """Return a psycopg 3 SQLAlchemy URL for `database` on the server of libpq `dsn`."""
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    port = params.pop("port", None)
    params.pop("dbname", None)
    url = URL.create(
        "postgresql+psycopg",
        username=params.pop("user", None),
        password=params.pop("password", None),
        host=params.pop("host", None),
        port=int(port) if port else None,
        database=database,
        query=params,
    )
    return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def bench_database(dsn: str) -> Iterator[str]:
    """Create a database of its own on the server; yield its URL; drop it afterwards."""
    name = f"pmk_bench_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        raise SystemExit(f"PostgreSQL is not reachable at {dsn!r} (--pg-dsn): {exc}") from exc
    try:
        yield sqlalchemy_url(dsn, name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            # FORCE ends whatever session a killed child left open.
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def pg_sessions(dsn: str, database_url: str) -> int:
    """Return how many sessions (connections) the bench database has had so far."""
    database = make_url(database_url).database
    with psycopg.connect(dsn, autocommit=True) as admin:
        # Make the backends' pending statistics visible first (PostgreSQL 15).
        admin.execute("SELECT pg_stat_clear_snapshot()")
        row = admin.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def fleet(count: int) -> list[Asset]:
    """Return the registered assets: bench/ingest_rules.py's fleet, spread over 10 sites."""
    return [
        fleet_asset(index).model_copy(update={"site": SITES[index % len(SITES)]})
        for index in range(count)
    ]


# Status by age: orders older than OPEN_FROM of the span are mostly closed.
_OLD_STATUSES = (
    (WorkOrderStatus.CLOSED, 72),
    (WorkOrderStatus.RESOLVED, 10),
    (WorkOrderStatus.CANCELLED, 8),
    (WorkOrderStatus.REQUESTED, 2),
    (WorkOrderStatus.ACCEPTED, 2),
    (WorkOrderStatus.SCHEDULED, 2),
    (WorkOrderStatus.IN_PROGRESS, 1),
    (WorkOrderStatus.ON_HOLD, 2),
    (WorkOrderStatus.REOPENED, 1),
)
_RECENT_STATUSES = (
    (WorkOrderStatus.REQUESTED, 25),
    (WorkOrderStatus.ACCEPTED, 15),
    (WorkOrderStatus.SCHEDULED, 15),
    (WorkOrderStatus.IN_PROGRESS, 12),
    (WorkOrderStatus.ON_HOLD, 6),
    (WorkOrderStatus.REOPENED, 3),
    (WorkOrderStatus.RESOLVED, 14),
    (WorkOrderStatus.CLOSED, 6),
    (WorkOrderStatus.CANCELLED, 4),
)
OPEN_FROM = 0.95
_KINDS = (
    (WorkOrderKind.PREDICTIVE, 40),
    (WorkOrderKind.PREVENTIVE, 35),
    (WorkOrderKind.CORRECTIVE, 25),
)
_PRIORITIES = (
    (Priority.LOW, 30),
    (Priority.MEDIUM, 40),
    (Priority.HIGH, 22),
    (Priority.CRITICAL, 8),
)
SEED_SPAN = timedelta(days=730)


def _weighted(rng: random.Random, table: Sequence[tuple[Any, int]]) -> Any:
    values, weights = zip(*table, strict=True)
    return rng.choices(values, weights)[0]


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def work_order_row(
    rng: random.Random, asset: Asset, index: int, count: int, end_at: dt.datetime
) -> dict[str, Any]:
    """Return work order `index` of `count`: created in order over SEED_SPAN up to `end_at`."""
    step = SEED_SPAN / count
    created_at = end_at - SEED_SPAN + step * index + step * rng.random() * 0.9
    age = index / count
    status: WorkOrderStatus = _weighted(
        rng, _RECENT_STATUSES if age >= OPEN_FROM else _OLD_STATUSES
    )
    kind: WorkOrderKind = _weighted(rng, _KINDS)
    priority: Priority = _weighted(rng, _PRIORITIES)
    row: dict[str, Any] = {
        "kind": kind.value,
        "status": status.value,
        "priority": priority.value,
        "asset_id": asset.id,
        "rule_id": None,
        "open_key": None,
        "evidence": [],
        "repeat_count": 0,
        "created_at": created_at,
        "updated_at": created_at,
        "resolved_at": None,
        "resolution_note": None,
        "closed_at": None,
        "request": None,
        "completion": None,
        "sign_off": None,
        "held_from": None,
    }
    if kind is WorkOrderKind.PREDICTIVE:
        rule_id = rng.choice(
            (f"{asset.type}-hot", f"{asset.type}-critical", "predictive-trend-30m")
        )
        value = round(85 + rng.random() * 12, 2)
        row |= {
            "rule_id": rule_id,
            "title": f"{rule_id} on {asset.id}",
            "description": f"Rule {rule_id} fired on {asset.name} ({asset.site}).",
            "evidence": [
                {
                    "alert_id": None,
                    "metric": METRIC,
                    "fired_at": _iso(created_at),
                    "value": value,
                    "threshold": 85.0,
                    "predicted_crossing_at": None,
                    "points": [
                        {
                            "ts": _iso(created_at - timedelta(minutes=5 - i)),
                            "value": round(value - 0.4 * (5 - i), 2),
                        }
                        for i in range(5)
                    ],
                }
            ],
        }
    elif kind is WorkOrderKind.PREVENTIVE:
        row |= {
            "title": f"Quarterly inspection of {asset.name}",
            "description": "Check belts, bearings and seals; clean filters; log vibration.",
        }
    else:
        row |= {
            "title": f"Fault reported on {asset.name}",
            "description": "Unit trips intermittently under load.",
            "request": {
                "channel": rng.choice(("phone", "email", "portal", "walk_in")),
                "fault": "Unit trips intermittently under load; noisy bearing.",
                "impact": rng.choice(("none", "degraded", "stopped")),
                "contact_name": "Site operator",
                "contact_phone": "+44 20 7946 0000",
                "contact_email": "operator@example.com",
            },
        }
    if status in {WorkOrderStatus.RESOLVED, WorkOrderStatus.CLOSED}:
        resolved_at = created_at + timedelta(hours=2 + rng.random() * 70)
        row |= {
            "resolved_at": resolved_at,
            "updated_at": resolved_at,
            "resolution_note": "Replaced the worn part and tested under load.",
            "completion": {
                "findings": "Bearing worn; replaced and greased.",
                "failure_code": rng.choice(("BRG-01", "SEAL-02", "ELEC-03", "NONE")),
                "labour_minutes": rng.randrange(15, 480),
                "parts_used": [{"sku": "BRG-6204", "quantity": 2.0}],
                "downtime_minutes": rng.randrange(0, 240),
            },
        }
        if status is WorkOrderStatus.CLOSED:
            closed_at = resolved_at + timedelta(hours=1 + rng.random() * 48)
            row |= {
                "closed_at": closed_at,
                "updated_at": closed_at,
                "sign_off": {"name": "Customer representative", "signed_at": _iso(closed_at)},
            }
    elif status is WorkOrderStatus.ON_HOLD:
        row["held_from"] = rng.choice(("accepted", "in_progress"))
    elif status is WorkOrderStatus.REOPENED:
        row["repeat_count"] = 1
    elif status is not WorkOrderStatus.REQUESTED:
        row["updated_at"] = created_at + timedelta(minutes=rng.randrange(5, 600))
    row["updated_at"] = min(row["updated_at"], end_at)
    return row


@dataclass
class Seed:
    """What the database holds when the runs start."""

    assets: int
    sites: int
    rules: int
    work_orders: int
    alerts: int
    by_kind: dict[str, int]
    by_status: dict[str, int]
    by_priority: dict[str, int]
    seconds: float
    database_mib: float
    server_version: str


def seed_database(url: str, args: argparse.Namespace) -> tuple[Seed, str, ReserveTargets | None]:
    """Migrate and fill the database; return what it holds, a viewer token, and what the
    reservation configuration posts against (None unless it runs)."""
    started = time.perf_counter()
    engine = create_engine_for(url)
    try:
        migrate(engine)
        registered = fleet(args.assets)
        asset_repository = SqlAssetRepository(engine)
        for asset in registered:
            asset_repository.add(asset)
        rules = rule_set(args.assets)
        rule_repository = SqlRuleRepository(engine)
        for rule in rules:
            rule_repository.add(rule)
        rng = random.Random(SEED)
        end_at = dt.datetime.now(dt.UTC) - timedelta(hours=1)
        counts: dict[str, Counter[str]] = {
            "kind": Counter(),
            "status": Counter(),
            "priority": Counter(),
        }
        for first in range(0, args.work_orders, INSERT_CHUNK):
            rows = [
                work_order_row(rng, rng.choice(registered), index, args.work_orders, end_at)
                for index in range(first, min(first + INSERT_CHUNK, args.work_orders))
            ]
            for row in rows:
                for name, counter in counts.items():
                    counter[row[name]] += 1
            with engine.begin() as connection:
                connection.execute(insert(work_orders), rows)
        alert_count = _seed_alerts(engine)
        targets = None
        if "reserve" in args.configs:
            targets = api_reserve.seed_reservations(engine, random.Random(SEED + 1))
        token = SqlTokenRepository(engine).create(
            Role.VIEWER, "bench api_load", dt.datetime.now(dt.UTC)
        )
        with engine.connect() as connection:
            # What a live database has: planner statistics and a visibility map.
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE")
            )
            size = connection.execute(text("SELECT pg_database_size(current_database())"))
            database_bytes = int(size.scalar_one())
            version = str(connection.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()
    seed = Seed(
        assets=len(registered),
        sites=len({asset.site for asset in registered}),
        rules=len(rules),
        work_orders=args.work_orders,
        alerts=alert_count,
        by_kind=dict(counts["kind"].most_common()),
        by_status=dict(counts["status"].most_common()),
        by_priority=dict(counts["priority"].most_common()),
        seconds=time.perf_counter() - started,
        database_mib=database_bytes / 2**20,
        server_version=version,
    )
    return seed, token, targets


def _seed_alerts(engine: Engine) -> int:
    """Give every predictive order the resolved alert that opened it; return how many."""
    query = select(
        work_orders.c.id,
        work_orders.c.rule_id,
        work_orders.c.asset_id,
        work_orders.c.created_at,
        work_orders.c.evidence,
    ).where(work_orders.c.kind == WorkOrderKind.PREDICTIVE.value)
    with engine.connect() as connection:
        orders = connection.execute(query).all()
    rows = []
    for order in orders:
        evidence = order.evidence[0]
        rows.append(
            {
                "rule_id": order.rule_id,
                "asset_id": order.asset_id,
                "metric": METRIC,
                "severity": "critical" if order.rule_id.endswith("-critical") else "warning",
                "status": "resolved",
                "episode": 1,
                "last_episode": 1,
                "fired_at": order.created_at,
                "value": evidence["value"],
                "threshold": evidence["threshold"],
                "predicted_crossing_at": None,
                "evidence": evidence["points"],
                "suppressed": False,
                "flapping": False,
                "fire_count": 1,
                "work_order_id": order.id,
                "recorded_at": order.created_at + timedelta(milliseconds=20),
                "resolved_at": order.created_at + timedelta(hours=1),
                "resolved_by": None,
            }
        )
    for first in range(0, len(rows), INSERT_CHUNK):
        with engine.begin() as connection:
            connection.execute(insert(alerts), rows[first : first + INSERT_CHUNK])
    return len(rows)


# --- the API child -----------------------------------------------------------------------


class ApiChild:
    """One `python -m pmkeeper api` on a free loopback port, leading its own process group."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **clean_environment(),
            "PMK_DATABASE__URL": database_url,
            "PMK_API__HOST": "127.0.0.1",
            "PMK_API__PORT": str(self.port),
            "PMK_DATA_DIR": str(workdir / "data"),
            "PMK_LOG_FORMAT": "json",
        }
        self.workdir = workdir
        self.log_path = workdir / "api.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """Return the running child's pid."""
        if self.process is None:
            raise RuntimeError("API child not started")
        return self.process.pid

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the child and wait until /readyz answers 200."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pmkeeper", "api"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"the API was not ready after {timeout_s}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def check_list(self, token: str, page: int) -> None:
        """Raise unless the first page of work orders holds `page` orders and a cursor."""
        response = httpx.get(
            f"{self.base_url}{LIST_PATH}",
            params={"limit": page},
            headers={"Authorization": f"Bearer {token}"},
            timeout=REQUEST_TIMEOUT_S,
        )
        body = response.json() if response.status_code == 200 else {}
        if len(body.get("items", ())) != page or not body.get("next_cursor"):
            raise BenchError(f"unexpected first page: {response.status_code} {response.text[:500]}")

    def check_alive(self) -> None:
        """Raise with the log's tail if the child has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(f"the API exited with {self.process.returncode}:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM the child, SIGKILL its group if it overstays; return its exit code."""
        process = self.process
        if process is None:
            return None
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout_s)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        return process.returncode

    def log_tail(self, lines: int = 20) -> str:
        """Return the end of the child's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def api_running(database_url: str, workdir: Path) -> Iterator[ApiChild]:
    """Start an API child, and make sure it is gone afterwards, whatever happens."""
    api = ApiChild(database_url, workdir)
    try:
        api.start()
        yield api
    finally:
        code = api.stop()
        if code not in (0, None):
            print(f"note: the API exited with {code} on SIGTERM (see {api.log_path})", flush=True)


# --- CPU accounting ----------------------------------------------------------------------


def postgres_cpu_seconds() -> float:
    """Return the CPU seconds of every postgres process on the machine, exited backends too.

    A backend that exits is reaped by the postmaster, whose cutime + cstime then hold its
    CPU time: short-lived connections (one per request, say) are counted that way.
    """
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat[stat.index("(") + 1 : stat.rindex(")")] != "postgres":
            continue
        fields = stat.rsplit(")", 1)[1].split()
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        total += (utime + stime + cutime + cstime) / CLOCK_TICKS
    return total


class CpuMeter:
    """CPU time of named processes, all postgres processes and the machine over a window."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._before: dict[str, float] = {}
        self._postgres = 0.0
        self._machine = MachineCpu(0.0, 0.0)
        self._at = 0.0
        self.cores: dict[str, float] = {}

    def start(self) -> None:
        """Take the first reading."""
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._postgres = postgres_cpu_seconds()
        self._machine = machine_cpu()
        self._at = time.perf_counter()

    def stop(self) -> dict[str, float]:
        """Take the second reading; return cores used per process, postgres, others, steal."""
        elapsed = time.perf_counter() - self._at
        machine_used = machine_cpu() - self._machine
        used = {name: cpu_seconds(pid) - self._before[name] for name, pid in self.pids.items()}
        used["postgres"] = postgres_cpu_seconds() - self._postgres
        used["others"] = max(0.0, machine_used.busy_s - sum(used.values()))
        used["steal"] = machine_used.steal_s
        used["machine busy"] = machine_used.busy_s
        self.cores = {name: round(seconds / elapsed, 3) for name, seconds in used.items()}
        return self.cores


# --- the load generator ------------------------------------------------------------------

FILTERS = (("all", 40), ("status", 15), ("priority", 15), ("site", 15), ("asset", 15))
# Pages a walk reads: most people look at the first page only.
DEPTHS = ((1, 60), (2, 20), (3, 10), (5, 10))
STATUS_FILTERS = (
    ("requested", 30),
    ("accepted", 15),
    ("scheduled", 15),
    ("in_progress", 15),
    ("on_hold", 10),
    ("resolved", 15),
)
PRIORITY_FILTERS = (("critical", 50), ("high", 50))
_NEXT_CURSOR = re.compile(rb'"next_cursor":(?:"([^"]*)"|null)\}\s*$')


def next_cursor(body: bytes) -> str | None:
    """Return a list page's `next_cursor` (it is the last member of the object)."""
    match = _NEXT_CURSOR.search(body[-200:])
    if match is not None:
        return None if match.group(1) is None else match.group(1).decode()
    found = json.loads(body).get("next_cursor")
    return None if found is None else str(found)


class Browser:
    """One simulated user: opens a list, sometimes filtered, and pages on through cursors."""

    def __init__(self, rng: random.Random, asset_ids: Sequence[str], page: int) -> None:
        self.rng = rng
        self.asset_ids = asset_ids
        self.page = page
        self.filter: dict[str, str] = {}
        self.name = "all"
        self.cursor: str | None = None
        self.pages_left = 0

    def next_request(self) -> tuple[str, dict[str, str]]:
        """Return (kind, query parameters) of the next request."""
        if self.cursor is not None and self.pages_left > 0:
            self.pages_left -= 1
            params = {**self.filter, "limit": str(self.page), "cursor": self.cursor}
            return f"{self.name}, next page", params
        self.name = _weighted(self.rng, FILTERS)
        match self.name:
            case "status":
                self.filter = {"status": _weighted(self.rng, STATUS_FILTERS)}
            case "priority":
                self.filter = {"priority": _weighted(self.rng, PRIORITY_FILTERS)}
            case "site":
                self.filter = {"site": self.rng.choice(SITES)}
            case "asset":
                self.filter = {"asset_id": self.rng.choice(self.asset_ids)}
            case _:
                self.filter = {}
        self.pages_left = int(_weighted(self.rng, DEPTHS)) - 1
        self.cursor = None
        return f"{self.name}, first page", {**self.filter, "limit": str(self.page)}

    def answered(self, status: int, body: bytes) -> None:
        """Take the cursor of the page just read (or end the walk on an error)."""
        self.cursor = next_cursor(body) if status == 200 else None


@dataclass
class LoadRecord:
    """Every measured request of one run, and the window it was measured over."""

    kinds: list[str] = field(default_factory=list)
    scheduled: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    # When every request (warm-up included) was answered 200: the throughput in the window.
    succeeded: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    # Errors outside the window (warm-up, or answered after a closed-loop window).
    warmup_errors: int = 0
    unsent: int = 0
    window_start: float = 0.0
    window_end: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    # The same processes just before, with the API idle.
    idle_cpu: dict[str, float] = field(default_factory=dict)
    # Connections opened to the bench database during the run (warm-up included).
    new_sessions: int = 0


@dataclass(frozen=True)
class LoadPlan:
    """How one run loads the API."""

    base_url: str
    token: str
    concurrency: int
    rate: float | None  # None: closed loop
    warmup_s: float
    duration_s: float
    page: int
    asset_ids: tuple[str, ...]
    seed: str
    reserve: ReserveTargets | None = None  # POST reservations, not GET lists

    @property
    def ok_status(self) -> int:
        """Return the one status that counts as a success."""
        return 201 if self.reserve is not None else 200


async def _post(
    client: httpx.AsyncClient, body: Mapping[str, Any]
) -> tuple[int, bytes, str | None]:
    """POST one reservation; return (status, body, error name); status 0 on a transport error."""
    try:
        response = await client.post(api_reserve.RESERVE_PATH, json=body)
    except httpx.HTTPError as exc:
        return 0, b"", type(exc).__name__
    if response.status_code != 201:
        return (
            response.status_code,
            response.content,
            api_reserve.error_name(response.status_code, response.content),
        )
    return response.status_code, response.content, None


class _ReserveActor:
    """A Reserver behind the interface of a Browser."""

    def __init__(self, reserver: Reserver) -> None:
        self.reserver = reserver

    def next_request(self) -> tuple[str, dict[str, Any]]:
        return self.reserver.next_request()

    def answered(self, status: int, body: bytes) -> None:
        pass


async def _request(
    client: httpx.AsyncClient, params: Mapping[str, str]
) -> tuple[int, bytes, str | None]:
    """GET one list page; return (status, body, error name); status 0 on a transport error."""
    try:
        response = await client.get(LIST_PATH, params=params)
    except httpx.HTTPError as exc:
        return 0, b"", type(exc).__name__
    return response.status_code, response.content, None


async def run_load(plan: LoadPlan, meter: CpuMeter) -> LoadRecord:
    """Load the API as `plan` says; the meter reads CPU over the measured window."""
    record = LoadRecord()
    limits = httpx.Limits(
        max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency
    )
    ok = plan.ok_status
    browsers: list[Any] = [
        Browser(random.Random(f"{plan.seed}-{w}"), plan.asset_ids, plan.page)
        if plan.reserve is None
        else _ReserveActor(Reserver(random.Random(f"{plan.seed}-{w}"), plan.reserve))
        for w in range(plan.concurrency)
    ]
    send = _request if plan.reserve is None else _post
    loop_start = time.perf_counter() + 0.05
    record.window_start = loop_start + plan.warmup_s
    window_end = record.window_start + plan.duration_s
    total = int((plan.warmup_s + plan.duration_s) * plan.rate) if plan.rate else 0
    give_up_at = window_end + GRACE_S
    next_slot = 0

    def keep(
        scheduled: float,
        sent: float,
        done: float,
        kind: str,
        answer: tuple[int, bytes, str | None],
    ) -> None:
        status, body, error = answer
        record.kinds.append(kind)
        record.scheduled.append(scheduled)
        record.sent.append(sent)
        record.done.append(done)
        record.statuses.append(status)
        record.sizes.append(len(body))
        if status != ok:
            record.errors[error or f"HTTP {status}"] += 1

    async def paced(client: httpx.AsyncClient, browser: Browser) -> None:
        nonlocal next_slot
        assert plan.rate is not None
        while next_slot < total:
            slot = next_slot
            next_slot += 1
            scheduled = loop_start + slot / plan.rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif time.perf_counter() > give_up_at:
                # Overloaded far past the window: count what is left, do not send it.
                record.unsent += sum(
                    1
                    for s in range(slot, total)
                    if loop_start + s / plan.rate >= record.window_start
                )
                next_slot = total
                return
            kind, params = browser.next_request()
            sent = time.perf_counter()
            answer = await send(client, params)
            done = time.perf_counter()
            if answer[0] == ok:
                record.succeeded.append(done)
            if scheduled >= record.window_start:
                keep(scheduled, sent, done, kind, answer)
            elif answer[0] != ok:
                record.warmup_errors += 1
            browser.answered(answer[0], answer[1])

    async def closed(client: httpx.AsyncClient, browser: Browser) -> None:
        while (sent := time.perf_counter()) < window_end:
            kind, params = browser.next_request()
            answer = await send(client, params)
            done = time.perf_counter()
            if answer[0] == ok:
                record.succeeded.append(done)
            if sent >= record.window_start and done <= window_end:
                keep(sent, sent, done, kind, answer)
            elif answer[0] != ok:
                record.warmup_errors += 1
            browser.answered(answer[0], answer[1])

    async def metered() -> None:
        await asyncio.sleep(max(0.0, record.window_start - time.perf_counter()))
        meter.start()
        if plan.rate is None:
            await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
            record.cpu = meter.stop()

    async with httpx.AsyncClient(
        base_url=plan.base_url,
        headers={"Authorization": f"Bearer {plan.token}"},
        limits=limits,
        timeout=REQUEST_TIMEOUT_S,
    ) as client:
        worker = paced if plan.rate else closed
        await asyncio.gather(metered(), *(worker(client, browser) for browser in browsers))
    if plan.rate is not None:
        record.cpu = meter.stop()
        record.window_end = max(record.done, default=window_end)
    else:
        record.window_end = window_end
    return record


def measure(plan: LoadPlan, pids: Mapping[str, int], sessions: Callable[[], int]) -> LoadRecord:
    """Run one load; the collector is paused so its pauses are the API's, not the generator's.

    First, the CPU is read for BASELINE_S with the API idle: what the machine does without
    the load (other people's work on a shared machine shows as `others`).
    """
    baseline = CpuMeter({**pids, "load generator": os.getpid()})
    baseline.start()
    time.sleep(BASELINE_S)
    idle = baseline.stop()
    meter = CpuMeter({**pids, "load generator": os.getpid()})
    sessions_before = sessions()
    gc.collect()
    gc.disable()
    try:
        record = asyncio.run(run_load(plan, meter))
    finally:
        gc.enable()
    record.idle_cpu = idle
    record.new_sessions = sessions() - sessions_before
    return record


# --- the live ingest ---------------------------------------------------------------------


def _topic(asset_id: str) -> bytes:
    raw = f"pmk/{asset_id}/telemetry".encode()
    return struct.pack("!H", len(raw)) + raw


def publish_live(
    port: int, rate: float, fleet_size: int, max_s: float, control: Connection
) -> None:
    """Publish healthy fleet readings at `rate` msg/s until told to stop; send the report.

    Runs in a process of its own. Like bench/ingest_rules.py's live stream: raw MQTT 3.1.1
    QoS 1 packets in 0.5 ms ticks, stamped with the publish time, at most one message per
    asset per millisecond, round the fleet.
    """
    publisher = RawPacedPublisher(port, f"bench-api-live-{uuid.uuid4().hex[:8]}", qos=1)
    topics = [_topic(fleet_id(i)) for i in range(fleet_size)]
    started = time.perf_counter()
    sent = 0
    current_ms = in_ms = 0
    while not control.poll() and time.perf_counter() - started < max_s:
        due = int((time.perf_counter() - started) * rate) + 1
        ts_ms = time.time_ns() // 1_000_000
        if ts_ms != current_ms:
            current_ms, in_ms = ts_ms, 0
        due = min(due, sent + fleet_size - in_ms)
        if due <= sent:
            publisher.read_acks()
            time.sleep(0.0005)
            continue
        in_ms += due - sent
        burst = bytearray()
        for message in range(sent, due):
            index = message % fleet_size
            reading = {"ts": ts_ms, "metrics": {METRIC: temperature(index, ts_ms, noisy=False)}}
            burst += publisher.packet(topics[index], json.dumps(reading).encode())
        publisher.send(bytes(burst))
        sent = due
    seconds = time.perf_counter() - started
    deadline = time.monotonic() + 120
    while publisher.acked < sent and time.monotonic() < deadline:
        time.sleep(0.001)
        publisher.read_acks()
    publisher.close()
    control.send({"published": sent, "acked": publisher.acked, "seconds": seconds})


class LivePublisher:
    """publish_live() in a spawned process, stopped through a pipe."""

    def __init__(self, port: int, rate: float, fleet_size: int, max_s: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._control, child_end = context.Pipe()
        self.process = context.Process(
            target=publish_live,
            args=(port, rate, fleet_size, max_s, child_end),
            name="bench-api-publisher",
            daemon=True,
        )
        self.process.start()
        child_end.close()

    @property
    def pid(self) -> int:
        """Return the publisher process's pid."""
        if self.process.pid is None:
            raise RuntimeError("publisher not started")
        return self.process.pid

    def finish(self, timeout_s: float = 150.0) -> dict[str, float]:
        """Tell the publisher to stop; return its report."""
        with contextlib.suppress(OSError):
            self._control.send("stop")
        if not self._control.poll(timeout_s):
            raise BenchError("the live publisher did not report")
        try:
            report: dict[str, float] = self._control.recv()
        except EOFError as exc:
            raise BenchError(f"the live publisher died (exit {self.process.exitcode})") from exc
        self.process.join(10)
        if report["acked"] < report["published"]:
            raise BenchError(f"{report['acked']} of {report['published']} messages acknowledged")
        return {**report, "rate": report["published"] / report["seconds"]}

    def kill(self) -> None:
        """Make sure the process is gone."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)
        self._control.close()


def _wait_flowing(bench: Bench, child: IngestChild, messages: float, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while child.metrics().get("pmkeeper_messages_received_total", 0.0) < messages:
        child.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"the live stream did not reach the ingest:\n{child.log_tail()}")
        time.sleep(0.05)


# --- one run -----------------------------------------------------------------------------


@dataclass
class Context:
    """What every run shares."""

    args: argparse.Namespace
    root: Path
    database_url: str
    pg_dsn: str
    token: str
    asset_ids: tuple[str, ...]
    bench: Bench | None  # mosquitto and influxd, for the runs with ingest
    reserve: ReserveTargets | None = None
    # Reservations answered 201 over every reserve run so far, warm-ups included.
    reserved_201: int = 0

    def sessions(self) -> int:
        """Return how many connections the bench database has had so far."""
        return pg_sessions(self.pg_dsn, self.database_url)


@dataclass
class RunResult:
    """The figures of one run of one configuration."""

    config: str
    run: int
    offered_rate: float | None
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    error_kinds: dict[str, int]
    warmup_errors: int
    unsent: int
    req_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    # From the send to the answer; the latency above runs from when the request was due.
    service_p50_ms: float
    service_p99_ms: float
    # How long due requests waited for a free connection (paced runs).
    wait_p99_ms: float
    wait_max_ms: float
    mean_response_kib: float
    # New PostgreSQL connections per answered request (warm-up included): pool churn.
    new_connections_per_request: float
    cpu_cores: dict[str, float]
    idle_cpu_cores: dict[str, float]
    by_kind: dict[str, dict[str, float]]
    # Per second of the window: [requests, p99 ms, max ms], to see stalls.
    per_second: list[list[float]]
    ingest: dict[str, Any] | None = None
    # Reserve runs: does each part's stock agree with its reservations and its ledger?
    ledger_check: dict[str, Any] | None = None


def _ms(values: Sequence[float], q: float) -> float:
    return exact_quantile(values, q) * 1000 if values else float("nan")


def summarize_record(
    record: LoadRecord, config: str, run: int, plan: LoadPlan, ingest: dict[str, Any] | None
) -> RunResult:
    """Turn one run's samples into its figures."""
    latencies = [d - s for d, s in zip(record.done, record.scheduled, strict=True)]
    service = [d - s for d, s in zip(record.done, record.sent, strict=True)]
    waits = [s - q for s, q in zip(record.sent, record.scheduled, strict=True)]
    errors = sum(1 for status in record.statuses if status != plan.ok_status)
    span = record.window_end - record.window_start
    # Answers per second in the window, whenever they were due: an overloaded paced run
    # spends the start of its window on the warm-up's backlog.
    succeeded = sum(1 for at in record.succeeded if record.window_start <= at <= record.window_end)
    by_kind: dict[str, list[float]] = {}
    for kind, latency in zip(record.kinds, latencies, strict=True):
        by_kind.setdefault(kind, []).append(latency)
    seconds: dict[int, list[float]] = {}
    for scheduled, latency in zip(record.scheduled, latencies, strict=True):
        seconds.setdefault(int(scheduled - record.window_start), []).append(latency)
    return RunResult(
        config=config,
        run=run,
        offered_rate=plan.rate,
        concurrency=plan.concurrency,
        duration_s=plan.duration_s,
        requests=len(latencies),
        errors=errors,
        error_kinds=dict(record.errors),
        warmup_errors=record.warmup_errors,
        unsent=record.unsent,
        req_per_s=succeeded / span,
        p50_ms=_ms(latencies, 0.5),
        p90_ms=_ms(latencies, 0.9),
        p99_ms=_ms(latencies, 0.99),
        max_ms=max(latencies, default=float("nan")) * 1000,
        mean_ms=statistics.fmean(latencies) * 1000 if latencies else float("nan"),
        service_p50_ms=_ms(service, 0.5),
        service_p99_ms=_ms(service, 0.99),
        wait_p99_ms=_ms(waits, 0.99),
        wait_max_ms=max(waits, default=0.0) * 1000,
        mean_response_kib=statistics.fmean(record.sizes) / 1024 if record.sizes else 0.0,
        new_connections_per_request=round(record.new_sessions / max(1, len(record.succeeded)), 3),
        cpu_cores=record.cpu,
        idle_cpu_cores=record.idle_cpu,
        by_kind={
            kind: {
                "requests": len(values),
                "p50_ms": round(_ms(values, 0.5), 2),
                "p99_ms": round(_ms(values, 0.99), 2),
            }
            for kind, values in sorted(by_kind.items())
        },
        per_second=[
            [len(values), round(_ms(values, 0.99), 2), round(max(values) * 1000, 2)]
            for _, values in sorted(seconds.items())
        ],
        ingest=ingest,
    )


def _plan(ctx: Context, api: ApiChild, config: Config, run: int) -> LoadPlan:
    args = ctx.args
    if config.reserve and ctx.reserve is None:
        raise BenchError("the reservation configuration has no seeded parts")
    return LoadPlan(
        base_url=api.base_url,
        token=ctx.reserve.token if config.reserve and ctx.reserve else ctx.token,
        concurrency=args.concurrency,
        rate=config.rate,
        warmup_s=args.warmup,
        duration_s=args.duration,
        page=args.page,
        asset_ids=ctx.asset_ids,
        seed=f"{SEED}-{config.slug}-{run}",
        reserve=ctx.reserve if config.reserve else None,
    )


def api_run(ctx: Context, config: Config, run: int, *, profile: Path | None = None) -> RunResult:
    """Measure one closed-loop or paced run against a fresh API, without ingest."""
    workdir = ctx.root / f"run{run}-{config.slug}"
    with api_running(ctx.database_url, workdir) as api:
        api.check_list(ctx.token, ctx.args.page)
        plan = _plan(ctx, api, config, run)
        pids = {"api": api.pid}
        if ctx.bench is not None:
            pids |= service_pids(ctx.bench, ctx.bench.broker)
        profiler = None if profile is None else start_profiler(api.pid, profile, 600)
        record = measure(plan, pids, ctx.sessions)
        if profiler is not None:
            stop_profiler(profiler)
        api.check_alive()
    result = summarize_record(record, config.label, run, plan, None)
    if plan.reserve is not None:
        ctx.reserved_201 += len(record.succeeded)
        engine = create_engine_for(ctx.database_url)
        try:
            result.ledger_check = api_reserve.ledger_check(engine, plan.reserve)
        finally:
            engine.dispose()
        result.ledger_check["answered_201_so_far"] = ctx.reserved_201
        if result.ledger_check["held_reservations"] != ctx.reserved_201:
            result.ledger_check["agree"] = False
            result.ledger_check["mismatches"].append(
                f"{result.ledger_check['held_reservations']} held, {ctx.reserved_201} answered 201"
            )
    return result


def ingest_run(ctx: Context, config: Config, run: int, *, profile: Path | None = None) -> RunResult:
    """Measure the paced run while a rules-on ingest takes a live stream on the same database."""
    bench = ctx.bench
    if bench is None:
        raise BenchError("no broker and influxd for the run with ingest")
    args = ctx.args
    client_id = f"bench-api-load-{run}-{uuid.uuid4().hex[:6]}"
    variant = IngestVariant(
        "pmkeeper",
        1,
        (("PMK_RULES__ENABLED", "true"), ("PMK_DATABASE__URL", ctx.database_url)),
    )
    with contextlib.ExitStack() as stack:
        bucket = stack.enter_context(fresh_bucket(bench, "api_load"))
        child = ingest_child(bench, bench.broker, 1, client_id, bucket, variant=variant)
        stack.callback(_forget, bench, client_id)
        timeline = Timeline(
            fleet=args.assets,
            messages=args.assets,
            readings=1,
            sample_ms=15_000,
            end_ms=time.time_ns() // 1_000_000 - 1_000,
        )
        history = preload_history(bench, bucket, timeline, HISTORY)
        stack.enter_context(running(child))
        child.wait_subscribed()
        # Every series seen once first: reading the windows back is not in the figure.
        warm = publish_warmup(bench.broker, args.assets, 0)
        wait_received(bench, child, warm)
        api = stack.enter_context(
            api_running(ctx.database_url, ctx.root / f"run{run}-{config.slug}")
        )
        api.check_list(ctx.token, args.page)
        plan = _plan(ctx, api, config, run)
        max_s = INGEST_LEAD_S + plan.warmup_s + plan.duration_s + GRACE_S + 30
        publisher = LivePublisher(bench.broker.port, config.ingest_rate, args.assets, max_s)
        stack.callback(publisher.kill)
        _wait_flowing(bench, child, warm + config.ingest_rate, timeout_s=30)
        time.sleep(max(0.0, INGEST_LEAD_S - 1.0))
        before = child.metrics()
        pids = {
            "api": api.pid,
            "ingest": child.pid,
            "publisher": publisher.pid,
            **service_pids(bench, bench.broker),
        }
        profiler = None if profile is None else start_profiler(api.pid, profile, 600)
        span_started = time.perf_counter()
        record = measure(plan, pids, ctx.sessions)
        span_s = time.perf_counter() - span_started
        if profiler is not None:
            stop_profiler(profiler)
        after = child.metrics()
        api.check_alive()
        published = publisher.finish()
        caught_up_started = time.perf_counter()
        final = wait_received(bench, child, warm + int(published["published"]))
        caught_up_s = time.perf_counter() - caught_up_started
        child.check_alive()
    received = after.get("pmkeeper_messages_received_total", 0.0) - before.get(
        "pmkeeper_messages_received_total", 0.0
    )
    lag = subtract(
        cumulative_buckets(after, "pmkeeper_ingest_lag_seconds"),
        cumulative_buckets(before, "pmkeeper_ingest_lag_seconds"),
    )
    ingest = {
        "target_msg_per_s": config.ingest_rate,
        "published_msg_per_s": round(published["rate"], 1),
        "published": int(published["published"]),
        "received_msg_per_s_during_api_run": round(received / span_s, 1),
        "lag_p50_ms": round(quantile(0.5, lag).value * 1000, 1),
        "lag_p99_ms": round(quantile(0.99, lag).value * 1000, 1),
        "caught_up_after_stop_s": round(caught_up_s, 2),
        "deadletters": final.get("pmkeeper_deadletters_total", 0.0),
        "history_points": history,
    }
    return summarize_record(record, config.label, run, plan, ingest)


def _forget(bench: Bench, client_id: str) -> None:
    # A failed run must still report its own error, not this one.
    with contextlib.suppress(BenchError):
        forget_session(bench.broker, client_id)


# --- figures -----------------------------------------------------------------------------


@dataclass
class Summary:
    """Medians (min, max) over the runs of one configuration."""

    config: str
    runs: int
    offered_rate: float | None
    requests: int
    errors: int
    unsent: int
    req_per_s: list[float]
    p50_ms: list[float]
    p90_ms: list[float]
    p99_ms: list[float]
    max_ms: list[float]
    service_p99_ms: list[float]
    cpu_cores: dict[str, float]
    idle_others: list[float]
    new_connections_per_request: list[float]
    ingest_msg_per_s: list[float] | None
    p99_every_run_ms: list[float]


def _spread(values: Sequence[float]) -> list[float]:
    return [statistics.median(values), min(values), max(values)]


def summarize(results: Sequence[RunResult], configs: Sequence[Config]) -> list[Summary]:
    """Return a Summary per configuration, in `configs` order."""
    summaries = []
    for config in configs:
        runs = [r for r in results if r.config == config.label]
        if not runs:
            continue
        names = sorted({name for r in runs for name in r.cpu_cores})
        ingest_rates = [
            float(r.ingest["received_msg_per_s_during_api_run"]) for r in runs if r.ingest
        ]
        summaries.append(
            Summary(
                config=config.label,
                runs=len(runs),
                offered_rate=runs[0].offered_rate,
                requests=sum(r.requests for r in runs),
                errors=sum(r.errors for r in runs),
                unsent=sum(r.unsent for r in runs),
                req_per_s=_spread([r.req_per_s for r in runs]),
                p50_ms=_spread([r.p50_ms for r in runs]),
                p90_ms=_spread([r.p90_ms for r in runs]),
                p99_ms=_spread([r.p99_ms for r in runs]),
                max_ms=_spread([r.max_ms for r in runs]),
                service_p99_ms=_spread([r.service_p99_ms for r in runs]),
                cpu_cores={
                    name: round(statistics.median(r.cpu_cores.get(name, 0.0) for r in runs), 2)
                    for name in names
                },
                idle_others=_spread([r.idle_cpu_cores.get("others", 0.0) for r in runs]),
                new_connections_per_request=_spread([r.new_connections_per_request for r in runs]),
                ingest_msg_per_s=_spread(ingest_rates) if ingest_rates else None,
                p99_every_run_ms=[round(r.p99_ms, 1) for r in runs],
            )
        )
    return summaries


def _fmt(spread: Sequence[float], digits: int = 1) -> str:
    median, low, high = spread
    return f"{median:,.{digits}f} ({low:,.{digits}f}{DASH}{high:,.{digits}f})"


def _cpu(cores: Mapping[str, float]) -> str:
    order = ("api", "postgres", "load generator", "ingest", "publisher", "mosquitto", "influxd")
    shown = [f"{name} {cores[name]:.2f}" for name in order if cores.get(name, 0.0) >= 0.005]
    shown.append(f"others {cores.get('others', 0.0):.2f}")
    shown.append(f"steal {cores.get('steal', 0.0):.2f}")
    return ", ".join(shown)


def render_table(summaries: Sequence[Summary]) -> str:
    """Return the results as a Markdown table (medians, min to max)."""
    lines = [
        "| configuration | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | CPU (cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.config} | {_fmt(s.req_per_s)} | {_fmt(s.p50_ms)} | {_fmt(s.p90_ms)} "
            f"| {_fmt(s.p99_ms)} | {_fmt(s.max_ms)} | {s.errors} of {s.requests:,}"
            f"{f', {s.unsent:,} due but not sent' if s.unsent else ''} "
            f"| {_cpu(s.cpu_cores)} |"
        )
    return "\n".join(lines)


def render_kinds(results: Sequence[RunResult], config: str) -> str:
    """Return p50/p99 by request kind, all runs of `config` pooled (medians of runs)."""
    runs = [r for r in results if r.config == config]
    kinds = sorted({kind for r in runs for kind in r.by_kind})
    lines = [
        f"by request kind, {config} (median over runs):",
        "| kind | requests | p50 ms | p99 ms |",
    ]
    lines.append("|---|---|---|---|")
    for kind in kinds:
        rows = [r.by_kind[kind] for r in runs if kind in r.by_kind]
        lines.append(
            f"| {kind} | {sum(int(x['requests']) for x in rows):,} "
            f"| {statistics.median(x['p50_ms'] for x in rows):.1f} "
            f"| {statistics.median(x['p99_ms'] for x in rows):.1f} |"
        )
    return "\n".join(lines)


def verdict(summaries: Sequence[Summary]) -> list[str]:
    """Say, per paced configuration, whether p99 < 50 ms at the offered rate."""
    lines = []
    for s in summaries:
        if s.offered_rate is None:
            continue
        met_median = s.p99_ms[0] < TARGET_P99_MS and s.errors == 0 and s.unsent == 0
        every = all(p < TARGET_P99_MS for p in s.p99_every_run_ms)
        achieved = s.req_per_s[0] >= 0.99 * s.offered_rate
        lines.append(
            f"{s.config}: p99 {s.p99_ms[0]:.1f} ms (runs {s.p99_every_run_ms}) at "
            f"{s.req_per_s[0]:.1f} of {s.offered_rate:.0f} req/s, {s.errors} errors, {s.unsent} "
            f"not sent: p99 < {TARGET_P99_MS:.0f} ms "
            f"{'MET' if met_median and achieved else 'MISSED'}"
            f"{'' if every or not met_median else ' by the median only'}"
        )
    return lines


# Where the API process spends its GIL time: the first label whose marker is in a sample's
# stack takes the sample, so the inner steps come before the frames that enclose them.
BREAKDOWN = (
    ("row -> WorkOrder (pydantic model_validate)", ("_order_from_row (",)),
    ("SQL: the page and its alert ids (SQLAlchemy, psycopg)", ("SqlWorkOrderRepository.list (",)),
    ("SQL: token lookup", ("SqlTokenRepository.authenticate (",)),
    ("WorkOrder -> WorkOrderRead (model_dump + model_validate)", ("from_work_order (",)),
    (
        "the route's and the auth dependency's own code",
        ("list_work_orders (", "current_token (api/"),
    ),
    ("response -> JSON (serialize_response, dump_json)", ("serialize_response (",)),
    (
        "thread-pool hand-offs (sync route and dependency)",
        (
            "run_sync_in_worker_thread (",
            "Condition.notify (",
            "current_async_library (",
            "run_in_threadpool (",
            "WorkerThread.run (",
        ),
    ),
    (
        "route matching (FastAPI routers)",
        (
            "_IncludedRouter._match (",
            "_EffectiveRouteContext.matches (",
            "_get_routes_version (",
            "APIRoute.matches (",
        ),
    ),
    ("dependency resolution, parameter validation", ("solve_dependencies (",)),
    ("HTTP parsing and writing (uvicorn, h11)", ("(h11/", "H11Protocol.")),
    ("rest of the request (middleware, FastAPI, Starlette)", ("RequestResponseCycle.run_asgi (",)),
)
UNMATCHED = "event loop and other"


def api_breakdown(path: Path) -> dict[str, float]:
    """Return the share of a py-spy raw profile's samples in each BREAKDOWN step."""
    counts: Counter[str] = Counter()
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        label = next(
            (name for name, markers in BREAKDOWN if any(m in stack for m in markers)), UNMATCHED
        )
        counts[label] += int(count_text)
    total = sum(counts.values())
    return {name: round(n / total, 4) for name, n in counts.most_common()} if total else {}


def code_digests() -> dict[str, str]:
    """Return a short SHA-256 of each measured source file, to tell which code was measured."""
    digests = {}
    for name in MEASURED_SOURCES:
        path = REPO_ROOT / name
        digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else ""
    return digests


# --- main --------------------------------------------------------------------------------


def _raise_on_signal(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so the teardown stops every child and drops the database.
    raise SystemExit(128 + signum)


def build_parser() -> argparse.ArgumentParser:
    """Return the benchmark's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.api_load", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each configuration")
    parser.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=[TARGET_RATE],
        help="paced req/s; each rate is a configuration, alone and with ingest",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="connections (workers)")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="uncounted seconds first")
    parser.add_argument("--page", type=int, default=50, help="limit= of every request")
    parser.add_argument("--work-orders", type=int, default=100_000)
    parser.add_argument("--assets", type=int, default=1_000)
    parser.add_argument(
        "--ingest-rate",
        type=float,
        default=6_000.0,
        help="live ingest msg/s (QoS 1, 1 reading/msg) during the paced run with ingest; "
        "0 skips that run. Default: about half the single-process rules-on drain rate "
        "(13,880 msg/s, docs/benchmarks.md, third session)",
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=("closed", "paced", "ingest", "reserve"),
        default=["closed", "paced", "ingest"],
    )
    parser.add_argument("--pg-dsn", default=DEFAULT_PG_DSN, help="libpq DSN of the server")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, one more paced run (with ingest if measured) with py-spy on the API "
        "process (not counted), and print its hot spots",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="ingest waits, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    return parser


def _configs(args: argparse.Namespace) -> list[Config]:
    configs = []
    if "closed" in args.configs:
        configs.append(Config(None))
    if "paced" in args.configs:
        configs += [Config(rate) for rate in args.rate]
    if "ingest" in args.configs and args.ingest_rate > 0:
        configs += [Config(rate, args.ingest_rate) for rate in args.rate]
    if "reserve" in args.configs:
        configs.append(Config(None, reserve=True))
    return configs


def _run_one(ctx: Context, config: Config, run: int) -> RunResult:
    if config.ingest_rate:
        return ingest_run(ctx, config, run)
    return api_run(ctx, config, run)


def _print_run(result: RunResult) -> None:
    extra = ""
    if result.ingest:
        extra = (
            f", ingest {result.ingest['received_msg_per_s_during_api_run']:,.0f} msg/s "
            f"(published {result.ingest['published_msg_per_s']:,.0f}), lag p50/p99 "
            f"{result.ingest['lag_p50_ms']}/{result.ingest['lag_p99_ms']} ms"
        )
    print(
        f"{result.config} run {result.run}: {result.req_per_s:,.1f} req/s, p50 "
        f"{result.p50_ms:.1f} p90 {result.p90_ms:.1f} p99 {result.p99_ms:.1f} max "
        f"{result.max_ms:.1f} ms (service p99 {result.service_p99_ms:.1f}, wait p99 "
        f"{result.wait_p99_ms:.1f}), {result.errors} errors {result.error_kinds}, "
        f"{result.unsent} due but not sent, "
        f"{result.new_connections_per_request:.2f} new PostgreSQL connections per request, "
        f"cpu {_cpu(result.cpu_cores)} (others just before, idle API: "
        f"{result.idle_cpu_cores.get('others', 0.0):.2f}){extra}",
        flush=True,
    )
    if result.ledger_check is not None:
        print(
            "  "
            + api_reserve.describe(
                result.ledger_check, int(result.ledger_check["answered_201_so_far"])
            ),
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write bench/results/api-load-<stamp>.json."""
    args = build_parser().parse_args(argv)
    if args.runs < 1 or args.concurrency < 1 or min(args.rate) <= 0 or args.duration <= 0:
        raise SystemExit("--runs, --concurrency, --rate and --duration must be positive")
    configs = _configs(args)
    signal.signal(signal.SIGTERM, _raise_on_signal)
    started = time.monotonic()
    started_at = dt.datetime.now(dt.UTC)
    root = Path(tempfile.mkdtemp(prefix="pmk-bench-api-"))
    results: list[RunResult] = []
    hotspots: list[HotspotReport] = []
    result: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.api_load", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "args": vars(args),
        "code": code_digests(),
    }
    with contextlib.ExitStack() as teardown:
        if not args.keep:
            teardown.callback(shutil.rmtree, root, ignore_errors=True)
        database_url = teardown.enter_context(bench_database(args.pg_dsn))
        seed, token, targets = seed_database(database_url, args)
        print(
            f"seeded {seed.work_orders:,} work orders, {seed.alerts:,} alerts, {seed.assets:,} "
            f"assets over {seed.sites} sites, {seed.rules} rules in {seed.seconds:.1f} s "
            f"({seed.database_mib:.0f} MiB, PostgreSQL {seed.server_version})",
            flush=True,
        )
        result["seed"] = asdict(seed)
        bench = None
        if any(config.ingest_rate for config in configs):
            bench = _start_services(args, root, teardown)
            result["broker_settings"] = broker_settings(bench.broker)
            result["ingest_settings"] = ingest_settings({"PMK_RULES__ENABLED": "true"})
            result["rule_set"] = matched_rules(rule_set(args.assets), fleet(args.assets))
        ctx = Context(
            args=args,
            root=root,
            database_url=database_url,
            pg_dsn=args.pg_dsn,
            token=token,
            asset_ids=tuple(fleet_id(i) for i in range(args.assets)),
            bench=bench,
            reserve=targets,
        )
        for run in range(args.runs):
            # Rotate the order, so a slow drift of the machine does not favour one config.
            for config in configs[run % len(configs) :] + configs[: run % len(configs)]:
                results.append(_run_one(ctx, config, run))
                _print_run(results[-1])
        if args.profile:
            output = root / "profiles" / "api.txt"
            config = next((c for c in reversed(configs) if c.rate is not None), Config(None))
            if config.ingest_rate:
                profiled = ingest_run(ctx, config, args.runs, profile=output)
            else:
                profiled = api_run(ctx, config, args.runs, profile=output)
            label = f"API process, {profiled.config} (not counted)"
            _print_run(profiled)
            result["profiled_run"] = asdict(profiled)
            hotspots.append(summarize_raw_profile(output, label))
            result["profile_breakdown"] = api_breakdown(output)
    summaries = summarize(results, configs)
    changed = [name for name, digest in code_digests().items() if result["code"][name] != digest]
    if changed:
        print(f"WARNING: changed during the run, so runs measured different code: {changed}")
    result.update(
        code_changed_during_run=changed,
        wall_s=time.monotonic() - started,
        runs=[asdict(r) for r in results],
        summary=[asdict(s) for s in summaries],
        verdict=verdict(summaries),
        hotspots=[asdict(h) for h in hotspots],
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS_DIR / f"api-load-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(render_table(summaries))
    for config in configs:
        print()
        print(render_kinds(results, config.label))
    print()
    for line in result["verdict"]:
        print(line)
    for run_result in results:
        if run_result.ledger_check is not None:
            check = run_result.ledger_check
            print(
                f"{run_result.config} run {run_result.run}: "
                + api_reserve.describe(check, int(check["answered_201_so_far"]))
            )
    for report in hotspots:
        print()
        print(report.render())
    if "profile_breakdown" in result:
        print("\nAPI process, share of GIL-holding samples by step:")
        for name, share in result["profile_breakdown"].items():
            print(f"  {share:6.1%}  {name}")
    print(f"\nwall {result['wall_s']:.0f} s; wrote {json_path.relative_to(REPO_ROOT)}")
    if args.keep:
        print(f"kept {root}")
    return 0


def _start_services(args: argparse.Namespace, root: Path, teardown: contextlib.ExitStack) -> Bench:
    """Start the private mosquitto and influxd the run with ingest needs."""
    broker = BenchBroker(root / "mosquitto", binary=require_binary("mosquitto"))
    teardown.callback(broker.close)
    broker.start()
    influx = InfluxServer(root / "influxd", binary=require_binary("influxd"))
    teardown.callback(influx.close)
    influx.start()
    return Bench(root=root, broker=broker, influx=influx, args=args, ingest_env={})


if __name__ == "__main__":
    sys.exit(main())
