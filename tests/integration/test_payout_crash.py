"""A payout run for 1,000 vendors through real workers, SIGKILLed three times mid-run, paying
through the HTTP adapter to a local gateway: afterwards each vendor was paid exactly once with
the right amount, and the ledger balances to the cent."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from bgjobs import db, payouts
from bgjobs.families import trigger
from bgjobs.payouts import _models as payout_tables
from tests.support.receivers import PaymentGatewayServer, payment_gateway
from tests.support.workers import WorkerProcess, use_environment, wait_for

VENDORS = 1_000
W23 = datetime(2025, 6, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def gateway() -> Iterator[PaymentGatewayServer]:
    with payment_gateway() as g:
        yield g


def test_sigkilled_workers_pay_each_vendor_exactly_once_and_the_ledger_balances(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gateway: PaymentGatewayServer
) -> None:
    env = {
        "BGJOBS_BROKER_URL": redis_url,
        "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'payouts.db'}",
        "BGJOBS_PAYMENT": "http",
        "BGJOBS_HTTP_PAYMENT__URL": gateway.url,
        "BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS": "2000",
        "BGJOBS_WORKER__MAINTENANCE_INTERVAL_MS": "500",
        "BGJOBS_RETRIES__MIN_BACKOFF_MS": "100",
        "BGJOBS_METRICS__ENABLED": "false",
    }
    use_environment(monkeypatch, env)

    # Given 1,000 vendors with one to three sales each (some below the minimum), and a clawback
    rng = random.Random(23)
    expected: dict[str, int] = {}
    gross_total = 0
    for v in range(VENDORS):
        vendor = f"vendor-{v:04d}"
        share = 0
        for n in range(rng.randint(1, 3)):
            cents = rng.randint(1_000, 50_000)
            when = W23 + timedelta(minutes=n)
            gross = Decimal(cents).scaleb(-2)
            entry = payouts.record_earning(vendor, gross, "USD", source_id=f"{vendor}-b{n}", occurred_at=when)
            share += entry.vendor_minor
            gross_total += cents
        if v % 50 == 0:
            payouts.record_adjustment(vendor, "-5.00", "USD", source_id=f"{vendor}-claw", occurred_at=W23)
            share -= 500
            gross_total -= 500
        if share >= 5_000:
            expected[vendor] = share
    assert 0 < VENDORS - len(expected) < VENDORS  # some carry forward

    trigger("payouts.weekly", period="2025-W23")
    gateway.script.extend(["sleep:0.005"] * 4000)  # a provider taking a few ms per call
    kills = []
    for fraction in (0.2, 0.5, 0.8):
        worker = WorkerProcess(env, processes=2, threads=4).start()
        try:
            wait_for(lambda f=fraction: len(gateway.payouts) >= f * len(expected), timeout=180,
                     what=f"{fraction:.0%} of the payouts", interval=0.01)  # fmt: skip
        finally:
            worker.kill()
        kills.append(len(gateway.payouts))
    assert kills[-1] < len(expected), "the run finished before the last kill"

    worker = WorkerProcess(env, processes=2, threads=4).start()
    try:
        wait_for(lambda: [p.status for p in all_payouts()] == ["paid"] * len(expected), timeout=180,
                 what="every payout to be recorded")  # fmt: skip
    finally:
        worker.stop()

    # Each vendor was paid exactly once, with exactly their share
    assert gateway.paid() == Counter(dict.fromkeys(expected, 1))
    paid = {p["payee_id"]: int(Decimal(p["amount"]).scaleb(2)) for p in gateway.payouts.values()}
    assert paid == expected
    # The ledger balances: paid + carried + the platform's share == every gross amount
    with db.session() as s:
        platform = s.exec(select(func.sum(payout_tables.LedgerEntry.platform_minor))).one()
        recorded_paid = s.exec(select(func.sum(payout_tables.Payout.amount_minor))).one()
    carried = sum(m.minor_units for m in payouts.balances().values())
    assert recorded_paid == sum(expected.values())
    assert recorded_paid + carried + platform == gross_total
    run = payouts.report("weekly:2025-W23")
    assert (run["paid"], run["pending"], run["failed"]) == (len(expected), 0, 0)
    print(f"kills after {kills} payouts; {gateway.replays} calls answered from the gateway's key store")


def all_payouts() -> list[payout_tables.Payout]:
    with db.session() as s:
        return list(s.exec(select(payout_tables.Payout)))
