"""Leader election for scheduler processes: one lock, held for as long as a process leads.

On PostgreSQL it is a session-level advisory lock on a connection kept for the purpose:
the server releases it when that session ends, so a leader that dies or loses its
connection stops leading without anyone cleaning up. On SQLite, which only one machine can
share, it is an exclusive `flock` on a file beside the database, released by the kernel
when the process exits.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every pmkeeper process.
SCHEDULER_LOCK_KEY = 0x706D6B736368  # "pmksch"


class LeaderLock:
    """Try to lead, tell whether still leading, and step down."""

    def __init__(self, engine: Engine, lock_file: Path, key: int = SCHEDULER_LOCK_KEY) -> None:
        self._engine = engine
        self._lock_file = lock_file
        self._key = key
        self._connection: Connection | None = None
        self._fd: int | None = None

    @property
    def leading(self) -> bool:
        """Tell whether this process holds the lock, as far as it last knew."""
        return self._connection is not None or self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never wait."""
        if self.leading:
            return self.still_held()
        if self._engine.dialect.name == "postgresql":
            return self._try_advisory()
        return self._try_flock()

    def still_held(self) -> bool:
        """Tell whether the lock is still ours; a lost connection means it is not."""
        if self._fd is not None:
            return True
        if self._connection is None:
            return False
        try:
            self._connection.execute(text("SELECT 1"))
        except Exception as error:  # noqa: BLE001 - any failure of the session loses the lock
            log.warning("scheduler leadership lost with its database session: %s", error)
            self._drop_connection()
            return False
        return True

    def release(self) -> None:
        """Step down."""
        if self._connection is not None:
            try:
                self._connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": self._key}
                )
                self._connection.commit()
            except Exception as error:  # noqa: BLE001 - the session's end releases it anyway
                log.info("advisory unlock failed (%s); closing the session releases it", error)
            self._drop_connection()
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _try_advisory(self) -> bool:
        connection = self._engine.connect()
        try:
            won = bool(
                connection.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
                ).scalar()
            )
            # End the implicit transaction: the session lock outlives it, and an idle
            # session must not sit "idle in transaction".
            connection.commit()
        except Exception:
            connection.close()
            raise
        if not won:
            connection.close()
            return False
        self._connection = connection
        return True

    def _try_flock(self) -> bool:
        self._lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def _drop_connection(self) -> None:
        if self._connection is None:
            return
        try:
            self._connection.invalidate()
            self._connection.close()
        except Exception:  # noqa: BLE001, S110 - it is gone either way
            pass
        self._connection = None
