"""Routes of alerts: `/api/v1/alerts`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.dependencies import Services, Technician, Viewer
from api.pagination import MAX_ID, IdCursor, keyset_page
from api.problems import problem_responses
from api.schemas import AlertListRead, AlertRead, AlertTransitionCreate
from rules.alerting import AlertStatus

router = APIRouter(prefix="/alerts", tags=["alerts"])

MAX_PAGE = 500
# Ids are 64-bit in the store; a larger number is a bad request, not a missing alert.
AlertIdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.get("")
def list_alerts(
    *,
    services: Services,
    _caller: Viewer,
    status: AlertStatus | None = None,
    asset_id: Annotated[str | None, Query(max_length=128)] = None,
    rule_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: IdCursor = None,
) -> AlertListRead:
    """List alerts newest first, optionally by status, asset or rule, a page at a time."""
    page = services.alerts.list_alerts(
        status=status, asset_id=asset_id, rule_id=rule_id, before_id=cursor, limit=limit + 1
    )
    items, next_cursor = keyset_page(page, limit, lambda alert: str(alert.id))
    return AlertListRead(
        items=[AlertRead.from_alert(alert) for alert in items], next_cursor=next_cursor
    )


@router.get("/{alert_id}", responses=problem_responses(404))
def get_alert(alert_id: AlertIdPath, services: Services, _caller: Viewer) -> AlertRead:
    """Return one alert."""
    return AlertRead.from_alert(services.alerts.get_alert(alert_id))


@router.post("/{alert_id}/acknowledge", responses=problem_responses(404, 409))
def acknowledge_alert(
    alert_id: AlertIdPath,
    services: Services,
    caller: Technician,
    body: AlertTransitionCreate | None = None,
) -> AlertRead:
    """Acknowledge a firing alert: somebody is on it. 409 if it is not firing."""
    note = body.note if body is not None else None
    alert = services.alerts.acknowledge(alert_id, caller.name, note, services.clock.now())
    return AlertRead.from_alert(alert)


@router.post("/{alert_id}/resolve", responses=problem_responses(404, 409))
def resolve_alert(
    alert_id: AlertIdPath,
    services: Services,
    caller: Technician,
    body: AlertTransitionCreate | None = None,
) -> AlertRead:
    """Resolve a firing or acknowledged alert by hand. 409 if it is already resolved."""
    note = body.note if body is not None else None
    alert = services.alerts.resolve(alert_id, caller.name, note, services.clock.now())
    return AlertRead.from_alert(alert)
