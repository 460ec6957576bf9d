"""Request and response bodies of maintenance plans, site calendars and bookings.

Suffixed Create, Update and Read. Durations are ISO 8601 durations in JSON ("P14D",
"PT2H"); instants are aware and answered in UTC.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Self

from pydantic import BaseModel, Field, model_validator

from api.bodies import StorableBody
from api.inventory_schemas import UtcInput
from api.schemas import MAX_NOTE, UtcTime
from core.assets import ASSET_ID_PATTERN
from core.errors import ValidationError
from core.priority import Priority
from core.technicians import TECHNICIAN_ID_PATTERN
from scheduler.model import (
    IntervalUnit,
    MaintenancePlan,
    MeterSource,
    MissedPolicy,
    NewMaintenancePlan,
    Recurrence,
    Season,
    SiteCalendar,
    parse_plan,
    parse_site_calendar,
)
from scheduler.ports import BookingRecord, CalendarEntry


def _id_mismatch(field: str, sent: str, path: str) -> ValidationError:
    message = f"{field} {sent!r} in the body does not match {path!r} in the path: leave it out"
    return ValidationError(
        message, errors=[{"loc": (field,), "msg": message, "type": "path_mismatch"}]
    )


# --- maintenance plans ----------------------------------------------------------------


class PlanCreate(StorableBody, NewMaintenancePlan):
    """A new maintenance plan: scope, triggers and the job it creates (docs/calendar.md)."""

    def to_new_plan(self) -> NewMaintenancePlan:
        """Return the domain plan this body describes."""
        # Only what was sent: a default re-sent explicitly could read as a choice.
        return parse_plan(self.model_dump(exclude_unset=True))


class PlanUpdate(PlanCreate):
    """The whole plan, replacing what is stored; the id is the one in the path."""

    id: str | None = Field(  # type: ignore[assignment]  # optional here: the path names it
        default=None,
        pattern=ASSET_ID_PATTERN,
        description="Leave out, or repeat the id of the path",
    )

    def to_plan(self, plan_id: str) -> NewMaintenancePlan:
        """Return the domain plan this body describes under `plan_id`."""
        if self.id is not None and self.id != plan_id:
            raise _id_mismatch("id", self.id, plan_id)
        return parse_plan({**self.model_dump(exclude_unset=True), "id": plan_id})


class CalendarTriggerRead(BaseModel):
    """A calendar series: an RRULE, or every N days, weeks or months, from `starts_at`."""

    rrule: str | None
    every: int | None
    unit: IntervalUnit | None
    recurrence: Recurrence
    starts_at: UtcTime


class MeterTriggerRead(BaseModel):
    """Every `every` units of a meter."""

    metric: str
    every: float
    source: MeterSource
    running_above: float | None
    max_gap: timedelta | None = Field(description="Derived sources only; null for a counter")


class PlanPartRead(BaseModel):
    """A part every job of the plan needs, from one stock location."""

    sku: str
    location: str
    quantity: Decimal


class PlanRead(BaseModel):
    """A stored maintenance plan."""

    id: str
    name: str
    description: str
    asset_id: str | None
    asset_type: str | None
    calendar: CalendarTriggerRead | None
    meter: MeterTriggerRead | None
    lead_time: timedelta
    booking_window: timedelta
    estimated_duration: timedelta
    checklist: list[str]
    required_skills: list[str]
    parts: list[PlanPartRead]
    priority: Priority
    missed: MissedPolicy
    enabled: bool
    created_at: UtcTime
    updated_at: UtcTime

    @classmethod
    def from_plan(cls, plan: MaintenancePlan) -> PlanRead:
        """Return the API view of a plan."""
        data = plan.model_dump()
        meter = data["meter"]
        if (
            meter is not None
            and plan.meter is not None
            and plan.meter.source is MeterSource.COUNTER
        ):
            meter["max_gap"] = None
        return cls.model_validate(data)


class PlanListRead(BaseModel):
    """A page of plans ordered by id; pass `next_cursor` as `cursor` for the next page."""

    items: list[PlanRead]
    next_cursor: str | None


# --- site calendars -------------------------------------------------------------------


class SiteCalendarUpdate(StorableBody, SiteCalendar):
    """A site's zone, holidays and seasons, replacing what is stored; the site is the path's."""

    site: str | None = Field(  # type: ignore[assignment]  # optional here: the path names it
        default=None,
        min_length=1,
        max_length=100,
        description="Leave out, or repeat the site of the path",
    )

    def to_calendar(self, site: str) -> SiteCalendar:
        """Return the domain calendar this body describes for `site`."""
        if self.site is not None and self.site != site:
            raise _id_mismatch("site", self.site, site)
        return parse_site_calendar({**self.model_dump(exclude={"site"}), "site": site})


class SiteCalendarRead(BaseModel):
    """A site's calendar: work falls due only on its allowed local days."""

    site: str
    time_zone: str
    holidays: list[date]
    seasons: list[Season]

    @classmethod
    def from_calendar(cls, calendar: SiteCalendar) -> SiteCalendarRead:
        """Return the API view of a site calendar."""
        return cls.model_validate(calendar.model_dump())


# --- bookings -------------------------------------------------------------------------


class BookingUpdate(StorableBody):
    """Where to move a work order's booking; both left out: the earliest feasible slot."""

    technician_id: str | None = Field(
        default=None,
        pattern=TECHNICIAN_ID_PATTERN,
        description="Book with this technician; left out, anyone at the asset's site",
    )
    start_at: UtcInput | None = Field(
        default=None, description="The slot's start; needs technician_id. Left out: earliest"
    )
    note: str | None = Field(default=None, max_length=MAX_NOTE, description="Why, for the audit")

    @model_validator(mode="after")
    def _start_needs_technician(self) -> Self:
        if self.start_at is not None and self.technician_id is None:
            raise ValueError("start_at needs technician_id: say who the slot is booked with")
        return self


class BookingRead(BaseModel):
    """A work order's booking; `sequence` counts its changes (the iCalendar SEQUENCE)."""

    work_order_id: int
    technician_id: str
    start_at: UtcTime
    end_at: UtcTime = Field(description="Exclusive")
    late: bool = Field(description="Ends after the order is due: nobody was free before")
    status: str = Field(description="booked, or cancelled with its work order")
    sequence: int
    created_at: UtcTime
    updated_at: UtcTime

    @classmethod
    def from_record(cls, record: BookingRecord) -> BookingRead:
        """Return the API view of a booking."""
        return cls(
            work_order_id=record.work_order_id,
            technician_id=record.technician_id,
            start_at=record.start_at,
            end_at=record.end_at,
            late=record.late,
            status=record.status,
            sequence=record.sequence,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


# --- the calendar ---------------------------------------------------------------------


class CalendarWorkOrderRead(BaseModel):
    """The work order a booking is for."""

    id: int
    title: str
    status: str
    priority: str
    due_at: UtcTime | None
    plan_id: str | None


class CalendarAssetRead(BaseModel):
    """The asset the work is on."""

    id: str
    name: str
    site: str


class HeldPartRead(BaseModel):
    """Stock held for the work order."""

    sku: str
    location: str
    quantity: str


class CalendarEntryRead(BaseModel):
    """One booking with its work order, asset and the parts held for it."""

    work_order: CalendarWorkOrderRead
    asset: CalendarAssetRead
    technician_id: str
    start_at: UtcTime
    end_at: UtcTime = Field(description="Exclusive")
    late: bool
    status: str = Field(description="booked, or cancelled")
    sequence: int
    parts: list[HeldPartRead]

    @classmethod
    def from_entry(cls, entry: CalendarEntry) -> CalendarEntryRead:
        """Return the API view of a calendar entry."""
        booking = entry.booking
        return cls(
            work_order=CalendarWorkOrderRead(
                id=entry.work_order_id,
                title=entry.title,
                status=entry.work_order_status,
                priority=entry.priority,
                due_at=entry.due_at,
                plan_id=entry.plan_id,
            ),
            asset=CalendarAssetRead(id=entry.asset_id, name=entry.asset_name, site=entry.site),
            technician_id=booking.technician_id,
            start_at=booking.start_at,
            end_at=booking.end_at,
            late=booking.late,
            status=booking.status,
            sequence=booking.sequence,
            parts=[
                HeldPartRead(sku=sku, location=location, quantity=quantity)
                for sku, location, quantity in entry.parts
            ],
        )


class CalendarRead(BaseModel):
    """Bookings overlapping [from, to), by start time, then work order."""

    items: list[CalendarEntryRead]
    truncated: bool = Field(description="More bookings than one answer holds: narrow the span")
