"""A host table and its archive policy, for the cleanup crash test's real workers (BGJOBS_JOBS)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from bgjobs.cleanup import register_policy


class HostEvent(SQLModel, table=True):
    __tablename__ = "host_events"

    id: int | None = Field(default=None, primary_key=True)
    kind: str
    happened_at: datetime


register_policy("host-events", HostEvent, column="happened_at", older_than="30d", action="archive")
