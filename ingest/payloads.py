"""Decode MQTT telemetry payloads into readings, refusing bad input with a precise reason.

Pure: no I/O and no clock. The arrival time is passed in as `received_ms`.
This module is on the ingest hot path, so it uses `json` plus hand-written checks
rather than a validation library. The common case takes the fast path, and the
error messages are only built once a message has already been refused.
"""

from __future__ import annotations

import json
import math
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NoReturn

from core.assets import ASSET_ID_PATTERN
from core.settings import IngestSettings
from core.telemetry import METRIC_NAME_PATTERN, Reading

DEFAULT_TOPIC_PATTERN: Final = "pmk/+/telemetry"
# Field names InfluxDB and the SQL store give a meaning of their own. The check
# ignores case, because InfluxQL keywords are case-insensitive.
RESERVED_METRIC_NAMES: Final = frozenset({"time"})

# Use fullmatch, not match: `$` also matches before a trailing newline, and a
# newline can occur inside an MQTT topic level.
_ASSET_ID_RE: Final = re.compile(ASSET_ID_PATTERN)
_METRIC_NAME_RE: Final = re.compile(METRIC_NAME_PATTERN)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
# An ISO timestamp is about 30 characters long. Anything far longer is refused
# before it reaches the parser.
_MAX_ISO_LENGTH: Final = 64
# Bound the memo caches so a device that invents new names cannot grow them forever.
_CACHE_LIMIT: Final = 4096
_TOPIC_CACHE_LIMIT: Final = 65536
_SHOW_LIMIT: Final = 60
_READING_KEYS: Final = frozenset({"ts", "metrics"})
_NON_FINITE_KEY_RE: Final = re.compile(r'"((?:[^"\\]|\\.){1,80})"\s*:\s*(-?(?:NaN|Infinity))')


class PayloadError(Exception):
    """Refuse a message: a stable `code`, a human `reason`, and the topic's asset id if known."""

    def __init__(self, code: str, reason: str, asset_id: str | None = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.asset_id = asset_id


class _NonFiniteConstantError(Exception):
    """Raised from inside the JSON parser when it meets NaN, Infinity or -Infinity."""

    def __init__(self, constant: str) -> None:
        super().__init__(constant)
        self.constant = constant


def _refuse_constant(constant: str) -> NoReturn:
    raise _NonFiniteConstantError(constant)


class TopicParser:
    """Parse received topics against the configured subscription pattern.

    The asset id is the level of the pattern's first `+`. A topic with exactly one
    more level is the per-metric form (`pmk/<asset>/telemetry/<metric>`).
    """

    def __init__(self, pattern: str = DEFAULT_TOPIC_PATTERN) -> None:
        self.share_group, self.topic_filter = _split_shared(pattern)
        levels = self.topic_filter.split("/")
        for level in levels:
            if "#" in level:
                raise ValueError(
                    f"topic pattern {pattern!r} uses '#': the per-metric form appends a level,"
                    " so the pattern must have a fixed number of levels"
                )
            if "+" in level and level != "+":
                raise ValueError(f"topic pattern {pattern!r}: '+' must fill a whole level")
        if "+" not in levels:
            raise ValueError(f"topic pattern {pattern!r} has no '+' level for the asset id")
        self.metric_filter = f"{self.topic_filter}/+"
        self._levels = tuple(levels)
        self._asset_index = levels.index("+")
        self._literals = tuple((i, level) for i, level in enumerate(levels) if level != "+")
        self._cache: dict[str, tuple[str, str | None]] = {}

    def subscriptions(self) -> tuple[str, str]:
        """Return the object and per-metric filters to subscribe to, `$share/` prefix included."""
        prefix = "" if self.share_group is None else f"$share/{self.share_group}/"
        return prefix + self.topic_filter, prefix + self.metric_filter

    def parse(self, topic: str) -> tuple[str, str | None]:
        """Return (asset_id, metric or None) for a received topic, or raise PayloadError."""
        hit = self._cache.get(topic)
        if hit is not None:
            return hit
        result = self._parse(topic)
        if len(self._cache) >= _TOPIC_CACHE_LIMIT:
            self._cache.clear()
        self._cache[topic] = result
        return result

    def _parse(self, topic: str) -> tuple[str, str | None]:
        levels = topic.split("/")
        expected = len(self._levels)
        if len(levels) not in (expected, expected + 1):
            raise PayloadError(
                "bad_topic",
                f"topic {_show(topic)} has {len(levels)} levels; expected"
                f" {_show(self.topic_filter)} for JSON readings or"
                f" {_show(self.metric_filter)} for one bare number",
            )
        for index, literal in self._literals:
            if levels[index] != literal:
                raise PayloadError(
                    "bad_topic",
                    f"topic {_show(topic)}: level {index + 1} is {_show(levels[index])},"
                    f" expected {_show(literal)} (pattern {_show(self.topic_filter)})",
                )
        asset_id = levels[self._asset_index]
        if not asset_id:
            raise PayloadError("bad_asset_id", f"topic {_show(topic)}: the asset id level is empty")
        if _ASSET_ID_RE.fullmatch(asset_id) is None:
            raise PayloadError(
                "bad_asset_id",
                f"topic {_show(topic)}: asset id {_show(asset_id)} is not valid;"
                f" asset ids match {ASSET_ID_PATTERN}",
            )
        if len(levels) == expected:
            return asset_id, None
        metric = levels[-1]
        problem = _metric_name_problem(metric)
        if problem is not None:
            raise PayloadError(
                "bad_metric_name", f"topic {_show(topic)}: metric level {problem}", asset_id
            )
        return asset_id, metric


class PayloadDecoder:
    """Turn one MQTT message into readings. Refuse the whole message if any part is bad."""

    def __init__(
        self, settings: IngestSettings, topic_pattern: str = DEFAULT_TOPIC_PATTERN
    ) -> None:
        self.topics = TopicParser(topic_pattern)
        self._max_bytes = settings.max_payload_bytes
        self._max_items = settings.max_batch_items
        self._max_metrics = settings.max_metrics_per_reading
        self._max_future_s = settings.max_future_s
        self._max_past_s = settings.max_past_s
        self._future_ms = settings.max_future_s * 1000
        self._past_ms = settings.max_past_s * 1000
        # One decoder instance: json.loads with any keyword builds a new one per call.
        self._json = json.JSONDecoder(parse_constant=_refuse_constant)
        self._known_names: set[str] = set()
        self._iso_ms: dict[str, int] = {}

    def decode(self, topic: str, payload: bytes, received_ms: int) -> list[Reading]:
        """Return the readings in `payload`, or raise PayloadError saying what is wrong and where.

        `received_ms` is the arrival time in epoch milliseconds. It stamps a bare
        number and sets the window that a device timestamp must fall in.
        """
        asset_id, metric = self.topics.parse(topic)
        size = len(payload)
        if size > self._max_bytes:
            raise PayloadError(
                "too_large",
                f"payload is {size} bytes; the limit is {self._max_bytes} bytes",
                asset_id,
            )
        doc = self._load(payload, asset_id)
        if metric is not None:
            return [Reading(asset_id, metric, received_ms, self._bare_number(doc, topic, asset_id))]
        readings: list[Reading] = []
        kind = type(doc)
        if kind is dict:
            self._add_reading(doc, asset_id, received_ms, readings, -1)
            return readings
        if kind is not list:
            raise PayloadError(
                "bad_shape",
                f"payload is {_describe(doc)}; expected a JSON object"
                ' {"ts": ..., "metrics": {...}} or an array of them',
                asset_id,
            )
        count = len(doc)
        if count == 0:
            raise PayloadError(
                "empty_batch", "payload is an empty array; send at least one reading", asset_id
            )
        if count > self._max_items:
            raise PayloadError(
                "batch_too_large",
                f"batch has {count} items; the limit is {self._max_items}",
                asset_id,
            )
        for index, item in enumerate(doc):
            if type(item) is not dict:
                raise PayloadError(
                    "bad_shape",
                    f"item {index} is {_describe(item)}; a batch is an array of reading objects",
                    asset_id,
                )
            self._add_reading(item, asset_id, received_ms, readings, index)
        return readings

    def _load(self, payload: bytes, asset_id: str) -> Any:
        try:
            text = payload.decode()
        except UnicodeDecodeError as exc:
            raise PayloadError(
                "not_utf8",
                f"payload is not UTF-8: byte 0x{payload[exc.start]:02x} at offset {exc.start}"
                f" ({exc.reason})",
                asset_id,
            ) from None
        try:
            return self._json.decode(text)
        except _NonFiniteConstantError as exc:
            raise PayloadError(
                "non_finite", _non_finite_reason(text, exc.constant), asset_id
            ) from None
        except RecursionError:
            raise PayloadError(
                "too_deep",
                "payload is nested too deeply to parse; readings are at most 3 levels deep",
                asset_id,
            ) from None
        except json.JSONDecodeError as exc:
            raise PayloadError("bad_json", _bad_json_reason(text, exc), asset_id) from None
        except ValueError:
            # The only other ValueError: Python refuses integers longer than 4300 digits.
            raise PayloadError(
                "bad_value",
                f"payload has an integer longer than {sys.get_int_max_str_digits()} digits",
                asset_id,
            ) from None

    def _bare_number(self, doc: Any, topic: str, asset_id: str) -> float:
        kind = type(doc)
        if kind is float:
            if math.isfinite(doc):
                return float(doc)
            raise PayloadError(
                "non_finite",
                "payload is a number out of the float range (it parses as infinity)",
                asset_id,
            )
        if kind is int:
            return _int_value(doc, "payload", asset_id)
        code = "bad_shape" if kind in (dict, list) else "bad_value"
        raise PayloadError(
            code,
            f"payload is {_describe(doc)}; the per-metric topic {_show(topic)} carries one bare"
            " JSON number",
            asset_id,
        )

    def _add_reading(
        self,
        obj: dict[str, Any],
        asset_id: str,
        received_ms: int,
        out: list[Reading],
        index: int,
    ) -> None:
        if len(obj) != 2 or "ts" not in obj or "metrics" not in obj:
            _refuse_keys(obj, asset_id, index)
        ts_ms = self._ts_ms(obj["ts"], received_ms, asset_id, index)
        metrics = obj["metrics"]
        if type(metrics) is not dict:
            raise PayloadError(
                "bad_shape",
                f"{_at(index)}metrics is {_describe(metrics)}; expected an object of name: number",
                asset_id,
            )
        count = len(metrics)
        if count == 0:
            raise PayloadError("empty_metrics", f"{_at(index)}metrics is an empty object", asset_id)
        if count > self._max_metrics:
            raise PayloadError(
                "too_many_metrics",
                f"{_at(index)}metrics has {count} entries; the limit is {self._max_metrics}",
                asset_id,
            )
        known = self._known_names
        for name, value in metrics.items():
            if name not in known:
                self._admit_name(name, asset_id, index)
            kind = type(value)
            if kind is float:
                if not math.isfinite(value):
                    raise PayloadError(
                        "non_finite",
                        f"{_at(index)}metrics.{name} is a number out of the float range"
                        " (it parses as infinity); values must be finite",
                        asset_id,
                    )
                out.append(Reading(asset_id, name, ts_ms, value))
            elif kind is int:
                number = _int_value(value, f"{_at(index)}metrics.{name}", asset_id)
                out.append(Reading(asset_id, name, ts_ms, number))
            else:
                raise PayloadError(
                    "bad_value",
                    f"{_at(index)}metrics.{name} is {_describe(value)};"
                    " values must be JSON numbers",
                    asset_id,
                )

    def _admit_name(self, name: str, asset_id: str, index: int) -> None:
        problem = _metric_name_problem(name)
        if problem is not None:
            raise PayloadError("bad_metric_name", f"{_at(index)}metrics: {problem}", asset_id)
        if len(self._known_names) < _CACHE_LIMIT:
            self._known_names.add(name)

    def _ts_ms(self, ts: Any, received_ms: int, asset_id: str, index: int) -> int:
        kind = type(ts)
        if kind is int:
            ts_ms: int = ts
        elif kind is str:
            cached = self._iso_ms.get(ts)
            ts_ms = self._parse_iso(ts, asset_id, index) if cached is None else cached
        elif kind is float:
            if not math.isfinite(ts):
                raise PayloadError(
                    "non_finite", f"{_at(index)}ts {_show(ts)} is out of the float range", asset_id
                )
            if not ts.is_integer():
                raise PayloadError(
                    "bad_ts",
                    f"{_at(index)}ts {_show(ts)} has a fractional part; epoch milliseconds must be"
                    " a whole number",
                    asset_id,
                )
            ts_ms = int(ts)
        else:
            raise PayloadError(
                "bad_ts",
                f"{_at(index)}ts is {_describe(ts)}; expected an ISO-8601 string with a time zone"
                ' (e.g. "2026-11-22T07:00:00Z") or epoch milliseconds',
                asset_id,
            )
        if ts_ms > received_ms + self._future_ms or ts_ms < received_ms - self._past_ms:
            self._refuse_window(ts, ts_ms, received_ms, asset_id, index)
        return ts_ms

    def _parse_iso(self, ts: str, asset_id: str, index: int) -> int:
        if len(ts) > _MAX_ISO_LENGTH:
            raise PayloadError(
                "bad_ts",
                f"{_at(index)}ts {_show(ts)} is {len(ts)} characters long;"
                " not an ISO-8601 timestamp",
                asset_id,
            )
        try:
            at = datetime.fromisoformat(ts)
        except ValueError:
            raise PayloadError(
                "bad_ts",
                f"{_at(index)}ts {_show(ts)} is not an ISO-8601 timestamp;"
                ' expected e.g. "2026-11-22T07:00:00Z" or epoch milliseconds',
                asset_id,
            ) from None
        if at.tzinfo is None or at.utcoffset() is None:
            raise PayloadError(
                "naive_ts",
                f"{_at(index)}ts {_show(ts)} has no time zone; add Z or an offset like +02:00",
                asset_id,
            )
        ts_ms = (at - _EPOCH) // _ONE_MS
        if len(self._iso_ms) >= _CACHE_LIMIT:
            self._iso_ms.clear()
        self._iso_ms[ts] = ts_ms
        return ts_ms

    def _refuse_window(
        self, ts: Any, ts_ms: int, received_ms: int, asset_id: str, index: int
    ) -> NoReturn:
        low = received_ms - self._past_ms
        high = received_ms + self._future_ms
        is_number = type(ts) is not str
        shown = f"{_at(index)}ts {_show(ts)}"
        received = _iso(received_ms)
        if is_number and low <= ts_ms * 1000 <= high:
            raise PayloadError(
                "ts_looks_like_seconds",
                f"{shown} read as epoch milliseconds is {_iso(ts_ms)}, but read as epoch seconds"
                f" it is {_iso(ts_ms * 1000)}, close to arrival ({received}); send epoch"
                " milliseconds (seconds x 1000) or an ISO-8601 string",
                asset_id,
            )
        if ts_ms > high:
            hint = ""
            if is_number and low <= ts_ms // 1000 <= high:
                hint = "; it looks like epoch microseconds, send milliseconds"
            raise PayloadError(
                "ts_in_future",
                f"{shown} ({_iso(ts_ms)}) is {_duration(ts_ms - received_ms)} ahead of arrival"
                f" ({received}); at most {self._max_future_s} s ahead is accepted{hint}",
                asset_id,
            )
        raise PayloadError(
            "ts_too_old",
            f"{shown} ({_iso(ts_ms)}) is {_duration(received_ms - ts_ms)} before arrival"
            f" ({received}); at most {_duration(self._past_ms)} old is accepted",
            asset_id,
        )


def _split_shared(pattern: str) -> tuple[str | None, str]:
    if not pattern.startswith("$share/"):
        return None, pattern
    parts = pattern.split("/", 2)
    if len(parts) != 3 or not parts[1] or "+" in parts[1] or "#" in parts[1] or not parts[2]:
        raise ValueError(f"shared subscription {pattern!r} must be $share/<group>/<filter>")
    return parts[1], parts[2]


def _metric_name_problem(name: str) -> str | None:
    """Return why `name` cannot be a metric name, or None if it can."""
    if _METRIC_NAME_RE.fullmatch(name) is None:
        if len(name) > 64:
            return f"name {_show(name)} is {len(name)} characters long; metric names are at most 64"
        return f"name {_show(name)} is not valid; metric names match {METRIC_NAME_PATTERN}"
    if name.lower() in RESERVED_METRIC_NAMES:
        return f"name {_show(name)} is reserved (by the telemetry stores); pick another name"
    return None


def _int_value(value: int, where: str, asset_id: str) -> float:
    try:
        return float(value)
    except OverflowError:
        raise PayloadError(
            "non_finite",
            f"{where} is an integer too large for a float ({len(str(value))} digits)",
            asset_id,
        ) from None


def _refuse_keys(obj: dict[str, Any], asset_id: str, index: int) -> NoReturn:
    unexpected = sorted(key for key in obj if key not in _READING_KEYS)
    if unexpected:
        allowed = '"ts" and "metrics"'
        raise PayloadError(
            "unexpected_field",
            f"{_at(index)}unexpected field {_show(unexpected[0])}"
            + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
            + f"; a reading has only {allowed}",
            asset_id,
        )
    if "metrics" not in obj:
        raise PayloadError(
            "missing_metrics", f'{_at(index)}the reading has no "metrics" object', asset_id
        )
    raise PayloadError(
        "missing_ts",
        f'{_at(index)}the reading has no "ts"; give the device time as an ISO-8601 string'
        " with a time zone or epoch milliseconds",
        asset_id,
    )


def _at(index: int) -> str:
    return "" if index < 0 else f"item {index}: "


def _show(value: Any) -> str:
    """Render a value as JSON, shortened, so reasons stay bounded and quote strings."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > _SHOW_LIMIT:
        text = text[: _SHOW_LIMIT - 3] + "..."
    return text


def _describe(value: Any) -> str:
    """Name a parsed JSON value's type for a human, with the value where it helps."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({_show(value)})"
    if isinstance(value, str):
        return f"a string ({_show(value)})"
    if isinstance(value, int | float):
        return f"a number ({_show(value)})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _non_finite_reason(text: str, constant: str) -> str:
    match = _NON_FINITE_KEY_RE.search(text)
    where = (
        f"metrics.{match.group(1)} is {match.group(2)}" if match else f"payload contains {constant}"
    )
    return f"{where}; NaN and Infinity are not JSON and values must be finite numbers"


def _bad_json_reason(text: str, exc: json.JSONDecodeError) -> str:
    if not text.strip():
        return "payload is empty"
    if text.startswith("\ufeff"):
        return "payload starts with a UTF-8 byte order mark (BOM); send UTF-8 without a BOM"
    return f"payload is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


def _iso(ts_ms: int) -> str:
    try:
        at = _EPOCH + timedelta(milliseconds=ts_ms)
    except OverflowError:
        return "out of the datetime range"
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _duration(ms: int) -> str:
    seconds = ms / 1000
    if seconds < 3600:
        return f"{round(seconds, 3):g} s"
    if seconds < 172800:
        return f"{round(seconds / 3600, 1):g} h"
    return f"{round(seconds / 86400, 1):g} days"
