"""``bgjobs_console_audit``: every action taken through the console, who took it and how it ended.

Written by the console for each state-changing call (requeue, purge, pause, trigger, ...),
also when it is refused or fails, so an operator can answer "who requeued these 4,000 letters".
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel, col, select

from . import db, retention
from .clock import now as _now

__all__ = ["AuditEntry", "entries", "record"]


class AuditEntry(SQLModel, table=True):
    __tablename__ = "bgjobs_console_audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=_now, index=True)
    #: Who: the Basic user, ``token``, the host's user (when mounted), or ``loopback``.
    who: str = Field(max_length=200)
    action: str = Field(max_length=64)
    #: What it acted on: ``queue:webhooks``, ``job:payouts.weekly``, ``dead-letters:3``.
    resource: str = Field(max_length=500)
    #: ``ok``, ``refused`` or ``failed``.
    result: str = Field(max_length=16)
    detail: str = Field(default="", max_length=2000)


def record(*, who: str, action: str, resource: str, result: str, detail: str = "") -> None:
    with db.session() as s:
        s.add(AuditEntry(who=who[:200], action=action[:64], resource=resource[:500], result=result[:16],
                         detail=detail[:2000]))  # fmt: skip


def entries(
    *, limit: int = 50, offset: int = 0, action: str | None = None, who: str | None = None,
    resource: str | None = None, since: datetime | None = None, until: datetime | None = None,
) -> list[AuditEntry]:  # fmt: skip
    """The audit log, newest first: by ``action`` (exact), ``who`` and ``resource`` (text they
    contain, any case), and a time window (``since`` inclusive, ``until`` exclusive; UTC if no zone)."""
    from .moments import as_utc

    query = select(AuditEntry).order_by(col(AuditEntry.at).desc(), col(AuditEntry.id).desc())
    if action:
        query = query.where(AuditEntry.action == action)
    if who:
        query = query.where(col(AuditEntry.who).icontains(who, autoescape=True))
    if resource:
        query = query.where(col(AuditEntry.resource).icontains(resource, autoescape=True))
    if since is not None:
        query = query.where(col(AuditEntry.at) >= as_utc(since))
    if until is not None:
        query = query.where(col(AuditEntry.at) < as_utc(until))
    with db.session() as s:
        return list(s.exec(query.offset(offset).limit(limit)))


retention.keep("bgjobs.audit", "bgjobs_console_audit", "at", days=lambda s: s.cleanup.audit_days)
