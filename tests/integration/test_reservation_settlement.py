"""Reservations settled with their work orders, in the SQL stores (SQLite and PostgreSQL).

A cancel or close settles reservations in the move's own transaction, so they commit
together or not at all; the reservation watch expires what is due and releases what
finished orders still hold, and racing sweepers never close one reservation twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine

from core.assets import Asset
from core.clock import FrozenClock
from core.inventory import NewLocation, ReservationStatus
from core.priority import Priority
from core.settings import Settings
from core.workorders import (
    Action,
    Completion,
    NewWorkOrder,
    PartUsed,
    TransitionDetails,
    WorkOrder,
    WorkOrderKind,
    WorkOrderStatus,
)
from pmkeeper.container import Container, scheduler_jobs
from pmkeeper.reservation_watch import ReservationSweep, ReservationWatch
from pmkeeper.scheduling import RESERVATION_JOB
from storage.alerting import SqlWorkOrderRepository
from storage.inventory import SqlInventoryRepository
from storage.repositories import SqlAssetRepository
from tests.integration.test_inventory import (
    PLANNER,
    SKU,
    STORE,
    T0,
    TECH,
    assert_consistent,
    bearing,
    figures,
    q,
    receive,
    reserve,
    snapshot,
)
from tests.support.workorders import act, start

LATER = T0 + timedelta(hours=1)


class HookFailedError(Exception):
    """Raised by a hook that runs after the settlement, to show both roll back."""


@pytest.fixture
def inventory(database_engine: Engine) -> Iterator[SqlInventoryRepository]:
    repo = SqlInventoryRepository(database_engine, clock=FrozenClock(T0))
    repo.add_location(NewLocation(code=STORE, name="Main store"))
    repo.add_part(bearing())
    yield repo
    assert_consistent(database_engine)  # whatever the test did, the invariant still holds


@pytest.fixture
def orders(database_engine: Engine, inventory: SqlInventoryRepository) -> SqlWorkOrderRepository:
    SqlAssetRepository(database_engine, clock=FrozenClock(T0)).add(
        Asset(id="pump-1", name="Feed pump 1", type="pump", site="north")
    )
    return SqlWorkOrderRepository(database_engine, on_transition=[inventory.settle_reservations])


def new_order(orders: SqlWorkOrderRepository) -> int:
    order = NewWorkOrder(
        kind=WorkOrderKind.PREVENTIVE, priority=Priority.MEDIUM, asset_id="pump-1", title="Bearings"
    )
    return orders.create(order, T0, actor=PLANNER).id


def used(quantity: float) -> Completion:
    return Completion(
        findings="replaced",
        failure_code="BRG-WEAR",
        labour_minutes=30,
        parts_used=[PartUsed(sku=SKU, quantity=quantity)],
        downtime_minutes=30,
    )


def test_a_cancel_and_its_releases_roll_back_together(
    inventory: SqlInventoryRepository, database_engine: Engine
) -> None:
    def fail(
        connection: Connection,
        order: WorkOrder,
        *,
        from_status: WorkOrderStatus,
        actor: str,
        note: str | None,
        now: datetime,
    ) -> None:
        raise HookFailedError(f"after settling {order.id}")

    SqlAssetRepository(database_engine, clock=FrozenClock(T0)).add(
        Asset(id="pump-1", name="Feed pump 1", type="pump", site="north")
    )
    failing = SqlWorkOrderRepository(
        database_engine, on_transition=[inventory.settle_reservations, fail]
    )
    order_id = new_order(failing)
    receive(inventory, 10)
    held = reserve(inventory, 4, work_order_id=order_id)
    before = snapshot(database_engine)
    with pytest.raises(HookFailedError):
        act(failing, order_id, Action.CANCEL, PLANNER, LATER, note="not needed")
    assert failing.get(order_id).status is WorkOrderStatus.REQUESTED
    assert [event.to_status for event in failing.events(order_id)] == [WorkOrderStatus.REQUESTED]
    assert inventory.get_reservation(held.id).status is ReservationStatus.RESERVED
    assert snapshot(database_engine) == before


def test_close_settles_in_the_same_transaction_as_the_move(
    inventory: SqlInventoryRepository, orders: SqlWorkOrderRepository
) -> None:
    order_id = new_order(orders)
    receive(inventory, 10)
    first = reserve(inventory, 2, work_order_id=order_id)
    second = reserve(inventory, 2, work_order_id=order_id)
    start(orders, order_id, TECH, T0)
    details = TransitionDetails(completion=used(3))
    orders.transition(order_id, Action.RESOLVE, details, actor=TECH, now=T0)
    closed = orders.transition(
        order_id, Action.CLOSE, TransitionDetails(), actor=PLANNER, now=LATER
    )
    assert closed.status is WorkOrderStatus.CLOSED
    settled = [inventory.get_reservation(r.id) for r in (first, second)]
    assert [(r.status, r.issued_quantity, r.closed_at) for r in settled] == [
        (ReservationStatus.ISSUED, Decimal(2), LATER),
        (ReservationStatus.ISSUED, Decimal(1), LATER),
    ]
    assert figures(inventory) == q(7, 0, 7)


def test_the_sweep_releases_what_finished_orders_still_hold(
    inventory: SqlInventoryRepository,
    orders: SqlWorkOrderRepository,
    database_engine: Engine,
) -> None:
    # A reservation made while its order was being cancelled or closed (after the reserve
    # checked the status) is left held: a repository without the hook makes that happen.
    unhooked = SqlWorkOrderRepository(database_engine)
    cancelled, closed, open_ = new_order(orders), new_order(orders), new_order(orders)
    receive(inventory, 20)
    stale_cancelled = reserve(inventory, 2, work_order_id=cancelled)
    stale_closed = reserve(inventory, 3, work_order_id=closed)
    kept = reserve(inventory, 4, work_order_id=open_)
    issued = reserve(inventory, 1, work_order_id=cancelled)
    inventory.issue(issued.id, actor=TECH)
    act(unhooked, cancelled, Action.CANCEL, PLANNER, T0, note="duplicate")
    start(unhooked, closed, TECH, T0)
    unhooked.transition(
        closed, Action.RESOLVE, TransitionDetails(completion=used(0.001)), actor=TECH, now=T0
    )
    act(unhooked, closed, Action.CLOSE, PLANNER, T0)
    assert figures(inventory) == q(19, 9, 10)

    released = inventory.release_for_finished_orders(LATER)
    assert [(r.id, r.status, r.closed_by, r.closing_note) for r in released] == [
        (
            stale_cancelled.id,
            ReservationStatus.RELEASED,
            "system",
            f"work order {cancelled} is cancelled",
        ),
        (stale_closed.id, ReservationStatus.RELEASED, "system", f"work order {closed} is closed"),
    ]
    assert inventory.release_for_finished_orders(LATER) == []  # idempotent
    assert inventory.get_reservation(kept.id).status is ReservationStatus.RESERVED
    assert inventory.get_reservation(issued.id).status is ReservationStatus.ISSUED
    assert figures(inventory) == q(19, 4, 15)
    assert_consistent(database_engine)


def test_the_watch_expires_what_is_due_and_never_an_issued_reservation(
    inventory: SqlInventoryRepository,
    orders: SqlWorkOrderRepository,
    database_engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    order_id = new_order(orders)
    receive(inventory, 10)
    due = reserve(inventory, 3, work_order_id=order_id, expires_at=T0 + timedelta(minutes=30))
    issued = reserve(inventory, 2, work_order_id=order_id, expires_at=T0 + timedelta(minutes=30))
    released = reserve(inventory, 1, work_order_id=order_id, expires_at=T0 + timedelta(minutes=30))
    later = reserve(inventory, 1, work_order_id=order_id, expires_at=T0 + timedelta(days=2))
    inventory.issue(issued.id, actor=TECH)
    inventory.release(released.id, actor=TECH)
    clock = FrozenClock(LATER)
    watch = ReservationWatch(
        inventory.expire_due, inventory.release_for_finished_orders, clock, timedelta(seconds=60)
    )
    with caplog.at_level(logging.INFO, logger="pmkeeper.reservation_watch"):
        swept = watch.sweep_once()
    assert [(r.id, r.status, r.closed_at) for r in swept.expired] == [
        (due.id, ReservationStatus.EXPIRED, LATER)
    ]
    assert swept.released == []
    assert f"reservation {due.id} of work order {order_id} expired" in caplog.text
    assert inventory.get_reservation(issued.id).status is ReservationStatus.ISSUED
    assert inventory.get_reservation(released.id).status is ReservationStatus.RELEASED
    assert inventory.get_reservation(later.id).status is ReservationStatus.RESERVED
    assert figures(inventory) == q(8, 1, 7)
    assert watch.sweep_once().expired == []  # nothing twice


def test_racing_sweepers_close_each_reservation_once(
    inventory: SqlInventoryRepository, database_engine: Engine
) -> None:
    receive(inventory, 50)
    due = [reserve(inventory, 1, expires_at=T0 + timedelta(minutes=1)) for _ in range(20)]
    sweepers = 4
    barrier = threading.Barrier(sweepers)
    results: list[list[int]] = []
    lock = threading.Lock()
    repos = [SqlInventoryRepository(database_engine, FrozenClock(T0)) for _ in range(sweepers)]

    def sweep(repo: SqlInventoryRepository) -> None:
        barrier.wait(timeout=30)
        expired = [r.id for r in repo.expire_due(LATER)]
        with lock:
            results.append(expired)

    threads = [threading.Thread(target=sweep, args=(repo,)) for repo in repos]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    closed = sorted(rid for ids in results for rid in ids)
    assert closed == sorted(r.id for r in due)  # every one, none twice
    assert figures(inventory) == q(50, 0, 50)
    assert_consistent(database_engine)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_composition_root_wires_the_settlement_and_the_watch(
    database_url: str, tmp_path: Path, enabled: bool
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database={"url": database_url},
        inventory={"expiry_enabled": enabled, "expiry_sweep_s": 5},
    )
    container = Container.build(settings, clock=FrozenClock(T0))
    try:
        jobs = {job.id: job for job in scheduler_jobs(container)}
        if not enabled:
            assert RESERVATION_JOB not in jobs
            return
        job = jobs[RESERVATION_JOB]
        assert job.every_s == 5
        container.assets.add(Asset(id="pump-1", name="Feed pump 1", type="pump", site="north"))
        container.inventory.add_location(NewLocation(code=STORE, name="Main store"))
        container.inventory.add_part(bearing())
        receive(container.inventory, 5)
        order_id = new_order(container.work_orders)
        held = reserve(container.inventory, 2, work_order_id=order_id)
        act(container.work_orders, order_id, Action.CANCEL, PLANNER, LATER, note="not needed")
        assert container.inventory.get_reservation(held.id).status is ReservationStatus.RELEASED
        due = reserve(container.inventory, 1, work_order_id=order_id, expires_at=LATER)
        # The order is cancelled: the sweep releases it (or would expire it once due).
        swept = job.run()
        assert isinstance(swept, ReservationSweep)
        assert [r.id for r in [*swept.expired, *swept.released]] == [due.id]
    finally:
        container.close()
