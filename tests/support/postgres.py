"""Fixture plugin: a throwaway PostgreSQL database, and migrated databases on both backends.

`pg_url` creates one database per test session on the real server (127.0.0.1:5432, or
`PMK_TEST_PG_DSN`) and drops it afterwards. `database_url` gives each test an empty,
migrated database: a SQLite file, or a fresh schema of the session database (a schema
is much cheaper to create than a database).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import URL, Engine

from storage.db import create_engine_for, migrate

PG_DSN_ENV = "PMK_TEST_PG_DSN"
DEFAULT_PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.external_service),
]


def _server_dsn() -> str:
    return os.environ.get(PG_DSN_ENV) or DEFAULT_PG_DSN


def _admin_connection(dsn: str) -> psycopg.Connection[Any]:
    """Connect to the maintenance database; skip locally, or fail under CI, if unreachable."""
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        where = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "password"}
        message = f"PostgreSQL is not reachable at {where} (set {PG_DSN_ENV}): {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must provide it", pytrace=False)
        pytest.skip(message)


def sqlalchemy_url(dsn: str, **overrides: str) -> str:
    """Turn a libpq DSN (URL or key=value) into a psycopg 3 SQLAlchemy URL."""
    merged = {**conninfo_to_dict(dsn), **overrides}
    params = {key: str(value) for key, value in merged.items() if value is not None}
    port = params.pop("port", None)
    url = URL.create(
        "postgresql+psycopg",
        username=params.pop("user", None),
        password=params.pop("password", None),
        host=params.pop("host", None),
        port=int(port) if port else None,
        database=params.pop("dbname", None),
        query=params,
    )
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """Yield the SQLAlchemy URL of a fresh database, dropped at the end of the session."""
    dsn = _server_dsn()
    name = f"pmk_test_{secrets.token_hex(6)}"
    with _admin_connection(dsn) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield sqlalchemy_url(dsn, dbname=name)
    finally:
        with _admin_connection(dsn) as admin:
            # FORCE terminates sessions a test left open (PostgreSQL 13+).
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _fresh_postgres_schema(pg_url: str) -> str:
    """Create an empty schema in the session database; return a URL that works inside it."""
    schema = f"t_{secrets.token_hex(6)}"
    conninfo = make_conninfo(pg_url.replace("postgresql+psycopg://", "postgresql://", 1))
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    # search_path makes the schema the only one unqualified names resolve in, tables and
    # alembic_version included, so each test sees an empty database.
    return sqlalchemy_url(conninfo, options=f"-csearch_path={schema}")


def _empty_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'pmkeeper.db'}"
    return _fresh_postgres_schema(request.getfixturevalue("pg_url"))


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return the URL of an empty, unmigrated database, once per backend."""
    return _empty_database(str(request.param), request, tmp_path)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return the URL of an empty database migrated to the newest schema, once per backend."""
    url = _empty_database(str(request.param), request, tmp_path)
    engine = create_engine_for(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture
def database_engine(database_url: str) -> Iterator[Engine]:
    """Yield an engine on `database_url`, disposed after the test."""
    engine = create_engine_for(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def postgres_url(pg_url: str) -> str:
    """Return the URL of an empty PostgreSQL schema of its own, for one test."""
    return _fresh_postgres_schema(pg_url)
