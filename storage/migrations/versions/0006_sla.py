"""Store SLA deadlines, actual times and breaches on work orders; escalations; overrides.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from storage.tables, like 0001.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIMES = ("response_due_at", "on_site_due_at", "resolution_due_at", "responded_at", "arrived_at")


def upgrade() -> None:
    """Add the SLA columns, sla_escalations and sla_overrides."""
    with op.batch_alter_table("work_orders") as table:
        for name in _TIMES:
            table.add_column(sa.Column(name, sa.DateTime(timezone=True)))
        table.add_column(sa.Column("breaches", _JSON))
    op.create_table(
        "sla_escalations",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("work_order_id", sa.BigInteger(), nullable=False),
        sa.Column("breach", sa.String(16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("work_order_id", "breach", name="uq_sla_escalations_order_breach"),
    )
    op.create_table(
        "sla_overrides",
        sa.Column("customer", sa.String(200), primary_key=True),
        sa.Column("policy", _JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_table("sla_overrides")
    op.drop_table("sla_escalations")
    with op.batch_alter_table("work_orders") as table:
        table.drop_column("breaches")
        for name in reversed(_TIMES):
            table.drop_column(name)
