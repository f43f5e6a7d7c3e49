"""Payouts' actors: the weekly and monthly runs, one payout per job, and ledger writes through
the outbox."""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import model_validator

from .. import runtime
from ..jobs import JobArguments, JobContext, job
from ..typed import Payload, actor
from . import _ledger as ledger
from . import _paying as paying
from . import _planning as planning
from ._models import PayoutJob
from ._periods import period_for
from .tasks import QUEUE, pay_vendor

__all__ = ["balance_check", "charges", "monthly", "pay_vendor", "record_entry", "settlement", "weekly"]

@pay_vendor.handler
def _pay(job: PayoutJob) -> None:
    paying.pay(job)


def _run(kind: str, ctx: JobContext) -> dict[str, Any]:
    """Plan the period and report its payouts; a period an earlier run planned is that run's to
    report: this run says so and what it sent again, not a second copy of the same figures."""
    period = period_for(kind, ctx.args.get("period"), timezone=runtime.current().settings.timezone)
    ctx.after_finish(lambda: planning.write_report(period.key))
    found = planning.plan(period, run_id=ctx.run_id)
    if found.get("planned_now", True):
        return found
    return {"period": period.key, "planned_by": planning.planned_by(period.key), "planned_now": False,
            "jobs_sent": found.get("jobs_sent", 0), "pending": found.get("pending", 0)}  # fmt: skip


def _period(kind: str) -> Any:
    def check(args: dict[str, str]) -> object:
        return period_for(kind, args.get("period"), timezone="UTC")

    return check


class PeriodArguments(JobArguments):
    #: The period to pay (``2025-W23`` weekly, ``2025-06`` monthly); the last one ended without it.
    period: str | None = None


class DayArguments(JobArguments):
    #: The day to report (``2025-06-01``); yesterday without it.
    day: str | None = None


@job("payouts.weekly", schedule="0 8 * * mon", queue=QUEUE, arguments=PeriodArguments,
     check=_period("weekly"), needs=("payment",))  # fmt: skip
def weekly(ctx: JobContext) -> dict[str, Any]:
    """Pay every vendor's balance up to the end of last week (Mon-Sun); --period 2025-W23 for another."""
    return _run("weekly", ctx)


@job("payouts.monthly", schedule="0 0 1 * *", queue=QUEUE, arguments=PeriodArguments,
     check=_period("monthly"), needs=("payment",))  # fmt: skip
def monthly(ctx: JobContext) -> dict[str, Any]:
    """Pay every vendor's balance up to the end of last month; --period 2025-06 for another month."""
    return _run("monthly", ctx)


@job("payouts.charges", schedule="*/5 * * * *", queue=QUEUE, needs=("payment",))
def charges(ctx: JobContext) -> dict[str, int]:
    """Charge the pending deferred charges, each once, for up to BGJOBS_PAYOUTS__CHARGES_BUDGET_S."""
    from ._charges import sweep_charges

    budget = time.monotonic() + runtime.current().settings.payouts.charges_budget_s
    return sweep_charges(deadline=min(budget, ctx.deadline or budget))


@job("payouts.balance_check", schedule="*/5 * * * *", queue=QUEUE, needs=("payment",))
def balance_check(ctx: JobContext) -> dict[str, int]:
    """Read the platform's balances and alert once per threshold crossing."""
    from ._balance import check_balances

    return check_balances()


def _day(args: dict[str, str]) -> object:
    from ._settlement import parse_day

    return parse_day(args.get("day"), field="day")


@job("payouts.settlement", schedule="0 8 * * *", queue=QUEUE, arguments=DayArguments, check=_day,
     needs=("storage",))  # fmt: skip
def settlement(ctx: JobContext) -> dict[str, Any]:
    """Yesterday's settlement report as a CSV export; --day 2025-06-01 for another day."""
    from ._settlement import parse_day, settlement_report

    return {"export_id": settlement_report(parse_day(ctx.args.get("day"), field="day"))}


class LedgerWrite(Payload):
    """A ledger entry deferred through the outbox (``outbox.defer(session, record_entry, ...)``)."""

    kind: Literal["earning", "adjustment"]
    vendor_id: str
    amount: Decimal
    currency: str
    source_id: str
    occurred_at: datetime
    description: str | None = None
    split_commission: bool = False

    @model_validator(mode="after")
    def _valid_entry(self) -> LedgerWrite:
        # The same checks as record_earning/record_adjustment, at send: never first in the worker.
        ledger.check_entry(self.kind, self.amount, self.currency, source_id=self.source_id,
                           occurred_at=self.occurred_at)  # fmt: skip
        return self


@actor(name="payouts.record", queue=QUEUE)
def record_entry(write: LedgerWrite) -> None:
    """Record the entry; a redelivered copy finds its source id taken and changes nothing."""
    if write.kind == "earning":
        ledger.record_earning(write.vendor_id, write.amount, write.currency, source_id=write.source_id,
                              occurred_at=write.occurred_at, description=write.description)  # fmt: skip
    else:
        ledger.record_adjustment(write.vendor_id, write.amount, write.currency, source_id=write.source_id,
                                 occurred_at=write.occurred_at, description=write.description,
                                 split_commission=write.split_commission)  # fmt: skip
