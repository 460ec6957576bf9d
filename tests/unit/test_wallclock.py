"""Local wall times to UTC, across DST changes: the one mapping shifts, SLAs and plans share."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from core.wallclock import local_to_utc, transition_between

BERLIN = ZoneInfo("Europe/Berlin")


def wall(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """Return a naive local wall-clock reading, as shifts and plans are written."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC).replace(tzinfo=None)


@pytest.mark.parametrize(
    ("local", "zone", "expected"),
    [
        # An ordinary winter and summer morning.
        (wall(2026, 1, 15, 8, 0), BERLIN, datetime(2026, 1, 15, 7, 0, tzinfo=UTC)),
        (wall(2026, 7, 15, 8, 0), BERLIN, datetime(2026, 7, 15, 6, 0, tzinfo=UTC)),
        # Skipped: 02:30 on 29 March 2026 never shows; the first instant after the jump.
        (wall(2026, 3, 29, 2, 30), BERLIN, datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        # Shown twice: 02:30 on 25 October 2026, the first time (still CEST).
        (wall(2026, 10, 25, 2, 30), BERLIN, datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        # Half-hour zone, and UTC by another name.
        (
            wall(2026, 3, 1, 9, 0),
            ZoneInfo("Asia/Kolkata"),
            datetime(2026, 3, 1, 3, 30, tzinfo=UTC),
        ),
        (
            wall(2026, 3, 29, 2, 30),
            ZoneInfo("Etc/UTC"),
            datetime(2026, 3, 29, 2, 30, tzinfo=UTC),
        ),
    ],
)
def test_local_to_utc(local: datetime, zone: ZoneInfo, expected: datetime) -> None:
    assert local_to_utc(local, zone) == expected


def test_transition_between_finds_the_second_the_offset_changes() -> None:
    before = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    after = datetime(2026, 3, 29, 2, 0, tzinfo=UTC)
    assert transition_between(before, after, BERLIN) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
