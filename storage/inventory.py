"""The parts inventory in a SQL database (SQLite and PostgreSQL).

Every change (stock row, ledger entry, reservation) is one transaction, and each write
transaction opens with a write, so on SQLite it takes the database's write lock first
(waiting out `busy_timeout`) instead of failing to upgrade a stale read.

Reservations never over-reserve: the stock row is changed by one guarded
`UPDATE stock SET reserved = reserved + q WHERE ... AND on_hand - reserved >= q`.
On PostgreSQL a concurrent UPDATE of the same row waits for the first to commit and then
re-checks the WHERE clause against the committed row (READ COMMITTED), so the guard
always sees the latest figures; on SQLite writers are serialised. The `stock` table's
CHECK constraint refuses an over-reservation in the database itself.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    RowMapping,
    and_,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError

from core.clock import Clock, SystemClock
from core.errors import ConflictError, NotFoundError, StoreUnavailableError
from core.inventory import (
    InsufficientStockError,
    Location,
    Movement,
    MovementKind,
    NewLocation,
    NewMovement,
    NewPart,
    NewReservation,
    Part,
    PartChanges,
    ReorderSignal,
    Reservation,
    ReservationAction,
    ReservationStatus,
    StockLevel,
    StockOut,
    Unit,
    check_issuable,
    check_quantity,
    next_reservation_status,
    parts_used_totals,
    reorder_signal,
    reservation_expiry,
    settle_on_close,
)
from core.workorders import InvalidTransitionError, WorkOrder, WorkOrderStatus
from storage.alerting import SYSTEM_ACTOR, is_unique_violation
from storage.repositories import insert_ignoring_duplicates
from storage.tables import (
    part_reservations,
    parts,
    stock,
    stock_ledger,
    stock_locations,
    stock_out_events,
    work_orders,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_MILLI = 1000
# A transaction that lost a lock (SQLite busy past busy_timeout, a PostgreSQL deadlock or
# serialisation failure) was rolled back whole, so running it again is safe.
_WRITE_ATTEMPTS = 4
# Stock keys locked per statement by reserve_lines: well under every driver's parameter cap.
_KEY_CHUNK = 500
_RETRY_BASE_S = 0.01
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


def _available() -> ColumnElement[int]:
    """Return the SQL for what a stock row can still give: on_hand - reserved."""
    return stock.c.on_hand_milli - stock.c.reserved_milli


def to_milli(quantity: Decimal) -> int:
    """Return a quantity in integer thousandths; the models allow no finer quantity."""
    scaled = quantity * _MILLI
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{quantity} has more than three decimal places")
    return int(scaled)


def from_milli(milli: int) -> Decimal:
    """Return integer thousandths as a Decimal."""
    return Decimal(milli) / _MILLI


def _is_transient(error: StoreUnavailableError) -> bool:
    cause = error.__cause__
    if getattr(cause, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    code = getattr(cause, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in {_SQLITE_BUSY, _SQLITE_LOCKED}


def _stock_key(sku: str, location: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return stock.c.sku == sku, stock.c.location == location


def _part(row: RowMapping) -> Part:
    return Part(
        sku=row["sku"],
        name=row["name"],
        unit=row["unit"],
        category=row["category"],
        reorder_point=from_milli(row["reorder_point_milli"]),
        reorder_quantity=from_milli(row["reorder_quantity_milli"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _level(row: RowMapping) -> StockLevel:
    return StockLevel(
        sku=row["sku"],
        location=row["location"],
        on_hand=from_milli(row["on_hand_milli"]),
        reserved=from_milli(row["reserved_milli"]),
        updated_at=row["updated_at"],
    )


def _movement(row: RowMapping) -> Movement:
    return Movement(
        id=row["id"],
        sku=row["sku"],
        location=row["location"],
        kind=row["kind"],
        quantity=from_milli(row["quantity_milli"]),
        reason=row["reason"],
        work_order_id=row["work_order_id"],
        reservation_id=row["reservation_id"],
        actor=row["actor"],
        at=row["at"],
    )


def _reservation(row: RowMapping) -> Reservation:
    issued = row["issued_milli"]
    return Reservation(
        id=row["id"],
        work_order_id=row["work_order_id"],
        sku=row["sku"],
        location=row["location"],
        quantity=from_milli(row["quantity_milli"]),
        status=row["status"],
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        issued_quantity=None if issued is None else from_milli(issued),
        closed_at=row["closed_at"],
        closed_by=row["closed_by"],
        note=row["note"],
        closing_note=row["closing_note"],
    )


def _stock_out(row: RowMapping) -> StockOut:
    return StockOut(
        id=row["id"],
        sku=row["sku"],
        location=row["location"],
        work_order_id=row["work_order_id"],
        requested=from_milli(row["requested_milli"]),
        available=from_milli(row["available_milli"]),
        at=row["at"],
    )


@dataclass(frozen=True)
class _Shortage:
    """A demand refused inside a transaction that still commits (its stock-out event)."""

    requested_milli: int
    available_milli: int  # at the location asked for
    total_available_milli: int  # over every location, for the reorder signal


@dataclass(frozen=True)
class ReservationLine:
    """One part line a generated work order needs reserved."""

    work_order_id: int
    sku: str
    location: str
    quantity: Decimal
    expires_at: datetime
    note: str | None = None


class SqlInventoryRepository:
    """Parts, stock per location, the stock ledger and reservations, in a SQL database."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock = clock or SystemClock()

    # --- locations --------------------------------------------------------------------

    def add_location(self, location: NewLocation) -> Location:
        """Create a stock location; ConflictError if the code exists."""
        stored = Location(**location.model_dump(), created_at=self._clock.now())
        try:
            with self._engine.begin() as connection:
                connection.execute(insert(stock_locations).values(stored.model_dump()))
        except IntegrityError as exc:
            if not is_unique_violation(exc):
                raise
            raise ConflictError(
                f"location {location.code!r} already exists", location=location.code
            ) from None
        return stored

    def get_location(self, code: str) -> Location:
        """Return a location; NotFoundError if absent."""
        with self._engine.connect() as connection:
            row = connection.execute(
                select(stock_locations).where(stock_locations.c.code == code)
            ).first()
        if row is None:
            raise NotFoundError(f"location {code!r} not found", location=code)
        return Location.model_validate(dict(row._mapping))

    def locations(self) -> list[Location]:
        """Return every location, by code."""
        with self._engine.connect() as connection:
            rows = connection.execute(select(stock_locations).order_by(stock_locations.c.code))
            return [Location.model_validate(dict(row._mapping)) for row in rows]

    # --- parts ------------------------------------------------------------------------

    def add_part(self, part: NewPart) -> Part:
        """Create a part; ConflictError if the SKU exists."""
        now = self._clock.now()
        try:
            with self._engine.begin() as connection:
                row = connection.execute(
                    insert(parts)
                    .values(
                        sku=part.sku,
                        name=part.name,
                        unit=part.unit.value,
                        category=part.category,
                        reorder_point_milli=to_milli(part.reorder_point),
                        reorder_quantity_milli=to_milli(part.reorder_quantity),
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(*parts.c)
                ).one()
        except IntegrityError as exc:
            if not is_unique_violation(exc):
                raise
            raise ConflictError(f"part {part.sku!r} already exists", sku=part.sku) from None
        return _part(row._mapping)

    def get_part(self, sku: str) -> Part:
        """Return a part; NotFoundError if absent."""
        with self._engine.connect() as connection:
            return self._read_part(connection, sku)

    def update_part(self, sku: str, changes: PartChanges) -> Part:
        """Change a part's name, category or replenishment policy; NotFoundError if absent."""
        current = self.get_part(sku)
        values: dict[str, Any] = {"updated_at": self._clock.now()}
        if changes.name is not None:
            values["name"] = changes.name
        if changes.category is not None:
            values["category"] = changes.category
        for field in ("reorder_point", "reorder_quantity"):
            quantity = getattr(changes, field)
            if quantity is not None:
                check_quantity(current.unit, quantity, field)
                values[f"{field}_milli"] = to_milli(quantity)
        with self._engine.begin() as connection:
            row = connection.execute(
                update(parts).where(parts.c.sku == sku).values(values).returning(*parts.c)
            ).first()
        if row is None:
            raise NotFoundError(f"part {sku!r} not found", sku=sku)
        return _part(row._mapping)

    def parts(
        self, *, category: str | None = None, after_sku: str | None = None, limit: int = 100
    ) -> list[Part]:
        """Return parts by SKU, after `after_sku` (keyset pagination)."""
        query = select(parts).order_by(parts.c.sku).limit(limit)
        if category is not None:
            query = query.where(parts.c.category == category)
        if after_sku is not None:
            query = query.where(parts.c.sku > after_sku)
        with self._engine.connect() as connection:
            return [_part(row._mapping) for row in connection.execute(query)]

    # --- stock and the ledger ---------------------------------------------------------

    def stock(self, sku: str, location: str) -> StockLevel:
        """Return one part's stock at one location (zero if nothing moved there)."""
        with self._engine.connect() as connection:
            self._require(connection, sku, location)
            row = connection.execute(select(stock).where(*_stock_key(sku, location))).first()
        if row is None:
            return StockLevel(sku=sku, location=location, on_hand=Decimal(0), reserved=Decimal(0))
        return _level(row._mapping)

    def stock_levels(
        self,
        *,
        sku: str | None = None,
        location: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> list[StockLevel]:
        """Return the stock rows that exist, by (sku, location), after `after` (keyset)."""
        query = select(stock).order_by(stock.c.sku, stock.c.location).limit(limit)
        if sku is not None:
            query = query.where(stock.c.sku == sku)
        if location is not None:
            query = query.where(stock.c.location == location)
        if after is not None:
            after_sku, after_location = after
            query = query.where(
                or_(
                    stock.c.sku > after_sku,
                    and_(stock.c.sku == after_sku, stock.c.location > after_location),
                )
            )
        with self._engine.connect() as connection:
            return [_level(row._mapping) for row in connection.execute(query)]

    def record_movement(self, movement: NewMovement, *, actor: str) -> Movement:
        """Apply a receipt, unplanned issue, return, scrap or adjustment, with its ledger entry.

        A movement that would leave on_hand below zero or below what is reserved raises
        InsufficientStockError and changes nothing; an unplanned issue refused so is also
        recorded as a stock-out of its work order.
        """
        now = self._clock.now()
        with self._engine.connect() as connection:
            part = self._require(connection, movement.sku, movement.location)
        check_quantity(part.unit, movement.quantity)
        delta = to_milli(movement.effect)
        outcome = self._write(
            lambda connection: self._move(connection, movement, delta, actor, now)
        )
        if isinstance(outcome, _Shortage):
            raise self._shortage_error(part, movement.location, movement.work_order_id, outcome)
        return outcome

    def _move(
        self, connection: Connection, movement: NewMovement, delta: int, actor: str, now: datetime
    ) -> Movement | _Shortage:
        key = _stock_key(movement.sku, movement.location)
        if delta > 0:
            connection.execute(
                insert_ignoring_duplicates(connection, stock).values(
                    sku=movement.sku,
                    location=movement.location,
                    on_hand_milli=0,
                    reserved_milli=0,
                    updated_at=now,
                )
            )
            connection.execute(
                update(stock)
                .where(*key)
                .values(on_hand_milli=stock.c.on_hand_milli + delta, updated_at=now)
            )
        else:
            shortage = self._take(
                connection,
                sku=movement.sku,
                location=movement.location,
                amount=-delta,
                values={"on_hand_milli": stock.c.on_hand_milli + delta},
                now=now,
            )
            if shortage is not None:
                if movement.kind is MovementKind.ISSUE:
                    self._record_stock_out(
                        connection,
                        sku=movement.sku,
                        location=movement.location,
                        work_order_id=movement.work_order_id,
                        shortage=shortage,
                        now=now,
                    )
                return shortage
        return self._append(
            connection,
            sku=movement.sku,
            location=movement.location,
            kind=movement.kind,
            quantity_milli=delta,
            reason=movement.reason,
            work_order_id=movement.work_order_id,
            reservation_id=None,
            actor=actor,
            at=now,
        )

    def ledger(
        self,
        *,
        sku: str | None = None,
        location: str | None = None,
        work_order_id: int | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[Movement]:
        """Return ledger entries oldest first, after `after_id` (keyset pagination)."""
        query = select(stock_ledger).order_by(stock_ledger.c.id).limit(limit)
        if sku is not None:
            query = query.where(stock_ledger.c.sku == sku)
        if location is not None:
            query = query.where(stock_ledger.c.location == location)
        if work_order_id is not None:
            query = query.where(stock_ledger.c.work_order_id == work_order_id)
        if after_id is not None:
            query = query.where(stock_ledger.c.id > after_id)
        with self._engine.connect() as connection:
            return [_movement(row._mapping) for row in connection.execute(query)]

    # --- reservations -----------------------------------------------------------------

    def reserve(self, request: NewReservation, *, actor: str) -> Reservation:
        """Hold stock for a work order, or raise InsufficientStockError with the shortage.

        A refusal changes no stock and is recorded as a stock-out event; the error names
        what was requested and what was available, and the reorder it calls for.
        """
        now = self._clock.now()
        expires_at = reservation_expiry(request.expires_at, now)
        with self._engine.connect() as connection:
            part = self._require(connection, request.sku, request.location)
        check_quantity(part.unit, request.quantity)
        amount = to_milli(request.quantity)

        def work(connection: Connection) -> Reservation | _Shortage:
            shortage = self._take(
                connection,
                sku=request.sku,
                location=request.location,
                amount=amount,
                values={"reserved_milli": stock.c.reserved_milli + amount},
                now=now,
            )
            if shortage is not None:
                self._record_stock_out(
                    connection,
                    sku=request.sku,
                    location=request.location,
                    work_order_id=request.work_order_id,
                    shortage=shortage,
                    now=now,
                )
                return shortage
            row = connection.execute(
                insert(part_reservations)
                .values(
                    work_order_id=request.work_order_id,
                    sku=request.sku,
                    location=request.location,
                    quantity_milli=amount,
                    status=ReservationStatus.RESERVED.value,
                    expires_at=expires_at,
                    created_at=now,
                    created_by=actor,
                    note=request.note,
                )
                .returning(*part_reservations.c)
            ).one()
            return _reservation(row._mapping)

        outcome = self._write(work)
        if isinstance(outcome, _Shortage):
            raise self._shortage_error(part, request.location, request.work_order_id, outcome)
        return outcome

    def reserve_lines(
        self,
        connection: Connection,
        lines: Sequence[ReservationLine],
        *,
        actor: str,
        now: datetime,
    ) -> dict[int, list[str]]:
        """Reserve many lines inside the caller's transaction; return the short SKUs per order.

        Set-based, for plan generation: each stock row involved is locked once, lines are
        served in the order given while stock lasts, and a line that cannot be served
        reserves nothing and records a stock-out event. Lines of unknown parts or of stock
        never kept at the location count as short.
        """
        if not lines:
            return {}
        keys = sorted({(line.sku, line.location) for line in lines})
        available: dict[tuple[str, str], int] = {}
        for chunk_start in range(0, len(keys), _KEY_CHUNK):
            chunk = keys[chunk_start : chunk_start + _KEY_CHUNK]
            rows = connection.execute(
                select(stock.c.sku, stock.c.location, _available().label("available"))
                .where(tuple_(stock.c.sku, stock.c.location).in_(chunk))
                .order_by(stock.c.sku, stock.c.location)
                .with_for_update()
            )
            available.update({(row.sku, row.location): int(row.available) for row in rows})
        short: dict[int, list[str]] = {}
        taken: dict[tuple[str, str], int] = {}
        reservations: list[dict[str, Any]] = []
        stock_outs: list[dict[str, Any]] = []
        for line in lines:
            key = (line.sku, line.location)
            amount = to_milli(line.quantity)
            left = available.get(key, 0)
            if amount <= left:
                available[key] = left - amount
                taken[key] = taken.get(key, 0) + amount
                reservations.append(
                    {
                        "work_order_id": line.work_order_id,
                        "sku": line.sku,
                        "location": line.location,
                        "quantity_milli": amount,
                        "status": ReservationStatus.RESERVED.value,
                        "expires_at": line.expires_at,
                        "created_at": now,
                        "created_by": actor,
                        "note": line.note,
                    }
                )
                continue
            short.setdefault(line.work_order_id, []).append(line.sku)
            stock_outs.append(
                {
                    "sku": line.sku,
                    "location": line.location,
                    "work_order_id": line.work_order_id,
                    "requested_milli": amount,
                    "available_milli": left,
                    "at": now,
                }
            )
        if reservations:
            connection.execute(insert(part_reservations), reservations)
        if stock_outs:
            connection.execute(insert(stock_out_events), stock_outs)
        for (sku, location), amount in taken.items():
            connection.execute(
                update(stock)
                .where(*_stock_key(sku, location))
                .values(reserved_milli=stock.c.reserved_milli + amount, updated_at=now)
            )
        return short

    def get_reservation(self, reservation_id: int) -> Reservation:
        """Return a reservation; NotFoundError if absent."""
        with self._engine.connect() as connection:
            return self._read_reservation(connection, reservation_id)

    def reservations(
        self,
        *,
        work_order_id: int | None = None,
        status: ReservationStatus | None = None,
        sku: str | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[Reservation]:
        """Return reservations oldest first, after `after_id` (keyset pagination)."""
        query = select(part_reservations).order_by(part_reservations.c.id).limit(limit)
        if after_id is not None:
            query = query.where(part_reservations.c.id > after_id)
        if work_order_id is not None:
            query = query.where(part_reservations.c.work_order_id == work_order_id)
        if status is not None:
            query = query.where(part_reservations.c.status == ReservationStatus(status).value)
        if sku is not None:
            query = query.where(part_reservations.c.sku == sku)
        with self._engine.connect() as connection:
            return [_reservation(row._mapping) for row in connection.execute(query)]

    def release(self, reservation_id: int, *, actor: str, note: str | None = None) -> Reservation:
        """Give a held reservation's stock back; InvalidTransitionError if it is not held."""
        current = self.get_reservation(reservation_id)
        return self._close(
            current, ReservationAction.RELEASE, actor=actor, note=note, now=self._clock.now()
        )

    def issue(
        self,
        reservation_id: int,
        *,
        actor: str,
        quantity: Decimal | None = None,
        note: str | None = None,
    ) -> Reservation:
        """Consume a held reservation on completion: all of it, or `quantity` used.

        Writes the `issue` ledger entry; on_hand drops by what was used and reserved by
        what was held, so an unused rest becomes available again.
        """
        current = self.get_reservation(reservation_id)
        part = self.get_part(current.sku)
        used = check_issuable(current, quantity, part.unit)
        return self._close(
            current,
            ReservationAction.ISSUE,
            actor=actor,
            note=note,
            now=self._clock.now(),
            used_milli=to_milli(used),
        )

    def release_for_work_order(
        self, work_order_id: int, *, actor: str, note: str | None = None
    ) -> list[Reservation]:
        """Release every reservation a work order still holds (on cancel); return them."""
        released = []
        for current in self.reservations(
            work_order_id=work_order_id, status=ReservationStatus.RESERVED, limit=10_000
        ):
            try:
                released.append(
                    self._close(
                        current,
                        ReservationAction.RELEASE,
                        actor=actor,
                        note=note,
                        now=self._clock.now(),
                    )
                )
            except InvalidTransitionError:
                log.info("reservation %s was closed meanwhile; skipping it", current.id)
        return released

    def expire_due(self, now: datetime) -> list[Reservation]:
        """Expire the held reservations whose expiry is at or before `now`; return them.

        Each expires in its own transaction, so a sweep never holds many locks, and one
        issued or released meanwhile is skipped.
        """
        query = (
            select(part_reservations)
            .where(
                part_reservations.c.status == ReservationStatus.RESERVED.value,
                part_reservations.c.expires_at <= now,
            )
            .order_by(part_reservations.c.id)
        )
        with self._engine.connect() as connection:
            due = [_reservation(row._mapping) for row in connection.execute(query)]
        expired = []
        for current in due:
            try:
                expired.append(
                    self._close(
                        current, ReservationAction.EXPIRE, actor=SYSTEM_ACTOR, note=None, now=now
                    )
                )
            except InvalidTransitionError:
                log.info("reservation %s was closed meanwhile; not expiring it", current.id)
        if expired:
            log.info("expired %s reservation(s) due by %s", len(expired), now.isoformat())
        return expired

    def settle_reservations(
        self,
        connection: Connection,
        order: WorkOrder,
        *,
        from_status: WorkOrderStatus,
        actor: str,
        note: str | None,
        now: datetime,
    ) -> None:
        """Settle the reservations a work order holds as it moves, inside the move's transaction.

        A cancel releases them all; a close issues what the completion's `parts_used`
        says was used (core.inventory.settle_on_close) and releases the rest. Other moves
        keep them. Raising (a part used in a quantity its unit refuses) rolls the move back.
        A `storage.alerting.TransitionHook`.
        """
        if order.status not in (WorkOrderStatus.CANCELLED, WorkOrderStatus.CLOSED):
            return
        # Locking the held rows first: a concurrent release or issue of one of them either
        # committed already (the row is not held any more) or waits for this transaction.
        held = [
            _reservation(row._mapping)
            for row in connection.execute(
                select(part_reservations)
                .where(
                    part_reservations.c.work_order_id == order.id,
                    part_reservations.c.status == ReservationStatus.RESERVED.value,
                )
                .order_by(part_reservations.c.id)
                .with_for_update()
            )
        ]
        if not held:
            return
        if order.status is WorkOrderStatus.CANCELLED:
            why = f"work order {order.id} cancelled" + (f": {note}" if note else "")
            for current in held:
                self._close_in(
                    connection, current, ReservationAction.RELEASE, actor=actor, note=why, now=now
                )
            log.info("released %s reservation(s) of cancelled work order %s", len(held), order.id)
            return
        skus = sorted({reservation.sku for reservation in held})
        units = {
            row.sku: Unit(row.unit)
            for row in connection.execute(
                select(parts.c.sku, parts.c.unit).where(parts.c.sku.in_(skus))
            )
        }
        parts_used = order.completion.parts_used if order.completion is not None else []
        used = parts_used_totals(parts_used, units)
        consumed = {
            row.sku: from_milli(-int(row.total))
            for row in connection.execute(
                select(stock_ledger.c.sku, func.sum(stock_ledger.c.quantity_milli).label("total"))
                .where(
                    stock_ledger.c.work_order_id == order.id,
                    stock_ledger.c.sku.in_(skus),
                    stock_ledger.c.kind.in_([MovementKind.ISSUE.value, MovementKind.RETURN.value]),
                )
                .group_by(stock_ledger.c.sku)
            )
        }
        for current, take in settle_on_close(held, used, consumed):
            if take > 0:
                self._close_in(
                    connection,
                    current,
                    ReservationAction.ISSUE,
                    actor=actor,
                    note=f"used by work order {order.id} (closed)",
                    now=now,
                    used_milli=to_milli(take),
                )
            else:
                self._close_in(
                    connection,
                    current,
                    ReservationAction.RELEASE,
                    actor=actor,
                    note=f"not used by work order {order.id} (closed)",
                    now=now,
                )

    def release_for_finished_orders(self, now: datetime) -> list[Reservation]:
        """Release what cancelled or closed work orders still hold; return those released.

        A cancel or close settles its reservations in its own transaction; this catches
        one made while the order was being finished (its reserve checked the status just
        before). Each is released in its own transaction, so re-running is harmless.
        """
        finished = [WorkOrderStatus.CANCELLED.value, WorkOrderStatus.CLOSED.value]
        query = (
            select(part_reservations, work_orders.c.status.label("order_status"))
            .join(work_orders, work_orders.c.id == part_reservations.c.work_order_id)
            .where(
                part_reservations.c.status == ReservationStatus.RESERVED.value,
                work_orders.c.status.in_(finished),
            )
            .order_by(part_reservations.c.id)
        )
        with self._engine.connect() as connection:
            stale = [
                (_reservation(row._mapping), str(row.order_status))
                for row in connection.execute(query)
            ]
        released = []
        for current, order_status in stale:
            try:
                released.append(
                    self._close(
                        current,
                        ReservationAction.RELEASE,
                        actor=SYSTEM_ACTOR,
                        note=f"work order {current.work_order_id} is {order_status}",
                        now=now,
                    )
                )
            except InvalidTransitionError:
                log.info("reservation %s was closed meanwhile; skipping it", current.id)
        if released:
            log.info("released %s reservation(s) of finished work orders", len(released))
        return released

    def _close(
        self,
        current: Reservation,
        action: ReservationAction,
        *,
        actor: str,
        note: str | None,
        now: datetime,
        used_milli: int | None = None,
    ) -> Reservation:
        next_reservation_status(current.status, action)  # refuse before opening a transaction
        return self._write(
            lambda connection: self._close_in(
                connection,
                current,
                action,
                actor=actor,
                note=note,
                now=now,
                used_milli=used_milli,
            )
        )

    def _close_in(
        self,
        connection: Connection,
        current: Reservation,
        action: ReservationAction,
        *,
        actor: str,
        note: str | None,
        now: datetime,
        used_milli: int | None = None,
    ) -> Reservation:
        """Close a held reservation inside the caller's transaction, with its stock change."""
        target = next_reservation_status(current.status, action)
        held = to_milli(current.quantity)
        values: dict[str, Any] = {
            "status": target.value,
            "closed_at": now,
            "closed_by": actor,
            "closing_note": note,
        }
        stock_values: dict[str, Any] = {
            "reserved_milli": stock.c.reserved_milli - held,
            "updated_at": now,
        }
        if used_milli is not None:
            values["issued_milli"] = used_milli
            stock_values["on_hand_milli"] = stock.c.on_hand_milli - used_milli
        # The status guard makes the first of two racing closes the only one: the second
        # matches no row and changes nothing. Reservation row before stock row, in every
        # transaction, so PostgreSQL's row locks never wait in a cycle.
        row = connection.execute(
            update(part_reservations)
            .where(
                part_reservations.c.id == current.id,
                part_reservations.c.status == ReservationStatus.RESERVED.value,
            )
            .values(values)
            .returning(*part_reservations.c)
        ).first()
        if row is None:
            latest = self._read_reservation(connection, current.id)
            next_reservation_status(latest.status, action)
            raise AssertionError("unreachable: a held reservation matches the guard")
        changed = connection.execute(
            update(stock)
            .where(
                *_stock_key(current.sku, current.location),
                stock.c.reserved_milli >= held,
                stock.c.on_hand_milli >= (used_milli or 0),
            )
            .values(stock_values)
        )
        if changed.rowcount != 1:
            raise ConflictError(
                f"stock of {current.sku!r} at {current.location!r} disagrees with its "
                "reservations; nothing was changed",
                sku=current.sku,
                location=current.location,
            )
        if used_milli:
            self._append(
                connection,
                sku=current.sku,
                location=current.location,
                kind=MovementKind.ISSUE,
                quantity_milli=-used_milli,
                reason=note,
                work_order_id=current.work_order_id,
                reservation_id=current.id,
                actor=actor,
                at=now,
            )
        return _reservation(row._mapping)

    # --- stock-outs and reorder signals -----------------------------------------------

    def stock_outs(
        self,
        *,
        sku: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int | None = None,
        limit: int = 1000,
    ) -> list[StockOut]:
        """Return stock-out events in [since, until), oldest first, after `after_id` (keyset)."""
        query = select(stock_out_events).order_by(stock_out_events.c.id).limit(limit)
        if after_id is not None:
            query = query.where(stock_out_events.c.id > after_id)
        if sku is not None:
            query = query.where(stock_out_events.c.sku == sku)
        if since is not None:
            query = query.where(stock_out_events.c.at >= since)
        if until is not None:
            query = query.where(stock_out_events.c.at < until)
        with self._engine.connect() as connection:
            return [_stock_out(row._mapping) for row in connection.execute(query)]

    def reorder_signals(self) -> list[ReorderSignal]:
        """Return the parts whose available stock, summed over locations, is at the reorder point.

        The reorder point is the part's, so availability is pooled over its locations; a
        part short at one location but plentiful at another needs a transfer, not an order.
        """
        available = func.coalesce(func.sum(_available()), 0).label("available_milli")
        query = (
            select(parts, available)
            .select_from(parts.outerjoin(stock, stock.c.sku == parts.c.sku))
            .group_by(*parts.c)
            .having(available <= parts.c.reorder_point_milli)
            .order_by(parts.c.sku)
        )
        with self._engine.connect() as connection:
            rows = [row._mapping for row in connection.execute(query)]
        signals = []
        for row in rows:
            signal = reorder_signal(_part(row), from_milli(int(row["available_milli"])))
            if signal is not None:
                signals.append(signal)
        return signals

    # --- internals --------------------------------------------------------------------

    def _write(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one transaction, again if it lost a lock and was rolled back."""
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                with self._engine.begin() as connection:
                    return work(connection)
            except StoreUnavailableError as exc:
                if attempt == _WRITE_ATTEMPTS or not _is_transient(exc):
                    raise
                log.info("inventory write lost a lock (%s); retrying", exc.__cause__)
                # Jitter spreads the retries of writers that collided together.
                time.sleep(random.uniform(0, _RETRY_BASE_S * 2**attempt))  # noqa: S311
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _take(
        self,
        connection: Connection,
        *,
        sku: str,
        location: str,
        amount: int,
        values: dict[str, Any],
        now: datetime,
    ) -> _Shortage | None:
        """Take `amount` thousandths off what is available, or return the shortage."""
        key = _stock_key(sku, location)
        guarded = (
            update(stock).where(*key, _available() >= amount).values({**values, "updated_at": now})
        )
        if connection.execute(guarded).rowcount == 1:
            return None
        # Short, or a release committed after the guard read the row: lock the row (SQLite
        # already holds the write lock) so the figures below hold until commit, and look.
        available = connection.execute(select(_available()).where(*key).with_for_update()).scalar()
        if (
            available is not None
            and available >= amount
            and connection.execute(guarded).rowcount == 1
        ):
            return None
        total = connection.execute(
            select(func.coalesce(func.sum(_available()), 0)).where(stock.c.sku == sku)
        ).scalar_one()
        return _Shortage(
            requested_milli=amount,
            available_milli=int(available or 0),
            total_available_milli=int(total),
        )

    def _record_stock_out(
        self,
        connection: Connection,
        *,
        sku: str,
        location: str,
        work_order_id: int | None,
        shortage: _Shortage,
        now: datetime,
    ) -> None:
        connection.execute(
            insert(stock_out_events).values(
                sku=sku,
                location=location,
                work_order_id=work_order_id,
                requested_milli=shortage.requested_milli,
                available_milli=shortage.available_milli,
                at=now,
            )
        )

    def _shortage_error(
        self, part: Part, location: str, work_order_id: int | None, shortage: _Shortage
    ) -> InsufficientStockError:
        requested = from_milli(shortage.requested_milli)
        available = from_milli(shortage.available_milli)
        return InsufficientStockError(
            f"{requested} {part.unit.value} of {part.sku!r} asked for at {location!r}, "
            f"only {available} available",
            sku=part.sku,
            location=location,
            requested=requested,
            available=available,
            work_order_id=work_order_id,
            reorder=reorder_signal(
                part, from_milli(shortage.total_available_milli), demand=requested
            ),
        )

    def _append(
        self,
        connection: Connection,
        *,
        sku: str,
        location: str,
        kind: MovementKind,
        quantity_milli: int,
        reason: str | None,
        work_order_id: int | None,
        reservation_id: int | None,
        actor: str,
        at: datetime,
    ) -> Movement:
        row = connection.execute(
            insert(stock_ledger)
            .values(
                sku=sku,
                location=location,
                kind=kind.value,
                quantity_milli=quantity_milli,
                reason=reason,
                work_order_id=work_order_id,
                reservation_id=reservation_id,
                actor=actor,
                at=at,
            )
            .returning(*stock_ledger.c)
        ).one()
        return _movement(row._mapping)

    def _read_part(self, connection: Connection, sku: str) -> Part:
        row = connection.execute(select(parts).where(parts.c.sku == sku)).first()
        if row is None:
            raise NotFoundError(f"part {sku!r} not found", sku=sku)
        return _part(row._mapping)

    def _require(self, connection: Connection, sku: str, location: str) -> Part:
        """Return the part, checking both it and the location exist.

        Read before the write transaction: parts and locations are never deleted, so the
        answer still holds when the write runs, and the write stays the first statement.
        """
        part = self._read_part(connection, sku)
        known = connection.execute(
            select(stock_locations.c.code).where(stock_locations.c.code == location)
        ).first()
        if known is None:
            raise NotFoundError(f"location {location!r} not found", location=location)
        return part

    def _read_reservation(self, connection: Connection, reservation_id: int) -> Reservation:
        row = connection.execute(
            select(part_reservations).where(part_reservations.c.id == reservation_id)
        ).first()
        if row is None:
            raise NotFoundError(
                f"reservation {reservation_id} not found", reservation_id=reservation_id
            )
        return _reservation(row._mapping)
