"""Open the relational store (SQLite or PostgreSQL) and bring its schema up to date."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from core.errors import StoreUnavailableError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 5000
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
        engine_options.setdefault("pool_pre_ping", True)
        engine = create_engine(parsed, **engine_options)
    event.listen(engine, "handle_error", _unavailable_on_connection_errors)
    return engine


def _unavailable_on_connection_errors(context: ExceptionContext) -> StoreUnavailableError | None:
    """Turn a lost or refused connection into StoreUnavailableError, which callers retry.

    Ingest retries StoreUnavailableError with backoff and the API answers it with 503;
    a raw driver error would instead end the ingest writer or answer 500.
    """
    error = context.sqlalchemy_exception
    if context.is_disconnect or isinstance(error, OperationalError | InterfaceError):
        return StoreUnavailableError(f"database unavailable: {context.original_exception}")
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
