"""Create maintenance plans, site calendars, plan occurrences and bookings.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from storage.tables, like 0001.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ID = sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _at(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Add plans, site calendars, the occurrence ledger and bookings; link orders to plans."""
    op.create_table(
        "maintenance_plans",
        sa.Column("id", _ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("asset_id", _ID),
        sa.Column("asset_type", sa.String(100)),
        sa.Column("definition", _JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_maintenance_plans"),
    )
    op.create_index("ix_maintenance_plans_asset_id", "maintenance_plans", ["asset_id"])
    op.create_index("ix_maintenance_plans_asset_type", "maintenance_plans", ["asset_type"])
    op.create_table(
        "site_calendars",
        sa.Column("site", sa.String(100), nullable=False),
        sa.Column("definition", _JSON, nullable=False),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("site", name="pk_site_calendars"),
    )
    op.create_table(
        "plan_occurrences",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("plan_id", _ID, nullable=False),
        sa.Column("asset_id", _ID, nullable=False),
        _at("due_at"),
        sa.Column("cycle_key", sa.String(40)),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("work_order_id", sa.BigInteger()),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_plan_occurrences"),
        sa.UniqueConstraint("plan_id", "asset_id", "due_at", name="uq_plan_occurrences_due"),
        sa.UniqueConstraint("plan_id", "asset_id", "cycle_key", name="uq_plan_occurrences_cycle"),
    )
    op.create_index("ix_plan_occurrences_work_order_id", "plan_occurrences", ["work_order_id"])
    op.create_table(
        "bookings",
        sa.Column("work_order_id", sa.BigInteger(), nullable=False),
        sa.Column("technician_id", _ID, nullable=False),
        _at("start_at"),
        _at("end_at"),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.CheckConstraint("end_at > start_at", name=op.f("ck_bookings_ends_after_start")),
        sa.PrimaryKeyConstraint("work_order_id", name="pk_bookings"),
    )
    op.create_index("ix_bookings_technician_id", "bookings", ["technician_id", "start_at"])
    op.create_index("ix_bookings_start_at", "bookings", ["start_at"])
    op.create_index("ix_bookings_revision", "bookings", ["revision"])
    with op.batch_alter_table("work_orders") as batch:
        batch.add_column(sa.Column("plan_id", _ID))
        batch.add_column(_at("due_at", nullable=True))
    op.create_index("ix_work_orders_plan_id", "work_orders", ["plan_id", "asset_id"])


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index("ix_work_orders_plan_id", table_name="work_orders")
    with op.batch_alter_table("work_orders") as batch:
        batch.drop_column("due_at")
        batch.drop_column("plan_id")
    op.drop_table("bookings")
    op.drop_table("plan_occurrences")
    op.drop_table("site_calendars")
    op.drop_table("maintenance_plans")
