"""An asset's history over HTTP: work orders, inspections and alerts in time order, paged."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from core.assets import Asset
from tests.integration.test_api import NOW, Api, assert_problem, build_api
from tests.integration.test_api_alerts import fire, get, post
from tests.support.workorders import REQUEST_JSON


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    for api in build_api(database_url):
        for n in (1, 2):
            api.assets.add(Asset(id=f"pump-{n}", name=f"Feed pump {n}", type="pump", site="north"))
        yield api


def open_order(api: Api, kind: str, asset_id: str = "pump-1") -> int:
    body: dict[str, Any] = {"kind": kind, "priority": "medium", "asset_id": asset_id, "title": kind}
    if kind == "corrective":
        body["request"] = REQUEST_JSON
    created = post(api, "/work-orders", role="planner", body=body)
    assert created.status_code == 201, created.text
    order_id: int = created.json()["id"]
    return order_id


def history(api: Api, asset_id: str = "pump-1", **params: Any) -> Any:
    response = get(api, f"/assets/{asset_id}/history", **params)
    assert response.status_code == 200, response.text
    return response.json()


def test_history_lists_every_transition_and_alert_in_time_order(api: Api) -> None:
    alert_id = fire(api)  # fired at NOW - 10 min; opens a predictive order at NOW
    api.clock.at = NOW + timedelta(hours=1)
    repair = open_order(api, "corrective")
    api.clock.at = NOW + timedelta(hours=2)
    post(api, f"/work-orders/{repair}/accept", role="planner")
    api.clock.at = NOW + timedelta(hours=3)
    inspection = open_order(api, "preventive")
    open_order(api, "corrective", asset_id="pump-2")  # another asset: not in this history
    fire(api, "pump-2")

    items = history(api)["items"]
    assert [(i["kind"], i["status"]) for i in items] == [
        ("alert", "firing"),
        ("work_order", "requested"),  # the predictive order the alert opened
        ("work_order", "requested"),
        ("work_order", "accepted"),
        ("inspection", "requested"),
    ]
    assert items[0]["alert_id"] == alert_id
    assert "fired on vibration_mm_s at 9.3 (threshold 7.1)" in items[0]["summary"]
    assert [i["work_order_id"] for i in items[2:]] == [repair, repair, inspection]
    assert (items[3]["actor"], items[3]["summary"]) == (
        "planner-token",
        f"corrective work order {repair} 'corrective': requested → accepted",
    )
    times = [i["at"] for i in items]
    assert times == sorted(times)


def test_history_pages_and_windows(api: Api) -> None:
    made = []
    for hour in range(7):
        api.clock.at = NOW + timedelta(hours=hour)
        made.append(open_order(api, "preventive"))
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = history(api, **params)
        seen += [i["work_order_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made
    window = history(
        api,
        start=(NOW + timedelta(hours=2)).isoformat(),
        end=(NOW + timedelta(hours=4)).isoformat(),
    )
    assert [i["work_order_id"] for i in window["items"]] == made[2:4]


def test_history_refuses_unknown_assets_and_bad_parameters(api: Api) -> None:
    assert_problem(get(api, "/assets/nobody/history"), 404, "not_found")
    for params in (
        {"cursor": "garbage"},
        {"cursor": "2026-11-22T14:00:00~1~5"},  # no time zone
        {"cursor": "2026-11-22T14:00:00+00:00~7~5"},
        {"limit": 0},
        {"start": "2026-11-22T15:00:00Z", "end": "2026-11-22T14:00:00Z"},
        {"start": "yesterday"},
    ):
        assert_problem(get(api, "/assets/pump-1/history", **params), 422, "invalid")
    assert_problem(api.client.get("/api/v1/assets/pump-1/history"), 401)
