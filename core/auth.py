"""API roles and tokens: who may call the API and what each role may do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class Role(StrEnum):
    """A token's role; each role may do everything the roles below it may."""

    ADMIN = "admin"
    PLANNER = "planner"
    TECHNICIAN = "technician"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        """Return how much this role may do: higher ranks include lower ones."""
        return _RANKS[self]

    def includes(self, needed: Role) -> bool:
        """Tell whether a holder of this role may do what `needed` may."""
        return self.rank >= needed.rank


_RANKS = {Role.VIEWER: 0, Role.TECHNICIAN: 1, Role.PLANNER: 2, Role.ADMIN: 3}


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """Who a valid token belongs to: what the API knows about its caller."""

    id: int
    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A stored API token as an operator sees it; the secret itself is never kept."""

    id: int
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        """Tell whether the token still authenticates."""
        return self.revoked_at is None


class TokenAuthenticator(Protocol):
    """Something that tells who a bearer token belongs to."""

    def authenticate(self, token: str) -> TokenInfo | None:
        """Return the token's owner, or None if it is unknown or revoked."""
        ...
