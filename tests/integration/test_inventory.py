"""The parts inventory on SQLite and the real PostgreSQL: stock, ledger, reservations, races."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import Engine, func, select

from core.clock import FrozenClock
from core.errors import ConflictError, NotFoundError, ValidationError
from core.inventory import (
    DEFAULT_HOLD_FOR,
    InsufficientStockError,
    InventoryRepository,
    MovementKind,
    NewLocation,
    NewMovement,
    NewPart,
    NewReservation,
    PartChanges,
    Reservation,
    ReservationStatus,
    Unit,
)
from core.workorders import InvalidTransitionError
from storage.db import create_engine_for
from storage.inventory import SqlInventoryRepository
from storage.tables import part_reservations, stock, stock_ledger, stock_out_events

T = TypeVar("T")

T0 = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
SKU = "BRG-6205"
STORE = "main-store"
VAN = "van-3"
PLANNER = "planner@plant"
TECH = "tech@plant"
D = Decimal

# --- the invariant --------------------------------------------------------------------


def assert_consistent(engine: Engine) -> None:
    """Check, from the tables, what every (sku, location) must satisfy at all times.

    on_hand is the sum of its ledger; 0 <= reserved <= on_hand; reserved is the sum of
    its reservations still held; and no ledger entry or reservation lacks a stock row.
    """
    with engine.connect() as connection:
        levels = {
            (row.sku, row.location): (row.on_hand_milli, row.reserved_milli)
            for row in connection.execute(select(stock))
        }
        ledger: dict[tuple[str, str], int] = {
            (row.sku, row.location): int(row.total)
            for row in connection.execute(
                select(
                    stock_ledger.c.sku,
                    stock_ledger.c.location,
                    func.sum(stock_ledger.c.quantity_milli).label("total"),
                ).group_by(stock_ledger.c.sku, stock_ledger.c.location)
            )
        }
        held: dict[tuple[str, str], int] = {
            (row.sku, row.location): int(row.total)
            for row in connection.execute(
                select(
                    part_reservations.c.sku,
                    part_reservations.c.location,
                    func.sum(part_reservations.c.quantity_milli).label("total"),
                )
                .where(part_reservations.c.status == ReservationStatus.RESERVED.value)
                .group_by(part_reservations.c.sku, part_reservations.c.location)
            )
        }
    assert set(ledger) <= set(levels), "ledger entries without a stock row"
    assert set(held) <= set(levels), "held reservations without a stock row"
    for key, (on_hand, reserved) in levels.items():
        assert on_hand == ledger.get(key, 0), f"{key}: on_hand {on_hand} != ledger"
        assert 0 <= reserved <= on_hand, f"{key}: reserved {reserved}, on_hand {on_hand}"
        assert reserved == held.get(key, 0), f"{key}: reserved {reserved} != held reservations"


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Return every inventory row that can change, to show a refusal changed nothing."""
    tables = {
        "stock": stock,
        "ledger": stock_ledger,
        "reservations": part_reservations,
        "stock_outs": stock_out_events,
    }
    with engine.connect() as connection:
        return {
            name: [tuple(row) for row in connection.execute(select(table).order_by(*table.c))]
            for name, table in tables.items()
        }


# --- fixtures and builders ------------------------------------------------------------


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def inventory(database_engine: Engine, clock: FrozenClock) -> Iterator[SqlInventoryRepository]:
    repo = SqlInventoryRepository(database_engine, clock=clock)
    repo.add_location(NewLocation(code=STORE, name="Main store", site="north"))
    repo.add_location(NewLocation(code=VAN, name="Service van 3"))
    repo.add_part(bearing())
    yield repo
    assert_consistent(database_engine)  # whatever the test did, the invariant still holds


def bearing(**fields: Any) -> NewPart:
    values: dict[str, Any] = {
        "sku": SKU,
        "name": "Deep groove ball bearing 6205",
        "unit": Unit.PIECE,
        "category": "bearings",
        "reorder_point": D(2),
        "reorder_quantity": D(10),
    }
    values.update(fields)
    return NewPart.model_validate(values)


def receive(
    repo: SqlInventoryRepository, quantity: Decimal | int, location: str = STORE, sku: str = SKU
) -> None:
    repo.record_movement(
        NewMovement(kind=MovementKind.RECEIPT, sku=sku, location=location, quantity=D(quantity)),
        actor=PLANNER,
    )


def reserve(
    repo: SqlInventoryRepository,
    quantity: Decimal | int,
    work_order_id: int = 101,
    location: str = STORE,
    **fields: Any,
) -> Reservation:
    request = NewReservation(
        work_order_id=work_order_id, sku=SKU, location=location, quantity=D(quantity), **fields
    )
    return repo.reserve(request, actor=PLANNER)


def q(*quantities: int | str | Decimal) -> tuple[Decimal, ...]:
    """Return quantities as the Decimals the repository answers with."""
    return tuple(D(quantity) for quantity in quantities)


def figures(repo: SqlInventoryRepository, location: str = STORE) -> tuple[Decimal, ...]:
    level = repo.stock(SKU, location)
    return level.on_hand, level.reserved, level.available


# --- parts and locations --------------------------------------------------------------


def test_the_sql_repository_is_an_inventory_repository(inventory: SqlInventoryRepository) -> None:
    port: InventoryRepository = inventory
    assert port.get_part(SKU).unit is Unit.PIECE


def test_parts_and_locations_round_trip(
    inventory: SqlInventoryRepository, clock: FrozenClock
) -> None:
    part = inventory.get_part(SKU)
    assert part.model_dump() == {
        **bearing().model_dump(),
        "created_at": T0,
        "updated_at": T0,
    }
    assert [location.code for location in inventory.locations()] == [STORE, VAN]
    assert inventory.get_location(STORE).site == "north"
    oil = inventory.add_part(
        NewPart(sku="OIL-ISO46", name="Hydraulic oil", unit=Unit.LITRE, category="lubricants")
    )
    assert inventory.parts() == [inventory.get_part(SKU), oil]
    assert inventory.parts(category="lubricants") == [oil]
    assert inventory.parts(after_sku=SKU) == [oil]

    clock.at = T0 + timedelta(hours=1)
    changed = inventory.update_part(SKU, PartChanges(reorder_point=D(4), name="Bearing 6205"))
    assert (changed.name, changed.reorder_point, changed.reorder_quantity) == (
        "Bearing 6205",
        D(4),
        D(10),
    )
    assert changed.updated_at == T0 + timedelta(hours=1)
    assert inventory.get_part(SKU) == changed


def test_duplicates_are_conflicts(inventory: SqlInventoryRepository) -> None:
    with pytest.raises(ConflictError):
        inventory.add_part(bearing(name="Another"))
    with pytest.raises(ConflictError):
        inventory.add_location(NewLocation(code=STORE, name="Again"))
    assert inventory.get_part(SKU).name == "Deep groove ball bearing 6205"


def test_whole_units_refuse_fractions_and_litres_take_them(
    inventory: SqlInventoryRepository, database_engine: Engine
) -> None:
    with pytest.raises(PydanticValidationError, match="whole number"):
        bearing(reorder_point=D("1.5"))
    with pytest.raises(PydanticValidationError, match="decimal places"):
        NewMovement(kind=MovementKind.RECEIPT, sku=SKU, location=STORE, quantity=D("1.0005"))
    with pytest.raises(ValidationError, match="whole number"):
        receive(inventory, D("1.5"))
    with pytest.raises(ValidationError, match="whole number"):
        inventory.update_part(SKU, PartChanges(reorder_quantity=D("0.5")))

    inventory.add_part(
        NewPart(sku="OIL-ISO46", name="Hydraulic oil", unit=Unit.LITRE, category="lubricants")
    )
    receive(inventory, D("20.5"), sku="OIL-ISO46")
    request = NewReservation(work_order_id=7, sku="OIL-ISO46", location=STORE, quantity=D("0.125"))
    held = inventory.reserve(request, actor=TECH)
    inventory.issue(held.id, actor=TECH)
    level = inventory.stock("OIL-ISO46", STORE)
    assert (level.on_hand, level.reserved, level.available) == q("20.375", 0, "20.375")
    assert_consistent(database_engine)


# --- the happy path -------------------------------------------------------------------


def test_receive_reserve_and_issue_on_completion(
    inventory: SqlInventoryRepository, database_engine: Engine, clock: FrozenClock
) -> None:
    assert figures(inventory) == q(0, 0, 0)
    receive(inventory, 10)
    assert figures(inventory) == q(10, 0, 10)
    assert_consistent(database_engine)

    held = reserve(inventory, 4, work_order_id=101, note="for the pump overhaul")
    assert held.status is ReservationStatus.RESERVED
    assert (held.work_order_id, held.quantity, held.created_by) == (101, D(4), PLANNER)
    assert held.expires_at == T0 + DEFAULT_HOLD_FOR
    assert figures(inventory) == q(10, 4, 6)
    assert_consistent(database_engine)

    clock.at = T0 + timedelta(hours=3)
    issued = inventory.issue(held.id, actor=TECH, note="fitted")
    assert issued.status is ReservationStatus.ISSUED
    assert issued.issued_quantity == 4
    assert (issued.closed_at, issued.closed_by, issued.closing_note) == (
        T0 + timedelta(hours=3),
        TECH,
        "fitted",
    )
    assert inventory.get_reservation(held.id) == issued
    assert figures(inventory) == q(6, 0, 6)
    assert_consistent(database_engine)

    receipt, issue = inventory.ledger(sku=SKU, location=STORE)
    assert (receipt.kind, receipt.quantity, receipt.actor, receipt.at) == (
        MovementKind.RECEIPT,
        D(10),
        PLANNER,
        T0,
    )
    assert (issue.kind, issue.quantity, issue.work_order_id, issue.reservation_id) == (
        MovementKind.ISSUE,
        D(-4),
        101,
        held.id,
    )
    assert (issue.actor, issue.at, issue.reason) == (TECH, T0 + timedelta(hours=3), "fitted")
    assert inventory.ledger(work_order_id=101) == [issue]
    assert inventory.ledger(after_id=receipt.id) == [issue]
    assert sum(entry.quantity for entry in inventory.ledger()) == figures(inventory)[0]
    assert inventory.stock_outs() == []


def test_a_partial_issue_frees_what_was_not_used(
    inventory: SqlInventoryRepository, database_engine: Engine
) -> None:
    receive(inventory, 10)
    held = reserve(inventory, 5)
    issued = inventory.issue(held.id, actor=TECH, quantity=D(3))
    assert (issued.status, issued.quantity, issued.issued_quantity) == (
        ReservationStatus.ISSUED,
        D(5),
        D(3),
    )
    assert figures(inventory) == q(7, 0, 7)
    assert [entry.quantity for entry in inventory.ledger()] == list(q(10, -3))
    assert_consistent(database_engine)


def test_issuing_more_than_reserved_is_refused(
    inventory: SqlInventoryRepository, database_engine: Engine
) -> None:
    receive(inventory, 10)
    held = reserve(inventory, 2)
    before = snapshot(database_engine)
    for quantity in (D(3), D(0), D("1.5"), D("1.0001")):
        with pytest.raises(ValidationError):
            inventory.issue(held.id, actor=TECH, quantity=quantity)
    assert snapshot(database_engine) == before


def test_movements_of_every_kind_land_in_the_ledger(
    inventory: SqlInventoryRepository, database_engine: Engine
) -> None:
    moves = [
        NewMovement(kind=MovementKind.RECEIPT, sku=SKU, location=STORE, quantity=D(10)),
        NewMovement(
            kind=MovementKind.ISSUE, sku=SKU, location=STORE, quantity=D(2), work_order_id=9
        ),
        NewMovement(
            kind=MovementKind.RETURN, sku=SKU, location=STORE, quantity=D(1), work_order_id=9
        ),
        NewMovement(
            kind=MovementKind.SCRAP, sku=SKU, location=STORE, quantity=D(1), reason="rusted"
        ),
        NewMovement(
            kind=MovementKind.ADJUST, sku=SKU, location=STORE, quantity=D(-2), reason="count"
        ),
        NewMovement(
            kind=MovementKind.ADJUST, sku=SKU, location=STORE, quantity=D(3), reason="found"
        ),
    ]
    recorded = [inventory.record_movement(move, actor=PLANNER) for move in moves]
    assert [(entry.kind, entry.quantity) for entry in recorded] == [
        (MovementKind.RECEIPT, D(10)),
        (MovementKind.ISSUE, D(-2)),
        (MovementKind.RETURN, D(1)),
        (MovementKind.SCRAP, D(-1)),
        (MovementKind.ADJUST, D(-2)),
        (MovementKind.ADJUST, D(3)),
    ]
    assert inventory.ledger() == recorded
    assert recorded[3].reason == "rusted"
    assert figures(inventory) == q(9, 0, 9)
    assert_consistent(database_engine)


# --- release, expiry, double closes ---------------------------------------------------


def test_release_on_cancel_gives_the_stock_back(
    inventory: SqlInventoryRepository, database_engine: Engine, clock: FrozenClock
) -> None:
    receive(inventory, 10)
    receive(inventory, 5, location=VAN)
    held = reserve(inventory, 4)
    clock.at = T0 + timedelta(minutes=5)
    released = inventory.release(held.id, actor=PLANNER, note="order cancelled")
    assert (released.status, released.closed_at, released.closing_note) == (
        ReservationStatus.RELEASED,
        T0 + timedelta(minutes=5),
        "order cancelled",
    )
    assert figures(inventory) == q(10, 0, 10)
    assert len(inventory.ledger()) == 2  # the two receipts: a release moves no stock
    assert_consistent(database_engine)

    first = reserve(inventory, 3, work_order_id=202)
    second = reserve(inventory, 2, work_order_id=202, location=VAN)
    other = reserve(inventory, 1, work_order_id=303)
    released_all = inventory.release_for_work_order(202, actor=PLANNER, note="cancelled")
    assert [r.id for r in released_all] == [first.id, second.id]
    assert inventory.release_for_work_order(202, actor=PLANNER) == []
    assert [r.id for r in inventory.reservations(status=ReservationStatus.RESERVED)] == [other.id]
    assert figures(inventory) == q(10, 1, 9)
    assert figures(inventory, VAN) == q(5, 0, 5)
    assert_consistent(database_engine)


def test_expiry_sweep_frees_only_what_is_due(
    inventory: SqlInventoryRepository, database_engine: Engine
) -> None:
    receive(inventory, 10)
    soon = reserve(inventory, 3, expires_at=T0 + timedelta(hours=1))
    later = reserve(inventory, 2, expires_at=T0 + timedelta(days=2))
    issued = reserve(inventory, 1, expires_at=T0 + timedelta(minutes=30))
    inventory.issue(issued.id, actor=TECH)
    assert inventory.expire_due(T0 + timedelta(minutes=59)) == []

    expired = inventory.expire_due(T0 + timedelta(hours=1))
    assert [(r.id, r.status, r.closed_at) for r in expired] == [
        (soon.id, ReservationStatus.EXPIRED, T0 + timedelta(hours=1))
    ]
    assert inventory.expire_due(T0 + timedelta(hours=1)) == []  # a second sweep: nothing
    assert inventory.get_reservation(later.id).status is ReservationStatus.RESERVED
    assert figures(inventory) == q(9, 2, 7)
    assert_consistent(database_engine)
    with pytest.raises(InvalidTransitionError):
        inventory.issue(soon.id, actor=TECH)


def test_an_expiry_in_the_past_is_refused(inventory: SqlInventoryRepository) -> None:
    receive(inventory, 10)
    with pytest.raises(ValidationError, match="future"):
        reserve(inventory, 1, expires_at=T0)


@pytest.mark.parametrize(
    ("first", "second"),
    [("release", "release"), ("release", "issue"), ("issue", "issue"), ("issue", "release")],
)
def test_closing_a_reservation_twice_is_refused_and_changes_nothing(
    inventory: SqlInventoryRepository, database_engine: Engine, first: str, second: str
) -> None:
    receive(inventory, 10)
    held = reserve(inventory, 4)
    close: dict[str, Callable[[int], Reservation]] = {
        "release": lambda reservation_id: inventory.release(reservation_id, actor=PLANNER),
        "issue": lambda reservation_id: inventory.issue(reservation_id, actor=TECH),
    }
    close[first](held.id)
    before = snapshot(database_engine)
    with pytest.raises(InvalidTransitionError) as caught:
        close[second](held.id)
    assert isinstance(caught.value, ConflictError)
    assert caught.value.code == "invalid_transition"
    assert snapshot(database_engine) == before
    assert_consistent(database_engine)


def test_racing_closes_of_one_reservation_apply_once(database_url: str) -> None:
    engine = create_engine_for(database_url, pool_size=8)
    try:
        repo = setup_stock(engine, 10)
        held = [reserve(repo, 1, work_order_id=n) for n in range(1, 5)]
        # Each reservation is released and issued by two clients at once.
        jobs: list[Callable[[], Reservation]] = []
        for reservation in held:
            jobs.append(partial(repo.release, reservation.id, actor=PLANNER))
            jobs.append(partial(repo.issue, reservation.id, actor=TECH))
        outcomes = race(jobs)
        won = [o for o in outcomes if isinstance(o, Reservation)]
        lost = [o for o in outcomes if isinstance(o, InvalidTransitionError)]
        assert (len(won), len(lost)) == (4, 4)
        assert sorted(r.id for r in won) == sorted(r.id for r in held)
        issued = sum(1 for r in won if r.status is ReservationStatus.ISSUED)
        assert figures(repo) == q(10 - issued, 0, 10 - issued)
        assert_consistent(engine)
    finally:
        engine.dispose()


# --- refusals -------------------------------------------------------------------------


def test_scrap_and_adjust_need_a_reason(inventory: SqlInventoryRepository) -> None:
    for kind in (MovementKind.SCRAP, MovementKind.ADJUST):
        for reason in (None, "   "):
            with pytest.raises(PydanticValidationError, match="needs a reason"):
                NewMovement(kind=kind, sku=SKU, location=STORE, quantity=D(1), reason=reason)
    with pytest.raises(PydanticValidationError, match="must change"):
        NewMovement(kind=MovementKind.ADJUST, sku=SKU, location=STORE, quantity=D(0), reason="x")
    with pytest.raises(PydanticValidationError, match="positive"):
        NewMovement(kind=MovementKind.RECEIPT, sku=SKU, location=STORE, quantity=D(-1))
    with pytest.raises(PydanticValidationError, match="work order"):
        NewMovement(kind=MovementKind.ISSUE, sku=SKU, location=STORE, quantity=D(1))
    assert inventory.ledger() == []


def test_movements_never_take_on_hand_below_zero_or_below_reserved(
    inventory: SqlInventoryRepository, database_engine: Engine
) -> None:
    def scrap(quantity: int) -> None:
        inventory.record_movement(
            NewMovement(
                kind=MovementKind.SCRAP, sku=SKU, location=STORE, quantity=D(quantity), reason="x"
            ),
            actor=PLANNER,
        )

    def adjust(quantity: int) -> None:
        inventory.record_movement(
            NewMovement(
                kind=MovementKind.ADJUST,
                sku=SKU,
                location=STORE,
                quantity=D(quantity),
                reason="count",
            ),
            actor=PLANNER,
        )

    with pytest.raises(InsufficientStockError):
        scrap(1)  # nothing ever moved here
    receive(inventory, 5)
    reserve(inventory, 3)
    before = snapshot(database_engine)
    refusals: list[Callable[[], None]] = [partial(scrap, 6), partial(scrap, 3), partial(adjust, -3)]
    for refused in refusals:
        with pytest.raises(InsufficientStockError) as caught:
            refused()
        assert caught.value.available == 2
        assert snapshot(database_engine) == before
    adjust(-2)
    assert figures(inventory) == q(3, 3, 0)
    assert inventory.stock_outs() == []  # write-offs are not demand
    assert_consistent(database_engine)


def test_an_unplanned_issue_short_of_stock_is_a_stock_out(
    inventory: SqlInventoryRepository, database_engine: Engine
) -> None:
    receive(inventory, 2)
    with pytest.raises(InsufficientStockError) as caught:
        inventory.record_movement(
            NewMovement(
                kind=MovementKind.ISSUE, sku=SKU, location=STORE, quantity=D(3), work_order_id=8
            ),
            actor=TECH,
        )
    assert (caught.value.requested, caught.value.available) == q(3, 2)
    [event] = inventory.stock_outs()
    assert (event.work_order_id, event.requested, event.available) == (8, D(3), D(2))
    assert figures(inventory) == q(2, 0, 2)
    assert_consistent(database_engine)


def test_unknown_parts_locations_and_reservations_are_not_found(
    inventory: SqlInventoryRepository, database_engine: Engine
) -> None:
    receive(inventory, 5)
    before = snapshot(database_engine)
    attempts: list[Callable[[], object]] = [
        lambda: inventory.get_part("NOPE"),
        lambda: inventory.get_location("nowhere"),
        lambda: inventory.update_part("NOPE", PartChanges(name="x")),
        lambda: inventory.stock("NOPE", STORE),
        lambda: inventory.stock(SKU, "nowhere"),
        lambda: receive(inventory, 1, sku="NOPE"),
        lambda: receive(inventory, 1, location="nowhere"),
        lambda: reserve(inventory, 1, location="nowhere"),
        lambda: inventory.reserve(
            NewReservation(work_order_id=1, sku="NOPE", location=STORE, quantity=D(1)),
            actor=PLANNER,
        ),
        lambda: inventory.get_reservation(999),
        lambda: inventory.release(999, actor=PLANNER),
        lambda: inventory.issue(999, actor=TECH),
    ]
    for attempt in attempts:
        with pytest.raises(NotFoundError):
            attempt()
    assert snapshot(database_engine) == before


# --- shortage, stock-outs and reorder signals -----------------------------------------


def test_a_shortage_is_refused_with_its_figures_recorded_and_signalled(
    inventory: SqlInventoryRepository, database_engine: Engine, clock: FrozenClock
) -> None:
    receive(inventory, 7)
    reserve(inventory, 4, work_order_id=101)
    assert inventory.reorder_signals() == []  # 3 available: above the reorder point of 2...
    reserve(inventory, 1, work_order_id=102)
    [signal] = inventory.reorder_signals()  # ... now at it: order back up to 2 + 10
    assert (signal.sku, signal.available, signal.suggested_quantity) == (SKU, D(2), D(10))

    clock.at = T0 + timedelta(minutes=1)
    before = snapshot(database_engine)
    with pytest.raises(InsufficientStockError) as caught:
        reserve(inventory, 3, work_order_id=103)
    shortage = caught.value
    assert (shortage.code, shortage.sku, shortage.location, shortage.work_order_id) == (
        "insufficient_stock",
        SKU,
        STORE,
        103,
    )
    assert (shortage.requested, shortage.available, shortage.shortfall) == q(3, 2, 1)
    assert shortage.extra["requested"] == "3"  # JSON-ready for problem+json
    # Ordered so the demand can be met and the stock ends at reorder point + quantity.
    assert shortage.reorder is not None
    assert (shortage.reorder.available, shortage.reorder.suggested_quantity) == q(-1, 13)

    after = snapshot(database_engine)
    assert {name: rows for name, rows in after.items() if name != "stock_outs"} == {
        name: rows for name, rows in before.items() if name != "stock_outs"
    }
    [event] = inventory.stock_outs()
    assert (event.sku, event.location, event.work_order_id) == (SKU, STORE, 103)
    assert (event.requested, event.available, event.at) == (D(3), D(2), T0 + timedelta(minutes=1))
    assert inventory.stock_outs(since=T0 + timedelta(minutes=2)) == []
    assert inventory.reservations(work_order_id=103) == []
    assert_consistent(database_engine)


def test_reserving_where_nothing_ever_moved_is_a_shortage(
    inventory: SqlInventoryRepository, database_engine: Engine
) -> None:
    receive(inventory, 50)
    with pytest.raises(InsufficientStockError) as caught:
        reserve(inventory, 1, location=VAN)
    assert (caught.value.requested, caught.value.available) == q(1, 0)
    # 49 left elsewhere: a transfer, not a purchase, covers it.
    assert caught.value.reorder is None
    assert [event.location for event in inventory.stock_outs()] == [VAN]
    assert_consistent(database_engine)


def test_reorder_signals_pool_locations_and_skip_unstocked_parts(
    inventory: SqlInventoryRepository,
) -> None:
    inventory.add_part(
        NewPart(sku="SEAL-1", name="Seal", unit=Unit.PIECE, category="seals")  # not stocked
    )
    inventory.add_part(bearing(sku="BRG-6306", reorder_point=D(3), reorder_quantity=D(0)))
    receive(inventory, 2, location=STORE)
    receive(inventory, 1, location=VAN)  # 3 in all: above the reorder point of 2
    [signal] = inventory.reorder_signals()
    assert (signal.available, signal.reorder_point, signal.suggested_quantity) == q(0, 3, 3)


# --- concurrency ----------------------------------------------------------------------

CLIENTS = 50


def setup_stock(engine: Engine, quantity: int) -> SqlInventoryRepository:
    repo = SqlInventoryRepository(engine, clock=FrozenClock(T0))
    repo.add_location(NewLocation(code=STORE, name="Main store"))
    repo.add_part(bearing())
    receive(repo, quantity)
    return repo


def race(jobs: list[Callable[[], T]]) -> list[T | Exception]:
    """Run every job on its own thread, all released at once; return results or errors."""
    barrier = threading.Barrier(len(jobs))

    def run(job: Callable[[], T]) -> T | Exception:
        barrier.wait(timeout=30)
        try:
            return job()
        except Exception as exc:  # noqa: BLE001 - the test sorts outcomes by type
            return exc

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(run, jobs))


@pytest.fixture
def racing_engine(database_url: str) -> Iterator[Engine]:
    """An engine with a connection for every client, so all of them hit the database at once."""
    engine = create_engine_for(database_url, pool_size=CLIENTS, max_overflow=0)
    try:
        yield engine
    finally:
        engine.dispose()


def test_fifty_clients_racing_for_ten_units_never_over_reserve(racing_engine: Engine) -> None:
    repo = setup_stock(racing_engine, 10)
    outcomes = race([partial(reserve, repo, 1, work_order_id=1000 + n) for n in range(CLIENTS)])

    won = [o for o in outcomes if isinstance(o, Reservation)]
    refused = [o for o in outcomes if isinstance(o, InsufficientStockError)]
    assert [o for o in outcomes if not isinstance(o, Reservation | InsufficientStockError)] == []
    assert (len(won), len(refused)) == (10, 40)
    assert all((e.requested, e.available) == q(1, 0) for e in refused)
    assert len({r.work_order_id for r in won}) == 10
    assert figures(repo) == q(10, 10, 0)
    assert len(repo.stock_outs()) == 40
    assert_consistent(racing_engine)

    # The winners complete their orders at once too: the ledger and the stock agree.
    race([partial(repo.issue, r.id, actor=TECH) for r in won])
    assert figures(repo) == q(0, 0, 0)
    assert sum(entry.quantity for entry in repo.ledger(limit=1000)) == 0
    assert_consistent(racing_engine)


def test_mixed_quantities_racing_never_exceed_the_stock(racing_engine: Engine) -> None:
    stocked = 40
    repo = setup_stock(racing_engine, stocked)
    wanted = [random.Random(n).randint(1, 3) for n in range(CLIENTS)]  # ~100 asked for
    outcomes = race(
        [
            partial(reserve, repo, n_units, work_order_id=2000 + n)
            for n, n_units in enumerate(wanted)
        ]
    )

    won = [o for o in outcomes if isinstance(o, Reservation)]
    refused = [o for o in outcomes if isinstance(o, InsufficientStockError)]
    assert len(won) + len(refused) == CLIENTS
    granted = sum(r.quantity for r in won)
    assert granted <= stocked
    on_hand, reserved, available = figures(repo)
    assert (on_hand, reserved, available) == q(stocked, granted, stocked - granted)
    # Available stock only fell during the race, so no request was refused that could have
    # been met: each refused one asks for more than is left.
    assert all(e.requested > available for e in refused)
    assert all(e.requested > e.available for e in refused)
    assert len(repo.stock_outs()) == len(refused)
    assert_consistent(racing_engine)

    # Half the winners are cancelled and half completed, all at once.
    race(
        [
            partial(repo.release, r.id, actor=PLANNER)
            if i % 2
            else partial(repo.issue, r.id, actor=TECH)
            for i, r in enumerate(won)
        ]
    )
    consumed = sum(r.quantity for i, r in enumerate(won) if not i % 2)
    assert figures(repo) == q(stocked - consumed, 0, stocked - consumed)
    assert_consistent(racing_engine)


def test_racing_receipts_create_one_stock_row(racing_engine: Engine) -> None:
    repo = setup_stock(racing_engine, 1)
    repo.add_location(NewLocation(code=VAN, name="Van"))
    outcomes = race([lambda: receive(repo, 1, location=VAN) for _ in range(20)])
    assert outcomes == [None] * 20
    assert figures(repo, VAN) == q(20, 0, 20)
    assert_consistent(racing_engine)
