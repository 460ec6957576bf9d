"""Routes of work orders: `/api/v1/work-orders`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AwareDatetime

from api.dependencies import Admin, Planner, Services, Technician, Viewer
from api.pagination import MAX_ID, IdCursor, keyset_page
from api.problems import problem_responses
from api.schemas import (
    EscalationListRead,
    EscalationRead,
    ReasonCreate,
    TransitionCreate,
    WorkOrderCloseCreate,
    WorkOrderCreate,
    WorkOrderEventListRead,
    WorkOrderEventRead,
    WorkOrderListRead,
    WorkOrderRead,
    WorkOrderResolveCreate,
)
from api.services import ApiServices
from core.auth import TokenInfo
from core.errors import ValidationError
from core.priority import Priority
from core.sla import SlaPolicy, SlaPolicyOverride
from core.technicians import TECHNICIAN_ID_PATTERN
from core.workorders import Action, WorkOrderKind, WorkOrderStatus

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


@router.get("", response_model=WorkOrderListRead)
def list_work_orders(
    *,
    services: Services,
    _caller: Viewer,
    status: WorkOrderStatus | None = None,
    kind: WorkOrderKind | None = None,
    priority: Priority | None = None,
    asset_id: Annotated[str | None, Query(max_length=128)] = None,
    site: Annotated[str | None, Query(max_length=100)] = None,
    rule_id: Annotated[str | None, Query(max_length=128)] = None,
    technician_id: Annotated[str | None, Query(pattern=TECHNICIAN_ID_PATTERN)] = None,
    created_from: Annotated[AwareDatetime | None, Query(description="Inclusive")] = None,
    created_to: Annotated[AwareDatetime | None, Query(description="Exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: IdCursor = None,
) -> Response:
    """List work orders newest first, optionally filtered, a page at a time."""
    if created_from is not None and created_to is not None and created_from >= created_to:
        raise ValidationError(
            "created_from must be before created_to",
            created_from=created_from.isoformat(),
            created_to=created_to.isoformat(),
        )
    page = services.work_orders.list(
        status=status,
        kind=kind,
        priority=priority,
        asset_id=asset_id,
        site=site,
        rule_id=rule_id,
        technician_id=technician_id,
        created_from=created_from,
        created_to=created_to,
        before_id=cursor,
        limit=limit + 1,
    )
    items, next_cursor = keyset_page(page, limit, lambda order: str(order.id))
    listed = WorkOrderListRead(
        items=[WorkOrderRead.from_work_order(order) for order in items], next_cursor=next_cursor
    )
    # Serialised here, on this worker thread. Returned as a model, FastAPI would validate
    # it again on a second worker thread before serialising it: the busiest endpoint,
    # checked against the very model that just built it.
    return Response(listed.model_dump_json(), media_type="application/json")


@router.get("/{order_id}", responses=problem_responses(404))
def get_work_order(order_id: OrderIdPath, services: Services, _caller: Viewer) -> WorkOrderRead:
    """Return one work order with its evidence and the ids of its alerts."""
    return WorkOrderRead.from_work_order(services.work_orders.get(order_id))


@router.get("/{order_id}/events", responses=problem_responses(404))
def list_work_order_events(
    order_id: OrderIdPath, services: Services, _caller: Viewer
) -> WorkOrderEventListRead:
    """Return the audit trail: every transition with its actor, time, from, to and note."""
    events = services.work_orders.events(order_id)
    return WorkOrderEventListRead(
        items=[WorkOrderEventRead.model_validate(e.model_dump()) for e in events]
    )


def _apply(
    services: ApiServices, order_id: int, action: Action, caller: TokenInfo, body: TransitionCreate
) -> WorkOrderRead:
    order = services.work_orders.transition(
        order_id, action, body.details(), actor=caller.name, now=services.clock.now()
    )
    return WorkOrderRead.from_work_order(order)


_REFUSALS = problem_responses(404, 409)


@router.post("/{order_id}/accept", responses=_REFUSALS)
def accept_work_order(
    order_id: OrderIdPath, services: Services, caller: Planner, body: TransitionCreate | None = None
) -> WorkOrderRead:
    """Accept a requested (or reopened) order: the team will do it."""
    return _apply(services, order_id, Action.ACCEPT, caller, body or TransitionCreate())


@router.post("/{order_id}/schedule", responses=_REFUSALS)
def schedule_work_order(
    order_id: OrderIdPath, services: Services, caller: Planner, body: TransitionCreate | None = None
) -> WorkOrderRead:
    """Mark an accepted order as planned into someone's calendar."""
    return _apply(services, order_id, Action.SCHEDULE, caller, body or TransitionCreate())


@router.post("/{order_id}/start", responses=_REFUSALS)
def start_work_order(
    order_id: OrderIdPath,
    services: Services,
    caller: Technician,
    body: TransitionCreate | None = None,
) -> WorkOrderRead:
    """Start the work on an accepted or scheduled order."""
    return _apply(services, order_id, Action.START, caller, body or TransitionCreate())


@router.post("/{order_id}/hold", responses=_REFUSALS)
def hold_work_order(
    order_id: OrderIdPath, services: Services, caller: Technician, body: ReasonCreate
) -> WorkOrderRead:
    """Put an order on hold (waiting for parts, access, the customer), saying why."""
    return _apply(services, order_id, Action.HOLD, caller, body)


@router.post("/{order_id}/resume", responses=_REFUSALS)
def resume_work_order(
    order_id: OrderIdPath,
    services: Services,
    caller: Technician,
    body: TransitionCreate | None = None,
) -> WorkOrderRead:
    """Take an order off hold, back to the status it had."""
    return _apply(services, order_id, Action.RESUME, caller, body or TransitionCreate())


@router.post("/{order_id}/resolve", responses=_REFUSALS)
def resolve_work_order(
    order_id: OrderIdPath,
    services: Services,
    caller: Technician,
    body: WorkOrderResolveCreate | None = None,
) -> WorkOrderRead:
    """Resolve an order in progress, with a note and the completion data if known."""
    return _apply(services, order_id, Action.RESOLVE, caller, body or WorkOrderResolveCreate())


@router.post("/{order_id}/close", responses=_REFUSALS)
def close_work_order(
    order_id: OrderIdPath,
    services: Services,
    caller: Planner,
    body: WorkOrderCloseCreate | None = None,
) -> WorkOrderRead:
    """Close a resolved order. 409 without completion data, or without the customer's sign-off
    when the asset belongs to a customer."""
    return _apply(services, order_id, Action.CLOSE, caller, body or WorkOrderCloseCreate())


@router.post("/{order_id}/cancel", responses=_REFUSALS)
def cancel_work_order(
    order_id: OrderIdPath, services: Services, caller: Planner, body: ReasonCreate
) -> WorkOrderRead:
    """Cancel an order not yet under way, saying why."""
    return _apply(services, order_id, Action.CANCEL, caller, body)


@router.post("/{order_id}/reopen", responses=_REFUSALS)
def reopen_work_order(
    order_id: OrderIdPath, services: Services, caller: Planner, body: ReasonCreate
) -> WorkOrderRead:
    """Reopen a resolved order whose fault came back; counts a repeat failure."""
    return _apply(services, order_id, Action.REOPEN, caller, body)


escalations_router = APIRouter(tags=["SLA"])


@escalations_router.get("/escalations")
def list_escalations(
    services: Services,
    _caller: Viewer,
    work_order_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: IdCursor = None,
) -> EscalationListRead:
    """List SLA escalations newest first: one per missed target of a work order."""
    page = services.work_orders.escalations(
        work_order_id=work_order_id, before_id=cursor, limit=limit + 1
    )
    items, next_cursor = keyset_page(page, limit, lambda escalation: str(escalation.id))
    return EscalationListRead(
        items=[EscalationRead.model_validate(e.model_dump()) for e in items],
        next_cursor=next_cursor,
    )


@escalations_router.get("/sla/policy")
def get_sla_policy(
    services: Services,
    _caller: Viewer,
    customer: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> SlaPolicy:
    """Return the SLA targets new work orders get: the base policy, or a customer's."""
    return services.work_orders.sla_policy(customer)


@escalations_router.put("/sla/overrides/{customer}")
def put_sla_override(
    customer: Annotated[str, Path(min_length=1, max_length=200)],
    body: SlaPolicyOverride,
    services: Services,
    _caller: Admin,
) -> SlaPolicy:
    """Set a customer's changes to the SLA policy; return the policy they yield.

    Priorities and targets left out inherit; a target given as null is removed. Orders
    already open keep their deadlines.
    """
    return services.work_orders.set_sla_override(customer, body, services.clock.now())
