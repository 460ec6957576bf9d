"""Maintenance plans, site calendars, plan occurrences and bookings in a SQL database.

Generation writes in chunks, each one transaction: the occurrences first (their unique
keys decide which are new, and on SQLite that first write takes the write lock), then
the work orders, their audit entries, bookings and part reservations. On PostgreSQL every
transaction that books takes one advisory lock, so two bookings never interleave.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError

from core.clock import Clock, SystemClock
from core.errors import ConflictError, NotFoundError
from core.inventory import ReservationStatus
from core.technicians import Technician
from core.workorders import WorkOrder, WorkOrderKind, WorkOrderStatus
from scheduler.booking import BookedSlot, BookingRequest, Diary, Proposal, why_unbookable
from scheduler.model import MaintenancePlan, NewMaintenancePlan, SiteCalendar
from scheduler.occurrences import PlanProgress
from scheduler.ports import (
    AssetRef,
    BookingChange,
    BookingRecord,
    BookingRefusedError,
    CalendarEntry,
    ChunkPlanner,
    HeldBooking,
    Outcome,
    PlannedOccurrence,
    Rebooking,
    RecordedOccurrence,
    WaitingOrder,
)
from storage.alerting import is_unique_violation, read_order
from storage.inventory import ReservationLine, SqlInventoryRepository, from_milli
from storage.repositories import insert_ignoring_duplicates
from storage.tables import (
    assets,
    bookings,
    maintenance_plans,
    part_reservations,
    plan_occurrences,
    site_calendars,
    work_order_events,
    work_orders,
)
from storage.technicians import SqlTechnicianRepository

SCHEDULER_ACTOR = "scheduler"
# Any constant works; it only has to be the same for every pmkeeper process.
BOOKING_LOCK_KEY = 0x706D6B626B67  # "pmkbkg"
BOOKED = "booked"
CANCELLED = "cancelled"
# A reservation for planned work is held until a week after the booked slot ends.
RESERVATION_GRACE = timedelta(days=7)
_FINISHED = (WorkOrderStatus.CLOSED.value, WorkOrderStatus.CANCELLED.value)
_TECHNICIAN_PAGE = 500
# Waiting orders looked at per run, oldest due first; the rest wait for the next run.
_WAITING_LIMIT = 5_000


def _plan_values(plan: NewMaintenancePlan) -> dict[str, Any]:
    definition = plan.model_dump(mode="json", exclude={"created_at", "updated_at"})
    return {
        "name": plan.name,
        "asset_id": plan.asset_id,
        "asset_type": plan.asset_type,
        "definition": definition,
        "enabled": plan.enabled,
    }


def _plan(row: Any) -> MaintenancePlan:
    return MaintenancePlan.model_validate(
        {**row.definition, "created_at": row.created_at, "updated_at": row.updated_at}
    )


def _not_found(plan_id: str) -> NotFoundError:
    return NotFoundError(f"maintenance plan {plan_id!r} not found", plan_id=plan_id)


def lock_bookings(connection: Connection) -> None:
    """Serialise booking writers until the transaction ends.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: a write that changes nothing
    takes the database's write lock now, instead of at the first real write, after reads
    that would be stale by then.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": BOOKING_LOCK_KEY})
    else:
        connection.execute(update(bookings).where(literal(False)).values(sequence=0))


def current_revision(connection: Connection) -> int:
    """Return the revision of the newest booking write (0: none yet)."""
    return int(
        connection.execute(select(func.coalesce(func.max(bookings.c.revision), 0))).scalar_one()
    )


def next_revision(connection: Connection) -> int:
    """Return the revision of a booking write about to be made under the booking lock."""
    return current_revision(connection) + 1


class SqlPlanRepository:
    """Maintenance plans and site calendars."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock = clock or SystemClock()

    def add(self, plan: NewMaintenancePlan) -> MaintenancePlan:
        """Store a new plan; ConflictError if the id is taken."""
        now = self._clock.now()
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    insert(maintenance_plans).values(
                        id=plan.id, created_at=now, updated_at=now, **_plan_values(plan)
                    )
                )
        except IntegrityError as error:
            if is_unique_violation(error):
                raise ConflictError(
                    f"maintenance plan {plan.id!r} already exists", plan_id=plan.id
                ) from None
            raise
        return self.get(plan.id)

    def get(self, plan_id: str) -> MaintenancePlan:
        """Return a plan; NotFoundError if absent."""
        with self._engine.connect() as connection:
            row = connection.execute(
                select(maintenance_plans).where(maintenance_plans.c.id == plan_id)
            ).first()
        if row is None:
            raise _not_found(plan_id)
        return _plan(row)

    def replace(self, plan: NewMaintenancePlan) -> MaintenancePlan:
        """Replace a plan's definition; NotFoundError if absent.

        What it already generated stays as it is; the next run generates by the new one.
        """
        with self._engine.begin() as connection:
            changed = connection.execute(
                update(maintenance_plans)
                .where(maintenance_plans.c.id == plan.id)
                .values(updated_at=self._clock.now(), **_plan_values(plan))
            ).rowcount
        if changed == 0:
            raise _not_found(plan.id)
        return self.get(plan.id)

    def delete(self, plan_id: str) -> None:
        """Delete a plan; its occurrences and work orders stay as history."""
        with self._engine.begin() as connection:
            gone = connection.execute(
                delete(maintenance_plans).where(maintenance_plans.c.id == plan_id)
            ).rowcount
        if gone == 0:
            raise _not_found(plan_id)

    def list(
        self,
        *,
        asset_id: str | None = None,
        asset_type: str | None = None,
        after_id: str | None = None,
        limit: int = 100,
    ) -> builtins.list[MaintenancePlan]:
        """Return plans by id after `after_id` (keyset pagination)."""
        query = select(maintenance_plans).order_by(maintenance_plans.c.id).limit(limit)
        if asset_id is not None:
            query = query.where(maintenance_plans.c.asset_id == asset_id)
        if asset_type is not None:
            query = query.where(maintenance_plans.c.asset_type == asset_type)
        if after_id is not None:
            query = query.where(maintenance_plans.c.id > after_id)
        with self._engine.connect() as connection:
            return [_plan(row) for row in connection.execute(query)]

    def put_calendar(self, calendar: SiteCalendar) -> SiteCalendar:
        """Create or replace a site's calendar."""
        values = {
            "definition": calendar.model_dump(mode="json"),
            "updated_at": self._clock.now(),
        }
        with self._engine.begin() as connection:
            changed = connection.execute(
                update(site_calendars).where(site_calendars.c.site == calendar.site).values(values)
            ).rowcount
            if changed == 0:
                connection.execute(
                    insert_ignoring_duplicates(connection, site_calendars).values(
                        site=calendar.site, **values
                    )
                )
        return self.calendar(calendar.site)

    def calendar(self, site: str) -> SiteCalendar:
        """Return a site's calendar; NotFoundError if it has none."""
        with self._engine.connect() as connection:
            definition = connection.execute(
                select(site_calendars.c.definition).where(site_calendars.c.site == site)
            ).scalar()
        if definition is None:
            raise NotFoundError(f"site {site!r} has no calendar", site=site)
        return SiteCalendar.model_validate(definition)

    def calendars(self) -> dict[str, SiteCalendar]:
        """Return every site calendar by site."""
        with self._engine.connect() as connection:
            rows = connection.execute(select(site_calendars.c.site, site_calendars.c.definition))
            return {row.site: SiteCalendar.model_validate(row.definition) for row in rows}

    def delete_calendar(self, site: str) -> None:
        """Delete a site's calendar; NotFoundError if it has none."""
        with self._engine.begin() as connection:
            gone = connection.execute(
                delete(site_calendars).where(site_calendars.c.site == site)
            ).rowcount
        if gone == 0:
            raise NotFoundError(f"site {site!r} has no calendar", site=site)


def _checklist(plan: MaintenancePlan) -> str:
    lines = [plan.description] if plan.description else []
    if plan.checklist:
        lines += ["Checklist:", *(f"- [ ] {item}" for item in plan.checklist)]
    if plan.parts:
        lines += [
            "Parts:",
            *(f"- {part.quantity} x {part.sku} from {part.location}" for part in plan.parts),
        ]
    return "\n".join(lines)


def _creation_note(
    planned: PlannedOccurrence, booking: Proposal | None, unbooked: str | None
) -> str:
    due = planned.occurrence.due_at.isoformat()
    note = f"generated by plan {planned.plan.id!r} for the occurrence due {due}"
    if planned.occurrence.missed:
        note += " (it came due while the scheduler was not running)"
    if booking is not None:
        note += (
            f"; booked with {booking.technician_id!r} from {booking.start_at.isoformat()} "
            f"to {booking.end_at.isoformat()}"
        )
        if booking.late:
            note += ", after its due time: nobody was free before"
    elif unbooked is not None:
        note += f"; not booked: {unbooked}"
    return note


class SqlScheduleStore:
    """What generation reads and writes: plans, assets, progress, bookings, orders, parts."""

    def __init__(
        self,
        engine: Engine,
        plans: SqlPlanRepository,
        technicians: SqlTechnicianRepository,
        inventory: SqlInventoryRepository,
        chunk_size: int = 2000,
    ) -> None:
        self._engine = engine
        self._plans = plans
        self._technicians = technicians
        self._inventory = inventory
        self.chunk_size = chunk_size

    def enabled_plans(self) -> builtins.list[MaintenancePlan]:
        """Return every enabled plan."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(maintenance_plans)
                .where(maintenance_plans.c.enabled.is_(True))
                .order_by(maintenance_plans.c.id)
            )
            return [_plan(row) for row in rows]

    def site_calendars(self) -> dict[str, SiteCalendar]:
        """Return the calendar of every site that has one."""
        return self._plans.calendars()

    def assets(self) -> builtins.list[AssetRef]:
        """Return every asset, by id."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(assets.c.id, assets.c.type, assets.c.site, assets.c.created_at).order_by(
                    assets.c.id
                )
            )
            return [AssetRef(row.id, row.type, row.site, row.created_at) for row in rows]

    def progress(self, plan_ids: Sequence[str]) -> dict[tuple[str, str], PlanProgress]:
        """Return what is recorded of each (plan, asset) of `plan_ids`."""
        wanted = set(plan_ids)
        occ = plan_occurrences
        fields: dict[tuple[str, str], dict[str, Any]] = {}

        def note(rows: Any, name: str) -> None:
            for plan_id, asset_id, value in rows:
                if plan_id in wanted and value is not None:
                    fields.setdefault((plan_id, asset_id), {})[name] = value

        with self._engine.connect() as connection:
            key = (occ.c.plan_id, occ.c.asset_id)
            note(
                connection.execute(
                    select(*key, func.max(occ.c.due_at))
                    .where(occ.c.cycle_key.is_(None))
                    .group_by(*key)
                ),
                "last_due_at",
            )
            # A cancelled cycle counts like a missed one: the next cycle counts from its due.
            skipped = occ.c.outcome == Outcome.MISSED.value
            cancelled = occ.c.work_order_id.in_(
                select(work_orders.c.id).where(
                    work_orders.c.status == WorkOrderStatus.CANCELLED.value,
                    work_orders.c.plan_id.is_not(None),
                )
            )
            note(
                connection.execute(
                    select(*key, func.max(occ.c.due_at))
                    .where(skipped | and_(occ.c.cycle_key.is_not(None), cancelled))
                    .group_by(*key)
                ),
                "last_missed_due_at",
            )
            note(
                connection.execute(
                    select(
                        work_orders.c.plan_id,
                        work_orders.c.asset_id,
                        func.max(work_orders.c.resolved_at),
                    )
                    .where(work_orders.c.plan_id.is_not(None))
                    .group_by(work_orders.c.plan_id, work_orders.c.asset_id)
                ),
                "last_completed_at",
            )
            latest_cycle = (
                select(func.max(occ.c.id))
                .where(occ.c.cycle_key.is_not(None))
                .group_by(*key)
                .scalar_subquery()
            )
            note(
                connection.execute(select(*key, occ.c.cycle_key).where(occ.c.id.in_(latest_cycle))),
                "open_cycle_key",
            )
        return {
            pair: PlanProgress(
                last_due_at=values.get("last_due_at"),
                last_completed_at=values.get("last_completed_at"),
                last_missed_due_at=values.get("last_missed_due_at"),
                open_cycle_key=values.get("open_cycle_key"),
            )
            for pair, values in fields.items()
        }

    def technicians(self) -> builtins.list[Technician]:
        """Return every technician with their time off."""
        found: builtins.list[Technician] = []
        after: str | None = None
        while True:
            page = self._technicians.list(after_id=after, limit=_TECHNICIAN_PAGE)
            found += page
            if len(page) < _TECHNICIAN_PAGE:
                return found
            after = page[-1].id

    def booked_slots(
        self, start_at: datetime, end_at: datetime
    ) -> tuple[builtins.list[BookedSlot], int]:
        """Return active bookings overlapping [start_at, end_at), and the revision they reflect.

        The revision is read first: a write that lands between the two reads has a higher
        one, so the next sync takes it in (again, harmlessly, if the read saw it).
        """
        with self._engine.connect() as connection:
            revision = current_revision(connection)
            slots = _slots(
                connection,
                bookings.c.status == BOOKED,
                bookings.c.start_at < end_at,
                bookings.c.end_at > start_at,
            )
        return slots, revision

    def book_waiting(self, planner: ChunkPlanner, *, now: datetime) -> builtins.list[WaitingOrder]:
        """Book generated orders still accepted without a slot; return those booked.

        Such an order found nobody qualified or free when it was generated; a technician
        hired, certified or back from time off since may take it now. Booked, it becomes
        scheduled and assigned, audited like a generated booking.
        """
        with self._engine.begin() as connection:
            lock_bookings(connection)
            waiting = self._waiting(connection)
            if not waiting:
                return []
            _catch_up(connection, planner)
            booked = [
                (order, decision)
                for order in waiting
                if isinstance(decision := planner.book_waiting(order), Proposal)
            ]
            if not booked:
                return []
            revision = next_revision(connection)
            fresh = [(order, proposal) for order, proposal in booked if not order.freed]
            if fresh:
                connection.execute(
                    insert(bookings),
                    [
                        {
                            "work_order_id": order.work_order_id,
                            "technician_id": proposal.technician_id,
                            "start_at": proposal.start_at,
                            "end_at": proposal.end_at,
                            "late": proposal.late,
                            "status": BOOKED,
                            "sequence": 0,
                            "revision": revision,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for order, proposal in fresh
                    ],
                )
            # A freed booking is the same calendar event booked again: a higher sequence.
            for order, proposal in booked:
                if order.freed:
                    connection.execute(
                        update(bookings)
                        .where(bookings.c.work_order_id == order.work_order_id)
                        .values(
                            technician_id=proposal.technician_id,
                            start_at=proposal.start_at,
                            end_at=proposal.end_at,
                            late=proposal.late,
                            status=BOOKED,
                            sequence=bookings.c.sequence + 1,
                            revision=revision,
                            updated_at=now,
                        )
                    )
            planner.revision = revision
            for order, proposal in booked:
                connection.execute(
                    update(work_orders)
                    .where(
                        work_orders.c.id == order.work_order_id,
                        work_orders.c.status == WorkOrderStatus.ACCEPTED.value,
                    )
                    .values(
                        status=WorkOrderStatus.SCHEDULED.value,
                        technician_id=proposal.technician_id,
                        assigned_at=now,
                        updated_at=now,
                    )
                )
            connection.execute(
                insert(work_order_events),
                [
                    {
                        "work_order_id": order.work_order_id,
                        "at": now,
                        "actor": SCHEDULER_ACTOR,
                        "from_status": WorkOrderStatus.ACCEPTED.value,
                        "to_status": WorkOrderStatus.SCHEDULED.value,
                        "note": (
                            f"booked with {proposal.technician_id!r} from "
                            f"{proposal.start_at.isoformat()} to {proposal.end_at.isoformat()}"
                            + (", after its due time" if proposal.late else "")
                        ),
                    }
                    for order, proposal in booked
                ],
            )
        return [order for order, _ in booked]

    def rebook_broken(self, planner: ChunkPlanner, *, now: datetime) -> builtins.list[Rebooking]:
        """Move the future bookings that no longer hold; free those with nowhere to go.

        A booking stops holding when its technician took time off over it, changed hours,
        lost the skill or its certification, or left the site. Moved: a new slot, the
        sequence bumped (calendar feeds show the move), audited. Nowhere to go: the booking
        is cancelled and the order goes back to `accepted`, unassigned, audited with the
        reason, to be booked by a later run (`book_waiting`) or by a planner.
        """
        with self._engine.begin() as connection:
            lock_bookings(connection)
            _catch_up(connection, planner)
            outcomes = [
                outcome
                for held in self._held(connection, now)
                if (outcome := planner.revalidate(held)) is not None
            ]
            if not outcomes:
                return []
            revision = next_revision(connection)
            for outcome in outcomes:
                self._apply_rebooking(connection, outcome, revision, now)
            planner.revision = revision
        return outcomes

    def _held(self, connection: Connection, now: datetime) -> builtins.list[HeldBooking]:
        rows = connection.execute(
            select(
                bookings.c.work_order_id,
                bookings.c.technician_id,
                bookings.c.start_at,
                bookings.c.end_at,
                work_orders.c.due_at,
                work_orders.c.resolution_due_at,
                assets.c.site,
                maintenance_plans.c.definition,
            )
            .join(work_orders, work_orders.c.id == bookings.c.work_order_id)
            .join(assets, assets.c.id == work_orders.c.asset_id)
            .outerjoin(maintenance_plans, maintenance_plans.c.id == work_orders.c.plan_id)
            .where(
                bookings.c.status == BOOKED,
                bookings.c.start_at > now,
                work_orders.c.status.in_([status.value for status in _REBOOKABLE]),
            )
            .order_by(bookings.c.start_at, bookings.c.work_order_id)
        )
        held = []
        for row in rows:
            definition = row.definition or {}
            held.append(
                HeldBooking(
                    slot=BookedSlot(
                        work_order_id=int(row.work_order_id),
                        technician_id=row.technician_id,
                        start_at=row.start_at,
                        end_at=row.end_at,
                    ),
                    site=row.site,
                    skills=tuple(definition.get("required_skills", ())),
                    due_at=row.due_at or row.resolution_due_at,
                    booking_window=_window(definition),
                )
            )
        return held

    @staticmethod
    def _apply_rebooking(
        connection: Connection, outcome: Rebooking, revision: int, now: datetime
    ) -> None:
        slot, proposal = outcome.held.slot, outcome.proposal
        order_id = slot.work_order_id
        was = f"booked with {slot.technician_id!r} from {slot.start_at.isoformat()}"
        if proposal is not None:
            connection.execute(
                update(bookings)
                .where(bookings.c.work_order_id == order_id)
                .values(
                    technician_id=proposal.technician_id,
                    start_at=proposal.start_at,
                    end_at=proposal.end_at,
                    late=proposal.late,
                    sequence=bookings.c.sequence + 1,
                    revision=revision,
                    updated_at=now,
                )
            )
            values: dict[str, Any] = {"updated_at": now}
            if proposal.technician_id != slot.technician_id:
                values.update(technician_id=proposal.technician_id, assigned_at=now)
            connection.execute(
                update(work_orders).where(work_orders.c.id == order_id).values(values)
            )
            status = connection.execute(
                select(work_orders.c.status).where(work_orders.c.id == order_id)
            ).scalar_one()
            late = ", after its due time" if proposal.late else ""
            note = (
                f"{was} no longer held ({outcome.reason}); moved to {proposal.technician_id!r} "
                f"from {proposal.start_at.isoformat()}{late}"
            )
            from_status = to_status = status
        else:
            connection.execute(
                update(bookings)
                .where(bookings.c.work_order_id == order_id)
                .values(
                    status=CANCELLED,
                    sequence=bookings.c.sequence + 1,
                    revision=revision,
                    updated_at=now,
                )
            )
            from_status = connection.execute(
                select(work_orders.c.status).where(work_orders.c.id == order_id)
            ).scalar_one()
            # A scheduled order whose slot is gone is back to accepted: the scheduler's own
            # move, audited, so that book_waiting (or a planner) books it again.
            to_status = (
                WorkOrderStatus.ACCEPTED.value
                if from_status == WorkOrderStatus.SCHEDULED.value
                else from_status
            )
            connection.execute(
                update(work_orders)
                .where(work_orders.c.id == order_id)
                .values(status=to_status, technician_id=None, assigned_at=None, updated_at=now)
            )
            note = (
                f"{was} no longer held ({outcome.reason}); no other slot: {outcome.unbooked_reason}"
            )
        connection.execute(
            insert(work_order_events).values(
                work_order_id=order_id,
                at=now,
                actor=SCHEDULER_ACTOR,
                from_status=from_status,
                to_status=to_status,
                note=note,
            )
        )

    def _waiting(self, connection: Connection) -> builtins.list[WaitingOrder]:
        rows = connection.execute(
            select(
                work_orders.c.id,
                work_orders.c.due_at,
                maintenance_plans.c.definition,
                maintenance_plans.c.created_at.label("plan_created_at"),
                maintenance_plans.c.updated_at.label("plan_updated_at"),
                bookings.c.work_order_id.label("booking_row"),
                assets.c.id.label("asset_id"),
                assets.c.type,
                assets.c.site,
                assets.c.created_at.label("asset_created_at"),
            )
            .join(maintenance_plans, maintenance_plans.c.id == work_orders.c.plan_id)
            .join(assets, assets.c.id == work_orders.c.asset_id)
            .outerjoin(bookings, bookings.c.work_order_id == work_orders.c.id)
            .where(
                work_orders.c.status == WorkOrderStatus.ACCEPTED.value,
                work_orders.c.due_at.is_not(None),
                maintenance_plans.c.enabled.is_(True),
                # Never booked, or its booking was freed (`rebook_broken`).
                or_(bookings.c.work_order_id.is_(None), bookings.c.status == CANCELLED),
            )
            .order_by(work_orders.c.due_at, work_orders.c.id)
            .limit(_WAITING_LIMIT)
        )
        plans: dict[str, MaintenancePlan] = {}
        waiting = []
        for row in rows:
            plan_id = row.definition["id"]
            if plan_id not in plans:
                plans[plan_id] = MaintenancePlan.model_validate(
                    {
                        **row.definition,
                        "created_at": row.plan_created_at,
                        "updated_at": row.plan_updated_at,
                    }
                )
            waiting.append(
                WaitingOrder(
                    work_order_id=int(row.id),
                    plan=plans[plan_id],
                    asset=AssetRef(row.asset_id, row.type, row.site, row.asset_created_at),
                    due_at=row.due_at,
                    freed=row.booking_row is not None,
                )
            )
        return waiting

    def record(
        self,
        chunk: Sequence[PlannedOccurrence],
        planner: ChunkPlanner,
        *,
        now: datetime,
    ) -> builtins.list[RecordedOccurrence]:
        """Record the occurrences not recorded yet, with their orders, bookings and parts."""
        if not chunk:
            return []
        with self._engine.begin() as connection:
            # First: two generators, or a generator and a planner's rebook, take turns.
            lock_bookings(connection)
            _catch_up(connection, planner)
            new = self._unrecorded(connection, chunk)
            generated = [planned for planned in new if planned.outcome is Outcome.GENERATED]
            order_ids = _new_order_ids(connection, len(generated))
            decisions: builtins.list[Proposal | str] = [
                planner.book(planned, order_id)
                for planned, order_id in zip(generated, order_ids, strict=True)
            ]
            ids_by_occurrence = dict(zip(map(id, generated), order_ids, strict=True))
            self._insert_occurrences(connection, new, ids_by_occurrence, now)
            self._open_orders(connection, generated, decisions, order_ids, now)
            revision = next_revision(connection)
            bookings_rows = [
                {
                    "work_order_id": order_id,
                    "technician_id": decision.technician_id,
                    "start_at": decision.start_at,
                    "end_at": decision.end_at,
                    "late": decision.late,
                    "status": BOOKED,
                    "sequence": 0,
                    "revision": revision,
                    "created_at": now,
                    "updated_at": now,
                }
                for decision, order_id in zip(decisions, order_ids, strict=True)
                if isinstance(decision, Proposal)
            ]
            if bookings_rows:
                connection.execute(insert(bookings), bookings_rows)
                planner.revision = revision
            short = self._reserve(connection, generated, decisions, order_ids, now)
        return self._report(new, generated, decisions, order_ids, short)

    @staticmethod
    def _unrecorded(
        connection: Connection, chunk: Sequence[PlannedOccurrence]
    ) -> builtins.list[PlannedOccurrence]:
        """Return the chunk's occurrences not recorded yet (each key once).

        Under the booking lock nobody else records at the same time, so reading what exists
        and inserting the rest is race-free; the unique keys stay the last line of defence.
        """
        occ = plan_occurrences
        by_due = {(p.plan.id, p.asset.id, p.occurrence.due_at) for p in chunk}
        by_cycle = {
            (p.plan.id, p.asset.id, p.occurrence.cycle_key)
            for p in chunk
            if p.occurrence.cycle_key is not None
        }
        taken_due: set[tuple[str, str, datetime]] = set()
        taken_cycle: set[tuple[str, str, str]] = set()
        for keys in _batches(sorted(by_due)):
            taken_due.update(
                (row.plan_id, row.asset_id, row.due_at)
                for row in connection.execute(
                    select(occ.c.plan_id, occ.c.asset_id, occ.c.due_at).where(
                        tuple_(occ.c.plan_id, occ.c.asset_id, occ.c.due_at).in_(keys)
                    )
                )
            )
        for keys in _batches(sorted(by_cycle)):
            taken_cycle.update(
                (row.plan_id, row.asset_id, row.cycle_key)
                for row in connection.execute(
                    select(occ.c.plan_id, occ.c.asset_id, occ.c.cycle_key).where(
                        tuple_(occ.c.plan_id, occ.c.asset_id, occ.c.cycle_key).in_(keys)
                    )
                )
            )
        new: builtins.list[PlannedOccurrence] = []
        seen: set[tuple[str, str, Any]] = set()
        for planned in chunk:
            plan_id, asset_id, occurrence = planned.plan.id, planned.asset.id, planned.occurrence
            due_key = (plan_id, asset_id, occurrence.due_at)
            cycle_key = (plan_id, asset_id, occurrence.cycle_key)
            if due_key in taken_due or due_key in seen:
                continue
            if occurrence.cycle_key is not None and (cycle_key in taken_cycle or cycle_key in seen):
                continue
            seen.add(due_key)
            if occurrence.cycle_key is not None:
                seen.add(cycle_key)
            new.append(planned)
        return new

    @staticmethod
    def _insert_occurrences(
        connection: Connection,
        new: Sequence[PlannedOccurrence],
        order_ids: Mapping[int, int],
        now: datetime,
    ) -> None:
        if not new:
            return
        connection.execute(
            insert(plan_occurrences),
            [
                {
                    "plan_id": planned.plan.id,
                    "asset_id": planned.asset.id,
                    "due_at": planned.occurrence.due_at,
                    "cycle_key": planned.occurrence.cycle_key,
                    "trigger": planned.occurrence.trigger,
                    "outcome": planned.outcome.value,
                    "work_order_id": order_ids.get(id(planned)),
                    "created_at": now,
                }
                for planned in new
            ],
        )

    def _open_orders(
        self,
        connection: Connection,
        generated: Sequence[PlannedOccurrence],
        decisions: Sequence[Proposal | str],
        order_ids: Sequence[int],
        now: datetime,
    ) -> None:
        if not generated:
            return
        rows: builtins.list[dict[str, Any]] = []
        for planned, decision in zip(generated, decisions, strict=True):
            booked = isinstance(decision, Proposal)
            technician = decision.technician_id if isinstance(decision, Proposal) else None
            plan = planned.plan
            rows.append(
                {
                    "kind": WorkOrderKind.PREVENTIVE.value,
                    # Booked: scheduled. Not bookable: accepted, for a planner to schedule.
                    "status": (
                        WorkOrderStatus.SCHEDULED if booked else WorkOrderStatus.ACCEPTED
                    ).value,
                    "priority": plan.priority.value,
                    "asset_id": planned.asset.id,
                    "title": f"{plan.name}: {planned.asset.id}"[:200],
                    "description": _checklist(plan),
                    "rule_id": None,
                    "open_key": None,
                    "evidence": [],
                    "repeat_count": 0,
                    "created_at": now,
                    "updated_at": now,
                    # Planned work answers to its due time, not to a fault's response targets.
                    "responded_at": now,
                    "resolution_due_at": planned.occurrence.due_at,
                    "plan_id": plan.id,
                    "due_at": planned.occurrence.due_at,
                    "technician_id": technician,
                    "assigned_at": now if booked else None,
                }
            )
        for row, order_id in zip(rows, order_ids, strict=True):
            row["id"] = order_id
        # Plain executemany: the driver pipelines it, where a RETURNING insert would be one
        # huge statement per page that psycopg parses anew every time.
        connection.execute(insert(work_orders), rows)
        connection.execute(
            insert(work_order_events),
            [
                {
                    "work_order_id": order_id,
                    "at": now,
                    "actor": SCHEDULER_ACTOR,
                    "from_status": None,
                    "to_status": row["status"],
                    "note": _creation_note(
                        planned,
                        decision if isinstance(decision, Proposal) else None,
                        decision if isinstance(decision, str) else None,
                    ),
                }
                for planned, decision, order_id, row in zip(
                    generated, decisions, order_ids, rows, strict=True
                )
            ],
        )

    def _reserve(
        self,
        connection: Connection,
        generated: Sequence[PlannedOccurrence],
        decisions: Sequence[Proposal | str],
        order_ids: Sequence[int],
        now: datetime,
    ) -> dict[int, builtins.list[str]]:
        """Reserve each new order's parts; put the orders that came up short on hold."""
        lines = [
            ReservationLine(
                work_order_id=order_id,
                sku=part.sku,
                location=part.location,
                quantity=part.quantity,
                expires_at=(
                    decision.end_at if isinstance(decision, Proposal) else planned.occurrence.due_at
                )
                + RESERVATION_GRACE,
                note=f"plan {planned.plan.id!r}, due {planned.occurrence.due_at.isoformat()}",
            )
            for planned, decision, order_id in zip(generated, decisions, order_ids, strict=True)
            for part in planned.plan.parts
        ]
        short = self._inventory.reserve_lines(connection, lines, actor=SCHEDULER_ACTOR, now=now)
        if not short:
            return short
        statuses = dict(zip(order_ids, decisions, strict=True))
        holds = []
        for order_id, skus in short.items():
            held_from = (
                WorkOrderStatus.SCHEDULED
                if isinstance(statuses[order_id], Proposal)
                else WorkOrderStatus.ACCEPTED
            )
            holds.append(
                {
                    "work_order_id": order_id,
                    "at": now,
                    "actor": SCHEDULER_ACTOR,
                    "from_status": held_from.value,
                    "to_status": WorkOrderStatus.ON_HOLD.value,
                    "note": f"waiting for parts: {', '.join(sorted(set(skus)))} short",
                }
            )
            connection.execute(
                update(work_orders)
                .where(work_orders.c.id == order_id)
                .values(status=WorkOrderStatus.ON_HOLD.value, held_from=held_from.value)
            )
        connection.execute(insert(work_order_events), holds)
        return short

    @staticmethod
    def _report(
        new: Sequence[PlannedOccurrence],
        generated: Sequence[PlannedOccurrence],
        decisions: Sequence[Proposal | str],
        order_ids: Sequence[int],
        short: Mapping[int, Sequence[str]],
    ) -> builtins.list[RecordedOccurrence]:
        done = {
            id(planned): (decision, order_id)
            for planned, decision, order_id in zip(generated, decisions, order_ids, strict=True)
        }
        report = []
        for planned in new:
            if id(planned) not in done:
                report.append(RecordedOccurrence(planned, None, None, None, ()))
                continue
            decision, order_id = done[id(planned)]
            report.append(
                RecordedOccurrence(
                    planned,
                    order_id,
                    decision if isinstance(decision, Proposal) else None,
                    decision if isinstance(decision, str) else None,
                    tuple(short.get(order_id, ())),
                )
            )
        return report


_KEY_BATCH = 500


def _window(definition: Mapping[str, Any]) -> timedelta:
    """Return a stored plan's booking window; an order of no plan may move from now on."""
    window = definition.get("booking_window")
    return TypeAdapter(timedelta).validate_python(window) if window else timedelta(0)


def _batches(keys: builtins.list[Any]) -> Iterator[builtins.list[Any]]:
    for start in range(0, len(keys), _KEY_BATCH):
        yield keys[start : start + _KEY_BATCH]


def _new_order_ids(connection: Connection, count: int) -> builtins.list[int]:
    """Return `count` fresh work-order ids, taken under the caller's write lock."""
    if count == 0:
        return []
    if connection.dialect.name == "postgresql":
        return [
            int(value)
            for value in connection.execute(
                text(
                    "SELECT nextval(pg_get_serial_sequence('work_orders', 'id')) "
                    "FROM generate_series(1, :count)"
                ),
                {"count": count},
            ).scalars()
        ]
    # SQLite: this transaction holds the write lock, so nobody takes these in between.
    top = int(connection.execute(select(func.coalesce(func.max(work_orders.c.id), 0))).scalar_one())
    return list(range(top + 1, top + 1 + count))


def _slots(connection: Connection, *where: Any) -> builtins.list[BookedSlot]:
    rows = connection.execute(
        select(
            bookings.c.work_order_id,
            bookings.c.technician_id,
            bookings.c.start_at,
            bookings.c.end_at,
        ).where(*where)
    )
    return [
        BookedSlot(
            work_order_id=int(row.work_order_id),
            technician_id=row.technician_id,
            start_at=row.start_at,
            end_at=row.end_at,
        )
        for row in rows
    ]


def _catch_up(connection: Connection, planner: ChunkPlanner) -> None:
    """Sync the planner's diary with the bookings others wrote since it last looked."""
    changed = _changed_after(connection, planner.revision)
    planner.sync([BookingChange(slot=slot, active=active) for slot, active, _ in changed])
    planner.revision = max([planner.revision, *(revision for _, _, revision in changed)])


def _changed_after(
    connection: Connection, revision: int
) -> builtins.list[tuple[BookedSlot, bool, int]]:
    """Return the bookings written after `revision`, whether each still holds its slot."""
    rows = connection.execute(
        select(
            bookings.c.work_order_id,
            bookings.c.technician_id,
            bookings.c.start_at,
            bookings.c.end_at,
            bookings.c.status,
            bookings.c.revision,
            work_orders.c.status.label("order_status"),
        )
        .join(work_orders, work_orders.c.id == bookings.c.work_order_id)
        .where(bookings.c.revision > revision)
    )
    return [
        (
            BookedSlot(
                work_order_id=int(row.work_order_id),
                technician_id=row.technician_id,
                start_at=row.start_at,
                end_at=row.end_at,
            ),
            row.status == BOOKED and row.order_status not in _FINISHED,
            int(row.revision),
        )
        for row in rows
    ]


# Orders whose booking may still move: not started, not finished.
_REBOOKABLE = frozenset(
    {
        WorkOrderStatus.REQUESTED,
        WorkOrderStatus.ACCEPTED,
        WorkOrderStatus.SCHEDULED,
        WorkOrderStatus.ON_HOLD,
        WorkOrderStatus.REOPENED,
    }
)
_DEFAULT_DURATION = timedelta(hours=1)
_LATE_SEARCH = timedelta(days=60)


def _record(row: Any) -> BookingRecord:
    return BookingRecord(
        work_order_id=int(row.work_order_id),
        technician_id=row.technician_id,
        start_at=row.start_at,
        end_at=row.end_at,
        late=bool(row.late),
        status=row.status,
        sequence=int(row.sequence),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlBookingStore:
    """Bookings as planners and calendars see them: read, moved, cancelled with the order."""

    def __init__(
        self,
        engine: Engine,
        plans: SqlPlanRepository,
        technicians: SqlTechnicianRepository,
        clock: Clock | None = None,
    ) -> None:
        self._engine = engine
        self._plans = plans
        self._technicians = technicians
        self._clock = clock or SystemClock()

    def get(self, work_order_id: int) -> BookingRecord:
        """Return a work order's booking; NotFoundError if it has none."""
        with self._engine.connect() as connection:
            row = connection.execute(
                select(bookings).where(bookings.c.work_order_id == work_order_id)
            ).first()
        if row is None:
            raise NotFoundError(
                f"work order {work_order_id} has no booking", work_order_id=work_order_id
            )
        return _record(row)

    def entries(
        self,
        start_at: datetime,
        end_at: datetime,
        *,
        technician_id: str | None = None,
        site: str | None = None,
        include_cancelled: bool = False,
        limit: int = 10_000,
    ) -> builtins.list[CalendarEntry]:
        """Return bookings overlapping [start_at, end_at) with their order, asset and parts."""
        query = (
            select(
                bookings,
                work_orders.c.title,
                work_orders.c.description,
                work_orders.c.status.label("order_status"),
                work_orders.c.priority,
                work_orders.c.plan_id,
                work_orders.c.due_at,
                work_orders.c.asset_id,
                assets.c.name.label("asset_name"),
                assets.c.site,
            )
            .join(work_orders, work_orders.c.id == bookings.c.work_order_id)
            .join(assets, assets.c.id == work_orders.c.asset_id)
            .where(bookings.c.start_at < end_at, bookings.c.end_at > start_at)
            .order_by(bookings.c.start_at, bookings.c.work_order_id)
            .limit(limit)
        )
        if technician_id is not None:
            query = query.where(bookings.c.technician_id == technician_id)
        if site is not None:
            query = query.where(assets.c.site == site)
        if not include_cancelled:
            query = query.where(bookings.c.status == BOOKED)
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
            parts: dict[int, builtins.list[tuple[str, str, str]]] = {}
            ids = [int(row.work_order_id) for row in rows]
            for batch in _batches(ids):
                for held in connection.execute(
                    select(
                        part_reservations.c.work_order_id,
                        part_reservations.c.sku,
                        part_reservations.c.location,
                        part_reservations.c.quantity_milli,
                    )
                    .where(
                        part_reservations.c.work_order_id.in_(batch),
                        part_reservations.c.status == ReservationStatus.RESERVED.value,
                    )
                    .order_by(part_reservations.c.id)
                ):
                    quantity = str(from_milli(int(held.quantity_milli)))
                    parts.setdefault(int(held.work_order_id), []).append(
                        (held.sku, held.location, quantity)
                    )
        return [
            CalendarEntry(
                booking=_record(row),
                work_order_id=int(row.work_order_id),
                title=row.title,
                description=row.description,
                work_order_status=row.order_status,
                priority=row.priority,
                plan_id=row.plan_id,
                due_at=row.due_at,
                asset_id=row.asset_id,
                asset_name=row.asset_name,
                site=row.site,
                parts=tuple(parts.get(int(row.work_order_id), ())),
            )
            for row in rows
        ]

    def rebook(
        self,
        work_order_id: int,
        *,
        technician_id: str | None,
        start_at: datetime | None,
        actor: str,
        note: str | None = None,
    ) -> BookingRecord:
        """Move an order's booking: to the slot given, or to the earliest feasible one.

        A slot given is checked like generation checks one (site, skills, hours, time off,
        overlaps); none given books the earliest feasible slot from now, among the
        technician given or everyone at the site. The booking's sequence goes up by one,
        and an accepted order becomes scheduled. BookingRefusedError (409) says why not.
        """
        now = self._clock.now()
        with self._engine.begin() as connection:
            lock_bookings(connection)
            order = read_order(connection, work_order_id)
            if order.status not in _REBOOKABLE:
                raise BookingRefusedError(
                    f"work order {order.id} is {order.status.value}: its booking can no longer "
                    "move",
                    work_order_id=order.id,
                    work_order_status=order.status.value,
                )
            current = connection.execute(
                select(bookings).where(bookings.c.work_order_id == work_order_id)
            ).first()
            if (
                current is not None
                and current.status == BOOKED
                and start_at == current.start_at
                and technician_id == current.technician_id
            ):
                return _record(current)  # the slot it has: nothing changes, nothing audited
            request = self._request(connection, order, current, now)
            people = (
                [self._technicians.get(technician_id)]
                if technician_id is not None
                else self._technicians.list(site=request.site, limit=10_000)
            )
            diary = Diary(
                people,
                [
                    slot
                    for slot in _slots(
                        connection,
                        bookings.c.status == BOOKED,
                        bookings.c.technician_id.in_([person.id for person in people]),
                        bookings.c.end_at > now - timedelta(days=1),
                    )
                    if slot.work_order_id != work_order_id
                ],
            )
            proposal = self._choose(diary, request, technician_id, start_at)
            values = {
                "technician_id": proposal.technician_id,
                "start_at": proposal.start_at,
                "end_at": proposal.end_at,
                "late": proposal.late,
                "status": BOOKED,
                "revision": next_revision(connection),
                "updated_at": now,
            }
            if current is None:
                connection.execute(
                    insert(bookings).values(
                        work_order_id=work_order_id, sequence=0, created_at=now, **values
                    )
                )
            else:
                connection.execute(
                    update(bookings)
                    .where(bookings.c.work_order_id == work_order_id)
                    .values(sequence=bookings.c.sequence + 1, **values)
                )
            self._follow(connection, order, current, proposal, actor=actor, note=note, now=now)
            # Parts held for the order wait for the new slot, however much later it is.
            connection.execute(
                update(part_reservations)
                .where(
                    part_reservations.c.work_order_id == work_order_id,
                    part_reservations.c.status == ReservationStatus.RESERVED.value,
                    part_reservations.c.expires_at < proposal.end_at + RESERVATION_GRACE,
                )
                .values(expires_at=proposal.end_at + RESERVATION_GRACE)
            )
            row = connection.execute(
                select(bookings).where(bookings.c.work_order_id == work_order_id)
            ).one()
        return _record(row)

    def _request(
        self, connection: Connection, order: WorkOrder, current: Any, now: datetime
    ) -> BookingRequest:
        site = connection.execute(
            select(assets.c.site).where(assets.c.id == order.asset_id)
        ).scalar_one()
        plan = None
        if order.plan_id is not None:
            row = connection.execute(
                select(maintenance_plans).where(maintenance_plans.c.id == order.plan_id)
            ).first()
            plan = None if row is None else _plan(row)
        if current is not None:
            duration = current.end_at - current.start_at
        elif plan is not None:
            duration = plan.estimated_duration
        else:
            duration = _DEFAULT_DURATION
        # An order with no due time is never late; one already overdue always is.
        due_at = order.due_at or order.resolution_due_at or now + _LATE_SEARCH
        return BookingRequest(
            work_order_id=order.id,
            site=site,
            duration=duration,
            skills=tuple(plan.required_skills) if plan is not None else (),
            not_before=now,
            due_at=due_at,
            search_until=max(due_at, now) + _LATE_SEARCH,
        )

    @staticmethod
    def _choose(
        diary: Diary,
        request: BookingRequest,
        technician_id: str | None,
        start_at: datetime | None,
    ) -> Proposal:
        if start_at is None:
            proposal = diary.propose(request)
            if proposal is None:
                raise BookingRefusedError(
                    why_unbookable(diary, request), work_order_id=request.work_order_id
                )
            return proposal
        if technician_id is None:
            raise BookingRefusedError(
                "a start time needs the technician it is booked with",
                work_order_id=request.work_order_id,
            )
        if start_at < request.not_before:
            raise BookingRefusedError(
                f"cannot book work order {request.work_order_id} in the past: "
                f"{start_at.isoformat()} is before {request.not_before.isoformat()}",
                work_order_id=request.work_order_id,
            )
        end_at = start_at + request.duration
        reason = diary.check(
            technician_id, request.work_order_id, start_at, end_at, request.site, request.skills
        )
        if reason is not None:
            raise BookingRefusedError(
                f"cannot book work order {request.work_order_id} with {technician_id!r} from "
                f"{start_at.isoformat()}: {reason}",
                work_order_id=request.work_order_id,
                technician_id=technician_id,
            )
        return Proposal(
            work_order_id=request.work_order_id,
            technician_id=technician_id,
            start_at=start_at,
            end_at=end_at,
            late=end_at > request.due_at,
        )

    @staticmethod
    def _follow(
        connection: Connection,
        order: WorkOrder,
        current: Any,
        proposal: Proposal,
        *,
        actor: str,
        note: str | None,
        now: datetime,
    ) -> None:
        """Assign the order to the booked technician, schedule it if accepted, and audit."""
        status = order.status
        values: dict[str, Any] = {"updated_at": now}
        if order.technician_id != proposal.technician_id:
            values.update(technician_id=proposal.technician_id, assigned_at=now)
        if status in (WorkOrderStatus.ACCEPTED, WorkOrderStatus.REOPENED):
            values["status"] = WorkOrderStatus.SCHEDULED.value
        changed = connection.execute(
            update(work_orders)
            .where(work_orders.c.id == order.id, work_orders.c.status == status.value)
            .values(values)
        ).rowcount
        if changed == 0:
            raise ConflictError(
                f"work order {order.id} changed while being booked; try again",
                work_order_id=order.id,
            )
        was = (
            ""
            if current is None
            else f" (was {current.technician_id!r} from {current.start_at.isoformat()})"
        )
        what = (
            f"booked with {proposal.technician_id!r} from {proposal.start_at.isoformat()} to "
            f"{proposal.end_at.isoformat()}{was}"
        )
        connection.execute(
            insert(work_order_events).values(
                work_order_id=order.id,
                at=now,
                actor=actor,
                from_status=status.value,
                to_status=values.get("status", status.value),
                note=f"{what}: {note}" if note else what,
            )
        )

    def settle_booking(
        self,
        connection: Connection,
        order: WorkOrder,
        *,
        from_status: WorkOrderStatus,
        actor: str,
        note: str | None,
        now: datetime,
    ) -> None:
        """Cancel the booking of a cancelled order, in the cancel's transaction.

        The row stays, marked cancelled with its sequence bumped, so calendar feeds tell
        subscribers the event is off. A `storage.alerting.TransitionHook`.
        """
        if order.status is not WorkOrderStatus.CANCELLED:
            return
        lock_bookings(connection)
        connection.execute(
            update(bookings)
            .where(bookings.c.work_order_id == order.id, bookings.c.status == BOOKED)
            .values(
                status=CANCELLED,
                sequence=bookings.c.sequence + 1,
                revision=next_revision(connection),
                updated_at=now,
            )
        )
