"""Routes of maintenance plans and site calendars.

`/api/v1/maintenance-plans` and `/api/v1/sites/{site}/calendar`; docs/calendar.md
describes plans, their triggers and what a site calendar changes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from api.dependencies import Planner, Services, Viewer
from api.inventory_schemas import StorableText
from api.pagination import keyset_page
from api.plan_schemas import (
    PlanCreate,
    PlanListRead,
    PlanRead,
    PlanUpdate,
    SiteCalendarRead,
    SiteCalendarUpdate,
)
from api.problems import problem_responses
from api.services import ApiServices
from core.assets import ASSET_ID_PATTERN
from core.errors import NotFoundError, ValidationError
from core.inventory import Part, check_quantity
from scheduler.model import NewMaintenancePlan

router = APIRouter(prefix="/maintenance-plans", tags=["maintenance plans"])
sites_router = APIRouter(prefix="/sites", tags=["site calendars"])

MAX_PAGE = 500

PlanIdPath = Annotated[str, Path(pattern=ASSET_ID_PATTERN, description="The plan's id")]
_UNKNOWN = "unknown_reference"

SitePath = Annotated[StorableText, Path(min_length=1, max_length=100, description="The site")]


def check_references(services: ApiServices, plan: NewMaintenancePlan) -> None:
    """Refuse (422) a plan naming an unregistered asset, or a part or location not stocked.

    Every missing reference is named, each with the field it is in; so is a quantity the
    part's unit cannot hold (a fraction of a piece), which no reservation could satisfy.
    """
    errors: list[dict[str, Any]] = []

    def refuse(location: tuple[str | int, ...], message: str, kind: str) -> None:
        errors.append({"loc": location, "msg": message, "type": kind})

    if plan.asset_id is not None:
        try:
            services.assets.get(plan.asset_id)
        except NotFoundError:
            refuse(("asset_id",), f"asset {plan.asset_id!r} is not registered", _UNKNOWN)
    parts: dict[str, Part | None] = {}
    locations: dict[str, bool] = {}
    for index, line in enumerate(plan.parts):
        if line.sku not in parts:
            try:
                parts[line.sku] = services.inventory.get_part(line.sku)
            except NotFoundError:
                parts[line.sku] = None
        if line.location not in locations:
            try:
                services.inventory.get_location(line.location)
            except NotFoundError:
                locations[line.location] = False
            else:
                locations[line.location] = True
        part = parts[line.sku]
        if part is None:
            refuse(("parts", index, "sku"), f"part {line.sku!r} is not in the inventory", _UNKNOWN)
        else:
            try:
                check_quantity(part.unit, line.quantity)
            except ValidationError as error:
                refuse(("parts", index, "quantity"), error.detail, "quantity")
        if not locations[line.location]:
            refuse(
                ("parts", index, "location"),
                f"stock location {line.location!r} does not exist",
                _UNKNOWN,
            )
    if errors:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in errors
        )
        raise ValidationError(detail, errors=errors)


# --- maintenance plans ----------------------------------------------------------------


@router.post("", status_code=201, responses=problem_responses(409))
def create_plan(
    body: PlanCreate,
    services: Services,
    _caller: Planner,
    request: Request,
    response: Response,
) -> PlanRead:
    """Create a maintenance plan; 409 if the id is taken.

    422 names each invalid field, and each reference that does not exist: the asset
    (`asset_id`), a part's SKU or its stock location (`parts.<n>.sku`, `.location`).
    """
    plan = body.to_new_plan()
    check_references(services, plan)
    created = services.plans.add(plan)
    response.headers["Location"] = str(request.url_for("get_plan", plan_id=created.id))
    return PlanRead.from_plan(created)


@router.get("")
def list_plans(
    *,
    services: Services,
    _caller: Viewer,
    asset_id: Annotated[
        str | None, Query(pattern=ASSET_ID_PATTERN, description="Plans scoped to this asset")
    ] = None,
    asset_type: Annotated[
        StorableText | None,
        Query(min_length=1, max_length=100, description="Plans scoped to this asset type"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[
        str | None,
        Query(pattern=ASSET_ID_PATTERN, description="`next_cursor` of the previous page"),
    ] = None,
) -> PlanListRead:
    """List plans by id, optionally those scoped to one asset or one asset type.

    The filters match the plan's own scope: a plan for every `pump` is listed under
    `asset_type=pump`, not under the id of each pump.
    """
    page = services.plans.list(
        asset_id=asset_id, asset_type=asset_type, after_id=cursor, limit=limit + 1
    )
    items, next_cursor = keyset_page(page, limit, lambda plan: plan.id)
    return PlanListRead(items=[PlanRead.from_plan(p) for p in items], next_cursor=next_cursor)


@router.get("/{plan_id}", responses=problem_responses(404))
def get_plan(plan_id: PlanIdPath, services: Services, _caller: Viewer) -> PlanRead:
    """Return one plan."""
    return PlanRead.from_plan(services.plans.get(plan_id))


@router.put("/{plan_id}", responses=problem_responses(404))
def replace_plan(
    plan_id: PlanIdPath, body: PlanUpdate, services: Services, _caller: Planner
) -> PlanRead:
    """Replace a plan's whole definition; 404 if there is no such plan.

    The body's `id` may be left out; if sent it must be the path's. What the plan already
    generated (work orders, bookings) stays as it is; the next run follows the new one.
    """
    plan = body.to_plan(plan_id)
    services.plans.get(plan_id)  # an unknown plan is a 404 before its references are judged
    check_references(services, plan)
    return PlanRead.from_plan(services.plans.replace(plan))


@router.delete("/{plan_id}", status_code=204, responses=problem_responses(404))
def delete_plan(plan_id: PlanIdPath, services: Services, _caller: Planner) -> Response:
    """Delete a plan; the work orders it generated stay, as history."""
    services.plans.delete(plan_id)
    return Response(status_code=204)


# --- site calendars -------------------------------------------------------------------


@sites_router.put("/{site}/calendar")
def put_site_calendar(
    site: SitePath, body: SiteCalendarUpdate, services: Services, _caller: Planner
) -> SiteCalendarRead:
    """Create or replace a site's calendar: its zone, holidays and seasons.

    Occurrences falling due on a holiday or out of season move to the next allowed local
    day; the zone is also the one the site's iCalendar feed is written in.
    """
    return SiteCalendarRead.from_calendar(services.plans.put_calendar(body.to_calendar(site)))


@sites_router.get("/{site}/calendar", responses=problem_responses(404))
def get_site_calendar(site: SitePath, services: Services, _caller: Viewer) -> SiteCalendarRead:
    """Return a site's calendar; 404 if it has none (work may then fall due any day, UTC)."""
    return SiteCalendarRead.from_calendar(services.plans.calendar(site))


@sites_router.delete("/{site}/calendar", status_code=204, responses=problem_responses(404))
def delete_site_calendar(site: SitePath, services: Services, _caller: Planner) -> Response:
    """Delete a site's calendar: every day becomes a working day, in UTC."""
    services.plans.delete_calendar(site)
    return Response(status_code=204)
