"""Drive work orders through their lifecycle in tests, the way people would."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.workorders import (
    Action,
    Channel,
    CorrectiveRequest,
    Impact,
    TransitionDetails,
    WorkOrder,
    WorkOrderStatus,
)
from rules.ports import WorkOrderRepository

# A reported fault, for corrective orders that need one.
REQUEST = CorrectiveRequest(
    channel=Channel.PHONE,
    fault="Seal leaking at the shaft",
    impact=Impact.DEGRADED,
    contact_name="Operator on shift",
    contact_phone="+49 30 1234567",
)
REQUEST_JSON: dict[str, Any] = REQUEST.model_dump(mode="json")


def act(
    orders: WorkOrderRepository,
    order_id: int,
    action: Action,
    actor: str,
    now: datetime,
    *,
    note: str | None = None,
) -> WorkOrder:
    """Apply one action with an optional note."""
    return orders.transition(order_id, action, TransitionDetails(note=note), actor=actor, now=now)


def start(orders: WorkOrderRepository, order_id: int, actor: str, now: datetime) -> WorkOrder:
    """Accept an order if nobody has, then start it (a technician arriving on site)."""
    if orders.get(order_id).status in (WorkOrderStatus.REQUESTED, WorkOrderStatus.REOPENED):
        act(orders, order_id, Action.ACCEPT, actor, now)
    return act(orders, order_id, Action.START, actor, now)


def resolve(
    orders: WorkOrderRepository, order_id: int, actor: str, note: str | None, now: datetime
) -> WorkOrder:
    """Start an order if it is not under way, then resolve it."""
    if orders.get(order_id).status is not WorkOrderStatus.IN_PROGRESS:
        start(orders, order_id, actor, now)
    return act(orders, order_id, Action.RESOLVE, actor, now, note=note)
