"""The daily settlement report: yesterday's charges, payouts, net revenue and the current balance.

A dataset of the exports family (``payouts.settlement``, one row per currency, the period being
the day), so the report is streamed, stored, tracked and announced like any export. Every figure
is computed in SQL from bgjobs's own tables: the report needs nothing from the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, select

from .. import db, runtime, wiring
from ..errors import InvalidPayload, PermanentError, TransientError
from ..exports import register_dataset
from ..money import Money
from ._ledger import current
from ._models import Charge, LedgerEntry, Payout

__all__ = ["COLUMNS", "settlement_report", "settlement_rows"]

COLUMNS = (
    "day", "currency", "payments", "completed_payments", "payments_amount", "payouts", "completed_payouts",
    "payouts_amount", "net_revenue", "balance",
)  # fmt: skip


def _day_bounds(day: date, zone: str) -> tuple[datetime, datetime]:
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    return start, datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)


def _by_currency(rows: Any) -> dict[str, tuple[int, ...]]:
    return {currency: tuple(int(v or 0) for v in values) for currency, *values in rows}


def parse_day(period: str | None, *, field: str = "period") -> date | None:
    """A day like ``2025-06-01``, or None.

    Raises:
        InvalidPayload: names ``field``.
    """
    try:
        return date.fromisoformat(period) if period else None
    except ValueError:
        raise InvalidPayload(f"{field}: {period!r} is not a day like 2025-06-01") from None


def settlement_rows(*, period: str | None, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The report's rows for the day ``period`` (``2025-06-01``; yesterday when None)."""

    zone = runtime.current().settings.timezone
    day = parse_day(period) or datetime.now(ZoneInfo(zone)).date() - timedelta(days=1)
    start, end = _day_bounds(day, zone)
    c: Any = Charge.__table__  # type: ignore[attr-defined]
    p: Any = Payout.__table__  # type: ignore[attr-defined]
    e: Any = LedgerEntry.__table__  # type: ignore[attr-defined]
    with db.read() as conn:
        charges = _by_currency(conn.execute(
            select(c.c.currency, func.count(), func.sum(case((c.c.status == "succeeded", 1), else_=0)),
                   func.sum(case((c.c.status == "succeeded", c.c.amount_minor), else_=0)))
            .where(and_(c.c.created_at >= start, c.c.created_at < end)).group_by(c.c.currency)
        ))  # fmt: skip
        payouts = _by_currency(conn.execute(
            select(p.c.currency, func.count(), func.sum(case((p.c.status == "paid", 1), else_=0)),
                   func.sum(case((p.c.status == "paid", p.c.amount_minor), else_=0)))
            .where(and_(p.c.created_at >= start, p.c.created_at < end)).group_by(p.c.currency)
        ))  # fmt: skip
        revenue = _by_currency(conn.execute(
            select(e.c.currency, func.sum(e.c.platform_minor))
            .where(and_(e.c.occurred_at >= start, e.c.occurred_at < end)).group_by(e.c.currency)
        ))  # fmt: skip
    rows = []
    for currency in sorted({*charges, *payouts, *revenue, *current().balance_currencies}):
        paid_in = charges.get(currency, (0, 0, 0))
        paid_out = payouts.get(currency, (0, 0, 0))
        rows.append({
            "day": day.isoformat(), "currency": currency, "payments": paid_in[0],
            "completed_payments": paid_in[1], "payments_amount": _amount(paid_in[2], currency),
            "payouts": paid_out[0], "completed_payouts": paid_out[1],
            "payouts_amount": _amount(paid_out[2], currency),
            "net_revenue": _amount(revenue.get(currency, (0,))[0], currency), "balance": _balance(currency),
        })  # fmt: skip
    return rows


register_dataset("payouts.settlement", settlement_rows, columns=COLUMNS, period=parse_day,
                 description="the day's charges, payouts, net revenue and balance, per currency")  # fmt: skip


def settlement_report(day: date | None = None) -> str:
    """Request the report for ``day`` (yesterday by default) as a CSV export; returns the export id.

    The operators (``BGJOBS_PAYOUTS__ALERT_EMAIL``) get the "export ready" email with its link.
    """
    from ..exports import request

    day = day or (datetime.now(ZoneInfo(runtime.current().settings.timezone)).date() - timedelta(days=1))
    to = current().alert_email
    who = {"user_id": "operators", "email": to} if to else None
    return request("payouts.settlement", fmt="csv", period=day.isoformat(), requested_by=who,
                   key=f"payouts.settlement:{day.isoformat()}")  # fmt: skip


def _amount(minor: int, currency: str) -> str:
    return str(Money.from_minor(minor, currency).amount)


def _balance(currency: str) -> str:
    try:
        return str(wiring.payment().balance(currency=currency).available.amount)
    except (TransientError, PermanentError):
        return ""  # the report goes out without it rather than not at all
