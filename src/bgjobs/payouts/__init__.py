"""Payouts: an earnings ledger split by commission, weekly and monthly payout runs, receipts.

``bgjobs.payouts.record_earning("vendor_1", Decimal("200.00"), "USD", source_id="booking_9",
occurred_at=...)`` records a sale once; the scheduled runs pay every balance that reaches the
minimum, each vendor exactly once per period. See docs/payouts.md.
"""

from . import actors
from .actors import LedgerWrite, record_entry
from .ledger import (
    balances,
    calculate_vendor_earnings,
    commission_rate,
    record_adjustment,
    record_earning,
    set_commission_rate,
    split,
)
from .models import CommissionRate, LedgerEntry, Payout, PayoutReceipt, PayoutRun, VendorEarnings
from .periods import Period, period_for
from .service import configure, report

__all__ = [
    "CommissionRate",
    "LedgerEntry",
    "LedgerWrite",
    "Payout",
    "PayoutReceipt",
    "PayoutRun",
    "Period",
    "VendorEarnings",
    "actors",
    "balances",
    "calculate_vendor_earnings",
    "commission_rate",
    "configure",
    "period_for",
    "record_adjustment",
    "record_earning",
    "record_entry",
    "report",
    "set_commission_rate",
    "split",
]
