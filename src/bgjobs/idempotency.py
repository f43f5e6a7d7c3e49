"""Idempotency records: the one mechanism every family uses for exactly-once effects.

A record is claimed in the same transaction as the state change it guards.
If the transaction commits, the key is taken for good; if it rolls back (or the
worker dies), the key is free again and a retry does the work.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, Session, SQLModel, select

from . import db, retention
from .clock import now as _now

__all__ = ["IdempotencyRecord", "claim", "lookup"]


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
    return db.insert_new(session, IdempotencyRecord, {"key": key, "scope": scope, "result": result,
                                                      "created_at": _now()})  # fmt: skip


def lookup(session: Session, key: str) -> IdempotencyRecord | None:
    """The record for ``key``, if its transaction committed."""
    return session.exec(select(IdempotencyRecord).where(IdempotencyRecord.key == key)).first()


retention.keep("bgjobs.idempotency", "bgjobs_idempotency", "created_at",
               days=lambda s: s.cleanup.idempotency_days)  # fmt: skip
