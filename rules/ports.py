"""Ports the rules engine needs: where rule definitions are kept."""

from __future__ import annotations

from typing import Protocol

from rules.model import Rule


class RuleRepository(Protocol):
    """Rule definitions, by id."""

    def add(self, rule: Rule) -> Rule:
        """Insert a new rule; raise ConflictError if the id exists."""
        ...

    def get(self, rule_id: str) -> Rule:
        """Return a rule; raise NotFoundError if absent."""
        ...

    def replace(self, rule: Rule) -> Rule:
        """Replace a rule's whole definition; raise NotFoundError if absent."""
        ...

    def delete(self, rule_id: str) -> None:
        """Delete a rule; raise NotFoundError if absent."""
        ...

    def list(self, *, after_id: str | None = None, limit: int = 100) -> list[Rule]:
        """Return rules ordered by id, after `after_id` (keyset pagination)."""
        ...
