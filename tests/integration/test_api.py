"""The HTTP API over real SQL repositories: assets, telemetry reads, dead letters, health."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from api.app import ApiServices, create_app
from api.dependencies import TokenCache
from core.auth import Role, TokenInfo
from core.clock import FrozenClock
from core.deadletters import DeadLetter
from core.telemetry import (
    Reading,
    datetime_to_ms,
)
from storage.alerting import SqlAlertStore, SqlWorkOrderRepository
from storage.db import create_engine_for, migrate
from storage.history import SqlAssetHistory
from storage.inventory import SqlInventoryRepository
from storage.plans import SqlBookingStore, SqlPlanRepository
from storage.repositories import (
    SqlAssetRepository,
    SqlDeadLetterRepository,
    SqlRuleRepository,
    SqlTokenRepository,
)
from storage.technicians import SqlTechnicianRepository
from tests.fakes import InMemoryTelemetryStore

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

PROBLEM = "application/problem+json"


@dataclass
class Api:
    """The app under test, with handles on its stores and one token per role."""

    client: TestClient
    clock: FrozenClock
    telemetry: InMemoryTelemetryStore
    assets: SqlAssetRepository
    deadletters: SqlDeadLetterRepository
    alerts: SqlAlertStore
    work_orders: SqlWorkOrderRepository
    inventory: SqlInventoryRepository
    technicians: SqlTechnicianRepository
    plans: SqlPlanRepository
    bookings: SqlBookingStore
    token_repo: SqlTokenRepository
    registry: CollectorRegistry
    readiness: dict[str, Callable[[], bool]]
    tokens: dict[str, str]

    def as_role(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def build_api(url: str, routers: Sequence[APIRouter] = ()) -> Iterator[Api]:
    """Yield the app over real SQL repositories on `url`, with one token per role."""
    engine = create_engine_for(url)
    migrate(engine)
    clock = FrozenClock(NOW)
    telemetry = InMemoryTelemetryStore()
    assets = SqlAssetRepository(engine, clock=clock)
    deadletters = SqlDeadLetterRepository(engine)
    alerts = SqlAlertStore(engine, clock)
    inventory = SqlInventoryRepository(engine, clock)
    technicians = SqlTechnicianRepository(engine, clock)
    plans = SqlPlanRepository(engine, clock)
    bookings = SqlBookingStore(engine, plans, technicians, clock)
    # Wired as the composition root does: a cancel or close settles the order's
    # reservations, and a cancel its booking.
    work_orders = SqlWorkOrderRepository(
        engine, on_transition=[inventory.settle_reservations, bookings.settle_booking]
    )
    token_repo = SqlTokenRepository(engine)
    registry = CollectorRegistry()
    readiness: dict[str, Callable[[], bool]] = {}
    services = ApiServices(
        assets=assets,
        deadletters=deadletters,
        telemetry=telemetry,
        tokens=token_repo,
        rules=SqlRuleRepository(engine, clock),
        alerts=alerts,
        work_orders=work_orders,
        history=SqlAssetHistory(engine),
        inventory=inventory,
        technicians=technicians,
        plans=plans,
        bookings=bookings,
        metrics_registry=registry,
        readiness_checks=readiness,
        clock=clock,
    )
    api = Api(
        client=TestClient(create_app(services, routers)),
        clock=clock,
        telemetry=telemetry,
        assets=assets,
        deadletters=deadletters,
        alerts=alerts,
        work_orders=work_orders,
        inventory=inventory,
        technicians=technicians,
        plans=plans,
        bookings=bookings,
        token_repo=token_repo,
        registry=registry,
        readiness=readiness,
        tokens={role.value: token_repo.create(role, f"{role.value}-token", NOW) for role in Role},
    )
    try:
        with api.client:
            yield api
    finally:
        engine.dispose()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from build_api(f"sqlite:///{tmp_path / 'api.db'}")


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    """Check that `response` is an RFC 9457 problem with `status`; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert isinstance(body["type"], str)
    assert body["type"]
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    if code is not None:
        assert body["code"] == code
        assert body["type"] == f"tag:pmkeeper,2026:problem:{code}"
    return body


def error_locations(body: dict[str, Any]) -> list[list[str | int]]:
    return [error["location"] for error in body["errors"]]


PUMP = {"id": "pump-17", "name": "Feed pump 17", "type": "centrifugal_pump", "site": "north"}


def create(api: Api, role: str = "planner", **fields: Any) -> httpx.Response:
    response: httpx.Response = api.client.post(
        "/api/v1/assets", json={**PUMP, **fields}, headers=api.as_role(role)
    )
    return response


# --- health, readiness, metrics, docs -------------------------------------------------


def test_healthz_needs_no_token(api: Api) -> None:
    response = api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_each_check(api: Api) -> None:
    api.readiness.update(database=lambda: True, telemetry=lambda: True)
    response = api.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": True, "telemetry": True}}


def test_readyz_answers_503_when_a_check_fails_or_raises(api: Api) -> None:
    def broken() -> bool:
        raise ConnectionError("refused")

    api.readiness.update(database=lambda: True, telemetry=lambda: False, broker=broken)
    response = api.client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": True, "telemetry": False, "broker": False},
    }


def test_metrics_exposes_the_registry_in_prometheus_format(api: Api) -> None:
    received = Counter("pmkeeper_messages_received", "Messages", registry=api.registry)
    received.inc(3)
    response = api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert "pmkeeper_messages_received_total 3.0" in response.text.splitlines()


def test_openapi_documents_problem_responses(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    post = schema["paths"]["/api/v1/assets"]["post"]
    assert set(post["responses"]["409"]["content"]) == {PROBLEM}
    assert set(post["responses"]["422"]["content"]) == {PROBLEM}
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert api.client.get("/docs").status_code == 200


def test_extra_routers_mount_under_api_v1(tmp_path: Path) -> None:
    extra = APIRouter(prefix="/widgets")

    @extra.get("")
    def widgets() -> dict[str, list[str]]:
        return {"items": ["w"]}

    for api in build_api(f"sqlite:///{tmp_path / 'x.db'}", routers=[extra]):
        response = api.client.get("/api/v1/widgets")
        assert response.json() == {"items": ["w"]}


def test_unknown_routes_answer_problem_json(api: Api) -> None:
    body = assert_problem(
        api.client.get("/api/v1/nothing-here", headers=api.as_role("viewer")), 404
    )
    assert body["type"] == "about:blank"
    assert body["title"] == "Not Found"


def test_unexpected_errors_answer_a_500_problem_without_internals(tmp_path: Path) -> None:
    boom = APIRouter(prefix="/boom")

    @boom.get("")
    def explode() -> None:
        raise RuntimeError("secret connection string in here")

    for api in build_api(f"sqlite:///{tmp_path / 'x.db'}", routers=[boom]):
        client = TestClient(api.client.app, raise_server_exceptions=False)
        body = assert_problem(client.get("/api/v1/boom"), 500)
        assert "secret" not in body["detail"]


# --- authentication and roles ---------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, 'Bearer realm="pmkeeper"'),
        ({"Authorization": "Basic dXNlcjpwdw=="}, 'Bearer realm="pmkeeper"'),
        ({"Authorization": "Bearer"}, 'Bearer realm="pmkeeper"'),
        ({"Authorization": "Bearer pmk_wrong"}, 'Bearer realm="pmkeeper", error="invalid_token"'),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/assets"),
        ("POST", "/api/v1/assets"),
        ("GET", "/api/v1/assets/pump-17/telemetry?metric=t"),
        ("GET", "/api/v1/deadletters"),
    ],
)
def test_requests_without_a_valid_token_get_401(
    api: Api, headers: dict[str, str], challenge: str, method: str, path: str
) -> None:
    # The body is invalid on purpose: authentication is checked before the body.
    response = api.client.request(method, path, headers=headers, json={"bogus": 1})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == challenge


def test_a_revoked_token_gets_401_once_the_token_cache_forgets_it(api: Api) -> None:
    seconds = [0.0]
    api.client.app.state.token_cache = TokenCache(5.0, now=lambda: seconds[0])  # type: ignore[attr-defined]
    viewer = api.token_repo.authenticate(api.tokens["viewer"])
    assert viewer is not None
    assert api.client.get("/api/v1/assets", headers=api.as_role("viewer")).status_code == 200
    api.token_repo.revoke(viewer.id, NOW)
    # Revoked in the store (by `pmkeeper token revoke`, say): trusted for the cache's 5 s.
    seconds[0] = 4.9
    assert api.client.get("/api/v1/assets", headers=api.as_role("viewer")).status_code == 200
    seconds[0] = 5.0
    assert_problem(api.client.get("/api/v1/assets", headers=api.as_role("viewer")), 401)
    # Refusals are not cached: the next request asks the store again, and is refused again.
    assert_problem(api.client.get("/api/v1/assets", headers=api.as_role("viewer")), 401)


def test_without_a_token_cache_a_revoked_token_is_refused_at_once(api: Api) -> None:
    api.client.app.state.token_cache = TokenCache(0.0)  # type: ignore[attr-defined]
    viewer = api.token_repo.authenticate(api.tokens["viewer"])
    assert viewer is not None
    assert api.client.get("/api/v1/assets", headers=api.as_role("viewer")).status_code == 200
    api.token_repo.revoke(viewer.id, NOW)
    assert_problem(api.client.get("/api/v1/assets", headers=api.as_role("viewer")), 401)


def test_the_token_cache_stays_bounded() -> None:
    info = TokenInfo(id=1, name="n", role=Role.VIEWER)
    cache = TokenCache(60.0, now=lambda: 0.0, max_entries=3)
    for n in range(3):
        cache.put(f"t{n}", info)
    assert cache.get("t2") == info
    cache.put("t3", info)  # over the bound: the cache starts over
    assert [cache.get(f"t{n}") for n in range(4)] == [None, None, None, info]


@pytest.mark.parametrize("role", ["viewer", "technician"])
def test_readers_cannot_create_or_update_assets(api: Api, role: str) -> None:
    body = assert_problem(create(api, role), 403, "forbidden")
    assert body["required_role"] == "planner"
    assert api.assets.list() == []
    create(api, "planner")
    patch = api.client.patch(
        "/api/v1/assets/pump-17", json={"name": "X"}, headers=api.as_role(role)
    )
    assert_problem(patch, 403, "forbidden")
    assert api.assets.get("pump-17").name == "Feed pump 17"


@pytest.mark.parametrize("role", ["viewer", "technician", "planner", "admin"])
def test_every_role_can_read(api: Api, role: str) -> None:
    create(api)
    response = api.client.get("/api/v1/assets/pump-17", headers=api.as_role(role))
    assert response.status_code == 200
    assert response.json()["id"] == "pump-17"


# --- assets ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["planner", "admin"])
def test_create_asset_answers_201_with_the_asset(api: Api, role: str) -> None:
    response = create(
        api,
        role,
        criticality="high",
        tags={"line": "3"},
        commissioned_at="2024-03-01T08:30:00+02:00",
        serial="SN-1",
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "http://testserver/api/v1/assets/pump-17"
    body = response.json()
    assert body == {
        **PUMP,
        "location": None,
        "customer": None,
        "model": None,
        "serial": "SN-1",
        "commissioned_at": "2024-03-01T06:30:00Z",
        "warranty_until": None,
        "criticality": "high",
        "tags": {"line": "3"},
        "auto_registered": False,
        "created_at": "2026-11-22T12:00:00Z",
        "updated_at": "2026-11-22T12:00:00Z",
    }
    fetched = api.client.get("/api/v1/assets/pump-17", headers=api.as_role("viewer"))
    assert fetched.json() == body


def test_create_duplicate_asset_answers_409(api: Api) -> None:
    assert create(api).status_code == 201
    body = assert_problem(create(api, name="Other"), 409, "conflict")
    assert "pump-17" in body["detail"]
    assert body["instance"] == "/api/v1/assets"
    assert api.assets.get("pump-17").name == "Feed pump 17"


@pytest.mark.parametrize(
    ("fields", "location"),
    [
        ({"colour": "red"}, ["body", "colour"]),
        ({"auto_registered": True}, ["body", "auto_registered"]),
        ({"created_at": "2026-01-01T00:00:00Z"}, ["body", "created_at"]),
        ({"id": "has space"}, ["body", "id"]),
        ({"id": "-starts-with-dash"}, ["body", "id"]),
        ({"id": "x" * 129}, ["body", "id"]),
        ({"name": ""}, ["body", "name"]),
        ({"criticality": "apocalyptic"}, ["body", "criticality"]),
        ({"commissioned_at": "2024-03-01T08:30:00"}, ["body", "commissioned_at"]),
        ({"tags": {"k": 5}}, ["body", "tags", "k"]),
        ({"tags": {"": "v"}}, ["body", "tags"]),
    ],
)
def test_create_refuses_bad_bodies_with_422(
    api: Api, fields: dict[str, Any], location: list[str]
) -> None:
    body = assert_problem(create(api, **fields), 422, "invalid")
    assert location in error_locations(body)
    assert all(error["message"] for error in body["errors"])
    assert api.assets.list() == []


def test_create_refuses_missing_required_fields(api: Api) -> None:
    response = api.client.post(
        "/api/v1/assets", json={"id": "pump-1"}, headers=api.as_role("planner")
    )
    body = assert_problem(response, 422)
    assert sorted(error_locations(body)) == [["body", "name"], ["body", "site"], ["body", "type"]]


def test_create_refuses_malformed_json(api: Api) -> None:
    response = api.client.post(
        "/api/v1/assets",
        content=b"{not json",
        headers={**api.as_role("planner"), "content-type": "application/json"},
    )
    assert_problem(response, 422, "invalid")


def test_get_unknown_asset_answers_404(api: Api) -> None:
    body = assert_problem(
        api.client.get("/api/v1/assets/nope", headers=api.as_role("viewer")), 404, "not_found"
    )
    assert body["asset_id"] == "nope"


def test_get_with_an_invalid_id_answers_422(api: Api) -> None:
    response = api.client.get("/api/v1/assets/bad%20id", headers=api.as_role("viewer"))
    body = assert_problem(response, 422)
    assert error_locations(body) == [["path", "asset_id"]]


def test_patch_changes_only_the_fields_sent(api: Api) -> None:
    create(api, location="Hall B", tags={"a": "1"})
    api.clock.at = NOW + timedelta(minutes=3)
    response = api.client.patch(
        "/api/v1/assets/pump-17",
        json={"name": "Renamed", "location": None, "criticality": "critical"},
        headers=api.as_role("planner"),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "Renamed"
    assert body["location"] is None
    assert body["criticality"] == "critical"
    assert body["tags"] == {"a": "1"}
    assert body["site"] == "north"
    assert body["created_at"] == "2026-11-22T12:00:00Z"
    assert body["updated_at"] == "2026-11-22T12:03:00Z"


def test_empty_patch_changes_nothing(api: Api) -> None:
    create(api)
    response = api.client.patch("/api/v1/assets/pump-17", json={}, headers=api.as_role("planner"))
    assert response.status_code == 200
    assert response.json()["name"] == "Feed pump 17"


@pytest.mark.parametrize(
    ("changes", "location"),
    [
        ({"id": "pump-18"}, ["body", "id"]),
        ({"name": None}, ["body", "name"]),
        ({"site": None}, ["body", "site"]),
        ({"tags": None}, ["body", "tags"]),
        ({"colour": "red"}, ["body", "colour"]),
        ({"warranty_until": "2030-01-01T00:00:00"}, ["body", "warranty_until"]),
    ],
)
def test_patch_refuses_bad_changes_with_422(
    api: Api, changes: dict[str, Any], location: list[str]
) -> None:
    create(api)
    response = api.client.patch(
        "/api/v1/assets/pump-17", json=changes, headers=api.as_role("planner")
    )
    body = assert_problem(response, 422, "invalid")
    assert location in error_locations(body)
    assert api.assets.get("pump-17").name == "Feed pump 17"


def test_patch_unknown_asset_answers_404(api: Api) -> None:
    response = api.client.patch(
        "/api/v1/assets/nope", json={"name": "x"}, headers=api.as_role("planner")
    )
    assert_problem(response, 404, "not_found")


def _create_fleet(api: Api) -> None:
    for asset_id, site, kind in [
        ("a-1", "north", "pump"),
        ("a-2", "south", "pump"),
        ("a-3", "north", "fan"),
        ("a-4", "north", "pump"),
        ("a-5", "north", "pump"),
    ]:
        response = create(api, id=asset_id, site=site, type=kind)
        assert response.status_code == 201


def test_list_assets_pages_with_a_cursor(api: Api) -> None:
    _create_fleet(api)
    viewer = api.as_role("viewer")
    first = api.client.get("/api/v1/assets", params={"limit": 2}, headers=viewer).json()
    assert [a["id"] for a in first["items"]] == ["a-1", "a-2"]
    assert first["next_cursor"] == "a-2"
    second = api.client.get(
        "/api/v1/assets", params={"limit": 2, "cursor": "a-2"}, headers=viewer
    ).json()
    assert [a["id"] for a in second["items"]] == ["a-3", "a-4"]
    last = api.client.get(
        "/api/v1/assets", params={"limit": 2, "cursor": second["next_cursor"]}, headers=viewer
    ).json()
    assert [a["id"] for a in last["items"]] == ["a-5"]
    assert last["next_cursor"] is None
    # A page that ends exactly at the last asset has no next page either.
    exact = api.client.get("/api/v1/assets", params={"limit": 5}, headers=viewer).json()
    assert len(exact["items"]) == 5
    assert exact["next_cursor"] is None


def test_list_assets_filters_by_site_and_type(api: Api) -> None:
    _create_fleet(api)
    response = api.client.get(
        "/api/v1/assets", params={"site": "north", "type": "pump"}, headers=api.as_role("viewer")
    )
    assert [a["id"] for a in response.json()["items"]] == ["a-1", "a-4", "a-5"]


@pytest.mark.parametrize("limit", [0, 501, "many"])
def test_list_assets_refuses_a_bad_limit(api: Api, limit: object) -> None:
    response = api.client.get(
        "/api/v1/assets", params={"limit": limit}, headers=api.as_role("viewer")
    )
    body = assert_problem(response, 422)
    assert error_locations(body) == [["query", "limit"]]


def test_asset_flow_on_both_backends(database_url: str) -> None:
    for api in build_api(database_url):
        assert create(api).status_code == 201
        assert_problem(create(api), 409, "conflict")
        api.assets.register_missing(["auto-1"], NOW)
        listed = api.client.get("/api/v1/assets", headers=api.as_role("viewer")).json()
        assert [(a["id"], a["auto_registered"]) for a in listed["items"]] == [
            ("auto-1", True),
            ("pump-17", False),
        ]
        assert listed["items"][0]["type"] == "unregistered"
        assert listed["next_cursor"] is None


# --- telemetry ------------------------------------------------------------------------


def _series(api: Api, start: datetime, values: Sequence[float], step: timedelta) -> None:
    api.telemetry.write(
        [
            Reading("pump-17", "temperature_c", datetime_to_ms(start + i * step), value)
            for i, value in enumerate(values)
        ]
    )


def _telemetry(api: Api, **params: Any) -> httpx.Response:
    response: httpx.Response = api.client.get(
        "/api/v1/assets/pump-17/telemetry",
        params={"metric": "temperature_c", **params},
        headers=api.as_role("viewer"),
    )
    return response


def test_raw_telemetry_defaults_to_the_last_hour(api: Api) -> None:
    create(api)
    # One point an hour and a half ago, then one every 20 minutes up to now (exclusive end).
    _series(api, NOW - timedelta(minutes=90), [1.0, 2.0, 3.0, 4.0, 5.0], timedelta(minutes=20))
    _series(api, NOW, [99.0], timedelta(0))
    response = _telemetry(api)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "asset_id": "pump-17",
        "metric": "temperature_c",
        "start": "2026-11-22T11:00:00Z",
        "end": "2026-11-22T12:00:00Z",
        "points": [
            {"ts": "2026-11-22T11:10:00Z", "value": 3.0},
            {"ts": "2026-11-22T11:30:00Z", "value": 4.0},
            {"ts": "2026-11-22T11:50:00Z", "value": 5.0},
        ],
    }


def test_raw_telemetry_over_an_explicit_window_with_a_limit(api: Api) -> None:
    create(api)
    _series(api, NOW - timedelta(days=2), [1.5, 2.5, 3.5, 4.5], timedelta(minutes=1))
    response = _telemetry(
        api, start="2026-11-20T13:01:00+01:00", end="2026-11-20T12:10:00Z", limit=2
    )
    assert response.status_code == 200, response.text
    assert response.json()["points"] == [
        {"ts": "2026-11-20T12:01:00Z", "value": 2.5},
        {"ts": "2026-11-20T12:02:00Z", "value": 3.5},
    ]


@pytest.mark.parametrize("every", ["5m", "300s", "PT5M", "pt5m"])
def test_downsampled_telemetry_gives_mean_min_max_count(api: Api, every: str) -> None:
    create(api)
    _series(api, NOW - timedelta(minutes=10), [1, 2, 3, 4, 5, 10, 20], timedelta(minutes=1))
    response = _telemetry(
        api, start="2026-11-22T11:50:00Z", end="2026-11-22T12:00:00Z", every=every
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["every_s"] == 300.0
    assert body["points"] == [
        {"ts": "2026-11-22T11:50:00Z", "value": 3.0, "min": 1.0, "max": 5.0, "count": 5},
        {"ts": "2026-11-22T11:55:00Z", "value": 15.0, "min": 10.0, "max": 20.0, "count": 2},
    ]


@pytest.mark.parametrize(
    ("every", "seconds"), [("500ms", 0.5), ("1h", 3600.0), ("1d", 86400.0), ("P1DT1H", 90000.0)]
)
def test_every_accepts_short_and_iso_forms(api: Api, every: str, seconds: float) -> None:
    create(api)
    response = _telemetry(api, start="2026-11-22T11:59:00Z", every=every)
    assert response.status_code == 200, response.text
    assert response.json()["every_s"] == seconds


@pytest.mark.parametrize(
    "every", ["5x", "0s", "PT0S", "-5m", "P1M", "P", "5", "1.5m", "", "999999999w", "P999999999W"]
)
def test_a_bad_every_answers_422(api: Api, every: str) -> None:
    create(api)
    body = assert_problem(_telemetry(api, every=every), 422, "invalid")
    assert error_locations(body) == [["query", "every"]]


def test_too_many_buckets_answer_422(api: Api) -> None:
    create(api)
    ok = _telemetry(api, start="2026-11-22T09:13:20Z", every="1s")  # exactly 10,000 buckets
    assert ok.status_code == 200, ok.text
    body = assert_problem(_telemetry(api, start="2026-11-22T09:13:19Z", every="1s"), 422)
    assert error_locations(body) == [["query", "every"]]
    assert "10000" in body["detail"]


@pytest.mark.parametrize(
    ("params", "location"),
    [
        ({"start": "2026-11-22T12:00:00Z", "end": "2026-11-22T12:00:00Z"}, ["query", "start"]),
        ({"start": "2026-11-22T13:00:00Z", "end": "2026-11-22T12:00:00Z"}, ["query", "start"]),
        ({"start": "2026-11-22T12:30:00Z"}, ["query", "start"]),
        ({"start": "2026-11-22T11:00:00"}, ["query", "start"]),
        ({"end": "2026-11-22T11:00:00"}, ["query", "end"]),
        ({"start": "yesterday"}, ["query", "start"]),
        ({"end": "0001-01-01T00:30:00Z"}, ["query", "end"]),
        ({"start": "0001-01-01T00:30:00+01:00"}, ["query", "start"]),
        ({"limit": 0}, ["query", "limit"]),
        ({"metric": ""}, ["query", "metric"]),
    ],
)
def test_bad_telemetry_windows_answer_422(
    api: Api, params: dict[str, Any], location: list[str]
) -> None:
    create(api)
    body = assert_problem(_telemetry(api, **params), 422, "invalid")
    assert location in error_locations(body)


def test_telemetry_needs_a_metric(api: Api) -> None:
    create(api)
    response = api.client.get("/api/v1/assets/pump-17/telemetry", headers=api.as_role("viewer"))
    body = assert_problem(response, 422)
    assert error_locations(body) == [["query", "metric"]]


def test_telemetry_of_an_unknown_asset_answers_404(api: Api) -> None:
    _series(api, NOW - timedelta(minutes=5), [1.0], timedelta(0))
    assert_problem(_telemetry(api), 404, "not_found")
    latest = api.client.get(
        "/api/v1/assets/pump-17/telemetry/latest", headers=api.as_role("viewer")
    )
    assert_problem(latest, 404, "not_found")


@pytest.mark.parametrize(
    "path", ["/telemetry?metric=temperature_c", "/telemetry?metric=t&every=1m", "/telemetry/latest"]
)
def test_an_unavailable_store_answers_503(api: Api, path: str) -> None:
    create(api)
    api.telemetry.down = True
    response = api.client.get(f"/api/v1/assets/pump-17{path}", headers=api.as_role("viewer"))
    assert_problem(response, 503, "store_unavailable")
    assert response.headers["retry-after"] == "5"


def test_latest_telemetry_per_metric(api: Api) -> None:
    create(api)
    _series(api, NOW - timedelta(minutes=3), [1.0, 2.0], timedelta(minutes=1))
    api.telemetry.write(
        [Reading("pump-17", "vibration_mm_s", datetime_to_ms(NOW - timedelta(days=3)), 4.2)]
    )
    api.telemetry.write([Reading("other", "temperature_c", datetime_to_ms(NOW), 7.0)])
    response = api.client.get(
        "/api/v1/assets/pump-17/telemetry/latest", headers=api.as_role("viewer")
    )
    assert response.status_code == 200
    assert response.json() == {
        "asset_id": "pump-17",
        "metrics": {
            "temperature_c": {"ts": "2026-11-22T11:58:00Z", "value": 2.0},
            "vibration_mm_s": {"ts": "2026-11-19T12:00:00Z", "value": 4.2},
        },
    }


# --- dead letters ---------------------------------------------------------------------


def _letter(
    n: int, payload: bytes, size: int | None = None, asset_id: str = "pump-17"
) -> DeadLetter:
    return DeadLetter(
        topic=f"pmk/{asset_id}/telemetry",
        payload=payload,
        payload_size=len(payload) if size is None else size,
        code="invalid_json",
        reason=f"reason {n}",
        received_at=NOW + timedelta(seconds=n),
        asset_id=asset_id,
    )


def test_dead_letters_show_payload_text_base64_and_truncation(api: Api) -> None:
    raw = b'{"ts": 1, "metrics": \xff}'
    api.deadletters.add_many([_letter(1, raw), _letter(2, b"0123", size=9000)])
    response = api.client.get("/api/v1/deadletters", headers=api.as_role("viewer"))
    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["reason"] for item in items] == ["reason 2", "reason 1"]
    truncated, broken = items
    assert truncated["truncated"] is True
    assert truncated["payload_size"] == 9000
    assert truncated["payload"] == "0123"
    assert broken == {
        "id": broken["id"],
        "topic": "pmk/pump-17/telemetry",
        "asset_id": "pump-17",
        "code": "invalid_json",
        "reason": "reason 1",
        "received_at": "2026-11-22T12:00:01Z",
        "payload_size": len(raw),
        "payload": '{"ts": 1, "metrics": \ufffd}',
        "payload_base64": base64.b64encode(raw).decode(),
        "truncated": False,
    }
    assert isinstance(broken["id"], int)


def test_dead_letters_page_backwards_and_filter_by_asset(api: Api) -> None:
    api.deadletters.add_many(
        [_letter(n, b"x", asset_id="a" if n % 2 else "b") for n in range(1, 8)]
    )
    viewer = api.as_role("viewer")
    first = api.client.get("/api/v1/deadletters", params={"limit": 3}, headers=viewer).json()
    assert [i["reason"] for i in first["items"]] == ["reason 7", "reason 6", "reason 5"]
    assert first["next_cursor"] == str(first["items"][-1]["id"])
    rest = api.client.get(
        "/api/v1/deadletters", params={"limit": 10, "cursor": first["next_cursor"]}, headers=viewer
    ).json()
    assert [i["reason"] for i in rest["items"]] == [f"reason {n}" for n in (4, 3, 2, 1)]
    assert rest["next_cursor"] is None
    only_b = api.client.get("/api/v1/deadletters", params={"asset_id": "b"}, headers=viewer)
    assert [i["reason"] for i in only_b.json()["items"]] == ["reason 6", "reason 4", "reason 2"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"cursor": 0}, "cursor"), ({"cursor": 2**63}, "cursor"), ({"limit": 0}, "limit")],
)
def test_dead_letters_refuse_bad_paging(api: Api, params: dict[str, Any], field: str) -> None:
    response = api.client.get("/api/v1/deadletters", params=params, headers=api.as_role("viewer"))
    body = assert_problem(response, 422)
    assert error_locations(body) == [["query", field]]


def test_text_with_nul_is_refused_with_422_on_postgresql_and_nothing_is_written(
    postgres_url: str,
) -> None:
    """PostgreSQL cannot store NUL in text; the caller hears why, not a 500."""
    for api in build_api(postgres_url):
        body = {"id": "pump-nul", "name": "Pump\x00one", "type": "pump", "site": "north"}
        response = api.client.post("/api/v1/assets", json=body, headers=api.as_role("planner"))
        problem = assert_problem(response, 422)
        assert "NUL" in problem["detail"]
        assert api.assets.list() == []
        # The connection it failed on is fine for the next request.
        body["name"] = "Pump one"
        ok = api.client.post("/api/v1/assets", json=body, headers=api.as_role("planner"))
        assert ok.status_code == 201, ok.text
