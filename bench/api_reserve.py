"""The reservation configuration of bench/api_load.py: its seed, its requests, its check.

The seed adds one stock location, PARTS parts in whole units with RECEIPT units received
each (through the inventory repository, so every unit on hand has its ledger entry), and
a technician token (`POST /reservations` needs that role). The load posts reservations of
1 to 3 units of a random part for a random accepted or scheduled work order. After each
run, `ledger_check` compares, per part, the held reservations with `stock.reserved` and the
ledger with `stock.on_hand`.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select

from core.auth import Role
from core.inventory import MovementKind, NewLocation, NewMovement, NewPart, Unit
from core.workorders import WorkOrderStatus
from storage.inventory import SqlInventoryRepository
from storage.repositories import SqlTokenRepository
from storage.tables import part_reservations, stock, stock_ledger, work_orders

RESERVE_PATH = "/api/v1/reservations"
LOCATION = "BENCH-STORE"
PARTS = 40
# Far more than the runs can take: about 150 req/s x 2 units x 25 s x 3 runs over 40 parts
# is some 600 units a part.
RECEIPT = Decimal(1_000_000)
WORK_ORDERS = 1_000
QUANTITIES = (1, 2, 3)


@dataclass(frozen=True)
class ReserveTargets:
    """What the reservation load posts against."""

    token: str  # a technician's
    location: str
    skus: tuple[str, ...]
    work_order_ids: tuple[int, ...]


def seed_reservations(engine: Engine, rng: random.Random) -> ReserveTargets:
    """Add the location, the parts and their stock, and a technician token."""
    inventory = SqlInventoryRepository(engine)
    inventory.add_location(NewLocation(code=LOCATION, name="Bench storeroom", site="harbour"))
    skus = tuple(f"BENCH-{index:03d}" for index in range(PARTS))
    for sku in skus:
        inventory.add_part(
            NewPart(sku=sku, name=f"Bench part {sku}", unit=Unit("pcs"), category="bench")
        )
        inventory.record_movement(
            NewMovement(kind=MovementKind.RECEIPT, sku=sku, location=LOCATION, quantity=RECEIPT),
            actor="bench seed",
        )
    open_statuses = (WorkOrderStatus.ACCEPTED.value, WorkOrderStatus.SCHEDULED.value)
    with engine.connect() as connection:
        ids = list(
            connection.execute(
                select(work_orders.c.id)
                .where(work_orders.c.status.in_(open_statuses))
                .order_by(work_orders.c.id)
            ).scalars()
        )
    if not ids:
        raise RuntimeError("no accepted or scheduled work order to reserve against")
    chosen = tuple(sorted(rng.sample(ids, min(WORK_ORDERS, len(ids)))))
    token = SqlTokenRepository(engine).create(
        Role.TECHNICIAN, "bench api_load reservations", dt.datetime.now(dt.UTC)
    )
    return ReserveTargets(token=token, location=LOCATION, skus=skus, work_order_ids=chosen)


class Reserver:
    """One simulated technician: reserves 1-3 units of a random part for a random order."""

    def __init__(self, rng: random.Random, targets: ReserveTargets) -> None:
        self.rng = rng
        self.targets = targets

    def next_request(self) -> tuple[str, dict[str, Any]]:
        """Return (kind, JSON body) of the next reservation."""
        quantity = self.rng.choice(QUANTITIES)
        return f"reserve {quantity}", {
            "work_order_id": self.rng.choice(self.targets.work_order_ids),
            "sku": self.rng.choice(self.targets.skus),
            "location": self.targets.location,
            "quantity": quantity,
        }


def error_name(status: int, body: bytes) -> str:
    """Name a refused reservation by its status and problem code."""
    try:
        code = json.loads(body).get("code")
    except ValueError:
        code = None
    return f"HTTP {status} {code}" if code else f"HTTP {status}"


def ledger_check(engine: Engine, targets: ReserveTargets) -> dict[str, Any]:
    """Return, over the bench parts, whether the stock agrees with reservations and ledger.

    Per part: the sum of its `reserved` reservations must equal `stock.reserved`, the sum
    of its ledger must equal `stock.on_hand` (reserving writes no ledger entry, so that is
    still the receipt), and reserved must stay within on hand.
    """
    held = (
        select(
            part_reservations.c.sku,
            func.count().label("held"),
            func.coalesce(func.sum(part_reservations.c.quantity_milli), 0).label("milli"),
        )
        .where(
            part_reservations.c.location == targets.location,
            part_reservations.c.status == "reserved",
        )
        .group_by(part_reservations.c.sku)
    )
    ledger = (
        select(stock_ledger.c.sku, func.sum(stock_ledger.c.quantity_milli).label("milli"))
        .where(stock_ledger.c.location == targets.location)
        .group_by(stock_ledger.c.sku)
    )
    levels = select(stock.c.sku, stock.c.on_hand_milli, stock.c.reserved_milli).where(
        stock.c.location == targets.location
    )
    with engine.connect() as connection:
        held_by = {row.sku: (int(row.held), int(row.milli)) for row in connection.execute(held)}
        ledger_by = {row.sku: int(row.milli) for row in connection.execute(ledger)}
        level_by = {
            row.sku: (int(row.on_hand_milli), int(row.reserved_milli))
            for row in connection.execute(levels)
        }
    mismatches: list[str] = []
    reservations = units_milli = 0
    for sku in targets.skus:
        count, milli = held_by.get(sku, (0, 0))
        on_hand, reserved = level_by.get(sku, (0, 0))
        reservations += count
        units_milli += milli
        if milli != reserved:
            mismatches.append(f"{sku}: reservations hold {milli} milli, stock.reserved {reserved}")
        if ledger_by.get(sku, 0) != on_hand:
            mismatches.append(f"{sku}: ledger {ledger_by.get(sku, 0)} milli, on_hand {on_hand}")
        if not 0 <= reserved <= on_hand:
            mismatches.append(f"{sku}: reserved {reserved} outside 0..{on_hand}")
    return {
        "parts": len(targets.skus),
        "held_reservations": reservations,
        "held_units": units_milli / 1000,
        "agree": not mismatches,
        "mismatches": mismatches[:20],
    }


def describe(check: dict[str, Any], posted: int) -> str:
    """Return one line about a run's ledger check."""
    verdict = "agree" if check["agree"] else f"DISAGREE: {check['mismatches']}"
    return (
        f"ledger check over {check['parts']} parts: {check['held_reservations']:,} held "
        f"reservations ({check['held_units']:,.0f} units; {posted:,} answered 201 in the "
        f"bench so far): reservations, stock and ledger {verdict}"
    )
