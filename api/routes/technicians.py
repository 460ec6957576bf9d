"""Routes of technicians and of work-order assignment.

`/api/v1/technicians` (profiles, time off, availability) and
`/api/v1/work-orders/{id}/assign`, `/assignment`; docs/technicians.md describes the rules.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from api.dependencies import Planner, Services, Viewer
from api.inventory_schemas import StorableText, UtcInput
from api.pagination import MAX_ID, keyset_page
from api.problems import problem_responses
from api.routes.work_orders import OrderIdPath
from api.schemas import MAX_NOTE, WorkOrderRead
from api.technician_schemas import (
    AssignmentCreate,
    AvailabilityRead,
    ShiftWindowRead,
    TechnicianCreate,
    TechnicianListRead,
    TechnicianRead,
    TechnicianUpdate,
    TimeOffCreate,
    TimeOffListRead,
    TimeOffRead,
)
from core.errors import ValidationError
from core.technicians import (
    SKILL_QUERY_PATTERN,
    TECHNICIAN_ID_PATTERN,
    check_assignment,
    check_not_finished,
    local_date,
    shift_windows,
    shifts_on,
    skill_refusal,
    time_off_during,
    within_shifts,
)

router = APIRouter(prefix="/technicians", tags=["technicians"])
assignments_router = APIRouter(prefix="/work-orders", tags=["work orders"])

MAX_PAGE = 500
# The smallest step of time: a single instant `at` is the span [at, at + _TICK).
_TICK = timedelta(microseconds=1)

TechnicianIdPath = Annotated[
    str, Path(pattern=TECHNICIAN_ID_PATTERN, description="The technician's id")
]
SkillQuery = Annotated[str | None, Query(pattern=SKILL_QUERY_PATTERN)]


def _check_span(start: datetime | None, end: datetime | None, names: tuple[str, str]) -> None:
    if start is not None and end is not None and start >= end:
        raise ValidationError(
            f"{names[0]} must be before {names[1]}",
            **{names[0]: start.isoformat(), names[1]: end.isoformat()},
        )


# --- technicians ----------------------------------------------------------------------


@router.post("", status_code=201, responses=problem_responses(409))
def create_technician(
    body: TechnicianCreate,
    services: Services,
    _caller: Planner,
    request: Request,
    response: Response,
) -> TechnicianRead:
    """Register a technician; answer 409 if the id is taken."""
    technician = services.technicians.add(body)
    response.headers["Location"] = str(
        request.url_for("get_technician", technician_id=technician.id)
    )
    return TechnicianRead.from_technician(technician)


@router.get("")
def list_technicians(
    *,
    services: Services,
    _caller: Viewer,
    site: Annotated[StorableText | None, Query(min_length=1, max_length=100)] = None,
    skill: SkillQuery = None,
    certified_on: Annotated[
        date | None,
        Query(description="With `skill`: only those whose certification is valid that day"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[
        str | None,
        Query(pattern=TECHNICIAN_ID_PATTERN, description="`next_cursor` of the previous page"),
    ] = None,
) -> TechnicianListRead:
    """List technicians by id, optionally those at a site or holding a skill, a page at a time."""
    if certified_on is not None and skill is None:
        raise ValidationError(
            "certified_on filters on a skill's certification: give `skill` too",
            certified_on=certified_on.isoformat(),
        )
    page = services.technicians.list(
        site=site, skill=skill, certified_on=certified_on, after_id=cursor, limit=limit + 1
    )
    items, next_cursor = keyset_page(page, limit, lambda technician: technician.id)
    return TechnicianListRead(
        items=[TechnicianRead.from_technician(t) for t in items], next_cursor=next_cursor
    )


@router.get("/{technician_id}", responses=problem_responses(404))
def get_technician(
    technician_id: TechnicianIdPath, services: Services, _caller: Viewer
) -> TechnicianRead:
    """Return one technician."""
    return TechnicianRead.from_technician(services.technicians.get(technician_id))


@router.put("/{technician_id}", responses=problem_responses(404))
def replace_technician(
    technician_id: TechnicianIdPath, body: TechnicianUpdate, services: Services, _caller: Planner
) -> TechnicianRead:
    """Replace a technician's profile, sites, skills and hours; their time off is kept.

    Orders already assigned stay assigned, even if the technician no longer qualifies.
    """
    replaced = services.technicians.replace(body.to_new_technician(technician_id))
    return TechnicianRead.from_technician(replaced)


# --- time off -------------------------------------------------------------------------


@router.post("/{technician_id}/time-off", status_code=201, responses=problem_responses(404))
def create_time_off(
    technician_id: TechnicianIdPath,
    body: TimeOffCreate,
    services: Services,
    caller: Planner,
) -> TimeOffRead:
    """Record an absence: the technician cannot be booked in [start_at, end_at)."""
    return TimeOffRead.from_time_off(
        services.technicians.add_time_off(technician_id, body, actor=caller.name)
    )


@router.get("/{technician_id}/time-off", responses=problem_responses(404))
def list_time_off(
    *,
    technician_id: TechnicianIdPath,
    services: Services,
    _caller: Viewer,
    start: Annotated[UtcInput | None, Query(description="Absences ending after this")] = None,
    end: Annotated[UtcInput | None, Query(description="Absences starting before this")] = None,
) -> TimeOffListRead:
    """List a technician's absences overlapping [start, end), by start time."""
    _check_span(start, end, ("start", "end"))
    found = services.technicians.time_off(technician_id, start=start, end=end)
    return TimeOffListRead(items=[TimeOffRead.from_time_off(off) for off in found])


@router.delete(
    "/{technician_id}/time-off/{time_off_id}", status_code=204, responses=problem_responses(404)
)
def delete_time_off(
    technician_id: TechnicianIdPath,
    time_off_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    services: Services,
    _caller: Planner,
) -> Response:
    """Remove an absence of the technician."""
    services.technicians.remove_time_off(technician_id, time_off_id)
    return Response(status_code=204)


# --- availability ---------------------------------------------------------------------


@router.get("/{technician_id}/availability", responses=problem_responses(404))
def get_availability(
    *,
    technician_id: TechnicianIdPath,
    services: Services,
    _caller: Viewer,
    at: Annotated[
        UtcInput | None, Query(description="The instant asked about; default now")
    ] = None,
    until: Annotated[
        UtcInput | None, Query(description="Ask about all of [at, until) instead (exclusive)")
    ] = None,
    skill: SkillQuery = None,
) -> AvailabilityRead:
    """Tell whether a technician is on shift, off, and certified for a skill at `at`.

    With `until`, whether they are on shift throughout [at, until) and off at any time in
    it. Certification is judged on the technician's local date of `at`.
    """
    technician = services.technicians.get(technician_id)
    start = at or services.clock.now()
    _check_span(start, until, ("at", "until"))
    day = local_date(technician, start)
    end = until or start + _TICK
    if until is None:
        windows = shifts_on(technician, day)
        on_shift = any(opens <= start < closes for opens, closes in windows)
    else:
        windows = shift_windows(technician, start, until)
        on_shift = within_shifts(technician, start, until)
    absent = time_off_during(technician.time_off, start, end)
    refusal = skill_refusal(technician, skill, day) if skill is not None else None
    certified = None if skill is None else refusal is None
    return AvailabilityRead(
        technician_id=technician.id,
        time_zone=technician.time_zone,
        at=start,
        until=until,
        local_at=start.astimezone(technician.zone).isoformat(),
        on_shift=on_shift,
        shifts=[ShiftWindowRead(start_at=opens, end_at=closes) for opens, closes in windows],
        off=bool(absent),
        time_off=[TimeOffRead.from_time_off(off) for off in absent],
        skill=None if skill is None else skill.lower(),
        certified=certified,
        skill_problem=None if refusal is None else refusal.detail,
        available=on_shift and not absent and certified is not False,
    )


# --- assignment -----------------------------------------------------------------------

_REFUSALS = problem_responses(404, 409)


@assignments_router.post("/{order_id}/assign", responses=_REFUSALS)
def assign_work_order(
    order_id: OrderIdPath, body: AssignmentCreate, services: Services, caller: Planner
) -> WorkOrderRead:
    """Give a work order to a technician; its status does not change.

    404 if the order or the technician does not exist. 409 if the order is closed or
    cancelled (`work_order_finished`), the technician does not work at the asset's site
    (`not_at_site`), lacks the `skill` (`skill_missing`) or holds a certification for it
    that is not valid on the assignment date (`certification_expired`). Reassigning
    replaces the technician; every change is audited in the order's events.
    """
    order = services.work_orders.get(order_id)
    check_not_finished(order)
    technician = services.technicians.get(body.technician_id)
    site = services.assets.get(order.asset_id).site
    now = services.clock.now()
    check_assignment(technician, order, site=site, skill=body.skill, on=local_date(technician, now))
    assigned = services.work_orders.assign(
        order_id, technician.id, actor=caller.name, note=body.note, now=now
    )
    return WorkOrderRead.from_work_order(assigned)


@assignments_router.delete("/{order_id}/assignment", responses=_REFUSALS)
def unassign_work_order(
    order_id: OrderIdPath,
    services: Services,
    caller: Planner,
    note: Annotated[
        StorableText | None, Query(max_length=MAX_NOTE, description="Why, for the audit")
    ] = None,
) -> WorkOrderRead:
    """Take a work order off its technician, audited; nothing changes if nobody has it.

    409 (`work_order_finished`) if the order is closed or cancelled.
    """
    order = services.work_orders.unassign(
        order_id, actor=caller.name, note=note, now=services.clock.now()
    )
    return WorkOrderRead.from_work_order(order)
