"""A host's monthly financial export: invoices, transactions and credit notes of a period, in one file.

The host owns its tables; bgjobs only needs a dataset: a function returning one ``select`` for a
period (here ``2025-06``), and the columns in order. The query is streamed with a server-side
cursor, so a month of a million rows takes no more memory than a day's.

    from examples.financial_export import app
    export_id = bgjobs.exports.request("financial", fmt="csv", period="2025-06",
                                       requested_by={"user_id": "cfo", "email": "cfo@example.com"})

Run a worker that knows the dataset with:
    BGJOBS_JOBS='["examples.financial_export.app"]' BGJOBS_STORAGE=localfs dramatiq bgjobs.actors

The daily settlement report is the same idea shipped by bgjobs itself: the ``payouts.settlement``
dataset (``bgjobs.payouts.settlement_report``), requested as an export every morning.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Numeric, literal, union_all
from sqlmodel import Field, SQLModel, col, select

from bgjobs.errors import InvalidPayload
from bgjobs.exports import register_dataset


class Invoice(SQLModel, table=True):
    __tablename__ = "shop_invoices"

    id: int | None = Field(default=None, primary_key=True)
    customer: str
    total: Decimal = Field(sa_type=Numeric(12, 2))  # type: ignore[call-overload]
    currency: str
    issued_at: datetime


class Transaction(SQLModel, table=True):
    __tablename__ = "shop_transactions"

    id: int | None = Field(default=None, primary_key=True)
    customer: str
    amount: Decimal = Field(sa_type=Numeric(12, 2))  # type: ignore[call-overload]
    currency: str
    settled_at: datetime


class CreditNote(SQLModel, table=True):
    __tablename__ = "shop_credit_notes"

    id: int | None = Field(default=None, primary_key=True)
    customer: str
    amount: Decimal = Field(sa_type=Numeric(12, 2))  # type: ignore[call-overload]
    currency: str
    issued_at: datetime


def _month(period: str | None) -> tuple[datetime, datetime]:
    try:
        first = date.fromisoformat(f"{period}-01")
    except (TypeError, ValueError):
        raise InvalidPayload(f"period: {period!r} is not a month like 2025-06") from None
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return (datetime(first.year, first.month, 1, tzinfo=UTC),
            datetime(following.year, following.month, 1, tzinfo=UTC))  # fmt: skip


def financial(*, period: str | None, filters: Mapping[str, Any]) -> Any:
    """Every invoice, transaction and credit note of the month, oldest first, as one query."""
    start, end = _month(period)
    i, t, c = Invoice, Transaction, CreditNote
    invoices = select(
        literal("invoice").label("kind"), col(i.id), col(i.customer), col(i.total).label("amount"),
        col(i.currency), col(i.issued_at).label("at"),
    ).where(col(i.issued_at) >= start, col(i.issued_at) < end)  # fmt: skip
    transactions = select(
        literal("transaction").label("kind"), col(t.id), col(t.customer), col(t.amount), col(t.currency),
        col(t.settled_at).label("at"),
    ).where(col(t.settled_at) >= start, col(t.settled_at) < end)  # fmt: skip
    credits = select(
        literal("credit_note").label("kind"), col(c.id), col(c.customer), (-col(c.amount)).label("amount"),
        col(c.currency), col(c.issued_at).label("at"),
    ).where(col(c.issued_at) >= start, col(c.issued_at) < end)  # fmt: skip
    everything = union_all(invoices, transactions, credits).subquery()
    return select(everything).order_by(everything.c.at, everything.c.kind, everything.c.id)


register_dataset(
    "financial", financial, columns=("kind", "id", "customer", "amount", "currency", "at"),
    description="invoices, transactions and credit notes (negative) of a month", period=_month,
)  # fmt: skip
