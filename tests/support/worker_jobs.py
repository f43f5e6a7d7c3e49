"""Jobs the integration tests run in a real ``dramatiq bgjobs.actors`` worker.

Loaded by the worker through ``BGJOBS_JOBS=tests.support.worker_jobs``.
"""

from __future__ import annotations

import os
import signal
import time

import redis
from sqlmodel import Field, SQLModel, func, select

import bgjobs
from bgjobs import db, idempotency, wiring
from bgjobs.ports import EmailMessage
from bgjobs.settings import get_settings


class Effect(SQLModel, table=True):
    __tablename__ = "test_effects"

    key: str = Field(primary_key=True)
    pid: int


class Work(bgjobs.Payload):
    key: str
    sleep_s: float = 0.0


def _redis() -> redis.Redis:
    """The deployment's Redis (the broker's, or RabbitMQ's coordination store), however it is
    reached (Sentinel, TLS)."""
    from bgjobs.redis_connections import client_for

    settings = get_settings()
    return client_for(settings.coordination_url or settings.broker_url, settings.redis_tls)


def starts(key: str) -> int:
    """How many times a worker began ``record`` for ``key``."""
    return int(_redis().get(f"test:starts:{key}") or 0)


@bgjobs.actor(queue="default")
def record(payload: Work) -> None:
    """The effect is a row, written once per key in the same transaction as its idempotency record."""
    _redis().incr(f"test:starts:{payload.key}")
    time.sleep(payload.sleep_s)
    with db.session() as session:
        if idempotency.claim(session, f"effect:{payload.key}", scope="test"):
            session.add(Effect(key=payload.key, pid=os.getpid()))


@bgjobs.actor(queue="default")
def logged(payload: Work) -> None:
    """Writes a line per run to ``TEST_RUNS_FILE`` (no Redis, no database): a job that ran twice
    shows twice, whatever store was down."""
    with open(os.environ["TEST_RUNS_FILE"], "a") as runs:
        runs.write(f"{payload.key} {os.getpid()}\n")
    time.sleep(payload.sleep_s)


@bgjobs.actor(queue="default")
def die(payload: Work) -> None:
    """Kills its own worker process, every time: a poison message."""
    _redis().incr(f"test:starts:{payload.key}")
    os.kill(os.getpid(), signal.SIGKILL)


@bgjobs.actor(queue="default")
def refused(payload: Work) -> None:
    """Refused by its vendor while ``test:refusing`` is set; takes effect once it is cleared."""
    if _redis().get("test:refusing"):
        raise bgjobs.PermanentError(f"vendor refused {payload.key}")
    with db.session() as session:
        if idempotency.claim(session, f"effect:{payload.key}", scope="test"):
            session.add(Effect(key=payload.key, pid=os.getpid()))


@bgjobs.actor(queue="default")
def flaky_once(payload: Work) -> None:
    """Fails its first attempt (a retry), succeeds on the second."""
    if _redis().incr(f"test:flaky:{payload.key}") == 1:
        raise bgjobs.TransientError(f"first attempt of {payload.key}")


@bgjobs.actor(queue="notifications")
def mail(payload: Work) -> None:
    wiring.mailer().send(message=EmailMessage(to=("ops@example.com",), subject=payload.key, text="-"))


def effects() -> dict[str, int]:
    with db.session() as session:
        return {e.key: e.pid for e in session.exec(select(Effect))}


def effect_count() -> int:
    with db.session() as session:
        return int(session.exec(select(func.count()).select_from(Effect)).one())


def create_tables() -> None:
    db.upgrade()
    SQLModel.metadata.create_all(db.get_engine(), tables=[Effect.__table__])  # type: ignore[attr-defined]


@bgjobs.actor(queue="default", concurrency=bgjobs.PerKey("key", limit=1))
def per_tenant(payload: Work) -> None:
    """One at a time per key (docs/controls.md); counts its starts like :func:`record`."""
    _redis().incr(f"test:starts:{payload.key}")
    if payload.sleep_s < 0:  # asked to fail, once it counted its start
        raise RuntimeError("per_tenant was asked to fail")
    time.sleep(payload.sleep_s)
