"""Paying one payout, in the worker: one gateway call under a lease, then one transaction.

The gateway is called with the payout's id as the idempotency key, then one transaction records
``paid`` with the receipt (and the receipt email through the outbox), or ``failed`` with the
entries unlinked back to the balance. A worker killed after the gateway paid retries with the
same key, and the gateway answers with the first result.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import literal, select, update
from sqlmodel import col

from .. import db, notifications, runtime, tally, tracing, wiring
from ..clock import now as _now
from ..coordination import Held
from ..errors import PermanentError
from ..ports import PayoutRequest
from ._ledger import current
from ._models import LedgerEntry, Payout, PayoutJob, PayoutReceipt
from ._planning import write_report
from .tasks import pay_vendor

__all__ = ["LEASE_RECHECK_MS", "pay"]

logger = logging.getLogger("bgjobs.payouts")

#: A job that found its payout being paid looks again this much later (the holder renews its
#: lease while it waits for the gateway, so the lease's expiry says nothing about when it ends).
LEASE_RECHECK_MS = 1_000


def _contact(vendor_id: str) -> Any:
    lookup = wiring.hook("vendor_contact", current().vendor_contact)
    return None if lookup is None else lookup(vendor_id=vendor_id)


def _count(outcome: str) -> None:
    tally.counter("bgjobs_payouts_total", "Payouts by outcome.", ("outcome",)).labels(outcome).inc()


def _finish_if_last(run_key: str) -> None:
    """Once no payout of the run is pending, complete its ``bgjobs_runs`` row with the report.

    No counter row is updated per payout: under concurrent payouts that one row would serialise
    every payment's transaction. The check is an index probe; two payouts settling last at the
    same time both write the same report.
    """
    with db.read() as conn:
        pending = conn.execute(
            select(literal(1)).where(col(Payout.run_key) == run_key, col(Payout.status) == "pending").limit(1)
        ).first()
    if pending is None:
        write_report(run_key)


def pay(job: PayoutJob) -> str:
    """Pay one pending payout; returns ``paid``, ``failed``, ``duplicate`` (already settled) or
    ``busy`` (another worker is paying it; this job is sent again, :data:`LEASE_RECHECK_MS` later).

    At most one gateway call per payout is in flight: the call is made under a lease (see
    :mod:`bgjobs.coordination`) that its worker renews while it waits, so a requeued job and a
    re-sent one never call the gateway at the same moment with the same key, which a
    gateway such as Stripe answers with 409 ``idempotency_key_in_use``.

    Raises:
        TransientError: from the gateway; the job is retried with the same idempotency key and
            the payout stays pending (never unlinked while the gateway might have paid).
    """
    with db.session() as s:
        payout = s.get(Payout, job.payout_id)
    if payout is None or payout.status != "pending":
        _count("duplicate")
        return "duplicate"
    ttl_ms = runtime.current().settings.worker.heartbeat_timeout_ms
    lease = runtime.current().coordination.lease(f"bgjobs-payout:{payout.id}", ttl_ms=ttl_ms)
    if not lease.acquire():
        pay_vendor.send(job, delay=LEASE_RECHECK_MS)
        _count("busy")
        return "busy"
    with lease.kept() as held:
        with db.session() as s:  # the previous holder may have settled it before we took the lease
            payout = s.get(Payout, job.payout_id)
        if payout is None or payout.status != "pending":
            _count("duplicate")
            return "duplicate"
        return _call_gateway(payout, held)


def _call_gateway(payout: Payout, held: Held) -> str:
    request = PayoutRequest(
        payee_id=payout.vendor_id, amount=payout.amount, idempotency_key=payout.id,
        description=f"payout {payout.run_key}",
    )  # fmt: skip
    held.check()  # a worker held up past the lease's ttl stops here: another may be paying it
    try:
        with tracing.span("payment.payout", **{"bgjobs.payout": payout.id}):
            result = wiring.payment().payout(request=request)
    except PermanentError as exc:
        return _fail(payout, f"{type(exc).__name__}: {exc}")
    if result.amount != payout.amount:
        raise PermanentError(f"the gateway reports {result.amount.amount} {result.amount.currency} for "
                             f"{payout.id}, planned {payout.amount.amount}")  # fmt: skip
    return _paid(payout, result.transaction_id)


def _fail(payout: Payout, error: str) -> str:
    e: Any = LedgerEntry.__table__  # type: ignore[attr-defined]
    with db.session() as s:
        done: Any = s.execute(
            update(Payout.__table__)  # type: ignore[attr-defined]
            .where(Payout.__table__.c.id == payout.id, Payout.__table__.c.status == "pending")  # type: ignore[attr-defined]
            .values(status="failed", error=error[:1000], settled_at=_now())
        )
        if done.rowcount != 1:
            return "duplicate"
        s.execute(update(e).where(e.c.payout_id == payout.id).values(payout_id=None))
    logger.warning("payout %s refused; its entries return to the balance: %s", payout.id, error)
    _count("failed")
    _finish_if_last(payout.run_key)
    return "failed"


def _paid(payout: Payout, transaction_id: str) -> str:
    e: Any = LedgerEntry.__table__  # type: ignore[attr-defined]
    now = _now()
    with db.session() as s:
        done: Any = s.execute(
            update(Payout.__table__)  # type: ignore[attr-defined]
            .where(Payout.__table__.c.id == payout.id, Payout.__table__.c.status == "pending")  # type: ignore[attr-defined]
            .values(status="paid", transaction_id=transaction_id[:200], settled_at=now)
        )
        if done.rowcount != 1:
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
    _finish_if_last(payout.run_key)
    return "paid"
