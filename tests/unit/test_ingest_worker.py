"""The ingest writer: acknowledge only after a durable write, never drop, dead-letter bad input."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from core.assets import Asset
from core.clock import FrozenClock
from core.deadletters import DeadLetter
from core.settings import IngestSettings, UnknownAssetPolicy
from ingest.metrics import IngestMetrics
from ingest.payloads import PayloadDecoder
from ingest.worker import IngestWorker, RawMessage
from tests.fakes import (
    InMemoryAssetRepository,
    InMemoryDeadLetterRepository,
    InMemoryTelemetryStore,
)
from tests.support.polling import wait_until

NOW = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def _message(asset: str, ts_ms: int, value: float, mid: int = 1, qos: int = 1) -> RawMessage:
    payload = json.dumps({"ts": ts_ms, "metrics": {"temperature_c": value}}).encode()
    return RawMessage(f"pmk/{asset}/telemetry", payload, mid, qos, NOW_MS, 1)


def _raw(topic: str, payload: bytes, mid: int) -> RawMessage:
    return RawMessage(topic, payload, mid, 1, NOW_MS, 1)


class Harness:
    """A worker wired to in-memory ports, recording what it acknowledges and when."""

    def __init__(self, policy: UnknownAssetPolicy = UnknownAssetPolicy.AUTO_REGISTER) -> None:
        self.settings = IngestSettings(
            unknown_assets=policy, retry_initial_s=0.01, retry_max_s=0.02, flush_interval_ms=5
        )
        self.store = InMemoryTelemetryStore()
        self.assets = InMemoryAssetRepository(
            [Asset(id="pump-1", name="P1", type="pump", site="s")]
        )
        self.deadletters = InMemoryDeadLetterRepository()
        self.registry = CollectorRegistry()
        self.acked: list[int] = []
        self.stored_at_ack: list[int] = []
        self.worker = IngestWorker(
            decoder=PayloadDecoder(self.settings, "pmk/+/telemetry"),
            store=self.store,
            deadletters=self.deadletters,
            assets=self.assets,
            settings=self.settings,
            metrics=IngestMetrics(self.registry),
            clock=FrozenClock(NOW),
            acknowledge=self._ack,
        )

    def _ack(self, messages: Sequence[RawMessage]) -> None:
        self.acked.extend(m.mid for m in messages)
        # Snapshot what is durable at the moment of acknowledgement.
        self.stored_at_ack.append(len(self.store.points) + self.deadletters.count())

    def drain(self, messages: Sequence[RawMessage]) -> None:
        for message in messages:
            self.worker.offer(message)
        self.worker.stop()
        self.worker.run()

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value


def test_readings_are_stored_with_event_time_then_acknowledged_in_order() -> None:
    h = Harness()
    h.drain([_message("pump-1", NOW_MS - 1000 * i, 70.0 + i, mid=i + 1) for i in range(5)])
    assert h.acked == [1, 2, 3, 4, 5]
    assert h.store.points == {
        ("pump-1", "temperature_c", NOW_MS - 1000 * i): 70.0 + i for i in range(5)
    }
    assert h.stored_at_ack[0] == 5  # all five were durable before the first PUBACK
    assert h.metric("pmkeeper_messages_received_total") == 5
    assert h.metric("pmkeeper_points_written_total") == 5


def test_a_bad_message_becomes_a_dead_letter_and_the_stream_goes_on() -> None:
    h = Harness()
    h.drain(
        [
            _message("pump-1", NOW_MS, 1.0, mid=1),
            _raw("pmk/pump-1/telemetry", b'{"ts": 1, "metrics": {"x": NaN}}', mid=2),
            _message("pump-1", NOW_MS + 1, 2.0, mid=3),
        ]
    )
    assert h.acked == [1, 2, 3]
    assert len(h.store.points) == 2
    [letter] = h.deadletters.letters
    assert letter.code == "non_finite"
    assert letter.topic == "pmk/pump-1/telemetry"
    assert letter.payload == b'{"ts": 1, "metrics": {"x": NaN}}'
    assert letter.received_at == NOW
    assert h.metric("pmkeeper_deadletters_total") == 1
    assert h.metric("pmkeeper_deadletter_codes_total", code="non_finite") == 1


def test_dead_letter_payload_is_truncated_but_its_size_kept() -> None:
    h = Harness()
    h.settings.deadletter_payload_bytes = 16
    big = b"{" + b"x" * 500
    h.drain([_raw("pmk/pump-1/telemetry", big, mid=1)])
    [letter] = h.deadletters.letters
    assert letter.payload == big[:16]
    assert letter.payload_size == len(big)


def test_unknown_asset_is_dead_lettered_under_that_policy() -> None:
    h = Harness(UnknownAssetPolicy.DEAD_LETTER)
    h.drain([_message("ghost-9", NOW_MS, 1.0, mid=1), _message("pump-1", NOW_MS, 2.0, mid=2)])
    assert h.acked == [1, 2]
    assert list(h.store.points) == [("pump-1", "temperature_c", NOW_MS)]
    [letter] = h.deadletters.letters
    assert (letter.code, letter.asset_id) == ("unknown_asset", "ghost-9")
    assert "not registered" in letter.reason
    assert "ghost-9" not in h.assets.assets


def test_unknown_asset_is_registered_under_auto_register() -> None:
    h = Harness(UnknownAssetPolicy.AUTO_REGISTER)
    h.drain([_message("new-7", NOW_MS, 1.0, mid=1)])
    assert h.assets.assets["new-7"].auto_registered
    assert ("new-7", "temperature_c", NOW_MS) in h.store.points
    assert h.deadletters.count() == 0


def test_a_redelivered_message_overwrites_instead_of_duplicating() -> None:
    h = Harness()
    h.drain([_message("pump-1", NOW_MS, 5.0, mid=1), _message("pump-1", NOW_MS, 5.0, mid=1)])
    assert len(h.store.points) == 1


def test_store_refusing_one_message_dead_letters_only_that_one() -> None:
    h = Harness()
    h.store.rejected_assets = {"bad-1"}
    h.drain([_message("pump-1", NOW_MS, 1.0, mid=1), _message("bad-1", NOW_MS, 2.0, mid=2)])
    assert h.acked == [1, 2]
    assert list(h.store.points) == [("pump-1", "temperature_c", NOW_MS)]
    [letter] = h.deadletters.letters
    assert letter.code == "store_rejected"
    assert "field type conflict" in letter.reason


def test_store_outage_holds_acks_retries_and_logs_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    h.store.down = True
    writer = threading.Thread(target=h.worker.run)
    writer.start()
    try:
        with caplog.at_level(logging.WARNING, logger="ingest.worker"):
            for i in range(3):
                h.worker.offer(_message("pump-1", NOW_MS + i, float(i), mid=i + 1))
            wait_until(lambda: h.metric("pmkeeper_store_retries_total") >= 3, what="retries")
            assert h.acked == []
            assert h.metric("pmkeeper_store_up") == 0
            h.store.down = False
            wait_until(lambda: len(h.acked) == 3, what="acks after recovery")
    finally:
        h.worker.stop()
        writer.join(5)
    assert h.acked == [1, 2, 3]
    assert len(h.store.points) == 3
    assert h.metric("pmkeeper_store_up") == 1
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("store_lost") == 1
    assert events.count("store_back") == 1


def test_stopping_while_the_store_is_down_acknowledges_nothing() -> None:
    h = Harness()
    h.store.down = True
    h.drain([_message("pump-1", NOW_MS, 1.0, mid=1)])
    assert h.acked == []
    assert h.store.points == {}


def test_dead_letter_store_outage_also_holds_the_ack() -> None:
    h = Harness()
    h.deadletters.down = True
    writer = threading.Thread(target=h.worker.run)
    writer.start()
    try:
        h.worker.offer(_raw("pmk/pump-1/telemetry", b"not json", mid=7))
        wait_until(lambda: h.metric("pmkeeper_store_retries_total") >= 2, what="retries")
        assert h.acked == []
        h.deadletters.down = False
        wait_until(lambda: h.acked == [7], what="ack after the database is back")
    finally:
        h.worker.stop()
        writer.join(5)
    assert h.deadletters.letters[0].code == "bad_json"


def test_full_queue_blocks_the_producer_instead_of_dropping() -> None:
    h = Harness()
    h.settings.queue_size = 2
    h.worker = IngestWorker(
        decoder=PayloadDecoder(h.settings, "pmk/+/telemetry"),
        store=h.store,
        deadletters=h.deadletters,
        assets=h.assets,
        settings=h.settings,
        metrics=IngestMetrics(CollectorRegistry()),
        clock=FrozenClock(NOW),
        acknowledge=lambda messages: None,
    )
    h.worker.offer(_message("pump-1", NOW_MS, 1.0, mid=1))
    h.worker.offer(_message("pump-1", NOW_MS + 1, 1.0, mid=2))
    blocked = threading.Thread(target=h.worker.offer, args=(_message("pump-1", NOW_MS + 2, 1, 3),))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "offer returned although the queue was full"
    h.worker.stop()
    h.worker.run()
    blocked.join(5)
    assert not blocked.is_alive()


class _FlakyDeadLetters(InMemoryDeadLetterRepository):
    """Fails with an unexpected error a few times, as a driver bug or lost socket might."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def add_many(self, letters: Sequence[DeadLetter]) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("connection reset by peer")
        super().add_many(letters)


def test_an_unexpected_store_error_is_retried_instead_of_ending_the_writer() -> None:
    h = Harness()
    flaky = _FlakyDeadLetters(failures=2)
    h.worker._deadletters = flaky
    writer = threading.Thread(target=h.worker.run)
    writer.start()
    try:
        h.worker.offer(_raw("pmk/pump-1/telemetry", b"not json", mid=4))
        h.worker.offer(_message("pump-1", NOW_MS, 1.0, mid=5))
        wait_until(lambda: h.acked == [4, 5], what="acks once the error stops")
        assert writer.is_alive()
    finally:
        h.worker.stop()
        writer.join(5)
    assert [d.code for d in flaky.letters] == ["bad_json"]
    assert h.metric("pmkeeper_store_retries_total") == 2
