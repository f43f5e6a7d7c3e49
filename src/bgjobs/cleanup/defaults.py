"""bgjobs's own retention: how long its logs and bookkeeping are kept (each a setting)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Table, exists, select

from .policies import Policy

__all__ = ["bgjobs_policies"]


def _pending_deliveries(messages: Table) -> Any:
    from ..webhooks.models import WebhookDelivery

    d: Any = WebhookDelivery.__table__  # type: ignore[attr-defined]
    return ~exists(
        select(d.c.id).where(d.c.message_id == messages.c.id, d.c.status.in_(("pending", "delivering")))
    )


def bgjobs_policies(settings: Any) -> list[Policy]:
    """The default policies for bgjobs's tables; a retention of 0 days turns one off."""
    c = settings.cleanup
    days = timedelta(days=1)
    candidates = [
        Policy("bgjobs.runs", "bgjobs_runs", "started_at", c.runs_days * days,
               where=lambda t: t.c.finished_at.isnot(None), order=900, owner="bgjobs"),
        Policy("bgjobs.notifications", "bgjobs_notifications", "created_at", c.notifications_days * days,
               where=lambda t: t.c.status.in_(("sent", "skipped", "dead")), order=900, owner="bgjobs"),
        Policy("bgjobs.webhook_attempts", "bgjobs_webhook_attempts", "requested_at", c.webhooks_days * days,
               order=910, owner="bgjobs"),
        Policy("bgjobs.webhook_deliveries", "bgjobs_webhook_deliveries", "created_at", c.webhooks_days * days,
               where=lambda t: t.c.status.in_(("delivered", "failed")), order=920, owner="bgjobs"),
        Policy("bgjobs.webhook_messages", "bgjobs_webhook_messages", "created_at", c.webhooks_days * days,
               where=_pending_deliveries, order=930, owner="bgjobs"),
        Policy("bgjobs.outbox", "bgjobs_outbox", "sent_at", c.outbox_days * days,
               where=lambda t: t.c.sent_at.isnot(None), order=900, owner="bgjobs"),
        Policy("bgjobs.idempotency", "bgjobs_idempotency", "created_at", c.idempotency_days * days,
               order=900, owner="bgjobs"),
    ]  # fmt: skip
    return [p for p in candidates if p.older_than > timedelta(0)]
