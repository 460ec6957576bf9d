"""Ports of the scheduler: what generation needs from storage, and what it hands back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from core.errors import ConflictError
from core.technicians import Technician
from scheduler.booking import BookedSlot, Proposal
from scheduler.model import MaintenancePlan, NewMaintenancePlan, SiteCalendar
from scheduler.occurrences import Occurrence, PlanProgress


class BookingRefusedError(ConflictError):
    """Raise when a slot asked for cannot be booked (HTTP 409)."""

    code = "booking_refused"


class Outcome(StrEnum):
    """What became of an occurrence."""

    GENERATED = "generated"  # a work order was opened for it
    MISSED = "missed"  # it came due while nothing ran, and the plan says not to catch up


@dataclass(frozen=True)
class AssetRef:
    """What generation needs of an asset: where it is, and what it is."""

    id: str
    type: str
    site: str
    created_at: datetime


@dataclass(frozen=True)
class PlannedOccurrence:
    """An occurrence a plan produced on an asset, for the store to record once."""

    plan: MaintenancePlan
    asset: AssetRef
    occurrence: Occurrence
    outcome: Outcome


@dataclass(frozen=True)
class BookingChange:
    """A booking as it now stands, written by someone else since the diary was built."""

    slot: BookedSlot
    active: bool  # False: cancelled, or the order finished: the slot is free again


@dataclass(frozen=True)
class RecordedOccurrence:
    """What the store did with one planned occurrence."""

    planned: PlannedOccurrence
    work_order_id: int | None
    booking: Proposal | None
    unbooked_reason: str | None
    short_parts: tuple[str, ...]  # SKUs that could not be reserved: the order is on hold


@dataclass(frozen=True)
class WaitingOrder:
    """A generated order still without a slot (nobody was free or qualified when it was)."""

    work_order_id: int
    plan: MaintenancePlan
    asset: AssetRef
    due_at: datetime
    freed: bool = False  # it had a booking that stopped holding, kept as cancelled


@dataclass(frozen=True)
class HeldBooking:
    """An active booking of an order not started yet, with what its slot must satisfy."""

    slot: BookedSlot
    site: str
    skills: tuple[str, ...]
    due_at: datetime | None
    booking_window: timedelta


@dataclass(frozen=True)
class Rebooking:
    """What became of a booking that no longer held: its new slot, or none to be had."""

    held: HeldBooking
    reason: str  # why the old slot no longer holds
    proposal: Proposal | None
    unbooked_reason: str | None


class ChunkPlanner(Protocol):
    """Books slots inside the store's transaction, so bookings see each other."""

    # The booking revision the planner's diary reflects; the store moves it forward.
    revision: int

    def sync(self, changes: Sequence[BookingChange]) -> None:
        """Take in bookings others changed since the diary was built."""
        ...

    def book(self, planned: PlannedOccurrence, work_order_id: int) -> Proposal | str:
        """Book a slot for the new order, or return why none could be found."""
        ...

    def book_waiting(self, waiting: WaitingOrder) -> Proposal | str:
        """Book a slot for an order generated earlier, or return why there is none yet."""
        ...

    def revalidate(self, held: HeldBooking) -> Rebooking | None:
        """Return None if the booking still holds, else move it (or free it) in the diary."""
        ...


class ScheduleStore(Protocol):
    """Where plans, occurrences, work orders, bookings and reservations are kept."""

    def enabled_plans(self) -> list[MaintenancePlan]:
        """Return every enabled plan."""
        ...

    def site_calendars(self) -> Mapping[str, SiteCalendar]:
        """Return the calendar of every site that has one."""
        ...

    def assets(self) -> list[AssetRef]:
        """Return every asset, by id."""
        ...

    def progress(self, plan_ids: Sequence[str]) -> Mapping[tuple[str, str], PlanProgress]:
        """Return what is recorded of each (plan, asset) that has anything recorded."""
        ...

    def technicians(self) -> list[Technician]:
        """Return every technician with their time off."""
        ...

    def booked_slots(self, start_at: datetime, end_at: datetime) -> tuple[list[BookedSlot], int]:
        """Return active bookings overlapping [start_at, end_at), and the revision they reflect."""
        ...

    def book_waiting(self, planner: ChunkPlanner, *, now: datetime) -> list[WaitingOrder]:
        """Book generated orders that are still waiting for a slot; return those booked."""
        ...

    def rebook_broken(self, planner: ChunkPlanner, *, now: datetime) -> list[Rebooking]:
        """Move the future bookings that no longer hold (time off, hours, skills, site)."""
        ...

    def record(
        self,
        chunk: Sequence[PlannedOccurrence],
        planner: ChunkPlanner,
        *,
        now: datetime,
    ) -> list[RecordedOccurrence]:
        """Record the occurrences not recorded yet, with their orders, bookings and parts.

        One transaction: an occurrence another process recorded first is skipped; bookings
        others wrote after `planner.revision` are synced into the planner before it books.
        """
        ...


@dataclass(frozen=True)
class BookingRecord:
    """A work order's booking as stored; `sequence` counts its changes (iCalendar SEQUENCE)."""

    work_order_id: int
    technician_id: str
    start_at: datetime
    end_at: datetime
    late: bool
    status: str  # booked or cancelled
    sequence: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class CalendarEntry:
    """A booking with what a calendar shows of it: the order, the asset and the parts."""

    booking: BookingRecord
    work_order_id: int
    title: str
    description: str
    work_order_status: str
    priority: str
    plan_id: str | None
    due_at: datetime | None
    asset_id: str
    asset_name: str
    site: str
    parts: tuple[tuple[str, str, str], ...]  # (sku, location, quantity) held for the order


class PlanRepository(Protocol):
    """Maintenance plans and site calendars."""

    def add(self, plan: NewMaintenancePlan) -> MaintenancePlan:
        """Store a new plan; ConflictError if the id is taken."""
        ...

    def get(self, plan_id: str) -> MaintenancePlan:
        """Return a plan; NotFoundError if absent."""
        ...

    def replace(self, plan: NewMaintenancePlan) -> MaintenancePlan:
        """Replace a plan's definition; NotFoundError if absent."""
        ...

    def delete(self, plan_id: str) -> None:
        """Delete a plan, keeping what it generated; NotFoundError if absent."""
        ...

    def list(
        self,
        *,
        asset_id: str | None = None,
        asset_type: str | None = None,
        after_id: str | None = None,
        limit: int = 100,
    ) -> Sequence[MaintenancePlan]:
        """Return plans by id after `after_id` (keyset pagination)."""
        ...

    def put_calendar(self, calendar: SiteCalendar) -> SiteCalendar:
        """Create or replace a site's calendar."""
        ...

    def calendar(self, site: str) -> SiteCalendar:
        """Return a site's calendar; NotFoundError if it has none."""
        ...

    def calendars(self) -> Mapping[str, SiteCalendar]:
        """Return every site calendar by site."""
        ...

    def delete_calendar(self, site: str) -> None:
        """Delete a site's calendar; NotFoundError if it has none."""
        ...


class BookingStore(Protocol):
    """Bookings as planners and calendars see them."""

    def get(self, work_order_id: int) -> BookingRecord:
        """Return a work order's booking; NotFoundError if it has none."""
        ...

    def entries(
        self,
        start_at: datetime,
        end_at: datetime,
        *,
        technician_id: str | None = None,
        site: str | None = None,
        include_cancelled: bool = False,
        limit: int = 10_000,
    ) -> Sequence[CalendarEntry]:
        """Return bookings overlapping [start_at, end_at) with their order, asset and parts."""
        ...

    def rebook(
        self,
        work_order_id: int,
        *,
        technician_id: str | None,
        start_at: datetime | None,
        actor: str,
        note: str | None = None,
    ) -> BookingRecord:
        """Move an order's booking to the slot given, or the earliest feasible one.

        BookingRefusedError (409) says why not.
        """
        ...
