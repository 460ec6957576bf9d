"""Routes of work orders: `/api/v1/work-orders`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from api.dependencies import Planner, Services, Technician, Viewer
from api.pagination import MAX_ID, IdCursor, keyset_page
from api.problems import problem_responses
from api.schemas import (
    WorkOrderCreate,
    WorkOrderListRead,
    WorkOrderRead,
    WorkOrderResolveCreate,
)
from core.workorders import WorkOrderKind, WorkOrderStatus

router = APIRouter(prefix="/work-orders", tags=["work orders"])

MAX_PAGE = 500
# Ids are 64-bit in the store; a larger number is a bad request, not a missing order.
OrderIdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.post("", status_code=201)
def create_work_order(
    body: WorkOrderCreate,
    services: Services,
    caller: Planner,
    request: Request,
    response: Response,
) -> WorkOrderRead:
    """Open a corrective or preventive work order on a registered asset."""
    order = services.work_orders.create(
        body.to_new_work_order(), services.clock.now(), actor=caller.name
    )
    response.headers["Location"] = str(request.url_for("get_work_order", order_id=order.id))
    return WorkOrderRead.from_work_order(order)


@router.get("")
def list_work_orders(
    *,
    services: Services,
    _caller: Viewer,
    status: WorkOrderStatus | None = None,
    kind: WorkOrderKind | None = None,
    asset_id: Annotated[str | None, Query(max_length=128)] = None,
    rule_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: IdCursor = None,
) -> WorkOrderListRead:
    """List work orders newest first, optionally filtered, a page at a time."""
    page = services.work_orders.list(
        status=status,
        kind=kind,
        asset_id=asset_id,
        rule_id=rule_id,
        before_id=cursor,
        limit=limit + 1,
    )
    items, next_cursor = keyset_page(page, limit, lambda order: str(order.id))
    return WorkOrderListRead(
        items=[WorkOrderRead.from_work_order(order) for order in items], next_cursor=next_cursor
    )


@router.get("/{order_id}", responses=problem_responses(404))
def get_work_order(order_id: OrderIdPath, services: Services, _caller: Viewer) -> WorkOrderRead:
    """Return one work order with its evidence and the ids of its alerts."""
    return WorkOrderRead.from_work_order(services.work_orders.get(order_id))


@router.post("/{order_id}/start", responses=problem_responses(404, 409))
def start_work_order(
    order_id: OrderIdPath, services: Services, caller: Technician
) -> WorkOrderRead:
    """Start the work. 409 if the order is finished or already under way."""
    order = services.work_orders.start(order_id, caller.name, services.clock.now())
    return WorkOrderRead.from_work_order(order)


@router.post("/{order_id}/resolve", responses=problem_responses(404, 409))
def resolve_work_order(
    order_id: OrderIdPath,
    services: Services,
    caller: Technician,
    body: WorkOrderResolveCreate | None = None,
) -> WorkOrderRead:
    """Resolve an open work order, with a note on what was done. 409 if it is not open."""
    note = body.note if body is not None else None
    order = services.work_orders.resolve(order_id, caller.name, note, services.clock.now())
    return WorkOrderRead.from_work_order(order)
