"""The reservation watch: give back the stock of reservations nobody will use, on a timer.

Each sweep expires the held reservations past their expiry, and releases those still held
by cancelled or closed work orders (a reservation made while its order was being
finished). Both close a reservation with a guarded update, so API replicas sweeping at
the same time each close a different share, never one twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.clock import Clock
from core.inventory import Reservation

log = logging.getLogger(__name__)

Sweep = Callable[[datetime], Sequence[Reservation]]


@dataclass(frozen=True)
class ReservationSweep:
    """What one sweep closed."""

    expired: Sequence[Reservation]
    released: Sequence[Reservation]


class ReservationWatch:
    """A thread that sweeps reservations every `every`; a failing store is logged once."""

    def __init__(self, expire: Sweep, release_stale: Sweep, clock: Clock, every: timedelta) -> None:
        self._expire = expire
        self._release_stale = release_stale
        self._clock = clock
        self._every_s = every.total_seconds()
        self._stop = threading.Event()
        self._down = False
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> ReservationSweep:
        """Expire what is due now and release what finished orders hold; log each."""
        now = self._clock.now()
        expired = self._expire(now)
        for reservation in expired:
            log.info(
                "reservation %d of work order %d expired: %s %s at %s available again",
                reservation.id,
                reservation.work_order_id,
                reservation.quantity,
                reservation.sku,
                reservation.location,
                extra={"event": "reservation_expired", "work_order_id": reservation.work_order_id},
            )
        released = self._release_stale(now)
        for reservation in released:
            log.info(
                "reservation %d of finished work order %d released: %s %s at %s",
                reservation.id,
                reservation.work_order_id,
                reservation.quantity,
                reservation.sku,
                reservation.location,
                extra={"event": "reservation_released", "work_order_id": reservation.work_order_id},
            )
        return ReservationSweep(expired=expired, released=released)

    def start(self) -> None:
        """Sweep on a background thread until stopped."""
        self._thread = threading.Thread(target=self._run, name="reservation-watch", daemon=True)
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
                    log.error("reservation watch failed, retrying every sweep: %s", error)
                    self._down = True
                continue
            if self._down:
                log.warning("reservation watch recovered")
                self._down = False
