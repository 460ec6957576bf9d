"""Dead letters: input that failed validation, kept with the reason it was refused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused message: topic, raw payload (truncated), precise reason and when."""

    topic: str
    payload: bytes
    payload_size: int
    code: str
    reason: str
    received_at: datetime
    asset_id: str | None = None
    id: int | None = None
