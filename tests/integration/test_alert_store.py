"""The SQL alert store and work-order repository, on SQLite and the real PostgreSQL."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Engine, Table, func, select
from sqlalchemy.exc import DBAPIError

from core.assets import Asset
from core.clock import FrozenClock
from core.errors import ConflictError, NotFoundError, ValidationError
from core.priority import Priority
from core.telemetry import datetime_to_ms
from core.workorders import (
    InvalidTransitionError,
    NewWorkOrder,
    WorkOrderKind,
    WorkOrderStatus,
)
from rules.alerting import Alert, AlertPolicy, AlertStatus, Decision, decide
from rules.engine import KeyedOutcome, StateKey
from rules.evaluate import RuleCancelled, RuleFired, RulePending, RuleResolved, RuleState, Status
from rules.model import Comparison, Rule, Selector, Severity, Threshold
from rules.ports import AlertStore, WorkOrderRepository
from storage.alerting import SqlAlertStore, SqlWorkOrderRepository
from storage.db import create_engine_for, migrate
from storage.repositories import SqlAssetRepository, SqlRuleRepository
from storage.tables import alerts, rule_states, work_order_events, work_orders
from tests.fakes import InMemoryAlertStore, InMemoryWorkOrderRepository
from tests.support.workorders import REQUEST, resolve, start

T0 = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
POLICY = AlertPolicy(flap_window=timedelta(minutes=15), reopen_window=timedelta(days=7))
RULE = Rule(
    id="bearing-vibration",
    name="Bearing vibration high",
    selector=Selector(metric="vibration_mm_s", asset_type="pump"),
    condition=Threshold(comparison=Comparison.ABOVE, threshold=7.1, clear=6.0),
    severity=Severity.CRITICAL,
)
PUMP = "pump-17"
KEY = StateKey(RULE.id, PUMP, "vibration_mm_s")


def ms(at: datetime) -> int:
    return datetime_to_ms(at)


def fired(episode: int, at: datetime, value: float = 9.3) -> RuleFired:
    points = ((ms(at - timedelta(minutes=1)), 8.0), (ms(at), value))
    return RuleFired(at=at, episode=episode, value=value, threshold=7.1, evidence=points)


def firing(episode: int, at: datetime, key: StateKey = KEY, value: float = 9.3) -> KeyedOutcome:
    state = RuleState(Status.FIRING, ms(at), None, ms(at), None, episode)
    return KeyedOutcome(key, RULE, state, (fired(episode, at, value),))


def clearing(episode: int, at: datetime, key: StateKey = KEY) -> KeyedOutcome:
    state = RuleState(Status.RESOLVED, ms(at), None, None, None, episode)
    return KeyedOutcome(key, RULE, state, (RuleResolved(at, episode),))


@pytest.fixture
def store(database_engine: Engine) -> SqlAlertStore:
    SqlAssetRepository(database_engine, FrozenClock(T0)).add(
        Asset(id=PUMP, name="Feed pump 17", type="pump", site="north")
    )
    return SqlAlertStore(database_engine, policy=POLICY)


@pytest.fixture
def orders(database_engine: Engine) -> SqlWorkOrderRepository:
    return SqlWorkOrderRepository(database_engine)


def count(engine: Engine, table: Table, *where: Any) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
        )


def audit(engine: Engine, order_id: int) -> list[tuple[str, str | None, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                work_order_events.c.actor,
                work_order_events.c.from_status,
                work_order_events.c.to_status,
            )
            .where(work_order_events.c.work_order_id == order_id)
            .order_by(work_order_events.c.id)
        )
        return [(row.actor, row.from_status, row.to_status) for row in rows]


def predictive(orders: SqlWorkOrderRepository) -> list[int]:
    return [o.id for o in orders.list(kind=WorkOrderKind.PREDICTIVE)]


def test_the_sql_classes_implement_the_ports(database_engine: Engine) -> None:
    store: AlertStore = SqlAlertStore(database_engine)
    repo: WorkOrderRepository = SqlWorkOrderRepository(database_engine)
    fake_store: AlertStore = InMemoryAlertStore()
    fake_repo: WorkOrderRepository = InMemoryWorkOrderRepository()
    assert store.list_alerts() == fake_store.list_alerts() == []
    assert repo.list() == fake_repo.list() == []


def test_states_round_trip_without_their_windows(store: SqlAlertStore) -> None:
    pending = RuleState(Status.PENDING, ms(T0), ms(T0) - 5000, None, None, 3, ((ms(T0), 8.0),))
    other = StateKey(RULE.id, "pump-18", "vibration_mm_s")
    cancelled = RuleState(Status.INACTIVE, ms(T0), None, None, None, 0)
    store.record(
        [
            KeyedOutcome(KEY, RULE, pending, (RulePending(T0, 8.0),)),
            KeyedOutcome(other, RULE, cancelled, (RuleCancelled(T0, "recovered"),)),
        ],
        T0,
    )
    assert store.load_states() == {KEY: pending._replace(window=()), other: cancelled}
    assert store.list_alerts() == []

    later = RuleState(Status.FIRING, ms(T0) + 1000, None, ms(T0) + 1000, ms(T0) + 900, 4)
    store.record([KeyedOutcome(KEY, RULE, later, ())], T0)
    assert store.load_states()[KEY] == later


def test_a_firing_opens_one_alert_and_one_linked_predictive_order(
    store: SqlAlertStore, orders: SqlWorkOrderRepository, database_engine: Engine
) -> None:
    recorded_at = T0 + timedelta(seconds=2)
    opened = store.record([firing(1, T0)], recorded_at)

    assert len(opened) == 1
    alert = opened[0]
    assert alert == store.get_alert(alert.id)
    assert (alert.rule_id, alert.asset_id, alert.metric) == KEY
    assert alert.status is AlertStatus.FIRING
    assert alert.severity is Severity.CRITICAL
    assert (alert.episode, alert.last_episode, alert.fire_count) == (1, 1, 1)
    assert (alert.fired_at, alert.recorded_at) == (T0, recorded_at)
    assert (alert.value, alert.threshold) == (9.3, 7.1)
    assert [(p.ts, p.value) for p in alert.evidence] == [
        (T0 - timedelta(minutes=1), 8.0),
        (T0, 9.3),
    ]
    # Neither suppressed nor flapping: what the caller pages for.
    assert not alert.suppressed
    assert not alert.flapping
    assert alert.work_order_id is not None

    order = orders.get(alert.work_order_id)
    assert order.kind is WorkOrderKind.PREDICTIVE
    assert order.status is WorkOrderStatus.REQUESTED
    assert order.priority is Priority.HIGH  # critical severity
    assert (order.rule_id, order.asset_id) == (RULE.id, PUMP)
    assert "Feed pump 17" in order.title
    assert "Feed pump 17 (pump-17) at north" in order.description
    assert "was 9.3" in order.description
    assert "threshold is 7.1" in order.description
    assert order.alert_ids == [alert.id]
    assert [(e.alert_id, e.value, e.fired_at, len(e.points)) for e in order.evidence] == [
        (alert.id, 9.3, T0, 2)
    ]
    assert (order.created_at, order.repeat_count) == (recorded_at, 0)
    assert audit(database_engine, order.id) == [("rules", None, "requested")]
    assert count(database_engine, work_orders, work_orders.c.open_key.is_not(None)) == 1


def test_an_unknown_asset_still_gets_an_order_named_by_its_id(
    store: SqlAlertStore, orders: SqlWorkOrderRepository
) -> None:
    stranger = StateKey(RULE.id, "pump-99", "vibration_mm_s")
    (alert,) = store.record([firing(1, T0, key=stranger)], T0)
    assert alert.work_order_id is not None
    assert "pump-99" in orders.get(alert.work_order_id).title


def test_replaying_recorded_outcomes_changes_nothing(
    store: SqlAlertStore, orders: SqlWorkOrderRepository, database_engine: Engine
) -> None:
    batch = [firing(1, T0), clearing(1, T0 + timedelta(minutes=1))]
    assert len(store.record(batch, T0)) == 1
    before = (store.list_alerts(), orders.list(), store.load_states())

    assert store.record(batch, T0 + timedelta(hours=1)) == []
    assert store.record([batch[0]], T0 + timedelta(hours=1)) == []
    assert (store.list_alerts(), orders.list()) == before[:2]
    assert count(database_engine, work_order_events) == 1


def test_a_later_episode_while_the_order_is_open_appends_to_it_with_a_new_alert(
    store: SqlAlertStore, orders: SqlWorkOrderRepository
) -> None:
    (first,) = store.record([firing(1, T0), clearing(1, T0 + timedelta(minutes=5))], T0)
    later = T0 + timedelta(hours=2)  # well past the flap window
    (second,) = store.record([firing(2, later, value=11.0)], later)

    assert second.id != first.id
    assert (second.episode, second.fire_count, second.flapping) == (2, 1, False)
    assert second.work_order_id == first.work_order_id
    assert first.work_order_id is not None
    order = orders.get(first.work_order_id)
    assert order.alert_ids == [first.id, second.id]
    assert [(e.alert_id, e.value) for e in order.evidence] == [(first.id, 9.3), (second.id, 11.0)]
    assert order.updated_at == later
    assert predictive(orders) == [order.id]


def test_a_later_episode_folds_into_an_alert_still_open(
    store: SqlAlertStore, orders: SqlWorkOrderRepository
) -> None:
    (first,) = store.record([firing(1, T0)], T0)
    store.acknowledge(first.id, "tech", "on my way", T0)
    # The resolution of episode 1 was never recorded (say, the rule was replaced meanwhile).
    later = T0 + timedelta(hours=1)
    assert store.record([firing(2, later, value=12.5)], later) == []  # nothing new to page

    (folded,) = store.list_alerts()
    assert folded.id == first.id
    assert (folded.episode, folded.last_episode, folded.fire_count) == (1, 2, 2)
    assert folded.status is AlertStatus.FIRING  # it fires again: acknowledge it again
    assert (folded.acknowledged_at, folded.acknowledged_by) == (None, None)
    assert (folded.value, folded.fired_at) == (12.5, later)
    assert not folded.flapping
    assert first.work_order_id is not None
    assert len(orders.get(first.work_order_id).evidence) == 2


def test_record_reports_each_alert_as_it_stood_right_after_firing(store: SqlAlertStore) -> None:
    # One batch: a spike that fires and clears, then flaps back.
    batch = [
        firing(1, T0),
        clearing(1, T0 + timedelta(minutes=1)),
        firing(2, T0 + timedelta(minutes=2)),
    ]
    opened, reopened = store.record(batch, T0)
    assert opened.id == reopened.id
    assert (opened.status, opened.fire_count, opened.flapping) == (AlertStatus.FIRING, 1, False)
    assert (reopened.fire_count, reopened.flapping) == (2, True)
    assert store.get_alert(opened.id) == reopened


def test_a_resolved_event_resolves_the_episodes_alert(store: SqlAlertStore) -> None:
    (alert,) = store.record([firing(1, T0)], T0)
    cleared_at = T0 + timedelta(minutes=3)
    store.record([clearing(1, cleared_at)], cleared_at + timedelta(seconds=1))

    resolved = store.get_alert(alert.id)
    assert resolved.status is AlertStatus.RESOLVED
    assert (resolved.resolved_at, resolved.resolved_by) == (cleared_at, None)
    # An alert resolved by hand keeps who resolved it and when.
    (other,) = store.record([firing(2, T0 + timedelta(hours=1))], T0 + timedelta(hours=1))
    by_hand = store.resolve(other.id, "tech", "replaced bearing", T0 + timedelta(hours=2))
    store.record([clearing(2, T0 + timedelta(hours=3))], T0 + timedelta(hours=3))
    assert store.get_alert(other.id) == by_hand
    assert by_hand.resolved_by == "tech"


def test_a_refire_within_the_flap_window_reopens_the_alert_as_flapping(
    store: SqlAlertStore, orders: SqlWorkOrderRepository
) -> None:
    (first,) = store.record([firing(1, T0), clearing(1, T0 + timedelta(minutes=1))], T0)
    again = T0 + timedelta(minutes=10)
    (reopened,) = store.record([firing(2, again)], again)

    assert reopened.id == first.id
    assert reopened.status is AlertStatus.FIRING
    assert reopened.flapping
    assert (reopened.fire_count, reopened.last_episode) == (2, 2)
    assert (reopened.resolved_at, reopened.resolved_by) == (None, None)
    assert [a.id for a in store.list_alerts()] == [first.id]
    assert first.work_order_id is not None
    assert orders.get(first.work_order_id).alert_ids == [first.id]

    # Past the window, the next firing is news again.
    store.record([clearing(2, again + timedelta(minutes=1))], again)
    late = again + timedelta(minutes=30)
    (fresh,) = store.record([firing(3, late)], late)
    assert fresh.id != first.id
    assert not fresh.flapping


def test_a_refire_after_a_hand_resolution_is_not_flapping(store: SqlAlertStore) -> None:
    (first,) = store.record([firing(1, T0)], T0)
    store.resolve(first.id, "tech", None, T0 + timedelta(minutes=1))
    store.record([clearing(1, T0 + timedelta(minutes=2))], T0)
    (fresh,) = store.record([firing(2, T0 + timedelta(minutes=5))], T0)
    assert fresh.id != first.id
    assert not fresh.flapping


def test_a_refire_after_the_order_was_resolved_reopens_it_within_the_window(
    store: SqlAlertStore, orders: SqlWorkOrderRepository, database_engine: Engine
) -> None:
    (first,) = store.record([firing(1, T0), clearing(1, T0 + timedelta(hours=1))], T0)
    assert first.work_order_id is not None
    order_id = first.work_order_id
    resolve(orders, order_id, "tech", "bearing greased", T0 + timedelta(hours=2))

    again = T0 + timedelta(days=3)
    (second,) = store.record([firing(2, again)], again)
    reopened = orders.get(order_id)
    assert second.work_order_id == order_id
    assert reopened.status is WorkOrderStatus.REOPENED
    assert reopened.repeat_count == 1
    assert (reopened.resolved_at, reopened.resolution_note) == (None, None)
    assert reopened.alert_ids == [first.id, second.id]
    assert len(reopened.evidence) == 2
    assert audit(database_engine, order_id)[-2:] == [
        ("tech", "in_progress", "resolved"),
        ("rules", "resolved", "reopened"),
    ]
    assert predictive(orders) == [order_id]

    # Resolved again, and the fault comes back after the window: a new order.
    resolve(orders, order_id, "tech", None, again + timedelta(hours=1))
    store.record([clearing(2, again + timedelta(hours=1))], again)
    much_later = again + timedelta(days=8)
    (third,) = store.record([firing(3, much_later)], much_later)
    assert third.work_order_id not in (None, order_id)
    assert predictive(orders) == [third.work_order_id, order_id]
    assert orders.get(order_id).status is WorkOrderStatus.RESOLVED
    assert orders.get(order_id).repeat_count == 1


def test_a_firing_on_an_asset_under_maintenance_is_suppressed_and_opens_no_order(
    store: SqlAlertStore, orders: SqlWorkOrderRepository
) -> None:
    repair = orders.create(
        NewWorkOrder(
            kind=WorkOrderKind.CORRECTIVE,
            priority=Priority.MEDIUM,
            asset_id=PUMP,
            title="Leak",
            request=REQUEST,
        ),
        T0,
        actor="planner",
    )
    start(orders, repair.id, "tech", T0)

    (alert,) = store.record([firing(1, T0 + timedelta(minutes=1))], T0 + timedelta(minutes=1))
    assert alert.suppressed
    assert alert.work_order_id is None
    assert predictive(orders) == []
    assert [o.id for o in orders.list()] == [repair.id]


def test_alert_acknowledge_and_resolve_and_the_illegal_moves(store: SqlAlertStore) -> None:
    (alert,) = store.record([firing(1, T0)], T0)
    at = T0 + timedelta(minutes=5)
    acked = store.acknowledge(alert.id, "tech", "looking", at)
    assert acked.status is AlertStatus.ACKNOWLEDGED
    assert (acked.acknowledged_at, acked.acknowledged_by, acked.note) == (at, "tech", "looking")
    assert store.get_alert(alert.id) == acked

    with pytest.raises(InvalidTransitionError) as refused:
        store.acknowledge(alert.id, "other", "me too", at + timedelta(minutes=1))
    assert refused.value.code == "invalid_transition"
    assert store.get_alert(alert.id) == acked

    resolved = store.resolve(alert.id, "tech", None, at + timedelta(minutes=2))
    assert resolved.status is AlertStatus.RESOLVED
    assert (resolved.resolved_at, resolved.resolved_by) == (at + timedelta(minutes=2), "tech")
    assert resolved.note == "looking"  # no new note: the old one stays
    for move in (store.resolve, store.acknowledge):
        with pytest.raises(InvalidTransitionError):
            move(alert.id, "other", "again", at + timedelta(minutes=3))
    assert store.get_alert(alert.id) == resolved

    (second,) = store.record([firing(2, T0 + timedelta(hours=1))], T0 + timedelta(hours=1))
    direct = store.resolve(second.id, "planner", "false alarm", T0 + timedelta(hours=2))
    assert (direct.status, direct.note) == (AlertStatus.RESOLVED, "false alarm")

    with pytest.raises(NotFoundError):
        store.acknowledge(999, "tech", None, at)
    with pytest.raises(NotFoundError):
        store.get_alert(999)


def test_work_order_create_start_resolve_and_the_illegal_moves(
    store: SqlAlertStore, orders: SqlWorkOrderRepository, database_engine: Engine
) -> None:
    new = NewWorkOrder(
        kind=WorkOrderKind.PREVENTIVE,
        priority=Priority.LOW,
        asset_id=PUMP,
        title="Annual service",
        description="Change the oil",
    )
    order = orders.create(new, T0, actor="planner")
    assert (order.kind, order.status, order.priority) == (
        WorkOrderKind.PREVENTIVE,
        WorkOrderStatus.REQUESTED,
        Priority.LOW,
    )
    assert (order.title, order.description, order.rule_id) == (
        "Annual service",
        "Change the oil",
        None,
    )
    assert (order.alert_ids, order.evidence, order.created_at) == ([], [], T0)
    assert orders.get(order.id) == order

    started = start(orders, order.id, "tech", T0 + timedelta(hours=1))
    assert (started.status, started.updated_at) == (
        WorkOrderStatus.IN_PROGRESS,
        T0 + timedelta(hours=1),
    )
    with pytest.raises(InvalidTransitionError):
        start(orders, order.id, "tech", T0 + timedelta(hours=2))
    assert orders.get(order.id) == started

    done = resolve(orders, order.id, "tech", "oil changed", T0 + timedelta(hours=3))
    assert done.status is WorkOrderStatus.RESOLVED
    assert (done.resolved_at, done.resolution_note) == (T0 + timedelta(hours=3), "oil changed")
    with pytest.raises(InvalidTransitionError):
        start(orders, order.id, "tech", T0 + timedelta(hours=4))
    with pytest.raises(InvalidTransitionError):
        resolve(orders, order.id, "tech", None, T0 + timedelta(hours=4))
    assert orders.get(order.id) == done
    assert audit(database_engine, order.id) == [
        ("planner", None, "requested"),
        ("tech", "requested", "accepted"),
        ("tech", "accepted", "in_progress"),
        ("tech", "in_progress", "resolved"),
    ]

    with pytest.raises(ValidationError):
        orders.create(new.model_copy(update={"kind": WorkOrderKind.PREDICTIVE}), T0)
    with pytest.raises(ValidationError):
        orders.create(new.model_copy(update={"asset_id": "nowhere"}), T0)
    with pytest.raises(NotFoundError):
        start(orders, 999, "tech", T0)
    with pytest.raises(NotFoundError):
        resolve(orders, 999, "tech", None, T0)
    assert [o.id for o in orders.list()] == [order.id]


def test_resolving_a_predictive_order_frees_its_open_key(
    store: SqlAlertStore, orders: SqlWorkOrderRepository, database_engine: Engine
) -> None:
    (alert,) = store.record([firing(1, T0)], T0)
    assert alert.work_order_id is not None
    start(orders, alert.work_order_id, "tech", T0)
    assert count(database_engine, work_orders, work_orders.c.open_key.is_not(None)) == 1
    resolve(orders, alert.work_order_id, "tech", None, T0)
    assert count(database_engine, work_orders, work_orders.c.open_key.is_not(None)) == 0


def test_a_stale_transition_loses_to_the_one_that_got_there_first(
    orders: SqlWorkOrderRepository, store: SqlAlertStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = orders.create(
        NewWorkOrder(
            kind=WorkOrderKind.CORRECTIVE,
            priority=Priority.HIGH,
            asset_id=PUMP,
            title="x",
            request=REQUEST,
        ),
        T0,
    )
    stale = orders.get(order.id)
    start(orders, order.id, "first", T0)
    # The second caller read the order before the first one started it.
    monkeypatch.setattr(orders, "get", lambda _order_id: stale)
    with pytest.raises(ConflictError) as lost:
        start(orders, order.id, "second", T0)
    assert lost.value.code == "conflict"
    monkeypatch.undo()
    assert orders.get(order.id).status is WorkOrderStatus.IN_PROGRESS


def test_concurrent_batches_open_one_predictive_order_per_rule_and_asset(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="storage.alerting")
    engine = create_engine_for(postgres_url)
    try:
        migrate(engine)
        store = SqlAlertStore(engine, policy=POLICY)
        # Both batches read "no open order" before either inserts one: the unique open_key
        # makes the second insert fail, and the store replays that batch as an append.
        barrier = threading.Barrier(2, timeout=10)
        calls = itertools.count()

        def decide_together(*args: Any, **kwargs: Any) -> Decision:
            if next(calls) < 2:
                barrier.wait()
            return decide(*args, **kwargs)

        monkeypatch.setattr("storage.alerting.decide", decide_together)
        keys = [StateKey(RULE.id, PUMP, "vibration_mm_s"), StateKey(RULE.id, PUMP, "vibration_x")]
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda key: store.record([firing(1, T0, key=key)], T0), keys))

        assert [len(opened) for opened in results] == [1, 1]
        repo = SqlWorkOrderRepository(engine)
        (order,) = repo.list()
        assert order.status is WorkOrderStatus.REQUESTED
        assert sorted(order.alert_ids) == sorted(r[0].id for r in results)
        assert {e.metric for e in order.evidence} == {"vibration_mm_s", "vibration_x"}
        assert count(engine, work_orders, work_orders.c.open_key.is_not(None)) == 1
        assert count(engine, work_order_events) == 1
        assert "lost a race" in caplog.text  # the constraint, not luck, kept it to one
    finally:
        engine.dispose()


@pytest.mark.parametrize("poison", ["null_metric", "long_rule_id"])
def test_record_is_all_or_nothing(
    store: SqlAlertStore, database_engine: Engine, database_url: str, poison: str
) -> None:
    if poison == "long_rule_id":
        if database_url.startswith("sqlite"):
            pytest.skip("SQLite does not enforce VARCHAR lengths")
        bad_key = StateKey("r" * 300, PUMP, "vibration_mm_s")
    else:
        bad_key = StateKey(RULE.id, "pump-18", cast(str, None))
    # The good outcome comes first: its state, alert and order are written before the failure.
    batch = [firing(1, T0), firing(1, T0, key=bad_key)]
    with pytest.raises(DBAPIError):
        store.record(batch, T0)
    for table in (rule_states, alerts, work_orders, work_order_events):
        assert count(database_engine, table) == 0, table.name
    # The same batch without the poison goes through.
    assert len(store.record(batch[:1], T0)) == 1


def test_alerts_and_work_orders_page_newest_first_with_filters(
    store: SqlAlertStore, orders: SqlWorkOrderRepository
) -> None:
    keys = [StateKey(RULE.id, f"pump-{n}", "vibration_mm_s") for n in range(1, 6)]
    opened = [store.record([firing(1, T0, key=key)], T0)[0] for key in keys]
    ids = [a.id for a in opened]
    store.acknowledge(ids[1], "tech", None, T0)

    first = store.list_alerts(limit=2)
    assert [a.id for a in first] == ids[::-1][:2]
    rest = store.list_alerts(before_id=first[-1].id, limit=10)
    assert [a.id for a in rest] == ids[::-1][2:]
    assert [a.id for a in store.list_alerts(status=AlertStatus.ACKNOWLEDGED)] == [ids[1]]
    assert [a.id for a in store.list_alerts(asset_id="pump-3")] == [ids[2]]
    assert store.list_alerts(rule_id="other") == []
    assert len(store.list_alerts(rule_id=RULE.id)) == 5

    order_ids = [a.work_order_id for a in opened]
    assert [o.id for o in orders.list(limit=2)] == order_ids[::-1][:2]
    assert [o.id for o in orders.list(before_id=order_ids[2], limit=10)] == order_ids[:2][::-1]
    assert [o.alert_ids for o in orders.list(asset_id="pump-2")] == [[ids[1]]]
    assert orders.list(kind=WorkOrderKind.CORRECTIVE) == []
    assert orders.list(status=WorkOrderStatus.IN_PROGRESS) == []
    assert len(orders.list(rule_id=RULE.id, status=WorkOrderStatus.REQUESTED)) == 5
    assert orders.list() == [orders.get(o) for o in order_ids[::-1] if o is not None]


def test_deleting_a_rule_deletes_its_states(store: SqlAlertStore, database_engine: Engine) -> None:
    rules = SqlRuleRepository(database_engine, FrozenClock(T0))
    other_rule = RULE.model_copy(update={"id": "other"})
    rules.add(RULE)
    rules.add(other_rule)
    other_key = StateKey("other", PUMP, "vibration_mm_s")
    store.record([firing(1, T0), KeyedOutcome(other_key, other_rule, RuleState(), ())], T0)
    assert set(store.load_states()) == {KEY, other_key}

    rules.delete(RULE.id)
    assert set(store.load_states()) == {other_key}
    with pytest.raises(NotFoundError):
        rules.delete(RULE.id)
    assert set(store.load_states()) == {other_key}
    assert len(store.list_alerts()) == 1  # history stays


def _scenario(
    store: AlertStore, repo: WorkOrderRepository, create_repair: Callable[[], int]
) -> list[Alert]:
    """Drive a store through every decision; return what each `record` reported."""
    day = timedelta(days=1)
    batches = [
        [firing(1, T0), clearing(1, T0 + timedelta(minutes=1))],
        [firing(2, T0 + timedelta(minutes=5))],  # flapping
        [clearing(2, T0 + timedelta(minutes=6))],
        None,  # the order is resolved by hand
        [firing(3, T0 + day)],  # reopens the order
        [firing(3, T0 + day)],  # a replay
        None,  # the alert is acknowledged
        [firing(4, T0 + 2 * day)],  # folds into the open alert, appends to the order
        None,  # a repair starts
        [firing(1, T0 + 3 * day, key=StateKey(RULE.id, PUMP, "vibration_x"))],  # suppressed
    ]
    reported: list[Alert] = []
    for step, batch in enumerate(batches):
        if batch is not None:
            reported += store.record(batch, T0 + step * day)
        elif step == 3:
            resolve(repo, 1, "tech", "fixed", T0 + timedelta(hours=1))
        elif step == 6:
            store.acknowledge(2, "tech", "seen", T0 + day)
        else:
            start(repo, create_repair(), "tech", T0 + 2 * day)
    store.resolve(2, "tech", None, T0 + 3 * day)
    return reported


def test_the_in_memory_fakes_decide_like_the_sql_store(
    store: SqlAlertStore, orders: SqlWorkOrderRepository
) -> None:
    fake_orders = InMemoryWorkOrderRepository(asset_ids=[PUMP])
    fake = InMemoryAlertStore(
        fake_orders,
        POLICY,
        {PUMP: Asset(id=PUMP, name="Feed pump 17", type="pump", site="north")},
    )
    repair = NewWorkOrder(
        kind=WorkOrderKind.CORRECTIVE,
        priority=Priority.HIGH,
        asset_id=PUMP,
        title="Leak",
        request=REQUEST,
    )
    at = T0 + timedelta(days=2)
    reported = _scenario(store, orders, lambda: orders.create(repair, at).id)
    assert _scenario(fake, fake_orders, lambda: fake_orders.create(repair, at).id) == reported
    assert [(a.id, a.fire_count, a.flapping, a.suppressed) for a in reported] == [
        (1, 1, False, False),
        (1, 2, True, False),
        (2, 1, False, False),
        (3, 1, False, True),
    ]

    assert fake.list_alerts() == store.list_alerts()
    assert fake_orders.list() == orders.list()
    assert fake.load_states() == store.load_states()
    listed = store.list_alerts()
    assert [(a.flapping, a.fire_count, a.suppressed) for a in listed] == [
        (False, 1, True),  # on the other metric, while the repair is in progress
        (False, 2, False),  # episode 3, with episode 4 folded in
        (True, 2, False),  # episodes 1 and 2
    ]
    assert orders.get(1).repeat_count == 1


def test_a_rule_deleted_and_created_again_fires_anew_although_its_episodes_restart(
    store: SqlAlertStore, orders: SqlWorkOrderRepository, database_engine: Engine
) -> None:
    rules = SqlRuleRepository(database_engine, FrozenClock(T0))
    rules.add(RULE)
    store.record([firing(1, T0), clearing(1, T0 + timedelta(minutes=1))], T0)
    store.record([firing(2, T0 + timedelta(hours=1))], T0)
    rules.delete(RULE.id)
    assert store.load_states() == {}
    [left_open] = [a for a in store.list_alerts() if a.note == "the rule was deleted"]
    assert left_open.status is AlertStatus.RESOLVED
    assert left_open.resolved_by == "system"
    rules.add(RULE)
    # The re-created rule counts episodes from 1 again; its firing is news all the same.
    later = T0 + timedelta(days=1)
    opened = store.record([firing(1, later)], later)
    assert [alert.fired_at for alert in opened] == [later]
    assert store.record([firing(1, later)], later) == []  # and its replay is not
    fired_at = sorted(alert.fired_at for alert in store.list_alerts())
    assert fired_at == [T0, T0 + timedelta(hours=1), later]
