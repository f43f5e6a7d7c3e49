"""Engines for the database URLs bgjobs is given: one per URL per process, SQLite tuned for workers.

Creating an engine connects to nothing; the first query does. :mod:`bgjobs.runtime` holds the
process's engine, :mod:`bgjobs.db` the sessions over it.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from typing import Any

from sqlalchemy import Engine, event
from sqlmodel import create_engine

from .errors import ConfigurationError
from .redact import mask_url

__all__ = ["READ_ONLY", "engine_for"]

#: Execution option of :func:`bgjobs.db.read` connections: no write lock on SQLite.
READ_ONLY = "bgjobs_read_only"
_BUSY_TIMEOUT_S = 30


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes worker
    # processes wait for the write lock instead of failing with "database is locked".
    # pysqlite's own deferred BEGIN is turned off: see _sqlite_begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class _Writers:
    """One database's writers in this process, and how they take SQLite's write lock.

    SQLite's busy handler does not queue a writer that finds the write lock taken: it sleeps and
    looks again, 1 ms, then 2, 5, 10 ... up to 100 ms between looks. A worker process whose
    writer slept there while another process took the lock again and again stood still: 91% of a
    payout worker thread's time was spent in ``BEGIN IMMEDIATE``. A process's writers now queue
    on a lock of their own, woken the moment the one before them ends, and the one at the head
    asks SQLite for the write lock every 0.2 ms, less often as the wait grows (at most
    :data:`_BUSY_TIMEOUT_S`, as before).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner: int | None = None

    def enter(self) -> bool:
        """Wait for this process's writer to finish; False for a thread already writing (on
        another connection: SQLite decides, as it did before this lock)."""
        me = threading.get_ident()
        if self.owner == me:
            return False
        if not self.lock.acquire(timeout=_BUSY_TIMEOUT_S):
            raise sqlite3.OperationalError(
                f"database is locked (waited {_BUSY_TIMEOUT_S} s for this process's other writers)"
            )
        self.owner = me
        return True

    def leave(self) -> None:
        self.owner = None
        self.lock.release()


def _begin_immediate(connection: Any, raw: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, asking again while another process writes: every 0.2 ms at first (a
    write transaction is a millisecond or two), then less and less often, up to every 5 ms for a
    long one (a payout run's planning). SQLite's own busy handler is off meanwhile: it sleeps up to
    100 ms between looks. The last try goes through SQLAlchemy, which raises its error as for any
    statement."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    pause = 0.0002
    raw.execute("PRAGMA busy_timeout=0")
    try:
        while time.monotonic() < deadline:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    break
            time.sleep(pause)
            pause = min(pause * 1.1, 0.005)
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        raw.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_S * 1000}")


class _Connection(sqlite3.Connection):
    """A SQLite connection that gives its process's write lock back when its transaction ends."""

    writers: _Writers
    holding = False

    def _let_go(self) -> None:
        if self.holding:
            self.holding = False
            self.writers.leave()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._let_go()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._let_go()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._let_go()


def _sqlite_begin(connection: Any) -> None:
    # A deferred transaction that reads and then writes must upgrade its lock, and SQLite
    # answers "database is locked" at once (no busy wait) when another writer is pending.
    # Taking the write lock at BEGIN makes concurrent workers queue instead (see _Writers).
    # Reads (see read()) need no write lock: in WAL mode they run beside the writer.
    if connection.get_execution_options().get(READ_ONLY, False):
        connection.exec_driver_sql("BEGIN")
        return
    raw = connection.connection.dbapi_connection
    if not isinstance(raw, _Connection):  # a connection bgjobs did not make
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        return
    raw.holding = raw.writers.enter()
    try:
        _begin_immediate(connection, raw)
    except BaseException:
        raw._let_go()
        raise


@functools.cache
def engine_for(url: str) -> Engine:
    """One engine per URL per process."""
    if url.startswith("sqlite"):
        # Each engine's connections share one queue of writers (one per database per process).
        factory = type("Connection", (_Connection,), {"writers": _Writers()})
        connect_args = {"check_same_thread": False, "timeout": _BUSY_TIMEOUT_S, "factory": factory}
        engine = create_engine(url, connect_args=connect_args)
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
