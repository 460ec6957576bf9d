"""Wall-clock times in IANA zones: the instant a local clock first shows a given reading.

Shifts, SLA business hours and maintenance plans are all written as local wall times;
each maps them to UTC here, so a DST change is handled the same way everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

_SECOND = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Zones that are UTC under another name: no transition to look for.
_UTC_KEYS = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "Etc/Universal", "Etc/Zulu", "UCT", "Zulu"})


def transition_between(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """Return the first whole second in (`before`, `after`] on the offset in force at `after`."""
    # tzdata transitions fall on whole seconds, so bisect over whole seconds since the epoch.
    low = (before - _EPOCH) // _SECOND
    high = -((_EPOCH - after) // _SECOND)
    old_offset = (_EPOCH + low * _SECOND).astimezone(zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if (_EPOCH + middle * _SECOND).astimezone(zone).utcoffset() == old_offset:
            low = middle
        else:
            high = middle
    return _EPOCH + high * _SECOND


def local_to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    """Return the first instant the clocks of `zone` show naive wall time `local`.

    A time skipped when clocks go forward maps to the first instant after the jump (02:30 on
    the spring-forward day in Berlin is 03:00 CEST); a time shown twice when they go back
    maps to its first occurrence.
    """
    if zone.key in _UTC_KEYS:
        return local.replace(tzinfo=UTC)
    aware = local.replace(tzinfo=zone)  # fold=0: the first occurrence
    instant = aware.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local:
        return instant
    # A skipped time: its two readings (old and new offset) bracket the transition.
    other = aware.replace(fold=1).astimezone(UTC)
    return transition_between(min(instant, other), max(instant, other), zone)
