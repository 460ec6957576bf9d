"""The rules engine inside ingest: evaluate after the write, record before the ack, restart."""

from __future__ import annotations

import builtins
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from core.assets import Asset
from core.clock import FrozenClock
from core.errors import ConflictError, NotFoundError
from core.settings import IngestSettings
from core.telemetry import Reading
from ingest.evaluation import RuleMetrics, RuleRunner
from ingest.metrics import IngestMetrics
from ingest.payloads import PayloadDecoder
from ingest.worker import IngestWorker, RawMessage
from rules.alerting import AlertStatus
from rules.evaluate import Status
from rules.model import Rule
from tests.fakes import (
    InMemoryAlertStore,
    InMemoryAssetRepository,
    InMemoryDeadLetterRepository,
    InMemoryTelemetryStore,
)
from tests.support.polling import wait_until

T0 = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


class InMemoryRuleRepository:
    """Rules in a dict, ordered by id."""

    def __init__(self, rules: builtins.list[Rule] = []) -> None:  # noqa: B006 - read only
        self.rules = {rule.id: rule for rule in rules}

    def add(self, rule: Rule) -> Rule:
        if rule.id in self.rules:
            raise ConflictError(rule.id)
        self.rules[rule.id] = rule
        return rule

    def get(self, rule_id: str) -> Rule:
        try:
            return self.rules[rule_id]
        except KeyError:
            raise NotFoundError(rule_id) from None

    def replace(self, rule: Rule) -> Rule:
        self.get(rule.id)
        self.rules[rule.id] = rule
        return rule

    def delete(self, rule_id: str) -> None:
        self.get(rule_id)
        del self.rules[rule_id]

    def list(self, *, after_id: str | None = None, limit: int = 100) -> builtins.list[Rule]:
        ids = sorted(i for i in self.rules if after_id is None or i > after_id)
        return [self.rules[i] for i in ids[:limit]]


def hot_rule(**changes: object) -> Rule:
    return Rule.model_validate(
        {
            "id": "hot",
            "name": "Hot",
            "selector": {"metric": "temperature_c", "asset_type": "pump"},
            "condition": {"kind": "threshold", "comparison": "above", "threshold": 80.0},
            **changes,
        }
    )


class Rig:
    """A runner over in-memory ports that survive a simulated restart."""

    def __init__(self, *rules: Rule) -> None:
        self.clock = FrozenClock(T0)
        self.rules = InMemoryRuleRepository(list(rules))
        self.assets = InMemoryAssetRepository(
            [
                Asset(id="pump-1", name="Pump 1", type="pump", site="north"),
                Asset(id="fan-1", name="Fan 1", type="fan", site="north"),
            ]
        )
        self.telemetry = InMemoryTelemetryStore()
        self.alerts = InMemoryAlertStore()
        self.runner = self.restart()

    def restart(self) -> RuleRunner:
        self.runner = RuleRunner(
            rules=self.rules,
            assets=self.assets,
            telemetry=self.telemetry,
            alerts=self.alerts,
            clock=self.clock,
            metrics=RuleMetrics(CollectorRegistry()),
        )
        self.runner.start()
        return self.runner

    def feed(self, asset: str, seconds: list[int], values: list[float]) -> None:
        """Store readings, then evaluate them, as the ingest writer does."""
        readings = [
            Reading(asset, "temperature_c", T0_MS + s * 1000, v)
            for s, v in zip(seconds, values, strict=True)
        ]
        self.telemetry.write(readings)
        self.runner.process(readings)

    def open_alerts(self) -> list[tuple[str, datetime]]:
        return sorted(
            (a.asset_id, a.fired_at)
            for a in self.alerts.alerts.values()
            if a.status is not AlertStatus.RESOLVED
        )


def test_a_crossing_reading_opens_an_alert_and_a_work_order_for_matching_assets_only() -> None:
    rig = Rig(hot_rule())
    rig.feed("pump-1", [0, 1], [70.0, 85.0])
    rig.feed("fan-1", [0, 1], [70.0, 95.0])  # a fan: the rule selects pumps
    assert rig.open_alerts() == [("pump-1", T0 + timedelta(seconds=1))]
    [order] = rig.alerts.work_orders.orders.values()
    assert order.asset_id == "pump-1"


def test_a_failed_record_is_retried_without_losing_or_doubling_the_alert() -> None:
    rig = Rig(hot_rule())
    rig.alerts.down = True
    readings = [Reading("pump-1", "temperature_c", T0_MS, 85.0)]
    rig.telemetry.write(readings)
    with pytest.raises(Exception, match="down"):
        rig.runner.process(readings)
    assert rig.alerts.alerts == {}
    rig.alerts.down = False
    rig.runner.process(readings)  # what the writer's retry does
    rig.runner.process(readings)  # and a redelivery on top
    assert rig.open_alerts() == [("pump-1", T0)]


def test_windows_are_rebuilt_from_the_store_before_the_first_reading_is_evaluated() -> None:
    rule = hot_rule(
        condition={
            "kind": "rolling",
            "aggregate": "mean",
            "comparison": "above",
            "threshold": 80.0,
            "window": "PT5M",
        }
    )
    rig = Rig(rule)
    # Stored before this process started: a mean of 90 over the last minutes.
    rig.telemetry.write(
        [Reading("pump-1", "temperature_c", T0_MS + s * 1000, 90.0) for s in range(0, 60, 10)]
    )
    rig.feed("pump-1", [60], [75.0])  # alone it is below 80; with history the mean is 87.9
    assert rig.open_alerts() == [("pump-1", T0 + timedelta(seconds=60))]


def test_the_timer_finishes_a_for_period_after_a_restart_with_the_last_value() -> None:
    rig = Rig(hot_rule(hold_for="PT30S"))
    rig.feed("pump-1", [0, 5, 10], [85.0, 86.0, 87.0])
    assert rig.alerts.states[next(iter(rig.alerts.states))].status is Status.PENDING

    runner = rig.restart()
    rig.clock.at = T0 + timedelta(seconds=29)
    runner.tick()
    assert rig.open_alerts() == []
    rig.clock.at = T0 + timedelta(seconds=31)
    runner.tick()
    [alert] = rig.alerts.alerts.values()
    assert alert.fired_at == T0 + timedelta(seconds=30)
    assert alert.value == 87.0  # the window came back from the store
    runner.tick()
    rig.restart().tick()
    assert len(rig.alerts.alerts) == 1


def test_no_data_is_noticed_for_a_device_that_went_silent_while_pmkeeper_was_down() -> None:
    rule = hot_rule(condition={"kind": "no_data", "silence": "PT5M"})
    rig = Rig(rule)
    rig.telemetry.write([Reading("pump-1", "temperature_c", T0_MS, 70.0)])
    runner = rig.restart()  # no reading arrives after this
    rig.clock.at = T0 + timedelta(minutes=4)
    runner.tick()
    assert rig.open_alerts() == []
    rig.clock.at = T0 + timedelta(minutes=6)
    runner.tick()
    assert rig.open_alerts() == [("pump-1", T0 + timedelta(minutes=5))]


def test_refresh_picks_up_new_rules_and_changed_asset_attributes() -> None:
    rig = Rig()
    rig.feed("fan-1", [0], [95.0])
    assert rig.open_alerts() == []

    rig.rules.add(hot_rule())
    rig.runner.refresh()
    rig.feed("fan-1", [1], [96.0])
    assert rig.open_alerts() == []  # still a fan
    rig.assets.update("fan-1", {"type": "pump"})
    rig.runner.refresh()
    rig.feed("fan-1", [2], [97.0])
    assert rig.open_alerts() == [("fan-1", T0 + timedelta(seconds=2))]

    rig.rules.delete("hot")
    rig.runner.refresh()
    rig.feed("pump-1", [3], [99.0])
    assert rig.open_alerts() == [("fan-1", T0 + timedelta(seconds=2))]


def test_an_unknown_asset_is_matched_once_registered() -> None:
    rig = Rig(hot_rule())
    rig.feed("pump-9", [0], [95.0])
    assert rig.open_alerts() == []  # attributes unknown: a type selector cannot match
    rig.assets.add(Asset(id="pump-9", name="Pump 9", type="pump", site="north"))
    rig.runner.refresh()
    rig.feed("pump-9", [1], [95.0])
    assert rig.open_alerts() == [("pump-9", T0 + timedelta(seconds=1))]


def test_the_writer_acknowledges_only_after_the_rules_recorded_the_batch() -> None:
    rig = Rig(hot_rule())
    settings = IngestSettings(retry_initial_s=0.01, retry_max_s=0.02, flush_interval_ms=5)
    acked: list[tuple[int, int]] = []
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    worker = IngestWorker(
        decoder=PayloadDecoder(settings, "pmk/+/telemetry"),
        store=rig.telemetry,
        deadletters=InMemoryDeadLetterRepository(),
        assets=rig.assets,
        settings=settings,
        metrics=metrics,
        clock=rig.clock,
        acknowledge=lambda messages: acked.extend(
            (m.mid, len(rig.alerts.alerts)) for m in messages
        ),
        after_store=rig.runner.process,
    )
    payload = json.dumps({"ts": T0_MS, "metrics": {"temperature_c": 90.0}}).encode()
    rig.alerts.down = True
    writer = threading.Thread(target=worker.run)
    writer.start()
    try:
        worker.offer(RawMessage("pmk/pump-1/telemetry", payload, 7, 1, T0_MS, 1))
        wait_until(
            lambda: (registry.get_sample_value("pmkeeper_store_retries_total") or 0) >= 2,
            what="retries",
        )
        assert acked == []  # stored, but the rules could not record it: not acknowledged
        rig.alerts.down = False
        wait_until(lambda: acked, what="the acknowledgement")
    finally:
        worker.stop()
        writer.join(5)
    assert acked == [(7, 1)]  # acknowledged once, with the alert already recorded


def test_a_batch_of_cold_series_is_warmed_in_one_round_trip() -> None:
    rig = Rig(hot_rule(selector={"metric": "temperature_c"}))
    readings = [Reading(f"pump-{n}", "temperature_c", T0_MS, 70.0) for n in range(50)]
    rig.telemetry.write(readings)
    rig.runner.process(readings)
    rig.runner.process([r._replace(ts_ms=T0_MS + 1000) for r in readings])
    assert rig.telemetry.read_many_calls == 1  # 50 series, one call; warm series stay warm


def test_draining_a_backlog_does_not_make_lagging_series_look_silent() -> None:
    rule = hot_rule(condition={"kind": "no_data", "silence": "PT5M"})
    rig = Rig(rule)
    rig.assets.add(Asset(id="pump-2", name="Pump 2", type="pump", site="north"))
    rig.runner.refresh()
    # Back after an outage, 30 minutes late: the broker hands over the queued readings in
    # the order they were published, every 4 minutes of event time for both pumps.
    rig.clock.at = T0 + timedelta(minutes=30)
    for minute in range(0, 13, 4):
        rig.feed("pump-1", [minute * 60], [70.0])
        rig.feed("pump-2", [minute * 60 + 30], [70.0])
        rig.runner.tick()
        # By the wall clock both pumps look silent for 18 minutes or more; they are not.
        assert rig.open_alerts() == []

    # Readings stop arriving altogether: a few seconds later the wall clock rules, and
    # both pumps are silent from their last reading, so both fire 5 minutes after it.
    rig.clock.at = T0 + timedelta(minutes=30, seconds=6)
    rig.runner.tick()
    assert rig.open_alerts() == [
        ("pump-1", T0 + timedelta(minutes=17)),
        ("pump-2", T0 + timedelta(minutes=17, seconds=30)),
    ]
