"""Generation: turn maintenance plans into recorded occurrences, booked work orders and parts.

The planning itself is pure (occurrences.py, booking.py); this module only feeds it what
the store knows and hands the store what to record. It never reads the clock: `now` is
passed in by the caller (the APScheduler job, or the dry run).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from core.ports import SeriesRange
from core.technicians import Technician
from core.telemetry import StampedValue
from scheduler.booking import BookingRequest, Diary, Proposal, why_unbookable
from scheduler.meters import MeterReading, meter_from_stamped
from scheduler.model import MaintenancePlan, MissedPolicy, SiteCalendar
from scheduler.occurrences import PlanProgress, cycle_baseline, due_occurrences
from scheduler.ports import (
    AssetRef,
    BookingChange,
    HeldBooking,
    Outcome,
    PlannedOccurrence,
    Rebooking,
    RecordedOccurrence,
    ScheduleStore,
    WaitingOrder,
)

log = logging.getLogger(__name__)

# How far past its due time a late job may still be booked before it is left unbooked.
LATE_SEARCH = timedelta(days=60)
# A cycle plan under mark_missed walks one missed cycle per pass; this bounds the walk.
MAX_PASSES = 100
# Meter series are read in one request per this many series, and at most this many
# points per series.
METER_BATCH = 200
METER_POINTS = 200_000
METER_LOOKBACK = timedelta(days=1)
_MS = timedelta(milliseconds=1)
# An occurrence counts as missed (and a mark_missed plan skips it) only if it fell due this
# long before it was generated: a meter crossing is only seen after it happens, and a run
# a minute late must not drop the job it was about to create.
MISSED_GRACE = timedelta(hours=1)
_NO_PROGRESS = PlanProgress(
    last_due_at=None, last_completed_at=None, last_missed_due_at=None, open_cycle_key=None
)

ReadMany = Callable[[Sequence[SeriesRange], int], list[list[StampedValue]]]


@dataclass
class GenerationReport:
    """What one generation run did."""

    occurrences: int = 0  # newly recorded, generated or missed
    work_orders: int = 0
    missed: int = 0
    booked: int = 0
    late: int = 0
    unbooked: int = 0
    on_hold: int = 0
    passes: int = 0
    rebooked: int = 0  # orders generated earlier that found a slot in this run
    moved: int = 0  # bookings that stopped holding and were moved to another slot
    unbooked_again: int = 0  # bookings that stopped holding with no other slot to be had
    recorded: list[RecordedOccurrence] = field(default_factory=list, repr=False)

    def add(self, recorded: Sequence[RecordedOccurrence]) -> None:
        """Count what a chunk recorded."""
        self.recorded += recorded
        for item in recorded:
            self.occurrences += 1
            if item.work_order_id is None:
                self.missed += 1
                continue
            self.work_orders += 1
            if item.booking is None:
                self.unbooked += 1
            else:
                self.booked += 1
                self.late += item.booking.late
            self.on_hold += bool(item.short_parts)


@dataclass(frozen=True)
class ProjectedOrder:
    """One occurrence of a dry run: the order it would open, and its slot if any."""

    planned: PlannedOccurrence
    booking: Proposal | None
    unbooked_reason: str | None


@dataclass
class Projection:
    """What a dry run found: the orders, and the parts they would need, per location."""

    now: datetime
    horizon: timedelta
    orders: list[ProjectedOrder] = field(default_factory=list)
    parts: dict[tuple[str, str], Decimal] = field(default_factory=dict)


class DiaryPlanner:
    """Book generated orders into a diary: the store calls it inside its transaction."""

    def __init__(self, diary: Diary, now: datetime, revision: int = 0) -> None:
        self.diary = diary
        self.revision = revision
        self._now = now

    def sync(self, changes: Sequence[BookingChange]) -> None:
        """Apply bookings others changed: free their old slots, take their new ones.

        What others booked is a fact, even if it clashes with the diary (a planner may
        book by hand what the rules would not): it is recorded, not checked.
        """
        for change in changes:
            if change.active:
                self.diary.record(change.slot)
            else:
                self.diary.release(change.slot.work_order_id)

    def request(
        self, plan: MaintenancePlan, site: str, due_at: datetime, work_order_id: int
    ) -> BookingRequest:
        """Return the booking request of an order of `plan` due at `due_at` at `site`."""
        return BookingRequest(
            work_order_id=work_order_id,
            site=site,
            duration=plan.estimated_duration,
            skills=tuple(plan.required_skills),
            not_before=max(self._now, due_at - plan.booking_window),
            due_at=due_at,
            search_until=max(due_at, self._now) + LATE_SEARCH,
        )

    def book(self, planned: PlannedOccurrence, work_order_id: int) -> Proposal | str:
        """Book the earliest feasible slot, or return why there is none."""
        return self.book_request(
            self.request(planned.plan, planned.asset.site, planned.occurrence.due_at, work_order_id)
        )

    def book_waiting(self, waiting: WaitingOrder) -> Proposal | str:
        """Book a slot for an order generated earlier, or return why there is none yet."""
        return self.book_request(
            self.request(waiting.plan, waiting.asset.site, waiting.due_at, waiting.work_order_id)
        )

    def revalidate(self, held: HeldBooking) -> Rebooking | None:
        """Return None if the booking still holds, else move it (or free it) in the diary.

        A slot stops holding when the technician took time off over it, changed hours,
        lost the skill or its certification, or left the site.
        """
        slot = held.slot
        reason = self.diary.check(
            slot.technician_id,
            slot.work_order_id,
            slot.start_at,
            slot.end_at,
            held.site,
            held.skills,
        )
        if reason is None:
            return None
        self.diary.release(slot.work_order_id)
        due_at = held.due_at or slot.end_at
        request = BookingRequest(
            work_order_id=slot.work_order_id,
            site=held.site,
            duration=slot.end_at - slot.start_at,
            skills=held.skills,
            not_before=max(self._now, due_at - held.booking_window),
            due_at=due_at,
            search_until=max(due_at, self._now) + LATE_SEARCH,
        )
        decision = self.book_request(request)
        if isinstance(decision, Proposal):
            return Rebooking(held, reason, decision, None)
        return Rebooking(held, reason, None, decision)

    def book_request(self, request: BookingRequest) -> Proposal | str:
        """Book the earliest feasible slot for `request`, or return why there is none."""
        proposal = self.diary.propose(request)
        if proposal is None:
            return why_unbookable(self.diary, request)
        self.diary.book(proposal)
        return proposal


def _targets(
    plan: MaintenancePlan, by_id: Mapping[str, AssetRef], by_type: Mapping[str, list[AssetRef]]
) -> list[AssetRef]:
    if plan.asset_id is not None:
        asset = by_id.get(plan.asset_id)
        return [] if asset is None else [asset]
    return by_type.get(plan.asset_type or "", [])


class PlanGenerator:
    """Generate, book and reserve what the plans make due; idempotent however often run."""

    def __init__(self, store: ScheduleStore, read_meters: ReadMany | None = None) -> None:
        self._store = store
        self._read_meters = read_meters

    def plan(
        self,
        now: datetime,
        *,
        horizon: timedelta | None = None,
        plans: Sequence[MaintenancePlan] | None = None,
    ) -> list[PlannedOccurrence]:
        """Return the occurrences due up to each plan's lead time (or `horizon`), oldest first.

        Only what is not recorded yet, as far as the store's progress tells.
        """
        plans = list(self._store.enabled_plans() if plans is None else plans)
        calendars = self._store.site_calendars()
        by_id: dict[str, AssetRef] = {}
        by_type: dict[str, list[AssetRef]] = defaultdict(list)
        for asset in self._store.assets():
            by_id[asset.id] = asset
            by_type[asset.type].append(asset)
        progress = self._store.progress([plan.id for plan in plans])
        pairs = [(plan, asset) for plan in plans for asset in _targets(plan, by_id, by_type)]
        meters = self._meters(pairs, progress, now)
        planned: list[PlannedOccurrence] = []
        default_calendars: dict[str, SiteCalendar] = {}
        for plan, asset in pairs:
            # An asset registered after its plan starts from its registration: the plan's
            # past is not its past.
            if asset.created_at > plan.created_at:
                plan = plan.model_copy(update={"created_at": asset.created_at})  # noqa: PLW2901
            calendar = calendars.get(asset.site)
            if calendar is None:
                calendar = default_calendars.setdefault(
                    asset.site, SiteCalendar.default(asset.site)
                )
            until = now + (plan.lead_time if horizon is None else horizon)
            for occurrence in due_occurrences(
                plan,
                calendar,
                progress.get((plan.id, asset.id), _NO_PROGRESS),
                meters.get((plan.id, asset.id)),
                now,
                until,
                missed_before=now - MISSED_GRACE,
            ):
                skip = occurrence.missed and plan.missed is MissedPolicy.MARK_MISSED
                outcome = Outcome.MISSED if skip else Outcome.GENERATED
                planned.append(PlannedOccurrence(plan, asset, occurrence, outcome))
        planned.sort(key=lambda item: (item.occurrence.due_at, item.plan.id, item.asset.id))
        return planned

    def _meters(
        self,
        pairs: Sequence[tuple[MaintenancePlan, AssetRef]],
        progress: Mapping[tuple[str, str], PlanProgress],
        now: datetime,
    ) -> dict[tuple[str, str], MeterReading]:
        """Read the meter series of every meter plan's asset since its baseline."""
        wanted = [(plan, asset) for plan, asset in pairs if plan.meter is not None]
        if not wanted or self._read_meters is None:
            return {}
        readings: dict[tuple[str, str], MeterReading] = {}
        for start in range(0, len(wanted), METER_BATCH):
            batch = wanted[start : start + METER_BATCH]
            baselines = [
                cycle_baseline(plan, progress.get((plan.id, asset.id), _NO_PROGRESS))
                for plan, asset in batch
            ]
            # From a little before the baseline: the reading at or just before it is what
            # the count starts from. To just after now: a reading stamped now counts.
            requests: list[SeriesRange] = [
                (asset.id, plan.meter.metric, baseline - METER_LOOKBACK, now + _MS)
                for (plan, asset), baseline in zip(batch, baselines, strict=True)
                if plan.meter is not None
            ]
            series = self._read_meters(requests, METER_POINTS)
            for (plan, asset), baseline, points in zip(batch, baselines, series, strict=True):
                assert plan.meter is not None  # noqa: S101 - filtered above
                readings[(plan.id, asset.id)] = meter_from_stamped(
                    plan.meter, points, baseline, now
                )
        return readings

    def run(self, now: datetime) -> GenerationReport:
        """Record, open, book and reserve everything due within the plans' lead times."""
        report = GenerationReport()
        planner = self._planner(now)
        # Bookings that stopped holding first (their technician took time off, say), then
        # orders that found nobody before: both have waited longest.
        broken = self._store.rebook_broken(planner, now=now)
        report.moved = sum(item.proposal is not None for item in broken)
        report.unbooked_again = len(broken) - report.moved
        report.rebooked = len(self._store.book_waiting(planner, now=now))
        while report.passes < MAX_PASSES:
            report.passes += 1
            planned = self.plan(now)
            if not planned:
                break
            before = report.occurrences
            size = getattr(self._store, "chunk_size", 2000)
            for start in range(0, len(planned), size):
                report.add(self._store.record(planned[start : start + size], planner, now=now))
            # Another pass only helps a cycle plan that recorded a missed cycle: its next
            # cycle counts from that one. Anything else planned is recorded by now.
            walked = any(
                item.work_order_id is None and item.planned.occurrence.cycle_key is not None
                for item in report.recorded[before:]
            )
            if not walked:
                break
        if broken:
            log.warning(
                "plans: %d bookings no longer held: %d moved, %d waiting for a slot",
                len(broken),
                report.moved,
                report.unbooked_again,
            )
        if report.rebooked:
            log.info("plans: %d waiting orders booked", report.rebooked)
        if report.occurrences:
            log.info(
                "plans: %d occurrences recorded (%d work orders, %d missed), %d booked "
                "(%d late), %d not booked, %d on hold for parts",
                report.occurrences,
                report.work_orders,
                report.missed,
                report.booked,
                report.late,
                report.unbooked,
                report.on_hold,
            )
        return report

    def project(self, now: datetime, horizon: timedelta) -> Projection:
        """Return what the plans would produce within `horizon`, writing nothing.

        Every plan looks `horizon` ahead, whatever its lead time; a cycle plan shows its
        next cycle only, since the one after counts from a completion not yet made.
        """
        planner = self._planner(now)
        projection = Projection(now=now, horizon=horizon)
        for index, planned in enumerate(self.plan(now, horizon=horizon), 1):
            if planned.outcome is Outcome.MISSED:
                projection.orders.append(ProjectedOrder(planned, None, None))
                continue
            decision = planner.book(planned, -index)
            booking = decision if isinstance(decision, Proposal) else None
            reason = decision if isinstance(decision, str) else None
            projection.orders.append(ProjectedOrder(planned, booking, reason))
            for part in planned.plan.parts:
                key = (part.sku, part.location)
                projection.parts[key] = projection.parts.get(key, Decimal(0)) + part.quantity
        return projection

    def _planner(self, now: datetime) -> DiaryPlanner:
        technicians: list[Technician] = self._store.technicians()
        booked, revision = self._store.booked_slots(
            now - timedelta(days=1), now + timedelta(days=800)
        )
        return DiaryPlanner(Diary(technicians, booked), now, revision)
