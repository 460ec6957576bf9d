"""The SQL repositories, run unchanged against SQLite and the real PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import IntegrityError

import storage.db
from core.assets import Asset, Criticality
from core.auth import Role
from core.clock import FrozenClock
from core.deadletters import DeadLetter
from core.errors import ConflictError, NotFoundError, StoreUnavailableError, ValidationError
from storage.db import create_engine_for, migrate
from storage.repositories import (
    SqlAssetRepository,
    SqlDeadLetterRepository,
    SqlTokenRepository,
    hash_token,
)
from storage.tables import api_tokens, metadata
from tests.support.binaries import free_port

T0 = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def repo(database_engine: Engine, clock: FrozenClock) -> SqlAssetRepository:
    return SqlAssetRepository(database_engine, clock=clock)


@pytest.fixture
def letters(database_engine: Engine) -> SqlDeadLetterRepository:
    return SqlDeadLetterRepository(database_engine)


@pytest.fixture
def tokens(database_engine: Engine) -> SqlTokenRepository:
    return SqlTokenRepository(database_engine)


def asset(asset_id: str, **fields: object) -> Asset:
    values: dict[str, object] = {"name": f"Pump {asset_id}", "type": "pump", "site": "north"}
    values.update(fields)
    return Asset.model_validate({"id": asset_id, **values})


def letter(n: int, asset_id: str | None = "pump-1", payload: bytes = b"{bad json") -> DeadLetter:
    return DeadLetter(
        topic=f"pmk/{asset_id}/telemetry",
        payload=payload,
        payload_size=len(payload) + n,
        code="invalid_json",
        reason=f"reason {n}",
        received_at=T0 + timedelta(seconds=n),
        asset_id=asset_id,
    )


# --- schema ---------------------------------------------------------------------------


def test_migrations_run_from_empty_and_are_idempotent(empty_database_url: str) -> None:
    engine = create_engine_for(empty_database_url)
    try:
        assert inspect(engine).get_table_names() == []
        migrate(engine)
        migrate(engine)
        tables = set(inspect(engine).get_table_names())
        assert {
            "assets",
            "dead_letters",
            "api_tokens",
            "rules",
            "rule_states",
            "alerts",
            "work_orders",
            "work_order_events",
            "sla_escalations",
            "sla_overrides",
            "stock_locations",
            "parts",
            "stock",
            "part_reservations",
            "stock_ledger",
            "stock_out_events",
            "technicians",
            "technician_sites",
            "technician_skills",
            "technician_time_off",
            "alembic_version",
        } <= tables
        indexes = {ix["name"] for ix in inspect(engine).get_indexes("assets")}
        assert {"ix_assets_site", "ix_assets_type"} <= indexes
        with engine.connect() as connection:
            versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        assert [v[0] for v in versions] == ["0008"]  # the newest migration
        with engine.connect() as connection:
            drift = compare_metadata(MigrationContext.configure(connection), metadata)
        assert drift == []  # the migrations build exactly what storage.tables declares
    finally:
        engine.dispose()


def test_sqlite_engine_uses_wal_and_creates_the_parent_directory(tmp_path: object) -> None:
    path = f"{tmp_path}/nested/dir/pm.db"
    engine = create_engine_for(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            pragmas = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        # synchronous=NORMAL reads back as 1.
        assert pragmas == {
            "journal_mode": "wal",
            "synchronous": 1,
            "foreign_keys": 1,
            "busy_timeout": 5000,
        }
    finally:
        engine.dispose()


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    engine = create_engine_for("postgresql://postgres@127.0.0.1:1/nowhere")
    try:
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


def test_a_pooled_connection_cut_while_idle_is_replaced_unseen(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends an idle pooled connection (a restart, a firewall): nobody notices."""
    monkeypatch.setattr(storage.db, "PING_AFTER_IDLE_S", 0.0)
    engine = create_engine_for(postgres_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection:
            first_pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
        with engine.connect() as connection:
            second_pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert second_pid != first_pid
    finally:
        engine.dispose()


def test_only_a_connection_that_sat_idle_is_pinged(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings: list[object] = []
    ping = storage.db._ping

    def counted(dbapi_connection: object) -> None:
        pings.append(dbapi_connection)
        ping(dbapi_connection)

    monkeypatch.setattr(storage.db, "_ping", counted)
    engine = create_engine_for(postgres_url, pool_size=1, max_overflow=0)
    try:
        for _ in range(3):
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        assert pings == []  # in steady use: one round trip per query, no ping
        monkeypatch.setattr(storage.db, "PING_AFTER_IDLE_S", 0.0)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert len(pings) == 1
    finally:
        engine.dispose()


# --- assets ---------------------------------------------------------------------------


def test_add_then_get_returns_every_field(repo: SqlAssetRepository) -> None:
    commissioned = datetime(2024, 3, 1, 8, 30, tzinfo=timezone(timedelta(hours=2)))
    created = repo.add(
        asset(
            "pump-1",
            location="Hall B",
            customer="ACME",
            model="CP-200",
            serial="SN-42",
            commissioned_at=commissioned,
            warranty_until=datetime(2027, 3, 1, tzinfo=UTC),
            criticality=Criticality.HIGH,
            tags={"line": "3", "fluid": "glycol"},
        )
    )
    fetched = repo.get("pump-1")
    assert fetched == created
    assert fetched.name == "Pump pump-1"
    assert fetched.location == "Hall B"
    assert fetched.customer == "ACME"
    assert fetched.model == "CP-200"
    assert fetched.serial == "SN-42"
    assert fetched.criticality is Criticality.HIGH
    assert fetched.tags == {"line": "3", "fluid": "glycol"}
    assert fetched.auto_registered is False
    assert fetched.created_at == T0
    assert fetched.updated_at == T0


def test_datetimes_come_back_aware_in_utc(repo: SqlAssetRepository) -> None:
    plus_two = timezone(timedelta(hours=2))
    repo.add(asset("pump-1", commissioned_at=datetime(2024, 3, 1, 8, 30, 15, 123456, plus_two)))
    fetched = repo.get("pump-1")
    assert fetched.commissioned_at is not None
    assert fetched.commissioned_at.utcoffset() == timedelta(0)
    assert fetched.commissioned_at == datetime(2024, 3, 1, 6, 30, 15, 123456, tzinfo=UTC)
    assert fetched.created_at is not None
    assert fetched.created_at.tzinfo is not None


def test_add_refuses_a_duplicate_id(repo: SqlAssetRepository) -> None:
    repo.add(asset("pump-1"))
    with pytest.raises(ConflictError) as caught:
        repo.add(asset("pump-1", name="Another"))
    assert caught.value.code == "conflict"
    assert repo.get("pump-1").name == "Pump pump-1"


def test_get_of_an_unknown_asset_raises_not_found(repo: SqlAssetRepository) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        repo.get("nope")


def test_update_changes_only_the_given_fields(repo: SqlAssetRepository, clock: FrozenClock) -> None:
    repo.add(asset("pump-1", location="Hall B", tags={"a": "1"}))
    clock.at = T0 + timedelta(minutes=5)
    updated = repo.update("pump-1", {"name": "Renamed", "tags": {"b": "2"}, "location": None})
    assert updated.name == "Renamed"
    assert updated.tags == {"b": "2"}
    assert updated.location is None
    assert updated.site == "north"
    assert updated.created_at == T0
    assert updated.updated_at == T0 + timedelta(minutes=5)
    assert repo.get("pump-1") == updated


@pytest.mark.parametrize("field", ["id", "created_at", "updated_at", "colour"])
def test_update_refuses_identity_bookkeeping_and_unknown_fields(
    repo: SqlAssetRepository, field: str
) -> None:
    repo.add(asset("pump-1"))
    with pytest.raises(ValidationError, match=field):
        repo.update("pump-1", {field: "x"})
    assert repo.get("pump-1").updated_at == T0


def test_update_refuses_invalid_values(repo: SqlAssetRepository) -> None:
    repo.add(asset("pump-1"))
    with pytest.raises(ValidationError) as caught:
        repo.update("pump-1", {"name": "", "warranty_until": datetime(2030, 1, 1)})  # noqa: DTZ001
    locations = {tuple(error["loc"]) for error in caught.value.extra["errors"]}
    assert locations == {("name",), ("warranty_until",)}
    assert repo.get("pump-1").name == "Pump pump-1"


def test_update_of_an_unknown_asset_raises_not_found(repo: SqlAssetRepository) -> None:
    with pytest.raises(NotFoundError):
        repo.update("nope", {"name": "x"})


def test_list_filters_by_site_and_type(repo: SqlAssetRepository) -> None:
    repo.add(asset("a", site="north", type="pump"))
    repo.add(asset("b", site="south", type="pump"))
    repo.add(asset("c", site="north", type="fan"))
    assert [a.id for a in repo.list(site="north")] == ["a", "c"]
    assert [a.id for a in repo.list(type="pump")] == ["a", "b"]
    assert [a.id for a in repo.list(site="north", type="fan")] == ["c"]
    assert repo.list(site="west") == []


def test_list_pages_by_id_in_bytewise_order(repo: SqlAssetRepository) -> None:
    ids = ["b-2", "A-9", "a-1", "b.1", "B_3", "c:1", "a-10"]
    for asset_id in ids:
        repo.add(asset(asset_id))
    seen: list[str] = []
    after: str | None = None
    while True:
        page = repo.list(after_id=after, limit=3)
        seen.extend(a.id for a in page)
        if len(page) < 3:
            break
        after = page[-1].id
    assert seen == sorted(ids)
    assert [a.id for a in repo.list(limit=2)] == ["A-9", "B_3"]


def test_existing_ids(repo: SqlAssetRepository) -> None:
    repo.add(asset("a"))
    repo.add(asset("b"))
    assert repo.existing_ids(["a", "b", "c", "a"]) == {"a", "b"}
    assert repo.existing_ids([]) == set()


def test_register_missing_creates_placeholders_once(repo: SqlAssetRepository) -> None:
    repo.add(asset("known"))
    later = T0 + timedelta(hours=1)
    assert repo.register_missing(["known", "new-1", "new-2", "new-1"], later) == {"new-1", "new-2"}
    assert repo.register_missing(["new-1", "new-2", "known"], later) == set()
    assert repo.register_missing([], later) == set()
    placeholder = repo.get("new-1")
    assert placeholder.name == "new-1"
    assert placeholder.type == "unregistered"
    assert placeholder.site == "unassigned"
    assert placeholder.auto_registered is True
    assert placeholder.created_at == later
    assert repo.get("known").auto_registered is False


def test_register_missing_handles_a_large_batch(
    repo: SqlAssetRepository,
) -> None:
    ids = [f"dev-{n:05d}" for n in range(1200)]
    assert repo.register_missing(ids, T0) == set(ids)
    assert repo.existing_ids(ids) == set(ids)


def test_register_missing_is_race_safe(database_url: str) -> None:
    threads = 8
    # Every thread registers an overlapping window of ids, all starting at the same moment.
    batches = [[f"dev-{n:03d}" for n in range(i * 10, i * 10 + 40)] for i in range(threads)]
    expected = {asset_id for batch in batches for asset_id in batch}
    engine = create_engine_for(database_url, pool_size=threads)
    repo = SqlAssetRepository(engine)
    barrier = threading.Barrier(threads)

    def register(batch: list[str]) -> set[str]:
        barrier.wait(timeout=10)
        return repo.register_missing(batch, T0)

    try:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(register, batches))
        created_count = sum(len(r) for r in results)
        assert created_count == len(expected)
        assert set().union(*results) == expected
        assert len(repo.list(limit=1000)) == len(expected)
    finally:
        engine.dispose()


# --- dead letters ---------------------------------------------------------------------


def test_dead_letters_round_trip_newest_first(letters: SqlDeadLetterRepository) -> None:
    raw = b"\xff\xfe not utf-8"
    letters.add_many([letter(1), letter(2, asset_id=None, payload=raw)])
    stored = letters.list()
    assert [x.reason for x in stored] == ["reason 2", "reason 1"]
    newest = stored[0]
    assert newest.id is not None
    assert newest.asset_id is None
    assert newest.payload == raw
    assert newest.payload_size == len(raw) + 2
    assert newest.code == "invalid_json"
    assert newest.topic == "pmk/None/telemetry"
    assert newest.received_at == T0 + timedelta(seconds=2)
    assert newest.received_at.utcoffset() == timedelta(0)


def test_dead_letters_page_backwards_and_filter(letters: SqlDeadLetterRepository) -> None:
    letters.add_many([letter(n, asset_id="a" if n % 2 else "b") for n in range(1, 11)])
    assert letters.count() == 10
    first = letters.list(limit=4)
    assert [x.reason for x in first] == [f"reason {n}" for n in (10, 9, 8, 7)]
    second = letters.list(before_id=first[-1].id, limit=4)
    assert [x.reason for x in second] == [f"reason {n}" for n in (6, 5, 4, 3)]
    only_a = letters.list(asset_id="a")
    assert [x.reason for x in only_a] == [f"reason {n}" for n in (9, 7, 5, 3, 1)]
    assert letters.list(asset_id="zzz") == []


def test_add_many_writes_a_batch_all_or_nothing(letters: SqlDeadLetterRepository) -> None:
    letters.add_many([])
    assert letters.count() == 0
    broken = DeadLetter(
        topic="t",
        payload=b"x",
        payload_size=1,
        code="c",
        reason="r",
        received_at=None,  # type: ignore[arg-type]
    )
    with pytest.raises(IntegrityError):
        letters.add_many([letter(1), letter(2), broken])
    assert letters.count() == 0
    letters.add_many([letter(n) for n in range(500)])
    assert letters.count() == 500


# --- tokens ---------------------------------------------------------------------------


def test_tokens_authenticate_until_revoked(
    tokens: SqlTokenRepository, database_engine: Engine
) -> None:
    planner = tokens.create(Role.PLANNER, "alice", T0)
    viewer = tokens.create(Role.VIEWER, "dashboard", T0)
    assert planner.startswith("pmk_")
    assert len(planner) > 40
    assert planner != viewer

    info = tokens.authenticate(planner)
    assert info is not None
    assert (info.name, info.role) == ("alice", Role.PLANNER)
    assert tokens.authenticate(planner + "x") is None
    assert tokens.authenticate("") is None
    assert tokens.authenticate("not-even-prefixed") is None

    revoked = tokens.revoke(info.id, T0 + timedelta(days=1))
    assert revoked.revoked_at == T0 + timedelta(days=1)
    assert tokens.authenticate(planner) is None
    assert tokens.authenticate(viewer) is not None
    # A second revoke keeps the first revocation time.
    assert tokens.revoke(info.id, T0 + timedelta(days=9)).revoked_at == T0 + timedelta(days=1)

    listed = tokens.list()
    assert [(t.name, t.role, t.active) for t in listed] == [
        ("alice", Role.PLANNER, False),
        ("dashboard", Role.VIEWER, True),
    ]
    assert listed[1].created_at == T0

    with database_engine.connect() as connection:
        stored = set(connection.execute(select(api_tokens.c.token_hash)).scalars())
    assert stored == {hash_token(planner), hash_token(viewer)}
    assert planner not in stored


def test_revoking_an_unknown_token_raises_not_found(tokens: SqlTokenRepository) -> None:
    with pytest.raises(NotFoundError):
        tokens.revoke(999, T0)


def test_an_unreachable_database_is_unavailable_not_a_driver_error() -> None:
    engine = create_engine_for(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(StoreUnavailableError, match="database unavailable"):
            SqlAssetRepository(engine).existing_ids(["pump-1"])
        with pytest.raises(StoreUnavailableError):
            SqlDeadLetterRepository(engine).count()
    finally:
        engine.dispose()
