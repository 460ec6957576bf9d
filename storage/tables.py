"""The relational schema as SQLAlchemy Core tables; migrations create the same shape."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
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

# Rule states without their windows, which are rebuilt from telemetry on start.
rule_states = Table(
    "rule_states",
    metadata,
    Column("rule_id", AssetId, primary_key=True),
    Column("asset_id", AssetId, primary_key=True),
    Column("metric", String(128), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("last_ts_ms", BigInteger()),
    Column("pending_since_ms", BigInteger()),
    Column("firing_since_ms", BigInteger()),
    Column("clear_since_ms", BigInteger()),
    Column("episode", Integer(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

work_orders = Table(
    "work_orders",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("asset_id", AssetId, nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", Text(), nullable=False),
    Column("rule_id", AssetId),
    # "rule|asset" while a predictive order is open, else NULL: the unique constraint is
    # what guarantees one open predictive order per (rule, asset), whatever races.
    Column("open_key", String(300), unique=True),
    Column("evidence", JsonDocument, nullable=False),
    Column("repeat_count", Integer(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("resolved_at", UtcDateTime()),
    Column("resolution_note", Text()),
    Column("request", JsonDocument),
    Column("completion", JsonDocument),
    Column("sign_off", JsonDocument),
    Column("held_from", String(16)),
    Column("closed_at", UtcDateTime()),
    Column("response_due_at", UtcDateTime()),
    Column("on_site_due_at", UtcDateTime()),
    Column("resolution_due_at", UtcDateTime()),
    Column("responded_at", UtcDateTime()),
    Column("arrived_at", UtcDateTime()),
    # The SLA targets flagged as breached, as a JSON list; NULL is none yet.
    Column("breaches", JsonDocument),
    # Who does the work (a technicians.id, no foreign key: like part reservations, separate
    # aggregates), and since when; NULL while nobody is assigned.
    Column("technician_id", AssetId),
    Column("assigned_at", UtcDateTime()),
    # Preventive orders: the plan that generated them and the due time of that occurrence.
    Column("plan_id", AssetId),
    Column("due_at", UtcDateTime()),
    Index("ix_work_orders_technician_id", "technician_id", "id"),
    Index("ix_work_orders_asset_id", "asset_id", "status"),
    Index("ix_work_orders_rule_id", "rule_id", "asset_id"),
    Index("ix_work_orders_plan_id", "plan_id", "asset_id"),
)

# Every work-order transition: who, when, from, to, why. Append-only.
work_order_events = Table(
    "work_order_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("work_order_id", BigInteger(), nullable=False, index=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("from_status", String(16)),
    Column("to_status", String(16), nullable=False),
    Column("note", Text()),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("rule_id", AssetId, nullable=False),
    Column("asset_id", AssetId, nullable=False),
    Column("metric", String(128), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("episode", Integer(), nullable=False),
    Column("last_episode", Integer(), nullable=False),
    Column("fired_at", UtcDateTime(), nullable=False),
    Column("value", Float(), nullable=False),
    Column("threshold", Float()),
    Column("predicted_crossing_at", UtcDateTime()),
    Column("evidence", JsonDocument, nullable=False),
    Column("suppressed", Boolean(), nullable=False),
    Column("flapping", Boolean(), nullable=False),
    Column("fire_count", Integer(), nullable=False),
    Column("work_order_id", BigInteger()),
    Column("recorded_at", UtcDateTime(), nullable=False),
    Column("acknowledged_at", UtcDateTime()),
    Column("acknowledged_by", String(200)),
    Column("resolved_at", UtcDateTime()),
    Column("resolved_by", String(200)),
    Column("note", Text()),
    # A key's firings are told apart by event time (episode numbers restart when a rule is
    # deleted and created again); the constraint catches two processes recording one firing.
    UniqueConstraint("rule_id", "asset_id", "metric", "fired_at", name="uq_alerts_key_fired_at"),
    Index("ix_alerts_status", "status"),
    Index("ix_alerts_asset_id", "asset_id"),
    Index("ix_alerts_work_order_id", "work_order_id"),
    Index("ix_alerts_key", "rule_id", "asset_id", "metric", "id"),
)


# --- parts inventory ------------------------------------------------------------------
# Quantities are integer thousandths of the part's unit (`*_milli`): exact on both
# backends (SQLite does NUMERIC arithmetic in floating point), and the guarded UPDATE
# that keeps reservations within stock compares them in SQL.
# Imported here so this section only appends to the module (E402: deliberately not at top).

stock_locations = Table(
    "stock_locations",
    metadata,
    Column("code", AssetId, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("site", String(100)),
    Column("created_at", UtcDateTime(), nullable=False),
)

parts = Table(
    "parts",
    metadata,
    Column("sku", AssetId, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("unit", String(16), nullable=False),
    Column("category", String(100), nullable=False),
    Column("reorder_point_milli", BigInteger(), nullable=False),
    Column("reorder_quantity_milli", BigInteger(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    CheckConstraint(
        "reorder_point_milli >= 0 AND reorder_quantity_milli >= 0", name="reorder_not_negative"
    ),
    Index("ix_parts_category", "category", "sku"),
)

# One row per (part, location) that ever moved; on_hand is the sum of its ledger. The
# check is the last line of defence: the database itself refuses an over-reservation.
stock = Table(
    "stock",
    metadata,
    Column("sku", AssetId, ForeignKey("parts.sku"), primary_key=True),
    Column("location", AssetId, ForeignKey("stock_locations.code"), primary_key=True),
    Column("on_hand_milli", BigInteger(), nullable=False),
    Column("reserved_milli", BigInteger(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    CheckConstraint(
        "reserved_milli >= 0 AND reserved_milli <= on_hand_milli", name="reserved_within_on_hand"
    ),
    Index("ix_stock_location", "location"),
)

# work_order_id is a plain id with no foreign key: work orders and stock are separate
# aggregates, and reservations outlive nothing but their own stock row.
part_reservations = Table(
    "part_reservations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("work_order_id", BigInteger(), nullable=False),
    Column("sku", AssetId, nullable=False),
    Column("location", AssetId, nullable=False),
    Column("quantity_milli", BigInteger(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("issued_milli", BigInteger()),
    Column("closed_at", UtcDateTime()),
    Column("closed_by", String(200)),
    Column("note", Text()),
    Column("closing_note", Text()),
    ForeignKeyConstraint(["sku", "location"], ["stock.sku", "stock.location"]),
    CheckConstraint("quantity_milli > 0", name="quantity_positive"),
    Index("ix_part_reservations_work_order_id", "work_order_id"),
    Index("ix_part_reservations_status", "status", "expires_at"),
)

# The append-only stock ledger: quantity_milli is the signed change to on_hand.
stock_ledger = Table(
    "stock_ledger",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("sku", AssetId, nullable=False),
    Column("location", AssetId, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("quantity_milli", BigInteger(), nullable=False),
    Column("reason", Text()),
    Column("work_order_id", BigInteger()),
    Column("reservation_id", BigInteger(), ForeignKey("part_reservations.id")),
    Column("actor", String(200), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    ForeignKeyConstraint(["sku", "location"], ["stock.sku", "stock.location"]),
    Index("ix_stock_ledger_key", "sku", "location", "id"),
    Index("ix_stock_ledger_work_order_id", "work_order_id"),
)

# Demands the stock could not meet, for the stock-out rate KPI.
stock_out_events = Table(
    "stock_out_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("sku", AssetId, ForeignKey("parts.sku"), nullable=False),
    Column("location", AssetId, ForeignKey("stock_locations.code"), nullable=False),
    Column("work_order_id", BigInteger()),
    Column("requested_milli", BigInteger(), nullable=False),
    Column("available_milli", BigInteger(), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Index("ix_stock_out_events_at", "at"),
    Index("ix_stock_out_events_sku", "sku", "at"),
)


# One row per (work order, breached target): the unique key is what makes a breach flagged
# and escalated exactly once, however many sweeps race.
sla_escalations = Table(
    "sla_escalations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("work_order_id", BigInteger(), nullable=False),
    Column("breach", String(16), nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    UniqueConstraint("work_order_id", "breach", name="uq_sla_escalations_order_breach"),
)

# A customer's (or contract's) changes to the SLA policy, as a JSON SlaPolicyOverride.
sla_overrides = Table(
    "sla_overrides",
    metadata,
    Column("customer", String(200), primary_key=True),
    Column("policy", JsonDocument, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)


# --- technicians ----------------------------------------------------------------------
# Sites and skills get tables of their own because lists filter on them (an index on both
# backends; JSON containment differs between SQLite and PostgreSQL). Weekly hours are a
# JSON list of {weekday, start, end}: always read and replaced whole with the technician,
# validated by the domain, and never queried in SQL (availability is zone and DST
# arithmetic, done in Python).

technicians = Table(
    "technicians",
    metadata,
    Column("id", AssetId, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(254)),
    Column("phone", String(50)),
    Column("region", String(100)),
    Column("time_zone", String(64), nullable=False),
    Column("weekly_hours", JsonDocument, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

technician_sites = Table(
    "technician_sites",
    metadata,
    Column("technician_id", AssetId, ForeignKey("technicians.id"), primary_key=True),
    Column("site", String(100), primary_key=True),
    Index("ix_technician_sites_site", "site", "technician_id"),
)

# certified_until is the last day the certification is valid; NULL: it never expires.
technician_skills = Table(
    "technician_skills",
    metadata,
    Column("technician_id", AssetId, ForeignKey("technicians.id"), primary_key=True),
    Column("skill", String(64), primary_key=True),
    Column("certified_until", Date()),
    Index("ix_technician_skills_skill", "skill", "technician_id"),
)

# Absences, added and removed one by one: the technician cannot be booked in [start, end).
technician_time_off = Table(
    "technician_time_off",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("technician_id", AssetId, ForeignKey("technicians.id"), nullable=False),
    Column("start_at", UtcDateTime(), nullable=False),
    Column("end_at", UtcDateTime(), nullable=False),
    Column("reason", Text()),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("created_by", String(200), nullable=False),
    CheckConstraint("end_at > start_at", name="ends_after_start"),
    Index("ix_technician_time_off_technician_id", "technician_id", "start_at"),
)


# A plan's definition is kept whole (scheduler.model.MaintenancePlan); its scope is copied
# into columns so generation finds the plans of an asset or an asset type by index.
maintenance_plans = Table(
    "maintenance_plans",
    metadata,
    Column("id", AssetId, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("asset_id", AssetId, index=True),
    Column("asset_type", String(100), index=True),
    Column("definition", JsonDocument, nullable=False),
    Column("enabled", Boolean(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Time zone, holidays and seasons of a site (scheduler.model.SiteCalendar).
site_calendars = Table(
    "site_calendars",
    metadata,
    Column("site", String(100), primary_key=True),
    Column("definition", JsonDocument, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Every occurrence a plan produced on an asset, generated or missed: the unique keys make
# generation idempotent however often, and from however many processes, it runs. Fixed
# series are keyed by due time; cycles (floating, meter) by the baseline they count from,
# since a meter's projected due time can move between runs.
plan_occurrences = Table(
    "plan_occurrences",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("plan_id", AssetId, nullable=False),
    Column("asset_id", AssetId, nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("cycle_key", String(40)),
    Column("trigger", String(16), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("work_order_id", BigInteger(), index=True),
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint("plan_id", "asset_id", "due_at", name="uq_plan_occurrences_due"),
    UniqueConstraint("plan_id", "asset_id", "cycle_key", name="uq_plan_occurrences_cycle"),
)

# One row per booked work order; a reschedule bumps `sequence` (iCalendar SEQUENCE) and a
# cancellation keeps the row, so calendar feeds can tell subscribers the event is gone.
# `revision` orders every booking write (each takes the booking lock and the next number),
# so a generator that built its diary at revision R syncs only what others wrote after R.
bookings = Table(
    "bookings",
    metadata,
    Column("work_order_id", BigInteger(), primary_key=True, autoincrement=False),
    Column("technician_id", AssetId, nullable=False),
    Column("start_at", UtcDateTime(), nullable=False),
    Column("end_at", UtcDateTime(), nullable=False),
    Column("late", Boolean(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("sequence", Integer(), nullable=False),
    Column("revision", BigInteger(), nullable=False, index=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    CheckConstraint("end_at > start_at", name="ends_after_start"),
    Index("ix_bookings_technician_id", "technician_id", "start_at"),
    Index("ix_bookings_start_at", "start_at"),
)
