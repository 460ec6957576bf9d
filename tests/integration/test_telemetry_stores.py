"""Hold both telemetry stores to the TelemetryStore contract, against real SQLite and influxd."""

from __future__ import annotations

import gzip
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from core.errors import StoreRejectedError, StoreUnavailableError
from core.ports import TelemetryStore
from core.settings import InfluxSettings
from core.telemetry import Reading, TelemetryBucket, TelemetryPoint, datetime_to_ms
from storage.telemetry_influx import (
    InfluxTelemetryStore,
    LineProtocolEncoder,
    quote_identifier,
    quote_string,
)
from storage.telemetry_sqlite import SqliteTelemetryStore
from tests.support.binaries import free_port
from tests.support.influx import InfluxServer

BASE_AT = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
BASE_MS = datetime_to_ms(BASE_AT)
DAY = timedelta(days=1)


def at(offset_s: float) -> datetime:
    """Return BASE_AT shifted by `offset_s` seconds."""
    return BASE_AT + timedelta(seconds=offset_s)


def reading(asset_id: str, metric: str, offset_s: float, value: float) -> Reading:
    """Return a reading `offset_s` seconds after BASE_AT."""
    return Reading(asset_id, metric, BASE_MS + round(offset_s * 1000), value)


def points(*pairs: tuple[float, float]) -> list[TelemetryPoint]:
    """Return the points expected for (offset_s, value) pairs."""
    return [TelemetryPoint(at=at(offset_s), value=value) for offset_s, value in pairs]


@pytest.fixture(
    params=["sqlite", pytest.param("influx", marks=pytest.mark.external_service)],
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TelemetryStore]:
    """Yield each TelemetryStore implementation, empty."""
    implementation: TelemetryStore
    if request.param == "sqlite":
        implementation = SqliteTelemetryStore(tmp_path / "telemetry.db")
    else:
        implementation = InfluxTelemetryStore(request.getfixturevalue("influx_settings"))
    try:
        yield implementation
    finally:
        implementation.close()


# --- the contract, for both stores ---------------------------------------------------------


def test_write_then_read_returns_exact_timestamps_and_values(store: TelemetryStore) -> None:
    values = [71.3, 5.0, -3.25, 1e-7, 1.5e20, 0.1 + 0.2, 0.0]
    store.write([reading("pump-1", "temperature_c", i + 0.123, v) for i, v in enumerate(values)])

    got = store.read("pump-1", "temperature_c", at(0), at(60), limit=100)

    assert got == points(*((i + 0.123, v) for i, v in enumerate(values)))
    assert all(isinstance(p.value, float) for p in got)


def test_integer_values_are_stored_as_floats(store: TelemetryStore) -> None:
    store.write([Reading("pump-1", "rpm", BASE_MS, 1500)])
    store.write([reading("pump-1", "rpm", 1, 1500.5)])

    assert store.read("pump-1", "rpm", at(0), at(2), limit=10) == points((0, 1500.0), (1, 1500.5))


def test_several_metrics_per_asset_are_kept_apart(store: TelemetryStore) -> None:
    store.write(
        [
            reading("pump-1", "temperature_c", 0, 70.0),
            reading("pump-1", "vibration_mm_s", 0, 4.2),
            reading("pump-1", "temperature_c", 1, 71.0),
            reading("pump-1", "pressure_bar", 2, 3.3),
        ]
    )

    assert store.read("pump-1", "temperature_c", at(0), at(10), 10) == points((0, 70.0), (1, 71.0))
    assert store.read("pump-1", "vibration_mm_s", at(0), at(10), 10) == points((0, 4.2))
    assert store.read("pump-1", "pressure_bar", at(0), at(10), 10) == points((2, 3.3))
    assert store.read("pump-1", "flow_l_min", at(0), at(10), 10) == []


def test_assets_are_isolated(store: TelemetryStore) -> None:
    store.write([reading("pump-1", "temperature_c", 0, 70.0)])
    store.write([reading("pump-2", "temperature_c", 0, 20.0)])
    store.write([reading("pump-10", "temperature_c", 1, 30.0)])

    assert store.read("pump-1", "temperature_c", at(0), at(10), 10) == points((0, 70.0))
    assert store.read("pump-2", "temperature_c", at(0), at(10), 10) == points((0, 20.0))
    assert store.read("pump-3", "temperature_c", at(0), at(10), 10) == []
    assert store.latest("pump-1") == {"temperature_c": TelemetryPoint(at(0), 70.0)}


def test_rewriting_a_point_keeps_one_point_with_the_last_value(store: TelemetryStore) -> None:
    store.write([reading("pump-1", "temperature_c", 0, 70.0), reading("pump-1", "rpm", 0, 1.0)])
    # A redelivered message, then a batch repeating a key: the last value wins.
    store.write([reading("pump-1", "temperature_c", 0, 70.0)])
    store.write(
        [reading("pump-1", "temperature_c", 0, 71.0), reading("pump-1", "temperature_c", 0, 72.0)]
    )

    assert store.read("pump-1", "temperature_c", at(-1), at(1), 10) == points((0, 72.0))
    # Rewriting one metric leaves the other metric of the same timestamp alone.
    assert store.read("pump-1", "rpm", at(-1), at(1), 10) == points((0, 1.0))


def test_read_range_includes_start_and_excludes_end(store: TelemetryStore) -> None:
    store.write([reading("pump-1", "t", s, float(s)) for s in range(10)])

    assert store.read("pump-1", "t", at(2), at(5), 100) == points((2, 2.0), (3, 3.0), (4, 4.0))
    assert store.read("pump-1", "t", at(2.001), at(5.001), 100) == points(
        (3, 3.0), (4, 4.0), (5, 5.0)
    )
    assert store.read("pump-1", "t", at(5), at(5), 100) == []


def test_read_limit_returns_the_oldest_points(store: TelemetryStore) -> None:
    # Written newest first, so insertion order cannot pass for time order.
    store.write([reading("pump-1", "t", s, float(s)) for s in reversed(range(10))])

    assert store.read("pump-1", "t", at(0), at(100), limit=3) == points(
        (0, 0.0), (1, 1.0), (2, 2.0)
    )
    assert store.read("pump-1", "t", at(0), at(100), limit=0) == []


def test_read_many_answers_each_series_like_read_in_request_order(
    store: TelemetryStore,
) -> None:
    store.write(
        [reading(f"pump-{n}", "t", s, float(n * 100 + s)) for n in range(3) for s in range(5)]
    )
    store.write([reading("pump-1", "p", s, -float(s)) for s in range(5)])
    # More series than one Influx request carries, with ranges of their own and empty ones.
    requests = [("pump-2", "t", at(1), at(3)), ("pump-1", "p", at(0), at(100))]
    requests += [("pump-1", "t", at(s % 5), at(s % 5 + 2)) for s in range(250)]
    requests += [("nobody", "t", at(0), at(100)), ("pump-'0", "t", at(0), at(100))]

    found = store.read_many(requests, 1000)

    assert found == [
        [(datetime_to_ms(p.at), p.value) for p in store.read(a, m, start, end, 1000)]
        for a, m, start, end in requests
    ]
    assert found[0] == [(datetime_to_ms(at(1)), 201.0), (datetime_to_ms(at(2)), 202.0)]
    assert found[1] == [(datetime_to_ms(at(s)), -float(s)) for s in range(5)]
    assert found[-2:] == [[], []]
    assert store.read_many(requests[:2], 0) == [[], []]
    assert store.read_many([], 10) == []


def test_downsample_aggregates_per_epoch_aligned_interval(store: TelemetryStore) -> None:
    store.write(
        [
            reading("pump-1", "t", 1, 1.0),
            reading("pump-1", "t", 2, 2.0),
            reading("pump-1", "t", 9.999, 6.0),
            # 10..20 s stays empty and must be left out.
            reading("pump-1", "t", 20, -4.0),
            reading("pump-1", "t", 25, 8.0),
            reading("pump-1", "t", 30, 100.0),  # at the exclusive end
            reading("pump-2", "t", 1, 1000.0),  # another asset
        ]
    )

    got = store.downsample("pump-1", "t", at(0), at(30), timedelta(seconds=10))

    assert got == [
        TelemetryBucket(start_at=at(0), mean=3.0, min=1.0, max=6.0, count=3),
        TelemetryBucket(start_at=at(20), mean=2.0, min=-4.0, max=8.0, count=2),
    ]
    assert all(isinstance(b.mean, float) and isinstance(b.count, int) for b in got)


def test_downsample_buckets_start_at_epoch_multiples_not_at_start(store: TelemetryStore) -> None:
    store.write([reading("pump-1", "t", s, float(s)) for s in (1, 4, 6, 7)])

    got = store.downsample("pump-1", "t", at(3), at(8), timedelta(seconds=5))

    # BASE_AT is a multiple of 5 s since the epoch; the first bucket starts before `start_at`
    # but only holds points inside the range.
    assert got == [
        TelemetryBucket(start_at=at(0), mean=4.0, min=4.0, max=4.0, count=1),
        TelemetryBucket(start_at=at(5), mean=6.5, min=6.0, max=7.0, count=2),
    ]


def test_downsample_of_nothing_is_empty(store: TelemetryStore) -> None:
    assert store.downsample("nobody", "t", at(0), at(60), timedelta(seconds=10)) == []


def test_latest_returns_the_newest_point_of_each_metric(store: TelemetryStore) -> None:
    store.write(
        [
            reading("pump-1", "temperature_c", 0, 70.0),
            reading("pump-1", "temperature_c", 5, 75.0),
            reading("pump-1", "temperature_c", 3, 73.0),
            reading("pump-1", "vibration_mm_s", 1, 4.2),
            reading("pump-2", "temperature_c", 60, 20.0),
            reading("pump-2", "pressure_bar", 60, 3.0),
        ]
    )

    assert store.latest("pump-1") == {
        "temperature_c": TelemetryPoint(at(5), 75.0),
        "vibration_mm_s": TelemetryPoint(at(1), 4.2),
    }
    assert store.latest("pump-3") == {}


AWKWARD_IDS = [
    "pump-01.site:a",
    "o'brien",
    'quote"d',
    "back\\slash",
    "back\\\\double",
    "comma,space =equals",
    "x\\,y",
    "ünïcødé/设备",
    "x' OR '1'='1",
    'x"; DROP TABLE telemetry; --',
]


@pytest.mark.parametrize("asset_id", AWKWARD_IDS)
def test_awkward_asset_ids_round_trip_without_leaking_into_other_assets(
    store: TelemetryStore, asset_id: str
) -> None:
    store.write([reading(asset_id, "temperature_c", 0, 1.0), reading("x", "temperature_c", 0, 2.0)])
    store.write([reading("1", "temperature_c", 1, 3.0)])

    assert store.read(asset_id, "temperature_c", at(0), at(10), 10) == points((0, 1.0))
    assert store.latest(asset_id) == {"temperature_c": TelemetryPoint(at(0), 1.0)}
    assert store.downsample(asset_id, "temperature_c", at(0), at(10), timedelta(seconds=10)) == [
        TelemetryBucket(start_at=at(0), mean=1.0, min=1.0, max=1.0, count=1)
    ]
    # The store still answers normally afterwards: nothing was dropped or rewritten.
    assert store.read("x", "temperature_c", at(0), at(10), 10) == points((0, 2.0))


@pytest.mark.parametrize("metric", ["vibration mm/s", "a,b=c", 'say "hi"', "it's", "back\\slash"])
def test_awkward_metric_names_round_trip(store: TelemetryStore, metric: str) -> None:
    store.write([reading("pump-1", metric, 0, 1.5), reading("pump-1", "plain", 0, 2.5)])

    assert store.read("pump-1", metric, at(0), at(10), 10) == points((0, 1.5))
    assert store.latest("pump-1") == {
        metric: TelemetryPoint(at(0), 1.5),
        "plain": TelemetryPoint(at(0), 2.5),
    }


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused_and_nothing_of_the_batch_is_stored(
    store: TelemetryStore, value: float
) -> None:
    with pytest.raises(StoreRejectedError):
        store.write([reading("pump-1", "t", 0, 1.0), reading("pump-1", "t", 1, value)])

    assert store.read("pump-1", "t", at(0), at(10), 10) == []


def test_an_empty_batch_is_a_no_op(store: TelemetryStore) -> None:
    store.write([])

    assert store.latest("pump-1") == {}


def test_ping_answers_true_when_the_store_is_up(store: TelemetryStore) -> None:
    assert store.ping() is True


# --- SQLite only ---------------------------------------------------------------------------


def test_sqlite_keeps_points_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "telemetry.db"
    first = SqliteTelemetryStore(path)
    first.write([reading("pump-1", "t", 0, 1.0)])
    first.close()

    second = SqliteTelemetryStore(path)
    try:
        assert second.read("pump-1", "t", at(0), at(1), 10) == points((0, 1.0))
    finally:
        second.close()


def test_sqlite_maps_an_unusable_file_to_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.db"
    store = SqliteTelemetryStore(path)
    store.close()

    with pytest.raises(StoreUnavailableError):
        store.write([reading("pump-1", "t", 0, 1.0)])
    assert store.ping() is False


def test_sqlite_write_waits_out_a_reader_and_a_locked_writer_maps_to_unavailable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "telemetry.db"
    store = SqliteTelemetryStore(path, busy_timeout_s=0.2)
    intruder = sqlite3.connect(path, isolation_level=None)
    try:
        # An open read transaction does not block the writer (WAL)...
        intruder.execute("BEGIN")
        intruder.execute("SELECT COUNT(*) FROM telemetry").fetchall()
        store.write([reading("pump-1", "t", 0, 1.0)])
        intruder.execute("COMMIT")
        # ...but another writer holding the lock past the busy timeout is an outage.
        intruder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailableError):
            store.write([reading("pump-1", "t", 1, 2.0)])
        intruder.execute("ROLLBACK")
        store.write([reading("pump-1", "t", 1, 2.0)])
        assert store.read("pump-1", "t", at(0), at(2), 10) == points((0, 1.0), (1, 2.0))
    finally:
        intruder.close()
        store.close()


# --- InfluxDB only -------------------------------------------------------------------------


def test_line_protocol_groups_metrics_of_one_timestamp_and_escapes_names() -> None:
    encoder = LineProtocolEncoder("telemetry")

    text = encoder.encode(
        [
            Reading("a b,c=d", "temp c", 1000, 5),
            Reading("a b,c=d", "x=y,z", 1000, 0.1),
            Reading("a b,c=d", "temp c", 2000, 1e20),
            Reading("o\\k", "temp c", 1000, -2.5),
        ]
    )

    assert text.splitlines() == [
        "telemetry,asset_id=a\\ b\\,c\\=d temp\\ c=5.0,x\\=y\\,z=0.1 1000",
        "telemetry,asset_id=a\\ b\\,c\\=d temp\\ c=1e+20 2000",
        "telemetry,asset_id=o\\k temp\\ c=-2.5 1000",
    ]


@pytest.mark.parametrize("asset_id", ["ends-with\\", "new\nline", "cr\rreturn", ""])
def test_influx_refuses_ids_line_protocol_cannot_carry(asset_id: str) -> None:
    with pytest.raises(StoreRejectedError):
        LineProtocolEncoder("telemetry").encode([Reading(asset_id, "t", 0, 1.0)])


def test_influxql_quoting_escapes_quotes_backslashes_and_newlines() -> None:
    assert quote_string("o'b\\r\nx") == "'o\\'b\\\\r\\nx'"
    assert quote_identifier('say "hi"\\') == '"say \\"hi\\"\\\\"'


@pytest.mark.external_service
def test_influx_stores_the_documented_schema(
    influxd: InfluxServer, influx_settings: InfluxSettings
) -> None:
    store = InfluxTelemetryStore(influx_settings)
    try:
        store.write([reading("pump-1", "temperature_c", 0, 5.0), reading("pump-1", "rpm", 0, 2.0)])
    finally:
        store.close()

    assert influxd.query('SHOW FIELD KEYS FROM "telemetry"', db=influx_settings.bucket) == [
        {"fieldKey": "rpm", "fieldType": "float"},
        {"fieldKey": "temperature_c", "fieldType": "float"},
    ]
    rows = influxd.query('SELECT * FROM "telemetry"', db=influx_settings.bucket)
    assert rows == [{"time": BASE_MS, "asset_id": "pump-1", "rpm": 2.0, "temperature_c": 5.0}]


@pytest.mark.external_service
def test_influx_outage_raises_store_unavailable_and_recovers_after_restart(
    influxd_factory: Callable[[], InfluxServer],
) -> None:
    server = influxd_factory()
    store = InfluxTelemetryStore(server.influx_settings())
    try:
        store.write([reading("pump-1", "t", 0, 1.0)])
        server.stop()

        with pytest.raises(StoreUnavailableError):
            store.write([reading("pump-1", "t", 1, 2.0)])
        with pytest.raises(StoreUnavailableError):
            store.read("pump-1", "t", at(0), at(10), 10)
        with pytest.raises(StoreUnavailableError):
            store.latest("pump-1")
        assert store.ping() is False

        server.start()
        store.write([reading("pump-1", "t", 1, 2.0)])
        assert store.ping() is True
        # The point acknowledged before the outage survived influxd's restart.
        assert store.read("pump-1", "t", at(0), at(10), 10) == points((0, 1.0), (1, 2.0))
    finally:
        store.close()


@pytest.mark.external_service
def test_influx_killed_mid_run_raises_store_unavailable(
    influxd_factory: Callable[[], InfluxServer],
) -> None:
    server = influxd_factory()
    store = InfluxTelemetryStore(server.influx_settings())
    try:
        store.write([reading("pump-1", "t", 0, 1.0)])
        server.kill()
        with pytest.raises(StoreUnavailableError):
            store.write([reading("pump-1", "t", 1, 2.0)])
        server.start()
        store.write([reading("pump-1", "t", 1, 2.0)])
        assert store.read("pump-1", "t", at(0), at(10), 10) == points((0, 1.0), (1, 2.0))
    finally:
        store.close()


def test_influx_connection_refused_raises_store_unavailable() -> None:
    store = InfluxTelemetryStore(
        InfluxSettings(url=f"http://127.0.0.1:{free_port()}", bucket="b", timeout_s=2.0)
    )
    try:
        with pytest.raises(StoreUnavailableError):
            store.write([reading("pump-1", "t", 0, 1.0)])
        with pytest.raises(StoreUnavailableError):
            store.read("pump-1", "t", at(0), at(1), 10)
        assert store.ping() is False
    finally:
        store.close()


def test_influx_timeout_raises_store_unavailable() -> None:
    # A listening socket that never accepts: the TCP handshake completes in the kernel
    # backlog, and then no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        store = InfluxTelemetryStore(InfluxSettings(url=url, bucket="b", timeout_s=0.3))
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                store.write([reading("pump-1", "t", 0, 1.0)])
            with pytest.raises(StoreUnavailableError):
                store.read("pump-1", "t", at(0), at(1), 10)
            assert time.monotonic() - started < 5
        finally:
            store.close()


@pytest.mark.external_service
def test_influx_missing_bucket_holds_writes_as_unavailable(influxd: InfluxServer) -> None:
    # A missing bucket (or a wrong token) is configuration an operator fixes; ingest must
    # hold and retry the readings, not turn the whole stream into dead letters.
    store = InfluxTelemetryStore(influxd.influx_settings(bucket="no_such_bucket"))
    try:
        with pytest.raises(StoreUnavailableError) as held:
            store.write([reading("pump-1", "t", 0, 1.0)])
        assert held.value.extra["status"] == 404
        with pytest.raises(StoreRejectedError):
            store.read("pump-1", "t", at(0), at(1), 10)
    finally:
        store.close()


@pytest.mark.external_service
def test_influx_field_type_conflict_is_rejected(
    influxd: InfluxServer, influx_settings: InfluxSettings
) -> None:
    # Someone else wrote `t` as an integer: influxd answers 400 to our float.
    response = httpx.post(
        f"{influxd.direct_url}/write",
        params={"db": influx_settings.bucket, "precision": "ms"},
        content=f"telemetry,asset_id=pump-1 t=5i {BASE_MS}",
    )
    assert response.status_code == 204
    store = InfluxTelemetryStore(influx_settings)
    try:
        with pytest.raises(StoreRejectedError) as refused:
            store.write([reading("pump-1", "t", 1, 1.0)])
        assert refused.value.extra["status"] == 400
        assert "conflict" in refused.value.detail
    finally:
        store.close()


# --- the test proxy in front of influxd 1.6.7 ----------------------------------------------


@pytest.mark.external_service
def test_proxy_maps_v2_write_onto_v1_write_with_precision_and_gzip(
    influxd: InfluxServer, influx_bucket: str
) -> None:
    with httpx.Client(base_url=influxd.url) as client:
        plain = client.post(
            "/api/v2/write",
            params={"org": "o", "bucket": influx_bucket, "precision": "ms"},
            content=b"m,asset_id=a v=1.5 1700000000123",
        )
        zipped = client.post(
            "/api/v2/write",
            params={"org": "o", "bucket": influx_bucket, "precision": "s"},
            content=gzip.compress(b"m,asset_id=b v=2.5 1700000001"),
            headers={"Content-Encoding": "gzip"},
        )
        nanos = client.post(
            "/api/v2/write",
            params={"org": "o", "bucket": influx_bucket},
            content=b"m,asset_id=c v=3.5 1700000002000000000",
        )
        broken = client.post(
            "/api/v2/write", params={"bucket": influx_bucket}, content=b"not line protocol"
        )
        ping = client.get("/ping")

    assert (plain.status_code, zipped.status_code, nanos.status_code) == (204, 204, 204)
    assert broken.status_code == 400
    assert "unable to parse" in broken.json()["error"]
    assert ping.status_code == 204
    assert ping.headers["X-Influxdb-Version"].startswith("1.")
    assert influxd.query("SELECT * FROM m", db=influx_bucket) == [
        {"time": 1700000000123, "asset_id": "a", "v": 1.5},
        {"time": 1700000001000, "asset_id": "b", "v": 2.5},
        {"time": 1700000002000, "asset_id": "c", "v": 3.5},
    ]


@pytest.mark.external_service
def test_proxy_forwards_queries_and_answers_503_while_influxd_is_down(
    influxd_factory: Callable[[], InfluxServer],
) -> None:
    server = influxd_factory()
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        shown = client.post("/query", data={"q": "SHOW DATABASES"})
        assert shown.status_code == 200
        assert [server.bucket] in shown.json()["results"][0]["series"][0]["values"]

        server.stop()
        assert client.get("/ping").status_code == 503
        down = client.post("/api/v2/write", params={"bucket": server.bucket}, content=b"m v=1 1")
        assert down.status_code == 503

        server.start()
        # The same client connection works again: the proxy reconnects upstream.
        assert client.get("/ping").status_code == 204


@pytest.mark.external_service
def test_proxy_keeps_up_with_many_small_requests(influxd: InfluxServer) -> None:
    requests = 200
    with httpx.Client(base_url=influxd.url) as client:
        client.get("/ping")
        started = time.monotonic()
        for _ in range(requests):
            # A response with a body: headers and body leave in two sends, which is where
            # Nagle plus the client's delayed ACK would cost ~40 ms each (~25 requests/s).
            assert client.post("/query", data={"q": "SHOW DATABASES"}).status_code == 200
        rate = requests / (time.monotonic() - started)

    # About 900/s on the development machine; the margin is for loaded CI runners.
    assert rate > 150, f"{rate:.0f} requests/s through the proxy"
