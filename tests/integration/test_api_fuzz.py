"""Fuzz every API operation from its OpenAPI schema with schemathesis: no input gives a 5xx.

The app runs over real SQL repositories (SQLite) with an admin token, so requests get past
authentication and reach the handlers; unknown ids and refused inputs must come back as
problem+json 4xx, never as a server error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from core.assets import Asset
from tests.integration.test_api import Api, build_api

# Examples per operation: enough to reach every handler's refusals, quick enough for CI.
EXAMPLES = 40


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('fuzz')) / 'pmkeeper.db'}"
    for api in build_api(url):
        api.assets.add(Asset(id="pump-1", name="Feed pump 1", type="pump", site="north"))
        yield api


@pytest.fixture(scope="module")
def api_schema(fuzzed: Api) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed.client.app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_makes_a_server_error(case: schemathesis.Case[Any], fuzzed: Api) -> None:
    headers: dict[str, Any] = dict(case.headers or {})
    headers.update(fuzzed.as_role("admin"))
    case.call_and_validate(headers=headers, checks=[not_a_server_error])
