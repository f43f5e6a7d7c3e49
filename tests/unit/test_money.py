from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from bgjobs.money import Money


def test_minor_units_follow_the_currency_exponent() -> None:
    assert Money(amount=Decimal("12.34"), currency="USD").minor_units == 1234
    assert Money(amount=Decimal("1234"), currency="JPY").minor_units == 1234
    assert Money(amount=Decimal("1.234"), currency="KWD").minor_units == 1234
    assert Money.from_minor(1234, "USD").amount == Decimal("12.34")


@pytest.mark.parametrize(
    ("amount", "currency", "fragment"),
    [
        (12.5, "USD", "floats are not accepted"),
        (Decimal("1.234"), "USD", "USD allows 2"),
        (Decimal("1.5"), "JPY", "JPY allows 0"),
        (Decimal("1"), "XXQ", "unknown currency"),
        (Decimal("NaN"), "USD", "finite"),
    ],
)
def test_bad_money_is_refused_with_the_reason(amount: object, currency: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        Money(amount=amount, currency=currency)  # type: ignore[arg-type]
    assert fragment in str(info.value)
