"""Deferred charges and the balance check, through the HTTP payment adapter to a local gateway, on
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import select

from bgjobs import db, events, exports, outbox, payouts, wiring
from bgjobs.adapters.http import HttpPaymentGateway
from bgjobs.errors import InvalidPayload
from bgjobs.families import trigger
from bgjobs.payouts import _models as payout_tables
from bgjobs.settings import HttpVendorSettings, PayoutSettings
from bgjobs.testing import JobsHarness
from bgjobs.typed import actor
from tests.support.receivers import PaymentGatewayServer, payment_gateway

Start = Callable[..., JobsHarness]


class Seen:
    events: list[tuple[str, dict[str, Any]]] = []


@actor(name="test_payouts.page_paid", queue="default")
def page_paid(event: payouts.ChargeSucceeded) -> None:
    Seen.events.append(("page.paid", event.model_dump(mode="json")))


@actor(name="test_payouts.charge_expired", queue="default")
def charge_expired(event: payouts.ChargeExpired) -> None:
    Seen.events.append(("charge.expired", event.model_dump(mode="json")))


@pytest.fixture
def gateway() -> Iterator[PaymentGatewayServer]:
    Seen.events = []
    events.subscribe("page.paid", page_paid)
    events.subscribe("charge.expired", charge_expired)
    with payment_gateway() as g:
        yield g
    assert events.unsubscribe("page.paid", page_paid) and events.unsubscribe("charge.expired", charge_expired)


def start(harness: Start, gateway: PaymentGatewayServer, **settings: Any) -> JobsHarness:
    jobs = harness(payouts=PayoutSettings(**settings))
    wiring.configure(payment=HttpPaymentGateway(HttpVendorSettings(url=gateway.url)))
    return jobs


def sweep(jobs: JobsHarness) -> dict[str, int]:
    from bgjobs import runs

    trigger("payouts.charges")
    jobs.drain()
    outbox.relay_once()
    jobs.drain()
    return dict(runs.recent(job="payouts.charges")[0].figures)


def charges() -> dict[str, payout_tables.Charge]:
    with db.session() as s:
        return {c.key: c for c in s.exec(select(payout_tables.Charge))}


def test_deferred_charges_are_charged_once_and_announce_their_success(
    harness: Start, gateway: PaymentGatewayServer
) -> None:
    jobs = start(harness, gateway)
    gateway.no_method.add("cust-without-card")
    # Given three charges: two of one customer, one of a customer without a payment method
    payouts.defer_charge("cust-1", Decimal("9.99"), "USD", description="publish page 1", key="page:1",
                         on_success_event="page.paid")  # fmt: skip
    payouts.defer_charge("cust-1", "4.50", "USD", description="publish page 2", key="page:2")
    payouts.defer_charge("cust-without-card", "9.99", "USD", description="publish page 3", key="page:3",
                         on_success_event="page.paid")  # fmt: skip
    again = payouts.defer_charge("cust-1", "9.99", "USD", description="publish page 1", key="page:1")

    # When the sweep runs twice
    first, second = sweep(jobs), sweep(jobs)

    # Then each payable charge was charged once, and announced once
    assert (first, second) == ({"processed": 2, "failed": 0, "skipped": 1, "expired": 0},
                               {"processed": 0, "failed": 0, "skipped": 1, "expired": 0})  # fmt: skip
    assert sorted(c["amount"] for c in gateway.charges.values()) == ["4.50", "9.99"]
    assert {k: c.status for k, c in charges().items()} == {"page:1": "succeeded", "page:2": "succeeded",
                                                           "page:3": "pending"}  # fmt: skip
    assert again.id == charges()["page:1"].id
    assert [(name, e["key"], e["amount"]) for name, e in Seen.events] == [
        ("page.paid", "page:1", {"amount": "9.99", "currency": "USD"})]  # fmt: skip


def test_a_charge_failing_past_its_ttl_expires_with_an_event(
    harness: Start, gateway: PaymentGatewayServer
) -> None:
    jobs = start(harness, gateway, charge_ttl_min=30)
    gateway.no_method.add("cust-2")
    payouts.defer_charge("cust-2", "9.99", "USD", description="publish page 4", key="page:4")
    assert sweep(jobs)["skipped"] == 1
    # Given its first failure was 31 minutes ago
    with db.session() as s:
        then = datetime.now(UTC) - timedelta(minutes=31)
        s.execute(update(payout_tables.Charge).values(first_failed_at=then))

    assert sweep(jobs)["expired"] == 1

    assert charges()["page:4"].status == "expired"
    assert [(name, e["key"]) for name, e in Seen.events] == [("charge.expired", "page:4")]
    assert sweep(jobs) == {"processed": 0, "failed": 0, "skipped": 0, "expired": 0}


def test_with_a_ttl_from_creation_an_old_charge_expires_without_a_gateway_call(
    harness: Start, gateway: PaymentGatewayServer
) -> None:
    jobs = start(harness, gateway, charge_ttl_min=30, charge_ttl_from="created")
    # Given a charge deferred 31 minutes ago that no sweep has tried, and a fresh one
    payouts.defer_charge("cust-1", "9.99", "USD", description="publish page 5", key="page:5")
    payouts.defer_charge("cust-1", "4.50", "USD", description="publish page 6", key="page:6")
    with db.session() as s:
        then = datetime.now(UTC) - timedelta(minutes=31)
        old = update(payout_tables.Charge).where(payout_tables.Charge.key == "page:5")
        s.execute(old.values(created_at=then))
    # When the sweep runs
    assert sweep(jobs) == {"processed": 1, "failed": 0, "skipped": 0, "expired": 1}
    # Then the old one expired uncharged, with its reason and event; the fresh one was charged
    found = charges()
    assert (found["page:5"].status, found["page:5"].attempts) == ("expired", 0)
    assert found["page:5"].last_error == "not charged within 30 minutes of its creation"
    assert [c["description"] for c in gateway.charges.values()] == ["publish page 6"]
    assert [(name, e["key"]) for name, e in Seen.events] == [("charge.expired", "page:5")]


def test_a_one_minute_ttl_reads_one_minute(harness: Start, gateway: PaymentGatewayServer) -> None:
    jobs = start(harness, gateway, charge_ttl_min=1, charge_ttl_from="created")
    payouts.defer_charge("cust-1", "9.99", "USD", description="publish page 5", key="page:5")
    with db.session() as s:
        old = update(payout_tables.Charge).where(payout_tables.Charge.key == "page:5")
        s.execute(old.values(created_at=datetime.now(UTC) - timedelta(minutes=2)))
    assert sweep(jobs)["expired"] == 1
    assert charges()["page:5"].last_error == "not charged within 1 minute of its creation"  # was "1 minutes"


def test_a_failing_charge_expires_at_its_creation_ttl_when_the_ttl_counts_from_creation(
    harness: Start, gateway: PaymentGatewayServer
) -> None:
    jobs = start(harness, gateway, charge_ttl_min=30, charge_ttl_from="created")
    gateway.no_method.add("cust-2")
    payouts.defer_charge("cust-2", "9.99", "USD", description="publish page 7", key="page:7")
    assert sweep(jobs)["skipped"] == 1  # its first failure is now: by first_failure it has 30 minutes
    with db.session() as s:
        then = datetime.now(UTC) - timedelta(minutes=31)
        s.execute(update(payout_tables.Charge).values(created_at=then))
    assert sweep(jobs) == {"processed": 0, "failed": 0, "skipped": 0, "expired": 1}
    assert charges()["page:7"].status == "expired"


def test_the_charges_budget_is_a_setting_and_what_it_leaves_waits_for_the_next_run(
    harness: Start, gateway: PaymentGatewayServer
) -> None:
    jobs = start(harness, gateway, charges_budget_s=2)  # room for a loaded machine to reach the first charge
    for n in range(3):
        payouts.defer_charge(f"cust-{n}", "1.00", "USD", description=f"page {n}", key=f"budget:{n}")
    gateway.script = ["sleep:2.5"]  # the first charge takes longer than the whole budget
    assert sweep(jobs)["processed"] == 1
    assert sweep(jobs)["processed"] == 2
    assert {c.status for c in charges().values()} == {"succeeded"}


def test_bad_charges_are_refused_at_the_call(harness: Start, gateway: PaymentGatewayServer) -> None:
    start(harness, gateway)
    cases = ((Decimal("0"), "amount: a charge must be positive"), (1.5, "floats are not accepted"),
             (Decimal("1.001"), "USD allows 2"))  # fmt: skip
    for amount, message in cases:
        with pytest.raises(InvalidPayload, match=message):
            payouts.defer_charge("c", amount, "USD", description="x", key="k")  # type: ignore[arg-type]
    assert charges() == {}


def test_the_balance_check_alerts_once_per_crossing(harness: Start, gateway: PaymentGatewayServer) -> None:
    jobs = start(harness, gateway, balance_currencies=["USD"], alert_email="ops@example.com")
    from bgjobs import runs

    def check(balance: str) -> dict[str, Any]:
        gateway.balances["USD"] = balance
        trigger("payouts.balance_check")
        jobs.drain()
        outbox.relay_once()
        jobs.drain()
        return dict(runs.recent(job="payouts.balance_check")[0].figures)

    assert check("5000.00") == {"checked": 1, "alerts": 0}
    assert check("900.00")["alerts"] == 1  # fell below 1,000
    assert check("800.00")["alerts"] == 0  # still below: no second alert
    assert check("5000.00")["alerts"] == 0  # back to normal
    assert check("12000.00")["alerts"] == 1  # above 10,000
    subjects = [m.subject for m in jobs.mailer.sent]
    assert len(subjects) == 2 and all(m.to == ("ops@example.com",) for m in jobs.mailer.sent)
    assert "900.00" in jobs.mailer.sent[0].text and "below" in jobs.mailer.sent[0].text


def test_the_settlement_report_covers_the_day_and_is_stored_and_sent(
    harness: Start, gateway: PaymentGatewayServer
) -> None:

    jobs = start(harness, gateway, balance_currencies=["USD"], alert_email="ops@example.com")
    gateway.balances["USD"] = "4321.00"
    # Given a day with one sale, one succeeded charge and one still pending
    day = datetime.now(UTC).date()
    payouts.record_earning("v1", "200.00", "USD", source_id="b1", occurred_at=datetime.now(UTC))
    payouts.defer_charge("c1", "9.99", "USD", description="page", key="p1")
    gateway.no_method.add("c2")
    payouts.defer_charge("c2", "5.00", "USD", description="page", key="p2")
    sweep(jobs)

    trigger("payouts.settlement", day=day.isoformat())
    jobs.drain()

    # It is an export: stored, tracked, and the operators get the "ready" email with its link
    (export,) = exports.exports(dataset="payouts.settlement")
    assert export.status == "done" and export.rows == 1
    stored = jobs.storage.objects[export.storage_key].decode()
    assert stored.splitlines() == [
        "day,currency,payments,completed_payments,payments_amount,payouts,completed_payouts,payouts_amount,"
        "net_revenue,balance",
        f"{day.isoformat()},USD,2,1,9.99,0,0,0.00,40.00,4321.00",
    ]
    (mail,) = jobs.mailer.sent
    assert mail.to == ("ops@example.com",) and "payouts.settlement" in mail.subject
    assert f"memory://{export.storage_key}" in mail.text
    # another day has nothing but the balance; the same day again is the same export
    other = payouts.settlement_rows(period="2020-01-01", filters={})
    assert other[0]["payments"] == 0
    assert payouts.settlement_report(day) == export.id
