"""Routes of the booking calendar: the JSON calendar, iCalendar feeds and rebooking.

`/api/v1/calendar`, `/api/v1/calendar.ics` and `/api/v1/work-orders/{id}/booking`;
docs/calendar.md describes the feed and how clients subscribe to it.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials
from fastapi.security.utils import get_authorization_scheme_param

from api.dependencies import Planner, Services, Viewer, current_token
from api.ical import MEDIA_TYPE, render_feed
from api.inventory_schemas import StorableText, UtcInput
from api.plan_schemas import BookingRead, BookingUpdate, CalendarEntryRead, CalendarRead
from api.problems import problem_responses
from api.routes.work_orders import OrderIdPath
from core.auth import TokenInfo
from core.errors import NotFoundError, ValidationError
from core.technicians import TECHNICIAN_ID_PATTERN

router = APIRouter(tags=["calendar"])
bookings_router = APIRouter(prefix="/work-orders", tags=["work orders"])

MAX_SPAN = timedelta(days=366)
MAX_ENTRIES = 5000
# The feed: a month back (so a cancellation still reaches clients), and 400 days ahead.
FEED_PAST = timedelta(days=30)
FEED_AHEAD = timedelta(days=400)
FEED_MAX_EVENTS = 10_000
# A planner's slot may be at most this far ahead.
MAX_BOOKING_AHEAD = timedelta(days=731)

TechnicianQuery = Annotated[
    str | None, Query(pattern=TECHNICIAN_ID_PATTERN, description="Only this technician's")
]
SiteQuery = Annotated[
    StorableText | None,
    Query(min_length=1, max_length=100, description="Only work on assets at this site"),
]

# Calendar clients cannot send an Authorization header, so a feed also takes its token in
# the URL. Only the feed does: a token in a URL ends up in logs and histories.
_feed_token = APIKeyQuery(
    name="token",
    scheme_name="FeedToken",
    auto_error=False,
    description="An API token in the URL, for calendar clients that cannot send a header. "
    "Any role can read a feed: give each subscription a viewer token of its own "
    "(`pmkeeper token create --role viewer`), so it can be revoked alone.",
)


async def feed_reader(
    request: Request, services: Services, token: Annotated[str | None, Depends(_feed_token)]
) -> TokenInfo:
    """Return who reads the feed: the bearer token of the header, else `?token=`."""
    scheme, credentials = get_authorization_scheme_param(request.headers.get("Authorization"))
    bearer = None
    if scheme.lower() == "bearer" and credentials:
        bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials)
    elif token:
        bearer = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    return await current_token(request, services, bearer)


FeedReader = Annotated[TokenInfo, Depends(feed_reader)]


# --- the calendar ---------------------------------------------------------------------


@router.get("/calendar")
def get_calendar(
    *,
    services: Services,
    _caller: Viewer,
    start: Annotated[
        UtcInput, Query(alias="from", description="Bookings ending after this (inclusive)")
    ],
    end: Annotated[UtcInput, Query(alias="to", description="Bookings starting before this")],
    technician: TechnicianQuery = None,
    site: SiteQuery = None,
    include_cancelled: Annotated[
        bool, Query(description="Also bookings cancelled with their work order")
    ] = False,
) -> CalendarRead:
    """List the bookings overlapping [from, to), by start time, with order, asset and parts.

    `to` must be after `from`, at most 366 days later. At most 5000 bookings are answered;
    `truncated` says there were more.
    """
    if end <= start:
        raise ValidationError(
            "`to` must be after `from`", **{"from": start.isoformat(), "to": end.isoformat()}
        )
    if end - start > MAX_SPAN:
        raise ValidationError(
            f"from `from` to `to` is at most {MAX_SPAN.days} days; ask for a shorter span",
            **{"from": start.isoformat(), "to": end.isoformat()},
        )
    found = services.bookings.entries(
        start,
        end,
        technician_id=technician,
        site=site,
        include_cancelled=include_cancelled,
        limit=MAX_ENTRIES + 1,
    )
    return CalendarRead(
        items=[CalendarEntryRead.from_entry(entry) for entry in found[:MAX_ENTRIES]],
        truncated=len(found) > MAX_ENTRIES,
    )


_FEED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An iCalendar (RFC 5545) feed",
        "content": {"text/calendar": {"schema": {"type": "string"}}},
    },
    304: {"description": "Not modified since the ETag in If-None-Match"},
    **problem_responses(404),
}


@router.get(
    "/calendar.ics",
    response_class=Response,
    responses=_FEED_RESPONSES,
    # Added to the query token FastAPI documents: either one authenticates.
    openapi_extra={"security": [{"HTTPBearer": []}]},
)
def get_calendar_feed(
    *,
    request: Request,
    services: Services,
    _caller: FeedReader,
    technician: TechnicianQuery = None,
    site: SiteQuery = None,
) -> Response:
    """Answer the iCalendar feed of one technician or one site (give exactly one).

    From 30 days back to 400 days ahead, one event per booking, its UID stable across
    reschedules (`wo-<work order id>@pmkeeper`); cancelled bookings stay, cancelled.
    Times are local to the technician's zone, or the site calendar's (UTC without one).
    Takes the token as `Authorization: Bearer` or, for calendar clients, as `?token=`.
    """
    if technician is not None and site is None:
        person = services.technicians.get(technician)
        zone = person.time_zone
        name = f"pmkeeper: {person.name}"
        feed_uid = f"technician-{person.id}@pmkeeper"
    elif site is not None and technician is None:
        try:
            zone = services.plans.calendar(site).time_zone
        except NotFoundError:
            zone = "UTC"
        name = f"pmkeeper: {site}"
        feed_uid = f"site-{hashlib.sha256(site.encode()).hexdigest()[:16]}@pmkeeper"
    else:
        raise ValidationError(
            "give exactly one of `technician` and `site`: a feed is one person's or one site's"
        )
    now = services.clock.now()
    entries = services.bookings.entries(
        now - FEED_PAST,
        now + FEED_AHEAD,
        technician_id=technician,
        site=site,
        include_cancelled=True,
        limit=FEED_MAX_EVENTS,
    )
    body = render_feed(entries, name=name, feed_uid=feed_uid, time_zone=zone)
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    # A feed URL carries its token: no shared cache may keep a copy.
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if etag in _listed(request.headers.get("If-None-Match")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=MEDIA_TYPE, headers=headers)


def _listed(if_none_match: str | None) -> set[str]:
    if not if_none_match:
        return set()
    return {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}


# --- bookings -------------------------------------------------------------------------

_REFUSALS = problem_responses(404, 409)


@bookings_router.put("/{order_id}/booking", responses=_REFUSALS)
def rebook_work_order(
    order_id: OrderIdPath,
    services: Services,
    caller: Planner,
    body: Annotated[BookingUpdate | None, Body()] = None,
) -> BookingRead:
    """Book a work order, or move its booking, to the slot given or the earliest feasible.

    `technician_id` and `start_at`: that slot, checked like generated bookings (the
    technician works at the site, holds the plan's skills, is on shift and not off, and
    nothing else of theirs overlaps). `technician_id` alone: their earliest feasible slot;
    neither: anyone's at the site. 409 `booking_refused` says why a slot cannot be had, and
    changes nothing. Each move adds one to the booking's `sequence` and is audited.
    """
    change = body or BookingUpdate()
    if change.start_at is not None:
        now = services.clock.now()
        if change.start_at < now:
            _refuse_start("start_at is in the past: book a slot from now on")
        if change.start_at > now + MAX_BOOKING_AHEAD:
            _refuse_start(f"start_at is more than {MAX_BOOKING_AHEAD.days} days ahead")
    record = services.bookings.rebook(
        order_id,
        technician_id=change.technician_id,
        start_at=change.start_at,
        actor=caller.name,
        note=change.note,
    )
    return BookingRead.from_record(record)


def _refuse_start(message: str) -> None:
    raise ValidationError(
        message, errors=[{"loc": ("start_at",), "msg": message, "type": "out_of_range"}]
    )


@bookings_router.get("/{order_id}/booking", responses=problem_responses(404))
def get_booking(order_id: OrderIdPath, services: Services, _caller: Viewer) -> BookingRead:
    """Return a work order's booking; 404 if it has none (or there is no such order)."""
    return BookingRead.from_record(services.bookings.get(order_id))
