"""Running a policy: bounded batches by primary key, each its own short transaction.

A batch takes up to ``batch_size`` primary keys of eligible rows, in key order, and in one
transaction copies them to the archive (``archive``) and deletes them. A worker killed at any line
leaves every row either still in the source or in the archive, never lost and never in both.
``export-then-delete`` writes the batch's file first, under a key made of the batch's first and
last primary keys, then deletes: a crash in between rewrites the same file and deletes then.
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Engine, MetaData, Table, and_, any_, bindparam, delete, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY

from .. import db, wiring
from ..errors import ConfigurationError
from ._policies import Policy

__all__ = ["run_policy"]

logger = logging.getLogger("bgjobs.cleanup")


@functools.cache
def _reflect(engine: Engine, name: str) -> Table:
    return Table(name, MetaData(), autoload_with=engine)


def _table(engine: Engine, policy: Policy) -> Table:
    try:
        table = _reflect(engine, policy.table)
    except Exception as exc:
        raise ConfigurationError(
            f"cleanup policy {policy.name}: cannot read table {policy.table!r}: {exc}"
        ) from None
    if policy.column not in table.c:
        raise ConfigurationError(
            f"cleanup policy {policy.name}: {policy.table} has no column {policy.column!r}"
        )
    if len(table.primary_key.columns) != 1:
        raise ConfigurationError(
            f"cleanup policy {policy.name}: {policy.table} needs a one-column primary key"
        )
    return table


def _archive(engine: Engine, table: Table, name: str) -> Table:
    archive = Table(
        name, MetaData(), *(Column(c.name, c.type, primary_key=c.primary_key) for c in table.columns)
    )
    archive.create(engine, checkfirst=True)
    return archive


def _cutoff(policy: Policy, now: datetime, table: Table) -> datetime:
    cutoff = (now - policy.older_than).astimezone(UTC)
    # Columns without a time zone hold UTC wall time (as bgjobs and SQLModel write them); compare
    # like with like, or SQLite compares text and PostgreSQL converts through the session's zone.
    aware = bool(getattr(table.c[policy.column].type, "timezone", False))
    return cutoff if aware else cutoff.replace(tzinfo=None)


def run_policy(
    policy: Policy,
    *,
    dry_run: bool = False,
    batch_size: int = 5_000,
    deadline: float | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Apply one policy until no eligible row is left or ``deadline`` (monotonic) passes.

    A row that becomes eligible during the run with a key below the batches' position waits for
    the next run.

    Returns the policy's report: status (``done``, ``stopped`` at the deadline, ``dry-run``), the
    cutoff, rows archived/deleted (or that would be), batches, and the longest transaction in ms.
    """
    engine = db.get_engine()
    table = _table(engine, policy)
    moment = now or datetime.now(UTC)
    cutoff = _cutoff(policy, moment, table)
    clause = policy.clause(table)
    old = table.c[policy.column] < cutoff
    eligible = old if clause is None else and_(old, clause)
    report: dict[str, Any] = {"action": policy.action, "cutoff": (moment - policy.older_than).isoformat(),
                              "rows": 0, "batches": 0, "longest_transaction_ms": 0}  # fmt: skip
    if dry_run:
        with db.read(engine) as conn:
            counted = conn.execute(select(func.count()).select_from(table).where(eligible))
            report["rows"] = int(counted.scalar_one())
        report["status"] = "dry-run"
        return report
    pk = next(iter(table.primary_key.columns))
    archive = None
    if policy.action == "archive":
        archive = _archive(engine, table, policy.archive_table or f"{policy.table}_archive")
    report["status"] = "done"
    postgres = engine.dialect.name == "postgresql"
    # Statements are built once and run with parameters: statements rebuilt per batch with their
    # values inside filled SQLAlchemy's compiled cache, and memory grew with the row count.
    # Keyset pagination: each batch starts after the last key, so no batch rescans the index
    # entries of rows the previous batches deleted (still there until PostgreSQL vacuums).
    first_batch = select(pk).where(eligible).order_by(pk).limit(batch_size)
    next_batch = select(pk).where(eligible, pk > bindparam("last")).order_by(pk).limit(batch_size)
    if postgres:
        # Lock the batch: a row the host changes meanwhile waits for the next run, and the copy
        # and the delete see exactly the same rows. The keys go as one array parameter.
        first_batch, next_batch = (q.with_for_update(skip_locked=True) for q in (first_batch, next_batch))
        chosen = pk == any_(bindparam("ids", type_=ARRAY(pk.type)))
    else:
        # SQLite has one writer (the batch holds it since BEGIN IMMEDIATE): the eligible rows
        # between the batch's first and last key are exactly the batch.
        chosen = and_(pk >= bindparam("lo"), pk <= bindparam("hi"), eligible)
    copy = None
    if archive is not None:
        copy = insert(archive).from_select([c.name for c in table.columns], select(table).where(chosen))
    remove = delete(table).where(chosen, eligible)
    last: Any = None
    while True:
        if deadline is not None and time.monotonic() > deadline:
            report["status"] = "stopped"
            break
        if policy.action == "export-then-delete":
            remaining = eligible if last is None else and_(eligible, pk > last)
            ids = _export_batch(engine, policy, table, pk, remaining, batch_size)
            if not ids:
                break
        started = time.perf_counter()
        with engine.begin() as conn:
            if policy.action != "export-then-delete":
                batch = first_batch if last is None else next_batch
                ids = [r[0] for r in conn.execute(batch, {} if last is None else {"last": last})]
                if not ids:
                    break
            params = {"ids": ids} if postgres else {"lo": ids[0], "hi": ids[-1]}
            if copy is not None:
                conn.execute(copy, params)
            removed = conn.execute(remove, params).rowcount
        elapsed = int((time.perf_counter() - started) * 1000)
        last = ids[-1]
        report["rows"] += removed
        report["batches"] += 1
        report["longest_transaction_ms"] = max(report["longest_transaction_ms"], elapsed)
    if report["rows"]:
        logger.info(
            "cleanup %s: %s %d rows older than %s", policy.name, policy.action, report["rows"], cutoff
        )
    return report


def _export_batch(
    engine: Engine, policy: Policy, table: Table, pk: Any, eligible: Any, size: int
) -> list[Any]:
    """Write one batch's rows as CSV through the exports family's writer; returns their keys."""
    from ..exports import encode

    with db.read(engine) as conn:
        rows = [
            dict(r._mapping) for r in conn.execute(select(table).where(eligible).order_by(pk).limit(size))
        ]
    if not rows:
        return []
    ids = [r[pk.name] for r in rows]
    key = f"cleanup/{policy.name}/{policy.table}-{ids[0]}-{ids[-1]}.csv"
    wiring.storage().put(key=key, chunks=encode("csv", rows, [c.name for c in table.columns]),
                         content_type="text/csv; charset=utf-8")  # fmt: skip
    return ids
