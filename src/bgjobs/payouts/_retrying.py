"""Retrying a refused payout now, instead of waiting for the next run.

A refused payout's entries went back to the vendor's balance. Once the cause is fixed (the vendor
updated their bank account), an operator retries it: the vendor's unpaid entries up to the
original period's end become a new payout, ``<run>:r<n>``, with its own idempotency key (a
gateway answers a key it has seen with its first answer, the refusal). The new payout is planned
in one transaction and paid by the usual job, so a second click, a second operator or a crash
between the two never pays twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import IntegrityError

from .. import db
from ..clock import now as _now
from ..errors import InvalidPayload
from ._models import LedgerEntry, Payout, PayoutInfo, PayoutJob, PayoutRun
from .tasks import pay_vendor

__all__ = ["retry_payout"]


def _base_run(run_key: str) -> str:
    """``weekly:2025-W23`` for a payout of that run or of any retry of it."""
    kind, period, *_ = run_key.split(":")
    return f"{kind}:{period}"


def retry_payout(payout_id: str) -> PayoutInfo:
    """Pay a refused payout's vendor now: a new pending payout of their unpaid entries up to the
    original period's end, paid by a ``payouts.pay`` job; returns it.

    Raises:
        InvalidPayload: no such payout, it was not refused, a retry of it is already pending, or
            nothing is left to pay (a later run paid those entries).
    """
    e: Any = LedgerEntry.__table__  # type: ignore[attr-defined]
    with db.session() as s:
        failed = s.get(Payout, payout_id)
        if failed is None:
            raise InvalidPayload(f"payout_id: no payout {payout_id!r}")
        if failed.status != "failed":
            raise InvalidPayload(
                f"payout_id: {payout_id} is {failed.status}; only a refused payout is retried"
            )
        base = _base_run(failed.run_key)
        run = s.get(PayoutRun, base)
        if run is None:
            raise InvalidPayload(f"payout_id: the run {base} of {payout_id} is gone")
        vendor, currency = failed.vendor_id, failed.currency
        p: Any = Payout.__table__  # type: ignore[attr-defined]
        tries = s.execute(select(func.count()).select_from(p).where(
            p.c.run_key.startswith(f"{base}:r"), p.c.vendor_id == vendor, p.c.currency == currency,
        )).scalar_one()  # fmt: skip
        run_key = f"{base}:r{int(tries) + 1}"
        new_id = f"payout:{run_key}:{vendor}:{currency}"
        unpaid = and_(e.c.payout_id.is_(None), e.c.vendor_id == vendor, e.c.currency == currency,
                      e.c.occurred_at < run.period_end)  # fmt: skip
        s.execute(
            update(e).where(unpaid).values(payout_id=new_id).execution_options(synchronize_session=False)
        )
        total, count = s.execute(
            select(func.coalesce(func.sum(e.c.vendor_minor), 0), func.count()).where(e.c.payout_id == new_id)
        ).one()
        if count == 0 or total <= 0:
            s.rollback()
            raise InvalidPayload(f"payout_id: nothing of {vendor}'s {currency} up to {base} is left to pay "
                                 "(a later run paid it, or a retry is pending)")  # fmt: skip
        payout = Payout(
            id=new_id,
            run_key=run_key,
            vendor_id=vendor,
            currency=currency,
            amount_minor=int(total),
            entries=int(count),
            status="pending",
            created_at=_now(),
        )
        s.add(payout)
        try:
            s.flush()
        except IntegrityError:
            s.rollback()
            raise InvalidPayload(f"payout_id: a retry of {payout_id} was made at the same moment") from None
        info = PayoutInfo.model_validate(payout)
    pay_vendor.send(PayoutJob(payout_id=new_id))
    return info
