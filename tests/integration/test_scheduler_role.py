"""The scheduler role: APScheduler jobs in the SQL job store, on one elected leader.

Two roles share one database (SQLite, and the real PostgreSQL): one leads and generates,
the other waits; when the leader stops, the other takes over.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import MetaData, Table, select

from core.assets import Asset
from core.settings import Settings
from pmkeeper.container import Container, build_scheduler_role, scheduler_jobs
from pmkeeper.scheduling import GENERATE_JOB, JOB_TABLE, RESERVATION_JOB, SLA_JOB, SchedulerRole
from scheduler.model import parse_plan
from storage.tables import work_orders
from tests.support.polling import wait_until


def settings_for(database_url: str, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        database={"url": database_url},
        scheduler={"generate_every_s": 0.5, "elect_every_s": 0.2, "misfire_grace_s": 30},
        sla={"sweep_interval_s": 1},
        inventory={"expiry_sweep_s": 1},
    )


@pytest.fixture
def container(database_url: str, tmp_path: Path) -> Iterator[Container]:
    built = Container.build(settings_for(database_url, tmp_path))
    try:
        yield built
    finally:
        built.close()


def seed_daily_plan(container: Container) -> None:
    container.assets.add(Asset(id="pump-1", name="Pump 1", type="pump", site="north"))
    starts = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    container.plans.add(
        parse_plan(
            {
                "id": "daily",
                "name": "Daily round",
                "asset_id": "pump-1",
                "calendar": {"every": 1, "unit": "days", "starts_at": starts.isoformat()},
                "lead_time": "P2D",
                "booking_window": "P1D",
                "estimated_duration": "PT30M",
            }
        )
    )


def orders(container: Container) -> int:
    with container.engine.connect() as connection:
        return len(connection.execute(select(work_orders.c.id)).all())


def test_the_jobs_have_stable_ids_and_their_intervals(container: Container) -> None:
    jobs = {job.id: job.every_s for job in scheduler_jobs(container)}
    assert jobs == {GENERATE_JOB: 0.5, SLA_JOB: 1, RESERVATION_JOB: 1}


def test_one_of_two_schedulers_leads_generates_and_hands_over(
    container: Container, database_url: str, tmp_path: Path
) -> None:
    seed_daily_plan(container)
    other = Container.build(settings_for(database_url, tmp_path))
    roles: list[SchedulerRole] = [build_scheduler_role(container), build_scheduler_role(other)]
    try:
        for role in roles:
            role.start()
        wait_until(lambda: any(role.leading.is_set() for role in roles), timeout_s=20)
        leader = next(role for role in roles if role.leading.is_set())
        follower = next(role for role in roles if role is not leader)
        # Due tomorrow and the day after (from one hour from now): two orders, once each.
        wait_until(lambda: orders(container) == 2, timeout_s=20)
        assert not follower.leading.is_set()
        with container.engine.connect() as connection:
            table = Table(JOB_TABLE, MetaData(), autoload_with=connection)
            stored = {row.id for row in connection.execute(select(table.c.id))}
        assert stored == {GENERATE_JOB, SLA_JOB, RESERVATION_JOB}
        scheduler = leader._scheduler
        assert scheduler is not None
        for job in scheduler.get_jobs():
            assert job.coalesce is True
            assert job.max_instances == 1
            assert job.misfire_grace_time == 30
        leader.stop()
        wait_until(follower.leading.is_set, timeout_s=20)
        # The new leader generates again and finds nothing new.
        assert orders(container) == 2
    finally:
        for role in roles:
            role.stop()
        other.close()
