"""bgjobs's migrations on real SQLite and PostgreSQL: from empty, adopting a pre-migration database
built from a checked-in snapshot of its DDL, the models check, downgrades, concurrent upgrades,
and the start-up check."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import func, inspect, select, text

from bgjobs import db, exports, jobs, migrations, notifications, payouts, runs, webhooks
from bgjobs.settings import PayoutSettings, WebhookSettings
from bgjobs.testing import JobsHarness
from tests.support.postgres import PostgresCluster
from tests.support.processes import spawn
from tests.support.receivers import webhook_receiver
from tests.support.workers import ROOT, wait_for

Start = Callable[..., JobsHarness]
SNAPSHOTS = ROOT / "tests" / "fixtures" / "schema"
LONG_AGO = datetime.now(UTC) - timedelta(days=400)


def _dialect(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "sqlite"


def _build_pre_migration(url: str, *, alter: str | None = None) -> None:
    """A database as bgjobs 0.1's create_all made it, from the checked-in DDL (and an optional change)."""
    ddl = (SNAPSHOTS / f"pre_migrations.{_dialect(url)}.sql").read_text()
    code = "\n".join(line for line in ddl.splitlines() if not line.startswith("--"))
    statements = [s.strip() for s in code.split(";") if s.strip()]
    with db.engine_for(url).begin() as conn:
        for statement in [*statements, *([alter] if alter else [])]:
            conn.exec_driver_sql(statement)


#: Values for columns whose meaning the families read back; every other column gets a plain value.
_MEANINGFUL: dict[str, Any] = {
    "currency": "USD", "counts": "{}", "rate": "0.20", "payout_id": "payout:old:v0:USD", "status": "done",
    "event_types": ["legacy.event"], "booking_ids": [], "filters": {}, "requested_by": None, "state": "ok",
    "kind": "earning", "outcome": "succeeded", "trigger": "manual", "url": "https://127.0.0.1:9/legacy",
    "enabled": False,
}  # fmt: skip


def _value(column: sa.Column[Any]) -> Any:
    if column.name in _MEANINGFUL:
        return _MEANINGFUL[column.name]
    kind = column.type
    if isinstance(kind, sa.DateTime):
        return LONG_AGO
    if isinstance(kind, sa.Boolean):
        return False
    if isinstance(kind, sa.Integer):
        return 1
    if isinstance(kind, sa.JSON):
        return {}
    length = getattr(kind, "length", None) or 40
    return f"legacy-{column.name}"[:length]


def _fill_every_table(url: str) -> dict[str, int]:
    """One row in every bgjobs table (through the baseline's own table definitions)."""
    baseline = migrations._baseline_metadata()
    with db.engine_for(url).begin() as conn:
        for table in baseline.sorted_tables:
            generated = [c.name for c in table.primary_key.columns if isinstance(c.type, sa.Integer)]
            conn.execute(sa.insert(table).values({c.name: _value(c) for c in table.columns
                                                  if c.name not in generated}))  # fmt: skip
    return _counts(url)


def _counts(url: str) -> dict[str, int]:
    baseline = migrations._baseline_metadata()
    with db.engine_for(url).connect() as conn:
        return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for t in baseline.sorted_tables}  # fmt: skip


def test_migrating_an_empty_database_gives_exactly_the_models_schema(database_url: str) -> None:
    # When an empty database is migrated
    engine = db.engine_for(database_url)
    report = db.upgrade(engine)
    # Then it is at head, with bgjobs's tables only, and nothing differs from the models
    assert (report.before, report.after, report.adopted) == (None, migrations.head(), False)
    assert migrations.current(engine) == migrations.head()
    assert migrations.differences(engine) == []
    names = set(inspect(engine).get_table_names())
    assert len(names) == 23 and all(n.startswith("bgjobs_") for n in names)
    # And a second run has nothing to do
    assert db.upgrade(engine).describe() == f"nothing to do: the database is at {migrations.head()} (head)"


def test_the_models_check_names_a_model_change_that_has_no_migration(database_url: str) -> None:
    # Given a migrated database, and models that gained a column and an index no migration adds
    engine = db.engine_for(database_url)
    db.upgrade(engine)
    changed = migrations.models_metadata()
    runs_table = changed.tables["bgjobs_runs"]
    runs_table.append_column(sa.Column("host", sa.String(200), nullable=True))
    sa.Index("ix_bgjobs_runs_outcome", runs_table.c.outcome)
    runs_table.c.error.nullable = False
    # Then the comparison the suite and `bgjobs db check` rely on names each change
    with engine.connect() as conn:
        found = migrations._compare(conn, changed)
    assert found == [
        "table bgjobs_runs column error nullable is True, expected False",
        "table bgjobs_runs column host is missing",
        "table bgjobs_runs index ix_bgjobs_runs_outcome is missing",
    ]


def test_a_pre_migration_database_is_adopted_and_every_row_and_family_keeps_working(
    database_url: str, harness: Start
) -> None:
    # Given a database created by bgjobs 0.1's create_all, with a row in every table
    _build_pre_migration(database_url)
    before = _fill_every_table(database_url)
    assert set(before.values()) == {1} and len(before) == 17
    # When bgjobs upgrades it (the harness runs db.upgrade, as a deploy step would)
    started = harness(
        payouts=PayoutSettings(minimum=Decimal("1.00")),
        webhooks=WebhookSettings(require_https=False, allow=["127.0.0.1/32"]),
    )
    # Then it was stamped and is at head, and every row is still there
    engine = db.engine_for(database_url)
    assert migrations.current(engine) == migrations.head()
    assert migrations.differences(engine) == []
    assert _counts(database_url) == before
    # And every family runs a job against it
    when = datetime(2025, 6, 3, 12, tzinfo=UTC)
    ann = {"user_id": "u1", "email": "ann@example.com"}
    total = {"amount": "500.00", "currency": "USD"}
    booking = {"booking_id": "B1", "trip_date": "2025-06-15", "total": total}
    notifications.send("booking_confirmation", ann, booking, key="migrated:booking")
    with webhook_receiver() as receiver:
        endpoint = webhooks.add_endpoint(receiver.url("/in"), event_types=["payment.succeeded"])
        webhooks.publish("payment.succeeded", {"payment_id": "P1"})
        payouts.record_earning("v1", Decimal("100.00"), "USD", source_id="migrated-b1", occurred_at=when)
        jobs.trigger("payouts.weekly", period="2025-W23")
        export_id = exports.request("payouts.settlement", period="2025-06-03")
        jobs.trigger("cleanup.daily")
        started.drain()
        assert len(receiver.received("/in")) == 1 and endpoint.id
    assert [m.to for m in started.mailer.sent] == [("ann@example.com",)]
    assert [p.amount.amount for p in started.payment.payouts.values()] == [Decimal("80.00")]
    assert exports.get(export_id).status == "done"
    outcomes = {r.job: r.outcome for r in runs.recent(limit=50)}
    assert outcomes["payouts.weekly"] == "succeeded" and outcomes["cleanup.daily"] == "succeeded"


def test_a_pre_migration_database_that_differs_is_refused_naming_what_and_left_alone(
    database_url: str,
) -> None:
    # Given a create_all database missing a column and an index of the baseline
    _build_pre_migration(database_url, alter="ALTER TABLE bgjobs_payout_runs DROP COLUMN carried")
    engine = db.engine_for(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_bgjobs_payouts_run_status")
    # When bgjobs is asked to upgrade it, it says what differs and stops
    with pytest.raises(migrations.SchemaMismatch) as info:
        db.upgrade(engine)
    message = str(info.value)
    assert "table bgjobs_payout_runs column carried is missing" in message
    assert "table bgjobs_payouts index ix_bgjobs_payouts_run_status is missing" in message
    assert "\n" not in message
    # And nothing was changed: no revision, no new table
    assert "bgjobs_alembic_version" not in inspect(engine).get_table_names()
    assert migrations.current(engine) is None


def test_every_revision_downgrades_and_upgrades_again(database_url: str) -> None:
    engine = db.engine_for(database_url)
    db.upgrade(engine)
    revisions = [revision for revision, _, _ in migrations.history()]
    # Walk down one revision at a time to nothing, then back up to head
    for revision in reversed(revisions):
        previous = revisions[revisions.index(revision) - 1] if revisions.index(revision) else None
        assert migrations.downgrade(engine, previous or "base") == previous
    assert [n for n in inspect(engine).get_table_names() if n != "bgjobs_alembic_version"] == []
    db.upgrade(engine)
    assert migrations.differences(engine) == []


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bgjobs.cli", *args], env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_two_upgrades_at_once_on_postgresql_one_migrates_the_other_waits(postgres: PostgresCluster) -> None:
    url = postgres.create_database(f"bgjobs_concurrent_{os.getpid()}")
    env = {"BGJOBS_DATABASE_URL": url}
    # Given the migration lock held, so both commands are certainly running at once
    holder = db.engine_for(url).connect()
    holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": migrations.LOCK_KEY})
    cmd = [sys.executable, "-m", "bgjobs.cli", "db", "upgrade"]
    procs = [
        spawn(cmd, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    try:
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        wait_for(lambda: holder.execute(text(waiting)).scalar_one() == 2, timeout=60, what="both to wait")
        # When the lock is released
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": migrations.LOCK_KEY})
        holder.commit()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        holder.close()
        for p in procs:
            p.kill()
    # Then neither failed: one migrated, the other found nothing to do
    assert [p.returncode for p in procs] == [0, 0], outputs
    said = sorted(out.strip() for out, _ in outputs)
    head = migrations.head()
    assert said == [f"nothing to do: the database is at {head} (head)",
                    f"upgraded the database from empty to {head}"]  # fmt: skip


def test_upgrade_sql_prints_the_migration_for_a_dba_and_changes_nothing(postgres: PostgresCluster) -> None:
    url = postgres.create_database(f"bgjobs_sql_{os.getpid()}")
    done = _cli("db", "upgrade", "--sql", env={"BGJOBS_DATABASE_URL": url})
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE bgjobs_alembic_version" in done.stdout
    assert "CREATE TABLE bgjobs_payout_runs" in done.stdout and "COMMIT;" in done.stdout
    assert inspect(db.engine_for(url)).get_table_names() == []
    sqlite = _cli("db", "upgrade", "--sql", env={"BGJOBS_DATABASE_URL": "sqlite:///x.db"})
    assert sqlite.returncode == 2 and sqlite.stderr.strip() == (
        "bgjobs: bgjobs db upgrade --sql writes PostgreSQL; BGJOBS_DATABASE_URL is not"
    )


def test_upgrade_sql_adopts_a_pre_migration_database_for_a_dba_and_stamp_records_a_revision(
    postgres: PostgresCluster,
) -> None:
    # Given a database bgjobs 0.1 made, with a row in every table
    url = postgres.create_database(f"bgjobs_adopt_sql_{os.getpid()}")
    _build_pre_migration(url)
    before = _fill_every_table(url)
    env = {"BGJOBS_DATABASE_URL": url}

    # When a DBA asks for the SQL, it adopts the tables rather than creating them again
    done = _cli("db", "upgrade", "--sql", env=env)
    assert done.returncode == 0, done.stderr
    script = done.stdout
    assert "-- bgjobs: adopting the existing bgjobs tables (they match revision 0001)" in script
    assert "CREATE TABLE bgjobs_alembic_version" in script and "INSERT INTO bgjobs_alembic_version" in script
    assert "CREATE TABLE bgjobs_payout_runs" not in script  # 0.1 made it
    assert "CREATE TABLE bgjobs_console_audit" in script  # 0002 adds it
    assert migrations.current(db.engine_for(url)) is None  # asking changed nothing

    # And applying the script as written brings the database to head with every row kept
    with db.engine_for(url).connect() as conn:
        conn.connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
        conn.exec_driver_sql(script)
    engine = db.engine_for(url)
    assert migrations.current(engine) == migrations.head()
    assert migrations.differences(engine) == []
    assert _counts(url) == before
    assert _cli("db", "upgrade", "--sql", env=env).stdout.strip().endswith(
        f"nothing to do: the database is at {migrations.head()} (head)")  # fmt: skip

    # A database upgraded by hand is recorded with db stamp; an unknown revision is refused
    stamped = _cli("db", "stamp", "0004", env=env)
    assert stamped.returncode == 0 and stamped.stdout == "recorded revision 0004; nothing else was changed\n"
    assert migrations.current(engine) == "0004"
    wrong = _cli("db", "stamp", "0099", env=env)
    assert wrong.returncode == 2
    assert wrong.stderr.startswith("bgjobs: no bgjobs revision '0099'; the revisions: 0001, 0002")
    assert _cli("db", "stamp", "head", env=env).returncode == 0


def test_a_database_that_is_behind_stops_the_commands_and_the_worker_with_one_line(
    tmp_path: Path, redis_url: str
) -> None:
    env = {"BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'behind.db'}", "BGJOBS_BROKER_URL": redis_url}
    line = f"bgjobs: the database is at revision none, this bgjobs needs {migrations.head()}: " \
           "run 'bgjobs db upgrade'"  # fmt: skip
    # db check: exit 1 and one line per difference
    check = _cli("db", "check", env=env)
    assert check.returncode == 1
    lines = check.stdout.strip().splitlines()
    assert lines[0] == f"the database is at revision none, this bgjobs needs {migrations.head()}"
    assert "table bgjobs_runs is missing" in lines and len(lines) == 23
    # a command that needs the tables, and a worker: the one line, exit 2, no traceback
    for args in (("runs",), ("exports", "list")):
        done = _cli(*args, env=env)
        assert (done.returncode, done.stderr.strip()) == (2, line)
    worker = subprocess.run(
        [sys.executable, "-m", "dramatiq", "bgjobs.actors", "-p", "1", "-t", "1"],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert worker.returncode != 0
    assert line in worker.stderr and "Traceback" not in worker.stderr
    # And once upgraded, all of it is content
    assert _cli("db", "upgrade", env=env).returncode == 0
    assert _cli("db", "check", env=env).returncode == 0
    current = _cli("db", "current", env=env)
    assert current.stdout.strip() == f"{migrations.head()} (head)"
    assert _cli("runs", env=env).returncode == 0
