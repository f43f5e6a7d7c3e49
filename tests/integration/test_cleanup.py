"""Retention policies on SQLite and PostgreSQL against a host's own tables, and log compression."""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, text
from sqlmodel import Field, SQLModel, select

from bgjobs import cleanup, cli, db, runs
from bgjobs.errors import ConfigurationError
from bgjobs.families import trigger
from bgjobs.testing import JobsHarness

Start = Callable[..., JobsHarness]
NOW = datetime.now(UTC)


class Booking(SQLModel, table=True):
    __tablename__ = "shop_bookings"

    id: int | None = Field(default=None, primary_key=True)
    status: str
    is_test: bool = False
    completed_at: datetime


class UserSession(SQLModel, table=True):
    __tablename__ = "shop_sessions"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime


@pytest.fixture
def shop(harness: Start) -> Iterator[JobsHarness]:
    jobs = harness()
    engine = db.get_engine()
    SQLModel.metadata.create_all(engine, tables=[Booking.__table__, UserSession.__table__])  # type: ignore[attr-defined]
    with db.session() as s:
        for n in range(120):
            age = timedelta(days=400 if n % 2 else 10)
            s.add(Booking(status="completed" if n % 3 else "cancelled", is_test=n % 10 == 0,
                          completed_at=NOW - age))  # fmt: skip
        for n in range(50):
            s.add(UserSession(created_at=NOW - timedelta(days=45 if n < 30 else 1)))
    yield jobs
    cleanup.reset()
    with engine.begin() as conn:
        for name in ("shop_bookings_archive", "shop_bookings", "shop_sessions"):
            conn.execute(text(f"DROP TABLE IF EXISTS {name}"))


def count(model: Any, *where: Any) -> int:
    with db.session() as s:
        return int(s.exec(select(func.count()).select_from(model).where(*where)).one())


def test_archive_moves_completed_bookings_older_than_a_year_in_batches(shop: JobsHarness) -> None:
    year_ago = NOW - timedelta(days=365)
    old_completed = count(Booking, Booking.status == "completed", Booking.completed_at < year_ago)  # type: ignore[operator]
    before = {b.id for b in all_rows(Booking)}
    policy = cleanup.register_policy("bookings", Booking, column="completed_at", older_than="365d",
                                     action="archive", where={"status": "completed"})  # fmt: skip

    dry = cleanup.run_policy(policy, dry_run=True, batch_size=7)
    assert (dry["status"], dry["rows"]) == ("dry-run", old_completed)
    assert {b.id for b in all_rows(Booking)} == before  # nothing changed

    done = cleanup.run_policy(policy, batch_size=7)
    assert (done["status"], done["rows"], done["batches"]) == ("done", old_completed, -(-old_completed // 7))
    with db.read() as conn:
        archived = {r[0] for r in conn.execute(text("SELECT id FROM shop_bookings_archive"))}
    remaining = {b.id for b in all_rows(Booking)}
    assert archived | remaining == before and not archived & remaining
    assert len(archived) == old_completed
    assert cleanup.run_policy(policy, batch_size=7)["rows"] == 0


def all_rows(model: Any) -> list[Any]:
    with db.session() as s:
        return list(s.exec(select(model)))


def test_delete_and_test_data_policies(shop: JobsHarness) -> None:
    cleanup.register_policy("sessions", UserSession, column="created_at", older_than="30d")
    cleanup.register_policy("test-bookings", Booking, column="completed_at", older_than="1d",
                            where={"is_test": True})  # fmt: skip
    report = cleanup.run_cleanup()
    assert report["tasks"]["sessions"]["rows"] == 30 and count(UserSession) == 20
    assert report["tasks"]["test-bookings"]["rows"] == 12 and count(Booking, Booking.is_test) == 0  # type: ignore[arg-type]


def test_export_then_delete_writes_each_batch_before_deleting_it(shop: JobsHarness) -> None:
    cleanup.register_policy("sessions", UserSession, column="created_at", older_than="30d",
                            action="export-then-delete")  # fmt: skip
    done = cleanup.run_policy(_named("sessions"), batch_size=12)
    assert done["rows"] == 30 and done["batches"] == 3
    files = sorted(k for k in shop.storage.objects if k.startswith("cleanup/sessions/"))
    assert len(files) == 3
    exported = [line for k in files for line in shop.storage.objects[k].decode().splitlines()[1:]]
    assert len(exported) == 30 and count(UserSession) == 20


def _named(name: str) -> cleanup.Policy:
    return next(p for p in cleanup.policies() if p.name == name)


def test_a_policy_without_an_age_or_under_the_floor_is_refused(shop: JobsHarness) -> None:
    cases = ((None, "give an age like 365d"), ("12h", "under the floor of 1 day"), ("soon", "give an age"))
    for age, message in cases:
        with pytest.raises(ConfigurationError, match=message):
            cleanup.register_policy("careless", UserSession, column="created_at", older_than=age)
    with pytest.raises(ConfigurationError, match="has no column 'made_at'"):
        cleanup.run_policy(cleanup.register_policy("typo", UserSession, column="made_at", older_than="30d"))


def test_bgjobs_own_logs_have_default_policies(shop: JobsHarness) -> None:
    old = NOW - timedelta(days=100)
    run = runs.start("tests.old", "manual")
    runs.finish(run, "succeeded")
    with db.session() as s:
        s.execute(text("UPDATE bgjobs_runs SET started_at = :old"), {"old": old})
    names = [p.name for p in cleanup.policies()]
    assert {"bgjobs.runs", "bgjobs.notifications", "bgjobs.webhook_attempts", "bgjobs.outbox",
            "bgjobs.idempotency"} <= set(names)  # fmt: skip
    assert cleanup.run_cleanup(policy="bgjobs.runs")["tasks"]["bgjobs.runs"]["rows"] == 1


def test_the_scheduled_job_and_the_cli_report_per_policy(
    shop: JobsHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    cleanup.register_policy("sessions", UserSession, column="created_at", older_than="30d")
    assert cli.main(["cleanup", "run", "--policy", "sessions", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sessions" in out and "would delete" in out and " 30 " in out and count(UserSession) == 50
    trigger("cleanup.daily")
    shop.drain()
    report = runs.recent(job="cleanup.daily")[0].figures
    assert report["tasks"]["sessions"]["rows"] == 30 and report["status"] == "done"


def test_old_logs_are_compressed_never_half_written(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    old, new = logs / "app-2025-01-01.log", logs / "app-today.log"
    old.write_text("GET /health 200\n" * 10_000)
    new.write_text("fresh\n")
    (logs / ".app-older.log.abc.gz.part").write_bytes(b"half")  # left by a killed run
    past = time.time() - 100 * 86_400
    os.utime(old, (past, past))

    report = cleanup.compress_logs([str(logs)], pattern="*.log", older_than_days=90)

    assert report["files"] == 1 and report["bytes_saved"] > 100_000
    assert not old.exists() and new.exists()
    assert gzip.decompress((logs / "app-2025-01-01.log.gz").read_bytes()) == b"GET /health 200\n" * 10_000
    assert sorted(p.name for p in logs.iterdir()) == ["app-2025-01-01.log.gz", "app-today.log"]
