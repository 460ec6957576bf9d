"""Technicians, their sites, skills, weekly hours and time off in a SQL database.

Each write transaction opens with a write, so on SQLite it takes the write lock first
(waiting out `busy_timeout`) instead of failing to upgrade a stale read.
"""

from __future__ import annotations

import builtins
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from core.clock import Clock, SystemClock
from core.errors import ConflictError, NotFoundError
from core.technicians import NewTechnician, NewTimeOff, Technician, TimeOff
from storage.alerting import is_unique_violation
from storage.tables import technician_sites, technician_skills, technician_time_off, technicians

_PG_FOREIGN_KEY_VIOLATION = "23503"


def _is_foreign_key_violation(error: IntegrityError) -> bool:
    original = error.orig
    if getattr(original, "sqlstate", None) == _PG_FOREIGN_KEY_VIOLATION:
        return True
    return "FOREIGN KEY constraint failed" in str(original)


def _not_found(technician_id: str) -> NotFoundError:
    return NotFoundError(f"technician {technician_id!r} not found", technician_id=technician_id)


def _row(technician: NewTechnician) -> dict[str, Any]:
    return {
        "name": technician.name,
        "email": technician.email,
        "phone": technician.phone,
        "region": technician.region,
        "time_zone": technician.time_zone,
        "weekly_hours": [shift.model_dump(mode="json") for shift in technician.weekly_hours],
    }


def _write_children(connection: Connection, technician: NewTechnician) -> None:
    connection.execute(
        insert(technician_sites),
        [{"technician_id": technician.id, "site": site} for site in technician.sites],
    )
    if technician.skills:
        connection.execute(
            insert(technician_skills),
            [
                {
                    "technician_id": technician.id,
                    "skill": held.skill,
                    "certified_until": held.certified_until,
                }
                for held in technician.skills
            ],
        )


def _time_off(row: Any) -> TimeOff:
    return TimeOff.model_validate(dict(row._mapping))


def _read(connection: Connection, ids: builtins.list[str]) -> builtins.list[Technician]:
    """Return the technicians of `ids` that exist, in the order of `ids`, children and all."""
    if not ids:
        return []
    rows = {
        row.id: row._mapping
        for row in connection.execute(select(technicians).where(technicians.c.id.in_(ids)))
    }
    sites: dict[str, builtins.list[str]] = {key: [] for key in rows}
    for row in connection.execute(
        select(technician_sites).where(technician_sites.c.technician_id.in_(ids))
    ):
        sites[row.technician_id].append(row.site)
    skills: dict[str, builtins.list[dict[str, Any]]] = {key: [] for key in rows}
    for row in connection.execute(
        select(technician_skills).where(technician_skills.c.technician_id.in_(ids))
    ):
        skills[row.technician_id].append(
            {"skill": row.skill, "certified_until": row.certified_until}
        )
    time_off: dict[str, builtins.list[TimeOff]] = {key: [] for key in rows}
    for row in connection.execute(
        select(technician_time_off)
        .where(technician_time_off.c.technician_id.in_(ids))
        .order_by(technician_time_off.c.start_at, technician_time_off.c.id)
    ):
        time_off[row.technician_id].append(_time_off(row))
    return [
        Technician.model_validate(
            {
                **rows[key],
                "sites": sites[key],
                "skills": skills[key],
                "time_off": time_off[key],
            }
        )
        for key in ids
        if key in rows
    ]


def _get(connection: Connection, technician_id: str) -> Technician:
    found = _read(connection, [technician_id])
    if not found:
        raise _not_found(technician_id)
    return found[0]


class SqlTechnicianRepository:
    """Technicians and their time off in a SQL database."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock = clock or SystemClock()

    def add(self, technician: NewTechnician) -> Technician:
        """Register a technician; ConflictError if the id exists."""
        now = self._clock.now()
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    insert(technicians).values(
                        id=technician.id, created_at=now, updated_at=now, **_row(technician)
                    )
                )
                _write_children(connection, technician)
                return _get(connection, technician.id)
        except IntegrityError as exc:
            if not is_unique_violation(exc):
                raise
            raise ConflictError(
                f"technician {technician.id!r} already exists", technician_id=technician.id
            ) from None

    def get(self, technician_id: str) -> Technician:
        """Return a technician with their time off; NotFoundError if absent."""
        with self._engine.connect() as connection:
            return _get(connection, technician_id)

    def replace(self, technician: NewTechnician) -> Technician:
        """Replace everything but the time off and the creation time; NotFoundError if absent."""
        with self._engine.begin() as connection:
            updated = connection.execute(
                update(technicians)
                .where(technicians.c.id == technician.id)
                .values(updated_at=self._clock.now(), **_row(technician))
            ).rowcount
            if not updated:
                raise _not_found(technician.id)
            for table in (technician_sites, technician_skills):
                connection.execute(delete(table).where(table.c.technician_id == technician.id))
            _write_children(connection, technician)
            return _get(connection, technician.id)

    def list(
        self,
        *,
        site: str | None = None,
        skill: str | None = None,
        certified_on: date | None = None,
        after_id: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Technician]:
        """Return technicians by id after `after_id` (keyset pagination).

        `site`: those working there. `skill`: those holding it; with `certified_on`, only
        those whose certification is valid on that date (`certified_on` alone: no filter).
        """
        query = select(technicians.c.id).order_by(technicians.c.id).limit(limit)
        if site is not None:
            query = query.where(
                technicians.c.id.in_(
                    select(technician_sites.c.technician_id).where(technician_sites.c.site == site)
                )
            )
        if skill is not None:
            holders = select(technician_skills.c.technician_id).where(
                technician_skills.c.skill == skill.lower()
            )
            if certified_on is not None:
                holders = holders.where(
                    or_(
                        technician_skills.c.certified_until.is_(None),
                        technician_skills.c.certified_until >= certified_on,
                    )
                )
            query = query.where(technicians.c.id.in_(holders))
        if after_id is not None:
            query = query.where(technicians.c.id > after_id)
        with self._engine.connect() as connection:
            ids = builtins.list(connection.execute(query).scalars())
            return _read(connection, ids)

    def add_time_off(self, technician_id: str, time_off: NewTimeOff, *, actor: str) -> TimeOff:
        """Record an absence; NotFoundError if the technician is absent."""
        try:
            with self._engine.begin() as connection:
                row = connection.execute(
                    insert(technician_time_off)
                    .values(
                        technician_id=technician_id,
                        start_at=time_off.start_at,
                        end_at=time_off.end_at,
                        reason=time_off.reason,
                        created_at=self._clock.now(),
                        created_by=actor,
                    )
                    .returning(*technician_time_off.c)
                ).one()
                return _time_off(row)
        except IntegrityError as exc:
            # The foreign key is the existence check: one statement, no read-then-write.
            if not _is_foreign_key_violation(exc):
                raise
            raise _not_found(technician_id) from None

    def remove_time_off(self, technician_id: str, time_off_id: int) -> None:
        """Delete an absence; NotFoundError if it is not one of the technician's."""
        with self._engine.begin() as connection:
            deleted = connection.execute(
                delete(technician_time_off).where(
                    technician_time_off.c.id == time_off_id,
                    technician_time_off.c.technician_id == technician_id,
                )
            ).rowcount
            if deleted:
                return
            _get(connection, technician_id)  # an unknown technician is what is missing
        raise NotFoundError(
            f"time off {time_off_id} of technician {technician_id!r} not found",
            technician_id=technician_id,
            time_off_id=time_off_id,
        )

    def time_off(
        self, technician_id: str, *, start: datetime | None = None, end: datetime | None = None
    ) -> builtins.list[TimeOff]:
        """Return the technician's absences overlapping [start, end), by start time."""
        query = (
            select(technician_time_off)
            .where(technician_time_off.c.technician_id == technician_id)
            .order_by(technician_time_off.c.start_at, technician_time_off.c.id)
        )
        if start is not None:
            query = query.where(technician_time_off.c.end_at > start)
        if end is not None:
            query = query.where(technician_time_off.c.start_at < end)
        with self._engine.connect() as connection:
            exists = connection.execute(
                select(technicians.c.id).where(technicians.c.id == technician_id)
            ).first()
            if exists is None:
                raise _not_found(technician_id)
            return [_time_off(row) for row in connection.execute(query)]
