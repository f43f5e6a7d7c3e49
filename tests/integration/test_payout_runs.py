"""Payout runs on SQLite and PostgreSQL, paying through the HTTP payment adapter to a local gateway
that stores idempotency keys like a real provider."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import select

from bgjobs import cli, db, outbox, payouts, runs, wiring
from bgjobs.adapters.http import HttpPaymentGateway
from bgjobs.errors import InvalidPayload
from bgjobs.families import trigger
from bgjobs.money import Money
from bgjobs.payouts import _models as payout_tables
from bgjobs.settings import HttpVendorSettings, PayoutSettings
from bgjobs.testing import JobsHarness
from tests.support.receivers import PaymentGatewayServer, payment_gateway

Start = Callable[..., JobsHarness]
W23 = datetime(2025, 6, 3, 12, 0, tzinfo=UTC)  # a Tuesday in ISO week 2025-W23
W24 = W23 + timedelta(days=7)


@pytest.fixture
def gateway() -> Iterator[PaymentGatewayServer]:
    with payment_gateway() as g:
        yield g


def start(harness: Start, gateway: PaymentGatewayServer, **settings: Any) -> JobsHarness:
    jobs = harness(payouts=PayoutSettings(**settings))
    wiring.configure(payment=HttpPaymentGateway(HttpVendorSettings(url=gateway.url)))
    return jobs


def earn(vendor: str, gross: str, source: str, when: datetime, currency: str = "USD") -> None:
    payouts.record_earning(vendor, Decimal(gross), currency, source_id=source, occurred_at=when)


def all_payouts() -> list[payout_tables.Payout]:
    with db.session() as s:
        return list(s.exec(select(payout_tables.Payout)))


def paid_amounts(gateway: PaymentGatewayServer) -> dict[str, tuple[str, str]]:
    return {
        p["payee_id"] + ":" + p["currency"]: (p["amount"], p["currency"]) for p in gateway.payouts.values()
    }


def test_a_weekly_run_pays_each_balance_once_and_carries_the_rest(
    harness: Start, gateway: PaymentGatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = start(harness, gateway)
    wiring.configure(
        vendor_contact=lambda vendor_id: {"user_id": vendor_id, "email": f"{vendor_id}@example.com"}
    )
    # v1: the seeds' week (520.00 after commission); v2: 40.00 (below the 50.00 minimum);
    # v3: a clawback bigger than its sale; v4: in two currencies; v5: a sale after the period
    for n, gross in enumerate(["200.00", "150.00", "300.00"]):
        earn("v1", gross, f"b1-{n}", W23 + timedelta(hours=n))
    earn("v2", "50.00", "b2", W23)
    earn("v3", "100.00", "b3", W23)
    payouts.record_adjustment("v3", "-120.00", "USD", source_id="claw3", occurred_at=W23)
    earn("v4", "100.00", "b4-usd", W23)
    earn("v4", "10000", "b4-jpy", W23, currency="JPY")
    earn("v5", "500.00", "b5", W24)

    # When the week's run is triggered twice
    trigger("payouts.weekly", period="2025-W23")
    jobs.drain()
    from bgjobs.payouts import _planning

    later = _planning._now() + timedelta(hours=1)  # the second trigger comes an hour later
    monkeypatch.setattr(_planning, "_now", lambda: later)
    trigger("payouts.weekly", period="2025-W23")
    jobs.drain()

    # Then v1 and v4 (both currencies) were paid once, with the right amounts
    assert paid_amounts(gateway) == {"v1:USD": ("520.00", "USD"), "v4:USD": ("80.00", "USD"),
                                     "v4:JPY": ("8000", "JPY")}  # fmt: skip
    assert gateway.replays == 0
    assert {p.id: p.status for p in all_payouts()} == {
        "payout:weekly:2025-W23:v1:USD": "paid", "payout:weekly:2025-W23:v4:USD": "paid",
        "payout:weekly:2025-W23:v4:JPY": "paid",
    }  # fmt: skip
    # v2's 40.00, v3's -40.00 and v5's later sale carry forward
    assert payouts.balances() == {
        ("v2", "USD"): Money(amount=Decimal("40.00"), currency="USD"),
        ("v3", "USD"): Money(amount=Decimal("-40.00"), currency="USD"),
        ("v5", "USD"): Money(amount=Decimal("400.00"), currency="USD"),
    }
    # A receipt per payout, emailed through notifications
    (receipt,) = payouts.receipts(vendor_id="v1")
    assert (receipt.amount, receipt.booking_count, receipt.period) == (
        Money(amount=Decimal("520.00"), currency="USD"),
        3,
        "2025-W23",
    )
    assert receipt.booking_ids == ["b1-0", "b1-1", "b1-2"]
    # The receipt emails were deferred through the outbox in the transaction that recorded the payment
    outbox.relay_once()
    jobs.drain()
    assert sorted(m.to[0] for m in jobs.mailer.sent) == ["v1@example.com", "v4@example.com", "v4@example.com"]
    # The run's report in bgjobs_runs is complete once the last payout settled
    (second, first) = runs.recent(job="payouts.weekly")
    report = first.figures
    # carried forward: v2 and v3 (v5's sale falls after the period)
    assert (report["paid"], report["failed"], report["pending"], report["carried_forward"]) == (3, 0, 0, 2)
    assert report["total_paid"] == {"USD": "600.00", "JPY": "8000"}
    # The second trigger says the period was the first run's, not a second copy of its figures, and
    # the first run's duration stays planning-to-last-payout, not the time until the second trigger
    assert second.figures == {"period": "weekly:2025-W23", "planned_by": first.id, "planned_now": False,
                              "jobs_sent": 0, "pending": 0}  # fmt: skip
    assert report["duration_s"] < 600, report["duration_s"]  # not the hour until the second trigger
    # The run's payout jobs were one batch, whose callback wrote the report once they were all counted
    from bgjobs import batches

    (batch,) = [b for b in batches.recent() if b.description == "payout run weekly:2025-W23"]
    assert (batch.state, batch.total, batch.succeeded, batch.failed) == ("done", 3, 3, 0)


def test_a_carried_balance_is_paid_once_it_reaches_the_minimum(
    harness: Start, gateway: PaymentGatewayServer
) -> None:
    jobs = start(harness, gateway)
    earn("v2", "50.00", "b1", W23)  # 40.00 to the vendor
    trigger("payouts.weekly", period="2025-W23")
    jobs.drain()
    assert gateway.payouts == {}
    earn("v2", "25.00", "b2", W24)  # 20.00 more: 60.00
    trigger("payouts.weekly", period="2025-W24")
    jobs.drain()
    assert paid_amounts(gateway) == {"v2:USD": ("60.00", "USD")}
    assert payouts.balances() == {}


def test_a_refused_payout_returns_its_entries_to_the_balance(
    harness: Start, gateway: PaymentGatewayServer
) -> None:
    jobs = start(harness, gateway, minimums={"USD": Decimal("10.00")})
    earn("v1", "100.00", "b1", W23)
    gateway.script.append(403)  # the provider refuses (a closed account)
    trigger("payouts.weekly", period="2025-W23")
    jobs.drain()

    (payout,) = all_payouts()
    assert payout.status == "failed" and "403" in (payout.error or "")
    assert payouts.balances() == {("v1", "USD"): Money(amount=Decimal("80.00"), currency="USD")}
    assert jobs.dead_letters == []
    # the next period pays it
    trigger("payouts.weekly", period="2025-W24")
    jobs.drain()
    assert paid_amounts(gateway) == {"v1:USD": ("80.00", "USD")}


def test_a_refused_payout_retried_now_is_paid_once_under_a_new_key(
    harness: Start, gateway: PaymentGatewayServer
) -> None:
    jobs = start(harness, gateway, minimums={"USD": Decimal("10.00")})
    earn("v1", "100.00", "b1", W23)
    earn("v1", "50.00", "b2", W24)  # after the period: not part of its retry
    gateway.script.append(403)  # the provider refuses (a closed account)
    trigger("payouts.weekly", period="2025-W23")
    jobs.drain()
    (refused,) = all_payouts()
    assert refused.status == "failed"
    # When the vendor fixed their account and an operator retries it now
    retried = payouts.retry_payout(refused.id)
    # A second click finds nothing left to pay; the first is paid once, under its own key
    with pytest.raises(InvalidPayload, match="is left to pay"):
        payouts.retry_payout(refused.id)
    jobs.drain()
    assert (retried.id, retried.amount.amount, retried.status) == (
        "payout:weekly:2025-W23:r1:v1:USD", Decimal("80.00"), "pending")  # fmt: skip
    assert paid_amounts(gateway) == {"v1:USD": ("80.00", "USD")}
    assert list(gateway.payouts) == [retried.id]  # the refused key was never sent again
    assert {p.id: p.status for p in all_payouts()} == {refused.id: "failed", retried.id: "paid"}
    with pytest.raises(InvalidPayload, match="is paid; only a refused payout is retried"):
        payouts.retry_payout(retried.id)
    with pytest.raises(InvalidPayload, match="no payout"):
        payouts.retry_payout("payout:weekly:2025-W23:nobody:USD")
    (receipt,) = payouts.receipts()
    assert (receipt.payout_id, receipt.period) == (retried.id, "2025-W23")
    # The next run pays only what came after: the W24 earning
    trigger("payouts.weekly", period="2025-W24")
    jobs.drain()
    assert sorted(p["amount"] for p in gateway.payouts.values()) == ["40.00", "80.00"]


def test_a_gateway_outage_retries_with_the_same_key_and_pays_once(
    harness: Start, gateway: PaymentGatewayServer
) -> None:
    jobs = start(harness, gateway)
    earn("v1", "100.00", "b1", W23)
    gateway.script.extend([503, 503])
    trigger("payouts.weekly", period="2025-W23")
    jobs.drain()
    assert paid_amounts(gateway) == {"v1:USD": ("80.00", "USD")}
    assert [p.status for p in all_payouts()] == ["paid"]


def test_a_batch_settles_what_the_gateway_answered_and_retries_only_the_rest(
    harness: Start, gateway: PaymentGatewayServer
) -> None:
    from bgjobs.payouts._models import PayoutBatch
    from bgjobs.payouts._periods import period_for
    from bgjobs.payouts._planning import plan_payouts
    from bgjobs.payouts.actors import pay_vendors

    jobs = start(harness, gateway)
    for vendor in ("v1", "v2", "v3"):
        earn(vendor, "100.00", f"b-{vendor}", W23)
    plan_payouts(period_for("weekly", "2025-W23", timezone="UTC"), run_id="r1")
    ids = sorted(p.id for p in all_payouts())
    # Given one job for three payouts, and a gateway that times out on the first and refuses the second
    gateway.script.extend([503, 403])
    pay_vendors.send(PayoutBatch(payout_ids=ids))
    jobs.drain()
    # Then the third was paid and settled at the first attempt, the second failed, and the job's
    # retry called the gateway only for the first: four requests, no replay
    assert {p.vendor_id: p.status for p in all_payouts()} == {"v1": "paid", "v2": "failed", "v3": "paid"}
    assert (gateway.requests, gateway.replays) == (4, 0)
    assert sorted(gateway.paid()) == ["v1", "v3"]
    assert sorted(r.vendor_id for r in payouts.receipts()) == ["v1", "v3"]
    assert payouts.balances() == {("v2", "USD"): Money(amount=Decimal("80.00"), currency="USD")}
    assert jobs.dead_letters == []


SQLITE_SPLIT = {100: [7] * 4 + [6] * 12, 500: [32] * 4 + [31] * 12, 2_000: [32] * 47 + [31] * 16}
WIDE_SPLIT = {100: [4] * 4 + [3] * 28, 500: [16] * 20 + [15] * 12, 2_000: [16] * 125}


@pytest.mark.parametrize("pay_batch", [None, 16])
def test_a_run_pays_in_batches_yet_spreads_a_small_run_over_many_jobs(
    harness: Start, gateway: PaymentGatewayServer, pay_batch: int | None
) -> None:
    from bgjobs.payouts._planning import pay_batches

    start(harness, gateway, pay_batch=pay_batch)
    sqlite = db.get_engine().dialect.name == "sqlite"

    def sizes(count: int) -> list[int]:
        batches = pay_batches([f"p{i}" for i in range(count)])
        assert [i for b in batches for i in b.payout_ids] == [f"p{i}" for i in range(count)]
        return [len(b.payout_ids) for b in batches]

    assert sizes(0) == []
    assert sizes(10) == [1] * 10
    # Unset: on SQLite at least 16 jobs of up to 32 (fewer settles queue for its one write lock),
    # elsewhere at least 32 jobs of up to 16; a setting sets the size, and the spread stays
    expected = SQLITE_SPLIT if sqlite else WIDE_SPLIT
    if pay_batch is not None:
        expected = {**WIDE_SPLIT, 100: SQLITE_SPLIT[100]} if sqlite else WIDE_SPLIT
    assert {count: sizes(count) for count in expected} == expected


def test_planning_most_of_a_sqlite_ledger_builds_its_unpaid_index_again_or_rolls_back_whole(
    harness: Start, gateway: PaymentGatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import inspect

    from bgjobs.payouts import _planning as planning
    from bgjobs.payouts._periods import period_for

    start(harness, gateway)
    monkeypatch.setattr(planning, "REBUILD_MIN", 1)  # a ledger this small takes the large ledger's way
    dropped: list[Any] = []
    in_the_way = planning._index_in_the_way
    monkeypatch.setattr(planning, "_index_in_the_way", lambda s: dropped.append(in_the_way(s)) or dropped[-1])

    def unpaid_index() -> list[str]:
        found = inspect(db.get_engine()).get_indexes("bgjobs_ledger_entries")
        return [i["column_names"] for i in found if i["name"] == "ix_bgjobs_ledger_unpaid"]

    for n, vendor in enumerate(["v1", "v2", "v2", "v3"]):
        earn(vendor, "100.00", f"b{n}", W23)
    period = period_for("weekly", "2025-W23", timezone="UTC")
    # When the planning transaction fails after it dropped the index
    real_insert = planning.insert

    def failing_insert(table: Any) -> Any:
        if table is payout_tables.Payout.__table__:  # type: ignore[attr-defined]
            raise RuntimeError("the database went away mid-plan")
        return real_insert(table)

    monkeypatch.setattr(planning, "insert", failing_insert)
    with pytest.raises(RuntimeError, match="mid-plan"):
        planning.plan_payouts(period, run_id="r1")
    # Then nothing of it is left: the index is there, every entry unlinked, no payout
    assert unpaid_index() == [["payout_id", "vendor_id", "currency"]]
    assert all_payouts() == [] and len(payouts.balances()) == 3
    # And planned again, each entry is linked, the payouts are right and the index is built again
    monkeypatch.setattr(planning, "insert", real_insert)
    assert planning.plan_payouts(period, run_id="r1")
    assert {p.vendor_id: (p.amount_minor, p.entries) for p in all_payouts()} == {
        "v1": (8_000, 1), "v2": (16_000, 2), "v3": (8_000, 1),
    }  # fmt: skip
    assert unpaid_index() == [["payout_id", "vendor_id", "currency"]]
    assert payouts.balances() == {}
    # (dropped on SQLite, which holds its one write lock throughout; never on PostgreSQL)
    assert [i is not None for i in dropped] == [db.get_engine().dialect.name == "sqlite"] * 2


def test_the_cli_triggers_a_given_period(
    harness: Start, gateway: PaymentGatewayServer, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = start(harness, gateway)
    earn("v1", "100.00", "b1", W23)
    assert cli.main(["trigger", "payouts.weekly", "--period", "2025-W23"]) == 0
    jobs.drain()
    assert paid_amounts(gateway) == {"v1:USD": ("80.00", "USD")}
    capsys.readouterr()
    # A period the job cannot read is refused by the command itself: one line, exit 2, nothing sent
    assert cli.main(["trigger", "payouts.weekly", "--period", "June"]) == 2
    err = capsys.readouterr().err
    assert "period: 'June' is not an ISO week" in err and len(err.strip().splitlines()) == 1
    # So is a misspelt argument, which would otherwise pay the default period
    assert cli.main(["trigger", "payouts.weekly", "--perod", "2025-W23"]) == 2
    err = capsys.readouterr().err
    assert err == ("bgjobs: trigger: payouts.weekly has no argument --perod (did you mean --period?); "
                   "its arguments: --period\n")  # fmt: skip
    jobs.drain()
    assert len(runs.recent(job="payouts.weekly")) == 1
    assert json.loads(first_run_counts()).get("paid") == 1


def first_run_counts() -> str:
    return runs.recent(job="payouts.weekly")[-1].counts


def test_an_earning_deferred_through_the_outbox_is_recorded_once(
    harness: Start, gateway: PaymentGatewayServer
) -> None:
    jobs = start(harness, gateway)
    write = payouts.LedgerWrite(kind="earning", vendor_id="v1", amount=Decimal("100.00"), currency="USD",
                                source_id="b1", occurred_at=W23)  # fmt: skip
    for _ in range(2):  # the host's request retried: two transactions, one sale
        with db.session() as s:
            outbox.defer(s, payouts.record_entry, write)
    outbox.relay_once()
    jobs.drain()
    assert payouts.balances() == {("v1", "USD"): Money(amount=Decimal("80.00"), currency="USD")}


def test_the_run_s_report_is_final_even_when_its_payouts_settle_before_the_run_is_recorded(
    harness: Start, gateway: PaymentGatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bgjobs.payouts import _paying as paying
    from bgjobs.payouts import _planning as planning
    from bgjobs.payouts._models import PayoutJob

    jobs = start(harness, gateway)
    earn("v1", "200.00", "b1", W23)
    earn("v2", "300.00", "b2", W23)
    planned = planning.plan

    def plan_then_pay_before_returning(period: Any, *, run_id: str) -> dict[str, Any]:
        # The interleaving: the report is taken while both payouts are pending, then the pay jobs
        # settle both (and write their report) before the weekly job records its run.
        stale = planned(period, run_id=run_id)
        assert stale["pending"] == 2
        deadline = time.monotonic() + 20
        while pending := [p for p in all_payouts() if p.status == "pending"]:
            assert time.monotonic() < deadline, "the payouts were never paid"
            for p in pending:  # the worker's other thread may be paying one too ("busy"): look again
                assert paying.pay(PayoutJob(payout_id=p.id)) in ("paid", "duplicate", "busy")
            time.sleep(0.05)
        return stale

    monkeypatch.setattr(planning, "plan", plan_then_pay_before_returning)
    trigger("payouts.weekly", period="2025-W23")
    jobs.drain()
    (run,) = runs.recent(job="payouts.weekly")
    assert run.outcome == "succeeded"
    assert (run.figures["paid"], run.figures["pending"]) == (2, 0)
    assert run.figures["total_paid"] == {"USD": "400.00"}


def test_two_jobs_for_one_payout_never_call_the_gateway_at_the_same_time(
    harness: Start, gateway: PaymentGatewayServer
) -> None:
    from bgjobs.payouts._models import PayoutJob
    from bgjobs.payouts._periods import period_for
    from bgjobs.payouts._planning import plan_payouts
    from bgjobs.payouts.actors import pay_vendor

    jobs = start(harness, gateway)
    earn("v1", "200.00", "b1", W23)
    plan_payouts(period_for("weekly", "2025-W23", timezone="UTC"), run_id="r1")
    (payout,) = all_payouts()
    # Given a slow gateway, and the payout's job twice (a requeued original and a re-sent copy)
    gateway.script = ["sleep:1"]
    pay_vendor.send(PayoutJob(payout_id=payout.id))
    pay_vendor.send(PayoutJob(payout_id=payout.id))
    # When two worker threads take them at once
    jobs.drain()
    # Then one called the gateway; the other waited for it and found the payout paid
    assert (gateway.requests, gateway.conflicts) == (1, 0)
    assert gateway.paid() == {"v1": 1}
    assert [p.status for p in all_payouts()] == ["paid"]


def test_a_key_in_use_answer_is_transient(gateway: PaymentGatewayServer) -> None:
    from bgjobs.errors import TransientError
    from bgjobs.ports import PayoutRequest

    adapter = HttpPaymentGateway(HttpVendorSettings(url=gateway.url))
    gateway.in_flight.add("payout:x")  # another request with this key is being answered
    amount = Money(amount=Decimal("10.00"), currency="USD")
    request = PayoutRequest(payee_id="v1", amount=amount, idempotency_key="payout:x")
    try:
        with pytest.raises(TransientError, match="409"):
            adapter.payout(request=request)
    finally:
        adapter.close()
    assert gateway.conflicts == 1


def test_a_worker_whose_claim_was_taken_while_it_was_held_up_does_not_call_the_gateway(
    harness: Start, gateway: PaymentGatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bgjobs import db
    from bgjobs.errors import LeaseLost
    from bgjobs.payouts import _paying as paying
    from bgjobs.payouts._models import PayoutJob
    from bgjobs.payouts._periods import period_for
    from bgjobs.payouts._planning import plan_payouts

    start(harness, gateway)
    earn("v1", "200.00", "b1", W23)
    plan_payouts(period_for("weekly", "2025-W23", timezone="UTC"), run_id="r1")
    (payout,) = all_payouts()
    call_gateway = paying._call_gateway
    table = paying.CLAIMS.table

    def held_up_then_call(payout: Any, claim: Any) -> str:
        # Given a worker held up (paused, cut off) after it took the payout, long enough for its
        # claim to lapse and another worker to take the payout
        with db.get_engine().begin() as conn:
            conn.execute(table.update().where(table.c.id == payout.id).values(
                claimed_by="another worker", attempts=table.c.attempts + 1,
                lease_until=datetime.now(UTC) + timedelta(minutes=1)))  # fmt: skip
        claim.sure_until = 0.0  # its clock says the claim may have lapsed
        return call_gateway(payout, claim)

    monkeypatch.setattr(paying, "_call_gateway", held_up_then_call)
    # Then it stops before its gateway call (the job is retried), and the payout stays the other's
    with pytest.raises(LeaseLost):
        paying.pay(PayoutJob(payout_id=payout.id))
    assert gateway.requests == 0
    assert [(p.status, p.claimed_by) for p in all_payouts()] == [("pending", "another worker")]
