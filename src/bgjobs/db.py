"""The database bgjobs keeps its state in: SQLite by default, PostgreSQL supported.

Engines are created on first use, never at import. Every bgjobs table is
prefixed ``bgjobs_``; :func:`upgrade` runs bgjobs's migrations (:mod:`bgjobs.migrations`),
which own the schema and touch only those tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, SQLModel

from . import runtime
from .engines import READ_ONLY, engine_for
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .migrations import UpgradeReport

__all__ = [
    "aware", "engine_for", "get_engine", "insert_new", "read", "reading", "session", "unreachable", "upgrade",
]  # fmt: skip


def get_engine() -> Engine:
    """The current runtime's engine (see :mod:`bgjobs.runtime`)."""
    return runtime.current().engine


def aware(moment: datetime) -> datetime:
    """A datetime read back from the database, with its zone: SQLite returns them naive, and
    bgjobs writes them in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@contextmanager
def read(engine: Engine | None = None) -> Iterator[Connection]:
    """A connection for reads only: on SQLite it does not queue for the write lock."""
    with (engine or get_engine()).connect() as conn:
        yield conn.execution_options(**{READ_ONLY: True})


@contextmanager
def reading(engine: Engine | None = None) -> Iterator[Session]:
    """A session for reads only, on a :func:`read` connection: loading a row to look at it does
    not queue for SQLite's write lock (a worker did, once per payout, for nothing)."""
    with read(engine) as conn, Session(bind=conn, expire_on_commit=False) as s:
        yield s


@contextmanager
def session(engine: Engine | None = None) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any exception."""
    with Session(engine or get_engine(), expire_on_commit=False) as s, s.begin():
        yield s


def insert_new(
    session: Session, model: type[SQLModel], values: dict[str, Any], *, unique: Sequence[str] | None = None
) -> bool:
    """Insert a row unless one with the same key exists; True if this call inserted it.

    One statement (``INSERT ... ON CONFLICT DO NOTHING RETURNING``), so two transactions racing
    on the same key never both win and neither fails.

    Args:
        unique: the columns of the unique constraint that makes a row the same; the primary key
            by default.
    """
    table: Any = model.__table__  # type: ignore[attr-defined]
    primary = [c.name for c in table.primary_key.columns]
    keys = list(unique) if unique is not None else primary
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = pg_insert(table).values(values).on_conflict_do_nothing(index_elements=keys)
    elif dialect == "sqlite":
        stmt = sqlite_insert(table).values(values).on_conflict_do_nothing(index_elements=keys)
    else:
        raise ConfigurationError(f"bgjobs supports SQLite and PostgreSQL, not {dialect}")
    # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
    return session.execute(stmt.returning(table.c[primary[0]])).first() is not None


def unreachable(exc: BaseException) -> str:
    """One line for a database error met at start-up (the driver's first line, no SQL, no traceback)."""
    cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return f"the database refused or did not answer ({cause}); check BGJOBS_DATABASE_URL"


def upgrade(engine: Engine | None = None) -> UpgradeReport:
    """Run bgjobs's migrations to head: what ``bgjobs db upgrade`` does, for a host that migrates
    from its own deploy step (its own Alembic ``env.py``, a Django management command).

    Raises:
        SchemaMismatch: existing bgjobs tables without a revision differ from the baseline.
    """
    from .migrations import upgrade as run

    return run(engine or get_engine())
