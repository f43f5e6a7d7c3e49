"""What operators do after the fact: read the attempt log, replay a message, recover an endpoint,
and the health sweep that resends deliveries whose job was lost in a crash."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select

from .. import db
from ..clock import now as _now
from ..errors import InvalidPayload
from ._endpoints import current
from ._models import Attempt, DeliveryJob, EndpointRow, WebhookAttempt, WebhookDelivery
from ._statements import statements
from .tasks import deliver_webhook

__all__ = ["Replayed", "attempts", "recover", "replay", "resend_overdue"]

logger = logging.getLogger("bgjobs.webhooks")

BATCH = 500


@dataclass
class Replayed:
    """What a replay or recovery queued, and what it left alone and why."""

    queued: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def attempts(message_id: str) -> list[Attempt]:
    """Every attempt made for a message, to every endpoint, in order."""
    query = select(WebhookAttempt).where(WebhookAttempt.message_id == message_id)
    with db.session() as s:
        return [Attempt.model_validate(a) for a in s.exec(query.order_by(col(WebhookAttempt.id)))]


def _requeue(s: Any, deliveries: list[WebhookDelivery], result: Replayed, now: datetime) -> list[DeliveryJob]:
    """Turn finished deliveries back to pending (if no one else did) and build their manual jobs."""
    jobs = []
    for d in deliveries:
        reset = (
            update(WebhookDelivery)
            .where(col(WebhookDelivery.id) == d.id, col(WebhookDelivery.status) == d.status,
                   col(WebhookDelivery.attempts) == d.attempts)
            .values(status="pending", next_attempt_at=now, updated_at=now)
        )  # fmt: skip
        if s.execute(reset).rowcount == 1:
            jobs.append(DeliveryJob(delivery_id=d.id, endpoint_id=d.endpoint_id, attempt=d.attempts + 1,
                                    trigger="manual"))  # fmt: skip
            result.queued.append(d.id)
        else:
            result.skipped[d.id] = "changed while replaying"
    return jobs


def _send(jobs: list[DeliveryJob]) -> None:
    if jobs:
        deliver_webhook.send_many(jobs)


def replay(message_id: str, *, endpoint_id: str | None = None) -> Replayed:
    """Send a message again (one manual attempt) to its endpoints, or to one of them.

    Deliveries still in their retry schedule are left to it; disabled endpoints are skipped.

    Raises:
        InvalidPayload: the message (or its delivery to ``endpoint_id``) does not exist.
    """
    result = Replayed()
    now = _now()
    with db.session() as s:
        query = select(WebhookDelivery, EndpointRow.enabled).join(
            EndpointRow, col(EndpointRow.id) == col(WebhookDelivery.endpoint_id)
        ).where(WebhookDelivery.message_id == message_id)  # fmt: skip
        if endpoint_id is not None:
            query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
        found = list(s.exec(query))
        if not found:
            where = f" to endpoint {endpoint_id}" if endpoint_id else ""
            raise InvalidPayload(f"message: no delivery of {message_id!r}{where}")
        ready = []
        for delivery, enabled in found:
            if not enabled:
                result.skipped[delivery.id] = f"endpoint {delivery.endpoint_id} is disabled"
            elif delivery.status not in ("delivered", "failed"):
                result.skipped[delivery.id] = f"still {delivery.status} (attempt {delivery.attempts})"
            else:
                ready.append(delivery)
        jobs = _requeue(s, ready, result, now)
    _send(jobs)
    return result


def recover(endpoint_id: str, *, since: datetime, progress: Callable[[int], None] | None = None) -> Replayed:
    """Resend every failed delivery to an endpoint created since ``since`` (one manual attempt each).

    Works in batches of 500, calling ``progress(queued_so_far)`` after each.

    Raises:
        InvalidPayload: unknown endpoint, or a disabled one (enable it first).
    """
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    result = Replayed()
    with db.session() as s:
        endpoint = s.get(EndpointRow, endpoint_id)
        if endpoint is None:
            raise InvalidPayload(f"endpoint: no webhook endpoint {endpoint_id!r}")
        if not endpoint.enabled:
            raise InvalidPayload(f"endpoint: {endpoint_id} is disabled; enable it before recovering")
    after = ""
    while True:
        with db.session() as s:
            batch = list(s.exec(
                select(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "failed",
                       col(WebhookDelivery.created_at) >= since, col(WebhookDelivery.id) > after)
                .order_by(col(WebhookDelivery.id)).limit(BATCH)
            ))  # fmt: skip
            if not batch:
                break
            after = batch[-1].id
            jobs = _requeue(s, batch, result, _now())
        _send(jobs)
        if progress is not None:
            progress(len(result.queued))
    return result


def resend_overdue(*, limit: int = 1_000) -> int:
    """Send again the jobs of deliveries that are overdue by the sweep grace; returns how many.

    A delivery is overdue when its next attempt's time passed long ago while it is still
    ``pending`` (the worker died between recording the attempt and sending the next job), or
    when an attempt's lease ran out long ago. Copies of jobs that do exist are dropped by
    their attempt number, so resending is always safe.
    """
    now = _now()
    before = now - timedelta(seconds=current().sweep_grace_s)
    jobs = []
    with db.get_engine().begin() as conn:
        for delivery_id, endpoint_id, started, status in conn.execute(
            statements.overdue, {"before": before, "limit": limit}
        ):
            attempt = started if status == "delivering" else started + 1
            jobs.append(DeliveryJob(delivery_id=delivery_id, endpoint_id=endpoint_id, attempt=attempt))
            conn.execute(
                update(WebhookDelivery)
                .where(col(WebhookDelivery.id) == delivery_id, col(WebhookDelivery.status) == "pending")
                .values(next_attempt_at=now)
            )
    _send(jobs)
    if jobs:
        logger.warning("resent %d overdue webhook deliveries", len(jobs))
    return len(jobs)
