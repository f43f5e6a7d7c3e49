"""Payouts: an earnings ledger split by commission, weekly and monthly payout runs, receipts.

``bgjobs.payouts.record_earning("vendor_1", Decimal("200.00"), "USD", source_id="booking_9",
occurred_at=...)`` records a sale once; the scheduled runs pay every balance that reaches the
minimum, each vendor exactly once per period. See docs/payouts.md.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ..lazy import exports as _exports

if _TYPE_CHECKING:
    from . import actors, tasks
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
    from ._recording import LedgerWrite, record_entry
    from ._retrying import retry_payout
    from ._settlement import settlement_report, settlement_rows

#: Where each public name lives (docs/architecture.md: sending never imports handling).
_EXPORTS: dict[str, str] = {
    "actors": "actors", "tasks": "tasks", "check_balances": "_balance", "ChargeExpired": "_charges",
    "ChargeSucceeded": "_charges", "defer_charge": "_charges", "sweep_charges": "_charges",
    "balances": "_ledger", "calculate_vendor_earnings": "_ledger", "commission_rate": "_ledger",
    "record_adjustment": "_ledger", "record_earning": "_ledger", "set_commission_rate": "_ledger",
    "split": "_ledger", "Entry": "_models", "PayoutInfo": "_models", "Receipt": "_models",
    "VendorEarnings": "_models", "Period": "_periods", "period_for": "_periods", "payouts": "_planning",
    "receipts": "_planning", "report": "_planning", "retry_payout": "_retrying",
    "settlement_report": "_settlement", "settlement_rows": "_settlement", "LedgerWrite": "_recording",
    "record_entry": "_recording",
}  # fmt: skip

__getattr__, __dir__ = _exports(__name__, _EXPORTS)

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
