"""Every API endpoint refuses a missing or invalid token (401) and a too-small role (403).

The routes are read from the app itself, so an endpoint added later is covered without
touching this test; each one's role is the `require_<role>` dependency it declares.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from core.auth import Role
from tests.integration.test_api import Api, assert_problem, build_api

# Operational endpoints that must answer without a token (probes and scrapers).
PUBLIC = {"/healthz", "/readyz", "/metrics"}
# POSTs that change nothing: a backtest replays history without side effects.
READ_ONLY_POSTS = {"/api/v1/rules/1/backtest"}


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    yield from build_api(database_url)


def operations(api: Api) -> list[tuple[str, str]]:
    """Return every (method, path) of the OpenAPI schema, path parameters filled in."""
    schema = api.client.get("/openapi.json").json()
    return [
        (method.upper(), re.sub(r"\{[^}]*\}", "1", path))
        for path, methods in schema["paths"].items()
        for method in methods
    ]


def protected(api: Api) -> list[tuple[str, str]]:
    found = operations(api)
    assert len(found) > 30
    public = [(m, p) for m, p in found if p in PUBLIC]
    assert {p for _, p in public} == PUBLIC
    return [(m, p) for m, p in found if p not in PUBLIC]


def test_only_the_probes_are_outside_the_versioned_api(api: Api) -> None:
    for method, path in protected(api):
        assert path.startswith("/api/v1/"), (method, path)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer pmk_wrong"}, {"Authorization": "Basic dXNlcjpwdw=="}],
)
def test_every_endpoint_refuses_a_missing_or_invalid_token(
    api: Api, headers: dict[str, str]
) -> None:
    for method, path in protected(api):
        response = api.client.request(method, path, headers=headers, json={})
        assert_problem(response, 401, "unauthorized")


def test_every_endpoint_refuses_the_roles_below_its_own(api: Api) -> None:
    """Roles are ordered (viewer < technician < planner < admin): each endpoint admits its
    role and those above, refuses those below with 403, and viewers only ever read."""
    ladder = [Role.VIEWER, Role.TECHNICIAN, Role.PLANNER, Role.ADMIN]
    refused_writes = 0
    for method, path in protected(api):
        codes = [
            api.client.request(method, path, headers=api.as_role(role), json={}).status_code
            for role in ladder
        ]
        assert 401 not in codes, (method, path, codes)
        admitted = [code != 403 for code in codes]
        assert admitted[-1], f"{method} {path} refuses even an admin"
        first = admitted.index(True)
        assert all(admitted[first:]), (method, path, codes)  # no gaps above the minimum
        if method != "GET" and path not in READ_ONLY_POSTS:
            assert not admitted[0], f"{method} {path} lets a viewer write"
            refused_writes += 1
        for role, code in zip(ladder[:first], codes[:first], strict=True):
            assert code == 403, (method, path, role)
    assert refused_writes > 15
