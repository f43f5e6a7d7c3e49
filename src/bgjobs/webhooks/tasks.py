"""Webhooks' tasks: what a worker is asked to run, by name, queue and payload (no code here)."""

from __future__ import annotations

from ..typed import task
from ._models import DeliveryJob, Wake

__all__ = ["QUEUE", "deliver_webhook", "dispatch_webhooks"]

QUEUE = "webhooks"

#: Take published messages from the fair lanes and make their first attempts (sent by ``publish``).
dispatch_webhooks = task("webhooks.dispatch", queue=QUEUE, payload=Wake)

#: One attempt of one delivery (sent for retries, replays, the health sweep, and deliveries
#: waiting for their endpoint's turn or a free slot).
deliver_webhook = task("webhooks.deliver", queue=QUEUE, payload=DeliveryJob)
