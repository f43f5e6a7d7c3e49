"""The payment port: payouts to payees, charges of customers, and balances.

Every call that moves money takes an idempotency key; a gateway must return the
first result again for a key it has seen, which is what makes retries safe.
"""

from __future__ import annotations

import abc
from typing import Literal

from pydantic import Field

from ..money import Money
from ._base import PortModel


class _MoneyMovement(PortModel):
    amount: Money
    idempotency_key: str = Field(min_length=1)
    description: str = ""
    metadata: dict[str, str] = Field(default_factory=dict)


class PayoutRequest(_MoneyMovement):
    payee_id: str = Field(min_length=1)


class ChargeRequest(_MoneyMovement):
    customer_id: str = Field(min_length=1)


class PaymentResult(PortModel):
    transaction_id: str
    status: Literal["succeeded", "pending"]
    amount: Money


class Balance(PortModel):
    available: Money


class PaymentGateway(abc.ABC):
    """Moves money. Subclass it and implement the three protected methods."""

    def payout(self, *, request: PayoutRequest) -> PaymentResult:
        """Pay ``request.amount`` to a payee, once per idempotency key.

        Raises:
            TransientError: try again later with the same key.
            PermanentError: the payout can never succeed as asked.
        """
        return self._payout(request=request)

    def charge(self, *, request: ChargeRequest) -> PaymentResult:
        """Charge a customer's stored payment method, once per idempotency key.

        Raises:
            TransientError: try again later with the same key.
            NoPaymentMethod: the customer has no stored payment method (yet).
            PermanentError: the charge can never succeed as asked (the card was refused).
        """
        return self._charge(request=request)

    def balance(self, *, currency: str) -> Balance:
        """The platform's available balance in ``currency``."""
        return self._balance(currency=currency)

    @abc.abstractmethod
    def _payout(self, *, request: PayoutRequest) -> PaymentResult: ...

    @abc.abstractmethod
    def _charge(self, *, request: ChargeRequest) -> PaymentResult: ...

    @abc.abstractmethod
    def _balance(self, *, currency: str) -> Balance: ...
