"""Ledger entries sent as messages: ``outbox.defer(session, record_entry, LedgerWrite(...))``.

The sending side and its small handler together: checking an entry at send and recording it in
the worker are the same ledger calls, and a host that sends one loads nothing of the payout runs.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import model_validator

from ..typed import Payload, actor
from . import _ledger as ledger
from .tasks import QUEUE

__all__ = ["LedgerWrite", "record_entry"]


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
