"""Request and response bodies of the parts inventory API, suffixed Create, Update and Read.

Quantities are exact decimals: a JSON number or string comes in, a string goes out
("2.5"), so no client ever sees a binary-float rounding of a stock figure.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from api.pagination import MAX_ID
from api.schemas import UtcTime
from core.errors import ValidationError
from core.inventory import (
    Location,
    LocationCode,
    Movement,
    MovementKind,
    NewLocation,
    NewMovement,
    NewPart,
    NewReservation,
    Part,
    PartChanges,
    PositiveQuantity,
    Quantity,
    Reason,
    ReorderSignal,
    Reservation,
    ReservationStatus,
    StockLevel,
    StockOut,
    Unit,
)

MAX_NOTE = 2000


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refused here it is a 422, not a driver error (500).
    if "\x00" in value:
        raise ValueError("text cannot contain NUL characters")
    return value


def _as_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range") from None


# Text a database can store; every free-text field of a request is checked with it.
StorableText = Annotated[str, AfterValidator(_storable)]
# An aware time from a client, in UTC; naive times and times past year 9999 UTC are refused.
UtcInput = Annotated[AwareDatetime, AfterValidator(_as_utc)]
WorkOrderRef = Annotated[int, Field(ge=1, le=MAX_ID, description="The work order's id")]


class _Body(BaseModel):
    """A request body: unknown fields refused, every string storable."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _storable_strings(cls, value: Any) -> Any:
        return _storable(value) if isinstance(value, str) else value


def _refusal(exc: PydanticValidationError) -> ValidationError:
    """Turn a domain model's refusal of a request into a 422 naming what is wrong."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return ValidationError("; ".join(str(error["msg"]) for error in errors), errors=errors)


# --- locations and parts --------------------------------------------------------------


class LocationCreate(_Body, NewLocation):
    """A new stock location: a storeroom, a van or a bin."""


class LocationRead(BaseModel):
    """A stock location."""

    code: str
    name: str
    site: str | None
    created_at: UtcTime

    @classmethod
    def from_location(cls, location: Location) -> LocationRead:
        """Return the API view of a location."""
        return cls.model_validate(location.model_dump())


class LocationListRead(BaseModel):
    """Every stock location, by code."""

    items: list[LocationRead]


class PartCreate(_Body, NewPart):
    """A new part: whole units (pcs, set, pair, box, roll) refuse fractions."""


class PartUpdate(_Body, PartChanges):
    """Changes to a part: only the fields sent change; the SKU and the unit never do."""

    @field_validator("name", "category", "reorder_point", "reorder_quantity", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Defaults are not validated, so this only fires for an explicit JSON null.
        if value is None:
            raise ValueError("this field cannot be cleared; leave it out to keep it")
        return value


class PartRead(BaseModel):
    """A part in the catalogue, with its replenishment policy."""

    sku: str
    name: str
    unit: Unit
    category: str
    reorder_point: Decimal = Field(description="Reorder when the available stock falls to this")
    reorder_quantity: Decimal = Field(description="Order this much above the reorder point")
    created_at: UtcTime
    updated_at: UtcTime

    @classmethod
    def from_part(cls, part: Part) -> PartRead:
        """Return the API view of a part."""
        return cls.model_validate(part.model_dump())


class PartListRead(BaseModel):
    """A page of parts ordered by SKU; pass `next_cursor` as `cursor` for the next page."""

    items: list[PartRead]
    next_cursor: str | None


# --- stock and the ledger -------------------------------------------------------------


class StockLevelRead(BaseModel):
    """The stock of one part at one location."""

    sku: str
    location: str
    on_hand: Decimal
    reserved: Decimal = Field(description="Held by reservations")
    available: Decimal = Field(description="on_hand - reserved: what can be reserved or issued")
    updated_at: UtcTime | None = Field(description="Null when nothing ever moved here")

    @classmethod
    def from_level(cls, level: StockLevel) -> StockLevelRead:
        """Return the API view of a stock level."""
        return cls.model_validate(level.model_dump())


class StockListRead(BaseModel):
    """A page of stock levels by (sku, location), only where stock ever moved; pass
    `next_cursor` as `cursor` for the next page."""

    items: list[StockLevelRead]
    next_cursor: str | None


class PartStockRead(BaseModel):
    """A part's stock over every location it ever moved at, with the totals."""

    sku: str
    unit: Unit
    on_hand: Decimal
    reserved: Decimal
    available: Decimal
    locations: list[StockLevelRead]

    @classmethod
    def from_levels(cls, part: Part, levels: list[StockLevel]) -> PartStockRead:
        """Return a part's stock, summed over its locations."""
        return cls(
            sku=part.sku,
            unit=part.unit,
            on_hand=sum((level.on_hand for level in levels), Decimal(0)),
            reserved=sum((level.reserved for level in levels), Decimal(0)),
            available=sum((level.available for level in levels), Decimal(0)),
            locations=[StockLevelRead.from_level(level) for level in levels],
        )


class MovementCreate(_Body):
    """A stock movement: receipt, issue, return, scrap or adjust, in the part's unit.

    Receipts, issues, returns and scraps state a positive quantity; an adjustment states
    the signed correction. Scraps and adjustments need a reason, and an issue (an unplanned
    one: planned issues go through a reservation) the work order that used the parts.
    """

    kind: MovementKind
    location: LocationCode
    quantity: Quantity
    reason: Reason | None = None
    work_order_id: WorkOrderRef | None = None

    def to_new_movement(self, sku: str) -> NewMovement:
        """Return the domain movement of `sku`; ValidationError if inconsistent for its kind."""
        try:
            return NewMovement.model_validate({**self.model_dump(), "sku": sku})
        except PydanticValidationError as exc:
            raise _refusal(exc) from None


class MovementRead(BaseModel):
    """One entry of the append-only stock ledger."""

    id: int
    sku: str
    location: str
    kind: MovementKind
    quantity: Decimal = Field(description="The signed change to on_hand")
    reason: str | None
    work_order_id: int | None
    reservation_id: int | None = Field(description="Set when issuing a reservation wrote it")
    actor: str
    at: UtcTime

    @classmethod
    def from_movement(cls, movement: Movement) -> MovementRead:
        """Return the API view of a ledger entry."""
        return cls.model_validate(movement.model_dump())


class MovementListRead(BaseModel):
    """A page of the ledger, oldest first; pass `next_cursor` as `cursor` for newer entries."""

    items: list[MovementRead]
    next_cursor: str | None


# --- reservations ---------------------------------------------------------------------


class ReservationCreate(_Body, NewReservation):
    """Stock a work order asks to hold; without `expires_at` it is held for 30 days."""

    work_order_id: WorkOrderRef
    expires_at: UtcInput | None = None


class ReservationReleaseCreate(_Body):
    """The release of a held reservation, with an optional note."""

    note: str | None = Field(default=None, max_length=MAX_NOTE)


class ReservationIssueCreate(ReservationReleaseCreate):
    """The issue of a held reservation: all of it, or the `quantity` used (the rest is freed)."""

    quantity: PositiveQuantity | None = None


class ReservationRead(BaseModel):
    """A reservation of stock for a work order."""

    id: int
    work_order_id: int
    sku: str
    location: str
    quantity: Decimal = Field(description="Held while `reserved`")
    status: ReservationStatus
    expires_at: UtcTime
    created_at: UtcTime
    created_by: str
    issued_quantity: Decimal | None = Field(description="What was used; set once issued")
    closed_at: UtcTime | None
    closed_by: str | None
    note: str | None
    closing_note: str | None

    @classmethod
    def from_reservation(cls, reservation: Reservation) -> ReservationRead:
        """Return the API view of a reservation."""
        return cls.model_validate(reservation.model_dump())


class ReservationListRead(BaseModel):
    """A page of reservations, oldest first; pass `next_cursor` as `cursor` for newer ones."""

    items: list[ReservationRead]
    next_cursor: str | None


# --- shortages ------------------------------------------------------------------------


class StockOutRead(BaseModel):
    """A demand the stock could not meet: one event of the stock-out rate KPI."""

    id: int
    sku: str
    location: str
    work_order_id: int | None
    requested: Decimal
    available: Decimal = Field(description="At the location, when the demand was refused")
    shortfall: Decimal = Field(description="requested - available")
    at: UtcTime

    @classmethod
    def from_stock_out(cls, event: StockOut) -> StockOutRead:
        """Return the API view of a stock-out event."""
        return cls.model_validate(
            {**event.model_dump(), "shortfall": event.requested - event.available}
        )


class StockOutListRead(BaseModel):
    """A page of stock-out events, oldest first; pass `next_cursor` as `cursor` for newer ones."""

    items: list[StockOutRead]
    next_cursor: str | None


class ReorderSignalRead(BaseModel):
    """A part whose available stock, over all locations, is at or below its reorder point."""

    sku: str
    unit: Unit
    available: Decimal = Field(description="Negative when it counts a demand that was not met")
    reorder_point: Decimal
    reorder_quantity: Decimal
    suggested_quantity: Decimal = Field(
        description="Brings the stock back to reorder_point + reorder_quantity"
    )

    @classmethod
    def from_signal(cls, signal: ReorderSignal) -> ReorderSignalRead:
        """Return the API view of a reorder signal."""
        return cls.model_validate(signal.model_dump())


class ReorderSignalListRead(BaseModel):
    """The parts to reorder, by SKU."""

    items: list[ReorderSignalRead]
