"""Create the parts inventory: locations, parts, stock, reservations, ledger, stock-outs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from storage.tables, like 0001.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ID = sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql")


def _timestamp(name: str, *, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _milli(name: str, *, nullable: bool = False) -> sa.Column[int]:
    # Quantities are integer thousandths of the part's unit.
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def upgrade() -> None:
    """Create stock_locations, parts, stock, part_reservations, stock_ledger, stock_out_events."""
    op.create_table(
        "stock_locations",
        sa.Column("code", _ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("site", sa.String(100)),
        _timestamp("created_at", nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_stock_locations"),
    )
    op.create_table(
        "parts",
        sa.Column("sku", _ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("category", sa.String(100), nullable=False),
        _milli("reorder_point_milli"),
        _milli("reorder_quantity_milli"),
        _timestamp("created_at", nullable=False),
        _timestamp("updated_at", nullable=False),
        sa.CheckConstraint(
            "reorder_point_milli >= 0 AND reorder_quantity_milli >= 0",
            name=op.f("ck_parts_reorder_not_negative"),
        ),
        sa.PrimaryKeyConstraint("sku", name="pk_parts"),
    )
    op.create_index("ix_parts_category", "parts", ["category", "sku"])
    op.create_table(
        "stock",
        sa.Column("sku", _ID, nullable=False),
        sa.Column("location", _ID, nullable=False),
        _milli("on_hand_milli"),
        _milli("reserved_milli"),
        _timestamp("updated_at", nullable=False),
        sa.CheckConstraint(
            "reserved_milli >= 0 AND reserved_milli <= on_hand_milli",
            name=op.f("ck_stock_reserved_within_on_hand"),
        ),
        sa.ForeignKeyConstraint(["sku"], ["parts.sku"], name="fk_stock_sku_parts"),
        sa.ForeignKeyConstraint(
            ["location"], ["stock_locations.code"], name="fk_stock_location_stock_locations"
        ),
        sa.PrimaryKeyConstraint("sku", "location", name="pk_stock"),
    )
    op.create_index("ix_stock_location", "stock", ["location"])
    op.create_table(
        "part_reservations",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("work_order_id", sa.BigInteger(), nullable=False),
        sa.Column("sku", _ID, nullable=False),
        sa.Column("location", _ID, nullable=False),
        _milli("quantity_milli"),
        sa.Column("status", sa.String(16), nullable=False),
        _timestamp("expires_at", nullable=False),
        _timestamp("created_at", nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _milli("issued_milli", nullable=True),
        _timestamp("closed_at"),
        sa.Column("closed_by", sa.String(200)),
        sa.Column("note", sa.Text()),
        sa.Column("closing_note", sa.Text()),
        sa.CheckConstraint(
            "quantity_milli > 0", name=op.f("ck_part_reservations_quantity_positive")
        ),
        sa.ForeignKeyConstraint(
            ["sku", "location"],
            ["stock.sku", "stock.location"],
            name="fk_part_reservations_sku_stock",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_part_reservations"),
    )
    op.create_index("ix_part_reservations_work_order_id", "part_reservations", ["work_order_id"])
    op.create_index("ix_part_reservations_status", "part_reservations", ["status", "expires_at"])
    op.create_table(
        "stock_ledger",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("sku", _ID, nullable=False),
        sa.Column("location", _ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        _milli("quantity_milli"),
        sa.Column("reason", sa.Text()),
        sa.Column("work_order_id", sa.BigInteger()),
        sa.Column("reservation_id", sa.BigInteger()),
        sa.Column("actor", sa.String(200), nullable=False),
        _timestamp("at", nullable=False),
        sa.ForeignKeyConstraint(
            ["sku", "location"], ["stock.sku", "stock.location"], name="fk_stock_ledger_sku_stock"
        ),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["part_reservations.id"],
            name="fk_stock_ledger_reservation_id_part_reservations",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_stock_ledger"),
    )
    op.create_index("ix_stock_ledger_key", "stock_ledger", ["sku", "location", "id"])
    op.create_index("ix_stock_ledger_work_order_id", "stock_ledger", ["work_order_id"])
    op.create_table(
        "stock_out_events",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("sku", _ID, nullable=False),
        sa.Column("location", _ID, nullable=False),
        sa.Column("work_order_id", sa.BigInteger()),
        _milli("requested_milli"),
        _milli("available_milli"),
        _timestamp("at", nullable=False),
        sa.ForeignKeyConstraint(["sku"], ["parts.sku"], name="fk_stock_out_events_sku_parts"),
        sa.ForeignKeyConstraint(
            ["location"],
            ["stock_locations.code"],
            name="fk_stock_out_events_location_stock_locations",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_stock_out_events"),
    )
    op.create_index("ix_stock_out_events_at", "stock_out_events", ["at"])
    op.create_index("ix_stock_out_events_sku", "stock_out_events", ["sku", "at"])


def downgrade() -> None:
    """Drop the inventory tables, dependents first."""
    for table in (
        "stock_out_events",
        "stock_ledger",
        "part_reservations",
        "stock",
        "parts",
        "stock_locations",
    ):
        op.drop_table(table)
