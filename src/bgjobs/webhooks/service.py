"""Webhooks' logic: ``publish`` stores a message and its deliveries; ``deliver`` makes one attempt.

One attempt of one delivery, with any worker killable at any line:

1. The delivery is read with its endpoint and message. An attempt number already started
   means this job is a copy (a redelivery, a sweep): it is dropped, unless that attempt's
   lease has run out, which means the worker making it died, so the attempt is made again.
2. The endpoint's concurrency cap and rate limit (Dramatiq rate limiters in Redis) are
   acquired; when full, the job is sent again a little later, without using an attempt, so
   the thread is free for deliveries to other endpoints.
3. A conditional UPDATE takes the attempt (number and lease); of two copies one wins.
4. The URL is checked by the SSRF guard again and the signed request is sent to the
   checked address, outside any transaction.
5. One transaction logs the attempt and records the outcome: delivered, or the next
   attempt's time, or failed. Then the next attempt's job is sent. A crash between the two
   leaves the delivery ``pending`` and overdue: the health sweep sends it again.

Receivers see the same ``webhook-id`` on every attempt, so the copies at-least-once
delivery can bring are theirs to drop.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pydantic_core
from dramatiq.rate_limits import ConcurrentRateLimiter, WindowRateLimiter
from pydantic import BaseModel
from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlmodel import col

from .. import db, events, observability
from ..clock import now as _now
from ..coordination import coordination_for
from ..errors import InvalidPayload, PermanentError, TransientError
from ..settings import WebhookSettings
from ..typed import send_messages
from .endpoints import current
from .guard import BlockedAddress, check_url
from .models import (
    DeliveryJob,
    EndpointDisabled,
    EndpointRow,
    WebhookAttempt,
    WebhookDelivery,
    WebhookMessage,
)
from .models import WebhookDeliveryExhausted as Exhausted
from .signing import sign
from .transport import AttemptResult, post

__all__ = ["DeliveryExhausted", "deliver", "matches", "publish"]

logger = logging.getLogger("bgjobs.webhooks")

MAX_KEY_LENGTH = 200
_EVENT_TYPE_LENGTH = 100
#: A copy that found the attempt in progress looks again this soon (or when the lease ends).
LEASE_RECHECK = timedelta(seconds=5)


class DeliveryExhausted(PermanentError):
    """Raised when a delivery's last scheduled attempt fails; its message is dead-lettered."""


def matches(event_type: str, patterns: list[str]) -> bool:
    """True if ``event_type`` is one of ``patterns`` (exact, ``prefix.*``, or ``*``)."""
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def _body(event_type: str, data: BaseModel | Mapping[str, Any], now: datetime) -> bytes:
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        return pydantic_core.to_json({"type": event_type, "timestamp": stamp, "data": payload})
    except pydantic_core.PydanticSerializationError as exc:
        raise InvalidPayload(f"data: not JSON-serialisable: {exc}") from None


def _message_id(event_type: str, owner: str | None, key: str | None) -> str:
    if key is None:
        return f"msg_{uuid.uuid4().hex}"
    digest = hashlib.sha256(f"{event_type}\0{owner or ''}\0{key}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def _actor() -> Any:
    from .actors import deliver_webhook

    return deliver_webhook


def _delivery_row(message_id: str, endpoint_id: str, now: datetime, enabled: bool) -> dict[str, Any]:
    # A disabled endpoint's delivery is kept, failed, so recovering the endpoint later sends it.
    return {"id": f"dlv_{uuid.uuid4().hex}", "message_id": message_id, "endpoint_id": endpoint_id,
            "status": "pending" if enabled else "failed", "attempts": 0,
            "next_attempt_at": now if enabled else None,
            "last_error": None if enabled else "endpoint disabled",
            "created_at": now, "updated_at": now}  # fmt: skip


def publish(
    event_type: str,
    data: BaseModel | Mapping[str, Any],
    *,
    owner: str | None = None,
    key: str | None = None,
) -> str:
    """Store a message once and send it to every enabled endpoint of ``owner`` subscribed to it.

    Disabled endpoints subscribed to it get a delivery marked failed, which ``recover`` sends
    once the endpoint is enabled again.

    Args:
        data: the event's data (a mapping or a model); the body is
            ``{"type", "timestamp", "data"}``.
        owner: only endpoints with this owner receive it (None: endpoints without an owner).
        key: publishing the same (event type, owner, key) again returns the first message's id
            and delivers nothing new.

    Returns:
        The message id (``msg_...``), the ``webhook-id`` receivers see on every attempt.

    Raises:
        InvalidPayload: a bad event type or key, data that is not JSON, or a body over
            ``BGJOBS_WEBHOOKS__MAX_PAYLOAD_BYTES``.
    """
    settings = current()
    if not 0 < len(event_type) <= _EVENT_TYPE_LENGTH or "*" in event_type or event_type != event_type.strip():
        raise InvalidPayload(f"event_type: {event_type!r} must be 1 to {_EVENT_TYPE_LENGTH} characters, no *")
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise InvalidPayload(f"key: must be 1 to {MAX_KEY_LENGTH} characters")
    now = _now()
    body = _body(event_type, data, now)
    if len(body) > settings.max_payload_bytes:
        raise InvalidPayload(
            f"data: the webhook body is {len(body)} bytes; the limit is {settings.max_payload_bytes} "
            "(BGJOBS_WEBHOOKS__MAX_PAYLOAD_BYTES)"
        )
    message_id = _message_id(event_type, owner, key)
    jobs: list[DeliveryJob] = []
    with db.session() as s:
        values = {"id": message_id, "event_type": event_type, "owner": owner, "body": body.decode(),
                  "created_at": now}  # fmt: skip
        if db.insert_new(s, WebhookMessage, values):
            owned = col(EndpointRow.owner).is_(None) if owner is None else col(EndpointRow.owner) == owner
            subscribed = select(
                col(EndpointRow.id), col(EndpointRow.event_types), col(EndpointRow.enabled)
            ).where(owned)
            rows = [
                _delivery_row(message_id, endpoint_id, now, enabled)
                for endpoint_id, types, enabled in s.execute(subscribed)
                if matches(event_type, types)
            ]
            if rows:
                s.connection().execute(insert(WebhookDelivery.__table__), rows)  # type: ignore[attr-defined]
            jobs = [
                DeliveryJob(delivery_id=r["id"], endpoint_id=r["endpoint_id"], attempt=1)
                for r in rows
                if r["status"] == "pending"
            ]
        else:
            # Published before: resend what has not started, in case the first call died before
            # sending (copies of a job already queued are dropped by the attempt number).
            unstarted = select(col(WebhookDelivery.id), col(WebhookDelivery.endpoint_id)).where(
                col(WebhookDelivery.message_id) == message_id, col(WebhookDelivery.status) == "pending",
                col(WebhookDelivery.attempts) == 0,
            )  # fmt: skip
            jobs = [DeliveryJob(delivery_id=d, endpoint_id=e, attempt=1) for d, e in s.execute(unstarted)]
    if jobs:
        actor = _actor()
        send_messages(actor.actor.broker, [actor.message(j) for j in jobs])
    return message_id


# Delivery, in the worker.


@dataclass(frozen=True)
class _Row:
    delivery_id: str
    message_id: str
    endpoint_id: str
    status: str
    attempts: int
    lease_until: datetime | None
    url: str
    enabled: bool
    rate_limit: int | None
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None
    failing_since: datetime | None
    failures: int
    owner: str | None
    event_type: str
    body: str


class _Statements:
    """The delivery path's statements, built once (building costs more CPU than running them)."""

    def __init__(self) -> None:
        d: Any = WebhookDelivery.__table__  # type: ignore[attr-defined]
        e: Any = EndpointRow.__table__  # type: ignore[attr-defined]
        m: Any = WebhookMessage.__table__  # type: ignore[attr-defined]
        self.read = (
            select(d.c.id, d.c.message_id, d.c.endpoint_id, d.c.status, d.c.attempts, d.c.lease_until,
                   e.c.url, e.c.enabled, e.c.rate_limit, e.c.secret, e.c.previous_secret,
                   e.c.previous_secret_until, e.c.failing_since, e.c.failures, m.c.owner, m.c.event_type,
                   m.c.body)
            .join(e, e.c.id == d.c.endpoint_id).join(m, m.c.id == d.c.message_id)
            .where(d.c.id == bindparam("k"))
        )  # fmt: skip
        same = and_(
            d.c.id == bindparam("k"), d.c.attempts == bindparam("seen_attempts"),
            d.c.status == bindparam("seen_status"),
        )  # fmt: skip
        self.take = update(d).where(same).values(
            attempts=bindparam("attempt"), status="delivering", lease_until=bindparam("lease"),
            updated_at=bindparam("now"),
        )  # fmt: skip
        self.fail_unsent = update(d).where(same).values(
            status="failed", last_error=bindparam("error"), lease_until=None, next_attempt_at=None,
            updated_at=bindparam("now"),
        )  # fmt: skip
        self.record = (
            update(d).where(d.c.id == bindparam("k"))
            .values(status=bindparam("status"), last_status_code=bindparam("code"),
                    last_error=bindparam("error"), next_attempt_at=bindparam("next"), lease_until=None,
                    delivered_at=bindparam("delivered"), updated_at=bindparam("now"))
        )  # fmt: skip
        self.postpone = (
            update(d).where(d.c.id == bindparam("k"), d.c.status == "pending")
            .values(next_attempt_at=bindparam("next"))
        )  # fmt: skip
        self.log = insert(WebhookAttempt.__table__)  # type: ignore[attr-defined]
        self.healthy = update(e).where(e.c.id == bindparam("k")).values(failing_since=None, failures=0)
        self.disable = (
            update(e).where(e.c.id == bindparam("k"), e.c.enabled.is_(True))
            .values(enabled=False, disabled_reason=bindparam("reason"), disabled_at=bindparam("now"),
                    updated_at=bindparam("now"))
            .returning(e.c.url, e.c.owner)
        )  # fmt: skip
        self.failing = (
            update(e).where(e.c.id == bindparam("k"))
            .values(failures=e.c.failures + 1,
                    failing_since=func.coalesce(e.c.failing_since, bindparam("now")))
            .returning(e.c.failures, e.c.failing_since)
        )  # fmt: skip
        self.overdue = (
            select(d.c.id, d.c.endpoint_id, d.c.attempts, d.c.status).where(
                or_(and_(d.c.status == "pending", d.c.next_attempt_at < bindparam("before")),
                    and_(d.c.status == "delivering", d.c.lease_until < bindparam("before"))))
            .order_by(d.c.next_attempt_at).limit(bindparam("limit"))
        )  # fmt: skip


_statements = _Statements()


def _read(conn: Any, delivery_id: str) -> _Row | None:
    found = conn.execute(_statements.read, {"k": delivery_id}).first()
    return None if found is None else _Row(*found)


def _count(name: str, outcome: str) -> None:
    docs = {
        "bgjobs_webhook_attempts_total": "Webhook HTTP attempts, by outcome.",
        "bgjobs_webhook_deliveries_total": "Webhook delivery jobs, by what they did.",
    }
    observability.counter(name, docs[name], ("outcome",)).labels(outcome).inc()


@contextmanager
def _limits(row: _Row, settings: WebhookSettings, lease_ms: int) -> Iterator[bool]:
    """Hold one of the endpoint's concurrency slots and one request of its rate; False when full."""
    backend = coordination_for(_actor().actor.broker).limiter_backend()
    with ExitStack() as stack:
        slot = ConcurrentRateLimiter(  # type: ignore[no-untyped-call]
            backend, f"bgjobs-webhook:{row.endpoint_id}", limit=settings.endpoint_concurrency, ttl=lease_ms
        )
        if not stack.enter_context(slot.acquire(raise_on_failure=False)):
            yield False
            return
        if row.rate_limit is not None:
            window = WindowRateLimiter(  # type: ignore[no-untyped-call]
                backend, f"bgjobs-webhook-rate:{row.endpoint_id}", limit=row.rate_limit, window=1
            )
            if not stack.enter_context(window.acquire(raise_on_failure=False)):
                yield False
                return
        yield True


@functools.cache
def _user_agent() -> str:
    from .. import __version__

    return f"bgjobs-webhooks/{__version__}"


def _headers(row: _Row, body: bytes, now: datetime) -> dict[str, str]:
    secrets = [row.secret]
    until = row.previous_secret_until
    if row.previous_secret and until is not None and db.aware(until) > now:
        secrets.append(row.previous_secret)
    timestamp = int(time.time())
    return {
        "content-type": "application/json",
        "user-agent": _user_agent(),
        "webhook-id": row.message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(row.message_id, timestamp, body, secrets),
    }


def _attempt(row: _Row, settings: WebhookSettings, now: datetime) -> AttemptResult:
    started = time.monotonic()
    try:
        target = check_url(row.url, require_https=settings.require_https, allow=settings.allow)
    except (BlockedAddress, TransientError) as exc:
        return AttemptResult(None, int((time.monotonic() - started) * 1000), None, str(exc)[:1000])
    body = row.body.encode()
    return post(target, _headers(row, body, now), body, settings)


def _delay(job: DeliveryJob, result: AttemptResult, settings: WebhookSettings) -> float | None:
    """Seconds until the next attempt, or None when this was the last."""
    if job.trigger == "manual" or job.attempt > len(settings.retry_schedule_s):
        return None
    if result.retry_after_s is not None:
        return min(result.retry_after_s, float(settings.retry_after_max_s))
    base = settings.retry_schedule_s[job.attempt - 1]
    return base * random.uniform(1 - settings.jitter, 1 + settings.jitter)


def _defer(job: DeliveryJob, why: str) -> str:
    delay = min(30.0, 0.25 * 2**job.deferrals) * random.uniform(0.5, 1.5)
    due = _now() + timedelta(seconds=delay)
    with db.get_engine().begin() as conn:  # so the health sweep does not take it for lost
        conn.execute(_statements.postpone, {"k": job.delivery_id, "next": due})
    _actor().send(job.model_copy(update={"deferrals": job.deferrals + 1}), delay=int(delay * 1000))
    _count("bgjobs_webhook_deliveries_total", "deferred")
    logger.debug("delivery %s waits %.1fs for %s's %s", job.delivery_id, delay, job.endpoint_id, why)
    return "deferred"


def deliver(job: DeliveryJob) -> str:
    """Make one attempt of a delivery; returns what happened.

    Outcomes: ``delivered``; ``retrying`` (failed, next attempt scheduled); ``failed`` (a manual
    attempt failed, or the endpoint is disabled or was just disabled); ``duplicate`` (a copy of
    an attempt already made); ``busy`` (another worker is making it); ``deferred`` (the
    endpoint's concurrency or rate limit is full).

    Raises:
        DeliveryExhausted: the last scheduled attempt failed; the job is dead-lettered with the
            reason and ``webhook.delivery.exhausted`` is published.
    """
    settings = current()
    now = _now()
    engine = db.get_engine()
    with db.read(engine) as conn:
        row = _read(conn, job.delivery_id)
    if row is None:
        logger.warning("delivery %s no longer exists (its endpoint was deleted)", job.delivery_id)
        return "duplicate"
    if job.attempt <= row.attempts:
        lease = db.aware(row.lease_until) if row.lease_until is not None else None
        if row.status != "delivering" or lease is None:
            _count("bgjobs_webhook_deliveries_total", "duplicate")
            return "duplicate"
        if lease > now:
            wait = min(lease - now, LEASE_RECHECK).total_seconds()
            _actor().send(job, delay=int(wait * 1000) + 100)
            return "busy"
        job = job.model_copy(update={"attempt": row.attempts})  # that attempt died: make it again
    elif row.status in ("delivered", "failed"):
        _count("bgjobs_webhook_deliveries_total", "duplicate")
        return "duplicate"
    seen = {"k": row.delivery_id, "seen_attempts": row.attempts, "seen_status": row.status}
    if not row.enabled:
        with engine.begin() as conn:
            conn.execute(_statements.fail_unsent, {**seen, "error": "endpoint disabled", "now": now})
        _count("bgjobs_webhook_deliveries_total", "failed")
        return "failed"

    from ..broker import current_settings

    time_limit = current_settings().limits_for(_actor().name, "webhooks").time_limit_ms
    with _limits(row, settings, time_limit) as acquired:
        if not acquired:
            return _defer(job, "concurrency or rate limit")
        with engine.begin() as conn:
            lease = now + timedelta(milliseconds=time_limit + 5_000)
            taken = conn.execute(
                _statements.take, {**seen, "attempt": job.attempt, "lease": lease, "now": now}
            )
        if taken.rowcount != 1:
            _count("bgjobs_webhook_deliveries_total", "duplicate")
            return "duplicate"
        result = _attempt(row, settings, now)
    return _record(job, row, result, settings, requested_at=now)


def _record(
    job: DeliveryJob, row: _Row, result: AttemptResult, settings: WebhookSettings, *, requested_at: datetime
) -> str:
    now = _now()
    succeeded = result.succeeded
    error = None if succeeded else (result.error or f"HTTP {result.status_code}")
    delay = None if succeeded else _delay(job, result, settings)
    disabled: tuple[str, str | None, str] | None = None
    with db.get_engine().begin() as conn:
        conn.execute(_statements.log, {
            "delivery_id": row.delivery_id, "message_id": row.message_id, "endpoint_id": row.endpoint_id,
            "attempt": job.attempt, "trigger": job.trigger, "requested_at": requested_at,
            "status_code": result.status_code, "duration_ms": result.duration_ms,
            "response": result.response, "error": error, "succeeded": succeeded,
        })  # fmt: skip
        if succeeded:
            if row.failures or row.failing_since is not None:
                conn.execute(_statements.healthy, {"k": row.endpoint_id})
        else:
            failures, since = conn.execute(_statements.failing, {"k": row.endpoint_id, "now": now}).one()
            reason = _disable_reason(result, failures, db.aware(since), settings, now)
            if reason is not None:
                found = conn.execute(
                    _statements.disable, {"k": row.endpoint_id, "reason": reason, "now": now}
                )
                hit = found.first()
                if hit is not None:
                    disabled = (hit[0], hit[1], reason)
                delay = None
        status = "delivered" if succeeded else ("pending" if delay is not None else "failed")
        conn.execute(_statements.record, {
            "k": row.delivery_id, "status": status, "code": result.status_code, "error": error,
            "next": now + timedelta(seconds=delay) if delay is not None else None,
            "delivered": now if succeeded else None, "now": now,
        })  # fmt: skip
    _count("bgjobs_webhook_attempts_total", "succeeded" if succeeded else "failed")
    if disabled is not None:
        url, owner, reason = disabled
        logger.warning("disabled webhook endpoint %s: %s", row.endpoint_id, reason)
        events.publish("webhook.endpoint.disabled", EndpointDisabled(
            endpoint_id=row.endpoint_id, url=url, owner=owner, reason=reason, disabled_at=now,
        ), key=f"{row.endpoint_id}:{now.isoformat()}")  # fmt: skip
    if succeeded:
        _count("bgjobs_webhook_deliveries_total", "delivered")
        return "delivered"
    if delay is not None:
        _actor().send(job.model_copy(update={"attempt": job.attempt + 1, "deferrals": 0}),
                      delay=int(delay * 1000))  # fmt: skip
        _count("bgjobs_webhook_deliveries_total", "retrying")
        return "retrying"
    _count("bgjobs_webhook_deliveries_total", "failed")
    if disabled is None and job.trigger == "scheduled":
        reason = f"{job.attempt} attempt(s), the last: {error}"
        events.publish("webhook.delivery.exhausted", Exhausted(
            delivery_id=row.delivery_id, message_id=row.message_id, endpoint_id=row.endpoint_id,
            event_type=row.event_type, owner=row.owner, attempts=job.attempt, reason=error or "",
        ), key=row.delivery_id)  # fmt: skip
        raise DeliveryExhausted(f"webhook {row.message_id} to endpoint {row.endpoint_id} failed; {reason}")
    return "failed"


def _disable_reason(
    result: AttemptResult, failures: int, since: datetime, settings: WebhookSettings, now: datetime
) -> str | None:
    if result.status_code == 410:
        return "the endpoint answered 410 Gone"
    if failures >= settings.disable_min_failures and now - since >= timedelta(hours=settings.disable_after_h):
        return f"failing since {since:%Y-%m-%d %H:%M} UTC ({failures} failed attempts, none succeeded)"
    return None
