"""Request and response bodies of the technicians API, suffixed Create, Update and Read."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from api.bodies import StorableBody
from api.schemas import MAX_NOTE, UtcTime
from core.technicians import (
    SKILL_QUERY_PATTERN,
    TECHNICIAN_ID_PATTERN,
    NewTechnician,
    NewTimeOff,
    Shift,
    SkillCertification,
    Technician,
    TechnicianProfile,
    TimeOff,
)

TechnicianIdField = Annotated[str, Field(pattern=TECHNICIAN_ID_PATTERN, examples=["anna-berg"])]


class TechnicianCreate(StorableBody, NewTechnician):
    """A new technician: sites, the IANA zone of their hours, skills and weekly shifts."""


class TechnicianUpdate(StorableBody, TechnicianProfile):
    """The whole technician, replacing what is stored (time off is kept: it has its own
    endpoints). The id is the one in the path."""

    def to_new_technician(self, technician_id: str) -> NewTechnician:
        """Return the domain technician this body describes under `technician_id`."""
        return NewTechnician.model_validate({**self.model_dump(), "id": technician_id})


class TechnicianRead(BaseModel):
    """A technician: who, where, in which zone, with which skills and weekly hours."""

    id: str
    name: str
    email: str | None
    phone: str | None
    sites: list[str]
    region: str | None
    time_zone: str = Field(description="IANA zone the weekly hours are local to")
    skills: list[SkillCertification]
    weekly_hours: list[Shift]
    created_at: UtcTime
    updated_at: UtcTime

    @classmethod
    def from_technician(cls, technician: Technician) -> TechnicianRead:
        """Return the API view of a technician (time off has its own endpoint)."""
        return cls.model_validate(technician.model_dump(exclude={"time_off"}))


class TechnicianListRead(BaseModel):
    """A page of technicians ordered by id; pass `next_cursor` as `cursor` for the next page."""

    items: list[TechnicianRead]
    next_cursor: str | None


class TimeOffCreate(StorableBody, NewTimeOff):
    """An absence: the technician cannot be booked in [start_at, end_at)."""


class TimeOffRead(BaseModel):
    """An absence of a technician."""

    id: int
    technician_id: str
    start_at: UtcTime
    end_at: UtcTime = Field(description="Exclusive")
    reason: str | None
    created_at: UtcTime
    created_by: str

    @classmethod
    def from_time_off(cls, time_off: TimeOff) -> TimeOffRead:
        """Return the API view of an absence."""
        return cls.model_validate(time_off.model_dump())


class TimeOffListRead(BaseModel):
    """A technician's absences, by start time."""

    items: list[TimeOffRead]


class ShiftWindowRead(BaseModel):
    """One shift as UTC instants."""

    start_at: UtcTime
    end_at: UtcTime = Field(description="Exclusive")


class AvailabilityRead(BaseModel):
    """Whether a technician can work at `at` (or throughout [at, until)), and why not."""

    technician_id: str
    time_zone: str
    at: UtcTime
    until: UtcTime | None
    local_at: str = Field(description="`at` on the technician's wall clock (ISO 8601)")
    on_shift: bool = Field(description="At `at`, or throughout [at, until) when given")
    shifts: list[ShiftWindowRead] = Field(
        description="The shifts of the local day of `at`, or those overlapping [at, until)"
    )
    off: bool = Field(description="Some time off overlaps `at` (or [at, until))")
    time_off: list[TimeOffRead]
    skill: str | None
    certified: bool | None = Field(
        description="Holds `skill` with a certification valid on the local date of `at`; "
        "null when no skill was asked about"
    )
    skill_problem: str | None = Field(description="Why not certified (missing or expired)")
    available: bool = Field(description="on_shift, not off, and certified if a skill was asked")


class AssignmentCreate(StorableBody):
    """Who is to do a work order, and the skill the job needs (checked if given)."""

    technician_id: TechnicianIdField
    skill: str | None = Field(
        default=None,
        pattern=SKILL_QUERY_PATTERN,
        description="The skill the job needs: the technician must hold it, certified on the "
        "assignment date (their local date)",
    )
    note: str | None = Field(default=None, max_length=MAX_NOTE)
