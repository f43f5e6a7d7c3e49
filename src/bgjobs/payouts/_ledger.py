"""The earnings ledger: each sale recorded once, split into the vendor's and the platform's share.

The rounding rule, per entry: the platform's share is ``gross x rate`` rounded half-up to the
currency's minor unit, and the vendor's share is the rest. So the two always add up to the
gross exactly, whatever the rate and currency, and no cent appears or vanishes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import Session, col, select

from .. import db, runtime
from ..errors import InvalidPayload
from ..money import Money
from ..settings import PayoutSettings
from ._models import CommissionRate, Entry, LedgerEntry, VendorEarnings

__all__ = [
    "balances",
    "calculate_vendor_earnings",
    "commission_rate",
    "record_adjustment",
    "record_earning",
    "set_commission_rate",
    "split",
]


def current() -> PayoutSettings:
    return runtime.current().settings.payouts


def split(gross_minor: int, rate: Decimal) -> tuple[int, int]:
    """(vendor, platform) minor units of ``gross_minor`` at platform ``rate``; they sum to the gross."""
    platform = int((Decimal(gross_minor) * rate).to_integral_value(rounding=ROUND_HALF_UP))
    return gross_minor - platform, platform


def _money(field: str, amount: Any, currency: str) -> Money:
    try:
        return Money(amount=amount, currency=currency)
    except ValidationError as exc:
        raise InvalidPayload.from_validation_error(field, exc) from None


def _rate(value: Any) -> Decimal:
    try:
        rate = Decimal(str(value)) if not isinstance(value, float) else None
    except InvalidOperation:
        rate = None
    if rate is None or not rate.is_finite() or not 0 <= rate <= 1:
        raise InvalidPayload(f"rate: {value!r} is not a Decimal between 0 and 1 (0.20 keeps 20%)")
    return rate


def set_commission_rate(vendor_id: str, rate: Decimal | str | None) -> None:
    """Give a vendor their own platform rate (None returns them to the default). Applies to new entries."""
    with db.session() as s:
        found = s.get(CommissionRate, vendor_id)
        if rate is None:
            if found is not None:
                s.delete(found)
            return
        checked = str(_rate(rate))
        if found is None:
            s.add(CommissionRate(vendor_id=vendor_id, rate=checked))
        else:
            found.rate, found.updated_at = checked, datetime.now(UTC)
            s.add(found)


def commission_rate(vendor_id: str, *, session: Session | None = None) -> Decimal:
    """The platform rate for a vendor: their own, else ``BGJOBS_PAYOUTS__COMMISSION_RATE``."""
    if session is not None:
        found = session.get(CommissionRate, vendor_id)
    else:
        with db.session() as s:
            found = s.get(CommissionRate, vendor_id)
    return Decimal(found.rate) if found is not None else current().commission_rate


def _aware(moment: datetime, field: str) -> datetime:
    if not isinstance(moment, datetime):
        raise InvalidPayload(f"{field}: a datetime with a time zone is required")
    if moment.tzinfo is None:
        raise InvalidPayload(f"{field}: must carry a time zone")
    return moment.astimezone(UTC)


def _values(
    vendor_id: str, money: Money, rate: Decimal, occurred_at: datetime, description: str | None
) -> dict[str, Any]:
    vendor, platform = split(money.minor_units, rate)
    return {"vendor_id": vendor_id, "currency": money.currency, "gross_minor": money.minor_units,
            "vendor_minor": vendor, "platform_minor": platform, "rate": str(rate), "description": description,
            "occurred_at": _aware(occurred_at, "occurred_at"), "created_at": datetime.now(UTC)}  # fmt: skip


def check_entry(
    kind: str, amount: Any, currency: str, *, source_id: str, occurred_at: datetime
) -> Money:
    """Everything about an entry that can be wrong before it reaches the database.

    The senders (``record_earning``, ``record_adjustment``) and the outbox payload
    (:class:`~bgjobs.payouts.actors.LedgerWrite`) call it, so a bad entry is refused where it
    enters, not in the worker.

    Raises:
        InvalidPayload: names the field.
    """
    field = "gross" if kind == "earning" else "amount"
    money = _money(field, amount, currency)
    if kind == "earning" and money.amount <= 0:
        raise InvalidPayload(f"gross: an earning must be positive, got {money.amount}; use record_adjustment")
    if kind == "adjustment" and money.amount == 0:
        raise InvalidPayload("amount: an adjustment cannot be zero")
    if not source_id or len(source_id) > 200:
        raise InvalidPayload("source_id: 1 to 200 characters, the sale's own id (a booking id)")
    _aware(occurred_at, "occurred_at")
    return money


def _record(session: Session | None, values: dict[str, Any], *, kind: str, source_id: str) -> Entry:
    def insert(s: Session) -> Entry:
        db.insert_new(
            s, LedgerEntry, {**values, "kind": kind, "source_id": source_id}, unique=("kind", "source_id")
        )
        same = select(LedgerEntry).where(LedgerEntry.kind == kind, LedgerEntry.source_id == source_id)
        row = s.exec(same).one()
        return Entry.model_validate(row)

    if session is not None:
        return insert(session)
    with db.session() as s:
        return insert(s)


def record_earning(
    vendor_id: str,
    gross: Decimal | str | int,
    currency: str,
    *,
    source_id: str,
    occurred_at: datetime,
    description: str | None = None,
    session: Session | None = None,
) -> Entry:
    """Record a completed sale once per ``source_id``; a second call returns the first entry.

    Args:
        gross: what the customer paid, a ``Decimal`` (or its string) with no more decimals than
            the currency allows; floats are refused.
        session: the host's session, to record the sale in the host's own transaction.

    Raises:
        InvalidPayload: a float, zero or negative amount, an unknown currency, too many decimals,
            a naive ``occurred_at``; the message names the field.
    """
    money = check_entry("earning", gross, currency, source_id=source_id, occurred_at=occurred_at)
    rate = commission_rate(vendor_id, session=session)
    values = _values(vendor_id, money, rate, occurred_at, description)
    return _record(session, values, kind="earning", source_id=source_id)


def record_adjustment(
    vendor_id: str,
    amount: Decimal | str | int,
    currency: str,
    *,
    source_id: str,
    occurred_at: datetime,
    description: str | None = None,
    split_commission: bool = False,
    session: Session | None = None,
) -> Entry:
    """Record a refund, clawback (negative) or bonus (positive) once per ``source_id``.

    Args:
        amount: by default it applies to the vendor's share alone (a clawback). With
            ``split_commission`` it is a gross amount split like an earning: a refund where the
            platform returns its commission too.

    Raises:
        InvalidPayload: a float, zero, an unknown currency or too many decimals, naming the field.
    """
    money = check_entry("adjustment", amount, currency, source_id=source_id, occurred_at=occurred_at)
    rate = commission_rate(vendor_id, session=session) if split_commission else Decimal(0)
    values = _values(vendor_id, money, rate, occurred_at, description)
    return _record(session, values, kind="adjustment", source_id=source_id)


def calculate_vendor_earnings(
    vendor_id: str, start: datetime, end: datetime, *, currency: str | None = None
) -> VendorEarnings:
    """A vendor's earnings from sales in ``[start, end)``: their share, the revenue, the bookings.

    Args:
        currency: needed only when the vendor has entries in several currencies.

    Raises:
        InvalidPayload: ``currency`` is needed and missing, or the vendor has no entries at all.
    """
    start, end = _aware(start, "start"), _aware(end, "end")
    if currency is None:
        with db.session() as s:
            found = list(
                s.exec(select(LedgerEntry.currency).where(LedgerEntry.vendor_id == vendor_id).distinct())
            )
        if len(found) != 1:
            raise InvalidPayload(
                f"currency: vendor {vendor_id} has entries in {len(found)} currencies; pass one"
            )
        currency = found[0]
    query = (
        select(LedgerEntry.source_id, LedgerEntry.gross_minor, LedgerEntry.vendor_minor)
        .where(LedgerEntry.vendor_id == vendor_id, LedgerEntry.kind == "earning",
               LedgerEntry.currency == currency, col(LedgerEntry.occurred_at) >= start,
               col(LedgerEntry.occurred_at) < end)
        .order_by(col(LedgerEntry.occurred_at), col(LedgerEntry.id))
    )  # fmt: skip
    with db.session() as s:
        rows = list(s.exec(query))
    return VendorEarnings(
        vendor_id=vendor_id,
        amount=Money.from_minor(sum(r[2] for r in rows), currency),
        total_revenue=Money.from_minor(sum(r[1] for r in rows), currency),
        commission_rate=commission_rate(vendor_id),
        booking_count=len(rows),
        booking_ids=tuple(r[0] for r in rows),
    )


def balances(vendor_id: str | None = None) -> dict[tuple[str, str], Money]:
    """Unpaid balance per (vendor, currency): what the next run would consider."""
    query = (
        select(LedgerEntry.vendor_id, LedgerEntry.currency, func.sum(LedgerEntry.vendor_minor))
        .where(col(LedgerEntry.payout_id).is_(None))
        .group_by(col(LedgerEntry.vendor_id), col(LedgerEntry.currency))
    )
    if vendor_id is not None:
        query = query.where(LedgerEntry.vendor_id == vendor_id)
    with db.session() as s:
        return {(v, c): Money.from_minor(int(total), c) for v, c, total in s.exec(query)}
