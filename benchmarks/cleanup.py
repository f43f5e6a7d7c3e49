"""Cleanup at scale: 1,000,000 eligible rows (and 1,000,000 that must stay), SQLite and PostgreSQL.

Each run is a fresh child process on a freshly loaded table:

- bgjobs archive: the policy in batches of 5,000, each one transaction (copy to the archive, delete);
- bgjobs delete: the same without the archive;
- batched: the loop a team writes by hand, ``DELETE ... WHERE id IN (SELECT id ... LIMIT 5000)``
  until nothing is left, each one transaction;
- naive: one ``DELETE ... WHERE`` for everything.

Reported: rows/s, the longest single transaction (ms), peak RSS, and bgjobs delete's rate against
the batched loop's. Goals: longest transaction under 250 ms at the default batch size, memory flat
in the row count, at least 0.8x the batched loop.

    python benchmarks/cleanup.py [--rows 1000000] [--db sqlite,postgresql]
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlmodel import Field, SQLModel  # noqa: E402

from benchmarks.common import child, database, peak_rss_mb, phased_parser  # noqa: E402


class BenchEvent(SQLModel, table=True):
    __tablename__ = "bench_events"

    id: int | None = Field(default=None, primary_key=True)
    kind: str
    payload: str
    happened_at: datetime


def load(url: str, rows: int) -> None:
    from sqlalchemy import insert, text

    from bgjobs import db

    engine = db.engine_for(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_events_archive"))
        conn.execute(text("DROP TABLE IF EXISTS bench_events"))
    SQLModel.metadata.create_all(engine, tables=[BenchEvent.__table__])  # type: ignore[attr-defined]
    now, batch = datetime.now(UTC), []
    with engine.begin() as conn:
        for n in range(1, 2 * rows + 1):
            batch.append({"id": n, "kind": "click", "payload": "x" * 40,
                          "happened_at": now - timedelta(days=400 if n % 2 else 1)})  # fmt: skip
            if len(batch) == 10_000 or n == 2 * rows:
                conn.execute(insert(BenchEvent.__table__), batch)  # type: ignore[attr-defined]
                batch = []
    if engine.dialect.name == "sqlite":
        # Checkpoint the loader's write-ahead log now, or the measured run's first commit does it.
        raw = engine.raw_connection()  # outside any transaction, which a checkpoint needs
        try:
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        finally:
            raw.close()
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE bench_events")


def phase(kind: str, url: str) -> dict[str, float]:
    os.environ.update({"BGJOBS_DATABASE_URL": url, "BGJOBS_BROKER_URL": "stub://"})
    from sqlalchemy import text

    from bgjobs import db
    from bgjobs.cleanup import register_policy, run_policy

    start = time.perf_counter()
    if kind == "batched":
        cutoff, rows, longest = (datetime.now(UTC) - timedelta(days=365)).replace(tzinfo=None), 0, 0.0
        engine = db.engine_for(url)
        while True:
            t0 = time.perf_counter()
            with engine.begin() as conn:
                n = conn.execute(text("DELETE FROM bench_events WHERE id IN (SELECT id FROM bench_events "
                                      "WHERE happened_at < :c ORDER BY id LIMIT 5000)"),
                                 {"c": cutoff}).rowcount  # fmt: skip
            longest = max(longest, (time.perf_counter() - t0) * 1000)
            rows += n
            if not n:
                break
    elif kind == "naive":
        cutoff = datetime.now(UTC) - timedelta(days=365)
        t0 = time.perf_counter()
        with db.engine_for(url).begin() as conn:
            rows = conn.execute(text("DELETE FROM bench_events WHERE happened_at < :c"),
                                {"c": cutoff.replace(tzinfo=None)}).rowcount  # fmt: skip
        longest = (time.perf_counter() - t0) * 1000
    else:
        action = "archive" if kind == "archive" else "delete"
        policy = register_policy(
            "bench", "bench_events", column="happened_at", older_than="365d", action=action
        )
        report = run_policy(policy, batch_size=5_000)
        rows, longest = report["rows"], report["longest_transaction_ms"]
    return {
        "seconds": time.perf_counter() - start,
        "rows": rows,
        "longest_ms": longest,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = phased_parser(__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args, _ = parser.parse_known_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.url)))
        return
    print(f"cleanup: {args.rows:,} eligible rows beside {args.rows:,} that stay")
    for kind in args.db.split(","):
        with database(kind, "cleanup") as url:
            print(f"  {kind}")
            rates = {}
            for phase_name in ("archive", "delete", "batched", "naive"):
                load(url, args.rows)
                got = child(__file__, "--phase", phase_name, "--url", url)
                assert got["rows"] == args.rows, got
                rates[phase_name] = got["rows"] / got["seconds"]
                label = {"archive": "bgjobs archive, batches of 5,000",
                         "delete": "bgjobs delete, batches of 5,000",
                         "batched": "hand-written batched DELETE loop",
                         "naive": "one DELETE ... WHERE"}[phase_name]  # fmt: skip
                print(f"    {label:34} {rates[phase_name]:9.0f} rows/s  longest transaction "
                      f"{got['longest_ms']:8.0f} ms  peak RSS {got['peak_rss_mb']:4.0f} MB")  # fmt: skip
            print(f"    bgjobs delete against the batched loop: {rates['delete'] / rates['batched']:.2f}x")


if __name__ == "__main__":
    main()
