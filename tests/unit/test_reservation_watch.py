"""The reservation watch thread: sweeps on its interval, survives a failing store, stops."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError as PydanticValidationError

from core.clock import FrozenClock
from core.errors import StoreUnavailableError
from core.inventory import Reservation, ReservationStatus
from core.settings import Settings
from pmkeeper.reservation_watch import ReservationWatch

NOW = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)


def closed(reservation_id: int, status: ReservationStatus) -> Reservation:
    return Reservation(
        id=reservation_id,
        work_order_id=7,
        sku="BRG-6205",
        location="main-store",
        quantity=Decimal(2),
        status=status,
        expires_at=NOW,
        created_at=NOW - timedelta(days=30),
        created_by="tech",
        closed_at=NOW,
        closed_by="system",
    )


def test_a_sweep_expires_then_releases_with_the_clocks_time_and_logs_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[tuple[str, datetime]] = []
    expired = closed(1, ReservationStatus.EXPIRED)
    released = closed(2, ReservationStatus.RELEASED)

    def expire(now: datetime) -> list[Reservation]:
        calls.append(("expire", now))
        return [expired]

    def release(now: datetime) -> list[Reservation]:
        calls.append(("release", now))
        return [released]

    caplog.set_level("INFO", logger="pmkeeper.reservation_watch")
    watch = ReservationWatch(expire, release, FrozenClock(NOW), timedelta(seconds=60))
    swept = watch.sweep_once()
    assert (list(swept.expired), list(swept.released)) == ([expired], [released])
    assert calls == [("expire", NOW), ("release", NOW)]
    assert "reservation 1 of work order 7 expired: 2 BRG-6205 at main-store" in caplog.text
    assert "reservation 2 of finished work order 7 released" in caplog.text


def test_the_watch_keeps_sweeping_through_store_outages(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0
    enough = threading.Event()

    def expire(now: datetime) -> list[Reservation]:
        nonlocal calls
        calls += 1
        if calls >= 5:
            enough.set()
        if calls <= 3:
            raise StoreUnavailableError("database unavailable")
        return []

    watch = ReservationWatch(expire, lambda now: [], FrozenClock(NOW), timedelta(milliseconds=5))
    watch.start()
    try:
        assert enough.wait(timeout=10)
    finally:
        watch.stop()
    assert caplog.text.count("reservation watch failed") == 1  # logged once, not per sweep
    assert "reservation watch recovered" in caplog.text


def test_stop_ends_the_thread_before_the_next_sweep() -> None:
    swept = threading.Event()

    def expire(now: datetime) -> list[Reservation]:
        swept.set()
        return []

    watch = ReservationWatch(expire, lambda now: [], FrozenClock(NOW), timedelta(hours=1))
    watch.start()
    began = time.monotonic()
    watch.stop()
    assert time.monotonic() - began < 2  # the loop waits on the stop event, not a sleep
    assert not swept.is_set()  # an hour's interval: stopped long before its first sweep


def test_the_sweep_interval_and_switch_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (Settings().inventory.expiry_enabled, Settings().inventory.expiry_sweep_s) == (True, 60)
    monkeypatch.setenv("PMK_INVENTORY__EXPIRY_SWEEP_S", "15")
    monkeypatch.setenv("PMK_INVENTORY__EXPIRY_ENABLED", "false")
    settings = Settings()
    assert (settings.inventory.expiry_enabled, settings.inventory.expiry_sweep_s) == (False, 15)
    for bad in ("0", "-1", "3601", "often"):
        monkeypatch.setenv("PMK_INVENTORY__EXPIRY_SWEEP_S", bad)
        with pytest.raises(PydanticValidationError):
            Settings()
