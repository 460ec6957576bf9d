"""Alerts and work orders over HTTP, on SQLite and PostgreSQL; refusals as problem+json."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from core.assets import Asset
from core.telemetry import datetime_to_ms
from rules.engine import KeyedOutcome, StateKey
from rules.evaluate import RuleFired, RuleState, Status
from rules.model import Comparison, Rule, Selector, Severity, Threshold
from tests.integration.test_api import NOW, Api, assert_problem, build_api
from tests.support.workorders import REQUEST_JSON

RULE = Rule(
    id="bearing-vibration",
    name="Bearing vibration high",
    selector=Selector(metric="vibration_mm_s", asset_type="pump"),
    condition=Threshold(comparison=Comparison.ABOVE, threshold=7.1, clear=6.0),
    severity=Severity.WARNING,
)


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    for api in build_api(database_url):
        for n in (1, 2, 3):
            api.assets.add(Asset(id=f"pump-{n}", name=f"Feed pump {n}", type="pump", site="north"))
        yield api


def fire(api: Api, asset_id: str = "pump-1", episode: int = 1, value: float = 9.3) -> int:
    """Record a firing through the alert store, as ingest would; return the alert id."""
    at = NOW - timedelta(minutes=10)
    ts = datetime_to_ms(at)
    state = RuleState(Status.FIRING, ts, None, ts, None, episode)
    event = RuleFired(at, episode, value, 7.1, ((ts - 60_000, 8.0), (ts, value)))
    key = StateKey(RULE.id, asset_id, "vibration_mm_s")
    (alert,) = api.alerts.record([KeyedOutcome(key, RULE, state, (event,))], NOW)
    return alert.id


def get(api: Api, path: str, role: str = "viewer", **params: Any) -> httpx.Response:
    response: httpx.Response = api.client.get(
        f"/api/v1{path}", params=params, headers=api.as_role(role)
    )
    return response


def post(api: Api, path: str, role: str = "technician", body: Any = None) -> httpx.Response:
    response: httpx.Response = api.client.post(
        f"/api/v1{path}", json=body, headers=api.as_role(role)
    )
    return response


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


# --- alerts ---------------------------------------------------------------------------


def test_an_alert_reads_with_its_evidence_and_work_order(api: Api) -> None:
    alert_id = fire(api)
    response = get(api, f"/alerts/{alert_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == alert_id
    assert (body["rule_id"], body["asset_id"], body["metric"]) == (
        RULE.id,
        "pump-1",
        "vibration_mm_s",
    )
    assert (body["status"], body["severity"], body["value"], body["threshold"]) == (
        "firing",
        "warning",
        9.3,
        7.1,
    )
    assert when(body["fired_at"]) == NOW - timedelta(minutes=10)
    assert body["fired_at"].endswith("Z")
    assert when(body["recorded_at"]) == NOW
    assert [(when(p["ts"]), p["value"]) for p in body["evidence"]] == [
        (NOW - timedelta(minutes=11), 8.0),
        (NOW - timedelta(minutes=10), 9.3),
    ]
    assert (body["suppressed"], body["flapping"], body["fire_count"]) == (False, False, 1)
    assert body["acknowledged_by"] is None
    assert body["resolved_by"] is None

    order = get(api, f"/work-orders/{body['work_order_id']}").json()
    assert (order["kind"], order["status"], order["priority"]) == (
        "predictive",
        "requested",
        "medium",
    )
    assert order["rule_id"] == RULE.id
    assert order["alert_ids"] == [alert_id]
    assert "Feed pump 1" in order["title"]
    (evidence,) = order["evidence"]
    assert (evidence["alert_id"], evidence["metric"], evidence["value"]) == (
        alert_id,
        "vibration_mm_s",
        9.3,
    )
    assert len(evidence["points"]) == 2


def test_alerts_list_newest_first_by_pages_and_filters(api: Api) -> None:
    ids = [fire(api, f"pump-{n}") for n in (1, 2, 3)]
    post(api, f"/alerts/{ids[0]}/acknowledge")

    first = get(api, "/alerts", limit=2).json()
    assert [a["id"] for a in first["items"]] == [ids[2], ids[1]]
    assert first["next_cursor"] == str(ids[1])
    rest = get(api, "/alerts", limit=2, cursor=first["next_cursor"]).json()
    assert [a["id"] for a in rest["items"]] == [ids[0]]
    assert rest["next_cursor"] is None

    def listed(**params: Any) -> list[int]:
        return [a["id"] for a in get(api, "/alerts", **params).json()["items"]]

    assert listed(status="acknowledged") == [ids[0]]
    assert listed(status="firing") == [ids[2], ids[1]]
    assert listed(asset_id="pump-2") == [ids[1]]
    assert listed(rule_id=RULE.id) == ids[::-1]
    assert listed(rule_id="other") == []


def test_acknowledge_then_resolve_and_the_illegal_moves_change_nothing(api: Api) -> None:
    alert_id = fire(api)
    acked = post(api, f"/alerts/{alert_id}/acknowledge", body={"note": "on my way"})
    assert acked.status_code == 200, acked.text
    body = acked.json()
    assert (body["status"], body["acknowledged_by"], body["note"]) == (
        "acknowledged",
        "technician-token",
        "on my way",
    )
    assert when(body["acknowledged_at"]) == NOW

    again = post(api, f"/alerts/{alert_id}/acknowledge", role="planner", body={"note": "me"})
    problem = assert_problem(again, 409, "invalid_transition")
    assert "acknowledged" in problem["detail"]
    assert get(api, f"/alerts/{alert_id}").json() == body

    resolved = post(api, f"/alerts/{alert_id}/resolve")  # no body: the note stays
    assert resolved.status_code == 200, resolved.text
    done = resolved.json()
    assert (done["status"], done["resolved_by"], done["note"]) == (
        "resolved",
        "technician-token",
        "on my way",
    )
    for action in ("resolve", "acknowledge"):
        assert_problem(post(api, f"/alerts/{alert_id}/{action}"), 409, "invalid_transition")
    assert get(api, f"/alerts/{alert_id}").json() == done

    # A firing alert can be resolved directly, by any role from technician up.
    other = fire(api, "pump-2")
    admin = post(api, f"/alerts/{other}/resolve", role="admin", body={"note": "false alarm"})
    assert (admin.json()["status"], admin.json()["resolved_by"]) == ("resolved", "admin-token")


def test_alert_roles_unknown_ids_and_bad_input(api: Api) -> None:
    alert_id = fire(api)
    before = get(api, f"/alerts/{alert_id}").json()

    assert_problem(api.client.get("/api/v1/alerts"), 401, "unauthorized")
    assert_problem(api.client.get(f"/api/v1/alerts/{alert_id}"), 401, "unauthorized")
    assert_problem(api.client.post(f"/api/v1/alerts/{alert_id}/acknowledge"), 401, "unauthorized")
    for action in ("acknowledge", "resolve"):
        refused = post(api, f"/alerts/{alert_id}/{action}", role="viewer")
        assert_problem(refused, 403, "forbidden")
    assert get(api, f"/alerts/{alert_id}").json() == before

    for path in ("/alerts/999", "/alerts/999/acknowledge", "/alerts/999/resolve"):
        call = get if not path.endswith(("acknowledge", "resolve")) else post
        assert_problem(call(api, path), 404, "not_found")

    for bad in ("abc", "0", "-1", str(2**63)):
        assert_problem(get(api, f"/alerts/{bad}"), 422, "invalid")
        assert_problem(post(api, f"/alerts/{bad}/acknowledge"), 422, "invalid")
    for params in (
        {"status": "burning"},
        {"limit": 0},
        {"limit": 501},
        {"cursor": "x"},
        {"cursor": 0},
        {"cursor": 2**63},
        {"asset_id": "a" * 129},
    ):
        assert_problem(get(api, "/alerts", **params), 422, "invalid")
    assert_problem(
        post(api, f"/alerts/{alert_id}/acknowledge", body={"note": "x", "extra": 1}), 422
    )
    assert_problem(post(api, f"/alerts/{alert_id}/resolve", body={"note": "x" * 10_001}), 422)
    assert get(api, f"/alerts/{alert_id}").json() == before


# --- work orders ----------------------------------------------------------------------


LEAK = {
    "kind": "corrective",
    "priority": "high",
    "asset_id": "pump-2",
    "title": "Seal leaking",
    "description": "Drips under the pump",
    "request": REQUEST_JSON,
}


def test_create_read_start_resolve_a_work_order(api: Api) -> None:
    created = post(api, "/work-orders", role="planner", body=LEAK)
    assert created.status_code == 201, created.text
    body = created.json()
    assert created.headers["location"].endswith(f"/api/v1/work-orders/{body['id']}")
    assert {name: body[name] for name in LEAK} == LEAK
    assert (body["status"], body["rule_id"], body["alert_ids"], body["evidence"]) == (
        "requested",
        None,
        [],
        [],
    )
    assert when(body["created_at"]) == NOW
    assert api.client.get(created.headers["location"], headers=api.as_role("viewer")).json() == (
        body
    )

    api.clock.at = NOW + timedelta(hours=1)
    assert_problem(post(api, f"/work-orders/{body['id']}/start"), 409, "invalid_transition")
    assert post(api, f"/work-orders/{body['id']}/accept", role="planner").status_code == 200
    started = post(api, f"/work-orders/{body['id']}/start")
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "in_progress"
    assert when(started.json()["updated_at"]) == NOW + timedelta(hours=1)
    assert_problem(post(api, f"/work-orders/{body['id']}/start"), 409, "invalid_transition")
    assert get(api, f"/work-orders/{body['id']}").json() == started.json()

    resolved = post(api, f"/work-orders/{body['id']}/resolve", body={"note": "new seal"})
    assert resolved.status_code == 200, resolved.text
    done = resolved.json()
    assert (done["status"], done["resolution_note"]) == ("resolved", "new seal")
    assert when(done["resolved_at"]) == NOW + timedelta(hours=1)
    for action in ("start", "resolve"):
        assert_problem(post(api, f"/work-orders/{body['id']}/{action}"), 409, "invalid_transition")
    assert get(api, f"/work-orders/{body['id']}").json() == done

    preventive = post(
        api, "/work-orders", role="admin", body={**LEAK, "kind": "preventive", "request": None}
    )
    assert preventive.status_code == 201
    assert preventive.json()["description"] == LEAK["description"]
    minimal = {"kind": "corrective", "priority": "low", "asset_id": "pump-1", "title": "Noise"}
    assert_problem(post(api, "/work-orders", role="planner", body=minimal), 422, "invalid")
    reported = {**minimal, "request": REQUEST_JSON}
    assert post(api, "/work-orders", role="planner", body=reported).json()["description"] == ""


def test_work_orders_list_newest_first_by_pages_and_filters(api: Api) -> None:
    made = [post(api, "/work-orders", role="planner", body=LEAK).json()["id"] for _ in range(3)]
    alert_id = fire(api, "pump-3")
    predictive = get(api, f"/alerts/{alert_id}").json()["work_order_id"]
    post(api, f"/work-orders/{made[0]}/accept", role="planner")
    post(api, f"/work-orders/{made[0]}/start")

    first = get(api, "/work-orders", limit=3).json()
    assert [o["id"] for o in first["items"]] == [predictive, made[2], made[1]]
    rest = get(api, "/work-orders", limit=3, cursor=first["next_cursor"]).json()
    assert [o["id"] for o in rest["items"]] == [made[0]]
    assert rest["next_cursor"] is None

    def listed(**params: Any) -> list[int]:
        return [o["id"] for o in get(api, "/work-orders", **params).json()["items"]]

    assert listed(kind="predictive") == [predictive]
    assert listed(kind="corrective", status="requested") == [made[2], made[1]]
    assert listed(status="in_progress") == [made[0]]
    assert listed(asset_id="pump-3") == [predictive]
    assert listed(rule_id=RULE.id) == [predictive]
    for params in ({"kind": "magic"}, {"status": "done"}, {"cursor": -1}, {"limit": 0}):
        assert_problem(get(api, "/work-orders", **params), 422, "invalid")


def test_work_order_roles_unknown_ids_and_bad_input(api: Api) -> None:
    order_id = post(api, "/work-orders", role="planner", body=LEAK).json()["id"]
    before = get(api, f"/work-orders/{order_id}").json()

    assert_problem(api.client.post("/api/v1/work-orders", json=LEAK), 401, "unauthorized")
    assert_problem(post(api, "/work-orders", role="technician", body=LEAK), 403, "forbidden")
    for action in ("start", "resolve"):
        assert_problem(post(api, f"/work-orders/{order_id}/{action}", role="viewer"), 403)
    assert get(api, f"/work-orders/{order_id}").json() == before

    for path in ("/work-orders/999", "/work-orders/999/start", "/work-orders/999/resolve"):
        call = get if path == "/work-orders/999" else post
        assert_problem(call(api, path), 404, "not_found")
    for bad in ("abc", "0", str(2**63)):
        assert_problem(get(api, f"/work-orders/{bad}"), 422, "invalid")
        assert_problem(post(api, f"/work-orders/{bad}/start"), 422, "invalid")

    for changes, mentions in (
        ({"kind": "predictive"}, "kind"),
        ({"asset_id": "pump-99"}, "pump-99"),
        ({"asset_id": "bad id!"}, "asset_id"),
        ({"title": ""}, "title"),
        ({"priority": "urgent"}, "priority"),
        ({"surprise": 1}, "surprise"),
    ):
        refused = post(api, "/work-orders", role="planner", body={**LEAK, **changes})
        assert_problem(refused, 422, "invalid")
        assert mentions in refused.text
    assert_problem(
        post(api, f"/work-orders/{order_id}/resolve", body={"note": "x", "extra": 1}), 422
    )
    assert [o["id"] for o in get(api, "/work-orders").json()["items"]] == [order_id]
    assert get(api, f"/work-orders/{order_id}").json() == before


def test_openapi_documents_the_new_routes(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/alerts", "/api/v1/alerts/{alert_id}/acknowledge"} <= set(paths)
    conflict = paths["/api/v1/work-orders/{order_id}/start"]["post"]["responses"]["409"]
    assert set(conflict["content"]) == {"application/problem+json"}
