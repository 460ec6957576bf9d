"""Work-order priority: what SLA targets hang off."""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    """How urgent a work order is; SLA targets hang off it."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
