"""Technicians and work-order assignment on SQLite and the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, insert, inspect
from sqlalchemy.exc import IntegrityError

from core.assets import Asset
from core.clock import FrozenClock
from core.errors import ConflictError, NotFoundError
from core.priority import Priority
from core.technicians import (
    NewTechnician,
    TechnicianRepository,
    WorkOrderFinishedError,
    is_off,
    parse_technician,
    parse_time_off,
)
from core.workorders import (
    Action,
    Completion,
    NewWorkOrder,
    TransitionDetails,
    WorkOrderKind,
    WorkOrderStatus,
)
from storage.alerting import SqlWorkOrderRepository
from storage.db import alembic_config, create_engine_for, migrate
from storage.repositories import SqlAssetRepository
from storage.tables import technician_time_off
from storage.technicians import SqlTechnicianRepository
from tests.support.workorders import act

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PLANNER = "planner@plant"


def tech(technician_id: str = "anna-berg", **fields: Any) -> NewTechnician:
    data: dict[str, Any] = {
        "id": technician_id,
        "name": "Anna Berg",
        "email": "anna@example.com",
        "sites": ["north"],
        "region": "EMEA",
        "time_zone": "Europe/Berlin",
        "skills": [{"skill": "welding", "certified_until": "2026-11-22"}, {"skill": "hvac"}],
        "weekly_hours": [{"weekday": 0, "start": "08:00", "end": "16:00"}],
    }
    return parse_technician({**data, **fields})


def time_off(start_day: int, end_day: int, reason: str | None = "leave") -> Any:
    return parse_time_off(
        {
            "start_at": datetime(2026, 12, start_day, tzinfo=UTC),
            "end_at": datetime(2026, 12, end_day, tzinfo=UTC),
            "reason": reason,
        }
    )


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def repo(database_engine: Engine, clock: FrozenClock) -> SqlTechnicianRepository:
    return SqlTechnicianRepository(database_engine, clock)


@pytest.fixture
def orders(database_engine: Engine, clock: FrozenClock) -> SqlWorkOrderRepository:
    SqlAssetRepository(database_engine, clock).add(
        Asset(id="pump-1", name="Pump 1", type="pump", site="north")
    )
    return SqlWorkOrderRepository(database_engine)


def new_order(orders: SqlWorkOrderRepository) -> int:
    order = NewWorkOrder(
        kind=WorkOrderKind.PREVENTIVE, priority=Priority.MEDIUM, asset_id="pump-1", title="PM"
    )
    return orders.create(order, T0, actor=PLANNER).id


# --- technicians ----------------------------------------------------------------------


def test_a_technician_reads_back_as_registered(repo: SqlTechnicianRepository) -> None:
    added = repo.add(tech(sites=["south", "north"]))
    assert added.created_at == added.updated_at == T0
    assert added.time_off == []
    assert NewTechnician.model_validate(
        added.model_dump(exclude={"time_off", "created_at", "updated_at"})
    ) == tech(sites=["north", "south"])
    assert repo.get("anna-berg") == added
    assert added.skills[1].certified_until == date(2026, 11, 22)
    assert added.skills[0].certified_until is None


def test_a_minimal_technician_reads_back(repo: SqlTechnicianRepository) -> None:
    minimal = parse_technician({"id": "bo", "name": "Bo", "sites": ["x"], "time_zone": "UTC"})
    stored = repo.add(minimal)
    assert (stored.email, stored.phone, stored.region, stored.skills, stored.weekly_hours) == (
        None,
        None,
        None,
        [],
        [],
    )


def test_a_taken_id_is_a_conflict_and_changes_nothing(repo: SqlTechnicianRepository) -> None:
    first = repo.add(tech())
    with pytest.raises(ConflictError, match="'anna-berg' already exists"):
        repo.add(tech(name="Someone else", sites=["south"]))
    assert repo.get("anna-berg") == first


def test_an_unknown_technician_is_not_found(repo: SqlTechnicianRepository) -> None:
    with pytest.raises(NotFoundError, match="technician 'nobody' not found"):
        repo.get("nobody")
    with pytest.raises(NotFoundError):
        repo.replace(tech("nobody"))
    with pytest.raises(NotFoundError):
        repo.time_off("nobody")
    with pytest.raises(NotFoundError):
        repo.add_time_off("nobody", time_off(1, 2), actor=PLANNER)
    with pytest.raises(NotFoundError, match="technician 'nobody' not found"):
        repo.remove_time_off("nobody", 1)


def test_replace_swaps_everything_but_time_off_and_creation(
    repo: SqlTechnicianRepository, clock: FrozenClock
) -> None:
    repo.add(tech())
    off = repo.add_time_off("anna-berg", time_off(1, 3), actor=PLANNER)
    clock.at = T0 + timedelta(hours=1)
    changed = tech(
        name="Anna Berg-Lund",
        email=None,
        sites=["east"],
        time_zone="America/New_York",
        skills=[{"skill": "electrical", "certified_until": "2030-01-01"}],
        weekly_hours=[{"weekday": 5, "start": "10:00", "end": "24:00"}],
    )
    replaced = repo.replace(changed)
    assert replaced.created_at == T0
    assert replaced.updated_at == T0 + timedelta(hours=1)
    assert replaced.time_off == [off]
    assert replaced.sites == ["east"]
    assert [s.skill for s in replaced.skills] == ["electrical"]
    assert replaced.time_zone == "America/New_York"
    assert replaced.weekly_hours == changed.weekly_hours
    assert replaced.email is None
    assert repo.get("anna-berg") == replaced
    assert repo.list(skill="welding") == []  # the old skill rows are gone
    assert repo.list(site="north") == []


def test_list_pages_by_id_bytewise_on_every_backend(repo: SqlTechnicianRepository) -> None:
    for technician_id in ("b-2", "B-1", "a-3", "x0", "Z"):
        repo.add(tech(technician_id))
    everyone = [t.id for t in repo.list()]
    assert everyone == sorted(everyone)  # Python sorts str by code point, like collation C
    assert everyone == ["B-1", "Z", "a-3", "b-2", "x0"]
    first = repo.list(limit=2)
    rest = repo.list(after_id=first[-1].id, limit=10)
    assert [t.id for t in first + rest] == everyone


def test_list_filters_by_site_and_skill(repo: SqlTechnicianRepository) -> None:
    repo.add(tech("anna", sites=["north", "south"]))
    repo.add(
        tech("bo", sites=["south"], skills=[{"skill": "welding", "certified_until": "2026-12-31"}])
    )
    repo.add(tech("cy", sites=["east"], skills=[{"skill": "welding"}]))
    repo.add(tech("di", sites=["north"], skills=[]))

    def ids(**filters: Any) -> list[str]:
        return [t.id for t in repo.list(**filters)]

    assert ids(site="north") == ["anna", "di"]
    assert ids(site="south") == ["anna", "bo"]
    assert ids(site="nowhere") == []
    assert ids(skill="welding") == ["anna", "bo", "cy"]
    assert ids(skill="WELDING") == ["anna", "bo", "cy"]
    assert ids(skill="hvac") == ["anna"]
    assert ids(skill="welding", site="south") == ["anna", "bo"]
    # anna's certification ends 2026-11-22, bo's 2026-12-31, cy's never.
    assert ids(skill="welding", certified_on=date(2026, 11, 22)) == ["anna", "bo", "cy"]
    assert ids(skill="welding", certified_on=date(2026, 11, 23)) == ["bo", "cy"]
    assert ids(skill="welding", certified_on=date(2027, 1, 1)) == ["cy"]
    assert ids(skill="welding", site="south", certified_on=date(2027, 1, 1)) == []
    assert ids(skill="welding", after_id="anna", limit=1) == ["bo"]


def test_listed_technicians_carry_their_time_off(repo: SqlTechnicianRepository) -> None:
    repo.add(tech("anna"))
    repo.add(tech("bo"))
    repo.add_time_off("bo", time_off(1, 2), actor=PLANNER)
    by_id = {t.id: t for t in repo.list()}
    assert by_id["anna"].time_off == []
    assert [(o.technician_id, o.reason) for o in by_id["bo"].time_off] == [("bo", "leave")]


# --- time off -------------------------------------------------------------------------


def test_time_off_is_added_listed_and_removed(repo: SqlTechnicianRepository) -> None:
    repo.add(tech())
    late = repo.add_time_off("anna-berg", time_off(20, 24, reason=None), actor=PLANNER)
    early = repo.add_time_off("anna-berg", time_off(1, 3), actor=PLANNER)
    assert early.id != late.id
    assert (early.technician_id, early.created_at, early.created_by) == ("anna-berg", T0, PLANNER)
    assert early.start_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert early.start_at.utcoffset() == timedelta(0)
    assert late.reason is None
    assert repo.time_off("anna-berg") == [early, late]  # by start time
    assert repo.get("anna-berg").time_off == [early, late]

    repo.remove_time_off("anna-berg", early.id)
    assert repo.time_off("anna-berg") == [late]
    with pytest.raises(NotFoundError, match=f"time off {early.id} of technician 'anna-berg'"):
        repo.remove_time_off("anna-berg", early.id)


def test_time_off_is_listed_by_overlap(repo: SqlTechnicianRepository) -> None:
    repo.add(tech())
    first = repo.add_time_off("anna-berg", time_off(1, 3), actor=PLANNER)
    second = repo.add_time_off("anna-berg", time_off(10, 12), actor=PLANNER)

    def during(start: int | None, end: int | None) -> list[int]:
        found = repo.time_off(
            "anna-berg",
            start=None if start is None else datetime(2026, 12, start, tzinfo=UTC),
            end=None if end is None else datetime(2026, 12, end, tzinfo=UTC),
        )
        return [off.id for off in found]

    assert during(2, 11) == [first.id, second.id]
    assert during(3, 10) == []  # each touches the span at an excluded end
    assert during(None, 3) == [first.id]
    assert during(12, None) == []
    assert during(11, None) == [second.id]


def test_time_off_of_another_technician_cannot_be_removed(repo: SqlTechnicianRepository) -> None:
    repo.add(tech("anna"))
    repo.add(tech("bo"))
    off = repo.add_time_off("anna", time_off(1, 2), actor=PLANNER)
    with pytest.raises(NotFoundError, match=f"time off {off.id} of technician 'bo'"):
        repo.remove_time_off("bo", off.id)
    assert repo.time_off("anna") == [off]


def test_a_stored_technician_answers_is_off(repo: SqlTechnicianRepository) -> None:
    repo.add(tech())
    repo.add_time_off("anna-berg", time_off(1, 3), actor=PLANNER)
    stored = repo.get("anna-berg")
    assert is_off(stored, datetime(2026, 12, 2, tzinfo=UTC), datetime(2026, 12, 2, 1, tzinfo=UTC))
    assert not is_off(stored, datetime(2026, 12, 3, tzinfo=UTC), datetime(2026, 12, 4, tzinfo=UTC))


def test_the_database_itself_refuses_time_off_that_ends_before_it_starts(
    repo: SqlTechnicianRepository, database_engine: Engine
) -> None:
    repo.add(tech())
    with pytest.raises(IntegrityError), database_engine.begin() as connection:
        connection.execute(
            insert(technician_time_off).values(
                technician_id="anna-berg",
                start_at=T0,
                end_at=T0,
                created_at=T0,
                created_by=PLANNER,
            )
        )


def test_the_repository_satisfies_its_port(repo: SqlTechnicianRepository) -> None:
    port: TechnicianRepository = repo
    assert port.list() == []


# --- assignment -----------------------------------------------------------------------


def test_assigning_records_the_technician_and_audits_without_moving_the_status(
    orders: SqlWorkOrderRepository,
) -> None:
    order_id = new_order(orders)
    later = T0 + timedelta(minutes=5)
    assigned = orders.assign(order_id, "anna-berg", actor=PLANNER, note="nearest", now=later)
    assert (assigned.technician_id, assigned.assigned_at) == ("anna-berg", later)
    assert assigned.status is WorkOrderStatus.REQUESTED
    assert assigned.updated_at == later
    assert orders.get(order_id) == assigned
    event = orders.events(order_id)[-1]
    assert (event.at, event.actor, event.from_status, event.to_status) == (
        later,
        PLANNER,
        WorkOrderStatus.REQUESTED,
        WorkOrderStatus.REQUESTED,
    )
    assert event.note == "assigned to technician 'anna-berg': nearest"


def test_reassigning_names_the_previous_technician_and_the_same_one_is_a_no_op(
    orders: SqlWorkOrderRepository,
) -> None:
    order_id = new_order(orders)
    orders.assign(order_id, "anna", actor=PLANNER, note=None, now=T0)
    again = orders.assign(order_id, "anna", actor=PLANNER, note="again", now=T0 + timedelta(1))
    assert again.assigned_at == T0
    assert len(orders.events(order_id)) == 2  # creation, one assignment
    moved = orders.assign(order_id, "bo", actor=PLANNER, note=None, now=T0 + timedelta(hours=1))
    assert (moved.technician_id, moved.assigned_at) == ("bo", T0 + timedelta(hours=1))
    assert orders.events(order_id)[-1].note == "assigned to technician 'bo' (was 'anna')"


def test_unassigning_clears_the_technician_and_audits_it(orders: SqlWorkOrderRepository) -> None:
    order_id = new_order(orders)
    orders.assign(order_id, "anna", actor=PLANNER, note=None, now=T0)
    cleared = orders.unassign(order_id, actor=PLANNER, note="sick", now=T0 + timedelta(hours=1))
    assert (cleared.technician_id, cleared.assigned_at) == (None, None)
    assert orders.events(order_id)[-1].note == "unassigned from technician 'anna': sick"
    count = len(orders.events(order_id))
    assert orders.unassign(order_id, actor=PLANNER, note=None, now=T0) == cleared
    assert len(orders.events(order_id)) == count  # nothing to undo: nothing audited


@pytest.mark.parametrize("action", [Action.CANCEL, Action.CLOSE])
def test_a_finished_order_keeps_its_technician(
    orders: SqlWorkOrderRepository, action: Action
) -> None:
    order_id = new_order(orders)
    orders.assign(order_id, "anna", actor=PLANNER, note=None, now=T0)
    if action is Action.CANCEL:
        act(orders, order_id, Action.CANCEL, PLANNER, T0, note="not needed")
    else:
        for step in (Action.ACCEPT, Action.START):
            act(orders, order_id, step, PLANNER, T0)
        orders.transition(
            order_id,
            Action.RESOLVE,
            details=_completion(),
            actor=PLANNER,
            now=T0,
        )
        act(orders, order_id, Action.CLOSE, PLANNER, T0)
    count = len(orders.events(order_id))
    with pytest.raises(WorkOrderFinishedError, match="can no longer change"):
        orders.assign(order_id, "bo", actor=PLANNER, note=None, now=T0)
    with pytest.raises(WorkOrderFinishedError):
        orders.unassign(order_id, actor=PLANNER, note=None, now=T0)
    assert orders.get(order_id).technician_id == "anna"
    assert len(orders.events(order_id)) == count


def _completion() -> TransitionDetails:
    return TransitionDetails(
        completion=Completion(
            findings="ok", failure_code="NONE", labour_minutes=10, downtime_minutes=0
        )
    )


def test_an_assignment_read_before_a_concurrent_change_is_refused(
    orders: SqlWorkOrderRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    order_id = new_order(orders)
    stale = orders.get(order_id)
    orders.assign(order_id, "anna", actor=PLANNER, note=None, now=T0)
    # As if another request assigned anna between this one's read and its write.
    monkeypatch.setattr(orders, "get", lambda _order_id: stale)
    with pytest.raises(ConflictError, match="changed while being updated"):
        orders.assign(order_id, "bo", actor=PLANNER, note=None, now=T0)
    monkeypatch.undo()
    assert orders.get(order_id).technician_id == "anna"
    assert [e.note for e in orders.events(order_id)][-1] == "assigned to technician 'anna'"


def test_an_unknown_order_is_not_found(orders: SqlWorkOrderRepository) -> None:
    with pytest.raises(NotFoundError):
        orders.assign(999, "anna", actor=PLANNER, note=None, now=T0)
    with pytest.raises(NotFoundError):
        orders.unassign(999, actor=PLANNER, note=None, now=T0)


def test_orders_list_by_technician(orders: SqlWorkOrderRepository) -> None:
    first, second, third = (new_order(orders) for _ in range(3))
    orders.assign(first, "anna", actor=PLANNER, note=None, now=T0)
    orders.assign(third, "anna", actor=PLANNER, note=None, now=T0)
    orders.assign(second, "bo", actor=PLANNER, note=None, now=T0)
    assert [o.id for o in orders.list(technician_id="anna")] == [third, first]
    assert [o.id for o in orders.list(technician_id="bo")] == [second]
    assert [o.id for o in orders.list(technician_id="anna", before_id=third)] == [first]
    assert orders.list(technician_id="nobody") == []
    assert len(orders.list()) == 3


# --- the migration --------------------------------------------------------------------


def test_the_migration_downgrades_and_upgrades_again(empty_database_url: str) -> None:
    engine = create_engine_for(empty_database_url)
    try:
        migrate(engine)
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0006")
        inspector = inspect(engine)
        assert "technicians" not in inspector.get_table_names()
        assert "technician_id" not in {c["name"] for c in inspector.get_columns("work_orders")}
        migrate(engine)
        inspector = inspect(engine)
        assert {
            "technicians",
            "technician_sites",
            "technician_skills",
            "technician_time_off",
        } <= set(inspector.get_table_names())
        indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("work_orders")}
        assert indexes["ix_work_orders_technician_id"] == ["technician_id", "id"]
    finally:
        engine.dispose()
