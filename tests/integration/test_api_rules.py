"""Rule CRUD over HTTP, on SQLite and PostgreSQL; invalid rules refused with problem+json."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.test_api import Api, assert_problem, build_api


@pytest.fixture
def rules_api(database_url: str) -> Iterator[Api]:
    yield from build_api(database_url)


def _rule(rule_id: str = "bearing-vibration", **overrides: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": "Bearing vibration high",
        "selector": {"metric": "vibration_mm_s", "asset_type": "pump"},
        "condition": {"kind": "threshold", "comparison": "above", "threshold": 7.1, "clear": 6},
        "severity": "critical",
        "hold_for": "PT5M",
        **overrides,
    }


def test_create_read_replace_list_delete(rules_api: Api) -> None:
    planner = rules_api.as_role("planner")
    created = rules_api.client.post("/api/v1/rules", json=_rule(), headers=planner)
    assert created.status_code == 201, created.text
    assert created.headers["location"].endswith("/api/v1/rules/bearing-vibration")
    body = created.json()
    assert body["condition"] == {
        "kind": "threshold",
        "comparison": "above",
        "threshold": 7.1,
        "clear": 6.0,
    }
    assert body["hold_for"] == "PT5M"

    viewer = rules_api.as_role("viewer")
    assert rules_api.client.get("/api/v1/rules/bearing-vibration", headers=viewer).json() == body

    trend = _rule(
        condition={
            "kind": "trend",
            "comparison": "above",
            "threshold": 7.1,
            "window": "PT1H",
            "horizon": "P2D",
        }
    )
    replaced = rules_api.client.put("/api/v1/rules/bearing-vibration", json=trend, headers=planner)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["condition"]["kind"] == "trend"
    assert replaced.json()["condition"]["horizon"] == "P2D"

    rules_api.client.post("/api/v1/rules", json=_rule("a-first"), headers=planner)
    page = rules_api.client.get("/api/v1/rules", params={"limit": 1}, headers=viewer).json()
    assert [r["id"] for r in page["items"]] == ["a-first"]
    rest = rules_api.client.get(
        "/api/v1/rules", params={"cursor": page["next_cursor"]}, headers=viewer
    ).json()
    assert [r["id"] for r in rest["items"]] == ["bearing-vibration"]
    assert rest["next_cursor"] is None

    deleted = rules_api.client.delete("/api/v1/rules/bearing-vibration", headers=planner)
    assert deleted.status_code == 204
    gone = rules_api.client.get("/api/v1/rules/bearing-vibration", headers=viewer)
    assert_problem(gone, 404, "not_found")


@pytest.mark.parametrize(
    ("overrides", "mentions"),
    [
        (
            {"condition": {"kind": "threshold", "comparison": "above", "threshold": 7, "clear": 8}},
            "clear threshold 8.0 is above the firing threshold 7.0",
        ),
        ({"hold_for": "-PT5M"}, "hold_for must not be negative"),
        ({"condition": {"kind": "outside", "low": 5, "high": 1}}, "must be below high"),
        ({"condition": {"kind": "no_data", "silence": "PT0S"}}, "silence must be positive"),
        ({"condition": {"kind": "median"}}, "kind"),
        ({"selector": {"metric": "9 lives"}}, "metric"),
        ({"surprise": 1}, "surprise"),
        ({"id": "bad id!"}, "id"),
    ],
)
def test_invalid_rules_are_refused_with_what_is_wrong(
    rules_api: Api, overrides: dict[str, Any], mentions: str
) -> None:
    answer = rules_api.client.post(
        "/api/v1/rules", json=_rule(**overrides), headers=rules_api.as_role("planner")
    )
    problem = assert_problem(answer, 422)
    assert mentions in answer.text, problem
    listed = rules_api.client.get("/api/v1/rules", headers=rules_api.as_role("viewer")).json()
    assert listed["items"] == []  # nothing half-written


def test_conflicts_mismatches_and_roles(rules_api: Api) -> None:
    planner, viewer = rules_api.as_role("planner"), rules_api.as_role("viewer")
    assert rules_api.client.post("/api/v1/rules", json=_rule(), headers=planner).status_code == 201
    duplicate = rules_api.client.post("/api/v1/rules", json=_rule(), headers=planner)
    assert_problem(duplicate, 409, "conflict")
    mismatch = rules_api.client.put("/api/v1/rules/other", json=_rule(), headers=planner)
    assert_problem(mismatch, 422)
    missing = rules_api.client.put("/api/v1/rules/other", json=_rule("other"), headers=planner)
    assert_problem(missing, 404)
    assert_problem(rules_api.client.post("/api/v1/rules", json=_rule("x"), headers=viewer), 403)
    assert_problem(rules_api.client.delete("/api/v1/rules/bearing-vibration"), 401)
