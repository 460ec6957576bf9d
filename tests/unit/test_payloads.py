"""Telemetry payload decoding: what is accepted, and the exact code and reason of what is not."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass

import pytest

from core.settings import IngestSettings
from core.telemetry import Reading
from ingest.payloads import PayloadDecoder, PayloadError, TopicParser

# The frozen arrival time of every message: 2026-11-22T07:00:00Z.
RECEIVED_MS = 1_795_330_800_000
ASSET = "sim-0001"
TOPIC = f"pmk/{ASSET}/telemetry"
METRIC_TOPIC = f"{TOPIC}/temperature_c"
SETTINGS = IngestSettings(
    max_payload_bytes=256 * 1024,
    max_batch_items=5,
    max_metrics_per_reading=4,
    max_future_s=300,
    max_past_s=30 * 24 * 3600,
)


def _obj(ts: object = RECEIVED_MS - 1000, **metrics: object) -> dict[str, object]:
    return {"ts": ts, "metrics": metrics or {"temperature_c": 71.3}}


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _decoder(pattern: str = "pmk/+/telemetry") -> PayloadDecoder:
    return PayloadDecoder(SETTINGS, pattern)


@dataclass(frozen=True)
class Bad:
    """A refused message: the code it must get and substrings its reason must contain."""

    payload: bytes
    code: str
    mentions: tuple[str, ...]
    topic: str = TOPIC


GOOD_TS = RECEIVED_MS - 1000
VALID = b'{"ts": %d, "metrics": {"temperature_c": 71.3}}' % GOOD_TS

BAD_PAYLOADS = {
    # Not JSON at all.
    "bad-json-word": Bad(b"hello", "bad_json", ("not valid JSON", "line 1 column 1")),
    "truncated-json": Bad(VALID[:-7], "bad_json", ("not valid JSON", "column")),
    "trailing-garbage": Bad(VALID + b" x", "bad_json", ("Extra data",)),
    "single-quotes": Bad(b"{'ts': 1}", "bad_json", ("not valid JSON",)),
    "empty-payload": Bad(b"", "bad_json", ("empty",)),
    "whitespace-payload": Bad(b"  \n ", "bad_json", ("empty",)),
    "utf8-bom": Bad(b"\xef\xbb\xbf" + VALID, "bad_json", ("byte order mark",)),
    "not-utf8-ff": Bad(b"\xff\xfe{}", "not_utf8", ("0xff", "offset 0")),
    "not-utf8-latin1-name": Bad(
        b'{"ts": 1, "metrics": {"temp\xe9rature": 1}}', "not_utf8", ("0xe9", "offset 27")
    ),
    "too-large": Bad(b" " * (256 * 1024 + 1), "too_large", ("262145 bytes", "262144")),
    "too-deep-arrays": Bad(b"[" * 100_000, "too_deep", ("nested too deeply",)),
    "too-deep-objects": Bad(b'{"a":' * 20_000, "too_deep", ("nested too deeply",)),
    # Numbers that are not finite.
    "value-nan": Bad(
        b'{"ts": %d, "metrics": {"temperature_c": NaN}}' % GOOD_TS,
        "non_finite",
        ("metrics.temperature_c is NaN",),
    ),
    "value-infinity": Bad(
        b'{"ts": %d, "metrics": {"temperature_c": Infinity}}' % GOOD_TS,
        "non_finite",
        ("metrics.temperature_c is Infinity",),
    ),
    "value-minus-infinity": Bad(
        b'{"ts": %d, "metrics": {"temperature_c": -Infinity}}' % GOOD_TS,
        "non_finite",
        ("metrics.temperature_c is -Infinity",),
    ),
    "value-1e400": Bad(
        b'{"ts": %d, "metrics": {"temperature_c": 1e400}}' % GOOD_TS,
        "non_finite",
        ("metrics.temperature_c", "float range"),
    ),
    "value-huge-integer": Bad(
        b'{"ts": %d, "metrics": {"temperature_c": 1%s}}' % (GOOD_TS, b"0" * 400),
        "non_finite",
        ("metrics.temperature_c", "401 digits"),
    ),
    "value-integer-over-4300-digits": Bad(
        b'{"ts": %d, "metrics": {"temperature_c": 1%s}}' % (GOOD_TS, b"0" * 5000),
        "bad_value",
        ("4300 digits",),
    ),
    # Values that are not numbers.
    "value-string": Bad(
        _json(_obj(temperature_c="71.3")),
        "bad_value",
        ('metrics.temperature_c is a string ("71.3")', "JSON numbers"),
    ),
    "value-bool": Bad(
        _json(_obj(running=True)), "bad_value", ("metrics.running is a boolean (true)",)
    ),
    "value-null": Bad(_json(_obj(temperature_c=None)), "bad_value", ("temperature_c is null",)),
    "value-nested-object": Bad(
        _json(_obj(temperature_c={"value": 1})), "bad_value", ("temperature_c is an object",)
    ),
    "value-nested-array": Bad(
        _json(_obj(temperature_c=[1, 2])), "bad_value", ("temperature_c is an array",)
    ),
    # Reading shape.
    "metrics-empty": Bad(
        _json({"ts": GOOD_TS, "metrics": {}}), "empty_metrics", ("metrics is an empty object",)
    ),
    "metrics-missing": Bad(_json({"ts": GOOD_TS}), "missing_metrics", ('no "metrics"',)),
    "metrics-is-array": Bad(
        _json({"ts": GOOD_TS, "metrics": [71.3]}), "bad_shape", ("metrics is an array",)
    ),
    "metrics-is-number": Bad(
        _json({"ts": GOOD_TS, "metrics": 71.3}), "bad_shape", ("metrics is a number (71.3)",)
    ),
    "too-many-metrics": Bad(
        _json(_obj(a=1, b=2, c=3, d=4, e=5)), "too_many_metrics", ("5 entries", "limit is 4")
    ),
    "unexpected-field": Bad(
        _json({**_obj(), "unit": "C"}), "unexpected_field", ('unexpected field "unit"',)
    ),
    "unexpected-fields-several": Bad(
        _json({"ts": GOOD_TS, "metrics": {"a": 1}, "z": 1, "unit": "C"}),
        "unexpected_field",
        ('"unit" (and 1 more)',),
    ),
    "misspelled-metrics-key": Bad(
        _json({"ts": GOOD_TS, "metric": {"a": 1}}), "unexpected_field", ('"metric"',)
    ),
    # Timestamps.
    "ts-missing": Bad(_json({"metrics": {"a": 1}}), "missing_ts", ('no "ts"',)),
    "ts-future-iso": Bad(
        _json(_obj(ts="2026-11-23T07:00:00Z")),
        "ts_in_future",
        ('ts "2026-11-23T07:00:00Z"', "24 h ahead", "300 s"),
    ),
    "ts-future-ms": Bad(
        _json(_obj(ts=RECEIVED_MS + 301_000)), "ts_in_future", ("301 s ahead", "300 s")
    ),
    "ts-past-iso": Bad(
        _json(_obj(ts="2025-01-01T00:00:00Z")),
        "ts_too_old",
        ('ts "2025-01-01T00:00:00Z"', "690.3 days before", "30 days old"),
    ),
    "ts-epoch-zero": Bad(_json(_obj(ts=0)), "ts_too_old", ("1970-01-01T00:00:00.000Z",)),
    "ts-negative": Bad(_json(_obj(ts=-5)), "ts_too_old", ("ts -5",)),
    "ts-in-seconds": Bad(
        _json(_obj(ts=RECEIVED_MS // 1000 - 1)),
        "ts_looks_like_seconds",
        ("ts 1795330799", "read as epoch seconds it is 2026-11-22T06:59:59.000Z"),
    ),
    "ts-in-seconds-float": Bad(
        _json(_obj(ts=1795330799.0)), "ts_looks_like_seconds", ("epoch seconds",)
    ),
    "ts-in-microseconds": Bad(
        _json(_obj(ts=RECEIVED_MS * 1000)), "ts_in_future", ("epoch microseconds",)
    ),
    "ts-naive-iso": Bad(
        _json(_obj(ts="2026-11-22T07:00:00")),
        "naive_ts",
        ('"2026-11-22T07:00:00" has no time zone', "Z or an offset"),
    ),
    "ts-date-only": Bad(_json(_obj(ts="2026-11-22")), "naive_ts", ("no time zone",)),
    "ts-garbage-string": Bad(
        _json(_obj(ts="yesterday")), "bad_ts", ('ts "yesterday" is not an ISO-8601 timestamp',)
    ),
    "ts-numeric-string": Bad(
        _json(_obj(ts=str(GOOD_TS))), "bad_ts", (f'"{GOOD_TS}"', "not an ISO-8601")
    ),
    "ts-empty-string": Bad(_json(_obj(ts="")), "bad_ts", ('ts ""',)),
    "ts-very-long-string": Bad(
        _json(_obj(ts="2026-11-22T07:00:00Z" + " " * 100)), "bad_ts", ("120 characters long",)
    ),
    "ts-bool": Bad(_json(_obj(ts=True)), "bad_ts", ("ts is a boolean (true)",)),
    "ts-null": Bad(_json(_obj(ts=None)), "bad_ts", ("ts is null",)),
    "ts-object": Bad(_json(_obj(ts={"ms": 1})), "bad_ts", ("ts is an object",)),
    "ts-fractional-ms": Bad(
        _json(_obj(ts=GOOD_TS + 0.5)), "bad_ts", ("fractional part", "whole number")
    ),
    "ts-nan": Bad(b'{"ts": NaN, "metrics": {"a": 1}}', "non_finite", ("ts is NaN",)),
    "ts-1e400": Bad(b'{"ts": 1e400, "metrics": {"a": 1}}', "non_finite", ("ts Infinity",)),
    # Top-level shape on the object topic.
    "top-level-string": Bad(b'"71.3"', "bad_shape", ('payload is a string ("71.3")',)),
    "top-level-number": Bad(b"71.3", "bad_shape", ("payload is a number (71.3)",)),
    "top-level-null": Bad(b"null", "bad_shape", ("payload is null",)),
    "top-level-bool": Bad(b"true", "bad_shape", ("payload is a boolean (true)",)),
    # Batches.
    "batch-empty": Bad(b"[]", "empty_batch", ("empty array",)),
    "batch-too-large": Bad(_json([_obj()] * 6), "batch_too_large", ("6 items", "limit is 5")),
    "batch-one-bad-item": Bad(
        _json([_obj(), _obj(), _obj(temperature_c="hot"), _obj()]),
        "bad_value",
        ('item 2: metrics.temperature_c is a string ("hot")',),
    ),
    "batch-item-not-object": Bad(
        _json([_obj(), 71.3]), "bad_shape", ("item 1 is a number (71.3)",)
    ),
    "batch-nested-array": Bad(_json([[_obj()]]), "bad_shape", ("item 0 is an array",)),
    "batch-item-unexpected-field": Bad(
        _json([_obj(), {**_obj(), "unit": "C"}]),
        "unexpected_field",
        ('item 1: unexpected field "unit"',),
    ),
    "batch-item-bad-ts": Bad(
        _json([_obj(), _obj(), _obj(), _obj(ts="2026-11-22T07:00:00")]),
        "naive_ts",
        ("item 3: ts",),
    ),
    # Metric names.
    "name-with-space": Bad(_json(_obj(**{"temp c": 1})), "bad_metric_name", ('"temp c"',)),
    "name-leading-digit": Bad(_json(_obj(**{"1temp": 1})), "bad_metric_name", ('"1temp"',)),
    "name-with-dash": Bad(_json(_obj(**{"temp-c": 1})), "bad_metric_name", ('"temp-c"',)),
    "name-empty": Bad(_json(_obj(**{"": 1})), "bad_metric_name", ('name ""',)),
    "name-time-reserved": Bad(_json(_obj(time=1)), "bad_metric_name", ('"time" is reserved',)),
    "name-Time-reserved": Bad(_json(_obj(Time=1)), "bad_metric_name", ('"Time" is reserved',)),
    "name-too-long": Bad(
        _json(_obj(**{"a" * 65: 1})), "bad_metric_name", ("65 characters long", "at most 64")
    ),
    "name-unicode": Bad(_json(_obj(**{"température": 1})), "bad_metric_name", ('"température"',)),
    "name-trailing-newline": Bad(_json(_obj(**{"temp\n": 1})), "bad_metric_name", ('"temp\\n"',)),
    # Topic shapes.
    "topic-too-few-levels": Bad(VALID, "bad_topic", ("2 levels",), topic="pmk/sim-0001"),
    "topic-too-many-levels": Bad(
        VALID, "bad_topic", ("5 levels",), topic="pmk/sim-0001/telemetry/a/b"
    ),
    "topic-wrong-literal": Bad(
        VALID, "bad_topic", ('level 3 is "telemetri"',), topic="pmk/sim-0001/telemetri"
    ),
    "topic-wrong-root": Bad(VALID, "bad_topic", ('level 1 is "pmx"',), topic="pmx/a/telemetry"),
    "topic-empty-asset": Bad(VALID, "bad_asset_id", ("empty",), topic="pmk//telemetry"),
    "topic-asset-space": Bad(
        VALID, "bad_asset_id", ('asset id "sim 1"',), topic="pmk/sim 1/telemetry"
    ),
    "topic-asset-leading-dot": Bad(
        VALID, "bad_asset_id", ('".hidden"',), topic="pmk/.hidden/telemetry"
    ),
    "topic-asset-newline": Bad(
        VALID, "bad_asset_id", ('"sim-1\\n"',), topic="pmk/sim-1\n/telemetry"
    ),
    "topic-asset-too-long": Bad(
        VALID, "bad_asset_id", ("is not valid",), topic=f"pmk/{'a' * 129}/telemetry"
    ),
    "topic-metric-level-reserved": Bad(
        b"1", "bad_metric_name", ('"time" is reserved',), topic=f"{TOPIC}/time"
    ),
    "topic-metric-level-empty": Bad(b"1", "bad_metric_name", ('name ""',), topic=f"{TOPIC}/"),
    # Bare numbers on the per-metric topic.
    "bare-json-object": Bad(VALID, "bad_shape", ("an object", "one bare"), topic=METRIC_TOPIC),
    "bare-json-array": Bad(b"[1]", "bad_shape", ("an array",), topic=METRIC_TOPIC),
    "bare-nan": Bad(b"NaN", "non_finite", ("payload contains NaN",), topic=METRIC_TOPIC),
    "bare-infinity": Bad(b"-Infinity", "non_finite", ("-Infinity",), topic=METRIC_TOPIC),
    "bare-1e400": Bad(b"1e400", "non_finite", ("float range",), topic=METRIC_TOPIC),
    "bare-empty": Bad(b"", "bad_json", ("empty",), topic=METRIC_TOPIC),
    "bare-string": Bad(b'"71.3"', "bad_value", ('a string ("71.3")',), topic=METRIC_TOPIC),
    "bare-bool": Bad(b"false", "bad_value", ("a boolean (false)",), topic=METRIC_TOPIC),
    "bare-null": Bad(b"null", "bad_value", ("payload is null",), topic=METRIC_TOPIC),
    "bare-unit-suffix": Bad(b"71.3C", "bad_json", ("Extra data",), topic=METRIC_TOPIC),
}

TOPIC_CODES = {"bad_topic", "bad_asset_id"}


@pytest.mark.parametrize("case", list(BAD_PAYLOADS.values()), ids=list(BAD_PAYLOADS))
def test_bad_message_is_refused_with_code_and_reason(case: Bad) -> None:
    with pytest.raises(PayloadError) as caught:
        _decoder().decode(case.topic, case.payload, RECEIVED_MS)

    error = caught.value
    assert error.code == case.code, error.reason
    for detail in case.mentions:
        assert detail in error.reason
    assert error.asset_id == (None if case.code in TOPIC_CODES else _asset_of(case.topic))


def _asset_of(topic: str) -> str | None:
    level = topic.split("/")[1]
    return level or None


def test_bad_topic_metric_level_keeps_the_asset_id() -> None:
    with pytest.raises(PayloadError) as caught:
        _decoder().decode(f"{TOPIC}/1x", b"1", RECEIVED_MS)

    assert (caught.value.code, caught.value.asset_id) == ("bad_metric_name", ASSET)


def test_error_str_carries_code_and_reason() -> None:
    with pytest.raises(PayloadError, match=r"^empty_batch: payload is an empty array"):
        _decoder().decode(TOPIC, b"[]", RECEIVED_MS)


GOOD_PAYLOADS = {
    "iso-z": (
        b'{"ts": "2026-11-22T06:59:00Z", "metrics": {"temperature_c": 71.3}}',
        [Reading(ASSET, "temperature_c", RECEIVED_MS - 60_000, 71.3)],
    ),
    "iso-plus-0200-offset": (
        b'{"ts": "2026-11-22T08:59:00+02:00", "metrics": {"temperature_c": 71.3}}',
        [Reading(ASSET, "temperature_c", RECEIVED_MS - 60_000, 71.3)],
    ),
    "iso-minus-0530-offset": (
        b'{"ts": "2026-11-22T01:29:00-05:30", "metrics": {"temperature_c": 71.3}}',
        [Reading(ASSET, "temperature_c", RECEIVED_MS - 60_000, 71.3)],
    ),
    "iso-milliseconds": (
        b'{"ts": "2026-11-22T06:59:59.123Z", "metrics": {"a": 1}}',
        [Reading(ASSET, "a", RECEIVED_MS - 877, 1.0)],
    ),
    "iso-microseconds-floor-to-ms": (
        b'{"ts": "2026-11-22T06:59:59.123999Z", "metrics": {"a": 1}}',
        [Reading(ASSET, "a", RECEIVED_MS - 877, 1.0)],
    ),
    "epoch-ms-int": (
        b'{"ts": 1795330799000, "metrics": {"a": -4.5e-3}}',
        [Reading(ASSET, "a", RECEIVED_MS - 1000, -0.0045)],
    ),
    "epoch-ms-integral-float": (
        b'{"ts": 1795330799000.0, "metrics": {"a": 0}}',
        [Reading(ASSET, "a", RECEIVED_MS - 1000, 0.0)],
    ),
    "edge-max-future": (
        _json(_obj(ts=RECEIVED_MS + 300_000, a=1)),
        [Reading(ASSET, "a", RECEIVED_MS + 300_000, 1.0)],
    ),
    "edge-max-past": (
        _json(_obj(ts=RECEIVED_MS - 30 * 86_400_000, a=1)),
        [Reading(ASSET, "a", RECEIVED_MS - 30 * 86_400_000, 1.0)],
    ),
    "several-metrics-keep-order": (
        _json(_obj(temperature_c=71.3, vibration_mm_s=4.2, running=1, run_hours=1234.5)),
        [
            Reading(ASSET, "temperature_c", GOOD_TS, 71.3),
            Reading(ASSET, "vibration_mm_s", GOOD_TS, 4.2),
            Reading(ASSET, "running", GOOD_TS, 1.0),
            Reading(ASSET, "run_hours", GOOD_TS, 1234.5),
        ],
    ),
    "names-digits-underscores": (
        _json(_obj(_x=1, temp_2=2, A9_b=3, **{"m" * 64: 4})),
        [
            Reading(ASSET, "_x", GOOD_TS, 1.0),
            Reading(ASSET, "temp_2", GOOD_TS, 2.0),
            Reading(ASSET, "A9_b", GOOD_TS, 3.0),
            Reading(ASSET, "m" * 64, GOOD_TS, 4.0),
        ],
    ),
    "name-containing-time": (
        _json(_obj(uptime=5, time_s=6)),
        [Reading(ASSET, "uptime", GOOD_TS, 5.0), Reading(ASSET, "time_s", GOOD_TS, 6.0)],
    ),
    "batch-of-five-mixed-ts": (
        _json(
            [
                _obj(ts=RECEIVED_MS - 4000, a=1),
                _obj(ts="2026-11-22T06:59:57Z", a=2),
                _obj(ts=RECEIVED_MS - 2000, a=3, b=30),
                _obj(ts="2026-11-22T07:59:59+01:00", a=4),
                _obj(ts=RECEIVED_MS, a=5),
            ]
        ),
        [
            Reading(ASSET, "a", RECEIVED_MS - 4000, 1.0),
            Reading(ASSET, "a", RECEIVED_MS - 3000, 2.0),
            Reading(ASSET, "a", RECEIVED_MS - 2000, 3.0),
            Reading(ASSET, "b", RECEIVED_MS - 2000, 30.0),
            Reading(ASSET, "a", RECEIVED_MS - 1000, 4.0),
            Reading(ASSET, "a", RECEIVED_MS, 5.0),
        ],
    ),
    "whitespace-around-json": (
        b"\n  " + VALID + b"  \r\n",
        [Reading(ASSET, "temperature_c", GOOD_TS, 71.3)],
    ),
    "unicode-escape-in-name-decodes-to-valid": (
        b'{"ts": %d, "metrics": {"\\u0074emp": 1}}' % GOOD_TS,
        [Reading(ASSET, "temp", GOOD_TS, 1.0)],
    ),
}


@pytest.mark.parametrize(
    ("payload", "expected"), list(GOOD_PAYLOADS.values()), ids=list(GOOD_PAYLOADS)
)
def test_good_payload_decodes_to_readings(payload: bytes, expected: list[Reading]) -> None:
    readings = _decoder().decode(TOPIC, payload, RECEIVED_MS)

    assert readings == expected
    assert all(type(reading.value) is float for reading in readings)


@pytest.mark.parametrize(
    ("payload", "value"),
    [(b"71.3", 71.3), (b"-2", -2.0), (b" 0 ", 0.0), (b"1.5e3", 1500.0)],
    ids=["float", "negative-int", "zero-with-spaces", "exponent"],
)
def test_bare_number_on_metric_topic_is_stamped_on_receipt(payload: bytes, value: float) -> None:
    readings = _decoder().decode(METRIC_TOPIC, payload, RECEIVED_MS)

    assert readings == [Reading(ASSET, "temperature_c", RECEIVED_MS, value)]
    assert type(readings[0].value) is float


def test_limits_are_inclusive() -> None:
    decoder = _decoder()
    four_metrics = _obj(a=1, b=2, c=3, d=4)

    assert len(decoder.decode(TOPIC, _json(four_metrics), RECEIVED_MS)) == 4
    assert len(decoder.decode(TOPIC, _json([four_metrics] * 5), RECEIVED_MS)) == 20


def test_payload_of_exactly_the_size_limit_is_decoded() -> None:
    padded = VALID + b" " * (SETTINGS.max_payload_bytes - len(VALID))

    assert len(_decoder().decode(TOPIC, padded, RECEIVED_MS)) == 1


def test_window_is_relative_to_received_ms_not_to_the_wall_clock() -> None:
    decoder = _decoder()
    payload = _json(_obj(ts="2020-01-01T00:00:00Z"))
    received_in_2020 = 1_577_836_800_000

    assert decoder.decode(TOPIC, payload, received_in_2020)[0].ts_ms == received_in_2020
    with pytest.raises(PayloadError, match="ts_too_old"):
        decoder.decode(TOPIC, payload, RECEIVED_MS)


def test_repeated_iso_string_decodes_the_same_each_time() -> None:
    decoder = _decoder()
    payload = b'{"ts": "2026-11-22T08:59:00+02:00", "metrics": {"a": 1}}'

    first = decoder.decode(TOPIC, payload, RECEIVED_MS)
    second = decoder.decode(TOPIC, payload, RECEIVED_MS)

    assert first == second == [Reading(ASSET, "a", RECEIVED_MS - 60_000, 1.0)]


def test_a_bad_name_stays_bad_after_good_messages() -> None:
    decoder = _decoder()
    decoder.decode(TOPIC, _json(_obj(temp=1)), RECEIVED_MS)

    with pytest.raises(PayloadError, match="bad_metric_name"):
        decoder.decode(TOPIC, _json(_obj(**{"temp ": 1})), RECEIVED_MS)


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("pmk/+/telemetry", "pmk/pump-7/telemetry", ("pump-7", None)),
        ("pmk/+/telemetry", "pmk/pump-7/telemetry/rpm", ("pump-7", "rpm")),
        ("factory/+/sensors", "factory/press.01/sensors", ("press.01", None)),
        ("factory/+/sensors", "factory/press.01/sensors/temp_2", ("press.01", "temp_2")),
        ("a/b/+/telemetry", "a/b/A:1_x/telemetry", ("A:1_x", None)),
        ("+/+/data", "site-1/pump-7/data", ("site-1", None)),
        ("$share/ingest/pmk/+/telemetry", "pmk/pump-7/telemetry/rpm", ("pump-7", "rpm")),
    ],
    ids=[
        "default",
        "default-metric",
        "custom",
        "custom-metric",
        "deeper-asset-level",
        "first-plus-is-asset",
        "shared-prefix-stripped",
    ],
)
def test_topic_parser_finds_asset_and_metric(
    pattern: str, topic: str, expected: tuple[str, str | None]
) -> None:
    assert TopicParser(pattern).parse(topic) == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("pmk/+/telemetry", ("pmk/+/telemetry", "pmk/+/telemetry/+")),
        ("factory/+/sensors", ("factory/+/sensors", "factory/+/sensors/+")),
        ("$share/g1/pmk/+/telemetry", ("$share/g1/pmk/+/telemetry", "$share/g1/pmk/+/telemetry/+")),
    ],
    ids=["default", "custom", "shared"],
)
def test_topic_parser_subscriptions(pattern: str, expected: tuple[str, str]) -> None:
    parser = TopicParser(pattern)

    assert parser.subscriptions() == expected
    assert parser.topic_filter == expected[0].removeprefix("$share/g1/")


def test_custom_pattern_refuses_the_default_topic() -> None:
    decoder = _decoder("factory/+/sensors")

    assert decoder.decode("factory/press-1/sensors", VALID, RECEIVED_MS)[0].asset_id == "press-1"
    with pytest.raises(PayloadError) as caught:
        decoder.decode(TOPIC, VALID, RECEIVED_MS)
    assert caught.value.code == "bad_topic"
    assert '"pmk"' in caught.value.reason
    assert '"factory"' in caught.value.reason


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("pmk/#", "'#'"),
        ("pmk/+/#", "'#'"),
        ("pmk/x+/telemetry", "whole level"),
        ("pmk/asset/telemetry", r"no '\+'"),
        ("$share//pmk/+/telemetry", r"\$share/<group>/<filter>"),
        ("$share/g1", r"\$share/<group>/<filter>"),
    ],
    ids=[
        "hash",
        "trailing-hash",
        "partial-plus",
        "no-plus",
        "empty-share-group",
        "share-no-filter",
    ],
)
def test_topic_parser_refuses_unusable_patterns(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TopicParser(pattern)


def test_random_bytes_and_mutations_only_ever_raise_payload_error() -> None:
    rng = random.Random(20261122)
    decoder = _decoder()
    seeds = [
        VALID,
        _json([_obj(), _obj(ts="2026-11-22T06:59:59Z", a=1, b=2)]),
        b'{"ts": "2026-11-22T06:59:59.5+01:00", "metrics": {"x": -1e-3}}',
    ]
    structural = b'{}[]",:0123456789.eE+-NaInfityrulsfx\\ \x00\xff'
    outcomes = {"ok": 0, "refused": 0}
    refusals: list[PayloadError] = []

    for _ in range(3000):
        payload = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(payload) + 1)
            action = rng.randrange(4)
            if action == 0:
                payload[position:position] = bytes([rng.choice(structural)])
            elif action == 1:
                del payload[position : position + rng.randint(1, 3)]
            elif action == 2:
                payload = payload[:position]
            else:
                payload[position:position] = rng.randbytes(rng.randint(1, 4))
        topic = rng.choice([TOPIC, METRIC_TOPIC])
        try:
            readings = decoder.decode(topic, bytes(payload), RECEIVED_MS)
        except PayloadError as error:
            outcomes["refused"] += 1
            refusals.append(error)
        else:
            assert all(math.isfinite(reading.value) for reading in readings)
            outcomes["ok"] += 1

    # Both outcomes must occur, or the mutations are not exercising the decoder.
    assert outcomes["ok"] > 0
    assert outcomes["refused"] > 1000
    assert all(error.code and error.reason for error in refusals)
