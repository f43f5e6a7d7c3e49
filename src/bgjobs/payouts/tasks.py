"""Payouts' tasks: what a worker is asked to run, by name, queue and payload (no code here)."""

from __future__ import annotations

from ..typed import task
from ._models import PayoutBatch, PayoutJob, RunDone

__all__ = ["QUEUE", "pay_vendor", "pay_vendors", "run_done"]

QUEUE = "payouts"

#: Pay one payout (a refused payout retried now, ``retry_payout``; a run's payouts go in batches).
pay_vendor = task("payouts.pay", queue=QUEUE, payload=PayoutJob)

#: Pay a batch of a run's payouts and settle them together (sent by the run that planned them,
#: and by ``resend_pending``).
pay_vendors = task("payouts.pay_batch", queue=QUEUE, payload=PayoutBatch)

#: Write a run's report once every payout job it sent is counted: the callback of the run's batch.
run_done = task("payouts.run_done", queue=QUEUE, payload=RunDone)
