"""Typed domain errors, each with a stable code; api/ maps them to problem+json."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a service raises on purpose."""

    code = "error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFoundError(DomainError):
    """Raise when a named resource does not exist."""

    code = "not_found"


class ConflictError(DomainError):
    """Raise when a write collides with existing state (duplicate id, stale version)."""

    code = "conflict"


class ValidationError(DomainError):
    """Raise when input is well-formed but violates a domain rule."""

    code = "invalid"


class StoreUnavailableError(DomainError):
    """Raise when a store cannot be reached; the caller retries, nothing is dropped."""

    code = "store_unavailable"


class AuthError(DomainError):
    """Raise when a request carries no valid credentials."""

    code = "unauthorized"


class ForbiddenError(DomainError):
    """Raise when valid credentials lack the role an action needs."""

    code = "forbidden"


class StoreRejectedError(DomainError):
    """Raise when a store refuses data for good; retrying the same write never succeeds."""

    code = "store_rejected"
