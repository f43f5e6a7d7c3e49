"""Payouts' actors: the weekly and monthly runs, one payout per job, and ledger writes through
the outbox."""

from __future__ import annotations

import time
from typing import Any

from .. import runtime
from ..jobs import JobArguments, JobContext, job
from . import _paying as paying
from . import _planning as planning
from . import _templates  # noqa: F401  (registers the payouts family's notification templates)
from ._models import PayoutBatch, PayoutJob, RunDone
from ._periods import period_for
from ._recording import record_entry
from ._settlement import parse_day, settlement_report  # registers the payouts.settlement dataset
from .tasks import QUEUE, pay_vendor, pay_vendors, run_done

__all__ = [
    "balance_check", "charges", "monthly", "pay_vendor", "pay_vendors", "record_entry", "settlement",
    "weekly",
]  # fmt: skip

@pay_vendor.handler
def _pay(job: PayoutJob) -> None:
    paying.pay(job)


@pay_vendors.handler
def _pay_batch(batch: PayoutBatch) -> None:
    paying.pay_batch(batch)


@run_done.handler
def _run_done(done: RunDone) -> None:
    planning.write_report(done.run_key)


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
    return parse_day(args.get("day"), field="day")


@job("payouts.settlement", schedule="0 8 * * *", queue=QUEUE, arguments=DayArguments, check=_day,
     needs=("storage",))  # fmt: skip
def settlement(ctx: JobContext) -> dict[str, Any]:
    """Yesterday's settlement report as a CSV export; --day 2025-06-01 for another day."""
    return {"export_id": settlement_report(parse_day(ctx.args.get("day"), field="day"))}
