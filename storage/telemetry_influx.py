"""Keep telemetry in InfluxDB: line protocol on /api/v2/write, InfluxQL on /query.

Writes go through influxdb-client's synchronous WriteApi to /api/v2/write, which
InfluxDB 2.x serves natively (and 1.8+ and 3.x as a compatibility endpoint). Reads use
InfluxQL on /query over plain HTTP, because InfluxDB 1.x, 2.x (through a virtual DBRP
mapping) and 3.x all answer it, whereas Flux exists only in 1.7+/2.x.

Schema: one measurement (`settings.measurement`), one tag `asset_id`, one float field
per metric, timestamps in milliseconds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
import urllib3.exceptions
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from core.errors import StoreRejectedError, StoreUnavailableError
from core.ports import SeriesRange
from core.settings import InfluxSettings
from core.telemetry import (
    Reading,
    StampedValue,
    TelemetryBucket,
    TelemetryPoint,
    datetime_to_ms,
    ms_to_datetime,
)

log = logging.getLogger(__name__)


# Line protocol (1.x and 2.x parsers) escapes only these three in tag values and field
# keys. A backslash before anything else is kept literally, so backslashes themselves
# are not escaped: doubling them would store two.
_KEY_ESCAPES = str.maketrans({",": "\\,", " ": "\\ ", "=": "\\="})
_MEASUREMENT_ESCAPES = str.maketrans({",": "\\,", " ": "\\ "})
# Bounds the escape caches; ids come from devices, so the set is open-ended.
_CACHE_LIMIT = 100_000
# SELECT statements sent together in one /query request by read_many.
_STATEMENTS_PER_QUERY = 200


def _escape_key(text: str, what: str) -> str:
    # A newline ends the line and a trailing backslash would escape the separator after
    # it; line protocol has no way to write either, so refuse instead of storing a
    # different name.
    if not text or "\n" in text or "\r" in text or text.endswith("\\"):
        raise StoreRejectedError(
            f"{what} {text!r} cannot be written as InfluxDB line protocol", **{what: text}
        )
    return text.translate(_KEY_ESCAPES)


class LineProtocolEncoder:
    """Turn readings into line protocol, one line per (asset, timestamp) with every metric."""

    def __init__(self, measurement: str) -> None:
        if not measurement or "\n" in measurement or measurement.endswith("\\"):
            raise ValueError(f"unusable measurement name {measurement!r}")
        self._measurement = measurement.translate(_MEASUREMENT_ESCAPES) + ",asset_id="
        self._series: dict[str, str] = {}
        self._fields: dict[str, str] = {}

    def encode(self, readings: Sequence[Reading]) -> str:
        """Return the batch as newline-separated lines; the last value of a repeated key wins."""
        # Grouping by (asset, ts) writes fewer, wider lines and gives each series one point
        # per timestamp, so a redelivered reading overwrites instead of adding a row.
        groups: dict[tuple[str, int], dict[str, float]] = {}
        for reading in readings:
            key = (reading.asset_id, reading.ts_ms)
            fields = groups.get(key)
            if fields is None:
                groups[key] = {reading.metric: reading.value}
            else:
                fields[reading.metric] = reading.value
        series = self._series
        field_keys = self._fields
        lines = []
        for (asset_id, ts_ms), fields in groups.items():
            prefix = series.get(asset_id)
            if prefix is None:
                prefix = self._series_prefix(asset_id)
            parts = []
            for metric, value in fields.items():
                field_key = field_keys.get(metric)
                if field_key is None:
                    field_key = self._field_key(metric)
                # repr of a float always has a '.', an 'e' or is nan/inf, so InfluxDB never
                # mistakes 5.0 for an integer; float() turns ints that slipped in into floats.
                text = repr(float(value))
                if text[-1] > "9":  # "nan", "inf", "-inf": finite floats end in a digit
                    raise StoreRejectedError(
                        f"non-finite value {text} for {asset_id}/{metric}",
                        asset_id=asset_id,
                        metric=metric,
                    )
                parts.append(field_key + text)
            lines.append(f"{prefix}{','.join(parts)} {ts_ms}")
        return "\n".join(lines)

    def _series_prefix(self, asset_id: str) -> str:
        if len(self._series) >= _CACHE_LIMIT:
            self._series.clear()
        prefix = self._measurement + _escape_key(asset_id, "asset_id") + " "
        self._series[asset_id] = prefix
        return prefix

    def _field_key(self, metric: str) -> str:
        if len(self._fields) >= _CACHE_LIMIT:
            self._fields.clear()
        field_key = _escape_key(metric, "metric") + "="
        self._fields[metric] = field_key
        return field_key


def quote_identifier(name: str) -> str:
    """Return `name` as an InfluxQL double-quoted identifier."""
    return '"' + _escape_influxql(name).replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """Return `value` as an InfluxQL single-quoted string literal."""
    return "'" + _escape_influxql(value).replace("'", "\\'") + "'"


def _escape_influxql(text: str) -> str:
    # InfluxQL's scanner knows exactly four escapes (\\ \n \" \') and refuses any other
    # backslash sequence or a raw newline, so backslashes go first and newlines are encoded.
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class InfluxTelemetryStore:
    """Write readings to InfluxDB and read them back with InfluxQL."""

    def __init__(self, settings: InfluxSettings) -> None:
        if not settings.url:
            raise ValueError("InfluxTelemetryStore needs settings.url")
        self._settings = settings
        self._bucket = settings.bucket
        self._measurement = quote_identifier(settings.measurement)
        self._encoder = LineProtocolEncoder(settings.measurement)
        token = settings.token.get_secret_value()
        # retries=False: the ingest writer owns backoff; a client that retries on its own
        # would hold the writer thread and hide outages from the caller.
        self._client = InfluxDBClient(
            url=settings.url,
            token=token,
            org=settings.org,
            timeout=int(settings.timeout_s * 1000),
            retries=False,
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        headers = {"Authorization": f"Token {token}"} if token else {}
        self._http = httpx.Client(
            base_url=settings.url, headers=headers, timeout=settings.timeout_s
        )

    def write(self, readings: Sequence[Reading]) -> None:
        """Durably write a batch; return once InfluxDB has acknowledged it."""
        if not readings:
            return
        body = self._encoder.encode(readings).encode()
        try:
            self._write_api.write(
                bucket=self._bucket,
                org=self._settings.org,
                record=body,
                # The generated enum declares its members as plain str.
                write_precision=cast(WritePrecision, WritePrecision.MS),
            )
        except ApiException as exc:
            raise _api_error("write", exc.status or 0, exc.body) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailableError(
                f"InfluxDB write failed: {type(exc).__name__}: {exc}", url=self._settings.url
            ) from exc

    def read(
        self, asset_id: str, metric: str, start_at: datetime, end_at: datetime, limit: int
    ) -> list[TelemetryPoint]:
        """Return one metric's points in [start_at, end_at), oldest first, at most `limit`."""
        if limit <= 0:
            return []
        query = (
            # Every user-supplied part passes through quote_identifier/quote_string.
            f"SELECT {quote_identifier(metric)} FROM {self._measurement}"  # noqa: S608
            f" WHERE {self._where(asset_id, start_at, end_at)}"
            f" ORDER BY time ASC LIMIT {int(limit)}"
        )
        return [
            TelemetryPoint(at=ms_to_datetime(int(row[0])), value=float(row[1]))
            for row in _rows(self._query(query)[0])
            if row[1] is not None
        ]

    def read_many(self, requests: Sequence[SeriesRange], limit: int) -> list[list[StampedValue]]:
        """Return each series' points, many SELECT statements to one /query request."""
        found: list[list[StampedValue]] = []
        for first in range(0, len(requests), _STATEMENTS_PER_QUERY):
            chunk = requests[first : first + _STATEMENTS_PER_QUERY]
            if limit <= 0:
                found += [[] for _ in chunk]
                continue
            query = ";".join(
                # Every user-supplied part passes through quote_identifier/quote_string.
                f"SELECT {quote_identifier(metric)} FROM {self._measurement}"  # noqa: S608
                f" WHERE {self._where(asset_id, start_at, end_at)}"
                f" ORDER BY time ASC LIMIT {int(limit)}"
                for asset_id, metric, start_at, end_at in chunk
            )
            found += [
                [(int(row[0]), float(row[1])) for row in _rows(result) if row[1] is not None]
                for result in self._query(query)
            ]
        return found

    def downsample(
        self, asset_id: str, metric: str, start_at: datetime, end_at: datetime, every: timedelta
    ) -> list[TelemetryBucket]:
        """Return mean, min, max and count per epoch-aligned `every`; skip empty intervals."""
        every_ms = every // timedelta(milliseconds=1)
        if every_ms <= 0:
            raise ValueError(f"every must be at least 1 ms, not {every}")
        field = quote_identifier(metric)
        query = (
            f"SELECT mean({field}), min({field}), max({field}), count({field})"  # noqa: S608
            f" FROM {self._measurement} WHERE {self._where(asset_id, start_at, end_at)}"
            f" GROUP BY time({every_ms}ms) fill(none)"
        )
        return [
            TelemetryBucket(
                start_at=ms_to_datetime(int(ts_ms)),
                mean=float(mean),
                min=float(low),
                max=float(high),
                count=int(count),
            )
            for ts_ms, mean, low, high, count in _rows(self._query(query)[0])
            if count
        ]

    def latest(self, asset_id: str) -> dict[str, TelemetryPoint]:
        """Return the newest point of each metric of an asset."""
        # SHOW FIELD KEYS cannot filter by tag, so ask for every field's last value on
        # this asset; fields the asset never had come back empty. One statement per field
        # because last() over several fields in one statement loses their timestamps.
        field_rows = _rows(self._query(f"SHOW FIELD KEYS FROM {self._measurement}")[0])
        metrics = [str(row[0]) for row in field_rows]
        if not metrics:
            return {}
        asset = quote_string(asset_id)
        statements = ";".join(
            f"SELECT last({quote_identifier(metric)}) FROM {self._measurement}"  # noqa: S608
            f' WHERE "asset_id" = {asset}'
            for metric in metrics
        )
        latest: dict[str, TelemetryPoint] = {}
        for metric, result in zip(metrics, self._query(statements), strict=True):
            for ts_ms, value in _rows(result):
                if value is not None:
                    latest[metric] = TelemetryPoint(
                        at=ms_to_datetime(int(ts_ms)), value=float(value)
                    )
        return latest

    def ping(self) -> bool:
        """Tell whether InfluxDB answers /ping right now."""
        try:
            response = self._http.get("/ping", timeout=min(self._settings.timeout_s, 5.0))
        except httpx.HTTPError:
            return False
        return response.is_success

    def close(self) -> None:
        """Close the HTTP connections."""
        self._write_api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]
        self._http.close()

    def _where(self, asset_id: str, start_at: datetime, end_at: datetime) -> str:
        return (
            f'"asset_id" = {quote_string(asset_id)}'
            f" AND time >= {datetime_to_ms(start_at)}ms AND time < {datetime_to_ms(end_at)}ms"
        )

    def _query(self, query: str) -> list[dict[str, Any]]:
        # POST with q in the form body: GET is refused for some statements and the
        # multi-statement latest() query can outgrow a URL.
        try:
            response = self._http.post(
                "/query", params={"db": self._bucket, "epoch": "ms"}, data={"q": query}
            )
        except httpx.HTTPError as exc:
            raise StoreUnavailableError(
                f"InfluxDB query failed: {type(exc).__name__}: {exc}", url=self._settings.url
            ) from exc
        if not response.is_success:
            raise _api_error("query", response.status_code, response.text)
        try:
            results: list[dict[str, Any]] = response.json()["results"]
        except (ValueError, KeyError) as exc:
            raise StoreUnavailableError(
                f"InfluxDB query answered something that is not a result: {response.text[:200]}"
            ) from exc
        for result in results:
            if "error" in result:
                raise StoreRejectedError(
                    f"InfluxDB refused the query: {result['error']}", query=query[:500]
                )
        return results


def _rows(result: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for series in result.get("series", ()):
        rows.extend(series.get("values", ()))
    return rows


def _api_error(
    operation: str, status: int, body: object
) -> StoreUnavailableError | StoreRejectedError:
    detail = f"InfluxDB {operation} answered {status}: {str(body)[:500]}"
    # 429 and 5xx are load or outage and pass. 401/403/404 are a wrong token or a missing
    # bucket: configuration an operator fixes, after which every held reading must still
    # land, so they back off too rather than turning the whole stream into dead letters.
    # Any other 4xx means this exact request will be refused again, so retrying it would
    # wedge ingest behind it. Status 0 is how influxdb-client reports TLS failures.
    if status in {0, 401, 403, 404, 429} or status >= 500:
        return StoreUnavailableError(detail, status=status)
    return StoreRejectedError(detail, status=status)
