"""An asset's history from the work-order audit trail, the alerts and the stock ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, or_, select

from core.history import SOURCE_OF, HistoryCursor, HistoryEntry, HistoryKind, cursor_of
from core.inventory import MovementKind
from core.workorders import WorkOrderKind
from storage.inventory import from_milli
from storage.tables import alerts, parts, stock_ledger, work_order_events, work_orders


def _after(
    at: Any, entry_id: Any, source: int, cursor: HistoryCursor | None
) -> ColumnElement[bool] | None:
    """Return the condition for entries of `source` that come after `cursor`."""
    if cursor is None:
        return None
    if source > cursor.source:
        return at >= cursor.at  # type: ignore[no-any-return]
    if source < cursor.source:
        return at > cursor.at  # type: ignore[no-any-return]
    return or_(at > cursor.at, and_(at == cursor.at, entry_id > cursor.id))


def _window(
    at: Any, start_at: datetime | None, end_at: datetime | None
) -> list[ColumnElement[bool]]:
    conditions = []
    if start_at is not None:
        conditions.append(at >= start_at)
    if end_at is not None:
        conditions.append(at < end_at)
    return conditions


class SqlAssetHistory:
    """Reads an asset's history; each source is read in time order and the pages merged."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def history(
        self,
        asset_id: str,
        *,
        start_at: datetime | None,
        end_at: datetime | None,
        after: HistoryCursor | None,
        limit: int,
    ) -> list[HistoryEntry]:
        """Return up to `limit` entries in [start_at, end_at) after `after`, oldest first."""
        with self._engine.connect() as connection:
            fired = select(alerts).where(
                alerts.c.asset_id == asset_id,
                *_window(alerts.c.fired_at, start_at, end_at),
            )
            since = _after(alerts.c.fired_at, alerts.c.id, SOURCE_OF[HistoryKind.ALERT], after)
            if since is not None:
                fired = fired.where(since)
            alert_rows = connection.execute(
                fired.order_by(alerts.c.fired_at, alerts.c.id).limit(limit)
            )
            entries = [_alert_entry(row._mapping) for row in alert_rows]

            moved = (
                select(
                    work_order_events,
                    work_orders.c.kind,
                    work_orders.c.title,
                )
                .join(work_orders, work_orders.c.id == work_order_events.c.work_order_id)
                .where(
                    work_orders.c.asset_id == asset_id,
                    *_window(work_order_events.c.at, start_at, end_at),
                )
            )
            since = _after(
                work_order_events.c.at,
                work_order_events.c.id,
                SOURCE_OF[HistoryKind.WORK_ORDER],
                after,
            )
            if since is not None:
                moved = moved.where(since)
            event_rows = connection.execute(
                moved.order_by(work_order_events.c.at, work_order_events.c.id).limit(limit)
            )
            entries += [_order_entry(row._mapping) for row in event_rows]

            # Parts issued to the asset's work orders: through a reservation or unplanned.
            issued = (
                select(stock_ledger, parts.c.unit, parts.c.name.label("part_name"))
                .join(work_orders, work_orders.c.id == stock_ledger.c.work_order_id)
                .join(parts, parts.c.sku == stock_ledger.c.sku)
                .where(
                    work_orders.c.asset_id == asset_id,
                    stock_ledger.c.kind == MovementKind.ISSUE.value,
                    *_window(stock_ledger.c.at, start_at, end_at),
                )
            )
            since = _after(
                stock_ledger.c.at, stock_ledger.c.id, SOURCE_OF[HistoryKind.PART_ISSUE], after
            )
            if since is not None:
                issued = issued.where(since)
            issue_rows = connection.execute(
                issued.order_by(stock_ledger.c.at, stock_ledger.c.id).limit(limit)
            )
            entries += [_issue_entry(row._mapping) for row in issue_rows]
        entries.sort(key=cursor_of)
        return entries[:limit]


def _alert_entry(row: Any) -> HistoryEntry:
    threshold = "" if row["threshold"] is None else f" (threshold {row['threshold']:g})"
    return HistoryEntry(
        at=row["fired_at"],
        kind=HistoryKind.ALERT,
        id=row["id"],
        summary=(
            f"{row['severity']} alert: rule {row['rule_id']} fired on {row['metric']} "
            f"at {row['value']:g}{threshold}"
        ),
        work_order_id=row["work_order_id"],
        alert_id=row["id"],
        status=row["status"],
        note=row["note"],
    )


def _order_entry(row: Any) -> HistoryEntry:
    preventive = row["kind"] == WorkOrderKind.PREVENTIVE.value
    was = row["from_status"]
    moved = f"{was} → {row['to_status']}" if was is not None else f"opened ({row['to_status']})"
    return HistoryEntry(
        at=row["at"],
        kind=HistoryKind.INSPECTION if preventive else HistoryKind.WORK_ORDER,
        id=row["id"],
        summary=f"{row['kind']} work order {row['work_order_id']} {row['title']!r}: {moved}",
        work_order_id=row["work_order_id"],
        status=row["to_status"],
        actor=row["actor"],
        note=row["note"],
    )


def _issue_entry(row: Any) -> HistoryEntry:
    quantity = -from_milli(row["quantity_milli"])
    return HistoryEntry(
        at=row["at"],
        kind=HistoryKind.PART_ISSUE,
        id=row["id"],
        summary=(
            f"{quantity} {row['unit']} of {row['sku']} ({row['part_name']}) issued from "
            f"{row['location']} to work order {row['work_order_id']}"
        ),
        work_order_id=row["work_order_id"],
        actor=row["actor"],
        note=row["reason"],
    )
