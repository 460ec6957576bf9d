"""Create the asset registry, dead letters and API tokens.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here rather than imported from storage.tables: a migration must keep
# creating the schema of its day even after the tables module moves on.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ASSET_ID = sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp(name: str, *, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create the assets, dead_letters and api_tokens tables."""
    op.create_table(
        "assets",
        sa.Column("id", _ASSET_ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("site", sa.String(100), nullable=False),
        sa.Column("location", sa.String(200), nullable=True),
        sa.Column("customer", sa.String(200), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("serial", sa.String(200), nullable=True),
        _timestamp("commissioned_at"),
        _timestamp("warranty_until"),
        sa.Column("criticality", sa.String(16), nullable=False),
        sa.Column("tags", _JSON, nullable=False),
        sa.Column("auto_registered", sa.Boolean(), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_assets"),
    )
    op.create_index("ix_assets_site", "assets", ["site"])
    op.create_index("ix_assets_type", "assets", ["type"])

    op.create_table(
        "dead_letters",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(1024), nullable=False),
        sa.Column("asset_id", sa.String(128), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("payload_size", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _timestamp("received_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_asset_id", "dead_letters", ["asset_id"])

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("revoked_at"),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )


def downgrade() -> None:
    """Drop the tables this revision created."""
    op.drop_table("api_tokens")
    op.drop_index("ix_dead_letters_asset_id", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_index("ix_assets_type", table_name="assets")
    op.drop_index("ix_assets_site", table_name="assets")
    op.drop_table("assets")
