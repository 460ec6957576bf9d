"""SQL repositories for assets, dead letters, API tokens and rules (SQLite and PostgreSQL)."""

from __future__ import annotations

import builtins
import hashlib
import logging
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import Connection, Engine, Insert, RowMapping, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from core.assets import Asset
from core.auth import ApiToken, Role, TokenInfo
from core.clock import Clock, SystemClock
from core.deadletters import DeadLetter
from core.errors import ConflictError, NotFoundError, ValidationError
from rules.alerting import OPEN_ALERT_STATUSES, AlertStatus
from rules.model import Rule
from storage.tables import alerts, api_tokens, assets, dead_letters, rule_states, rules

log = logging.getLogger(__name__)

AUTO_REGISTERED_TYPE = "unregistered"
AUTO_REGISTERED_SITE = "unassigned"
TOKEN_PREFIX = "pmk_"  # noqa: S105 - a public marker that makes leaked tokens greppable

# Fields a caller may change through `update`; identity and bookkeeping are not among them.
_READ_ONLY_FIELDS = frozenset({"id", "created_at", "updated_at"})
_UPDATABLE_FIELDS = frozenset(Asset.model_fields) - _READ_ONLY_FIELDS
# Keeps IN (...) lists well under SQLite's 32766 bound parameters per statement.
_IN_CHUNK = 500


def insert_ignoring_duplicates(connection: Connection, table: Any) -> Insert:
    """Return an INSERT that skips rows whose primary key exists (ON CONFLICT DO NOTHING)."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"no race-safe insert for {connection.dialect.name}")


def _asset_row(asset: Asset) -> dict[str, Any]:
    row = asset.model_dump()
    row["criticality"] = asset.criticality.value
    return row


def _asset_from_row(row: RowMapping) -> Asset:
    return Asset.model_validate(dict(row))


class SqlAssetRepository:
    """The asset registry in a SQL database."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock = clock or SystemClock()

    def add(self, asset: Asset) -> Asset:
        """Insert a new asset; raise ConflictError if the id exists."""
        now = self._clock.now()
        stored = asset.model_copy(
            update={"created_at": asset.created_at or now, "updated_at": asset.updated_at or now}
        )
        try:
            with self._engine.begin() as connection:
                connection.execute(insert(assets).values(_asset_row(stored)))
        except IntegrityError as exc:
            raise ConflictError(f"asset {asset.id!r} already exists", asset_id=asset.id) from exc
        return self.get(asset.id)

    def get(self, asset_id: str) -> Asset:
        """Return an asset; raise NotFoundError if absent."""
        with self._engine.connect() as connection:
            row = connection.execute(select(assets).where(assets.c.id == asset_id)).first()
        if row is None:
            raise NotFoundError(f"asset {asset_id!r} not found", asset_id=asset_id)
        return _asset_from_row(row._mapping)

    def update(self, asset_id: str, changes: dict[str, Any]) -> Asset:
        """Apply field changes and return the updated asset; NotFoundError if absent."""
        refused = sorted(set(changes) - _UPDATABLE_FIELDS)
        if refused:
            raise ValidationError(f"cannot change {', '.join(refused)} of an asset", fields=refused)
        current = self.get(asset_id)
        try:
            merged = Asset.model_validate({**current.model_dump(), **changes})
        except PydanticValidationError as exc:
            raise ValidationError(
                f"invalid asset changes: {exc.error_count()} problem(s)",
                errors=exc.errors(include_url=False, include_context=False),
            ) from exc
        values = {name: value for name, value in _asset_row(merged).items() if name in changes}
        values["updated_at"] = self._clock.now()
        # Only the changed columns are written, so concurrent edits of other fields survive.
        with self._engine.begin() as connection:
            row = connection.execute(
                update(assets).where(assets.c.id == asset_id).values(values).returning(*assets.c)
            ).first()
        if row is None:
            raise NotFoundError(f"asset {asset_id!r} not found", asset_id=asset_id)
        return _asset_from_row(row._mapping)

    def existing_ids(self, asset_ids: Iterable[str]) -> set[str]:
        """Return which of the given ids are registered."""
        wanted = sorted(set(asset_ids))
        found: set[str] = set()
        with self._engine.connect() as connection:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                found.update(
                    connection.execute(select(assets.c.id).where(assets.c.id.in_(chunk))).scalars()
                )
        return found

    def register_missing(self, asset_ids: Iterable[str], registered_at: datetime) -> set[str]:
        """Auto-register ids not yet known (race-safe); return the ids newly created."""
        wanted = sorted(set(asset_ids))
        if not wanted:
            return set()
        rows = [
            _asset_row(
                Asset(
                    id=asset_id,
                    name=asset_id,
                    type=AUTO_REGISTERED_TYPE,
                    site=AUTO_REGISTERED_SITE,
                    auto_registered=True,
                    created_at=registered_at,
                    updated_at=registered_at,
                )
            )
            for asset_id in wanted
        ]
        with self._engine.begin() as connection:
            statement = insert_ignoring_duplicates(connection, assets).returning(assets.c.id)
            # RETURNING yields only the rows this statement inserted, never ones a concurrent
            # writer got to first: that is what makes the result exact. SQLAlchemy batches the
            # rows into multi-row INSERTs ("insertmanyvalues").
            created = set(connection.execute(statement, rows).scalars())
        if created:
            log.info("auto-registered %s asset(s): %s", len(created), sorted(created))
        return created

    def list(
        self,
        *,
        site: str | None = None,
        type: str | None = None,
        after_id: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Asset]:
        """Return assets ordered by id, after `after_id` (keyset pagination)."""
        query = select(assets).order_by(assets.c.id).limit(limit)
        if site is not None:
            query = query.where(assets.c.site == site)
        if type is not None:
            query = query.where(assets.c.type == type)
        if after_id is not None:
            query = query.where(assets.c.id > after_id)
        with self._engine.connect() as connection:
            return [_asset_from_row(row._mapping) for row in connection.execute(query)]


def _dead_letter_row(letter: DeadLetter) -> dict[str, Any]:
    return {
        "topic": letter.topic,
        "asset_id": letter.asset_id,
        "payload": bytes(letter.payload),
        "payload_size": letter.payload_size,
        "code": letter.code,
        "reason": letter.reason,
        "received_at": letter.received_at,
    }


class SqlDeadLetterRepository:
    """Refused input in a SQL database, kept with its reason."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add_many(self, letters: Sequence[DeadLetter]) -> None:
        """Durably store a batch of dead letters in one transaction."""
        if not letters:
            return
        with self._engine.begin() as connection:
            connection.execute(insert(dead_letters), [_dead_letter_row(x) for x in letters])

    def list(
        self, *, asset_id: str | None = None, before_id: int | None = None, limit: int = 100
    ) -> builtins.list[DeadLetter]:
        """Return dead letters newest first, before `before_id` (keyset pagination)."""
        query = select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
        if asset_id is not None:
            query = query.where(dead_letters.c.asset_id == asset_id)
        if before_id is not None:
            query = query.where(dead_letters.c.id < before_id)
        with self._engine.connect() as connection:
            return [
                DeadLetter(
                    id=row.id,
                    topic=row.topic,
                    asset_id=row.asset_id,
                    payload=bytes(row.payload),
                    payload_size=row.payload_size,
                    code=row.code,
                    reason=row.reason,
                    received_at=row.received_at,
                )
                for row in connection.execute(query)
            ]

    def count(self) -> int:
        """Return how many dead letters are stored."""
        with self._engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(dead_letters)).scalar_one()
            )


def hash_token(token: str) -> str:
    """Return the sha256 hex digest under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SqlTokenRepository:
    """API tokens in a SQL database; only their sha256 is stored, never the secret."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, role: Role, name: str, now: datetime) -> str:
        """Store a new token for `role` and return its plaintext, which is shown only once."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._engine.begin() as connection:
            connection.execute(
                insert(api_tokens).values(
                    name=name, role=Role(role).value, token_hash=hash_token(token), created_at=now
                )
            )
        log.info("created API token %r with role %s", name, role)
        return token

    def authenticate(self, token: str) -> TokenInfo | None:
        """Return the owner of an active token, or None if it is unknown or revoked."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        query = select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.role).where(
            api_tokens.c.token_hash == hash_token(token), api_tokens.c.revoked_at.is_(None)
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        return TokenInfo(id=row.id, name=row.name, role=Role(row.role))

    def revoke(self, token_id: int, now: datetime) -> ApiToken:
        """Revoke a token from `now` on; a second revoke keeps the first time."""
        with self._engine.begin() as connection:
            connection.execute(
                update(api_tokens)
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            row = connection.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
        if row is None:
            raise NotFoundError(f"API token {token_id} not found", token_id=token_id)
        log.info("revoked API token %s (%r)", token_id, row.name)
        return _token_from_row(row._mapping)

    def list(self) -> builtins.list[ApiToken]:
        """Return every token, revoked ones included, oldest first."""
        with self._engine.connect() as connection:
            rows = connection.execute(select(api_tokens).order_by(api_tokens.c.id))
            return [_token_from_row(row._mapping) for row in rows]


def _token_from_row(row: RowMapping) -> ApiToken:
    return ApiToken(
        id=row["id"],
        name=row["name"],
        role=Role(row["role"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


class SqlRuleRepository:
    """Rule definitions in a SQL database, each kept whole as validated JSON."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock = clock or SystemClock()

    def add(self, rule: Rule) -> Rule:
        """Insert a new rule; raise ConflictError if the id exists."""
        now = self._clock.now()
        row = {**_rule_row(rule), "created_at": now, "updated_at": now}
        try:
            with self._engine.begin() as connection:
                connection.execute(insert(rules).values(row))
        except IntegrityError as exc:
            raise ConflictError(f"rule {rule.id!r} already exists", rule_id=rule.id) from exc
        return rule

    def get(self, rule_id: str) -> Rule:
        """Return a rule; raise NotFoundError if absent."""
        with self._engine.connect() as connection:
            row = connection.execute(
                select(rules.c.definition).where(rules.c.id == rule_id)
            ).first()
        if row is None:
            raise NotFoundError(f"rule {rule_id!r} not found", rule_id=rule_id)
        return Rule.model_validate(row.definition)

    def replace(self, rule: Rule) -> Rule:
        """Replace a rule's whole definition; raise NotFoundError if absent."""
        with self._engine.begin() as connection:
            result = connection.execute(
                update(rules)
                .where(rules.c.id == rule.id)
                .values(**_rule_row(rule), updated_at=self._clock.now())
            )
        if result.rowcount == 0:
            raise NotFoundError(f"rule {rule.id!r} not found", rule_id=rule.id)
        return rule

    def delete(self, rule_id: str) -> None:
        """Delete a rule and its states, resolving its open alerts; NotFoundError if absent."""
        with self._engine.begin() as connection:
            result = connection.execute(delete(rules).where(rules.c.id == rule_id))
            if result.rowcount == 0:
                raise NotFoundError(f"rule {rule_id!r} not found", rule_id=rule_id)
            # A rule created again under the same id must not inherit the old one's states.
            connection.execute(delete(rule_states).where(rule_states.c.rule_id == rule_id))
            # Nothing will clear its alerts any more; its work orders stay (real work).
            connection.execute(
                update(alerts)
                .where(
                    alerts.c.rule_id == rule_id,
                    alerts.c.status.in_([status.value for status in OPEN_ALERT_STATUSES]),
                )
                .values(
                    status=AlertStatus.RESOLVED.value,
                    resolved_at=self._clock.now(),
                    resolved_by="system",
                    note="the rule was deleted",
                )
            )

    def list(self, *, after_id: str | None = None, limit: int = 100) -> builtins.list[Rule]:
        """Return rules ordered by id, after `after_id` (keyset pagination)."""
        query = select(rules.c.definition).order_by(rules.c.id).limit(limit)
        if after_id is not None:
            query = query.where(rules.c.id > after_id)
        with self._engine.connect() as connection:
            return [Rule.model_validate(row.definition) for row in connection.execute(query)]


def _rule_row(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "definition": rule.model_dump(mode="json"),
        "enabled": rule.enabled,
    }
