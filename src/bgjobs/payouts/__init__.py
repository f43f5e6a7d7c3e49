"""Payouts: an earnings ledger split by commission, weekly and monthly payout runs, receipts.

``bgjobs.payouts.record_earning("vendor_1", Decimal("200.00"), "USD", source_id="booking_9",
occurred_at=...)`` records a sale once; the scheduled runs pay every balance that reaches the
minimum, each vendor exactly once per period. See docs/payouts.md.
"""

from . import (
    _templates,  # noqa: F401  (registers the payouts family's notification templates)
    actors,
    tasks,
)
from ._balance import check_balances
from ._charges import ChargeExpired, ChargeSucceeded, defer_charge, sweep_charges
from ._ledger import (
    balances,
    calculate_vendor_earnings,
    commission_rate,
    record_adjustment,
    record_earning,
    set_commission_rate,
    split,
)
from ._models import Entry, PayoutInfo, Receipt, VendorEarnings
from ._periods import Period, period_for
from ._planning import payouts, receipts, report
from ._retrying import retry_payout
from ._settlement import settlement_report, settlement_rows
from .actors import LedgerWrite, record_entry

__all__ = [
    "ChargeExpired",
    "ChargeSucceeded",
    "Entry",
    "LedgerWrite",
    "PayoutInfo",
    "Period",
    "Receipt",
    "VendorEarnings",
    "actors",
    "balances",
    "calculate_vendor_earnings",
    "check_balances",
    "commission_rate",
    "defer_charge",
    "payouts",
    "period_for",
    "receipts",
    "record_adjustment",
    "record_earning",
    "record_entry",
    "report",
    "retry_payout",
    "set_commission_rate",
    "settlement_report",
    "settlement_rows",
    "split",
    "sweep_charges",
    "tasks",
]
