"""Engines for the database URLs bgjobs is given: one per URL per process, SQLite tuned for workers.

Creating an engine connects to nothing; the first query does. :mod:`bgjobs.runtime` holds the
process's engine, :mod:`bgjobs.db` the sessions over it.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Engine, event
from sqlmodel import create_engine

from .errors import ConfigurationError
from .redact import mask_url

__all__ = ["READ_ONLY", "engine_for"]

#: Execution option of :func:`bgjobs.db.read` connections: no write lock on SQLite.
READ_ONLY = "bgjobs_read_only"


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
    # Reads (see read()) need no write lock: in WAL mode they run beside the writer.
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@functools.cache
def engine_for(url: str) -> Engine:
    """One engine per URL per process."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except ImportError as exc:  # the URL's driver is not installed
        extra = (" pip install 'bgjobs[postgres]' (psycopg 3) and write the URL as postgresql+psycopg://..."
                 if url.startswith("postgres") else "")  # fmt: skip
        raise ConfigurationError(
            f"BGJOBS_DATABASE_URL={mask_url(url)!r} needs a driver that is not installed ({exc});{extra}"
        ) from None
