"""The commission split and the ledger's refusal of bad money, on a real SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgjobs import db, payouts
from bgjobs.errors import InvalidPayload
from bgjobs.money import CURRENCY_EXPONENTS, Money
from bgjobs.payouts import _models as payout_tables
from bgjobs.payouts._periods import period_for
from bgjobs.settings import Settings
from bgjobs.testing import JobsHarness, stub_jobs

MONDAY = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)  # in ISO week 2025-W23


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[JobsHarness]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    db.upgrade(db.engine_for(url))
    with stub_jobs(settings=Settings(broker_url="stub://", database_url=url)) as h:
        yield h


@given(
    gross=st.integers(min_value=1, max_value=10**13),
    rate=st.decimals(min_value=0, max_value=1, places=4, allow_nan=False, allow_infinity=False),
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
)
@settings(max_examples=2000, deadline=None)
def test_the_vendor_and_platform_shares_always_add_up_to_the_gross(
    gross: int, rate: Decimal, currency: str
) -> None:
    vendor, platform = payouts.split(gross, rate)
    assert vendor + platform == gross
    assert 0 <= platform <= gross
    # the platform's share is the gross times the rate, rounded half-up to the minor unit
    assert abs(Decimal(platform) - Decimal(gross) * rate) <= Decimal("0.5")
    # and both are exact amounts in the currency
    money = Money.from_minor(vendor, currency)
    assert money.minor_units == vendor


@given(
    gross=st.integers(min_value=-(10**12), max_value=-1),
    rate=st.sampled_from([Decimal("0.2"), Decimal("0.125")]),
)
def test_negative_amounts_split_the_same_way(gross: int, rate: Decimal) -> None:
    vendor, platform = payouts.split(gross, rate)
    assert vendor + platform == gross


def test_the_seeds_example_holds(jobs: JobsHarness) -> None:
    # 200 + 150 + 300 USD at 20%: the vendor gets 520.00 and the platform 130.00
    for n, gross in enumerate(["200.00", "150.00", "300.00"]):
        payouts.record_earning("vendor_1", Decimal(gross), "USD", source_id=f"booking_{n}",
                               occurred_at=MONDAY + timedelta(hours=n))  # fmt: skip
    week = period_for("weekly", "2025-W23", timezone="UTC")
    earned = payouts.calculate_vendor_earnings("vendor_1", week.start, week.end)
    assert earned.amount == Money(amount=Decimal("520.00"), currency="USD")
    assert earned.total_revenue == Money(amount=Decimal("650.00"), currency="USD")
    assert earned.commission_rate == Decimal("0.20")
    assert (earned.booking_count, earned.booking_ids) == (3, ("booking_0", "booking_1", "booking_2"))
    platform = sum(e.platform_share.amount for e in _entries())
    assert platform == Decimal("130.00")


def _entries() -> list[payout_tables.LedgerEntry]:
    from sqlmodel import select

    with db.session() as s:
        return list(s.exec(select(payout_tables.LedgerEntry)))


def test_an_earning_is_recorded_once_per_source(jobs: JobsHarness) -> None:
    first = payouts.record_earning("v", "10.00", "USD", source_id="b1", occurred_at=MONDAY)
    again = payouts.record_earning("v", "99.00", "USD", source_id="b1", occurred_at=MONDAY)
    assert again.id == first.id and again.gross.amount == Decimal("10.00")
    assert len(_entries()) == 1


def test_a_vendor_rate_overrides_the_default_for_new_entries(jobs: JobsHarness) -> None:
    payouts.set_commission_rate("v", "0.15")
    entry = payouts.record_earning("v", "100.00", "USD", source_id="b1", occurred_at=MONDAY)
    assert (entry.vendor_share.amount, entry.platform_share.amount) == (Decimal("85.00"), Decimal("15.00"))
    payouts.set_commission_rate("v", None)
    assert payouts.commission_rate("v") == Decimal("0.20")
    with pytest.raises(InvalidPayload, match="rate: "):
        payouts.set_commission_rate("v", "1.5")


def test_adjustments_apply_to_the_vendor_share_or_split_like_a_sale(jobs: JobsHarness) -> None:
    clawback = payouts.record_adjustment("v", "-30.00", "USD", source_id="claw1", occurred_at=MONDAY)
    refund = payouts.record_adjustment("v", "-50.00", "USD", source_id="ref1", occurred_at=MONDAY,
                                       split_commission=True)  # fmt: skip
    assert (clawback.vendor_share.amount, clawback.platform_share.amount) == (
        Decimal("-30.00"),
        Decimal("0.00"),
    )
    assert (refund.vendor_share.amount, refund.platform_share.amount) == (
        Decimal("-40.00"),
        Decimal("-10.00"),
    )


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        (Decimal("-5.00"), "USD", "gross: an earning must be positive"),
        (Decimal("0"), "USD", "gross: an earning must be positive"),
        (Decimal("10.00"), "XYZ", "currency: Value error, unknown currency 'XYZ'"),
        (Decimal("10.001"), "USD", "10.001 has 3 decimals; USD allows 2"),
        (Decimal("100.5"), "JPY", "100.5 has 1 decimals; JPY allows 0"),
        (10.5, "USD", "amount: Value error, floats are not accepted for money"),
    ],
)
def test_bad_money_is_refused_at_the_call_naming_the_field(
    jobs: JobsHarness, amount: object, currency: str, message: str
) -> None:
    with pytest.raises(InvalidPayload, match=message):
        payouts.record_earning("v", amount, currency, source_id="b1", occurred_at=MONDAY)  # type: ignore[arg-type]
    assert _entries() == []


def test_a_naive_time_is_refused(jobs: JobsHarness) -> None:
    with pytest.raises(InvalidPayload, match="occurred_at: must carry a time zone"):
        payouts.record_earning("v", "1.00", "USD", source_id="b1", occurred_at=datetime(2025, 6, 2))  # noqa: DTZ001


def test_periods_are_iso_weeks_and_calendar_months_in_the_deployment_zone() -> None:
    week = period_for("weekly", "2025-W23", timezone="UTC")
    assert (week.start, week.end) == (datetime(2025, 6, 2, tzinfo=UTC), datetime(2025, 6, 9, tzinfo=UTC))
    month = period_for("monthly", "2025-12", timezone="Europe/Lisbon")
    assert (month.start, month.end) == (datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
    # Without a label: the last complete period
    now = datetime(2025, 6, 11, 9, 0, tzinfo=UTC)  # a Wednesday in W24
    assert period_for("weekly", None, timezone="UTC", now=now).label == "2025-W23"
    assert period_for("monthly", None, timezone="UTC", now=now).label == "2025-05"
    assert (
        period_for("monthly", None, timezone="UTC", now=datetime(2025, 1, 1, tzinfo=UTC)).label == "2024-12"
    )
    for bad in ("2025-23", "2025-W54", "June"):
        with pytest.raises(InvalidPayload, match="period: "):
            period_for("weekly", bad, timezone="UTC")
