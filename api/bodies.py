"""The base of request bodies: unknown fields refused, and nothing in them a store cannot keep."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


def _find_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_find_nul(key) or _find_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_find_nul(item) for item in value)
    return False


class StorableBody(BaseModel):
    """A request body: unknown fields refused, and no text anywhere in it with a NUL."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        # PostgreSQL text and JSON cannot hold NUL: refused here it is a 422, not a 500.
        if _find_nul(data):
            raise ValueError("text cannot contain NUL characters")
        return data
