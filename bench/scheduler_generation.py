"""Benchmark: generate and book every occurrence of a plant's plans over a 90-day horizon.

Workload (issue 5): ASSETS assets x 3 plans each, TECHNICIANS technicians, a 90-day
horizon. The assets fall into 30 asset types; each type has three plans (a monthly
15-minute check, a quarterly 30-minute service and a yearly 1-hour overhaul), started on
days staggered by type so the work spreads over the month as a planner would spread it.
Every plan reserves one part line. Technicians work Monday to Friday 08:00-16:00 in their
site's zone, at 5 sites over 3 zones, and hold the three skills the plans need.

The seed goes straight into the database (bulk inserts). Then a fresh child process
builds the production stores and runs `PlanGenerator.run` once with a 90-day lead time:
the figure is that run's wall time, and the child's peak RSS (ru_maxrss) is the memory.
Target: under 20 s and under 1 GB at 10,000 assets.

Scaling runs grow technicians with assets (50 per 10,000), so each technician's load stays
the same; `--fixed-technicians` keeps 50 whatever the fleet, which saturates the diary.

    python -m bench.scheduler_generation --assets 10000 --runs 3
    python -m bench.scheduler_generation --scaling 1000,10000,50000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from sqlalchemy import insert

from bench.api_load import DEFAULT_PG_DSN, bench_database
from core.clock import FrozenClock
from scheduler.generation import PlanGenerator
from storage.db import create_engine_for, migrate
from storage.inventory import SqlInventoryRepository
from storage.plans import SqlPlanRepository, SqlScheduleStore
from storage.tables import (
    assets,
    maintenance_plans,
    parts,
    stock,
    stock_ledger,
    stock_locations,
    technician_sites,
    technician_skills,
    technicians,
)
from storage.technicians import SqlTechnicianRepository

NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
HORIZON = timedelta(days=90)
TYPES = 30
SITES = (
    ("north", "Europe/Berlin"),
    ("south", "Europe/Berlin"),
    ("harbour", "Europe/London"),
    ("east", "America/New_York"),
    ("west", "America/New_York"),
)
SKILLS = ("mechanical", "electrical", "lubrication")
TECHNICIANS_PER_10K = 50
CHUNK = 5_000
# (name, every, unit, duration, skill, part): the three plans of every asset type.
PLANS = (
    ("check", 1, "months", "PT15M", "mechanical", "GREASE-1"),
    ("service", 3, "months", "PT30M", "lubrication", "FILTER-1"),
    ("overhaul", 12, "months", "PT1H", "electrical", "BEARING-1"),
)


def _rows(table: Any, rows: list[dict[str, Any]], connection: Any) -> None:
    for start in range(0, len(rows), CHUNK):
        connection.execute(insert(table), rows[start : start + CHUNK])


def seed(url: str, asset_count: int, technician_count: int) -> None:
    """Insert the fleet, the technicians, parts with ample stock, and the plans."""
    engine = create_engine_for(url)
    migrate(engine)
    created = NOW - timedelta(days=1)
    with engine.begin() as connection:
        _rows(
            assets,
            [
                {
                    "id": f"asset-{index:06d}",
                    "name": f"Asset {index}",
                    "type": f"type-{index % TYPES:02d}",
                    "site": SITES[index % len(SITES)][0],
                    "criticality": "medium",
                    "tags": {},
                    "auto_registered": False,
                    "created_at": created,
                    "updated_at": created,
                }
                for index in range(asset_count)
            ],
            connection,
        )
        people = [f"tech-{index:03d}" for index in range(technician_count)]
        _rows(
            technicians,
            [
                {
                    "id": person,
                    "name": person,
                    "time_zone": SITES[index % len(SITES)][1],
                    "weekly_hours": [
                        {"weekday": day, "start": "08:00", "end": "16:00"} for day in range(5)
                    ],
                    "created_at": created,
                    "updated_at": created,
                }
                for index, person in enumerate(people)
            ],
            connection,
        )
        _rows(
            technician_sites,
            [
                {"technician_id": person, "site": SITES[index % len(SITES)][0]}
                for index, person in enumerate(people)
            ],
            connection,
        )
        _rows(
            technician_skills,
            [
                {"technician_id": person, "skill": skill, "certified_until": None}
                for person in people
                for skill in SKILLS
            ],
            connection,
        )
        connection.execute(
            insert(stock_locations).values(code="main", name="Main store", created_at=created)
        )
        skus = sorted({plan[5] for plan in PLANS})
        huge = 10**12  # thousandths: a billion units, never short
        _rows(
            parts,
            [
                {
                    "sku": sku,
                    "name": sku,
                    "unit": "pcs",
                    "category": "bench",
                    "reorder_point_milli": 0,
                    "reorder_quantity_milli": 0,
                    "created_at": created,
                    "updated_at": created,
                }
                for sku in skus
            ],
            connection,
        )
        _rows(
            stock,
            [
                {
                    "sku": sku,
                    "location": "main",
                    "on_hand_milli": huge,
                    "reserved_milli": 0,
                    "updated_at": created,
                }
                for sku in skus
            ],
            connection,
        )
        _rows(
            stock_ledger,
            [
                {
                    "sku": sku,
                    "location": "main",
                    "kind": "receipt",
                    "quantity_milli": huge,
                    "actor": "bench",
                    "at": created,
                }
                for sku in skus
            ],
            connection,
        )
        plan_rows = []
        for type_index in range(TYPES):
            for name, every, unit, duration, skill, sku in PLANS:
                # Staggered over the month by type; overhauls over the year.
                spread = 365 if every == 12 else 30
                starts_at = NOW + timedelta(days=1 + (type_index * spread) // TYPES, hours=3)
                plan_id = f"type-{type_index:02d}-{name}"
                definition = {
                    "id": plan_id,
                    "name": f"{name} of type {type_index}",
                    "description": "",
                    "asset_id": None,
                    "asset_type": f"type-{type_index:02d}",
                    "calendar": {
                        "rrule": None,
                        "every": every,
                        "unit": unit,
                        "recurrence": "fixed",
                        "starts_at": starts_at.isoformat(),
                    },
                    "meter": None,
                    "lead_time": "P90D",
                    "booking_window": "P14D",
                    "estimated_duration": duration,
                    "checklist": ["Inspect", "Record findings"],
                    "required_skills": [skill],
                    "parts": [{"sku": sku, "location": "main", "quantity": "1"}],
                    "priority": "medium",
                    "missed": "create",
                    "enabled": True,
                }
                plan_rows.append(
                    {
                        "id": plan_id,
                        "name": definition["name"],
                        "asset_id": None,
                        "asset_type": definition["asset_type"],
                        "definition": definition,
                        "enabled": True,
                        "created_at": created,
                        "updated_at": created,
                    }
                )
        _rows(maintenance_plans, plan_rows, connection)
    engine.dispose()


def child(url: str) -> None:
    """Run one generation over the seeded database; print its figures as JSON."""
    engine = create_engine_for(url)
    clock = FrozenClock(NOW)
    plans = SqlPlanRepository(engine, clock)
    store = SqlScheduleStore(
        engine,
        plans,
        SqlTechnicianRepository(engine, clock),
        SqlInventoryRepository(engine, clock),
    )
    generator = PlanGenerator(store)
    started = time.perf_counter()
    report = generator.run(NOW)
    elapsed = time.perf_counter() - started
    # The steady state: the next run, a minute later, finds nothing new due but checks
    # every future booking still holds.
    started = time.perf_counter()
    generator.run(NOW + timedelta(minutes=1))
    again = time.perf_counter() - started
    # Linux reports ru_maxrss in KiB; the second run is included, it allocates little.
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "again_seconds": again,
                "peak_mib": peak_mib,
                "occurrences": report.occurrences,
                "work_orders": report.work_orders,
                "booked": report.booked,
                "late": report.late,
                "unbooked": report.unbooked,
                "on_hold": report.on_hold,
            }
        )
    )
    engine.dispose()


@contextmanager
def database(backend: str, dsn: str) -> Iterator[str]:
    """Yield the URL of a fresh database of the backend asked for."""
    if backend == "postgresql":
        with bench_database(dsn) as url:
            yield url
        return
    with TemporaryDirectory(prefix="pmk-bench-") as directory:
        yield f"sqlite:///{Path(directory) / 'pmkeeper.db'}"


def one_run(backend: str, dsn: str, asset_count: int, technician_count: int) -> dict[str, Any]:
    """Seed a fresh database, generate in a child process; return the child's figures."""
    with database(backend, dsn) as url:
        seeded = time.perf_counter()
        seed(url, asset_count, technician_count)
        seed_s = time.perf_counter() - seeded
        result = subprocess.run(
            [sys.executable, "-m", "bench.scheduler_generation", "--child", url],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PMK_LOG_LEVEL": "WARNING"},
        )
        if result.returncode != 0:
            raise SystemExit(f"generation child failed:\n{result.stderr[-3000:]}")
        figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        figures["seed_seconds"] = seed_s
        return figures


def main() -> None:
    """Run the benchmark and print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scaling", help="comma-separated asset counts, e.g. 1000,10000,50000")
    parser.add_argument("--fixed-technicians", action="store_true")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--pg-dsn", default=DEFAULT_PG_DSN)
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    counts = [int(text) for text in args.scaling.split(",")] if args.scaling else [args.assets]
    print(
        f"plan generation, {args.backend}, 90-day horizon, 3 plans per asset, "
        f"medians of {args.runs} runs"
    )
    print(
        f"{'assets':>8} {'techs':>6} {'occurr.':>8} {'booked':>7} {'late':>6} {'unbook.':>7} "
        f"{'seconds':>8} {'peak MiB':>9} {'µs/occ.':>8}"
    )
    for asset_count in counts:
        technician_count = (
            TECHNICIANS_PER_10K
            if args.fixed_technicians
            else max(5, asset_count * TECHNICIANS_PER_10K // 10_000)
        )
        runs = [
            one_run(args.backend, args.pg_dsn, asset_count, technician_count)
            for _ in range(args.runs)
        ]
        seconds = statistics.median(run["seconds"] for run in runs)
        peak = statistics.median(run["peak_mib"] for run in runs)
        last = runs[-1]
        per = seconds / max(1, last["occurrences"]) * 1e6
        print(
            f"{asset_count:>8} {technician_count:>6} {last['occurrences']:>8} "
            f"{last['booked']:>7} {last['late']:>6} {last['unbooked']:>7} {seconds:>8.2f} "
            f"{peak:>9.0f} {per:>8.0f}",
            flush=True,
        )
        print(
            "          runs (s): " + ", ".join(f"{run['seconds']:.2f}" for run in runs),
            flush=True,
        )
        again = statistics.median(run["again_seconds"] for run in runs)
        print(f"          next run, nothing new due (s): {again:.2f}", flush=True)


if __name__ == "__main__":
    main()
