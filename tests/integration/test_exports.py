"""Exports on SQLite and PostgreSQL to real files (the local storage adapter), read back with the
standard csv and json readers and compared with the source rows."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bgjobs import cli, exports, payouts, wiring
from bgjobs.adapters.localfs import LocalFileStorage
from bgjobs.errors import InvalidPayload
from bgjobs.settings import ActorSettings
from bgjobs.testing import JobsHarness
from tests.support import export_datasets
from tests.support.export_datasets import COLUMNS, TRICKY

Start = Callable[..., JobsHarness]
ANN = {"user_id": "u1", "email": "ann@example.com"}


@pytest.fixture
def files(tmp_path: Path) -> LocalFileStorage:
    return LocalFileStorage(tmp_path / "storage")


@pytest.fixture
def jobs(harness: Start, files: LocalFileStorage) -> JobsHarness:
    jobs = harness()
    wiring.configure(storage=files)
    assert "tricky" in exports.registered_datasets(), export_datasets.__name__
    return jobs


def read(files: LocalFileStorage, export_id: str) -> bytes:
    info = exports.get(export_id)
    data = files.path(info.storage_key).read_bytes()
    assert hashlib.sha256(data).hexdigest() == info.sha256 and len(data) == info.size
    return data


def expected_cell(value: Any) -> str:
    """What a CSV cell must read back as: exact text, formulas neutralised."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    text = format(value, "f") if isinstance(value, Decimal) else str(value)
    return "'" + text if text.startswith(("=", "+", "-", "@")) and not _number(text) else text


def _number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True


@pytest.mark.parametrize("limit", [0, 1, len(TRICKY)])
def test_csv_round_trips_through_the_standard_reader(
    jobs: JobsHarness, files: LocalFileStorage, limit: int
) -> None:
    export_id = exports.request("tricky", fmt="csv", filters={"limit": limit}, requested_by=ANN)
    jobs.drain()

    info = exports.get(export_id)
    assert (info.status, info.rows) == ("done", limit)
    raw = read(files, export_id)
    assert raw.startswith(b"id,text,amount,at\r\n")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert rows[0] == list(COLUMNS)
    assert rows[1:] == [[expected_cell(r[c]) for c in COLUMNS] for r in TRICKY[:limit]]
    # decimals are exact, positional (a sheet reads "1E-9" as text); datetimes keep their offset
    assert not any("E" in row[2] for row in rows[1:])
    for row, source in zip(rows[1:], TRICKY[:limit], strict=True):
        if source["amount"] is not None:
            assert Decimal(row[2]) == source["amount"]
        if source["at"] is not None:
            assert datetime.fromisoformat(row[3]) == source["at"]
    (mail,) = jobs.mailer.sent
    assert mail.to == ("ann@example.com",) and "tricky" in mail.subject and info.url in mail.text


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_json_round_trips_through_the_standard_reader(
    jobs: JobsHarness, files: LocalFileStorage, fmt: str
) -> None:
    export_id = exports.request("tricky", fmt=fmt)
    jobs.drain()
    text = read(files, export_id).decode("utf-8")
    rows = [json.loads(line) for line in text.splitlines()] if fmt == "jsonl" else json.loads(text)
    assert [list(r) for r in rows] == [list(COLUMNS)] * len(TRICKY)
    for row, source in zip(rows, TRICKY, strict=True):
        assert row["text"] == source["text"]  # no formula guard in JSON: it is data, not a sheet
        assert (Decimal(row["amount"]) if row["amount"] is not None else None) == source["amount"]
        assert "E" not in (row["amount"] or "")
        assert (datetime.fromisoformat(row["at"]) if row["at"] else None) == source["at"]


def test_an_empty_json_export_is_an_empty_array(jobs: JobsHarness, files: LocalFileStorage) -> None:
    export_id = exports.request("tricky", fmt="json", filters={"limit": 0})
    jobs.drain()
    assert json.loads(read(files, export_id)) == []


def test_a_query_is_streamed_from_the_database(jobs: JobsHarness, files: LocalFileStorage) -> None:
    when = datetime(2025, 6, 2, 9, 30, tzinfo=UTC)
    for n in range(2_500):
        payouts.record_earning(f"v{n % 3}", Decimal("10.00"), "USD", source_id=f"b{n}", occurred_at=when)
    export_id = exports.request("ledger", fmt="csv", filters={"vendor": "v1"}, gzip=True)
    jobs.drain()

    info = exports.get(export_id)
    assert info.storage_key.endswith(".csv.gz") and info.rows == 833
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(read(files, export_id)).decode())))
    assert len(rows) == 833 and {r["vendor_id"] for r in rows} == {"v1"}
    assert all(datetime.fromisoformat(r["occurred_at"]) == when for r in rows)


def test_the_same_key_returns_the_same_export(jobs: JobsHarness) -> None:
    first = exports.request("tricky", key="monthly-invoices-2025-06")
    second = exports.request("tricky", key="monthly-invoices-2025-06")
    jobs.drain()
    assert first == second and len(exports.exports()) == 1


def test_a_failing_dataset_records_the_error_and_tells_the_requester(jobs: JobsHarness) -> None:
    export_id = exports.request("broken", requested_by=ANN)
    jobs.drain()
    info = exports.get(export_id)
    assert info.status == "failed" and info.error == "PermanentError: the source table is gone"
    (mail,) = jobs.mailer.sent
    assert "failed" in mail.subject and "the source table is gone" in mail.text
    assert len(jobs.dead_letters) == 1


def test_an_export_past_its_time_budget_fails_saying_so(harness: Start, files: LocalFileStorage) -> None:
    # a 31 s time limit leaves a 1 s budget (30 s are kept for recording the outcome)
    jobs = harness(actors={"exports.run": ActorSettings(time_limit_ms=31_000)})
    wiring.configure(storage=files)
    export_id = exports.request("counted", filters={"rows": 5_000, "pause": 0.3})
    jobs.drain(timeout_ms=30_000)
    info = exports.get(export_id)
    assert info.status == "failed" and "ran past its time budget of 1 s" in (info.error or "")
    assert list(files.root.rglob("*.csv")) == []


def test_bad_requests_are_refused_naming_the_field(jobs: JobsHarness) -> None:
    for call, message in (
        (lambda: exports.request("nope"), "dataset: unknown dataset 'nope'"),
        (lambda: exports.request("tricky", fmt="xlsx"), "fmt: 'xlsx'"),
        (lambda: exports.request("tricky", filters={"drop": 1}), "filters: drop not accepted by tricky"),
        (lambda: exports.request("tricky", requested_by={"user_id": "u", "email": "nope"}), "email"),
        (lambda: exports.get("exp_missing"), "export: no export 'exp_missing'"),
    ):
        with pytest.raises(InvalidPayload, match=message):
            call()


def test_a_storage_key_never_leaves_the_prefix(jobs: JobsHarness, files: LocalFileStorage) -> None:
    export_id = exports.request("../../escape", period="../../../etc")
    jobs.drain()
    info = exports.get(export_id)
    assert info.status == "done"
    assert info.storage_key.startswith("exports/") and ".." not in info.storage_key.split("/")
    assert files.path(info.storage_key).is_relative_to(files.root / "exports")


def test_the_cli_lists_and_shows_exports(jobs: JobsHarness, capsys: pytest.CaptureFixture[str]) -> None:
    export_id = exports.request("tricky")
    jobs.drain()
    assert cli.main(["exports", "list"]) == 0
    listed = capsys.readouterr().out
    assert export_id in listed and "done" in listed
    assert cli.main(["exports", "show", export_id]) == 0
    shown = capsys.readouterr().out
    assert exports.get(export_id).sha256 in shown and f"rows: {len(TRICKY)}" in shown


PACED: list[str] = []
_paced_runs = itertools.count()
#: Set when bob's export starts; each of ann's waits for it (up to 10 s) and notes whether it came.
BOB_STARTED = threading.Event()
ANN_SAW_BOB: list[bool] = []


def _paced(*, period: str | None, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Writes when it starts and ends, as ``tests.support.peaks`` reads them, keyed by ``who``."""
    n = next(_paced_runs)
    PACED.append(f"capped {filters['who']} start {time.time()} {os.getpid()} {n}")
    if filters["who"] == "bob":
        BOB_STARTED.set()
    else:
        ANN_SAW_BOB.append(BOB_STARTED.wait(timeout=10))
    PACED.append(f"capped {filters['who']} end {time.time()} {os.getpid()} {n}")
    return [{"n": n}]


exports.register_dataset("paced", _paced, columns=("n",), filters=("who",))


def test_an_operator_caps_each_requester_s_exports_at_once_and_the_others_run_beside_them(
    harness: Start, files: LocalFileStorage
) -> None:
    from bgjobs.keying import keyed_of
    from bgjobs.settings import KeyLimitSettings
    from tests.support.peaks import peak_per_key

    PACED.clear()
    BOB_STARTED.clear()
    ANN_SAW_BOB.clear()
    jobs = harness(key_limits={"exports.run": KeyLimitSettings(limit=1)})
    wiring.configure(storage=files)
    # Given one requester's four exports and then another's one, while the worker is paused
    jobs.worker.pause()
    ann = [exports.request("paced", filters={"who": "ann"}, requested_by=ANN) for _ in range(4)]
    bob = exports.request("paced", filters={"who": "bob"}, requested_by={"user_id": "u2", "email": "b@x.org"})
    states = {s.key: (s.running, s.waiting) for s in keyed_of(jobs.broker).states("exports.run")}
    assert states == {"u1": (1, 3), "u2": (1, 0)}
    jobs.worker.resume()
    jobs.drain()
    # Then each ran at most one at a time, and the second requester did not wait for the first's four:
    # ann's first export waits for bob's to start, which it would wait out in vain were bob queued
    # behind her (each of ann's would then give up after 10 s and note it)
    assert [exports.get(i).status for i in [*ann, bob]] == ["done"] * 5
    assert peak_per_key(PACED) == {"ann": 1, "bob": 1}
    assert ANN_SAW_BOB == [True] * 4
