"""Bad input is refused where it enters, naming the field: never a raw database error or a worker failure."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import func, select

from bgjobs import db, exports, outbox, payouts
from bgjobs.cleanup._policies import parse_age
from bgjobs.errors import ConfigurationError, InvalidPayload
from bgjobs.exports._models import ExportRecord
from bgjobs.jobs import trigger
from bgjobs.outbox import OutboxRow
from bgjobs.payouts import _models as payout_tables
from bgjobs.payouts.actors import record_entry
from bgjobs.settings import Settings, WorkerSettings
from bgjobs.testing import JobsHarness, stub_jobs
from bgjobs.worker import _boot

WHEN = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[JobsHarness]:
    url = f"sqlite:///{tmp_path / 'checks.db'}"
    db.upgrade(db.engine_for(url))
    settings = Settings(broker_url="stub://", database_url=url, worker=WorkerSettings(max_message_bytes=4096))
    with stub_jobs(settings=settings) as h:
        yield h


def _count(model: type) -> int:
    with db.session() as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


def test_an_amount_beyond_what_bgjobs_stores_is_refused_naming_the_field(jobs: JobsHarness) -> None:
    with pytest.raises(InvalidPayload, match=r"gross: .*1E\+30 USD is too large"):
        payouts.record_earning("v1", Decimal("1e30"), "USD", source_id="b1", occurred_at=WHEN)
    with pytest.raises(InvalidPayload, match=r"amount: .*too large"):
        payouts.record_adjustment("v1", "-99999999999999999", "JPY", source_id="c1", occurred_at=WHEN)
    assert _count(payout_tables.LedgerEntry) == 0


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"amount": "-5"}, "gross: an earning must be positive"),
        ({"currency": "usd"}, "unknown currency 'usd'"),
        ({"amount": "1.234"}, "1.234 has 3 decimals; USD allows 2"),
        ({"kind": "adjustment", "amount": "0"}, "amount: an adjustment cannot be zero"),
        ({"source_id": ""}, "source_id: 1 to 200 characters"),
    ],
)  # fmt: skip
def test_a_ledger_write_through_the_outbox_is_checked_when_it_is_deferred(
    jobs: JobsHarness, payload: dict[str, str], message: str
) -> None:
    write = {"kind": "earning", "vendor_id": "v1", "amount": "10.00", "currency": "USD", "source_id": "b1",
             "occurred_at": WHEN.isoformat(), **payload}  # fmt: skip
    with pytest.raises(InvalidPayload, match=message), db.session() as s:
        outbox.defer(s, record_entry, write)
    with pytest.raises(InvalidPayload, match=message):
        record_entry.send(write)
    assert _count(OutboxRow) == 0
    assert jobs.broker.queues["payouts"].qsize() == 0


@pytest.mark.parametrize(
    ("job", "args", "message"),
    [
        ("payouts.weekly", {"period": "2025-W60"}, "period: '2025-W60' is not an ISO week"),
        ("payouts.monthly", {"period": "2025-13"}, "period: '2025-13' is not a month"),
        ("payouts.settlement", {"day": "2025-02-30"}, "day: '2025-02-30' is not a day"),
    ],
)  # fmt: skip
def test_a_trigger_with_an_argument_the_job_cannot_read_is_refused_before_it_is_sent(
    jobs: JobsHarness, job: str, args: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidPayload, match=message):
        trigger(job, **args)
    assert jobs.broker.queues["payouts"].qsize() == 0


def test_an_export_of_a_period_its_dataset_cannot_read_is_refused_at_request(jobs: JobsHarness) -> None:
    with pytest.raises(InvalidPayload, match="period: '2025-13' is not a day"):
        exports.request("payouts.settlement", period="2025-13")
    assert _count(ExportRecord) == 0


def test_an_age_too_long_for_a_timedelta_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"cleanup policy p: older_than='99999999999d' is too long"):
        parse_age("99999999999d", name="p")


def test_a_bad_age_in_settings_policies_stops_the_worker_at_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGJOBS_CLEANUP__POLICIES", '[{"name": "old", "table": "t", "column": "c", '
                                                   '"older_than": "ninety days"}]')  # fmt: skip
    with pytest.raises(ConfigurationError, match="cleanup policy old: older_than='ninety days'"):
        _boot(Settings(broker_url="stub://"))


def test_a_message_above_the_size_limit_is_refused_at_send(jobs: JobsHarness) -> None:
    big = {"kind": "earning", "vendor_id": "v1", "amount": "10.00", "currency": "USD", "source_id": "b1",
           "occurred_at": WHEN.isoformat(), "description": "x" * 5000}  # fmt: skip
    with pytest.raises(InvalidPayload, match=r"payouts.record: the message is \d+ bytes, more than 4096"):
        record_entry.send(big)
    with pytest.raises(InvalidPayload, match="more than 4096"), db.session() as s:
        outbox.defer(s, record_entry, big)
    assert jobs.broker.queues["payouts"].qsize() == 0
    assert _count(OutboxRow) == 0
