"""Payout runs: plan a period in SQL, then send jobs that pay batches of payouts (:mod:`._paying`).

Planning is two set-based statements in one transaction, whatever the number of entries:

1. link every unpaid entry up to the period's end to its vendor's payout
   (``payout:{run}:{vendor}:{currency}``), for the (vendor, currency) balances that reach the
   minimum; the rest stays unlinked and carries forward, negative balances included;
2. insert one payout per linked group, its amount the sum of exactly the entries linked to it.

The planning row (``bgjobs_payout_runs``) is inserted in the same transaction, so a period is
planned once: triggering it again (or a redelivered run job) only re-sends the jobs of payouts
still pending. An entry has one ``payout_id``, so it can never be in two payouts.
"""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from itertools import pairwise
from typing import Any

from sqlalchemy import and_, case, func, insert, literal, select, tuple_, update
from sqlmodel import Session, col

from .. import db, runs
from ..clock import now as _now
from ..money import Money, exponent
from ..recovery import recovery_sweep
from ..typed import send_messages
from ._ledger import current
from ._models import (
    LedgerEntry,
    Payout,
    PayoutBatch,
    PayoutInfo,
    PayoutReceipt,
    PayoutRun,
    Receipt,
    RunDone,
)  # fmt: skip
from ._periods import Period
from .tasks import pay_vendors, run_done

__all__ = [
    "pay_batches", "plan", "plan_payouts", "planned_by", "receipts", "report", "resend_all_pending",
    "resend_pending", "write_report",
]  # fmt: skip

SEND_BATCH = 1_000
#: Per database: payouts per job (unless ``BGJOBS_PAYOUTS__PAY_BATCH`` says), and the fewest jobs
#: a run is spread over (when it has that many payouts), so a small run is still paid by many
#: worker threads at once. SQLite's settles queue for its one write lock, so fewer, larger
#: batches pay faster there; PostgreSQL pays faster with more jobs at once (docs/performance.md).
SPLITS = {"sqlite": (32, 16)}
SPLIT = (16, 32)
#: Below this many entries to link, planning keeps the unpaid index up to date as it goes.
REBUILD_MIN = 20_000


def _minimum_minor(currency: str) -> int:
    settings = current()
    amount = settings.minimums.get(currency, settings.minimum)
    return int(Decimal(amount).scaleb(exponent(currency)))


def _range(prefix: str) -> tuple[str, str]:
    # Every payout id of a run starts with the prefix; the range scan uses the index, unlike LIKE.
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _index_in_the_way(s: Session) -> Any:
    """On SQLite, the index of unpaid entries when the run is about to link a fifth of the ledger
    or more: the planning transaction drops it and builds it again once the payouts are written
    (SQLite builds an index by sorting, 0.7 s for 1M entries, where keeping it up to date cost 4 s
    more). The transaction holds the database's one write lock throughout, so no writer misses it,
    and readers keep the snapshot they started with. Elsewhere None: PostgreSQL would lock the
    ledger's other writers out for the whole run."""
    if s.get_bind().dialect.name != "sqlite":
        return None
    e: Any = LedgerEntry.__table__  # type: ignore[attr-defined]
    # Unpaid entries, also those after the period (read from the index alone): at most the link's rows
    linking = s.execute(select(func.count()).select_from(e).where(e.c.payout_id.is_(None))).scalar_one()
    if linking < REBUILD_MIN or linking * 5 < s.execute(select(func.count()).select_from(e)).scalar_one():
        return None
    return next(i for i in e.indexes if i.name == "ix_bgjobs_ledger_unpaid")


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
                in_the_way = _index_in_the_way(s)
                if in_the_way is not None:
                    in_the_way.drop(s.connection())
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
                if in_the_way is not None:
                    in_the_way.create(s.connection())
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


@recovery_sweep("payouts")
def resend_all_pending() -> int:
    """After the store lost its data: the jobs of every run's pending payouts."""
    with db.session() as s:
        runs = [k for (k,) in s.execute(select(col(Payout.run_key)).where(
            col(Payout.status) == "pending").distinct())]  # fmt: skip
    return sum(resend_pending(k) for k in runs)


def resend_pending(run_key: str) -> int:
    """Send the jobs of a run's pending payouts (copies of jobs already queued pay nobody twice)."""
    with db.session() as s:
        ids = [i for (i,) in s.execute(select(col(Payout.id)).where(
            col(Payout.run_key) == run_key, col(Payout.status) == "pending"))]  # fmt: skip
    if not ids:
        return 0
    batches = pay_batches(ids)
    with run_batch(run_key):
        for start in range(0, len(batches), SEND_BATCH):
            chunk = [pay_vendors.message(b) for b in batches[start : start + SEND_BATCH]]
            send_messages(pay_vendors.actor.broker, chunk)
    return len(ids)


def pay_batches(ids: list[str]) -> list[PayoutBatch]:
    """The jobs' payloads for paying ``ids``: at most ``pay_batch`` payouts each, at least as many
    jobs as :data:`SPLITS` says for the database when there are that many payouts, and sizes that
    differ by one at most (a last, small job would run alone after the others, holding up the
    run's end)."""
    if not ids:
        return []
    per_job, spread = SPLITS.get(db.get_engine().dialect.name, SPLIT)
    jobs = min(len(ids), max(spread, -(-len(ids) // (current().pay_batch or per_job))))
    size, extra = divmod(len(ids), jobs)
    bounds = [i * size + min(i, extra) for i in range(jobs + 1)]
    return [PayoutBatch(payout_ids=ids[a:b]) for a, b in pairwise(bounds)]


def run_batch(run_key: str) -> contextlib.AbstractContextManager[Any]:
    """The batch a run's payout jobs join: once every one is counted (paid, failed, or
    dead-lettered), ``payouts.run_done`` writes the run's report, and again if a dead-lettered
    one is requeued and the run then has every job succeeded. The console's Batches page shows
    the run's progress."""
    from ..batches import batch

    done = run_done.message(RunDone(run_key=run_key))
    return batch(on_complete=done, on_success=done, description=f"payout run {run_key}")


def report(run_key: str, *, session: Session | None = None) -> dict[str, Any]:
    """A run's report: its period, the payouts paid, failed and pending, amounts, what carried forward."""
    with contextlib.nullcontext(session) if session is not None else db.session() as s:
        run = s.get(PayoutRun, run_key)
        if run is None:
            return {}
        by_status = {"pending": 0, "paid": 0, "failed": 0}
        totals: dict[str, str] = {}
        query = (
            select(col(Payout.status), col(Payout.currency), func.sum(col(Payout.amount_minor)), func.count(),
                   func.max(col(Payout.settled_at)))
            .where(col(Payout.run_key) == run_key)
            .group_by(col(Payout.status), col(Payout.currency))
        )  # fmt: skip
        last_settled = None
        for status, currency, total, count, settled in s.execute(query):
            by_status[status] = by_status.get(status, 0) + int(count)
            if status == "paid":
                totals[currency] = str(Money.from_minor(int(total), currency).amount)
            if settled is not None:
                last_settled = max(last_settled or db.aware(settled), db.aware(settled))
        started = db.aware(run.created_at)
        # From planning to the last payout settled: a report rewritten later (another trigger of the
        # period resending what is pending) keeps the run's own duration, not the time since.
        ended = _now() if by_status["pending"] or last_settled is None else last_settled
        return {
            "period": run_key, "period_start": run.period_start.isoformat(),
            "period_end": run.period_end.isoformat(), "payouts": run.payouts, **by_status,
            "vendors_paid": by_status["paid"], "total_paid": totals, "carried_forward": run.carried,
            "duration_s": round(max((ended - started).total_seconds(), 0.0), 3),
        }  # fmt: skip


def planned_by(run_key: str) -> str | None:
    """The id of the run (``bgjobs_runs``) that planned the period, if it was planned."""
    with db.session() as s:
        run = s.get(PayoutRun, run_key)
        return None if run is None else run.run_id


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


def receipts(*, vendor_id: str | None = None, period: str | None = None, limit: int = 100) -> list[Receipt]:
    """Payout receipts, by vendor then newest first, filtered by any of the arguments."""
    query = select(PayoutReceipt)
    if vendor_id is not None:
        query = query.where(col(PayoutReceipt.vendor_id) == vendor_id)
    if period is not None:
        query = query.where(col(PayoutReceipt.period) == period)
    query = query.order_by(col(PayoutReceipt.vendor_id), col(PayoutReceipt.issued_at).desc()).limit(limit)
    with db.session() as s:
        return [Receipt.model_validate(r) for r in s.execute(query).scalars()]


def payouts(
    *, status: str | None = None, vendor_id: str | None = None, run_key: str | None = None, limit: int = 50,
    offset: int = 0,
) -> list[PayoutInfo]:  # fmt: skip
    """Payouts, newest first, filtered by any of the arguments (``status``: pending, paid, failed)."""
    query = select(Payout)
    if status is not None:
        query = query.where(col(Payout.status) == status)
    if vendor_id is not None:
        query = query.where(col(Payout.vendor_id) == vendor_id)
    if run_key is not None:
        query = query.where(col(Payout.run_key) == run_key)
    query = query.order_by(col(Payout.created_at).desc(), col(Payout.id)).offset(offset).limit(limit)
    with db.session() as s:
        return [PayoutInfo.model_validate(r) for r in s.execute(query).scalars()]
