"""``bgjobs_runs``: one row per batch run, with its own counts, so every run can be audited."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Field, SQLModel, col, select

from . import db, retention
from .clock import now as _now

__all__ = ["Run", "finish", "get", "recent", "start"]


class Run(SQLModel, table=True):
    __tablename__ = "bgjobs_runs"

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True, max_length=32)
    job: str = Field(index=True, max_length=200)
    trigger: str = Field(max_length=16)
    started_at: datetime = Field(default_factory=_now, index=True)
    finished_at: datetime | None = None
    outcome: str = Field(default="running", max_length=16)
    counts: str = "{}"
    error: str | None = None

    @property
    def figures(self) -> dict[str, Any]:
        return dict(json.loads(self.counts))

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (db.aware(self.finished_at) - db.aware(self.started_at)).total_seconds()


def start(job: str, trigger: str, *, engine: Engine | None = None) -> Run:
    """Record that a run began, in its own short transaction."""
    run = Run(job=job, trigger=trigger)
    with db.session(engine) as s:
        s.add(run)
    return run


def finish(
    run: Run, outcome: str, *, counts: dict[str, Any] | None = None, error: str | None = None,
    engine: Engine | None = None,
) -> Run:  # fmt: skip
    """Record how a run ended."""
    with db.session(engine) as s:
        stored = s.get(Run, run.id)
        assert stored is not None, f"run {run.id} vanished"
        stored.finished_at = _now()
        stored.outcome = outcome
        stored.counts = json.dumps(counts or {}, default=str, sort_keys=True)
        stored.error = error
        s.add(stored)
    return stored


def recent(
    *, job: str | None = None, outcome: str | None = None, limit: int = 20, offset: int = 0,
    engine: Engine | None = None,
) -> list[Run]:  # fmt: skip
    """The latest runs, newest first (of one job, with one outcome: ``running``, ``succeeded`` ...)."""
    with db.session(engine) as s:
        query = select(Run).order_by(col(Run.started_at).desc(), col(Run.id)).offset(offset).limit(limit)
        if job:
            query = query.where(Run.job == job)
        if outcome:
            query = query.where(Run.outcome == outcome)
        return list(s.exec(query))


def get(run_id: str, *, engine: Engine | None = None) -> Run | None:
    with db.session(engine) as s:
        return s.get(Run, run_id)


retention.keep("bgjobs.runs", "bgjobs_runs", "started_at", days=lambda s: s.cleanup.runs_days,
               where=lambda t: t.c.finished_at.isnot(None))  # fmt: skip
