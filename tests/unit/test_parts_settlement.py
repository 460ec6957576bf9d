"""How a closing work order settles its reservations, and the note of a shortage hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.errors import ValidationError
from core.inventory import (
    InsufficientStockError,
    Reservation,
    ReservationStatus,
    Settlement,
    Unit,
    parts_used_totals,
    settle_on_close,
    shortage_note,
)
from core.workorders import PartUsed

NOW = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
D = Decimal


def held(reservation_id: int, sku: str, quantity: str) -> Reservation:
    return Reservation(
        id=reservation_id,
        work_order_id=7,
        sku=sku,
        location="main-store",
        quantity=D(quantity),
        status=ReservationStatus.RESERVED,
        expires_at=NOW + timedelta(days=30),
        created_at=NOW,
        created_by="tech",
    )


def test_use_is_issued_from_the_oldest_reservations_and_the_rest_released() -> None:
    first, second, third = held(1, "BRG", "4"), held(2, "BRG", "3"), held(3, "BRG", "2")
    oil, belt = held(4, "OIL", "5"), held(5, "BELT", "1")
    used = {"BRG": D(5), "OIL": D("1.25"), "SEAL": D(1)}
    assert settle_on_close([third, oil, first, belt, second], used, {}) == [
        Settlement(first, D(4)),
        Settlement(second, D(1)),
        Settlement(third, D(0)),
        Settlement(oil, D("1.25")),
        Settlement(belt, D(0)),
    ]


def test_what_was_consumed_before_counts_against_the_use() -> None:
    first, second = held(1, "BRG", "2"), held(2, "BRG", "2")
    assert settle_on_close([first, second], {"BRG": D(3)}, {"BRG": D(2)}) == [
        Settlement(first, D(1)),
        Settlement(second, D(0)),
    ]
    # Consumed more than the completion says (returns not booked): nothing more is issued.
    assert settle_on_close([first], {"BRG": D(1)}, {"BRG": D(4)}) == [Settlement(first, D(0))]


def test_use_beyond_what_was_held_issues_everything_held_and_no_more() -> None:
    only = held(1, "BRG", "2")
    assert settle_on_close([only], {"BRG": D(9)}, {}) == [Settlement(only, D(2))]
    assert settle_on_close([], {"BRG": D(9)}, {}) == []


def test_parts_used_sum_per_sku_as_the_decimals_they_print_as() -> None:
    lines = [
        PartUsed(sku="OIL", quantity=0.1),
        PartUsed(sku="OIL", quantity=0.2),
        PartUsed(sku="BRG", quantity=2),
        PartUsed(sku="SEAL", quantity=0.0001),  # not held: not checked
    ]
    totals = parts_used_totals(lines, {"OIL": Unit.LITRE, "BRG": Unit.PIECE})
    assert totals == {"OIL": D("0.3"), "BRG": D(2), "SEAL": D("0.0001")}


@pytest.mark.parametrize(
    ("unit", "quantity", "message"),
    [
        (Unit.PIECE, 1.5, "whole number of pcs"),
        (Unit.LITRE, 0.0005, "at most 3 decimal places"),
    ],
)
def test_a_quantity_a_held_part_cannot_be_issued_in_is_refused(
    unit: Unit, quantity: float, message: str
) -> None:
    lines = [PartUsed(sku="OK", quantity=1), PartUsed(sku="X", quantity=quantity)]
    with pytest.raises(ValidationError, match=message) as refused:
        parts_used_totals(lines, {"X": unit})
    assert refused.value.extra["field"] == "completion.parts_used[1].quantity"


def test_the_hold_note_names_the_part_and_the_figures() -> None:
    error = InsufficientStockError(
        "short",
        sku="BRG-6205",
        location="van-3",
        requested=D("2.5"),
        available=D("0.75"),
        work_order_id=7,
    )
    assert shortage_note(error) == (
        "waiting for parts: BRG-6205 at van-3 is short "
        "(requested 2.5, available 0.75, shortfall 1.75)"
    )
