"""Exports at scale: 100,000 and 1,000,000 rows from SQLite and PostgreSQL to local storage.

Every run is a fresh child process, so its peak RSS is its own:

- bgjobs: an export of the dataset (a ``select``, streamed with ``yield_per``) as CSV and as
  JSON Lines, through ``LocalFileStorage`` (temporary file, fsync, rename), SHA-256 included;
- baseline: a plain ``csv.writer`` loop over the same query, writing the same file.

Goal: peak RSS at 1M rows within 1.2x of 100k.

    python benchmarks/exports.py [--rows 1000000] [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Numeric  # noqa: E402
from sqlmodel import Field, SQLModel, col, select  # noqa: E402

from benchmarks.common import child, database, peak_rss_mb, phased_parser  # noqa: E402

COLUMNS = ("id", "customer", "amount", "currency", "created_at", "note")


class BenchRow(SQLModel, table=True):
    __tablename__ = "bench_export_rows"

    id: int | None = Field(default=None, primary_key=True)
    customer: str
    amount: Decimal = Field(sa_type=Numeric(12, 2))  # type: ignore[call-overload]
    currency: str
    created_at: datetime
    note: str


def populate(url: str, rows: int) -> float:
    from sqlalchemy import insert

    from bgjobs import db

    engine = db.engine_for(url)
    db.upgrade(engine)
    SQLModel.metadata.create_all(engine, tables=[BenchRow.__table__])  # type: ignore[attr-defined]
    start, base, batch = time.perf_counter(), datetime(2025, 6, 1, tzinfo=UTC), []
    with engine.begin() as conn:
        for i in range(1, rows + 1):
            when = base + timedelta(seconds=i)
            batch.append({"id": i, "customer": f"customer {i % 5000}", "currency": "EUR",
                          "amount": Decimal(i % 100_000).scaleb(-2), "created_at": when,
                          "note": 'a note, with "quotes"' if i % 10 == 0 else "plain"})  # fmt: skip
            if len(batch) == 10_000:
                conn.execute(insert(BenchRow.__table__), batch)  # type: ignore[attr-defined]
                batch = []
        if batch:
            conn.execute(insert(BenchRow.__table__), batch)  # type: ignore[attr-defined]
    return time.perf_counter() - start


def _query(limit: int) -> Any:
    return select(BenchRow).where(col(BenchRow.id) <= limit).order_by(col(BenchRow.id))


def phase(kind: str, url: str, rows: int, out: str) -> dict[str, float]:
    os.environ.update({"BGJOBS_DATABASE_URL": url, "BGJOBS_BROKER_URL": "stub://",
                       "BGJOBS_STORAGE": "localfs", "BGJOBS_LOCALFS__ROOT": out})  # fmt: skip
    from bgjobs import db

    start = time.perf_counter()
    if kind == "baseline":
        import csv

        with db.engine_for(url).connect() as conn, open(Path(out) / "baseline.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for row in conn.execute(_query(rows)):
                writer.writerow(row)
    else:
        from bgjobs.broker import build_broker
        from bgjobs.exports import exports, register_dataset, request
        from bgjobs.exports._handling import run
        from bgjobs.exports._models import ExportJob
        from bgjobs.runtime import set_broker
        from bgjobs.settings import get_settings

        set_broker(build_broker(get_settings()))
        register_dataset("bench", lambda *, period, filters: _query(int(filters["rows"])),
                         columns=COLUMNS, filters=("rows",))  # fmt: skip
        export_id = request("bench", fmt=kind, filters={"rows": rows})
        start = time.perf_counter()
        run(ExportJob(export_id=export_id))
        assert exports()[0].rows == rows
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = phased_parser(__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.url, args.rows, args.out)))
        return
    sizes = (args.rows // 10, args.rows)
    print(f"exports: {sizes[0]:,} and {sizes[1]:,} rows (6 columns) to local storage")
    for kind in args.db.split(","):
        with database(kind, "exports") as url:
            loaded = populate(url, args.rows)
            print(f"  {kind} (table loaded in {loaded:.0f} s)")
            for fmt in ("baseline", "csv", "jsonl"):
                out = tempfile.mkdtemp(prefix="bgjobs-bench-exports-out-")
                got = {n: child(__file__, "--phase", fmt, "--url", url, "--rows", str(n), "--out", out)
                       for n in sizes}  # fmt: skip
                small, large = got[sizes[0]], got[sizes[1]]
                label = "plain csv.writer loop" if fmt == "baseline" else f"bgjobs export, {fmt}"
                print(f"    {label:24} {sizes[0] / small['seconds']:9.0f} rows/s at {sizes[0]:,}, "
                      f"{sizes[1] / large['seconds']:9.0f} rows/s at {sizes[1]:,};  peak RSS "
                      f"{small['peak_rss_mb']:5.0f} MB -> {large['peak_rss_mb']:5.0f} MB "
                      f"({large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
