"""Rules end to end: real mosquitto, the real `pmkeeper serve`, alerts and work orders over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator.publisher import run_simulation
from tests.support.binaries import free_port
from tests.support.mosquitto import MosquittoBroker
from tests.support.polling import wait_until
from tests.support.processes import PmkeeperProcess
from tests.support.publishing import publish

pytestmark = [pytest.mark.external_service]


@dataclass
class Serve:
    """A running `pmkeeper serve` on the test broker, with an admin client."""

    process: PmkeeperProcess
    http: httpx.Client
    broker_url: str

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def items(self, path: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(path, limit=500, **params)["items"]
        return items

    def create_rule(self, rule: dict[str, Any]) -> None:
        response = self.http.post("/api/v1/rules", json=rule)
        assert response.status_code == 201, response.text

    def restart(self, *, kill: bool) -> None:
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.start()
        self.process.wait_subscribed()


@pytest.fixture
def serve(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Serve]:
    port = free_port()
    process = PmkeeperProcess(
        ["serve"],
        {
            "PMK_API__PORT": str(port),
            "PMK_MQTT__URL": mosquitto.url,
            "PMK_MQTT__CLIENT_ID": f"rules-{uuid.uuid4().hex[:8]}",
            "PMK_INGEST__FLUSH_INTERVAL_MS": "10",
            "PMK_RULES__REFRESH_S": "0.2",
            "PMK_RULES__TICK_INTERVAL_S": "0.1",
        },
        tmp_path,
    )
    process.start()
    try:
        process.wait_subscribed()
        token = subprocess.run(
            [sys.executable, "-m", "pmkeeper", "token", "create", "--role", "admin"],
            env=process.env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.splitlines()[-1]
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ) as http:
            yield Serve(process, http, mosquitto.url)
    finally:
        process.terminate()


def _create_fleet(serve: Serve, count: int) -> list[str]:
    ids = [f"sim-{i:04d}" for i in range(count)]
    for asset_id in ids:
        response = serve.http.post(
            "/api/v1/assets",
            json={"id": asset_id, "name": f"Pump {asset_id}", "type": "pump", "site": "north"},
        )
        assert response.status_code == 201, response.text
    return ids


def _wait_rules_loaded(serve: Serve, count: int) -> None:
    """Wait until the engine has picked the rules up (it refreshes every 0.2 s here)."""
    wait_until(
        lambda: any(
            event.get("msg", "").startswith(f"rules engine: {count} rules")
            for event in serve.process.log_events()
        ),
        what=f"{count} rules in force",
    )


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_degradation_opens_one_alert_and_one_work_order_and_trend_fires_early(
    serve: Serve,
) -> None:
    assets = _create_fleet(serve, 5)
    degrading = assets[2]
    serve.create_rule(
        {
            "id": "vibration-high",
            "name": "Bearing vibration high",
            "selector": {"metric": "vibration_mm_s", "asset_type": "pump"},
            "condition": {
                "kind": "threshold",
                "comparison": "above",
                "threshold": 7.0,
                "clear": 5.0,
            },
            "hold_for": "PT1S",
            "severity": "critical",
        }
    )
    serve.create_rule(
        {
            "id": "vibration-trend",
            "name": "Bearing vibration heading for the limit",
            "selector": {"metric": "vibration_mm_s", "asset_type": "pump"},
            "condition": {
                "kind": "trend",
                "comparison": "above",
                "threshold": 7.0,
                "window": "PT6S",
                "horizon": "PT30S",
                "min_points": 10,
            },
        }
    )
    _wait_rules_loaded(serve, 2)

    report = run_simulation(
        serve.broker_url,
        assets=5,
        rate=10.0,
        duration_s=14.0,
        scenarios={degrading: "bearing_wear:10s"},
        seed=7,
    )
    assert report.messages_sent > 0
    assert report.messages_failed == 0

    def alerts_for_both_rules() -> list[dict[str, Any]] | None:
        alerts = serve.items("/api/v1/alerts")
        return (
            alerts
            if {a["rule_id"] for a in alerts} == {"vibration-high", "vibration-trend"}
            else None
        )

    wait_until(alerts_for_both_rules, what="both rules to fire")
    # Let anything late land before counting.
    wait_until(lambda: serve.process.metric("pmkeeper_ingest_queue_depth") == 0, what="drained")
    alerts = serve.items("/api/v1/alerts")
    by_rule = {alert["rule_id"]: alert for alert in alerts}
    assert len(alerts) == 2, alerts  # exactly one alert per rule, none for healthy pumps
    assert {alert["asset_id"] for alert in alerts} == {degrading}
    high = by_rule["vibration-high"]
    assert high["status"] == "firing"
    assert high["value"] > 7.0
    assert high["evidence"], "the alert keeps the readings that fired it"

    orders = serve.items("/api/v1/work-orders")
    predictive = [o for o in orders if o["kind"] == "predictive"]
    assert {(o["rule_id"], o["asset_id"]) for o in predictive} == {
        ("vibration-high", degrading),
        ("vibration-trend", degrading),
    }
    order = next(o for o in predictive if o["rule_id"] == "vibration-high")
    assert order["priority"] == "high"  # critical severity
    assert order["status"] == "requested"
    assert high["id"] in order["alert_ids"]
    assert degrading in order["title"] or f"Pump {degrading}" in order["title"]

    # The trend rule fired on the forecast, before any reading crossed the threshold.
    trend = by_rule["vibration-trend"]
    points = serve.get(
        f"/api/v1/assets/{degrading}/telemetry",
        metric="vibration_mm_s",
        start=(_at(trend["fired_at"]) - timedelta(minutes=5)).isoformat(),
        end=(datetime.now(tz=UTC) + timedelta(minutes=1)).isoformat(),
    )["points"]
    first_crossing = min(_at(p["ts"]) for p in points if p["value"] > 7.0)
    assert _at(trend["fired_at"]) < first_crossing
    assert trend["predicted_crossing_at"] is not None
    assert _at(trend["predicted_crossing_at"]) > _at(trend["fired_at"])


def _publish_temperatures(serve: Serve, asset_id: str, start_ms: int, values: list[float]) -> None:
    messages = [
        (
            f"pmk/{asset_id}/telemetry",
            json.dumps({"ts": start_ms + i * 1000, "metrics": {"temperature_c": value}}).encode(),
        )
        for i, value in enumerate(values)
    ]
    publish(serve.broker_url, messages)


def _overheat_rule() -> dict[str, Any]:
    return {
        "id": "overheat",
        "name": "Motor overheating",
        "selector": {"metric": "temperature_c", "asset_id": "motor-1"},
        "condition": {"kind": "threshold", "comparison": "above", "threshold": 80.0},
        "hold_for": "PT10S",
    }


def _wait_pending(serve: Serve, readings: int) -> None:
    """Wait until the readings are stored (and so evaluated and the pending state recorded)."""
    wait_until(
        lambda: serve.process.metric("pmkeeper_points_written_total") >= readings,
        what=f"{readings} readings written",
    )
    wait_until(
        lambda: serve.process.metric("pmkeeper_rule_evaluations_total") >= readings,
        what=f"{readings} readings evaluated",
    )


@pytest.mark.parametrize("kill", [True, False], ids=["sigkill", "sigterm"])
def test_a_restart_in_the_middle_of_a_for_period_fires_once_at_the_right_time(
    serve: Serve, kill: bool
) -> None:
    serve.create_rule({**_overheat_rule(), "hold_for": "PT20S"})
    _wait_rules_loaded(serve, 1)
    # Event times from now on: the rule is pending from start_ms, due at start_ms + 20 s,
    # and the restart happens well before the wall clock gets there.
    start_ms = time.time_ns() // 1_000_000
    _publish_temperatures(serve, "motor-1", start_ms, [85.0] * 6)
    _wait_pending(serve, 6)
    assert serve.items("/api/v1/alerts") == []

    serve.restart(kill=kill)
    assert serve.items("/api/v1/alerts") == []
    # Still hot from 6 s to 24 s. Had the pending state been lost, the rule would start
    # over at 6 s and not be due before 26 s: only the persisted state fires it at 20 s.
    _publish_temperatures(serve, "motor-1", start_ms + 6000, [85.0] * 19)

    [alert] = wait_until(lambda: serve.items("/api/v1/alerts") or None, what="the alert")
    assert _at(alert["fired_at"]) == datetime.fromtimestamp(start_ms / 1000 + 20, tz=UTC)
    # A device resending its whole buffer fires nothing more.
    _publish_temperatures(serve, "motor-1", start_ms, [85.0] * 25)
    wait_until(
        lambda: serve.process.metric("pmkeeper_rule_evaluations_total") >= 19 + 25,
        what="the resent readings evaluated",
    )
    assert len(serve.items("/api/v1/alerts")) == 1
    assert len(serve.items("/api/v1/work-orders", kind="predictive")) == 1


def test_the_timer_fires_a_for_period_that_ended_while_pmkeeper_was_down(serve: Serve) -> None:
    serve.create_rule(_overheat_rule())
    _wait_rules_loaded(serve, 1)
    # Hot from 2 s ago; due 8 s from now, and no reading will come after the restart.
    start_ms = time.time_ns() // 1_000_000 - 2000
    _publish_temperatures(serve, "motor-1", start_ms, [85.0, 86.0, 87.0])
    _wait_pending(serve, 3)
    serve.restart(kill=True)

    [alert] = wait_until(lambda: serve.items("/api/v1/alerts") or None, timeout_s=30, what="alert")
    assert _at(alert["fired_at"]) == datetime.fromtimestamp(start_ms / 1000 + 10, tz=UTC)
    assert alert["value"] == 87.0


def test_backtest_returns_the_alerts_live_evaluation_produced(serve: Serve) -> None:
    serve.create_rule(
        {
            "id": "hot",
            "name": "Hot",
            "selector": {"metric": "temperature_c", "asset_id": "motor-1"},
            "condition": {
                "kind": "threshold",
                "comparison": "above",
                "threshold": 80.0,
                "clear": 75.0,
            },
            "hold_for": "PT2S",
        }
    )
    _wait_rules_loaded(serve, 1)
    start_ms = (time.time_ns() // 1_000_000 // 1000 - 120) * 1000
    # Two episodes: hot 0..5 s, cool 6..9 s, hot again 30..35 s (beyond nothing: no flap window
    # matters for counting alerts, the second is folded or opened the same way in both).
    values = [85.0] * 6 + [70.0] * 4 + [72.0] * 20 + [90.0] * 6 + [60.0] * 3
    _publish_temperatures(serve, "motor-1", start_ms, values)
    _wait_pending(serve, len(values))
    live = serve.items("/api/v1/alerts")
    assert live, "the live rule fired"

    response = serve.http.post(
        "/api/v1/rules/hot/backtest",
        params={
            "start": datetime.fromtimestamp(start_ms / 1000 - 1, tz=UTC).isoformat(),
            "end": datetime.fromtimestamp(start_ms / 1000 + len(values) + 1, tz=UTC).isoformat(),
        },
    )
    assert response.status_code == 200, response.text
    backtest = response.json()
    assert sorted(_at(a["fired_at"]) for a in backtest["alerts"]) == sorted(
        _at(a["fired_at"]) for a in live
    )
    assert [a["fire_count"] for a in sorted(backtest["alerts"], key=lambda a: a["fired_at"])] == [
        a["fire_count"] for a in sorted(live, key=lambda a: a["fired_at"])
    ]
    assert backtest["work_order_count"] == len(
        serve.items("/api/v1/work-orders", kind="predictive")
    )
    # The backtest wrote nothing.
    assert serve.items("/api/v1/alerts") == live
