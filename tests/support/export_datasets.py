"""Datasets the export tests register, in the test process and (through BGJOBS_JOBS) in real workers."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from sqlmodel import col, select

from bgjobs.errors import PermanentError
from bgjobs.exports import register_dataset
from bgjobs.payouts._models import LedgerEntry

#: Cells that break naive writers: separators, quotes, line breaks, unicode, formula prefixes.
TRICKY: list[dict[str, Any]] = [
    {"id": 1, "text": "plain", "amount": Decimal("10.50"), "at": datetime(2025, 6, 1, 12, 0, tzinfo=UTC)},
    {"id": 2, "text": 'comma, "quotes" and\nnewline\r\nCRLF', "amount": Decimal("-0.01"),
     "at": datetime(2025, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))},
    {"id": 3, "text": "Ünïcödé ✓ 日本語 🎉", "amount": Decimal("123456789012345.6789"), "at": None},
    {"id": 4, "text": "=SUM(A1:A9)", "amount": Decimal("0"),
     "at": datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)},
    {"id": 5, "text": "+1 555", "amount": None,
     "at": datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=-8)))},
    {"id": 6, "text": "-2+3", "amount": Decimal("1E+3"), "at": None},
    {"id": 7, "text": "@cmd", "amount": Decimal("7"), "at": None},
    {"id": 8, "text": "", "amount": Decimal("0.000"), "at": None},
    {"id": 9, "text": "a nano-unit", "amount": Decimal("0.000000001"), "at": None},
]  # fmt: skip
COLUMNS = ("id", "text", "amount", "at")


def tricky(*, period: str | None, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
    limit = int(filters.get("limit", len(TRICKY)))
    return TRICKY[:limit]


def ledger(*, period: str | None, filters: Mapping[str, Any]) -> Any:
    """A real query, streamed with a server-side cursor."""
    query = select(LedgerEntry.id, LedgerEntry.vendor_id, LedgerEntry.gross_minor, LedgerEntry.occurred_at)
    if "vendor" in filters:
        query = query.where(LedgerEntry.vendor_id == filters["vendor"])
    return query.order_by(col(LedgerEntry.id))


def counted(*, period: str | None, filters: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """``rows`` rows, pausing ``pause`` seconds every 1,000 (so a test can kill a worker mid-export)."""
    pause = float(filters.get("pause", 0))
    for n in range(int(filters["rows"])):
        if pause and n % 1000 == 0:
            time.sleep(pause)
        yield {"n": n, "label": f"row {n}", "amount": Decimal(n).scaleb(-2)}


def broken(*, period: str | None, filters: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    yield {"n": 1}
    raise PermanentError("the source table is gone")


register_dataset("tricky", tricky, columns=COLUMNS, filters=("limit",))
register_dataset(
    "ledger", ledger, columns=("id", "vendor_id", "gross_minor", "occurred_at"), filters=("vendor",)
)
register_dataset("counted", counted, columns=("n", "label", "amount"), filters=("rows", "pause"))
register_dataset("broken", broken, columns=("n",))
register_dataset("../../escape", tricky, columns=COLUMNS)


def finish_after_kill(env: dict[str, str], export_id: str, final: Any, rows: int) -> Any:
    """Start a worker again after one was killed mid-export, wait for the redelivered export, and
    check the file under its final name holds every row of ``counted`` with the recorded checksum."""
    import hashlib

    from bgjobs import exports
    from bgjobs.exports._formats import encode
    from tests.support.workers import WorkerProcess, wait_for

    worker = WorkerProcess(env, processes=1, threads=2).start()
    try:
        wait_for(lambda: exports.get(export_id).status == "done", timeout=120, what="the export to finish")
    finally:
        worker.stop()
    info = exports.get(export_id)
    expected = b"".join(encode("csv", counted(period=None, filters={"rows": rows}), ("n", "label", "amount")))
    assert final.read_bytes() == expected
    assert (info.rows, info.size, info.sha256) == (rows, len(expected), hashlib.sha256(expected).hexdigest())
    return info
