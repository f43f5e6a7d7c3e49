"""Paying payouts, in the worker: gateway calls under their claims, then one transaction.

A job pays a batch of a run's payouts (one, for a payout sent alone): it claims them in one
transaction, calls the gateway for each with the payout's id as the idempotency key, then one
transaction records each ``paid`` with its receipt (and the receipt email through the outbox), or
``failed`` with its entries unlinked back to the balance. A worker killed after the gateway paid
retries with the same keys, and the gateway answers with the first results. Settling a batch in
one transaction is what lets a worker keep up with the gateway on SQLite: two write transactions
per payout held its write lock for 1.7 ms of every payout.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import insert, update
from sqlmodel import Session, col, select

from .. import db, notifications, tally, tracing, wiring
from ..batching import carry
from ..claims import Answer, Claim, Claims, recheck_ms
from ..clock import now as _now
from ..errors import PermanentError
from ..ports import PayoutRequest
from ._ledger import current
from ._models import LedgerEntry, Payout, PayoutBatch, PayoutJob, PayoutReceipt
from .tasks import pay_vendor, pay_vendors

__all__ = ["CLAIMS", "pay", "pay_batch", "pay_many"]

logger = logging.getLogger("bgjobs.payouts")

_table: Any = Payout.__table__  # type: ignore[attr-defined]
#: A payout is claimed while its gateway call is made; ``paid`` and ``failed`` are settled.
CLAIMS = Claims(_table, name="payout", final=frozenset({"paid", "failed"}))


def _contact(vendor_id: str) -> Any:
    lookup = wiring.hook("vendor_contact", current().vendor_contact)
    return None if lookup is None else lookup(vendor_id=vendor_id)


def _count(outcome: str, count: int = 1) -> None:
    tally.counter("bgjobs_payouts_total", "Payouts by outcome.", ("outcome",)).labels(outcome).inc(count)


def pay(job: PayoutJob) -> str:
    """Pay one pending payout; returns ``paid``, ``failed``, ``duplicate`` (already settled) or
    ``busy`` (another worker is paying it; a copy of this job looks again later). See :func:`pay_many`."""

    def again(ids: list[str], delay: int) -> None:
        pay_vendor.send(job, delay=delay, **carry())  # its run completes with the copy

    return pay_many([job.payout_id], again)[job.payout_id]


def pay_batch(batch: PayoutBatch) -> dict[str, str]:
    """Pay a batch of pending payouts; each one's outcome, as :func:`pay`'s."""

    def again(ids: list[str], delay: int) -> None:
        pay_vendors.send(PayoutBatch(payout_ids=ids), delay=delay, **carry())

    return pay_many(batch.payout_ids, again)


def pay_many(ids: list[str], again: Callable[[list[str], int], None]) -> dict[str, str]:
    """Pay the payouts ``ids``, one gateway call at a time, and settle those answered together;
    ``again(busy ids, delay ms)`` sends a copy for the payouts another worker holds.

    At most one gateway call per payout is in flight: each call is made under the payout's claim
    (:mod:`bgjobs.claims`), which its worker renews while it waits, so a requeued job and a
    re-sent one never call the gateway at the same moment with the same key, which a gateway
    such as Stripe answers with 409 ``idempotency_key_in_use``.

    Every payout is tried; what the gateway answered is settled; then the job raises the first
    error of the others (one that is not permanent first, so the job is retried), and its retry
    takes up only the payouts still pending.

    Raises:
        TransientError: from the gateway; the job is retried with the same idempotency keys (a
            payout is never unlinked while the gateway might have paid it).
        LeaseLost: the worker was held up past a claim and another took the payout; retried.
        PermanentError: the gateway reported another amount than planned; nothing recorded.
    """
    now = _now()
    taken = CLAIMS.take_rows(ids, now)
    outcomes = {i: answer.value for i, (answer, _, _) in taken.items()}
    busy = [(i, seen) for i, (answer, seen, _) in taken.items() if answer is Answer.BUSY]
    for outcome in ("duplicate", "busy"):
        if count := sum(o == outcome for o in outcomes.values()):
            _count(outcome, count)
    claims = {i: claim for i, (_, _, claim) in taken.items() if claim is not None}
    answered: list[tuple[Payout, Claim, str, str]] = []
    errors: list[Exception] = []
    with contextlib.ExitStack() as held:
        for claim in claims.values():
            held.enter_context(claim.kept())
        payouts = _read(list(claims))
        try:
            for i in claims:
                try:
                    answered.append((payouts[i], claims[i], *_call_gateway(payouts[i], claims[i])))
                except Exception as exc:  # one vendor's trouble holds up nobody else in the batch
                    errors.append(exc)
        finally:  # what the gateway answered is recorded, whatever stopped the rest (a time limit)
            outcomes.update(_settle(answered))
    if errors:  # the job is retried for the payouts not answered (and those busy): a transient error says so
        raise next((e for e in errors if not isinstance(e, PermanentError)), errors[0])
    if busy:
        again([i for i, _ in busy], max(recheck_ms(seen, now) for _, seen in busy if seen is not None))
    return outcomes


def _read(ids: list[str]) -> dict[str, Payout]:
    if not ids:
        return {}
    with db.reading() as s:  # a read: it need not queue for SQLite's write lock
        return {p.id: p for p in s.exec(select(Payout).where(col(Payout.id).in_(ids)))}


def _call_gateway(payout: Payout, claim: Claim) -> tuple[str, str]:
    """``("paid", transaction id)`` or ``("failed", the gateway's reason)``."""
    request = PayoutRequest(
        payee_id=payout.vendor_id, amount=payout.amount, idempotency_key=payout.id,
        description=f"payout {payout.run_key}",
    )  # fmt: skip
    claim.check()  # a worker held up past its claim stops here: another may be paying it
    try:
        with tracing.span("payment.payout", **{"bgjobs.payout": payout.id}):
            result = wiring.payment().payout(request=request)
    except PermanentError as exc:
        return "failed", f"{type(exc).__name__}: {exc}"
    if result.amount != payout.amount:
        raise PermanentError(f"the gateway reports {result.amount.amount} {result.amount.currency} for "
                             f"{payout.id}, planned {payout.amount.amount}")  # fmt: skip
    return "paid", result.transaction_id


def _settle(answered: list[tuple[Payout, Claim, str, str]]) -> dict[str, str]:
    """Record the gateway's answers in one transaction; each payout's outcome (``duplicate`` where
    the claim was no longer this worker's: the row is the new holder's to settle). The receipts
    are made beforehand, outside the write transaction: on SQLite every other writer waits for it."""
    if not answered:
        return {}
    e: Any = LedgerEntry.__table__  # type: ignore[attr-defined]
    now, outcomes, paid = _now(), {}, []
    receipts = _receipts([(payout, said) for payout, _, outcome, said in answered if outcome == "paid"], now)
    with db.session() as s:
        for payout, claim, outcome, said in answered:
            if outcome == "failed":
                ok = CLAIMS.settle(s, claim, status="failed", error=said[:1000], settled_at=now)
                if ok:
                    s.execute(update(e).where(e.c.payout_id == payout.id).values(payout_id=None))
            else:
                ok = CLAIMS.settle(s, claim, status="paid", transaction_id=said[:200], settled_at=now)
                if ok:
                    paid.append(payout)
            outcomes[payout.id] = outcome if ok else "duplicate"
        if paid:
            s.execute(insert(_receipt_table), [receipts[p.id] for p in paid])
            _emails(s, [receipts[p.id] for p in paid], {p.id: p for p in paid})
    for payout, _, _, said in answered:
        if outcomes[payout.id] == "failed":
            logger.warning("payout %s refused; its entries return to the balance: %s", payout.id, said)
    for outcome in ("paid", "failed", "duplicate"):
        if count := sum(o == outcome for o in outcomes.values()):
            _count(outcome, count)
    for payout in paid:
        tally.counter(
            "bgjobs_payout_minor_units_total", "Paid out, in minor units, by currency.", ("currency",)
        ).labels(payout.currency).inc(payout.amount_minor)
    return outcomes


_receipt_table: Any = PayoutReceipt.__table__  # type: ignore[attr-defined]


def _receipts(paid: list[tuple[Payout, str]], now: datetime) -> dict[str, dict[str, Any]]:
    """Each paid payout's receipt row, listing its bookings. Read without the write lock: the
    entries linked to a payout change only when its own settle refuses it, under its claim."""
    if not paid:
        return {}
    e: Any = LedgerEntry.__table__  # type: ignore[attr-defined]
    # Only the payout_id index: a planner with stale statistics may AND it with a scan of every
    # earning's kind (100 ms per payout at 1M entries on PostgreSQL).
    linked = (select(e.c.payout_id, e.c.source_id, e.c.kind)
              .where(e.c.payout_id.in_([p.id for p, _ in paid]))
              .order_by(e.c.payout_id, e.c.occurred_at, e.c.id))  # fmt: skip
    bookings: dict[str, list[str]] = {p.id: [] for p, _ in paid}
    with db.reading() as s:
        for payout_id, booking, kind in s.execute(linked):
            if kind == "earning":
                bookings[payout_id].append(booking)
    return {payout.id: {
        "id": f"rcpt_{uuid.uuid4().hex[:24]}", "payout_id": payout.id, "vendor_id": payout.vendor_id,
        "amount_minor": payout.amount_minor, "currency": payout.currency,
        "period": payout.run_key.split(":")[1], "booking_count": len(bookings[payout.id]),
        "booking_ids": bookings[payout.id], "transaction_id": transaction_id[:200], "issued_at": now,
    } for payout, transaction_id in paid}  # fmt: skip


def _emails(s: Session, receipts: list[dict[str, Any]], payouts: dict[str, Payout]) -> None:
    """Each receipt's email through the outbox, in the settling transaction, to vendors with a contact."""
    for receipt in receipts:
        payout = payouts[receipt["payout_id"]]
        recipient = _contact(payout.vendor_id)
        if recipient is not None:
            notifications.send("payout_receipt", recipient, {
                "receipt_id": receipt["id"], "amount": payout.amount, "period": receipt["period"],
                "booking_count": receipt["booking_count"], "transaction_id": receipt["transaction_id"],
            }, key=f"payout-receipt:{payout.id}", session=s)  # fmt: skip
