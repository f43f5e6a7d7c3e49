"""Idempotency records: the one mechanism every family uses for exactly-once effects.

A record is claimed in the same transaction as the state change it guards.
If the transaction commits, the key is taken for good; if it rolls back (or the
worker dies), the key is free again and a retry does the work.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, Session, SQLModel, select

from .errors import ConfigurationError

__all__ = ["IdempotencyRecord", "claim", "lookup"]


def _now() -> datetime:
    return datetime.now(UTC)


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "bgjobs_idempotency"

    key: str = Field(primary_key=True, max_length=255)
    scope: str = Field(default="", max_length=64, index=True)
    result: str | None = None
    created_at: datetime = Field(default_factory=_now, index=True)


def claim(session: Session, key: str, *, scope: str = "", result: str | None = None) -> bool:
    """Take ``key`` inside the caller's transaction.

    Returns:
        True if this transaction took the key (go on and make the change);
        False if it was already taken (the effect happened; do nothing).
    """
    values = {"key": key, "scope": scope, "result": result, "created_at": _now()}
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = pg_insert(IdempotencyRecord).values(values).on_conflict_do_nothing(index_elements=["key"])
    elif dialect == "sqlite":
        stmt = sqlite_insert(IdempotencyRecord).values(values).on_conflict_do_nothing(index_elements=["key"])
    else:
        raise ConfigurationError(f"bgjobs supports SQLite and PostgreSQL, not {dialect}")
    # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
    return session.execute(stmt.returning(IdempotencyRecord.__table__.c.key)).first() is not None  # type: ignore[attr-defined]


def lookup(session: Session, key: str) -> IdempotencyRecord | None:
    """The record for ``key``, if its transaction committed."""
    return session.exec(select(IdempotencyRecord).where(IdempotencyRecord.key == key)).first()
