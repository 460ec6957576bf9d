"""Create technicians (sites, skills, time off) and let work orders be assigned to one.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from storage.tables, like 0001.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ID = sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _technician_key() -> sa.Column[str]:
    return sa.Column("technician_id", _ID, nullable=False)


def upgrade() -> None:
    """Add technicians, their sites, skills and time off, and work-order assignment."""
    op.create_table(
        "technicians",
        sa.Column("id", _ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(254)),
        sa.Column("phone", sa.String(50)),
        sa.Column("region", sa.String(100)),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("weekly_hours", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_technicians"),
    )
    op.create_table(
        "technician_sites",
        _technician_key(),
        sa.Column("site", sa.String(100), nullable=False),
        sa.ForeignKeyConstraint(
            ["technician_id"],
            ["technicians.id"],
            name="fk_technician_sites_technician_id_technicians",
        ),
        sa.PrimaryKeyConstraint("technician_id", "site", name="pk_technician_sites"),
    )
    op.create_index("ix_technician_sites_site", "technician_sites", ["site", "technician_id"])
    op.create_table(
        "technician_skills",
        _technician_key(),
        sa.Column("skill", sa.String(64), nullable=False),
        sa.Column("certified_until", sa.Date()),
        sa.ForeignKeyConstraint(
            ["technician_id"],
            ["technicians.id"],
            name="fk_technician_skills_technician_id_technicians",
        ),
        sa.PrimaryKeyConstraint("technician_id", "skill", name="pk_technician_skills"),
    )
    op.create_index("ix_technician_skills_skill", "technician_skills", ["skill", "technician_id"])
    op.create_table(
        "technician_time_off",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        _technician_key(),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.CheckConstraint(
            "end_at > start_at", name=op.f("ck_technician_time_off_ends_after_start")
        ),
        sa.ForeignKeyConstraint(
            ["technician_id"],
            ["technicians.id"],
            name="fk_technician_time_off_technician_id_technicians",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_technician_time_off"),
    )
    op.create_index(
        "ix_technician_time_off_technician_id",
        "technician_time_off",
        ["technician_id", "start_at"],
    )
    # Nullable columns without a foreign key: SQLite adds them in place, no table copy.
    with op.batch_alter_table("work_orders") as table:
        table.add_column(sa.Column("technician_id", _ID))
        table.add_column(sa.Column("assigned_at", sa.DateTime(timezone=True)))
    op.create_index("ix_work_orders_technician_id", "work_orders", ["technician_id", "id"])


def downgrade() -> None:
    """Drop what upgrade added, dependents first."""
    op.drop_index("ix_work_orders_technician_id", table_name="work_orders")
    with op.batch_alter_table("work_orders") as table:
        table.drop_column("assigned_at")
        table.drop_column("technician_id")
    for table_name in ("technician_time_off", "technician_skills", "technician_sites"):
        op.drop_table(table_name)
    op.drop_table("technicians")
