"""An asset's history: its work orders, inspections, alerts and part issues, in time order."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

from core.errors import ValidationError


class HistoryKind(StrEnum):
    """What a history entry is about."""

    WORK_ORDER = "work_order"  # a transition of a corrective or predictive order
    INSPECTION = "inspection"  # a transition of a preventive order (planned inspection)
    ALERT = "alert"  # a rule fired on the asset
    PART_ISSUE = "part_issue"  # parts taken from stock for work on the asset


class HistoryEntry(BaseModel):
    """One thing that happened to an asset."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    kind: HistoryKind
    id: int  # of the underlying record: the audit row, the alert, the ledger entry
    summary: str
    work_order_id: int | None = None
    alert_id: int | None = None
    status: str | None = None  # the status moved to, or the alert's current status
    actor: str | None = None
    note: str | None = None


class HistoryCursor(NamedTuple):
    """Where a page of history ends: entries after (at, source, id) come next."""

    at: datetime
    source: int  # the order of the kinds at the same instant: alerts, orders, parts
    id: int

    def encode(self) -> str:
        """Return the cursor as an opaque query-string value."""
        return f"{self.at.isoformat()}~{self.source}~{self.id}"

    @classmethod
    def decode(cls, value: str) -> HistoryCursor:
        """Parse a cursor given back by a client; ValidationError if it is not one of ours."""
        try:
            at, source, entry_id = value.split("~")
            parsed = cls(datetime.fromisoformat(at), int(source), int(entry_id))
        except ValueError:
            raise ValidationError("cursor is not a history cursor", cursor=value) from None
        if parsed.at.tzinfo is None or not 0 <= parsed.source <= 2 or parsed.id < 0:
            raise ValidationError("cursor is not a history cursor", cursor=value)
        return parsed


# Entries at the same instant: alerts first (the cause), then orders, then parts issued.
SOURCE_OF = {
    HistoryKind.ALERT: 0,
    HistoryKind.WORK_ORDER: 1,
    HistoryKind.INSPECTION: 1,
    HistoryKind.PART_ISSUE: 2,
}


def cursor_of(entry: HistoryEntry) -> HistoryCursor:
    """Return the cursor just after an entry."""
    return HistoryCursor(entry.at, SOURCE_OF[entry.kind], entry.id)
