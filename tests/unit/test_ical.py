"""The iCalendar feed writer: RFC 5545 structure, zones, and what each event says.

Feeds are parsed back with icalendar and also checked line by line, since a lenient
parser accepts files that Outlook refuses (bare LF, overlong lines, split UTF-8).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from icalendar import Calendar, Timezone

from api.ical import event_uid, render_feed
from scheduler.ports import BookingRecord, CalendarEntry

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
_CALENDAR_PROPERTIES = ("PRODID", "VERSION", "CALSCALE", "METHOD", "X-WR-CALNAME")
_EVENT_PROPERTIES = ("UID", "DTSTAMP", "DTSTART", "DTEND", "SEQUENCE", "STATUS", "SUMMARY")


def entry(
    work_order_id: int = 7,
    start_at: datetime = datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
    duration: timedelta = timedelta(hours=2),
    **fields: Any,
) -> CalendarEntry:
    booking = BookingRecord(
        work_order_id=work_order_id,
        technician_id=fields.pop("technician_id", "anna-berg"),
        start_at=start_at,
        end_at=start_at + duration,
        late=fields.pop("late", False),
        status=fields.pop("status", "booked"),
        sequence=fields.pop("sequence", 0),
        created_at=NOW - timedelta(days=1),
        updated_at=fields.pop("updated_at", NOW),
    )
    values: dict[str, Any] = {
        "booking": booking,
        "work_order_id": work_order_id,
        "title": "Pump quarterly inspection",
        "description": "Checklist:\n- [ ] check seals",
        "work_order_status": "scheduled",
        "priority": "high",
        "plan_id": "pump-quarterly",
        "due_at": datetime(2026, 11, 25, 7, 0, tzinfo=UTC),
        "asset_id": "pump-1",
        "asset_name": "Feed pump 1",
        "site": "north",
        "parts": (("SEAL-1", "main", "2"),),
    }
    return CalendarEntry(**{**values, **fields})


def physical_lines(data: bytes) -> list[bytes]:
    """Return the lines of `data`, checking that each ends in CRLF."""
    assert data.endswith(b"\r\n")
    lines = data[:-2].split(b"\r\n")
    for line in lines:
        assert b"\n" not in line, line
        assert b"\r" not in line, line
    return lines


def assert_valid_feed(data: bytes) -> Calendar:
    """Check `data` as strictly as the pickiest client would; return it parsed."""
    lines = physical_lines(data)
    for line in lines:
        assert len(line) <= 75, line  # octets, not characters (RFC 5545 3.1)
        line.decode("utf-8")  # folding never splits a multi-octet character
    assert lines[0] == b"BEGIN:VCALENDAR"
    assert lines[-1] == b"END:VCALENDAR"
    stack: list[bytes] = []
    for line in lines:
        if line.startswith(b"BEGIN:"):
            stack.append(line[6:])
        elif line.startswith(b"END:"):
            assert stack.pop() == line[4:]
    assert stack == []
    calendars = Calendar.from_ical(data, multiple=True)
    assert isinstance(calendars, list)
    assert len(calendars) == 1
    calendar = calendars[0]
    for name in _CALENDAR_PROPERTIES:
        assert name in calendar, name
    assert calendar["VERSION"] == "2.0"
    assert calendar["CALSCALE"] == "GREGORIAN"
    assert calendar["METHOD"] == "PUBLISH"
    zones = {str(zone["TZID"]) for zone in calendar.walk("VTIMEZONE")}
    uids = []
    found: list[Any] = calendar.walk("VEVENT")
    for event in found:
        for name in _EVENT_PROPERTIES:
            assert name in event, name
        for name in ("DTSTART", "DTEND"):
            tzid = event[name].params.get("TZID")
            if tzid is None:
                assert event[name].to_ical().endswith(b"Z"), event[name].to_ical()
            else:
                assert tzid in zones, (tzid, zones)
        assert event["DTSTAMP"].to_ical().endswith(b"Z")
        assert event.decoded("DTEND") > event.decoded("DTSTART")
        assert str(event["STATUS"]) in {"CONFIRMED", "CANCELLED"}
        uids.append(str(event["UID"]))
    assert len(uids) == len(set(uids))
    return calendar


def events(calendar: Calendar) -> dict[str, Any]:
    """Return the events by UID (as Any: icalendar types a property as any value type)."""
    return {str(event["UID"]): event for event in calendar.walk("VEVENT")}


def instant(calendar: Calendar, event: Any, name: str) -> datetime:
    """Return the instant of DTSTART/DTEND as the feed's own VTIMEZONE defines it.

    Zoneinfo is not asked: the feed must carry enough for a client without the zone.
    """
    prop = event[name]
    tzid = prop.params.get("TZID")
    if tzid is None:
        value: datetime = prop.dt
        return value
    (zone,) = [tz for tz in calendar.walk("VTIMEZONE") if str(tz["TZID"]) == tzid]
    own = cast(Timezone, zone).to_tz(lookup_tzid=False)
    wall: datetime = prop.dt
    return wall.replace(tzinfo=own)


def render(entries: list[CalendarEntry], time_zone: str = "Europe/Berlin") -> Calendar:
    data = render_feed(entries, name="pmkeeper: Anna Berg", feed_uid="t@x", time_zone=time_zone)
    return assert_valid_feed(data)


def test_a_feed_has_the_calendar_properties_clients_need() -> None:
    calendar = render([entry()])
    assert str(calendar["PRODID"]) == "-//pmkeeper//maintenance calendar//EN"
    assert str(calendar["X-WR-CALNAME"]) == "pmkeeper: Anna Berg"
    assert str(calendar["NAME"]) == "pmkeeper: Anna Berg"
    assert str(calendar["UID"]) == "t@x"
    assert calendar["REFRESH-INTERVAL"].to_ical() == b"PT1H"
    assert str(calendar["X-PUBLISHED-TTL"]) == "PT1H"


def test_an_event_says_when_what_where_and_which_version() -> None:
    booked = entry(sequence=3, updated_at=NOW + timedelta(minutes=5))
    calendar = render([booked])
    event = events(calendar)["wo-7@pmkeeper"]
    assert event["DTSTART"].params["TZID"] == "Europe/Berlin"
    # 08:00 UTC is 09:00 on the Berlin wall clock in November.
    assert event["DTSTART"].to_ical() == b"20261123T090000"
    assert event["DTEND"].to_ical() == b"20261123T110000"
    assert instant(calendar, event, "DTSTART") == booked.booking.start_at
    assert instant(calendar, event, "DTEND") == booked.booking.end_at
    assert event["DTSTAMP"].to_ical() == b"20261122T120500Z"
    assert event["LAST-MODIFIED"].to_ical() == b"20261122T120500Z"
    assert event["SEQUENCE"] == 3
    assert str(event["STATUS"]) == "CONFIRMED"
    assert str(event["TRANSP"]) == "OPAQUE"
    assert str(event["SUMMARY"]) == "Pump quarterly inspection"
    assert str(event["LOCATION"]) == "north / Feed pump 1"
    assert event["PRIORITY"] == 3
    assert [str(c) for c in event["CATEGORIES"].cats] == ["Maintenance", "high"]
    description = str(event["DESCRIPTION"])
    assert description.splitlines() == [
        "Work order 7 (high priority, scheduled)",
        "Asset: Feed pump 1 (pump-1) at north",
        "Due: 2026-11-25 08:00 CET",
        "Maintenance plan: pump-quarterly",
        "",
        "Checklist:",
        "- [ ] check seals",
        "",
        "Parts held:",
        "- 2 x SEAL-1 from main",
    ]
    assert "http" not in description


def test_a_cancelled_booking_is_an_event_marked_cancelled() -> None:
    event = events(render([entry(status="cancelled", sequence=2)]))["wo-7@pmkeeper"]
    assert str(event["STATUS"]) == "CANCELLED"
    assert str(event["TRANSP"]) == "TRANSPARENT"
    assert event["SEQUENCE"] == 2


def test_the_uid_is_the_work_orders_whatever_the_slot() -> None:
    early = events(render([entry(start_at=datetime(2026, 11, 23, 8, tzinfo=UTC))]))
    moved = events(render([entry(start_at=datetime(2026, 12, 1, 13, tzinfo=UTC), sequence=1)]))
    assert set(early) == set(moved) == {event_uid(7)} == {"wo-7@pmkeeper"}


def test_the_zone_covers_both_sides_of_a_dst_change() -> None:
    winter = entry(1, datetime(2027, 3, 26, 8, 0, tzinfo=UTC))  # CET, UTC+1
    summer = entry(2, datetime(2027, 3, 29, 7, 0, tzinfo=UTC))  # CEST, UTC+2
    calendar = render([winter, summer])
    found = events(calendar)
    assert found["wo-1@pmkeeper"]["DTSTART"].to_ical() == b"20270326T090000"
    assert found["wo-2@pmkeeper"]["DTSTART"].to_ical() == b"20270329T090000"
    for booked in (winter, summer):
        event = found[event_uid(booked.work_order_id)]
        assert instant(calendar, event, "DTSTART") == booked.booking.start_at
        assert instant(calendar, event, "DTEND") == booked.booking.end_at
    (zone,) = calendar.walk("VTIMEZONE")
    assert {c.name for c in zone.subcomponents} >= {"STANDARD", "DAYLIGHT"}


def test_a_utc_feed_writes_utc_times_and_no_vtimezone() -> None:
    calendar = render([entry()], time_zone="UTC")
    event = events(calendar)["wo-7@pmkeeper"]
    assert event["DTSTART"].to_ical() == b"20261123T080000Z"
    assert "TZID" not in event["DTSTART"].params
    assert calendar.walk("VTIMEZONE") == []


def test_one_vtimezone_serves_every_event() -> None:
    entries = [
        entry(n, datetime(2026, 11, 23, 7, tzinfo=UTC) + timedelta(days=n)) for n in range(5)
    ]
    calendar = render(entries, time_zone="America/New_York")
    assert [str(z["TZID"]) for z in calendar.walk("VTIMEZONE")] == ["America/New_York"]
    assert len(calendar.walk("VEVENT")) == 5
    assert calendar.get_missing_tzids() == set()


def test_an_empty_feed_is_still_a_valid_calendar() -> None:
    calendar = render([])
    assert calendar.walk("VEVENT") == []
    assert calendar.walk("VTIMEZONE") == []


def test_text_is_escaped_folded_and_stripped_of_control_characters() -> None:
    title = "Seal, gasket; and\\more\x01 — Überprüfung " + "ß" * 60
    described = "line one\r\nline two\rline three\x00\x7f" + " 😀" * 40
    calendar = render([entry(title=title, description=described, site="Süd, Halle 3")])
    event = events(calendar)["wo-7@pmkeeper"]
    assert str(event["SUMMARY"]) == "Seal, gasket; and\\more — Überprüfung " + "ß" * 60
    text = str(event["DESCRIPTION"])
    assert "line one\nline two\nline three" + " 😀" * 40 in text
    assert "\x00" not in text
    assert "\x7f" not in text
    assert str(event["LOCATION"]) == "Süd, Halle 3 / Feed pump 1"
