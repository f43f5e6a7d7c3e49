"""Paying one payout, in the worker: one gateway call under its claim, then one transaction.

The gateway is called with the payout's id as the idempotency key, then one transaction records
``paid`` with the receipt (and the receipt email through the outbox), or ``failed`` with the
entries unlinked back to the balance. A worker killed after the gateway paid retries with the
same key, and the gateway answers with the first result.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import select, update

from .. import db, notifications, tally, tracing, wiring
from ..batching import carry
from ..claims import Answer, Claim, Claims, recheck_ms
from ..clock import now as _now
from ..errors import PermanentError
from ..ports import PayoutRequest
from ._ledger import current
from ._models import LedgerEntry, Payout, PayoutJob, PayoutReceipt
from .tasks import pay_vendor

__all__ = ["CLAIMS", "pay"]

logger = logging.getLogger("bgjobs.payouts")

_table: Any = Payout.__table__  # type: ignore[attr-defined]
#: A payout is claimed while its gateway call is made; ``paid`` and ``failed`` are settled.
CLAIMS = Claims(_table, name="payout", final=frozenset({"paid", "failed"}))


def _contact(vendor_id: str) -> Any:
    lookup = wiring.hook("vendor_contact", current().vendor_contact)
    return None if lookup is None else lookup(vendor_id=vendor_id)


def _count(outcome: str) -> None:
    tally.counter("bgjobs_payouts_total", "Payouts by outcome.", ("outcome",)).labels(outcome).inc()


def pay(job: PayoutJob) -> str:
    """Pay one pending payout; returns ``paid``, ``failed``, ``duplicate`` (already settled) or
    ``busy`` (another worker is paying it; this job looks again later).

    At most one gateway call per payout is in flight: the call is made under the payout's claim
    (:mod:`bgjobs.claims`), which its worker renews while it waits, so a requeued job and a
    re-sent one never call the gateway at the same moment with the same key, which a gateway
    such as Stripe answers with 409 ``idempotency_key_in_use``.

    Raises:
        TransientError: from the gateway; the job is retried with the same idempotency key and
            the payout stays pending (never unlinked while the gateway might have paid).
        LeaseLost: the worker was held up past its claim and another took the payout; retried.
    """
    now = _now()
    answer, seen, claim = CLAIMS.take_row(job.payout_id, now)
    if answer is Answer.DUPLICATE:
        _count("duplicate")
        return "duplicate"
    if claim is None:
        assert seen is not None
        pay_vendor.send(job, delay=recheck_ms(seen, now), **carry())  # its run completes with the copy
        _count("busy")
        return "busy"
    with claim.kept():
        with db.reading() as s:  # a read: it need not queue for SQLite's write lock
            payout = s.get(Payout, job.payout_id)
        assert payout is not None
        return _call_gateway(payout, claim)


def _call_gateway(payout: Payout, claim: Claim) -> str:
    request = PayoutRequest(
        payee_id=payout.vendor_id, amount=payout.amount, idempotency_key=payout.id,
        description=f"payout {payout.run_key}",
    )  # fmt: skip
    claim.check()  # a worker held up past its claim stops here: another may be paying it
    try:
        with tracing.span("payment.payout", **{"bgjobs.payout": payout.id}):
            result = wiring.payment().payout(request=request)
    except PermanentError as exc:
        return _fail(payout, claim, f"{type(exc).__name__}: {exc}")
    if result.amount != payout.amount:
        raise PermanentError(f"the gateway reports {result.amount.amount} {result.amount.currency} for "
                             f"{payout.id}, planned {payout.amount.amount}")  # fmt: skip
    return _paid(payout, claim, result.transaction_id)


def _fail(payout: Payout, claim: Claim, error: str) -> str:
    e: Any = LedgerEntry.__table__  # type: ignore[attr-defined]
    with db.session() as s:
        if not CLAIMS.settle(s, claim, status="failed", error=error[:1000], settled_at=_now()):
            return "duplicate"
        s.execute(update(e).where(e.c.payout_id == payout.id).values(payout_id=None))
    logger.warning("payout %s refused; its entries return to the balance: %s", payout.id, error)
    _count("failed")
    return "failed"


def _paid(payout: Payout, claim: Claim, transaction_id: str) -> str:
    e: Any = LedgerEntry.__table__  # type: ignore[attr-defined]
    now = _now()
    with db.session() as s:
        if not CLAIMS.settle(s, claim, status="paid", transaction_id=transaction_id[:200], settled_at=now):
            return "duplicate"
        # Only the payout_id index: a planner with stale statistics may AND it with a scan of
        # every earning's kind (100 ms per payout at 1M entries on PostgreSQL).
        linked = select(e.c.source_id, e.c.kind).where(e.c.payout_id == payout.id)
        bookings = [b for b, kind in s.execute(linked.order_by(e.c.occurred_at, e.c.id)) if kind == "earning"]
        receipt = PayoutReceipt(
            id=f"rcpt_{uuid.uuid4().hex[:24]}", payout_id=payout.id, vendor_id=payout.vendor_id,
            amount_minor=payout.amount_minor, currency=payout.currency,
            period=payout.run_key.split(":")[1], booking_count=len(bookings), booking_ids=bookings,
            transaction_id=transaction_id[:200], issued_at=now,
        )  # fmt: skip
        s.add(receipt)
        recipient = _contact(payout.vendor_id)
        if recipient is not None:
            notifications.send("payout_receipt", recipient, {
                "receipt_id": receipt.id, "amount": payout.amount, "period": receipt.period,
                "booking_count": receipt.booking_count, "transaction_id": transaction_id,
            }, key=f"payout-receipt:{payout.id}", session=s)  # fmt: skip
    _count("paid")
    tally.counter(
        "bgjobs_payout_minor_units_total", "Paid out, in minor units, by currency.", ("currency",)
    ).labels(payout.currency).inc(payout.amount_minor)
    return "paid"
