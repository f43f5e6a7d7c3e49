"""Payouts' tables and payloads.

Money is stored as integer minor units with its currency; ``Decimal`` appears only at the
edges (the API and the gateway). An entry's ``payout_id`` is the only link between the ledger
and the payouts: an unlinked entry is balance, a linked one belongs to exactly one payout.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict
from pydantic import Field as Check
from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from ..clock import now as _now
from ..money import Money
from ..typed import Payload

__all__ = [
    "BalanceState",
    "Charge",
    "CommissionRate",
    "LedgerEntry",
    "Payout",
    "PayoutBatch",
    "PayoutJob",
    "PayoutReceipt",
    "PayoutRun",
    "VendorEarnings",
]


class _Shares:
    """The amounts of a ledger entry as Money: the row's and the data object's, from one place."""

    if TYPE_CHECKING:  # declared by the classes that use it, so they keep their own fields and order
        gross_minor: int
        vendor_minor: int
        platform_minor: int
        currency: str

    @property
    def gross(self) -> Money:
        return Money.from_minor(self.gross_minor, self.currency)

    @property
    def vendor_share(self) -> Money:
        return Money.from_minor(self.vendor_minor, self.currency)

    @property
    def platform_share(self) -> Money:
        return Money.from_minor(self.platform_minor, self.currency)


class LedgerEntry(_Shares, SQLModel, table=True):
    __tablename__ = "bgjobs_ledger_entries"
    __table_args__ = (
        UniqueConstraint("source_id", "kind"),
        # The run's aggregation reads unpaid entries by vendor and currency.
        Index("ix_bgjobs_ledger_unpaid", "payout_id", "vendor_id", "currency"),
    )

    id: int | None = Field(default=None, primary_key=True)
    vendor_id: str = Field(max_length=200, index=True)
    currency: str = Field(max_length=3)
    #: ``earning`` (a sale, split by commission) or ``adjustment`` (a refund, a clawback, a bonus).
    kind: str = Field(max_length=16)
    source_id: str = Field(max_length=200)
    gross_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    vendor_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    platform_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    #: The platform rate the split used, as a decimal string.
    rate: str = Field(max_length=20)
    description: str | None = Field(default=None, max_length=500)
    occurred_at: datetime
    created_at: datetime = Field(default_factory=_now)
    payout_id: str | None = Field(default=None, max_length=300)


class Entry(_Shares, BaseModel):
    """A ledger entry as bgjobs's API returns it (the row itself stays bgjobs's)."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int
    vendor_id: str
    currency: str
    kind: str
    source_id: str
    gross_minor: int
    vendor_minor: int
    platform_minor: int
    rate: str
    description: str | None
    occurred_at: datetime
    created_at: datetime
    payout_id: str | None


class CommissionRate(SQLModel, table=True):
    __tablename__ = "bgjobs_commission_rates"

    vendor_id: str = Field(primary_key=True, max_length=200)
    rate: str = Field(max_length=20)
    updated_at: datetime = Field(default_factory=_now)


class PayoutRun(SQLModel, table=True):
    """One payout period's run: planned once, however often it is triggered."""

    __tablename__ = "bgjobs_payout_runs"

    key: str = Field(primary_key=True, max_length=40)
    period_start: datetime
    period_end: datetime
    #: The ``bgjobs_runs`` row that planned it, whose counts are completed once every payout settled.
    run_id: str = Field(max_length=32)
    payouts: int = 0
    carried: int = 0
    created_at: datetime = Field(default_factory=_now)


class Payout(SQLModel, table=True):
    __tablename__ = "bgjobs_payouts"
    __table_args__ = (
        UniqueConstraint("run_key", "vendor_id", "currency"),
        Index("ix_bgjobs_payouts_run_status", "run_key", "status"),
    )

    #: ``payout:{run}:{vendor}:{currency}``, also the gateway's idempotency key.
    id: str = Field(primary_key=True, max_length=300)
    run_key: str = Field(max_length=40)
    vendor_id: str = Field(max_length=200)
    currency: str = Field(max_length=3)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    entries: int
    #: ``pending`` (the gateway has not confirmed), ``paid``, ``failed`` (refused; entries unlinked).
    status: str = Field(default="pending", max_length=16)
    #: Claims taken to pay it (:mod:`bgjobs.claims`); the worker holding one, and until when.
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    lease_until: datetime | None = None
    claimed_by: str | None = Field(default=None, max_length=32)
    transaction_id: str | None = Field(default=None, max_length=200)
    error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=_now)
    settled_at: datetime | None = None

    @property
    def amount(self) -> Money:
        return Money.from_minor(self.amount_minor, self.currency)


class PayoutReceipt(SQLModel, table=True):
    __tablename__ = "bgjobs_payout_receipts"

    id: str = Field(primary_key=True, max_length=40)
    payout_id: str = Field(max_length=300, unique=True)
    vendor_id: str = Field(max_length=200, index=True)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    period: str = Field(max_length=40)
    booking_count: int
    booking_ids: list[str] = Field(sa_column=Column(JSON, nullable=False))
    transaction_id: str = Field(max_length=200)
    issued_at: datetime = Field(default_factory=_now)

    @property
    def amount(self) -> Money:
        return Money.from_minor(self.amount_minor, self.currency)


class PayoutInfo(BaseModel):
    """A payout as :func:`~bgjobs.payouts.payouts` returns it: ``pending``, ``paid`` or ``failed``
    (with the gateway's reason; its entries went back to the balance for the next run)."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: str
    run_key: str
    vendor_id: str
    amount_minor: int
    currency: str
    entries: int
    status: str
    transaction_id: str | None
    error: str | None
    created_at: datetime
    settled_at: datetime | None

    @property
    def amount(self) -> Money:
        return Money.from_minor(self.amount_minor, self.currency)


class Receipt(BaseModel):
    """A payout's receipt, as :func:`~bgjobs.payouts.receipts` returns it."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: str
    payout_id: str
    vendor_id: str
    amount_minor: int
    currency: str
    period: str
    booking_count: int
    booking_ids: list[str]
    transaction_id: str
    issued_at: datetime

    @property
    def amount(self) -> Money:
        return Money.from_minor(self.amount_minor, self.currency)


class Charge(SQLModel, table=True):
    __tablename__ = "bgjobs_charges"

    id: str = Field(primary_key=True, max_length=40)
    #: The host's key; the gateway's idempotency key is ``charge:{key}``.
    key: str = Field(max_length=200, unique=True)
    customer_id: str = Field(max_length=200, index=True)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    description: str = Field(max_length=500)
    on_success_event: str | None = Field(default=None, max_length=200)
    #: ``pending``, ``succeeded`` or ``expired`` (failing past the TTL).
    status: str = Field(default="pending", max_length=16, index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=1000)
    transaction_id: str | None = Field(default=None, max_length=200)
    first_failed_at: datetime | None = None
    created_at: datetime = Field(default_factory=_now)
    settled_at: datetime | None = None

    @property
    def amount(self) -> Money:
        return Money.from_minor(self.amount_minor, self.currency)


class BalanceState(SQLModel, table=True):
    """The last state the balance check saw per currency, so an alert goes once per crossing."""

    __tablename__ = "bgjobs_balance_states"

    currency: str = Field(primary_key=True, max_length=3)
    state: str = Field(max_length=8)  # "ok", "below" or "above"
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=_now)


class PayoutJob(Payload):
    payout_id: str


class PayoutBatch(Payload):
    """Payouts of a run paid by one job (``payouts.pay_batch``), settled in one transaction."""

    payout_ids: list[str] = Check(min_length=1)


class RunDone(Payload):
    """A payout run's batch is complete: write its report (``payouts.run_done``)."""

    run_key: str


class VendorEarnings(BaseModel):
    """What a vendor earned in a period (``calculate_vendor_earnings``)."""

    model_config = ConfigDict(frozen=True)

    vendor_id: str
    amount: Money
    total_revenue: Money
    commission_rate: Decimal
    booking_count: int
    booking_ids: tuple[str, ...]
