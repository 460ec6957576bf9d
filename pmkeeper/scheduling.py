"""The scheduler role: APScheduler runs plan generation and the periodic sweeps, on the leader.

Jobs live in a SQLAlchemy job store in the relational database, under stable ids, so a
restart finds them, and a run missed while the process was down runs once (coalesced)
if it is within the misfire grace time. Only one process leads: it holds the leader lock
(storage.leader) and runs the scheduler; the others wait to take over. Every job is
idempotent anyway, so a moment with two leaders duplicates nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from storage.leader import LeaderLock

log = logging.getLogger(__name__)

JOB_TABLE = "apscheduler_jobs"
GENERATE_JOB = "plan-generation"
SLA_JOB = "sla-watch"
RESERVATION_JOB = "reservation-expiry"

# The jobs of this process by id. APScheduler stores a reference to `run_job` and the id;
# the callable itself is bound here when the role starts, since a job store cannot pickle
# live services.
_JOBS: dict[str, Callable[[], object]] = {}
_DOWN: set[str] = set()


def run_job(job_id: str) -> None:
    """Run the job `job_id` of this process; a failure is logged once, and its recovery."""
    job = _JOBS.get(job_id)
    if job is None:
        log.warning("job %s has nothing to run in this process; skipped", job_id)
        return
    try:
        job()
    except Exception as error:  # noqa: BLE001 - the next run retries; the scheduler lives on
        if job_id not in _DOWN:
            log.error("job %s failed, retrying on its schedule: %s", job_id, error)
            _DOWN.add(job_id)
        return
    if job_id in _DOWN:
        log.warning("job %s recovered", job_id)
        _DOWN.discard(job_id)


@dataclass(frozen=True)
class Job:
    """A periodic job: its stable id, what it runs, and how often."""

    id: str
    run: Callable[[], object]
    every_s: float


class SchedulerRole:
    """Elect a leader; on the leader, run the jobs with APScheduler until stopped."""

    def __init__(
        self,
        *,
        jobs: list[Job],
        leader: LeaderLock,
        job_store: SQLAlchemyJobStore,
        elect_every_s: float,
        misfire_grace_s: int,
    ) -> None:
        self._jobs = jobs
        self._leader = leader
        self._job_store = job_store
        self._elect_every_s = elect_every_s
        self._misfire_grace_s = misfire_grace_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._scheduler: BackgroundScheduler | None = None
        self.leading = threading.Event()

    def start(self) -> None:
        """Elect on a background thread; lead when elected."""
        for job in self._jobs:
            _JOBS[job.id] = job.run
        self._thread = threading.Thread(target=self._run, name="scheduler-leader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the scheduler, step down, and wait for the election thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for job in self._jobs:
            _JOBS.pop(job.id, None)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._step()
                self._stop.wait(self._elect_every_s)
        finally:
            self._step_down()

    def _step(self) -> None:
        try:
            leading = self._leader.try_acquire()
        except Exception as error:  # noqa: BLE001 - the database may be down; try again
            log.warning("scheduler election failed: %s", error)
            leading = False
        if leading and self._scheduler is None:
            log.info("scheduler: this process leads; starting %d jobs", len(self._jobs))
            self._lead()
        elif not leading and self._scheduler is not None:
            log.warning("scheduler: leadership lost; jobs stopped until re-elected")
            self._step_down()

    def _lead(self) -> None:
        scheduler = BackgroundScheduler(
            jobstores={"default": self._job_store},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": self._misfire_grace_s,
            },
            timezone=UTC,
        )
        scheduler.start(paused=True)
        for job in self._jobs:
            scheduler.add_job(
                run_job,
                "interval",
                seconds=job.every_s,
                args=[job.id],
                id=job.id,
                name=job.id,
                replace_existing=True,
                # The first run now: a leader just elected catches up at once. APScheduler
                # runs on the wall clock, whatever clock the jobs themselves are given.
                next_run_time=datetime.now(UTC),
            )
        scheduler.resume()
        self._scheduler = scheduler
        self.leading.set()

    def _step_down(self) -> None:
        if self._scheduler is not None:
            # Paused first, so its loop submits nothing to executors being shut down.
            self._scheduler.pause()
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self.leading.clear()
        self._leader.release()
