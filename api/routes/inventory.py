"""Routes of the parts inventory: locations, parts, stock, the ledger, reservations, shortages.

`/api/v1/locations`, `/parts`, `/stock`, `/reservations`, `/reorder-signals` and
`/stock-outs`; docs/inventory.md describes the model behind them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from api.dependencies import Planner, Services, Technician, Viewer
from api.inventory_schemas import (
    LocationCreate,
    LocationListRead,
    LocationRead,
    MovementCreate,
    MovementListRead,
    MovementRead,
    PartCreate,
    PartListRead,
    PartRead,
    PartStockRead,
    PartUpdate,
    ReorderSignalListRead,
    ReorderSignalRead,
    ReservationCreate,
    ReservationIssueCreate,
    ReservationListRead,
    ReservationRead,
    ReservationReleaseCreate,
    StockLevelRead,
    StockListRead,
    StockOutListRead,
    StockOutRead,
    StorableText,
    UtcInput,
)
from api.pagination import MAX_ID, IdCursor, keyset_page
from api.problems import ProblemRead, problem_responses
from api.services import ApiServices
from core.auth import Role, TokenInfo
from core.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from core.inventory import (
    LOCATION_PATTERN,
    SKU_PATTERN,
    InsufficientStockError,
    MovementKind,
    ReservationStatus,
    shortage_note,
)
from core.workorders import (
    Action,
    TransitionDetails,
    WorkOrder,
    WorkOrderStatus,
    allowed_actions,
)

router = APIRouter(tags=["inventory"])

MAX_PAGE = 500
MAX_STOCK_OUTS = 1000
# A stock row's key as a cursor: `/` is in neither a SKU nor a location code.
STOCK_CURSOR_PATTERN = f"^{SKU_PATTERN[1:-1]}/{LOCATION_PATTERN[1:-1]}$"

SkuPath = Annotated[str, Path(pattern=SKU_PATTERN, description="The part's SKU")]
LocationPath = Annotated[str, Path(pattern=LOCATION_PATTERN, description="The location's code")]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
SkuFilter = Annotated[str | None, Query(pattern=SKU_PATTERN)]
LocationFilter = Annotated[str | None, Query(pattern=LOCATION_PATTERN)]
WorkOrderFilter = Annotated[int | None, Query(ge=1, le=MAX_ID)]

# Receiving, issuing and returning parts is a technician's daily work; writing stock off
# or correcting a count changes the books, so it takes a planner.
MOVEMENT_ROLES = {
    MovementKind.RECEIPT: Role.TECHNICIAN,
    MovementKind.ISSUE: Role.TECHNICIAN,
    MovementKind.RETURN: Role.TECHNICIAN,
    MovementKind.SCRAP: Role.PLANNER,
    MovementKind.ADJUST: Role.PLANNER,
}
# Work orders whose work is over: nothing more is reserved for them.
_FINISHED = frozenset({WorkOrderStatus.CLOSED, WorkOrderStatus.CANCELLED})

_SHORTAGE: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ProblemRead,
        "description": "`insufficient_stock`, with `sku`, `location`, `requested`, `available`, "
        "`shortfall`, `work_order_id` and the `reorder` suggestion (null if none); "
        "or another conflict",
    }
}
_NOT_FOUND_OR_SHORT = {**problem_responses(404), **_SHORTAGE}
_RESERVATION_REFUSALS: dict[int | str, dict[str, Any]] = {
    **problem_responses(404),
    409: {
        "model": ProblemRead,
        "description": "`insufficient_stock`, with `sku`, `location`, `requested`, `available`, "
        "`shortfall`, `work_order_id`, the `reorder` suggestion (null if none), "
        "`work_order_held` (whether this refusal put the order on hold) and "
        "`work_order_status`; or `conflict` for a closed or cancelled work order",
    },
}


@contextmanager
def _shortage_figures() -> Iterator[None]:
    """Add the shortfall and the reorder suggestion to an insufficient-stock problem."""
    try:
        yield
    except InsufficientStockError as exc:
        exc.extra["shortfall"] = str(exc.shortfall)
        exc.extra["reorder"] = exc.reorder.model_dump(mode="json") if exc.reorder else None
        raise


def _check_open_work_order(services: ApiServices, work_order_id: int) -> WorkOrder:
    """Return the work order; NotFoundError if unknown, ConflictError if finished."""
    order = services.work_orders.get(work_order_id)
    if order.status in _FINISHED:
        raise ConflictError(
            f"work order {work_order_id} is {order.status.value}; nothing can be reserved for it",
            work_order_id=work_order_id,
            work_order_status=order.status.value,
        )
    return order


def _hold_for_shortage(
    services: ApiServices, order_id: int, shortage: InsufficientStockError, caller: TokenInfo
) -> dict[str, Any]:
    """Put a short work order on hold if its status allows; return what to tell the caller.

    The refusal has committed already (a stock-out event, no stock held), so the hold is
    a second, ordinary transition, audited with the caller as actor: a hold that fails
    neither undoes nor hides the refusal, and the answer says whether it happened.
    """
    order = services.work_orders.get(order_id)  # again: the refusal took time
    if Action.HOLD not in allowed_actions(order.status):
        return {"work_order_held": False, "work_order_status": order.status.value}
    try:
        held = services.work_orders.transition(
            order.id,
            Action.HOLD,
            TransitionDetails(note=shortage_note(shortage)),
            actor=caller.name,
            now=services.clock.now(),
        )
    except ConflictError:
        # It moved meanwhile (another refusal held it first, a start, a cancel).
        order = services.work_orders.get(order.id)
        return {"work_order_held": False, "work_order_status": order.status.value}
    return {"work_order_held": True, "work_order_status": held.status.value}


def _check_movement_role(kind: MovementKind, caller: TokenInfo) -> None:
    """Raise ForbiddenError unless the caller's role may post movements of `kind`."""
    needed = MOVEMENT_ROLES[kind]
    if not caller.role.includes(needed):
        raise ForbiddenError(
            f"{kind.value} movements need the {needed.value} role or above; "
            f"the token has {caller.role.value}",
            required_role=needed.value,
            kind=kind.value,
        )


# --- locations ------------------------------------------------------------------------


@router.post("/locations", status_code=201, responses=problem_responses(409))
def create_location(
    body: LocationCreate,
    services: Services,
    _caller: Planner,
    request: Request,
    response: Response,
) -> LocationRead:
    """Register a stock location (storeroom, van, bin); answer 409 if the code is taken."""
    location = services.inventory.add_location(body)
    response.headers["Location"] = str(request.url_for("get_location", code=location.code))
    return LocationRead.from_location(location)


@router.get("/locations")
def list_locations(services: Services, _caller: Viewer) -> LocationListRead:
    """List every stock location, by code."""
    return LocationListRead(
        items=[LocationRead.from_location(location) for location in services.inventory.locations()]
    )


@router.get("/locations/{code}", responses=problem_responses(404))
def get_location(code: LocationPath, services: Services, _caller: Viewer) -> LocationRead:
    """Return one stock location."""
    return LocationRead.from_location(services.inventory.get_location(code))


# --- parts ----------------------------------------------------------------------------


@router.post("/parts", status_code=201, responses=problem_responses(409))
def create_part(
    body: PartCreate, services: Services, _caller: Planner, request: Request, response: Response
) -> PartRead:
    """Add a part to the catalogue; answer 409 if the SKU is taken."""
    part = services.inventory.add_part(body)
    response.headers["Location"] = str(request.url_for("get_part", sku=part.sku))
    return PartRead.from_part(part)


@router.get("/parts")
def list_parts(
    services: Services,
    _caller: Viewer,
    category: Annotated[StorableText | None, Query(min_length=1, max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[
        str | None, Query(pattern=SKU_PATTERN, description="`next_cursor` of the previous page")
    ] = None,
) -> PartListRead:
    """List parts ordered by SKU, optionally of one category, a page at a time."""
    page = services.inventory.parts(category=category, after_sku=cursor, limit=limit + 1)
    items, next_cursor = keyset_page(page, limit, lambda part: part.sku)
    return PartListRead(items=[PartRead.from_part(part) for part in items], next_cursor=next_cursor)


@router.get("/parts/{sku}", responses=problem_responses(404))
def get_part(sku: SkuPath, services: Services, _caller: Viewer) -> PartRead:
    """Return one part."""
    return PartRead.from_part(services.inventory.get_part(sku))


@router.patch("/parts/{sku}", responses=problem_responses(404))
def update_part(sku: SkuPath, body: PartUpdate, services: Services, _caller: Planner) -> PartRead:
    """Change a part's name, category or replenishment policy; the unit never changes."""
    if not body.model_fields_set:
        return PartRead.from_part(services.inventory.get_part(sku))
    return PartRead.from_part(services.inventory.update_part(sku, body))


# --- stock and the ledger -------------------------------------------------------------


@router.get("/parts/{sku}/stock", responses=problem_responses(404))
def get_part_stock(sku: SkuPath, services: Services, _caller: Viewer) -> PartStockRead:
    """Return a part's stock at each location it ever moved at, and the totals."""
    part = services.inventory.get_part(sku)
    return PartStockRead.from_levels(part, services.inventory.stock_levels(sku=sku))


@router.get("/stock")
def list_stock(
    *,
    services: Services,
    _caller: Viewer,
    sku: SkuFilter = None,
    location: LocationFilter = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[
        str | None,
        Query(
            pattern=STOCK_CURSOR_PATTERN,
            description="`next_cursor` of the previous page (`sku/location`)",
        ),
    ] = None,
) -> StockListRead:
    """List stock levels by (sku, location), optionally of one part or one location, paged."""
    after: tuple[str, str] | None = None
    if cursor is not None:
        after_sku, after_location = cursor.split("/", 1)
        after = (after_sku, after_location)
    levels = services.inventory.stock_levels(
        sku=sku, location=location, after=after, limit=limit + 1
    )
    items, next_cursor = keyset_page(levels, limit, lambda level: f"{level.sku}/{level.location}")
    return StockListRead(
        items=[StockLevelRead.from_level(level) for level in items], next_cursor=next_cursor
    )


@router.post("/parts/{sku}/movements", status_code=201, responses=_NOT_FOUND_OR_SHORT)
def record_movement(
    *,
    sku: SkuPath,
    body: MovementCreate,
    services: Services,
    caller: Technician,
    request: Request,
    response: Response,
) -> MovementRead:
    """Post a receipt, an unplanned issue, a return, a scrap or a stock-count adjustment.

    Technicians receive, issue and return; scraps and adjustments (which need a reason)
    take a planner. A movement that would take on_hand below zero or below what is
    reserved answers 409 `insufficient_stock` and changes nothing.
    """
    _check_movement_role(body.kind, caller)
    movement = body.to_new_movement(sku)
    if movement.work_order_id is not None:
        services.work_orders.get(movement.work_order_id)  # 404 for an unknown work order
    with _shortage_figures():
        entry = services.inventory.record_movement(movement, actor=caller.name)
    response.headers["Location"] = str(
        request.url_for("get_ledger_entry", sku=sku, entry_id=entry.id)
    )
    return MovementRead.from_movement(entry)


@router.get("/parts/{sku}/ledger", responses=problem_responses(404))
def list_ledger(
    *,
    sku: SkuPath,
    services: Services,
    _caller: Viewer,
    location: LocationFilter = None,
    work_order_id: WorkOrderFilter = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: IdCursor = None,
) -> MovementListRead:
    """Return a part's ledger oldest first, optionally at one location or of one work order."""
    services.inventory.get_part(sku)  # 404 for an unknown part, not an empty ledger
    page = services.inventory.ledger(
        sku=sku, location=location, work_order_id=work_order_id, after_id=cursor, limit=limit + 1
    )
    items, next_cursor = keyset_page(page, limit, lambda entry: str(entry.id))
    return MovementListRead(
        items=[MovementRead.from_movement(entry) for entry in items], next_cursor=next_cursor
    )


@router.get("/parts/{sku}/ledger/{entry_id}", responses=problem_responses(404))
def get_ledger_entry(
    sku: SkuPath, entry_id: IdPath, services: Services, _caller: Viewer
) -> MovementRead:
    """Return one ledger entry of a part."""
    found = services.inventory.ledger(sku=sku, after_id=entry_id - 1, limit=1)
    if not found or found[0].id != entry_id:
        raise NotFoundError(f"ledger entry {entry_id} of {sku!r} not found", entry_id=entry_id)
    return MovementRead.from_movement(found[0])


# --- reservations ---------------------------------------------------------------------


@router.post("/reservations", status_code=201, responses=_RESERVATION_REFUSALS)
def create_reservation(
    body: ReservationCreate,
    services: Services,
    caller: Technician,
    request: Request,
    response: Response,
) -> ReservationRead:
    """Hold stock for a work order, or answer 409 `insufficient_stock` with the figures.

    A refusal holds nothing, and is recorded as a stock-out (`GET /stock-outs`); the
    part then shows in `GET /reorder-signals` if its stock is at the reorder point. The
    work order is then put on hold (waiting for parts) when its status allows a hold;
    `work_order_held` says whether this refusal did. To retry, reserve again once stock
    has come in: resuming the order reserves nothing by itself.
    """
    _check_open_work_order(services, body.work_order_id)
    try:
        with _shortage_figures():
            reservation = services.inventory.reserve(body, actor=caller.name)
    except InsufficientStockError as shortage:
        shortage.extra.update(_hold_for_shortage(services, body.work_order_id, shortage, caller))
        raise
    response.headers["Location"] = str(
        request.url_for("get_reservation", reservation_id=reservation.id)
    )
    return ReservationRead.from_reservation(reservation)


@router.get("/reservations")
def list_reservations(
    *,
    services: Services,
    _caller: Viewer,
    work_order_id: WorkOrderFilter = None,
    status: ReservationStatus | None = None,
    sku: SkuFilter = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: IdCursor = None,
) -> ReservationListRead:
    """List reservations oldest first, optionally of one work order, status or part, paged."""
    page = services.inventory.reservations(
        work_order_id=work_order_id, status=status, sku=sku, after_id=cursor, limit=limit + 1
    )
    items, next_cursor = keyset_page(page, limit, lambda reservation: str(reservation.id))
    return ReservationListRead(
        items=[ReservationRead.from_reservation(r) for r in items], next_cursor=next_cursor
    )


@router.get("/reservations/{reservation_id}", responses=problem_responses(404))
def get_reservation(reservation_id: IdPath, services: Services, _caller: Viewer) -> ReservationRead:
    """Return one reservation."""
    return ReservationRead.from_reservation(services.inventory.get_reservation(reservation_id))


_CLOSE_REFUSALS = problem_responses(404, 409)


@router.post("/reservations/{reservation_id}/release", responses=_CLOSE_REFUSALS)
def release_reservation(
    reservation_id: IdPath,
    services: Services,
    caller: Technician,
    body: ReservationReleaseCreate | None = None,
) -> ReservationRead:
    """Give a held reservation's stock back (the parts are no longer needed).

    409 `invalid_transition` if it is not `reserved` any more; nothing changes then.
    """
    note = body.note if body else None
    released = services.inventory.release(reservation_id, actor=caller.name, note=note)
    return ReservationRead.from_reservation(released)


@router.post("/reservations/{reservation_id}/issue", responses=_CLOSE_REFUSALS)
def issue_reservation(
    reservation_id: IdPath,
    services: Services,
    caller: Technician,
    body: ReservationIssueCreate | None = None,
) -> ReservationRead:
    """Consume a held reservation: all of it, or the `quantity` used (the rest is freed).

    Writes the `issue` ledger entry. 409 `invalid_transition` if it is not `reserved`
    any more; nothing changes then.
    """
    body = body or ReservationIssueCreate()
    issued = services.inventory.issue(
        reservation_id, actor=caller.name, quantity=body.quantity, note=body.note
    )
    return ReservationRead.from_reservation(issued)


# --- shortages ------------------------------------------------------------------------


@router.get("/reorder-signals")
def list_reorder_signals(services: Services, _caller: Viewer) -> ReorderSignalListRead:
    """List the parts whose available stock, over all locations, is at the reorder point."""
    return ReorderSignalListRead(
        items=[ReorderSignalRead.from_signal(s) for s in services.inventory.reorder_signals()]
    )


@router.get("/stock-outs")
def list_stock_outs(
    *,
    services: Services,
    _caller: Viewer,
    sku: SkuFilter = None,
    since: Annotated[UtcInput | None, Query(description="Inclusive")] = None,
    until: Annotated[UtcInput | None, Query(description="Exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_STOCK_OUTS)] = 100,
    cursor: IdCursor = None,
) -> StockOutListRead:
    """List demands the stock could not meet in [since, until), oldest first, a page at a
    time: the stock-out events of the stock-out rate KPI."""
    if since is not None and until is not None and since >= until:
        raise ValidationError(
            "since must be before until", since=since.isoformat(), until=until.isoformat()
        )
    page = services.inventory.stock_outs(
        sku=sku, since=since, until=until, after_id=cursor, limit=limit + 1
    )
    items, next_cursor = keyset_page(page, limit, lambda event: str(event.id))
    return StockOutListRead(
        items=[StockOutRead.from_stock_out(event) for event in items], next_cursor=next_cursor
    )
