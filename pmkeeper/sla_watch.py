"""The SLA watch: flag missed work-order deadlines on a timer, each breach exactly once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from core.clock import Clock
from core.workorders import Escalation

log = logging.getLogger(__name__)

Sweep = Callable[[datetime], Sequence[Escalation]]


class SlaWatch:
    """A thread that sweeps for breaches every `every`; a failing store is logged once."""

    def __init__(self, sweep: Sweep, clock: Clock, every: timedelta) -> None:
        self._sweep = sweep
        self._clock = clock
        self._every_s = every.total_seconds()
        self._stop = threading.Event()
        self._down = False
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> Sequence[Escalation]:
        """Flag what is overdue now; log each new escalation."""
        escalated = self._sweep(self._clock.now())
        for escalation in escalated:
            log.warning(
                "SLA breached: work order %d missed its %s target (due %s)",
                escalation.work_order_id,
                escalation.breach.value,
                escalation.due_at.isoformat(),
                extra={"event": "sla_breach", "work_order_id": escalation.work_order_id},
            )
        return escalated

    def start(self) -> None:
        """Sweep on a background thread until stopped."""
        self._thread = threading.Thread(target=self._run, name="sla-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sweeping and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.sweep_once()
            except Exception as error:  # noqa: BLE001 - the watch must outlive a store outage
                if not self._down:
                    log.error("SLA watch failed, retrying every sweep: %s", error)
                    self._down = True
                continue
            if self._down:
                log.warning("SLA watch recovered")
                self._down = False
