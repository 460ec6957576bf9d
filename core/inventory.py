"""Spare parts: the catalogue, stock per location, the movement ledger and reservations.

Quantities are exact `Decimal`s with at most three decimal places (thousandths of the
part's unit), so litres and metres can be split while nothing is ever rounded; parts
counted in whole units (pieces, sets, ...) refuse fractions. Storage keeps them as
integer thousandths, which compare and add exactly in SQL on every backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, NamedTuple, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, computed_field, model_validator

from core.errors import ConflictError, ValidationError
from core.workorders import InvalidTransitionError, PartUsed

# Like asset ids: safe in URLs, topics and file names.
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
LOCATION_PATTERN = SKU_PATTERN
QUANTITY_PLACES = 3
# 12 integer digits: a sum of many such quantities in thousandths still fits 64 bits.
QUANTITY_DIGITS = 15
# How long a reservation holds stock when the caller names no expiry.
DEFAULT_HOLD_FOR = timedelta(days=30)

Quantity = Annotated[Decimal, Field(max_digits=QUANTITY_DIGITS, decimal_places=QUANTITY_PLACES)]
PositiveQuantity = Annotated[
    Decimal, Field(gt=0, max_digits=QUANTITY_DIGITS, decimal_places=QUANTITY_PLACES)
]
NonNegativeQuantity = Annotated[
    Decimal, Field(ge=0, max_digits=QUANTITY_DIGITS, decimal_places=QUANTITY_PLACES)
]
Sku = Annotated[str, Field(pattern=SKU_PATTERN)]
LocationCode = Annotated[str, Field(pattern=LOCATION_PATTERN)]
Actor = Annotated[str, Field(min_length=1, max_length=200)]
Reason = Annotated[str, Field(min_length=1, max_length=2000)]
WorkOrderId = Annotated[int, Field(gt=0)]

_ZERO = Decimal(0)


class Unit(StrEnum):
    """The unit a part is stocked, reserved and issued in."""

    PIECE = "pcs"
    SET = "set"
    PAIR = "pair"
    BOX = "box"
    ROLL = "roll"
    LITRE = "l"
    METRE = "m"
    SQUARE_METRE = "m2"
    KILOGRAM = "kg"

    @property
    def discrete(self) -> bool:
        """Tell whether the unit is counted in whole numbers only."""
        return self in _DISCRETE_UNITS


_DISCRETE_UNITS = frozenset({Unit.PIECE, Unit.SET, Unit.PAIR, Unit.BOX, Unit.ROLL})


class MovementKind(StrEnum):
    """Why on-hand stock changed; every change is one ledger entry of one kind."""

    RECEIPT = "receipt"  # delivered into stock
    ISSUE = "issue"  # consumed by a work order
    RETURN = "return"  # brought back unused from a work order
    SCRAP = "scrap"  # written off as damaged or obsolete; needs a reason
    ADJUST = "adjust"  # a stock count's correction, either sign; needs a reason


# The kinds a caller states as a magnitude, and the sign it takes on on_hand.
_SIGN = {
    MovementKind.RECEIPT: 1,
    MovementKind.ISSUE: -1,
    MovementKind.RETURN: 1,
    MovementKind.SCRAP: -1,
}
_NEEDS_REASON = frozenset({MovementKind.SCRAP, MovementKind.ADJUST})


class ReservationStatus(StrEnum):
    """Where a reservation stands; only `reserved` holds stock."""

    RESERVED = "reserved"
    RELEASED = "released"  # its work order was cancelled, or the parts are no longer needed
    ISSUED = "issued"  # consumed when its work order was completed
    EXPIRED = "expired"  # unused past its expiry


class ReservationAction(StrEnum):
    """What can end a reservation."""

    RELEASE = "release"
    ISSUE = "issue"
    EXPIRE = "expire"


_CLOSING = {
    ReservationAction.RELEASE: ReservationStatus.RELEASED,
    ReservationAction.ISSUE: ReservationStatus.ISSUED,
    ReservationAction.EXPIRE: ReservationStatus.EXPIRED,
}


class InsufficientStockError(ConflictError):
    """Raise when a demand exceeds the available stock; carries the shortage figures.

    A reservation refused this way has been recorded as a stock-out. `reorder` is what
    to order so the demand could be met and the stock end at its reorder level.
    """

    code = "insufficient_stock"

    def __init__(
        self,
        detail: str,
        *,
        sku: str,
        location: str,
        requested: Decimal,
        available: Decimal,
        work_order_id: int | None = None,
        reorder: ReorderSignal | None = None,
    ) -> None:
        # The extras go out as problem+json fields: decimals as strings, like the models.
        super().__init__(
            detail,
            sku=sku,
            location=location,
            requested=str(requested),
            available=str(available),
            work_order_id=work_order_id,
        )
        self.sku = sku
        self.location = location
        self.requested = requested
        self.available = available
        self.work_order_id = work_order_id
        self.reorder = reorder

    @property
    def shortfall(self) -> Decimal:
        """Return how much is missing."""
        return self.requested - self.available


class NewLocation(BaseModel):
    """A storeroom, van or bin that holds stock."""

    model_config = ConfigDict(frozen=True)

    code: LocationCode
    name: str = Field(min_length=1, max_length=200)
    site: str | None = Field(default=None, min_length=1, max_length=100)


class Location(NewLocation):
    """A stock location as stored."""

    created_at: AwareDatetime


class PartChanges(BaseModel):
    """The fields of a part that may change; the unit never does, stock is counted in it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    category: str | None = Field(default=None, min_length=1, max_length=100)
    reorder_point: NonNegativeQuantity | None = None
    reorder_quantity: NonNegativeQuantity | None = None


class NewPart(BaseModel):
    """A spare part in the catalogue, with its replenishment policy."""

    model_config = ConfigDict(frozen=True)

    sku: Sku
    name: str = Field(min_length=1, max_length=200)
    unit: Unit
    category: str = Field(min_length=1, max_length=100)
    # Order when the available stock, over all locations, falls to this...
    reorder_point: NonNegativeQuantity = _ZERO
    # ... this much on top of what brings it back to the reorder point.
    reorder_quantity: NonNegativeQuantity = _ZERO

    @model_validator(mode="after")
    def _whole_units(self) -> NewPart:
        for field in ("reorder_point", "reorder_quantity"):
            if _is_fraction_of(self.unit, getattr(self, field)):
                raise ValueError(f"{field} must be a whole number of {self.unit.value}")
        return self


class Part(NewPart):
    """A part as stored."""

    created_at: AwareDatetime
    updated_at: AwareDatetime


class StockLevel(BaseModel):
    """The stock of one part at one location."""

    model_config = ConfigDict(frozen=True)

    sku: Sku
    location: LocationCode
    on_hand: NonNegativeQuantity
    reserved: NonNegativeQuantity
    updated_at: AwareDatetime | None = None  # None: nothing ever moved here

    @computed_field  # type: ignore[prop-decorator]
    @property
    def available(self) -> Decimal:
        """Return what can still be reserved or issued."""
        return self.on_hand - self.reserved


class NewMovement(BaseModel):
    """A stock movement as asked for: a magnitude, or a signed correction for `adjust`.

    Issues through a reservation are written by issuing the reservation; an issue asked
    for here is an unplanned one and must name its work order, so the asset history can
    show the parts it used.
    """

    model_config = ConfigDict(frozen=True)

    kind: MovementKind
    sku: Sku
    location: LocationCode
    quantity: Quantity
    reason: Reason | None = None
    work_order_id: WorkOrderId | None = None

    @model_validator(mode="after")
    def _consistent(self) -> NewMovement:
        if self.kind in _NEEDS_REASON and (self.reason is None or not self.reason.strip()):
            raise ValueError(f"a {self.kind.value} needs a reason")
        if self.kind is MovementKind.ADJUST:
            if self.quantity == 0:
                raise ValueError("an adjustment must change the stock")
        elif self.quantity <= 0:
            raise ValueError(f"the quantity of a {self.kind.value} must be positive")
        if self.kind is MovementKind.ISSUE and self.work_order_id is None:
            raise ValueError("an issue must name the work order that used the parts")
        return self

    @property
    def effect(self) -> Decimal:
        """Return the signed change this movement makes to on_hand."""
        if self.kind is MovementKind.ADJUST:
            return self.quantity
        return _SIGN[self.kind] * self.quantity


class Movement(BaseModel):
    """One entry of the append-only stock ledger; `quantity` is its signed effect on on_hand."""

    model_config = ConfigDict(frozen=True)

    id: int
    sku: Sku
    location: LocationCode
    kind: MovementKind
    quantity: Quantity
    reason: str | None = None
    work_order_id: int | None = None
    reservation_id: int | None = None
    actor: str
    at: AwareDatetime


class NewReservation(BaseModel):
    """Stock a work order asks to hold until it is done."""

    model_config = ConfigDict(frozen=True)

    # A plain id, not a foreign key: work orders and stock are separate aggregates.
    work_order_id: WorkOrderId
    sku: Sku
    location: LocationCode
    quantity: PositiveQuantity
    expires_at: AwareDatetime | None = None  # None: DEFAULT_HOLD_FOR from now
    note: str | None = Field(default=None, max_length=2000)


class Reservation(BaseModel):
    """A reservation as stored."""

    model_config = ConfigDict(frozen=True)

    id: int
    work_order_id: int
    sku: Sku
    location: LocationCode
    quantity: PositiveQuantity
    status: ReservationStatus
    expires_at: AwareDatetime
    created_at: AwareDatetime
    created_by: str
    issued_quantity: NonNegativeQuantity | None = None  # set once issued
    closed_at: AwareDatetime | None = None
    closed_by: str | None = None
    note: str | None = None  # given when reserved
    closing_note: str | None = None  # given when released or issued


class StockOut(BaseModel):
    """A demand the stock could not meet, kept for the stock-out rate KPI."""

    model_config = ConfigDict(frozen=True)

    id: int
    sku: Sku
    location: LocationCode
    work_order_id: int | None
    requested: PositiveQuantity
    available: NonNegativeQuantity
    at: AwareDatetime


class ReorderSignal(BaseModel):
    """A part to reorder, and how much."""

    model_config = ConfigDict(frozen=True)

    sku: Sku
    unit: Unit
    available: Quantity  # negative when it already counts a demand that was not met
    reorder_point: NonNegativeQuantity
    reorder_quantity: NonNegativeQuantity
    suggested_quantity: PositiveQuantity


def _is_fraction_of(unit: Unit, quantity: Decimal) -> bool:
    return unit.discrete and quantity != quantity.to_integral_value()


def check_quantity(unit: Unit, quantity: Decimal, field: str = "quantity") -> None:
    """Refuse a fraction finer than a thousandth, or of a unit counted in whole numbers."""
    thousandths = quantity.scaleb(QUANTITY_PLACES)
    if not quantity.is_finite() or thousandths != thousandths.to_integral_value():
        raise ValidationError(
            f"{field} must be finite, with at most {QUANTITY_PLACES} decimal places",
            field=field,
            quantity=str(quantity),
        )
    if _is_fraction_of(unit, quantity):
        raise ValidationError(
            f"{field} must be a whole number of {unit.value}",
            field=field,
            unit=unit.value,
            quantity=str(quantity),
        )


def next_reservation_status(
    current: ReservationStatus, action: ReservationAction
) -> ReservationStatus:
    """Return the status `action` takes a reservation to; only a held one can move."""
    if current is not ReservationStatus.RESERVED:
        raise InvalidTransitionError(
            f"cannot {action.value} a reservation that is {current.value}",
            status=current.value,
            action=action.value,
        )
    return _CLOSING[action]


def reservation_expiry(expires_at: datetime | None, now: datetime) -> datetime:
    """Return when a reservation asked for at `now` expires; the past is refused."""
    if expires_at is None:
        return now + DEFAULT_HOLD_FOR
    if expires_at <= now:
        raise ValidationError(
            "a reservation must expire in the future", expires_at=expires_at.isoformat()
        )
    return expires_at


def check_issuable(reservation: Reservation, quantity: Decimal | None, unit: Unit) -> Decimal:
    """Return how much issuing `reservation` consumes: all of it, or a part that was used."""
    next_reservation_status(reservation.status, ReservationAction.ISSUE)
    if quantity is None:
        return reservation.quantity
    check_quantity(unit, quantity)
    if not 0 < quantity <= reservation.quantity:
        raise ValidationError(
            f"the quantity issued must be above 0 and at most the {reservation.quantity} reserved",
            quantity=str(quantity),
            reserved=str(reservation.quantity),
        )
    return quantity


def reorder_signal(
    part: NewPart, available: Decimal, demand: Decimal = _ZERO
) -> ReorderSignal | None:
    """Return what to order when `available`, less an unmet `demand`, is at the reorder point.

    An order-up-to policy: the suggestion brings the stock, once the demand is met, back
    to `reorder_point + reorder_quantity`. A part with both at zero is not stocked ahead
    and only signals a demand it could not meet.
    """
    projected = available - demand
    if projected > part.reorder_point:
        return None
    suggested = part.reorder_point + part.reorder_quantity - projected
    if suggested <= 0:
        return None
    return ReorderSignal(
        sku=part.sku,
        unit=part.unit,
        available=projected,
        reorder_point=part.reorder_point,
        reorder_quantity=part.reorder_quantity,
        suggested_quantity=suggested,
    )


def shortage_note(error: InsufficientStockError) -> str:
    """Return the audit note of a work order put on hold because a reservation was short."""
    return (
        f"waiting for parts: {error.sku} at {error.location} is short "
        f"(requested {error.requested}, available {error.available}, "
        f"shortfall {error.shortfall})"
    )


class Settlement(NamedTuple):
    """What closing a work order does to one reservation it still holds."""

    reservation: Reservation
    used: Decimal  # issued; 0 releases it, anything between frees the rest


def parts_used_totals(
    parts_used: Sequence[PartUsed], units: Mapping[str, Unit]
) -> dict[str, Decimal]:
    """Return the quantity used of each SKU, checking those in `units` against their unit.

    `parts_used` is recorded as floats; each becomes the decimal it prints as (0.1 is
    0.1), and a quantity a held part cannot be issued in (a fraction of a piece, finer
    than a thousandth) raises ValidationError. SKUs not in `units` are summed unchecked.
    """
    totals: dict[str, Decimal] = {}
    for index, line in enumerate(parts_used):
        quantity = Decimal(str(line.quantity))  # finite: the model bounds it
        unit = units.get(line.sku)
        if unit is not None:
            check_quantity(unit, quantity, f"completion.parts_used[{index}].quantity")
        totals[line.sku] = totals.get(line.sku, _ZERO) + quantity
    return totals


def settle_on_close(
    held: Sequence[Reservation],
    used: Mapping[str, Decimal],
    consumed: Mapping[str, Decimal],
) -> list[Settlement]:
    """Return how a closing work order's held reservations are settled, oldest first.

    What the completion says was used of a SKU, less what the order already consumed
    (reservations issued by hand, unplanned issues, net of returns), is issued from its
    held reservations of that SKU in order; a reservation with nothing left to cover is
    released. Use beyond what was held is not issued here: no location is known for it.
    """
    remaining = {
        sku: max(quantity - consumed.get(sku, _ZERO), _ZERO) for sku, quantity in used.items()
    }
    settled = []
    for reservation in sorted(held, key=lambda r: r.id):
        take = min(remaining.get(reservation.sku, _ZERO), reservation.quantity)
        if take > 0:
            remaining[reservation.sku] -= take
        settled.append(Settlement(reservation=reservation, used=take))
    return settled


class InventoryRepository(Protocol):
    """Parts, stock, the ledger and reservations; every change is one transaction.

    Reservations never over-reserve however many requests race, and on_hand always
    equals the sum of the ledger of its (sku, location).
    """

    def add_location(self, location: NewLocation) -> Location:
        """Create a stock location; ConflictError if the code exists."""
        ...

    def get_location(self, code: str) -> Location:
        """Return a location; NotFoundError if absent."""
        ...

    def locations(self) -> list[Location]:
        """Return every location, by code."""
        ...

    def add_part(self, part: NewPart) -> Part:
        """Create a part; ConflictError if the SKU exists."""
        ...

    def get_part(self, sku: str) -> Part:
        """Return a part; NotFoundError if absent."""
        ...

    def update_part(self, sku: str, changes: PartChanges) -> Part:
        """Change a part's name, category or replenishment policy."""
        ...

    def parts(
        self, *, category: str | None = None, after_sku: str | None = None, limit: int = 100
    ) -> list[Part]:
        """Return parts by SKU, after `after_sku` (keyset pagination)."""
        ...

    def stock(self, sku: str, location: str) -> StockLevel:
        """Return one part's stock at one location (zero if nothing moved there)."""
        ...

    def stock_levels(
        self,
        *,
        sku: str | None = None,
        location: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> list[StockLevel]:
        """Return the stock rows that exist, by (sku, location), after `after` (keyset)."""
        ...

    def record_movement(self, movement: NewMovement, *, actor: str) -> Movement:
        """Apply a receipt, unplanned issue, return, scrap or adjustment."""
        ...

    def ledger(
        self,
        *,
        sku: str | None = None,
        location: str | None = None,
        work_order_id: int | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[Movement]:
        """Return ledger entries oldest first, after `after_id`."""
        ...

    def reserve(self, request: NewReservation, *, actor: str) -> Reservation:
        """Hold stock for a work order; InsufficientStockError if not enough is available."""
        ...

    def get_reservation(self, reservation_id: int) -> Reservation:
        """Return a reservation; NotFoundError if absent."""
        ...

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
        ...

    def release(self, reservation_id: int, *, actor: str, note: str | None = None) -> Reservation:
        """Give a held reservation's stock back; InvalidTransitionError if not held."""
        ...

    def issue(
        self,
        reservation_id: int,
        *,
        actor: str,
        quantity: Decimal | None = None,
        note: str | None = None,
    ) -> Reservation:
        """Consume a held reservation (all of it, or what was used; the rest is freed)."""
        ...

    def release_for_work_order(
        self, work_order_id: int, *, actor: str, note: str | None = None
    ) -> list[Reservation]:
        """Release every reservation a work order still holds; return those released."""
        ...

    def expire_due(self, now: datetime) -> list[Reservation]:
        """Expire the held reservations whose expiry is at or before `now`."""
        ...

    def stock_outs(
        self,
        *,
        sku: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int | None = None,
        limit: int = 1000,
    ) -> list[StockOut]:
        """Return stock-out events in [since, until), oldest first, after `after_id`."""
        ...

    def reorder_signals(self) -> list[ReorderSignal]:
        """Return the parts whose available stock, over all locations, needs reordering."""
        ...
