"""Webhooks' tasks: what a worker is asked to run, by name, queue and payload (no code here)."""

from __future__ import annotations

from ..typed import task
from ._models import DeliveryJob

__all__ = ["QUEUE", "deliver_webhook"]

QUEUE = "webhooks"

#: One attempt of one delivery (sent by ``publish``, by the attempt before, and by replays).
deliver_webhook = task("webhooks.deliver", queue=QUEUE, payload=DeliveryJob)
