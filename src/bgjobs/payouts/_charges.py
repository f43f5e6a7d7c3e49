"""Deferred charges: queued now, charged by a sweep, each exactly once.

``defer_charge`` stores a charge under the host's key. Every 5 minutes the sweep takes the
pending charges customer by customer, charges each with the idempotency key ``charge:{key}``,
and publishes the charge's ``on_success_event`` in the transaction that records the success
(through the outbox), so the host's follow-up (publishing a page) happens once. A customer the
gateway says has no payment method is skipped until the next sweep; a charge that has not
succeeded within ``BGJOBS_PAYOUTS__CHARGE_TTL_MIN`` of its first failure (or of its creation,
with ``BGJOBS_PAYOUTS__CHARGE_TTL_FROM=created``) expires, with ``charge.expired``.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import groupby
from typing import Any

from pydantic import BaseModel
from sqlalchemy import update
from sqlmodel import Session, col, select

from .. import db, events, outbox, tracing, wiring
from ..clock import now as _now
from ..errors import InvalidPayload, PermanentError, TransientError
from ..money import Money
from ..ports import ChargeRequest, NoPaymentMethod
from ._ledger import _money, current
from ._models import Charge

__all__ = ["ChargeExpired", "ChargeSucceeded", "defer_charge", "sweep_charges"]

logger = logging.getLogger("bgjobs.payouts")


class ChargeSucceeded(BaseModel):
    """The payload of a charge's ``on_success_event``."""

    charge_id: str
    key: str
    customer_id: str
    amount: Money
    description: str
    transaction_id: str


class ChargeExpired(BaseModel):
    """``charge.expired``: a charge kept failing past its TTL and will not be tried again."""

    charge_id: str
    key: str
    customer_id: str
    amount: Money
    description: str
    reason: str


events.declare("charge.expired", ChargeExpired)


def defer_charge(
    customer_id: str,
    amount: Decimal | str | int,
    currency: str,
    *,
    description: str,
    key: str,
    on_success_event: str | None = None,
    session: Session | None = None,
) -> Charge:
    """Queue a charge of a customer's stored payment method; the same ``key`` again returns it.

    Args:
        key: the host's id for what is being paid for (``page:42:publish``).
        on_success_event: an event published (with :class:`ChargeSucceeded`) once it succeeds.
        session: the host's session, to queue the charge in the host's own transaction.

    Raises:
        InvalidPayload: a float, zero or negative amount, an unknown currency, too many decimals,
            or a bad key; the message names the field.
    """
    money = _money("amount", amount, currency)
    if money.amount <= 0:
        raise InvalidPayload(f"amount: a charge must be positive, got {money.amount}")
    if not key or len(key) > 200:
        raise InvalidPayload("key: 1 to 200 characters")
    values = {"id": f"chg_{uuid.uuid4().hex[:24]}", "key": key, "customer_id": customer_id,
              "amount_minor": money.minor_units, "currency": currency, "description": description,
              "on_success_event": on_success_event, "status": "pending", "attempts": 0,
              "created_at": _now()}  # fmt: skip

    def insert(s: Session) -> Charge:
        db.insert_new(s, Charge, values, unique=("key",))
        return s.exec(select(Charge).where(Charge.key == key)).one()

    if session is not None:
        return insert(session)
    with db.session() as s:
        return insert(s)


def _record(charge: Charge, **values: Any) -> bool:
    with db.session() as s:
        done: Any = s.execute(
            update(Charge)
            .where(col(Charge.id) == charge.id, col(Charge.status) == "pending")
            .values(**values)
        )
        if done.rowcount != 1:
            return False
        if values.get("status") == "succeeded" and charge.on_success_event:
            outbox.defer(s, charge.on_success_event, ChargeSucceeded(
                charge_id=charge.id, key=charge.key, customer_id=charge.customer_id, amount=charge.amount,
                description=charge.description, transaction_id=values["transaction_id"],
            ))  # fmt: skip
        if values.get("status") == "expired":
            outbox.defer(s, "charge.expired", ChargeExpired(
                charge_id=charge.id, key=charge.key, customer_id=charge.customer_id, amount=charge.amount,
                description=charge.description, reason=values["last_error"],
            ))  # fmt: skip
    return True


class _Ttl:
    """When a pending charge expires: ``charge_ttl_min`` after its first failure, or its creation."""

    def __init__(self) -> None:
        settings = current()
        self.length = timedelta(minutes=settings.charge_ttl_min)
        self.from_creation = settings.charge_ttl_from == "created"

    def start(self, charge: Charge, now: datetime) -> datetime:
        return db.aware(charge.created_at if self.from_creation else charge.first_failed_at or now)

    def too_late(self, charge: Charge, now: datetime) -> bool:
        """With ``created``, a charge already past its TTL expires without a gateway call."""
        return self.from_creation and now - self.start(charge, now) >= self.length


def _failed(charge: Charge, error: str, now: datetime, ttl: _Ttl) -> str:
    since = ttl.start(charge, now)
    if now - since >= ttl.length:
        _record(
            charge, status="expired", last_error=error[:1000], attempts=charge.attempts + 1, settled_at=now
        )
        return "expired"
    first = db.aware(charge.first_failed_at or now)
    _record(charge, last_error=error[:1000], attempts=charge.attempts + 1, first_failed_at=first)
    return "failed"


def sweep_charges(*, deadline: float | None = None) -> dict[str, int]:
    """Charge every pending charge once; returns processed, failed, skipped and expired counts.

    Args:
        deadline: a ``time.monotonic()`` after which the sweep stops; the rest waits for the next.
    """
    ttl = _Ttl()
    counts = {"processed": 0, "failed": 0, "skipped": 0, "expired": 0}
    with db.session() as s:
        pending = list(s.exec(
            select(Charge).where(Charge.status == "pending")
            .order_by(col(Charge.customer_id), col(Charge.created_at))
        ))  # fmt: skip
    gateway = wiring.payment()
    for customer, group in groupby(pending, key=lambda c: c.customer_id):
        charges = list(group)
        for i, charge in enumerate(charges):
            if deadline is not None and time.monotonic() > deadline:
                return counts
            now = _now()
            if ttl.too_late(charge, now):
                minutes = current().charge_ttl_min
                why = f"not charged within {minutes} minute{'' if minutes == 1 else 's'} of its creation"
                counts["expired"] += int(_record(charge, status="expired", settled_at=now, last_error=why))
                continue
            key = f"charge:{charge.key}"
            request = ChargeRequest(customer_id=customer, amount=charge.amount, idempotency_key=key,
                                    description=charge.description)  # fmt: skip
            try:
                with tracing.span("payment.charge", **{"bgjobs.charge": charge.key}):
                    result = gateway.charge(request=request)
            except NoPaymentMethod as exc:
                for waiting in charges[i:]:  # the customer's other charges wait too
                    outcome = _failed(waiting, f"{type(exc).__name__}: {exc}", now, ttl)
                    counts["skipped" if outcome == "failed" else "expired"] += 1
                break
            except (TransientError, PermanentError) as exc:
                counts[_failed(charge, f"{type(exc).__name__}: {exc}", now, ttl)] += 1
                continue
            recorded = _record(charge, status="succeeded", transaction_id=result.transaction_id[:200],
                               settled_at=now, attempts=charge.attempts + 1, last_error=None)  # fmt: skip
            counts["processed"] += int(recorded)
    if any(counts.values()):
        logger.info("charges: %s", counts)
    return counts
