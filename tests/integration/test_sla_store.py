"""SLA deadlines stored with each work order, actual times, and breaches flagged exactly once.

Over the API and the real SQL store (SQLite and PostgreSQL), with a frozen clock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.assets import Asset
from core.errors import StoreUnavailableError
from core.workorders import Escalation
from storage.alerting import SqlWorkOrderRepository
from storage.db import create_engine_for
from tests.integration.test_api import NOW, Api, assert_problem, build_api
from tests.integration.test_api_alerts import get, post, when

ACME_HOURS = {
    "kind": "business",
    "time_zone": "Europe/Berlin",
    "week": {
        day: [{"start": "08:00", "end": "17:00"}] for day in ("mon", "tue", "wed", "thu", "fri")
    },
}


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    for api in build_api(database_url):
        api.assets.add(Asset(id="pump-1", name="Pump 1", type="pump", site="north"))
        api.assets.add(
            Asset(id="chiller-9", name="Chiller 9", type="chiller", site="berlin", customer="ACME")
        )
        yield api


def open_order(api: Api, priority: str, asset_id: str = "pump-1") -> dict[str, Any]:
    body = {"kind": "preventive", "priority": priority, "asset_id": asset_id, "title": priority}
    created = post(api, "/work-orders", role="planner", body=body)
    assert created.status_code == 201, created.text
    order: dict[str, Any] = created.json()
    return order


def due(order: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        None if order[name] is None else when(order[name]) - NOW
        for name in ("response_due_at", "on_site_due_at", "resolution_due_at")
    )


def test_deadlines_are_stored_from_the_default_policy_at_creation(api: Api) -> None:
    assert due(open_order(api, "critical")) == (
        timedelta(minutes=15),
        timedelta(hours=8),
        timedelta(hours=24),
    )
    assert due(open_order(api, "high")) == (timedelta(hours=1), None, None)
    assert due(open_order(api, "medium")) == (timedelta(hours=2), None, None)
    assert due(open_order(api, "low")) == (timedelta(hours=24), None, None)


def test_a_customers_override_counts_business_hours_across_a_dst_change(api: Api) -> None:
    override = {"targets": {"low": {"response": "PT8H", "hours": ACME_HOURS}}}
    response = api.client.put(
        "/api/v1/sla/overrides/ACME", json=override, headers=api.as_role("admin")
    )
    assert response.status_code == 200, response.text
    assert response.json()["targets"]["low"]["response"] == "PT8H"
    assert_problem(
        api.client.put("/api/v1/sla/overrides/ACME", json=override, headers=api.as_role("planner")),
        403,
    )
    # Friday 27 March 2026, 16:00 in Berlin (15:00 UTC): one working hour left that day.
    # Berlin moves to summer time on Sunday 29 March, so Monday opens at 08:00 CEST (06:00
    # UTC) and the remaining 7 hours end at 15:00 CEST, 13:00 UTC.
    api.clock.at = datetime(2026, 3, 27, 15, 0, tzinfo=UTC)
    order = open_order(api, "low", asset_id="chiller-9")
    assert when(order["response_due_at"]) == datetime(2026, 3, 30, 13, 0, tzinfo=UTC)
    # Other customers, and the other ACME priorities, keep the defaults.
    plain = open_order(api, "low")
    assert when(plain["response_due_at"]) == api.clock.at + timedelta(hours=24)
    critical = open_order(api, "critical", asset_id="chiller-9")
    assert when(critical["response_due_at"]) == api.clock.at + timedelta(minutes=15)
    policy = get(api, "/sla/policy", customer="ACME").json()
    assert policy["targets"]["low"]["hours"]["time_zone"] == "Europe/Berlin"
    bad: dict[str, Any]
    for bad in (
        {"targets": {"low": {"response": "-PT1H"}}},
        {"targets": {"urgent": {}}},
        {"targets": {"low": {"hours": {**ACME_HOURS, "time_zone": "Mars/Olympus"}}}},
    ):
        refused = api.client.put(
            "/api/v1/sla/overrides/ACME", json=bad, headers=api.as_role("admin")
        )
        assert_problem(refused, 422, "invalid")


def test_actual_times_are_recorded_as_the_order_moves(api: Api) -> None:
    order = open_order(api, "high")
    api.clock.at = NOW + timedelta(minutes=20)
    accepted = post(api, f"/work-orders/{order['id']}/accept", role="planner").json()
    api.clock.at = NOW + timedelta(hours=3)
    started = post(api, f"/work-orders/{order['id']}/start").json()
    assert when(started["responded_at"]) == NOW + timedelta(minutes=20)
    assert when(started["arrived_at"]) == NOW + timedelta(hours=3)
    assert accepted["breaches"] == []
    assert not started["breached"]


def test_a_breach_is_flagged_once_however_often_the_watch_sweeps(api: Api) -> None:
    order = open_order(api, "critical")
    assert api.work_orders.sweep_breaches(NOW + timedelta(minutes=15)) == []  # due, not late
    first = api.work_orders.sweep_breaches(NOW + timedelta(minutes=16))
    assert [(e.work_order_id, e.breach.value) for e in first] == [(order["id"], "response")]
    assert api.work_orders.sweep_breaches(NOW + timedelta(minutes=30)) == []
    flagged = get(api, f"/work-orders/{order['id']}").json()
    assert (flagged["breaches"], flagged["breached"]) == (["response"], True)

    # Answered late, on site late: the on-site breach is flagged by the transition itself.
    api.clock.at = NOW + timedelta(hours=9)
    post(api, f"/work-orders/{order['id']}/accept", role="planner")
    started = post(api, f"/work-orders/{order['id']}/start").json()
    assert started["breaches"] == ["on_site", "response"]
    assert api.work_orders.sweep_breaches(NOW + timedelta(hours=10)) == []
    escalations = get(api, "/escalations", work_order_id=order["id"]).json()["items"]
    assert [(e["breach"], when(e["due_at"]) - NOW) for e in escalations] == [
        ("on_site", timedelta(hours=8)),
        ("response", timedelta(minutes=15)),
    ]
    resolved = post(api, f"/work-orders/{order['id']}/resolve").json()
    assert resolved["breaches"] == ["on_site", "response"]  # resolved within 24 h: on time


def test_racing_watches_escalate_each_breach_once(api: Api, database_url: str) -> None:
    orders = [open_order(api, "critical")["id"] for _ in range(5)]
    engines = [create_engine_for(database_url) for _ in range(4)]
    found: list[Escalation] = []
    barrier = threading.Barrier(len(engines))

    def sweep(engine: Any) -> None:
        barrier.wait()
        for _ in range(50):  # as the watch does: a sweep that lost the lock runs again
            try:
                found.extend(
                    SqlWorkOrderRepository(engine).sweep_breaches(NOW + timedelta(hours=25))
                )
                return
            except StoreUnavailableError:
                continue
        raise AssertionError("a sweep never got the database")

    threads = [threading.Thread(target=sweep, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.dispose()
    assert sorted((e.work_order_id, e.breach.value) for e in found) == sorted(
        (order_id, breach)
        for order_id in orders
        for breach in ("on_site", "resolution", "response")
    )
    assert len(get(api, "/escalations", limit=100).json()["items"]) == 15
