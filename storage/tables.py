"""The relational schema as SQLAlchemy Core tables; migrations create the same shape."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects import postgresql

# Stable constraint names keep future migrations (and SQLite batch mode) predictable.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Store aware datetimes as UTC and always read them back aware, even from SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes and convert aware ones to UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; pmkeeper only stores aware UTC times")
        value = value.astimezone(UTC)
        # SQLite has no time zone type: keep the UTC wall time, re-tag it on the way out.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# A 64-bit key; SQLite only autoincrements a column declared exactly INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# Order ids bytewise on PostgreSQL too, so pagination reads the same on both backends.
AssetId = String(128).with_variant(String(128, collation="C"), "postgresql")

JsonDocument = JSON().with_variant(postgresql.JSONB(), "postgresql")


assets = Table(
    "assets",
    metadata,
    Column("id", AssetId, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("type", String(100), nullable=False),
    Column("site", String(100), nullable=False),
    Column("location", String(200)),
    Column("customer", String(200)),
    Column("model", String(200)),
    Column("serial", String(200)),
    Column("commissioned_at", UtcDateTime()),
    Column("warranty_until", UtcDateTime()),
    Column("criticality", String(16), nullable=False),
    Column("tags", JsonDocument, nullable=False),
    Column("auto_registered", Boolean(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_assets_site", "site"),
    Index("ix_assets_type", "type"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("topic", String(1024), nullable=False),
    Column("asset_id", String(128), index=True),
    Column("payload", LargeBinary(), nullable=False),
    Column("payload_size", Integer(), nullable=False),
    Column("code", String(64), nullable=False),
    Column("reason", Text(), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime()),
)

rules = Table(
    "rules",
    metadata,
    # Bytewise collation, like asset ids, so keyset pages agree on SQLite and PostgreSQL.
    Column("id", AssetId, primary_key=True),
    Column("name", String(200), nullable=False),
    # The whole definition as validated JSON: conditions evolve without a migration each.
    Column("definition", JsonDocument, nullable=False),
    Column("enabled", Boolean(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)
