"""The balance check: the platform's balance per currency, with one alert per threshold crossing.

The last state seen (ok, below, above) is kept per currency, so a balance that stays low for a
day raises one alert when it falls, not one every five minutes; crossing back and out again
alerts again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

from .. import db, tally, wiring
from ..money import Money
from ._ledger import current
from ._models import BalanceState

__all__ = ["check_balances"]

logger = logging.getLogger("bgjobs.payouts")


def _state(amount: Decimal, low: Decimal, high: Decimal) -> str:
    return "below" if amount < low else "above" if amount > high else "ok"


def check_balances() -> dict[str, int]:
    """Read each configured currency's balance; returns how many were read and alerts raised."""
    settings = current()
    gateway = wiring.payment()
    counts = {"checked": 0, "alerts": 0}
    for currency in settings.balance_currencies:
        available = gateway.balance(currency=currency).available
        # The Decimal goes to the metrics library as it is; Prometheus's own values are floats.
        tally.gauge("bgjobs_balance", "The platform's available balance, by currency.",
                            ("currency",)).labels(currency).set(available.amount)  # fmt: skip
        state = _state(available.amount, settings.balance_min, settings.balance_max)
        now = datetime.now(UTC)
        with db.session() as s:
            seen = s.get(BalanceState, currency)
            before = seen.state if seen is not None else "ok"
            if seen is None:
                seen = BalanceState(currency=currency, state=state, amount_minor=available.minor_units)
            seen.state, seen.amount_minor, seen.updated_at = state, available.minor_units, now
            s.add(seen)
            crossed = state != "ok" and state != before
            if crossed:
                _alert(s, available, state, now)
        counts["checked"] += 1
        counts["alerts"] += int(crossed)
    return counts


def _alert(session: object, balance: Money, direction: str, now: datetime) -> None:
    settings = current()
    threshold = settings.balance_min if direction == "below" else settings.balance_max
    logger.warning(
        "the %s balance is %s, %s the threshold of %s", balance.currency, balance.amount, direction, threshold
    )
    tally.counter("bgjobs_balance_alerts_total", "Balance threshold crossings.",
                          ("currency", "direction")).labels(balance.currency, direction).inc()  # fmt: skip
    if settings.alert_email is None:
        return
    from .. import notifications

    notifications.send(
        "low_balance_alert", {"user_id": "operators", "email": settings.alert_email},
        {"balance": balance, "threshold": Money(amount=threshold, currency=balance.currency),
         "direction": direction},
        channels=["email"], key=f"balance:{balance.currency}:{direction}:{now:%Y%m%dT%H%M%S}",
        session=session,  # type: ignore[arg-type]
    )  # fmt: skip
