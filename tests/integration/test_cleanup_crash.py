"""Real workers SIGKILLed at random points while archiving: afterwards every row is in exactly one of
the source and the archive, and every old row is archived."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, text

from bgjobs import db
from bgjobs.families import trigger
from tests.support.cleanup_policies import HostEvent
from tests.support.workers import WorkerProcess, use_environment, wait_for

OLD, RECENT = 60_000, 10_000


def ids(table: str) -> set[int]:
    with db.read() as conn:
        exists = conn.execute(text("SELECT name FROM sqlite_master WHERE name = :t"), {"t": table}).first()
        found = conn.execute(text(f"SELECT id FROM {table}")) if exists else []  # noqa: S608 - a fixed name
        return {r[0] for r in found}


def archived() -> int:
    """How many rows the archive holds (cheap enough to poll between batches)."""
    with db.read() as conn:
        exists = conn.execute(
            text("SELECT name FROM sqlite_master WHERE name = 'host_events_archive'")
        ).first()
        return (
            int(conn.execute(text("SELECT count(*) FROM host_events_archive")).scalar_one()) if exists else 0
        )


def test_killed_workers_never_lose_or_duplicate_an_archived_row(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "BGJOBS_BROKER_URL": redis_url,
        "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'host.db'}",
        "BGJOBS_JOBS": '["tests.support.cleanup_policies"]',
        "BGJOBS_CLEANUP__BATCH_SIZE": "100",  # many short batches, so the kills land mid-run
        # a killed run's job lock expires with its time limit; keep it short so the retry starts soon
        "BGJOBS_CLEANUP__TIME_LIMIT_MS": "15000",
        "BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS": "2000",
        "BGJOBS_WORKER__MAINTENANCE_INTERVAL_MS": "500",
        "BGJOBS_METRICS__ENABLED": "false",
    }
    use_environment(monkeypatch, env)
    engine = db.get_engine()
    HostEvent.metadata.create_all(engine, tables=[HostEvent.__table__])  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    rows = [{"id": n, "kind": "click", "happened_at": now - timedelta(days=90 if n <= OLD else 1)}
            for n in range(1, OLD + RECENT + 1)]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(HostEvent.__table__), rows)  # type: ignore[attr-defined]
    everything = ids("host_events")

    trigger("cleanup.daily", policy="host-events")
    rng = random.Random(8)
    kills = []
    for _ in range(3):
        target = archived() + rng.randint(3_000, 12_000)
        worker = WorkerProcess(env, processes=1, threads=2).start()
        try:
            wait_for(lambda t=target: archived() >= t, timeout=120, interval=0.005,
                     what="more rows to be archived")  # fmt: skip
        finally:
            worker.kill()
        kills.append(archived())
        # After every kill: each row is in exactly one place
        source, archive = ids("host_events"), ids("host_events_archive")
        assert not source & archive and source | archive == everything
    assert kills[-1] < OLD, "the archive finished before the last kill"

    worker = WorkerProcess(env, processes=1, threads=2).start()
    try:
        wait_for(lambda: archived() == OLD, timeout=180, what="every old row archived")
    finally:
        worker.stop()
    source, archive = ids("host_events"), ids("host_events_archive")
    assert archive == set(range(1, OLD + 1)) and source == set(range(OLD + 1, OLD + RECENT + 1))
    print(f"killed after {kills} rows archived")
