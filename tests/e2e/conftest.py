"""Fixtures that run the real `pmkeeper ingest` command against real services."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.settings import InfluxSettings
from tests.support.processes import PmkeeperProcess

StartIngest = Callable[..., PmkeeperProcess]


def influx_env(settings: InfluxSettings) -> dict[str, str]:
    """Return the PMK_INFLUX__* variables for `settings`."""
    return {
        "PMK_INFLUX__URL": settings.url or "",
        "PMK_INFLUX__TOKEN": settings.token.get_secret_value(),
        "PMK_INFLUX__ORG": settings.org,
        "PMK_INFLUX__BUCKET": settings.bucket,
    }


@pytest.fixture
def start_ingest(tmp_path: Path) -> Iterator[StartIngest]:
    """Start `pmkeeper ingest` children; each is stopped at teardown."""
    children: list[PmkeeperProcess] = []

    def start(broker_url: str, influx: InfluxSettings | None = None, **env: str) -> PmkeeperProcess:
        workdir = tmp_path / f"ingest-{len(children)}"
        workdir.mkdir()
        child = PmkeeperProcess(
            ["ingest"],
            {
                "PMK_MQTT__URL": broker_url,
                "PMK_MQTT__CLIENT_ID": f"ingest-{uuid.uuid4().hex[:8]}",
                "PMK_DATABASE__URL": f"sqlite:///{workdir / 'pmkeeper.db'}",
                "PMK_INGEST__FLUSH_INTERVAL_MS": "20",
                **(influx_env(influx) if influx else {}),
                **env,
            },
            workdir,
        )
        children.append(child)
        child.start()
        child.wait_subscribed()
        return child

    yield start
    for child in reversed(children):
        child.terminate()
