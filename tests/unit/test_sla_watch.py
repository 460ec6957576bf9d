"""The SLA watch thread: sweeps on its interval, survives a failing store, stops cleanly."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from core.clock import FrozenClock
from core.errors import StoreUnavailableError
from core.sla import Breach
from core.workorders import Escalation
from pmkeeper.sla_watch import SlaWatch

NOW = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)


def test_the_watch_sweeps_with_the_clocks_time_and_logs_each_escalation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[datetime] = []
    escalation = Escalation(
        id=1, work_order_id=7, breach=Breach.RESPONSE, due_at=NOW, at=NOW + timedelta(minutes=1)
    )

    def sweep(now: datetime) -> list[Escalation]:
        seen.append(now)
        return [escalation]

    watch = SlaWatch(sweep, FrozenClock(NOW), timedelta(seconds=10))
    assert watch.sweep_once() == [escalation]
    assert seen == [NOW]
    assert "work order 7 missed its response target" in caplog.text


def test_the_watch_keeps_sweeping_through_store_outages(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0
    enough = threading.Event()

    def sweep(now: datetime) -> list[Escalation]:
        nonlocal calls
        calls += 1
        if calls >= 5:
            enough.set()
        if calls <= 3:
            raise StoreUnavailableError("database unavailable")
        return []

    watch = SlaWatch(sweep, FrozenClock(NOW), timedelta(milliseconds=5))
    watch.start()
    try:
        assert enough.wait(timeout=10)
    finally:
        watch.stop()
    assert caplog.text.count("SLA watch failed") == 1  # logged once, not per sweep
    assert "SLA watch recovered" in caplog.text
