"""Write bookings as an iCalendar feed (RFC 5545) that calendar clients subscribe to.

One VEVENT per booking, its UID taken from the work order so it stays the same event
however often it is moved; SEQUENCE is the booking's change count, so a client that saw
an earlier version takes the later one. Times are written in the feed's zone with a
VTIMEZONE built from `zoneinfo`, so clients show the technician's or the site's wall
clock. A cancelled booking is still written, as STATUS:CANCELLED, so subscribers remove
it rather than keep a stale copy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event

from scheduler.ports import CalendarEntry

PRODID = "-//pmkeeper//maintenance calendar//EN"
MEDIA_TYPE = "text/calendar; charset=utf-8"
# How often subscribers should fetch the feed again (RFC 7986, and Outlook's extension).
REFRESH_EVERY = timedelta(hours=1)
_REFRESH_EVERY_ISO = "PT1H"
BOOKED = "booked"
# RFC 5545 PRIORITY: 1 is the highest, 9 the lowest.
_PRIORITY = {"critical": 1, "high": 3, "medium": 5, "low": 9}
# The VTIMEZONE covers a day either side of every event, for clients that look around.
_ZONE_MARGIN = timedelta(days=1)


# RFC 5545 TEXT holds no control characters but tab and (escaped) newline.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _text(value: str) -> str:
    """Return `value` as iCalendar TEXT may hold it: line breaks as LF, other controls gone."""
    return _CONTROL.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))


def event_uid(work_order_id: int) -> str:
    """Return the UID of a work order's event: the same across every reschedule."""
    return f"wo-{work_order_id}@pmkeeper"


def _description(entry: CalendarEntry, zone: ZoneInfo) -> str:
    """Return the event's text: the order, the asset, its checklist and the parts held."""
    lines = [
        f"Work order {entry.work_order_id} ({entry.priority} priority, {entry.work_order_status})",
        f"Asset: {entry.asset_name} ({entry.asset_id}) at {entry.site}",
    ]
    if entry.due_at is not None:
        lines.append(f"Due: {entry.due_at.astimezone(zone):%Y-%m-%d %H:%M %Z}")
    if entry.plan_id is not None:
        lines.append(f"Maintenance plan: {entry.plan_id}")
    if entry.booking.late:
        lines.append("Booked after its due time: nobody was free before.")
    if entry.description:
        lines += ["", entry.description]
    if entry.parts:
        lines += ["", "Parts held:"]
        lines += [
            f"- {quantity} x {sku} from {location}" for sku, location, quantity in entry.parts
        ]
    return "\n".join(lines)


def _event(entry: CalendarEntry, zone: ZoneInfo) -> Event:
    booking = entry.booking
    booked = booking.status == BOOKED
    event = Event()
    event.add("uid", event_uid(entry.work_order_id))
    event.add("dtstamp", booking.updated_at.astimezone(UTC))
    event.add("created", booking.created_at.astimezone(UTC))
    event.add("last-modified", booking.updated_at.astimezone(UTC))
    event.add("sequence", booking.sequence)
    event.add("dtstart", booking.start_at.astimezone(zone))
    event.add("dtend", booking.end_at.astimezone(zone))
    event.add("status", "CONFIRMED" if booked else "CANCELLED")
    # A cancelled slot no longer makes the technician busy.
    event.add("transp", "OPAQUE" if booked else "TRANSPARENT")
    event.add("summary", _text(entry.title))
    event.add("description", _text(_description(entry, zone)))
    event.add("location", _text(f"{entry.site} / {entry.asset_name}"))
    event.add("categories", ["Maintenance", entry.priority])
    if entry.priority in _PRIORITY:
        event.add("priority", _PRIORITY[entry.priority])
    return event


def render_feed(
    entries: Sequence[CalendarEntry], *, name: str, feed_uid: str, time_zone: str
) -> bytes:
    """Return the feed of `entries` as iCalendar bytes, times local to `time_zone`.

    `name` is what clients call the calendar; `feed_uid` identifies the feed itself, the
    same on every fetch.
    """
    zone = ZoneInfo(time_zone)
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add("uid", feed_uid)
    calendar.add("name", _text(name))
    calendar.add("x-wr-calname", _text(name))
    calendar.add("refresh-interval", REFRESH_EVERY, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", _REFRESH_EVERY_ISO)
    for entry in entries:
        calendar.add_component(_event(entry, zone))
    if entries:
        first: datetime = min(entry.booking.start_at for entry in entries) - _ZONE_MARGIN
        last: datetime = max(entry.booking.end_at for entry in entries) + _ZONE_MARGIN
        calendar.add_missing_timezones(
            first_date=first.astimezone(zone).date(), last_date=last.astimezone(zone).date()
        )
    return bytes(calendar.to_ical())
