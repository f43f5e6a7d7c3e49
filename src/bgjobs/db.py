"""The database bgjobs keeps its state in: SQLite by default, PostgreSQL supported.

Engines are created on first use, never at import. Every bgjobs table is
prefixed ``bgjobs_``; :func:`upgrade` creates only those.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlmodel import Session, SQLModel, create_engine

from .settings import get_settings

__all__ = ["bgjobs_tables", "engine_for", "get_engine", "session", "upgrade"]

TABLE_PREFIX = "bgjobs_"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes worker
    # processes wait for the write lock instead of failing with "database is locked".
    # pysqlite's own deferred BEGIN is turned off: see _sqlite_begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # A deferred transaction that reads and then writes must upgrade its lock, and SQLite
    # answers "database is locked" at once (no busy wait) when another writer is pending.
    # Taking the write lock at BEGIN makes concurrent workers queue on busy_timeout instead.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


@functools.cache
def engine_for(url: str) -> Engine:
    """One engine per URL per process."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


def get_engine() -> Engine:
    """The engine for ``BGJOBS_DATABASE_URL``."""
    return engine_for(get_settings().database_url)


@contextmanager
def session(engine: Engine | None = None) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any exception."""
    with Session(engine or get_engine(), expire_on_commit=False) as s, s.begin():
        yield s


def bgjobs_tables() -> list[Any]:
    """The tables bgjobs owns (its modules must be imported first)."""
    return [t for name, t in SQLModel.metadata.tables.items() if name.startswith(TABLE_PREFIX)]


def upgrade(engine: Engine | None = None) -> list[str]:
    """Create any missing bgjobs table; returns the names of all bgjobs tables."""
    from . import idempotency, outbox, runs  # noqa: F401  (registers their tables)

    tables = bgjobs_tables()
    SQLModel.metadata.create_all(engine or get_engine(), tables=tables)
    return sorted(t.name for t in tables)
