"""Rule backtests over HTTP, on SQLite and PostgreSQL: answers, refusals, and no side effects."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

import api.routes.rules as rule_routes
from core.assets import Asset
from core.telemetry import Reading, datetime_to_ms
from tests.integration.test_api import NOW, Api, assert_problem, build_api

METRIC = "vibration_mm_s"
START = NOW - timedelta(hours=2)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    for api in build_api(database_url):
        for asset_id, type_ in (("pump-1", "pump"), ("pump-2", "pump"), ("fan-1", "fan")):
            api.assets.add(Asset(id=asset_id, name=asset_id, type=type_, site="north"))
        yield api


def rule(rule_id: str = "bearing-vibration", **overrides: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": "Bearing vibration high",
        "selector": {"metric": METRIC, "asset_type": "pump"},
        "condition": {"kind": "threshold", "comparison": "above", "threshold": 7.1, "clear": 6},
        "severity": "critical",
        "hold_for": "PT5M",
        **overrides,
    }


def store(api: Api, asset_id: str, values: list[float], first: datetime = START) -> None:
    """Store one reading a minute from `first`."""
    api.telemetry.write(
        [
            Reading(asset_id, METRIC, datetime_to_ms(first + i * MINUTE), value)
            for i, value in enumerate(values)
        ]
    )


def create(api: Api, body: dict[str, Any]) -> None:
    response = api.client.post("/api/v1/rules", json=body, headers=api.as_role("planner"))
    assert response.status_code == 201, response.text


def run(
    api: Api,
    rule_id: str = "bearing-vibration",
    role: str | None = "viewer",
    **params: Any,
) -> httpx.Response:
    query = {"start": START.isoformat(), "end": NOW.isoformat(), **params}
    response: httpx.Response = api.client.post(
        f"/api/v1/rules/{rule_id}/backtest",
        params={k: v for k, v in query.items() if v is not None},
        headers=api.as_role(role) if role else {},
    )
    return response


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


# 30 quiet minutes, 10 minutes at 8 (above 7.1), then back to 5 (below the clear of 6).
HOT_SPELL = [5.0] * 30 + [8.0] * 10 + [5.0] * 20


def test_a_threshold_rule_over_stored_telemetry(api: Api) -> None:
    create(api, rule())
    store(api, "pump-1", HOT_SPELL)
    store(api, "pump-2", [5.0] * 60)
    response = run(api)
    assert response.status_code == 200, response.text
    hot_from = START + 30 * MINUTE
    assert response.json() == {
        "rule_id": "bearing-vibration",
        "start": iso(START),
        "end": iso(NOW),
        "assets_evaluated": 2,
        "readings": 120,
        "alerts": [
            {
                "asset_id": "pump-1",
                "metric": METRIC,
                "fired_at": iso(hot_from + 5 * MINUTE),  # after hold_for
                "episode": 1,
                "value": 8.0,
                "threshold": 7.1,
                "predicted_crossing_at": None,
                "resolved_at": iso(hot_from + 10 * MINUTE),
                "fire_count": 1,
                "flapping": False,
            }
        ],
        "work_orders": [
            {
                "asset_id": "pump-1",
                "opened_at": iso(hot_from + 5 * MINUTE),
                "alert_count": 1,
                "priority": "high",
            }
        ],
        "alert_count": 1,
        "work_order_count": 1,
    }


def test_only_readings_in_the_range_count_and_times_come_back_in_utc(api: Api) -> None:
    create(api, rule(hold_for="PT0S"))
    store(api, "pump-1", HOT_SPELL)
    # From the middle of the hot spell, given in another zone: it is seen at the start.
    start = (START + 35 * MINUTE).astimezone(timezone(timedelta(hours=2)))
    body = run(api, start=start.isoformat(), end=(START + 45 * MINUTE).isoformat()).json()
    assert body["start"] == iso(START + 35 * MINUTE)
    assert body["readings"] == 10
    assert [(a["fired_at"], a["resolved_at"]) for a in body["alerts"]] == [
        (iso(START + 35 * MINUTE), iso(START + 40 * MINUTE))
    ]


def test_a_type_selector_picks_only_that_types_assets(api: Api) -> None:
    create(api, rule())
    store(api, "fan-1", HOT_SPELL)  # hot, but a fan
    store(api, "pump-2", HOT_SPELL)
    body = run(api).json()
    assert body["assets_evaluated"] == 2
    assert {a["asset_id"] for a in body["alerts"]} == {"pump-2"}
    assert [o["asset_id"] for o in body["work_orders"]] == ["pump-2"]


def test_an_asset_selector_uses_that_asset_and_a_disabled_draft_runs(api: Api) -> None:
    create(
        api,
        rule("fan-draft", selector={"metric": METRIC, "asset_id": "fan-1"}, enabled=False),
    )
    store(api, "fan-1", HOT_SPELL)
    store(api, "pump-1", HOT_SPELL)
    body = run(api, "fan-draft").json()
    assert body["assets_evaluated"] == 1
    assert [a["asset_id"] for a in body["alerts"]] == ["fan-1"]


def test_a_rule_that_never_fires_answers_empty_lists(api: Api) -> None:
    create(api, rule())
    store(api, "pump-1", [5.0] * 60)
    body = run(api).json()
    assert (body["alerts"], body["work_orders"], body["readings"]) == ([], [], 60)
    assert (body["alert_count"], body["work_order_count"]) == (0, 0)


def test_unknown_rule_is_404(api: Api) -> None:
    assert_problem(run(api, "no-such-rule"), 404, "not_found")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": iso(NOW), "end": iso(NOW)}, "start"),
        ({"start": iso(NOW), "end": iso(START)}, "start"),
        ({"start": None}, "start"),
        ({"end": None}, "end"),
        ({"start": "2026-11-22T10:00:00"}, "start"),  # naive
        ({"end": "yesterday"}, "end"),
        ({"start": iso(NOW - timedelta(days=31, seconds=1))}, "end"),  # too long a range
    ],
)
def test_bad_ranges_are_422(api: Api, params: dict[str, Any], field: str) -> None:
    create(api, rule())
    body = assert_problem(run(api, **params), 422, "invalid")
    assert ["query", field] in [error["location"] for error in body["errors"]], body


def test_the_longest_range_is_allowed(api: Api) -> None:
    create(api, rule())
    assert run(api, start=iso(NOW - timedelta(days=31))).status_code == 200


def test_too_many_readings_are_refused_not_cut_short(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(api, rule())
    store(api, "pump-1", HOT_SPELL)
    monkeypatch.setattr(rule_routes, "MAX_BACKTEST_POINTS_PER_ASSET", len(HOT_SPELL) - 1)
    body = assert_problem(run(api), 422, "invalid")
    assert "pump-1" in body["detail"]
    monkeypatch.setattr(rule_routes, "MAX_BACKTEST_POINTS_PER_ASSET", len(HOT_SPELL))
    assert run(api).status_code == 200


@pytest.mark.parametrize(
    ("limit", "value", "mentions"),
    [("MAX_BACKTEST_ASSETS", 1, "2 assets"), ("MAX_BACKTEST_READINGS", 100, "100 readings")],
)
def test_requests_over_the_whole_request_bounds_are_refused(
    api: Api, monkeypatch: pytest.MonkeyPatch, limit: str, value: int, mentions: str
) -> None:
    create(api, rule())
    store(api, "pump-1", HOT_SPELL)
    store(api, "pump-2", HOT_SPELL)
    monkeypatch.setattr(rule_routes, limit, value)
    body = assert_problem(run(api), 422, "invalid")
    assert mentions in body["detail"]


def test_viewers_may_backtest_and_anonymous_callers_may_not(api: Api) -> None:
    create(api, rule())
    for role in ("viewer", "technician", "planner", "admin"):
        assert run(api, role=role).status_code == 200, role
    assert_problem(run(api, role=None), 401)


def test_a_backtest_writes_nothing(api: Api) -> None:
    create(api, rule())
    store(api, "pump-1", HOT_SPELL)
    viewer = api.as_role("viewer")
    rule_before = api.client.get("/api/v1/rules/bearing-vibration", headers=viewer).json()
    points_before, writes_before = dict(api.telemetry.points), api.telemetry.writes
    assert run(api).json()["alert_count"] == 1  # it would have alerted
    assert api.alerts.list_alerts() == []
    assert api.alerts.load_states() == {}
    assert api.work_orders.list() == []
    assert (dict(api.telemetry.points), api.telemetry.writes) == (points_before, writes_before)
    rule_after = api.client.get("/api/v1/rules/bearing-vibration", headers=viewer).json()
    assert rule_after == rule_before
