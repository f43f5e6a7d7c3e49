"""Money as ``Decimal`` plus an ISO 4217 currency, never a float.

Amounts are stored as integer minor units (cents; yen have none), so the
currency's exponent decides how many decimals an amount may carry.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

__all__ = ["CURRENCY_EXPONENTS", "MAX_MINOR_UNITS", "Money", "exponent"]

#: The largest amount, in minor units, bgjobs accepts (10 trillion dollars): far inside the
#: BIGINT columns that store amounts, with room for the sums a payout run adds up.
MAX_MINOR_UNITS = 10**15

#: ISO 4217 minor-unit exponents. Currencies not listed here are refused, not guessed.
CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        [
            "AED",
            "AUD",
            "BRL",
            "CAD",
            "CHF",
            "CNY",
            "CZK",
            "DKK",
            "EUR",
            "GBP",
            "HKD",
            "IDR",
            "ILS",
            "INR",
            "MXN",
            "MYR",
            "NOK",
            "NZD",
            "PHP",
            "PLN",
            "RON",
            "SEK",
            "SGD",
            "THB",
            "TRY",
            "TWD",
            "USD",
            "ZAR",
            "EGP",
            "NGN",
            "KES",
            "MAD",
            "SAR",
            "QAR",
            "COP",
            "PEN",
            "ARS",
        ],
        2,
    ),
    **dict.fromkeys(["JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF", "PYG", "RWF"], 0),
    **dict.fromkeys(["BHD", "JOD", "KWD", "OMR", "TND", "LYD", "IQD"], 3),
}


def exponent(currency: str) -> int:
    """The number of decimals ``currency`` allows.

    Raises:
        ValueError: the currency is not a known ISO 4217 code.
    """
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise ValueError(f"unknown currency {currency!r} (expected an ISO 4217 code such as 'USD')") from None


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("floats are not accepted for money; pass a Decimal, a string or integer minor units")
    return value


def _currency(value: Any) -> Any:
    if isinstance(value, str):
        exponent(value)
    return value


class Money(BaseModel):
    """An exact amount in one currency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount: Annotated[Decimal, BeforeValidator(_no_float)]
    currency: Annotated[str, BeforeValidator(_currency)]

    @model_validator(mode="after")
    def _fits_currency(self) -> Money:
        places = -int(self.amount.as_tuple().exponent)
        if not self.amount.is_finite():
            raise ValueError("amount must be finite")
        if places > exponent(self.currency):
            raise ValueError(
                f"{self.amount} has {places} decimals; {self.currency} allows {exponent(self.currency)}"
            )
        if abs(self.minor_units) > MAX_MINOR_UNITS:
            largest = Decimal(MAX_MINOR_UNITS).scaleb(-exponent(self.currency))
            raise ValueError(f"{self.amount} {self.currency} is too large (at most {largest:f})")
        return self

    @property
    def minor_units(self) -> int:
        """The amount in the currency's smallest unit (cents, yen, fils)."""
        return int(self.amount.scaleb(exponent(self.currency)))

    @classmethod
    def from_minor(cls, units: int, currency: str) -> Money:
        """Build from integer minor units."""
        return cls(amount=Decimal(units).scaleb(-exponent(currency)), currency=currency)
