"""Create rule states, alerts, work orders and the work-order audit trail.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from storage.tables, like 0001.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ID = sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp(name: str, *, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create rule_states, work_orders, work_order_events and alerts."""
    op.create_table(
        "rule_states",
        sa.Column("rule_id", _ID, nullable=False),
        sa.Column("asset_id", _ID, nullable=False),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_ts_ms", sa.BigInteger()),
        sa.Column("pending_since_ms", sa.BigInteger()),
        sa.Column("firing_since_ms", sa.BigInteger()),
        sa.Column("clear_since_ms", sa.BigInteger()),
        sa.Column("episode", sa.Integer(), nullable=False),
        _timestamp("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "asset_id", "metric", name="pk_rule_states"),
    )
    op.create_table(
        "work_orders",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("asset_id", _ID, nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("rule_id", _ID),
        sa.Column("open_key", sa.String(300)),
        sa.Column("evidence", _JSON, nullable=False),
        sa.Column("repeat_count", sa.Integer(), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("updated_at", nullable=False),
        _timestamp("resolved_at"),
        sa.Column("resolution_note", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_work_orders"),
        sa.UniqueConstraint("open_key", name="uq_work_orders_open_key"),
    )
    op.create_index("ix_work_orders_asset_id", "work_orders", ["asset_id", "status"])
    op.create_index("ix_work_orders_rule_id", "work_orders", ["rule_id", "asset_id"])
    op.create_table(
        "work_order_events",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("work_order_id", sa.BigInteger(), nullable=False),
        _timestamp("at", nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_work_order_events"),
    )
    op.create_index("ix_work_order_events_work_order_id", "work_order_events", ["work_order_id"])
    op.create_table(
        "alerts",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("rule_id", _ID, nullable=False),
        sa.Column("asset_id", _ID, nullable=False),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("last_episode", sa.Integer(), nullable=False),
        _timestamp("fired_at", nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float()),
        _timestamp("predicted_crossing_at"),
        sa.Column("evidence", _JSON, nullable=False),
        sa.Column("suppressed", sa.Boolean(), nullable=False),
        sa.Column("flapping", sa.Boolean(), nullable=False),
        sa.Column("fire_count", sa.Integer(), nullable=False),
        sa.Column("work_order_id", sa.BigInteger()),
        _timestamp("recorded_at", nullable=False),
        _timestamp("acknowledged_at"),
        sa.Column("acknowledged_by", sa.String(200)),
        _timestamp("resolved_at"),
        sa.Column("resolved_by", sa.String(200)),
        sa.Column("note", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint(
            "rule_id", "asset_id", "metric", "fired_at", name="uq_alerts_key_fired_at"
        ),
    )
    op.create_index("ix_alerts_status", "alerts", ["status"])
    op.create_index("ix_alerts_asset_id", "alerts", ["asset_id"])
    op.create_index("ix_alerts_work_order_id", "alerts", ["work_order_id"])
    op.create_index("ix_alerts_key", "alerts", ["rule_id", "asset_id", "metric", "id"])


def downgrade() -> None:
    """Drop what upgrade created."""
    for table in ("alerts", "work_order_events", "work_orders", "rule_states"):
        op.drop_table(table)
