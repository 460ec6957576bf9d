"""Plan generation against the SQL stores (SQLite and PostgreSQL), on a frozen clock.

Generation records each occurrence once, however often and from however many processes
it runs; it opens a preventive work order per occurrence, books it into a technician's
calendar, reserves its parts, and catches up on what fell due while nothing ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from core.assets import Asset
from core.clock import FrozenClock
from core.inventory import MovementKind, NewLocation, NewMovement, NewPart, ReservationStatus
from core.settings import Settings
from core.technicians import NewTechnician, NewTimeOff, within_shifts
from core.telemetry import Reading
from core.workorders import Action, Completion, TransitionDetails, WorkOrderStatus
from pmkeeper.container import Container, build_scheduler_role
from scheduler.generation import PlanGenerator
from scheduler.model import MaintenancePlan, parse_plan, parse_site_calendar
from storage.alerting import SqlWorkOrderRepository
from storage.db import create_engine_for, migrate
from storage.inventory import SqlInventoryRepository
from storage.leader import LeaderLock
from storage.plans import SqlBookingStore, SqlPlanRepository, SqlScheduleStore
from storage.repositories import SqlAssetRepository
from storage.tables import bookings, plan_occurrences, stock_out_events, work_orders
from storage.technicians import SqlTechnicianRepository
from storage.telemetry_sqlite import SqliteTelemetryStore
from tests.support.polling import wait_until
from tests.support.workorders import act, start

# A Monday, 06:00 UTC (07:00 in Berlin).
T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
WEEKDAYS_8_TO_16 = [{"weekday": day, "start": "08:00", "end": "16:00"} for day in range(5)]


@dataclass
class Stores:
    engine: Engine
    clock: FrozenClock
    assets: SqlAssetRepository
    technicians: SqlTechnicianRepository
    inventory: SqlInventoryRepository
    plans: SqlPlanRepository
    bookings: SqlBookingStore
    work_orders: SqlWorkOrderRepository
    schedule: SqlScheduleStore

    def generator(self) -> PlanGenerator:
        return PlanGenerator(self.schedule)

    def run(self) -> Any:
        return self.generator().run(self.clock.now())


@pytest.fixture
def stores(database_engine: Engine) -> Stores:
    clock = FrozenClock(T0)
    engine = database_engine
    technicians = SqlTechnicianRepository(engine, clock)
    inventory = SqlInventoryRepository(engine, clock)
    plans = SqlPlanRepository(engine, clock)
    booking_store = SqlBookingStore(engine, plans, technicians, clock)
    return Stores(
        engine=engine,
        clock=clock,
        assets=SqlAssetRepository(engine, clock),
        technicians=technicians,
        inventory=inventory,
        plans=plans,
        bookings=booking_store,
        work_orders=SqlWorkOrderRepository(
            engine, on_transition=[inventory.settle_reservations, booking_store.settle_booking]
        ),
        schedule=SqlScheduleStore(engine, plans, technicians, inventory, chunk_size=7),
    )


def technician(tech_id: str, *, sites: list[str], skills: list[str]) -> NewTechnician:
    return NewTechnician.model_validate(
        {
            "id": tech_id,
            "name": tech_id.title(),
            "sites": sites,
            "time_zone": "Europe/Berlin",
            "skills": [{"skill": skill} for skill in skills],
            "weekly_hours": WEEKDAYS_8_TO_16,
        }
    )


def plan(plan_id: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": plan_id,
        "name": f"Plan {plan_id}",
        "asset_type": "pump",
        "calendar": {"every": 1, "unit": "weeks", "starts_at": "2026-11-24T09:00:00Z"},
        "lead_time": "P14D",
        "booking_window": "P3D",
        "estimated_duration": "PT1H",
        "required_skills": ["mechanical"],
        "checklist": ["Check the seal", "Grease the bearing"],
    }
    return {**body, **fields}


def add_plan(stores: Stores, body: dict[str, Any]) -> MaintenancePlan:
    return stores.plans.add(parse_plan(body))


def seed(stores: Stores, pumps: int = 3) -> None:
    for index in range(pumps):
        stores.assets.add(
            Asset(id=f"pump-{index}", name=f"Pump {index}", type="pump", site="north")
        )
    stores.technicians.add(technician("anna", sites=["north"], skills=["mechanical"]))
    stores.technicians.add(technician("ben", sites=["north"], skills=["mechanical", "hvac"]))


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def assert_calendars_sound(stores: Stores) -> None:
    """No technician is double-booked, and every booking lies within their hours."""
    with stores.engine.connect() as connection:
        rows = connection.execute(
            select(bookings).where(bookings.c.status == "booked").order_by(bookings.c.start_at)
        ).all()
    by_technician: dict[str, list[Any]] = {}
    for row in rows:
        by_technician.setdefault(row.technician_id, []).append(row)
    for tech_id, slots in by_technician.items():
        person = stores.technicians.get(tech_id)
        for slot in slots:
            assert within_shifts(person, slot.start_at, slot.end_at), slot
        for before, after in pairwise(slots):
            assert before.end_at <= after.start_at, (before, after)


def test_a_weekly_type_plan_opens_books_and_describes_one_order_per_occurrence(
    stores: Stores,
) -> None:
    seed(stores)
    add_plan(stores, plan("weekly"))
    report = stores.run()
    # Due 24 Nov and 1 Dec (8 Dec is past 14 days from 23 Nov 06:00), on three pumps.
    assert report.work_orders == 6
    assert report.booked == 6
    assert report.late == 0
    orders = stores.work_orders.list(limit=100)
    assert len(orders) == 6
    assert {order.status for order in orders} == {WorkOrderStatus.SCHEDULED}
    assert {order.kind.value for order in orders} == {"preventive"}
    for order in orders:
        assert order.plan_id == "weekly"
        assert order.due_at is not None
        assert order.technician_id in {"anna", "ben"}
        assert "- [ ] Grease the bearing" in order.description
        booking = stores.bookings.get(order.id)
        assert booking.end_at <= order.due_at
        assert booking.start_at >= order.due_at - timedelta(days=3)
        assert booking.sequence == 0
    events = stores.work_orders.events(orders[0].id)
    assert events[0].actor == "scheduler"
    assert "generated by plan 'weekly'" in (events[0].note or "")
    assert_calendars_sound(stores)


def test_generation_run_five_times_creates_each_occurrence_once(stores: Stores) -> None:
    seed(stores)
    add_plan(stores, plan("weekly"))
    add_plan(
        stores,
        plan(
            "pump-0-monthly",
            asset_type=None,
            asset_id="pump-0",
            calendar={"every": 1, "unit": "months", "starts_at": "2026-11-30T10:00:00Z"},
            lead_time="P40D",
            booking_window="P5D",
        ),
    )
    first = stores.run()
    assert first.work_orders == 6 + 2  # and 30 Nov and 30 Dec on pump-0
    for _ in range(4):
        again = stores.run()
        assert again.occurrences == 0
    assert count(stores.engine, work_orders) == 8
    assert count(stores.engine, plan_occurrences) == 8
    # Two days later the 14-day window reaches 8 Dec on every pump.
    stores.clock.at = T0 + timedelta(days=2)
    assert stores.run().work_orders == 3
    assert stores.run().occurrences == 0
    with stores.engine.connect() as connection:
        keys = connection.execute(
            select(work_orders.c.plan_id, work_orders.c.asset_id, work_orders.c.due_at)
        ).all()
    assert len(keys) == len(set(keys)) == 11
    assert_calendars_sound(stores)


@pytest.mark.parametrize("policy", ["create", "mark_missed"])
def test_three_days_down_catches_up_as_the_plan_says(stores: Stores, policy: str) -> None:
    seed(stores, pumps=1)
    add_plan(
        stores,
        plan(
            "daily",
            calendar={"every": 1, "unit": "days", "starts_at": "2026-11-23T12:00:00Z"},
            lead_time="P1D",
            booking_window="PT12H",
            missed=policy,
        ),
    )
    stores.run()  # due 23 Nov 12:00 and 24 Nov 12:00 are within a day
    before = count(stores.engine, plan_occurrences)
    assert before == 1  # 24 Nov 12:00 is just past the day ahead of 23 Nov 06:00
    # The scheduler is down for three days, then starts again.
    stores.clock.at = T0 + timedelta(days=3)
    report = stores.run()
    with stores.engine.connect() as connection:
        rows = connection.execute(
            select(plan_occurrences.c.due_at, plan_occurrences.c.outcome).order_by(
                plan_occurrences.c.due_at
            )
        ).all()
    dues = [row.due_at for row in rows]
    # Every day from the first to one lead time past now (27 Nov 06:00), each exactly once.
    expected = [datetime(2026, 11, 23 + day, 12, 0, tzinfo=UTC) for day in range(4)]
    assert dues == expected
    missed = [row for row in rows if T0 + timedelta(days=1) < row.due_at < stores.clock.at]
    assert len(missed) == 2, "24 and 25 Nov fell due while nothing ran"
    if policy == "mark_missed":
        assert {row.outcome for row in missed} == {"missed"}
        assert report.missed == len(missed)
    else:
        assert {row.outcome for row in missed} == {"generated"}
        assert report.missed == 0
    # Nothing fell through: each occurrence is either an order or recorded as missed.
    assert count(stores.engine, work_orders) + sum(r.outcome == "missed" for r in rows) == 4


def test_a_floating_plan_counts_from_the_last_completion(stores: Stores) -> None:
    seed(stores, pumps=1)
    add_plan(
        stores,
        plan(
            "floating",
            calendar={
                "every": 10,
                "unit": "days",
                "recurrence": "floating",
                "starts_at": "2026-11-24T09:00:00Z",
            },
            lead_time="P5D",
            booking_window="P2D",
        ),
    )
    assert stores.run().work_orders == 1
    assert stores.run().occurrences == 0  # one cycle at a time
    (order,) = stores.work_orders.list()
    assert order.due_at == datetime(2026, 11, 24, 9, tzinfo=UTC)
    # Done early, on the 24th at 08:00 UTC: the next is due ten days after that day, at the
    # plan's time of day.
    done_at = datetime(2026, 11, 24, 8, tzinfo=UTC)
    start(stores.work_orders, order.id, "tech", done_at)
    stores.work_orders.transition(
        order.id,
        Action.RESOLVE,
        TransitionDetails(
            completion=Completion(
                findings="ok", failure_code="none", labour_minutes=30, downtime_minutes=0
            )
        ),
        actor="tech",
        now=done_at,
    )
    stores.clock.at = datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert stores.run().work_orders == 1
    newest = stores.work_orders.list()[0]
    assert newest.due_at == datetime(2026, 12, 4, 9, tzinfo=UTC)


def test_a_cancelled_order_cancels_its_booking_and_releases_its_parts(stores: Stores) -> None:
    weekly_filter_change(stores, filters=1)
    report = stores.run()
    assert report.work_orders == 2
    assert report.on_hold == 1  # one filter for two orders: the later one waits
    orders = sorted(stores.work_orders.list(), key=lambda order: order.due_at or T0)
    assert orders[0].status is WorkOrderStatus.SCHEDULED
    assert orders[1].status is WorkOrderStatus.ON_HOLD
    assert orders[1].held_from is WorkOrderStatus.SCHEDULED
    assert count(stores.engine, stock_out_events) == 1
    # Nothing left at any location, at or under the reorder point of 1: reorder 10 + 1.
    (signal,) = stores.inventory.reorder_signals()
    assert (signal.sku, signal.available, signal.suggested_quantity) == (
        "filter-1",
        Decimal(0),
        Decimal(11),
    )
    held = stores.inventory.reservations(work_order_id=orders[0].id)
    assert [r.status for r in held] == [ReservationStatus.RESERVED]
    act(stores.work_orders, orders[0].id, Action.CANCEL, "planner", T0, note="asset sold")
    booking = stores.bookings.get(orders[0].id)
    assert booking.status == "cancelled"
    assert booking.sequence == 1
    released = stores.inventory.reservations(work_order_id=orders[0].id)
    assert [r.status for r in released] == [ReservationStatus.RELEASED]


def weekly_filter_change(stores: Stores, filters: int) -> None:
    """One pump, a weekly plan that needs one filter, and `filters` of them in store."""
    seed(stores, pumps=1)
    stock_up(stores, quantity=filters)
    add_plan(
        stores,
        plan("weekly", parts=[{"sku": "filter-1", "location": "main", "quantity": "1"}]),
    )


def stock_up(stores: Stores, quantity: int) -> None:
    stores.inventory.add_location(NewLocation(code="main", name="Main store"))
    stores.inventory.add_part(
        NewPart(
            sku="filter-1",
            name="Oil filter",
            unit="pcs",
            category="filters",
            reorder_point=Decimal(1),
            reorder_quantity=Decimal(10),
        )
    )
    stores.inventory.record_movement(
        NewMovement(
            sku="filter-1",
            location="main",
            kind=MovementKind.RECEIPT,
            quantity=Decimal(quantity),
        ),
        actor="stores",
    )


def test_nobody_qualified_leaves_the_order_accepted_until_someone_is(stores: Stores) -> None:
    seed(stores, pumps=1)
    add_plan(stores, plan("welding", required_skills=["welding"]))
    report = stores.run()
    assert report.work_orders == 2
    assert report.unbooked == 2
    for order in stores.work_orders.list():
        assert order.status is WorkOrderStatus.ACCEPTED
        assert order.technician_id is None
        note = stores.work_orders.events(order.id)[0].note or ""
        assert "not booked" in note
        assert "welding" in note
    assert count(stores.engine, bookings) == 0
    # A welder joins: the next run books the waiting orders, and only those.
    stores.technicians.add(technician("carl", sites=["north"], skills=["welding"]))
    again = stores.run()
    assert again.rebooked == 2
    assert again.occurrences == 0
    for order in stores.work_orders.list():
        assert order.status is WorkOrderStatus.SCHEDULED
        assert order.technician_id == "carl"
        last = stores.work_orders.events(order.id)[-1]
        assert last.from_status is WorkOrderStatus.ACCEPTED
        assert last.to_status is WorkOrderStatus.SCHEDULED
        assert last.actor == "scheduler"
        assert stores.bookings.get(order.id).end_at <= (order.due_at or T0)
    assert stores.run().rebooked == 0
    assert_calendars_sound(stores)


def test_holidays_of_the_site_calendar_move_occurrences(stores: Stores) -> None:
    seed(stores, pumps=1)
    stores.plans.put_calendar(
        parse_site_calendar(
            {"site": "north", "time_zone": "Europe/Berlin", "holidays": ["2026-12-01"]}
        )
    )
    add_plan(stores, plan("weekly"))
    stores.run()
    dues = sorted(order.due_at for order in stores.work_orders.list() if order.due_at)
    assert datetime(2026, 12, 1, 9, tzinfo=UTC) not in dues
    assert datetime(2026, 12, 2, 9, tzinfo=UTC) in dues


def test_a_dry_run_projects_without_writing(stores: Stores) -> None:
    seed(stores)
    stock_up(stores, quantity=100)
    add_plan(
        stores,
        plan("weekly", parts=[{"sku": "filter-1", "location": "main", "quantity": "2"}]),
    )
    projection = stores.generator().project(T0, timedelta(days=90))
    assert len(projection.orders) == 13 * 3
    assert projection.parts == {("filter-1", "main"): Decimal(2 * 13 * 3)}
    booked = [item for item in projection.orders if item.booking is not None]
    assert len(booked) == 39
    assert Counter(item.booking.technician_id for item in booked if item.booking).keys() == {
        "anna",
        "ben",
    }
    assert count(stores.engine, work_orders) == 0
    assert count(stores.engine, plan_occurrences) == 0
    assert count(stores.engine, bookings) == 0


def test_two_processes_generating_at_once_on_postgres_create_each_occurrence_once(
    postgres_url: str, tmp_path: Path
) -> None:
    engine = create_engine_for(postgres_url)
    try:
        migrate(engine)
        clock = FrozenClock(T0)
        technicians = SqlTechnicianRepository(engine, clock)
        plans = SqlPlanRepository(engine, clock)
        inventory = SqlInventoryRepository(engine, clock)
        stores = Stores(
            engine=engine,
            clock=clock,
            assets=SqlAssetRepository(engine, clock),
            technicians=technicians,
            inventory=inventory,
            plans=plans,
            bookings=SqlBookingStore(engine, plans, technicians, clock),
            work_orders=SqlWorkOrderRepository(engine),
            schedule=SqlScheduleStore(engine, plans, technicians, inventory),
        )
        seed(stores, pumps=40)
        add_plan(stores, plan("weekly"))
        add_plan(
            stores,
            plan(
                "daily",
                calendar={"every": 1, "unit": "days", "starts_at": "2026-11-24T13:00:00Z"},
                lead_time="P3D",
                booking_window="P1D",
            ),
        )
        env = {
            **os.environ,
            "PMK_DATABASE__URL": postgres_url,
            "PMK_DATA_DIR": str(tmp_path),
            "PMK_LOG_FORMAT": "text",
        }
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "pmkeeper", "scheduler", "--once"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(2)
        ]
        outputs = [process.communicate(timeout=120)[0].decode() for process in processes]
        assert [process.returncode for process in processes] == [0, 0], outputs
        with engine.connect() as connection:
            keys = connection.execute(
                select(work_orders.c.plan_id, work_orders.c.asset_id, work_orders.c.due_at)
            ).all()
        # The real clock runs in the subprocesses: whatever they found due, once each.
        assert keys
        assert len(keys) == len(set(keys))
        assert count(engine, plan_occurrences) == len(keys)
        assert_calendars_sound(stores)
    finally:
        engine.dispose()


def test_only_one_leader_at_a_time(database_engine: Engine, tmp_path: Path) -> None:
    first = LeaderLock(database_engine, tmp_path / "scheduler.lock")
    second = LeaderLock(database_engine, tmp_path / "scheduler.lock")
    try:
        assert first.try_acquire()
        assert not second.try_acquire()
        assert first.still_held()
        first.release()
        assert second.try_acquire()
        assert not first.try_acquire()
    finally:
        first.release()
        second.release()


def test_an_asset_registered_later_starts_from_its_registration(stores: Stores) -> None:
    seed(stores, pumps=1)
    add_plan(stores, plan("weekly"))
    stores.run()
    # Ten days later a new pump arrives: no catch-up of the weeks before it existed.
    stores.clock.at = T0 + timedelta(days=10)
    stores.assets.add(Asset(id="pump-new", name="New pump", type="pump", site="north"))
    report = stores.run()
    new = [order for order in stores.work_orders.list() if order.asset_id == "pump-new"]
    assert [order.due_at for order in sorted(new, key=lambda o: o.id)] == [
        datetime(2026, 12, 8, 9, tzinfo=UTC),
        datetime(2026, 12, 15, 9, tzinfo=UTC),
    ]
    assert report.missed == 0
    assert all(
        "came due while the scheduler was not running" not in (event.note or "")
        for order in new
        for event in stores.work_orders.events(order.id)
    )


def test_a_run_hours_meter_plan_falls_due_from_the_telemetry_store(
    stores: Stores, tmp_path: Path
) -> None:
    seed(stores, pumps=1)
    telemetry = SqliteTelemetryStore(tmp_path / "telemetry.db")
    try:
        # The pump's run-hours counter, hourly: it runs a third of the time, 8 h a day.
        start_at = T0 - timedelta(days=20)
        telemetry.write(
            [
                Reading(
                    "pump-0",
                    "run_hours",
                    int((start_at + timedelta(hours=h)).timestamp() * 1000),
                    1000 + h / 3,
                )
                for h in range(0, 24 * 20 + 1)
            ]
        )
        add_plan(
            stores,
            plan(
                "run-hours",
                asset_type=None,
                asset_id="pump-0",
                calendar=None,
                meter={"metric": "run_hours", "every": 100},
                lead_time="P30D",
                booking_window="P3D",
            ),
        )
        # The plan counts from its creation (T0): 8 h a day reach 100 h in 12.5 days.
        generator = PlanGenerator(stores.schedule, read_meters=telemetry.read_many)
        report = generator.run(T0)
        assert report.work_orders == 1
        (order,) = stores.work_orders.list()
        assert order.due_at is not None
        assert abs(order.due_at - (T0 + timedelta(days=12.5))) < timedelta(hours=2)
        assert generator.run(T0).occurrences == 0  # one cycle at a time
        with stores.engine.connect() as connection:
            (row,) = connection.execute(select(plan_occurrences)).all()
        assert row.trigger == "meter"
        assert row.cycle_key is not None
    finally:
        telemetry.close()


def test_a_scheduler_stopped_for_three_days_catches_up_when_it_restarts(
    database_url: str, tmp_path: Path
) -> None:
    clock = FrozenClock(T0)
    settings = Settings(
        data_dir=tmp_path,
        database={"url": database_url},
        scheduler={"generate_every_s": 0.2, "elect_every_s": 0.1},
    )
    container = Container.build(settings, clock=clock)
    try:
        container.assets.add(Asset(id="pump-1", name="Pump 1", type="pump", site="north"))
        for policy in ("create", "mark_missed"):
            container.plans.add(
                parse_plan(
                    plan(
                        f"daily-{policy}",
                        asset_type=None,
                        asset_id="pump-1",
                        calendar={
                            "every": 1,
                            "unit": "days",
                            "starts_at": "2026-11-23T12:00:00Z",
                        },
                        lead_time="P1D",
                        booking_window="PT12H",
                        required_skills=[],
                        missed=policy,
                    )
                )
            )

        def occurrences() -> Sequence[Any]:
            with container.engine.connect() as connection:
                return connection.execute(
                    select(plan_occurrences).order_by(
                        plan_occurrences.c.plan_id, plan_occurrences.c.due_at
                    )
                ).all()

        role = build_scheduler_role(container)
        role.start()
        try:
            wait_until(lambda: len(occurrences()) == 2, what="the first run")
        finally:
            role.stop()
        clock.at = T0 + timedelta(days=3)  # down for three days
        role = build_scheduler_role(container)
        role.start()
        try:
            wait_until(lambda: len(occurrences()) == 8, what="the catch-up")
        finally:
            role.stop()
        by_plan: dict[str, list[str]] = {}
        for row in occurrences():
            by_plan.setdefault(row.plan_id, []).append(row.outcome)
        # 23 Nov ran on time; 24 and 25 Nov fell due while it was down; 26 Nov is ahead.
        assert by_plan == {
            "daily-create": ["generated"] * 4,
            "daily-mark_missed": ["generated", "missed", "missed", "generated"],
        }
        assert len(container.work_orders.list(limit=100)) == 6
    finally:
        container.close()


def test_the_plan_command_prints_a_dry_run_and_writes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pmkeeper.db'}"
    engine = create_engine_for(url)
    try:
        migrate(engine)
        clock = FrozenClock(datetime.now(UTC))
        technicians = SqlTechnicianRepository(engine, clock)
        plans = SqlPlanRepository(engine, clock)
        SqlAssetRepository(engine, clock).add(
            Asset(id="pump-0", name="Pump 0", type="pump", site="north")
        )
        technicians.add(technician("anna", sites=["north"], skills=["mechanical"]))
        starts = (clock.at + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
        plans.add(
            parse_plan(
                plan(
                    "weekly",
                    calendar={"every": 1, "unit": "weeks", "starts_at": starts.isoformat()},
                )
            )
        )
    finally:
        engine.dispose()
    env = {**os.environ, "PMK_DATABASE__URL": url, "PMK_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "pmkeeper", "plan", "--horizon", "30d", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["work_orders"] == 5  # days 1, 8, 15, 22, 29
    assert document["booked"] == 5
    assert {order["booking"]["technician_id"] for order in document["orders"]} == {"anna"}
    text_run = subprocess.run(
        [sys.executable, "-m", "pmkeeper", "plan", "--horizon", "30d"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "nothing was written" in text_run.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "pmkeeper", "plan", "--horizon", "soon"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2
    assert "not a horizon" in refused.stderr
    engine = create_engine_for(url)
    try:
        assert count(engine, work_orders) == 0
        assert count(engine, plan_occurrences) == 0
        assert count(engine, bookings) == 0
    finally:
        engine.dispose()


def test_a_rebooked_order_keeps_its_parts_until_the_new_slot(stores: Stores) -> None:
    weekly_filter_change(stores, filters=10)
    stores.run()
    order = min(stores.work_orders.list(), key=lambda o: o.due_at or T0)
    (held,) = stores.inventory.reservations(work_order_id=order.id)
    booking = stores.bookings.get(order.id)
    assert held.expires_at == booking.end_at + timedelta(days=7)
    # Moved three weeks later, on a Monday at 10:00 in Berlin (09:00 UTC).
    later = datetime(2026, 12, 14, 9, tzinfo=UTC)
    moved = stores.bookings.rebook(
        order.id, technician_id="anna", start_at=later, actor="planner", note="pump busy"
    )
    assert moved.sequence == 1
    assert moved.late is True  # due 24 Nov
    (still,) = stores.inventory.reservations(work_order_id=order.id)
    assert still.status is ReservationStatus.RESERVED
    assert still.expires_at == moved.end_at + timedelta(days=7)
    # The same slot again changes nothing: no new sequence, no audit entry.
    events = len(stores.work_orders.events(order.id))
    again = stores.bookings.rebook(order.id, technician_id="anna", start_at=later, actor="planner")
    assert again.sequence == 1
    assert len(stores.work_orders.events(order.id)) == events


def test_time_off_over_a_booking_moves_it_and_the_calendar_sees_the_move(
    stores: Stores,
) -> None:
    seed(stores, pumps=1)
    add_plan(stores, plan("weekly"))
    stores.run()
    first = min(stores.work_orders.list(), key=lambda o: o.due_at or T0)
    booking = stores.bookings.get(first.id)
    away = booking.technician_id
    stores.technicians.add_time_off(
        away,
        NewTimeOff(start_at=booking.start_at - timedelta(hours=1), end_at=booking.end_at),
        actor="planner",
    )
    report = stores.run()
    assert (report.moved, report.unbooked_again) == (1, 0)
    moved = stores.bookings.get(first.id)
    assert moved.sequence == 1
    assert moved.status == "booked"
    assert moved.technician_id != away
    assert stores.work_orders.get(first.id).technician_id == moved.technician_id
    note = stores.work_orders.events(first.id)[-1].note or ""
    assert "no longer held" in note
    assert f"technician {away!r} is off" in note
    assert stores.run().moved == 0  # the new slot holds
    assert_calendars_sound(stores)


def test_a_booking_with_nowhere_to_go_is_freed_and_booked_again_later(stores: Stores) -> None:
    seed(stores, pumps=1)
    stores.technicians.add(technician("solo", sites=["north"], skills=["welding"]))
    add_plan(stores, plan("welding", required_skills=["welding"]))
    stores.run()
    order = min(stores.work_orders.list(), key=lambda o: o.due_at or T0)
    assert order.technician_id == "solo"
    # Away for the next 100 days: nobody else welds.
    leave = stores.technicians.add_time_off(
        "solo", NewTimeOff(start_at=T0, end_at=T0 + timedelta(days=100)), actor="planner"
    )
    report = stores.run()
    assert report.unbooked_again == 2
    freed = stores.work_orders.get(order.id)
    assert freed.status is WorkOrderStatus.ACCEPTED
    assert freed.technician_id is None
    assert stores.bookings.get(order.id).status == "cancelled"
    last = stores.work_orders.events(order.id)[-1]
    assert (last.from_status, last.to_status) == (
        WorkOrderStatus.SCHEDULED,
        WorkOrderStatus.ACCEPTED,
    )
    assert "no other slot" in (last.note or "")
    # Back after all: the next run books it again, the feed sees a higher sequence.
    stores.technicians.remove_time_off("solo", leave.id)
    again = stores.run()
    assert again.rebooked == 2
    rebooked = stores.bookings.get(order.id)
    assert rebooked.status == "booked"
    assert rebooked.sequence == 2
    assert stores.work_orders.get(order.id).status is WorkOrderStatus.SCHEDULED
