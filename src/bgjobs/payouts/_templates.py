"""The payouts family's notifications: their variables, registered with their files beside them."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..money import Money
from ..notifications import Category, Channel, Template, TemplateVariables, register_template

__all__ = ["LowBalanceAlert", "PayoutReceipt"]

#: ``<locale>/<name>/<part>``, searched after the host's ``BGJOBS_NOTIFICATIONS__TEMPLATES_DIR``.
DIRECTORY = Path(__file__).with_name("templates")


class PayoutReceipt(TemplateVariables):
    receipt_id: str
    amount: Money
    period: str
    booking_count: int = Field(ge=0)
    transaction_id: str


class LowBalanceAlert(TemplateVariables):
    balance: Money
    threshold: Money
    direction: Literal["below", "above"]

    @property
    def difference(self) -> Decimal:
        return abs(self.balance.amount - self.threshold.amount)


for _template in (
    Template("payout_receipt", Category.TRANSACTIONAL, (Channel.EMAIL,), PayoutReceipt, directory=DIRECTORY),
    Template(
        "low_balance_alert",
        Category.OPERATIONAL,
        (Channel.EMAIL, Channel.SMS),
        LowBalanceAlert,
        urgent=True,
        directory=DIRECTORY,
    ),
):
    register_template(_template)  # fmt: skip
