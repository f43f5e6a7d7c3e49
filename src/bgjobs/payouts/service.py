"""Payout runs: plan a period in SQL, then pay each vendor in its own job, exactly once.

Planning is two set-based statements in one transaction, whatever the number of entries:

1. link every unpaid entry up to the period's end to its vendor's payout
   (``payout:{run}:{vendor}:{currency}``), for the (vendor, currency) balances that reach the
   minimum; the rest stays unlinked and carries forward, negative balances included;
2. insert one payout per linked group, its amount the sum of exactly the entries linked to it.

The planning row (``bgjobs_payout_runs``) is inserted in the same transaction, so a period is
planned once: triggering it again (or a redelivered run job) only re-sends the jobs of payouts
still pending. An entry has one ``payout_id``, so it can never be in two payouts.

Paying one payout: the gateway is called with the payout's id as the idempotency key, then one
transaction records ``paid`` with the receipt (and the receipt email through the outbox), or
``failed`` with the entries unlinked back to the balance. A worker killed after the gateway
paid retries with the same key, and the gateway answers with the first result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, insert, literal, select, tuple_, update
from sqlmodel import Session, col

from .. import db, observability, runs, wiring
from ..clock import now as _now
from ..errors import PermanentError
from ..money import Money, exponent
from ..ports import PayoutRequest
from ..typed import send_messages
from ..wiring import load_object
from .ledger import current
from .models import LedgerEntry, Payout, PayoutJob, PayoutReceipt, PayoutRun
from .periods import Period

__all__ = ["configure", "pay", "plan", "plan_payouts", "report", "resend_pending"]

logger = logging.getLogger("bgjobs.payouts")

SEND_BATCH = 1_000


def _minimum_minor(currency: str) -> int:
    settings = current()
    amount = settings.minimums.get(currency, settings.minimum)
    return int(Decimal(amount).scaleb(exponent(currency)))


def _range(prefix: str) -> tuple[str, str]:
    # Every payout id of a run starts with the prefix; the range scan uses the index, unlike LIKE.
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def plan(period: Period, *, run_id: str) -> dict[str, Any]:
    """Plan ``period`` once, send its payouts' jobs, and return the run's report so far.

    The caller writes the final report with :func:`write_report` once its run is recorded.
    """
    first = plan_payouts(period, run_id=run_id)
    sent = resend_pending(period.key)
    return {**report(period.key), "planned_now": first, "jobs_sent": sent}


def plan_payouts(period: Period, *, run_id: str) -> bool:
    """The planning transaction; True if this call planned the period, False if it was planned before."""
    e: Any = LedgerEntry.__table__  # type: ignore[attr-defined]
    p: Any = Payout.__table__  # type: ignore[attr-defined]
    now = _now()
    low, high = _range(f"payout:{period.key}:")
    with db.session() as s:
        first = db.insert_new(s, PayoutRun, {
            "key": period.key, "period_start": period.start, "period_end": period.end, "run_id": run_id,
            "payouts": 0, "carried": 0, "created_at": now,
        })  # fmt: skip
        if first:
            unpaid = and_(e.c.payout_id.is_(None), e.c.occurred_at < period.end)
            currencies = [c for (c,) in s.execute(select(e.c.currency).where(unpaid).distinct())]
            if currencies:
                minimum = case(*((e.c.currency == c, _minimum_minor(c)) for c in currencies), else_=0)
                payable = (
                    select(e.c.vendor_id, e.c.currency).where(unpaid)
                    .group_by(e.c.vendor_id, e.c.currency)
                    .having(and_(func.sum(e.c.vendor_minor) >= minimum, func.sum(e.c.vendor_minor) > 0))
                )  # fmt: skip
                payout_id = literal(low) + e.c.vendor_id + literal(":") + e.c.currency
                s.execute(
                    update(e).where(unpaid, tuple_(e.c.vendor_id, e.c.currency).in_(payable))
                    .values(payout_id=payout_id)
                    .execution_options(synchronize_session=False)
                )  # fmt: skip
                linked = and_(e.c.payout_id >= low, e.c.payout_id < high)
                columns = ["id", "run_key", "vendor_id", "currency", "amount_minor", "entries", "status",
                           "created_at"]  # fmt: skip
                s.execute(insert(p).from_select(
                    columns,
                    select(e.c.payout_id, literal(period.key), e.c.vendor_id, e.c.currency,
                           func.sum(e.c.vendor_minor), func.count(), literal("pending"), literal(now))
                    .where(linked).group_by(e.c.payout_id, e.c.vendor_id, e.c.currency),
                ))  # fmt: skip
            planned = s.execute(
                select(func.count()).select_from(p).where(p.c.run_key == period.key)
            ).scalar_one()
            groups = select(e.c.vendor_id, e.c.currency).where(unpaid).group_by(e.c.vendor_id, e.c.currency)
            carried = s.execute(select(func.count()).select_from(groups.subquery())).scalar_one()
            s.execute(
                update(PayoutRun.__table__)  # type: ignore[attr-defined]
                .where(PayoutRun.__table__.c.key == period.key)  # type: ignore[attr-defined]
                .values(payouts=planned, carried=carried)
            )
    return first


def resend_pending(run_key: str) -> int:
    """Send the jobs of a run's pending payouts (copies of jobs already queued pay nobody twice)."""
    from .actors import pay_vendor

    with db.session() as s:
        ids = [i for (i,) in s.execute(select(col(Payout.id)).where(
            col(Payout.run_key) == run_key, col(Payout.status) == "pending"))]  # fmt: skip
    for start in range(0, len(ids), SEND_BATCH):
        batch = [pay_vendor.message(PayoutJob(payout_id=i)) for i in ids[start : start + SEND_BATCH]]
        send_messages(pay_vendor.actor.broker, batch)
    return len(ids)


def report(run_key: str, *, session: Session | None = None) -> dict[str, Any]:
    """A run's report: its period, the payouts paid, failed and pending, amounts, what carried forward."""
    with contextlib.nullcontext(session) if session is not None else db.session() as s:
        run = s.get(PayoutRun, run_key)
        if run is None:
            return {}
        by_status = {"pending": 0, "paid": 0, "failed": 0}
        totals: dict[str, str] = {}
        query = (
            select(col(Payout.status), col(Payout.currency), func.sum(col(Payout.amount_minor)), func.count())
            .where(col(Payout.run_key) == run_key)
            .group_by(col(Payout.status), col(Payout.currency))
        )
        for status, currency, total, count in s.execute(query):
            by_status[status] = by_status.get(status, 0) + int(count)
            if status == "paid":
                totals[currency] = str(Money.from_minor(int(total), currency).amount)
        started = db.aware(run.created_at)
        return {
            "period": run_key, "period_start": run.period_start.isoformat(),
            "period_end": run.period_end.isoformat(), "payouts": run.payouts, **by_status,
            "vendors_paid": by_status["paid"], "total_paid": totals, "carried_forward": run.carried,
            "duration_s": round((_now() - started).total_seconds(), 3),
        }  # fmt: skip


def write_report(run_key: str) -> None:
    """Write the run's report to its ``bgjobs_runs`` row, computed while holding that row.

    The weekly job finishes its run with the report it took while payouts were pending, and the
    pay jobs may settle the last payout before that write: without an order, the older report
    could land last and stay ("paid 0, pending 2" for good). Each writer locks the row (``FOR
    UPDATE`` on PostgreSQL; on SQLite every write transaction holds the database), then computes,
    so the last writer's report includes every payout settled before it.
    """
    with db.session() as s:
        run_id = s.execute(
            select(col(PayoutRun.run_id)).where(col(PayoutRun.key) == run_key)
        ).scalar()
        if run_id is None:
            return
        held = s.execute(select(runs.Run).where(col(runs.Run.id) == run_id).with_for_update()).scalar()
        if held is None:
            return
        held.counts = json.dumps(report(run_key, session=s), default=str, sort_keys=True)
        s.add(held)


# Paying one vendor, in the worker.

#: A job that found its payout being paid looks again this much later (the holder renews its
#: lease while it waits for the gateway, so the lease's expiry says nothing about when it ends).
LEASE_RECHECK_MS = 1_000

_lock = threading.Lock()
_vendor_contact: Callable[..., Any] | None = None


def configure(*, vendor_contact: Callable[..., Any] | None = None) -> None:
    """Set ``vendor_contact(vendor_id=) -> Recipient | mapping | None`` in code (wins over the setting)."""
    global _vendor_contact
    with _lock:
        _vendor_contact = vendor_contact


def _contact(vendor_id: str) -> Any:
    with _lock:
        lookup = _vendor_contact
    if lookup is None and current().vendor_contact:
        lookup = load_object(str(current().vendor_contact))
    return None if lookup is None else lookup(vendor_id=vendor_id)


def _count(outcome: str) -> None:
    observability.counter("bgjobs_payouts_total", "Payouts by outcome.", ("outcome",)).labels(outcome).inc()


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
    ``busy`` (another worker is paying it; this job looks again later).

    At most one gateway call per payout is in flight: the call is made under a lease (see
    :mod:`bgjobs.coordination`) that its worker renews while it waits, so a requeued job and a
    re-sent one never call the gateway at the same moment with the same key, which a
    gateway such as Stripe answers with 409 ``idempotency_key_in_use``.

    Raises:
        TransientError: from the gateway; the job is retried with the same idempotency key and
            the payout stays pending (never unlinked while the gateway might have paid).
    """
    from ..broker import current_settings, get_broker
    from ..coordination import coordination_for
    from .actors import pay_vendor

    with db.session() as s:
        payout = s.get(Payout, job.payout_id)
    if payout is None or payout.status != "pending":
        _count("duplicate")
        return "duplicate"
    ttl_ms = current_settings().worker.heartbeat_timeout_ms
    lease = coordination_for(get_broker()).lease(f"bgjobs-payout:{payout.id}", ttl_ms=ttl_ms)
    if not lease.acquire():
        pay_vendor.send(job, delay=LEASE_RECHECK_MS)
        _count("busy")
        return "busy"
    with lease.kept():
        with db.session() as s:  # the previous holder may have settled it before we took the lease
            payout = s.get(Payout, job.payout_id)
        if payout is None or payout.status != "pending":
            _count("duplicate")
            return "duplicate"
        return _call_gateway(payout)


def _call_gateway(payout: Payout) -> str:
    request = PayoutRequest(
        payee_id=payout.vendor_id, amount=payout.amount, idempotency_key=payout.id,
        description=f"payout {payout.run_key}",
    )  # fmt: skip
    try:
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
            period=payout.run_key.split(":", 1)[1], booking_count=len(bookings), booking_ids=bookings,
            transaction_id=transaction_id[:200], issued_at=now,
        )  # fmt: skip
        s.add(receipt)
        recipient = _contact(payout.vendor_id)
        if recipient is not None:
            from .. import notifications

            notifications.send("payout_receipt", recipient, {
                "receipt_id": receipt.id, "amount": payout.amount, "period": receipt.period,
                "booking_count": receipt.booking_count, "transaction_id": transaction_id,
            }, key=f"payout-receipt:{payout.id}", session=s)  # fmt: skip
    _count("paid")
    observability.counter(
        "bgjobs_payout_minor_units_total", "Paid out, in minor units, by currency.", ("currency",)
    ).labels(payout.currency).inc(payout.amount_minor)
    _finish_if_last(payout.run_key)
    return "paid"
