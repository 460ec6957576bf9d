"""The work-order lifecycle over HTTP, on SQLite and PostgreSQL.

Every action is tried from every status: a legal one moves the order where the lifecycle
says, an illegal one answers 409 and changes nothing, not even the audit trail.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from core.assets import Asset
from tests.integration.test_api import NOW, Api, assert_problem, build_api
from tests.integration.test_api_alerts import get, post
from tests.support.workorders import REQUEST_JSON

COMPLETION = {
    "findings": "Shaft seal worn; replaced",
    "failure_code": "SEAL-WEAR",
    "labour_minutes": 95,
    "parts_used": [{"sku": "SEAL-40", "quantity": 1}],
    "downtime_minutes": 120,
}
SIGN_OFF = {"name": "A. Customer", "signed_at": "2026-11-22T15:00:00Z"}

# Written out from the lifecycle in DESIGN.md rather than imported from core: the test is
# the second opinion. (status, action) -> the status the action leads to; absent = 409.
LEGAL = {
    ("requested", "accept"): "accepted",
    ("requested", "cancel"): "cancelled",
    ("accepted", "schedule"): "scheduled",
    ("accepted", "start"): "in_progress",
    ("accepted", "hold"): "on_hold",
    ("accepted", "cancel"): "cancelled",
    ("scheduled", "start"): "in_progress",
    ("scheduled", "hold"): "on_hold",
    ("scheduled", "cancel"): "cancelled",
    ("in_progress", "hold"): "on_hold",
    ("in_progress", "resolve"): "resolved",
    ("on_hold", "resume"): "in_progress",  # back where it was held (see PATHS)
    ("on_hold", "cancel"): "cancelled",
    ("resolved", "close"): "closed",
    ("resolved", "reopen"): "reopened",
    ("reopened", "accept"): "accepted",
    ("reopened", "schedule"): "scheduled",
    ("reopened", "cancel"): "cancelled",
}
ACTIONS = (
    "accept",
    "schedule",
    "start",
    "hold",
    "resume",
    "resolve",
    "close",
    "cancel",
    "reopen",
)
# How a new order reaches each status.
PATHS = {
    "requested": [],
    "accepted": ["accept"],
    "scheduled": ["accept", "schedule"],
    "in_progress": ["accept", "start"],
    "on_hold": ["accept", "start", "hold"],
    "resolved": ["accept", "start", "resolve"],
    "closed": ["accept", "start", "resolve", "close"],
    "cancelled": ["cancel"],
    "reopened": ["accept", "start", "resolve", "reopen"],
}


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    for api in build_api(database_url):
        api.assets.add(Asset(id="pump-1", name="Feed pump 1", type="pump", site="north"))
        api.assets.add(
            Asset(id="chiller-9", name="Chiller 9", type="chiller", site="north", customer="ACME")
        )
        yield api


def body_for(action: str) -> dict[str, Any]:
    """Return a body every action accepts: a note, and completion data for a close."""
    body: dict[str, Any] = {"note": f"{action} for the test"}
    if action == "close":
        body["completion"] = COMPLETION
    return body


def new_order(api: Api, asset_id: str = "pump-1") -> int:
    order = {
        "kind": "corrective",
        "priority": "high",
        "asset_id": asset_id,
        "title": "Seal leaking",
        "request": REQUEST_JSON,
    }
    created = post(api, "/work-orders", role="planner", body=order)
    assert created.status_code == 201, created.text
    order_id: int = created.json()["id"]
    return order_id


def act(api: Api, order_id: int, action: str, body: Any = None, role: str = "admin") -> Any:
    return post(api, f"/work-orders/{order_id}/{action}", role=role, body=body)


def order_in(api: Api, status: str) -> int:
    order_id = new_order(api)
    for action in PATHS[status]:
        response = act(api, order_id, action, body_for(action))
        assert response.status_code == 200, (action, response.text)
    assert get(api, f"/work-orders/{order_id}").json()["status"] == status
    return order_id


def snapshot(api: Api, order_id: int) -> tuple[Any, Any]:
    return (
        get(api, f"/work-orders/{order_id}").json(),
        get(api, f"/work-orders/{order_id}/events").json(),
    )


@pytest.mark.parametrize("status", list(PATHS))
def test_every_action_from_every_status_moves_legally_or_answers_409(api: Api, status: str) -> None:
    for action in ACTIONS:
        order_id = order_in(api, status)
        before = snapshot(api, order_id)
        response = act(api, order_id, action, body_for(action))
        target = LEGAL.get((status, action))
        if target is None:
            assert_problem(response, 409, "invalid_transition")
            assert action in response.json()["detail"]
            assert snapshot(api, order_id) == before, (status, action)
            continue
        assert response.status_code == 200, (status, action, response.text)
        moved = response.json()
        assert moved["status"] == target, (status, action)
        events = get(api, f"/work-orders/{order_id}/events").json()["items"]
        assert len(events) == len(before[1]["items"]) + 1
        assert (events[-1]["from_status"], events[-1]["to_status"]) == (status, target)
        assert (events[-1]["actor"], events[-1]["note"]) == (
            "admin-token",
            f"{action} for the test",
        )
        assert moved["actions"] == [a for a in ACTIONS if (target, a) in LEGAL]


def test_resuming_goes_back_to_where_the_order_was_held(api: Api) -> None:
    for path, held in ((["accept"], "accepted"), (["accept", "schedule"], "scheduled")):
        order_id = new_order(api)
        for action in [*path, "hold"]:
            act(api, order_id, action, body_for(action))
        on_hold = get(api, f"/work-orders/{order_id}").json()
        assert (on_hold["status"], on_hold["held_from"]) == ("on_hold", held)
        resumed = act(api, order_id, "resume").json()
        assert (resumed["status"], resumed["held_from"]) == (held, None)


def test_hold_cancel_and_reopen_need_a_reason(api: Api) -> None:
    order_id = order_in(api, "in_progress")
    for action in ("hold", "cancel", "reopen"):
        for body in (None, {}, {"note": ""}):
            response = act(api, order_id, action, body)
            assert_problem(response, 422, "invalid")
    assert get(api, f"/work-orders/{order_id}").json()["status"] == "in_progress"


def test_closing_needs_the_completion_data(api: Api) -> None:
    order_id = order_in(api, "resolved")
    before = snapshot(api, order_id)
    refused = act(api, order_id, "close")
    assert_problem(refused, 409, "closure_refused")
    assert "completion" in refused.json()["detail"]
    assert snapshot(api, order_id) == before

    api.clock.at = NOW + timedelta(hours=3)
    closed = act(api, order_id, "close", {"completion": COMPLETION}).json()
    assert closed["status"] == "closed"
    assert closed["completion"] == COMPLETION
    assert closed["closed_at"].startswith("2026-11-22T15:00:00")


def test_completion_given_at_resolution_is_enough_to_close(api: Api) -> None:
    order_id = order_in(api, "in_progress")
    resolved = act(api, order_id, "resolve", {"note": "done", "completion": COMPLETION}).json()
    assert (resolved["status"], resolved["completion"]) == ("resolved", COMPLETION)
    assert act(api, order_id, "close").json()["status"] == "closed"


def test_a_customers_asset_needs_their_sign_off_to_close(api: Api) -> None:
    order_id = new_order(api, "chiller-9")
    for action in ("accept", "start", "resolve"):
        act(api, order_id, action)
    before = snapshot(api, order_id)
    refused = act(api, order_id, "close", {"completion": COMPLETION})
    assert_problem(refused, 409, "closure_refused")
    assert "ACME" in refused.json()["detail"]
    assert snapshot(api, order_id) == before
    closed = act(api, order_id, "close", {"completion": COMPLETION, "sign_off": SIGN_OFF}).json()
    assert closed["status"] == "closed"
    assert closed["sign_off"] == {"name": "A. Customer", "signed_at": "2026-11-22T15:00:00Z"}


def test_reopening_counts_a_repeat_failure(api: Api) -> None:
    order_id = order_in(api, "resolved")
    reopened = act(api, order_id, "reopen", {"note": "leaking again"}).json()
    assert (reopened["status"], reopened["repeat_count"], reopened["resolved_at"]) == (
        "reopened",
        1,
        None,
    )
    for action in ("accept", "start", "resolve", "reopen"):
        act(api, order_id, action, body_for(action))
    assert get(api, f"/work-orders/{order_id}").json()["repeat_count"] == 2


def test_bad_completion_data_and_details_an_action_does_not_take(api: Api) -> None:
    order_id = order_in(api, "in_progress")
    before = snapshot(api, order_id)
    for bad in (
        {**COMPLETION, "failure_code": "no spaces allowed"},
        {**COMPLETION, "labour_minutes": -1},
        {**COMPLETION, "parts_used": [{"sku": "SEAL-40", "quantity": 0}]},
        {key: value for key, value in COMPLETION.items() if key != "findings"},
    ):
        assert_problem(act(api, order_id, "resolve", {"completion": bad}), 422, "invalid")
    assert_problem(act(api, order_id, "hold", {"note": "x", "completion": COMPLETION}), 422)
    assert_problem(act(api, order_id, "resolve", {"sign_off": SIGN_OFF}), 422)
    naive = {"name": "A. Customer", "signed_at": "2026-11-22T15:00:00"}
    resolved_id = order_in(api, "resolved")
    assert_problem(
        act(api, resolved_id, "close", {"completion": COMPLETION, "sign_off": naive}), 422
    )
    assert snapshot(api, order_id) == before


def test_each_action_needs_its_role(api: Api) -> None:
    order_id = order_in(api, "accepted")
    before = snapshot(api, order_id)
    planner_only = ("accept", "schedule", "close", "cancel", "reopen")
    for action in ACTIONS:
        body = body_for(action)
        assert_problem(api.client.post(f"/api/v1/work-orders/{order_id}/{action}", json=body), 401)
        assert_problem(act(api, order_id, action, body, role="viewer"), 403, "forbidden")
        if action in planner_only:
            assert_problem(act(api, order_id, action, body, role="technician"), 403)
    assert snapshot(api, order_id) == before
    assert_problem(get(api, "/work-orders/999/events"), 404, "not_found")
    assert_problem(act(api, 999, "accept"), 404, "not_found")


def test_corrective_requests_are_kept_and_checked(api: Api) -> None:
    order_id = new_order(api)
    assert get(api, f"/work-orders/{order_id}").json()["request"] == REQUEST_JSON
    order = {"kind": "corrective", "priority": "low", "asset_id": "pump-1", "title": "Noise"}
    for request in (
        {**REQUEST_JSON, "contact_phone": None, "contact_email": None},
        {**REQUEST_JSON, "channel": "pigeon"},
        {**REQUEST_JSON, "impact": "catastrophic"},
        {**REQUEST_JSON, "fault": ""},
        {**REQUEST_JSON, "contact_email": "not-an-address"},
    ):
        response = post(api, "/work-orders", role="planner", body={**order, "request": request})
        assert_problem(response, 422, "invalid")
    preventive = {**order, "kind": "preventive", "request": REQUEST_JSON}
    assert_problem(post(api, "/work-orders", role="planner", body=preventive), 422, "invalid")


def test_lists_filter_by_priority_site_and_creation_time(api: Api) -> None:
    api.assets.add(Asset(id="fan-1", name="Fan 1", type="fan", site="south"))
    made: dict[str, int] = {}
    for hour, (name, asset_id, priority) in enumerate(
        (
            ("north-high", "pump-1", "high"),
            ("south-low", "fan-1", "low"),
            ("north-low", "pump-1", "low"),
        )
    ):
        api.clock.at = NOW + timedelta(hours=hour)
        order = {
            "kind": "preventive",
            "priority": priority,
            "asset_id": asset_id,
            "title": name,
        }
        made[name] = post(api, "/work-orders", role="planner", body=order).json()["id"]

    def listed(**params: Any) -> list[int]:
        response = get(api, "/work-orders", **params)
        assert response.status_code == 200, response.text
        return [o["id"] for o in response.json()["items"]]

    assert listed(priority="low") == [made["north-low"], made["south-low"]]
    assert listed(site="north") == [made["north-low"], made["north-high"]]
    assert listed(site="south", priority="low") == [made["south-low"]]
    assert listed(site="nowhere") == []
    start = (NOW + timedelta(hours=1)).isoformat()
    end = (NOW + timedelta(hours=2)).isoformat()
    assert listed(created_from=start) == [made["north-low"], made["south-low"]]
    assert listed(created_to=start) == [made["north-high"]]
    assert listed(created_from=start, created_to=end) == [made["south-low"]]
    for params in (
        {"priority": "urgent"},
        {"created_from": "2026-11-22T10:00:00"},  # no time zone
        {"created_from": end, "created_to": start},
        {"created_from": start, "created_to": start},
    ):
        assert_problem(get(api, "/work-orders", **params), 422, "invalid")
