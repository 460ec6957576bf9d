"""Open the relational store (SQLite or PostgreSQL) and bring its schema up to date."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import DataError, DisconnectionError, InterfaceError, OperationalError

from core.errors import StoreUnavailableError, ValidationError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 5000
# PostgreSQL pool: enough for the API's worker threads at the concurrency it is sized for.
POOL_SIZE = 20
POOL_OVERFLOW = 20
# A pooled connection idle longer than this is pinged before it is handed out.
PING_AFTER_IDLE_S = 5.0
# Any constant works; it only has to be the same for every pmkeeper process.
_MIGRATION_LOCK_KEY = 0x706D6B6D6967  # "pmkmig"


def normalize_url(url: str) -> URL:
    """Return `url` as a SQLAlchemy URL, using psycopg 3 for plain `postgresql://` URLs."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_engine_for(url: str, **engine_options: Any) -> Engine:
    """Create an engine for `url`: SQLite in WAL mode, or PostgreSQL through psycopg 3."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(parsed, **engine_options)
    else:
        # The API serves each request on one of anyio's 40 worker threads. With SQLAlchemy's
        # default 5 + 10 connections, a busy API opened a new PostgreSQL connection for about
        # every third request (a fork on the server) and dropped it again on check-in.
        engine_options.setdefault("pool_size", POOL_SIZE)
        engine_options.setdefault("max_overflow", POOL_OVERFLOW)
        engine = create_engine(parsed, **engine_options)
        _ping_when_idle(engine)
    event.listen(engine, "handle_error", _unavailable_on_connection_errors)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection with a round trip only when it sat idle a while.

    `pool_pre_ping` pings on every check-out: a second round trip for every query. A
    connection that was in use a moment ago is as good as the ping would prove; one that
    sat idle may have been cut by a server restart or a firewall, and is pinged. A dead
    one raises DisconnectionError, and the pool replaces it before anyone sees it.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            _ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError(f"pooled connection is gone: {error}") from error


def _ping(dbapi_connection: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT 1")
    finally:
        cursor.close()


def _unavailable_on_connection_errors(
    context: ExceptionContext,
) -> StoreUnavailableError | ValidationError | None:
    """Turn a lost or refused connection into StoreUnavailableError, which callers retry.

    Ingest retries StoreUnavailableError with backoff and the API answers it with 503;
    a raw driver error would instead end the ingest writer or answer 500. Text with a NUL
    character, which PostgreSQL cannot store (SQLite can), is the caller's mistake: a
    ValidationError (422), whichever field it came in, and the transaction rolls back.
    """
    error = context.sqlalchemy_exception
    if context.is_disconnect or isinstance(error, OperationalError | InterfaceError):
        return StoreUnavailableError(f"database unavailable: {context.original_exception}")
    if isinstance(error, DataError) and "NUL" in str(context.original_exception):
        return ValidationError("text must not contain NUL (U+0000) characters")
    return None


def _sqlite_engine(url: URL, **engine_options: Any) -> Engine:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **engine_options)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself: the driver's legacy mode skips it for DDL and
        # SELECT, which breaks transactional migrations and repeatable reads.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


def alembic_config() -> Config:
    """Build the Alembic configuration in code, so no alembic.ini is needed at runtime."""
    config = Config()
    # Config values go through configparser interpolation, which treats % specially.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (default: the newest), in one transaction."""
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Several processes (api, ingest, scheduler) may start at once; migrate one at a time.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    log.info("database schema is at %s (%s)", revision, engine.url.get_backend_name())
