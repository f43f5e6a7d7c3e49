"""Payouts: an earnings ledger split by commission, weekly and monthly payout runs, receipts.

``bgjobs.payouts.record_earning("vendor_1", Decimal("200.00"), "USD", source_id="booking_9",
occurred_at=...)`` records a sale once; the scheduled runs pay every balance that reaches the
minimum, each vendor exactly once per period. See docs/payouts.md.
"""

from . import actors
from .actors import LedgerWrite, record_entry
from .balance import check_balances
from .charges import ChargeExpired, ChargeSucceeded, defer_charge, sweep_charges
from .ledger import (
    balances,
    calculate_vendor_earnings,
    commission_rate,
    record_adjustment,
    record_earning,
    set_commission_rate,
    split,
)
from .models import Charge, CommissionRate, LedgerEntry, Payout, PayoutReceipt, PayoutRun, VendorEarnings
from .periods import Period, period_for
from .planning import report
from .settlement import settlement_report, settlement_rows

__all__ = [
    "Charge",
    "ChargeExpired",
    "ChargeSucceeded",
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
    "check_balances",
    "commission_rate",
    "defer_charge",
    "period_for",
    "record_adjustment",
    "record_earning",
    "record_entry",
    "report",
    "set_commission_rate",
    "settlement_report",
    "settlement_rows",
    "split",
    "sweep_charges",
]
