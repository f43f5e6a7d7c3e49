"""What operators do after the fact: read the attempt log, replay a message, recover an endpoint,
and the health sweep that resends deliveries whose job was lost in a crash."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, update
from sqlmodel import col, select

from .. import db
from ..clock import now as _now
from ..errors import InvalidPayload
from ..moments import as_utc
from ._endpoints import current
from ._models import Attempt, DeliveryJob, EndpointRow, WebhookAttempt, WebhookDelivery, WebhookMessage
from ._statements import statements
from .tasks import deliver_webhook

__all__ = [
    "MessageSummary", "Replayed", "attempts", "bodies", "endpoint_attempts", "messages", "recover", "replay",
    "resend_overdue", "success_rates",
]  # fmt: skip

logger = logging.getLogger("bgjobs.webhooks")

BATCH = 500


@dataclass
class Replayed:
    """What a replay or recovery queued, and what it left alone and why."""

    queued: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


#: A delivery's states, for a filter that refuses any other word.
STATUSES = ("pending", "delivering", "delivered", "failed")


@dataclass
class MessageSummary:
    """A published message and where each of its deliveries stands."""

    id: str
    event_type: str
    owner: str | None
    created_at: datetime
    #: One per endpoint: ``endpoint_id``, ``status``, ``attempts``, ``last_status_code``, ``last_error``.
    deliveries: list[dict[str, Any]]


def messages(
    *, endpoint_id: str | None = None, event_type: str | None = None, status: str | None = None,
    owner: str | None = None, since: datetime | None = None, limit: int = 50, offset: int = 0,
) -> list[MessageSummary]:  # fmt: skip
    """Published messages, newest first, with their deliveries: so that an operator finds a message
    by what it was (its endpoint, its type, how it went, when) rather than by a ``msg_`` id.

    ``endpoint_id`` and ``status`` select the messages with a delivery to that endpoint, in that
    state (both together: one delivery that is both).

    Raises:
        InvalidPayload: naming ``status``, for a word other than pending, delivering, delivered, failed.
    """
    if status is not None and status not in STATUSES:
        raise InvalidPayload(f"status: {status!r} is not a delivery state; use one of {', '.join(STATUSES)}")
    query = select(WebhookMessage)
    if event_type:
        query = query.where(WebhookMessage.event_type == event_type)
    if owner:
        query = query.where(WebhookMessage.owner == owner)
    if since is not None:
        query = query.where(col(WebhookMessage.created_at) >= as_utc(since))
    if endpoint_id or status:
        chosen = select(WebhookDelivery.message_id)
        if endpoint_id:
            chosen = chosen.where(WebhookDelivery.endpoint_id == endpoint_id)
        if status:
            chosen = chosen.where(WebhookDelivery.status == status)
        query = query.where(col(WebhookMessage.id).in_(chosen))
    query = query.order_by(col(WebhookMessage.created_at).desc(), col(WebhookMessage.id).desc())
    with db.session() as s:
        found = list(s.exec(query.offset(offset).limit(limit)))
        ids = [m.id for m in found]
        rows: Any = s.exec(select(WebhookDelivery).where(col(WebhookDelivery.message_id).in_(ids))
                      .order_by(col(WebhookDelivery.endpoint_id))) if ids else []  # fmt: skip
        by_message: dict[str, list[dict[str, Any]]] = {}
        for d in rows:
            by_message.setdefault(d.message_id, []).append({
                "endpoint_id": d.endpoint_id, "status": d.status, "attempts": d.attempts,
                "last_status_code": d.last_status_code, "last_error": d.last_error,
            })  # fmt: skip
        return [MessageSummary(id=m.id, event_type=m.event_type, owner=m.owner, created_at=m.created_at,
                               deliveries=by_message.get(m.id, [])) for m in found]  # fmt: skip


def attempts(message_id: str) -> list[Attempt]:
    """Every attempt made for a message, to every endpoint, in order."""
    query = select(WebhookAttempt).where(WebhookAttempt.message_id == message_id)
    with db.session() as s:
        return [Attempt.model_validate(a) for a in s.exec(query.order_by(col(WebhookAttempt.id)))]


def endpoint_attempts(endpoint_id: str, *, limit: int = 50, before: int | None = None) -> list[Attempt]:
    """An endpoint's attempts, newest first (``before``: attempt ids below it, for the next page)."""
    query = select(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id)
    if before is not None:
        query = query.where(col(WebhookAttempt.id) < before)
    with db.session() as s:
        found = s.exec(query.order_by(col(WebhookAttempt.id).desc()).limit(limit))
        return [Attempt.model_validate(a) for a in found]


def success_rates(endpoint_ids: list[str], *, since: datetime) -> dict[str, tuple[int, int]]:
    """``{endpoint id: (attempts, succeeded)}`` since ``since`` (endpoints without attempts left out)."""
    if not endpoint_ids:
        return {}
    a = WebhookAttempt
    query = (
        select(col(a.endpoint_id), col(a.succeeded), func.count())
        .where(col(a.endpoint_id).in_(endpoint_ids), col(a.requested_at) >= as_utc(since))
        .group_by(col(a.endpoint_id), col(a.succeeded))
    )
    rates: dict[str, tuple[int, int]] = {}
    with db.session() as s:
        for endpoint_id, succeeded, count in s.exec(query):
            total, good = rates.get(endpoint_id, (0, 0))
            rates[endpoint_id] = (total + count, good + (count if succeeded else 0))
    return rates


def bodies(message_ids: list[str]) -> dict[str, str]:
    """The bodies of messages as sent, by id (for showing an attempt's request)."""
    if not message_ids:
        return {}
    m = WebhookMessage
    query = select(col(m.id), col(m.body)).where(col(m.id).in_(message_ids))
    with db.session() as s:
        return dict(s.exec(query).all())


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


def resend_overdue(*, limit: int = 1_000, before: datetime | None = None) -> int:
    """Send again the jobs of deliveries that are overdue by the sweep grace (or were due
    ``before``, when the store lost every job); returns how many.

    A delivery is overdue when its next attempt's time passed long ago while it is still
    ``pending`` (the worker died between recording the attempt and sending the next job), or
    when an attempt's lease ran out long ago. Copies of jobs that do exist are dropped by
    their attempt number, so resending is always safe.
    """
    now = _now()
    if before is None:
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
