"""Give work orders their full lifecycle: request, completion, sign-off, hold and closure.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from storage.tables, like 0001.
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Add the corrective request, completion, sign-off, held-from and closed-at columns."""
    with op.batch_alter_table("work_orders") as table:
        table.add_column(sa.Column("request", _JSON))
        table.add_column(sa.Column("completion", _JSON))
        table.add_column(sa.Column("sign_off", _JSON))
        table.add_column(sa.Column("held_from", sa.String(16)))
        table.add_column(sa.Column("closed_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    """Drop the lifecycle columns."""
    with op.batch_alter_table("work_orders") as table:
        for name in ("closed_at", "held_from", "sign_off", "completion", "request"):
            table.drop_column(name)
