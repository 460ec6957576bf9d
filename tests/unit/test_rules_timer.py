"""The rules timer: one beat per APScheduler run, a failing store logged once."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from ingest.evaluation import RuleTimer
from pmkeeper.container import RULES_TIMER_JOB, rules_timer_scheduler


class FlakyRunner:
    """Counts ticks and refreshes; fails while `down` is set."""

    def __init__(self) -> None:
        self.ticks = 0
        self.refreshes = 0
        self.down = False

    def tick(self) -> None:
        if self.down:
            raise ConnectionError("database gone")
        self.ticks += 1

    def refresh(self) -> None:
        self.refreshes += 1


def timer(runner: FlakyRunner, refresh_every: timedelta = timedelta(hours=1)) -> RuleTimer:
    return RuleTimer(
        runner,  # type: ignore[arg-type]  # a stand-in with the two methods the timer calls
        tick_every=timedelta(seconds=1),
        refresh_every=refresh_every,
    )


def test_each_step_ticks_and_refreshes_when_due() -> None:
    runner = FlakyRunner()
    beats = timer(runner)
    for _ in range(3):
        beats.step()
    assert (runner.ticks, runner.refreshes) == (3, 0)
    due = timer(runner, refresh_every=timedelta(0))
    due.step()
    assert (runner.ticks, runner.refreshes) == (4, 1)


def test_a_failing_store_is_logged_once_and_its_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = FlakyRunner()
    beats = timer(runner)
    runner.down = True
    with caplog.at_level(logging.WARNING, logger="ingest.evaluation"):
        for _ in range(5):
            beats.step()
        runner.down = False
        beats.step()
        beats.step()
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "rules timer failed, retrying every tick: database gone",
        "rules timer recovered",
    ]
    assert runner.ticks == 2


def test_apscheduler_steps_the_timer_one_run_at_a_time() -> None:
    runner = FlakyRunner()
    scheduler = rules_timer_scheduler(timer(runner))
    # Paused: the job store applies the job defaults, nothing runs.
    scheduler.start(paused=True)
    try:
        (job,) = scheduler.get_jobs()
        assert job.id == RULES_TIMER_JOB
        assert job.coalesce is True
        assert job.max_instances == 1
        assert job.trigger.interval == timedelta(seconds=1)
        job.func()
        assert runner.ticks == 1
    finally:
        scheduler.shutdown(wait=False)
