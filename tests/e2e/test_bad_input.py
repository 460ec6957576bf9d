"""Malformed telemetry through the real broker: each becomes a dead letter, the rest lands."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from core.assets import Asset
from storage.db import create_engine_for
from storage.repositories import SqlAssetRepository, SqlDeadLetterRepository
from storage.telemetry_sqlite import SqliteTelemetryStore
from tests.e2e.conftest import StartIngest
from tests.support.mosquitto import MosquittoBroker
from tests.support.polling import wait_until
from tests.support.publishing import publish

pytestmark = [pytest.mark.external_service]

ASSET = "press-7"
TOPIC = f"pmk/{ASSET}/telemetry"
NOW_MS = time.time_ns() // 1_000_000
DAY_MS = 24 * 3600 * 1000
GOOD: dict[str, object] = {"ts": NOW_MS, "metrics": {"a": 1}}


def _obj(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def _batch(*items: object) -> bytes:
    return json.dumps(list(items)).encode()


# (case id, topic, payload, expected dead-letter code). Timestamps are relative to the
# real clock because the ingest child validates against its own arrival time.
BAD: list[tuple[str, str, bytes, str]] = [
    ("bad-json", TOPIC, b"{not json", "bad_json"),
    ("truncated-json", TOPIC, b'{"ts": 1, "metrics": {"a": 1', "bad_json"),
    ("empty", TOPIC, b"", "bad_json"),
    ("nan", TOPIC, b'{"ts": %d, "metrics": {"a": NaN}}' % NOW_MS, "non_finite"),
    ("infinity", TOPIC, b'{"ts": %d, "metrics": {"a": Infinity}}' % NOW_MS, "non_finite"),
    ("overflow-to-inf", TOPIC, b'{"ts": %d, "metrics": {"a": 1e400}}' % NOW_MS, "non_finite"),
    ("string-number", TOPIC, _obj(ts=NOW_MS, metrics={"a": "71.3"}), "bad_value"),
    ("bool-value", TOPIC, _obj(ts=NOW_MS, metrics={"a": True}), "bad_value"),
    ("null-value", TOPIC, _obj(ts=NOW_MS, metrics={"a": None}), "bad_value"),
    ("nested-value", TOPIC, _obj(ts=NOW_MS, metrics={"a": {"b": 1}}), "bad_value"),
    ("missing-ts", TOPIC, _obj(metrics={"a": 1}), "missing_ts"),
    ("future-ts", TOPIC, _obj(ts=NOW_MS + DAY_MS, metrics={"a": 1}), "ts_in_future"),
    ("ancient-ts", TOPIC, _obj(ts=NOW_MS - 400 * DAY_MS, metrics={"a": 1}), "ts_too_old"),
    ("seconds-ts", TOPIC, _obj(ts=NOW_MS // 1000, metrics={"a": 1}), "ts_looks_like_seconds"),
    ("naive-iso-ts", TOPIC, _obj(ts="2026-11-22T07:00:00", metrics={"a": 1}), "naive_ts"),
    ("garbage-ts", TOPIC, _obj(ts="yesterday", metrics={"a": 1}), "bad_ts"),
    ("oversized", TOPIC, b"[" + b" " * 300_000 + b"]", "too_large"),
    ("deeply-nested", TOPIC, b"[" * 50_000 + b"]" * 50_000, "too_deep"),
    ("not-utf8", TOPIC, b'{"ts": 1, "metrics": {"\xff": 1}}', "not_utf8"),
    ("top-level-string", TOPIC, b'"hello"', "bad_shape"),
    ("empty-batch", TOPIC, b"[]", "empty_batch"),
    ("bad-item-in-batch", TOPIC, _batch(GOOD, {"ts": NOW_MS}), "missing_metrics"),
    ("empty-metrics", TOPIC, _obj(ts=NOW_MS, metrics={}), "empty_metrics"),
    ("unexpected-field", TOPIC, _obj(ts=NOW_MS, metrics={"a": 1}, extra=1), "unexpected_field"),
    ("bad-metric-name", TOPIC, _obj(ts=NOW_MS, metrics={"9 lives": 1}), "bad_metric_name"),
    ("reserved-metric-time", TOPIC, _obj(ts=NOW_MS, metrics={"time": 1}), "bad_metric_name"),
    ("bare-number-not-number", f"{TOPIC}/temperature_c", b"hot", "bad_json"),
    ("bare-number-object", f"{TOPIC}/temperature_c", _obj(a=1), "bad_shape"),
    ("bare-number-nan", f"{TOPIC}/temperature_c", b"NaN", "non_finite"),
    ("topic-bad-asset-id", "pmk/bad asset!/telemetry", _obj(**GOOD), "bad_asset_id"),
    ("topic-bad-metric-level", f"{TOPIC}/9lives", b"1.5", "bad_metric_name"),
    ("unknown-asset", "pmk/ghost-3/telemetry", _obj(**GOOD), "unknown_asset"),
]  # fmt: skip


def test_each_malformed_message_is_a_dead_letter_and_its_neighbours_are_stored(
    mosquitto: MosquittoBroker, start_ingest: StartIngest
) -> None:
    assert len(BAD) >= 25
    child = start_ingest(mosquitto.url, PMK_INGEST__UNKNOWN_ASSETS="dead_letter")
    engine = create_engine_for(f"sqlite:///{child.workdir}/pmkeeper.db")
    SqlAssetRepository(engine).add(Asset(id=ASSET, name="Press 7", type="press", site="north"))
    messages: list[tuple[str, bytes]] = []
    for index, (_, topic, payload, _) in enumerate(BAD):
        good = _obj(ts=NOW_MS - 1000 + index, metrics={"good": float(index)})
        messages += [(TOPIC, good), (topic, payload)]
    messages.append((TOPIC, _obj(ts=NOW_MS, metrics={"good": 999.0})))
    publish(mosquitto.url, messages)

    deadletters = SqlDeadLetterRepository(engine)
    expected = BAD
    wait_until(lambda: deadletters.count() >= len(expected), timeout_s=20, what="all dead letters")
    stored = SqliteTelemetryStore(child.workdir / "data" / "telemetry.db")
    start = datetime.now(tz=UTC) - timedelta(hours=1)
    end = datetime.now(tz=UTC) + timedelta(hours=1)
    wait_until(
        lambda: len(stored.read(ASSET, "good", start, end, 1000)) == len(BAD) + 1,
        what="every good neighbour stored",
    )
    values = sorted(p.value for p in stored.read(ASSET, "good", start, end, 1000))
    assert values == [*(float(i) for i in range(len(BAD))), 999.0]
    assert stored.latest(ASSET).keys() == {"good"}  # nothing of a refused message landed
    stored.close()

    letters = list(reversed(deadletters.list(limit=1000)))  # oldest first = publish order
    assert [(d.topic, d.code) for d in letters] == [(t, code) for _, t, _, code in expected]
    for letter, (case, _, payload, _) in zip(letters, expected, strict=True):
        assert letter.reason, case
        assert letter.payload == payload[:4096], case
        assert letter.payload_size == len(payload), case
    assert child.metric("pmkeeper_deadletters_total") == len(expected)
