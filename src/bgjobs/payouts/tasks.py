"""Payouts' tasks: what a worker is asked to run, by name, queue and payload (no code here)."""

from __future__ import annotations

from ..typed import task
from ._models import PayoutJob

__all__ = ["QUEUE", "pay_vendor"]

QUEUE = "payouts"

#: Pay one planned payout (sent by the run that planned it, and by ``resend_pending``).
pay_vendor = task("payouts.pay", queue=QUEUE, payload=PayoutJob)
