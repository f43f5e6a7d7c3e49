"""Delivering a webhook, in the worker: one attempt of one delivery.

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
import logging
import random
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from dramatiq.rate_limits import ConcurrentRateLimiter, WindowRateLimiter

from .. import db, events, runtime, tally, tracing
from ..clock import now as _now
from ..errors import PermanentError, TransientError
from ..settings import WebhookSettings
from ._endpoints import current
from ._guard import BlockedAddress, check_url
from ._models import DeliveryJob, EndpointDisabled
from ._models import WebhookDeliveryExhausted as Exhausted
from ._signing import sign
from ._statements import Row, read_row, statements
from ._transport import AttemptResult, post
from .tasks import deliver_webhook

__all__ = ["LEASE_RECHECK", "DeliveryExhausted", "deliver"]

logger = logging.getLogger("bgjobs.webhooks")

#: A copy that found the attempt in progress looks again this soon (or when the lease ends).
LEASE_RECHECK = timedelta(seconds=5)


class DeliveryExhausted(PermanentError):
    """Raised when a delivery's last scheduled attempt fails; its message is dead-lettered."""


def _count(name: str, outcome: str) -> None:
    docs = {
        "bgjobs_webhook_attempts_total": "Webhook HTTP attempts, by outcome.",
        "bgjobs_webhook_deliveries_total": "Webhook delivery jobs, by what they did.",
    }
    tally.counter(name, docs[name], ("outcome",)).labels(outcome).inc()


@contextmanager
def _limits(row: Row, settings: WebhookSettings, lease_ms: int) -> Iterator[bool]:
    """Hold one of the endpoint's concurrency slots and one request of its rate; False when full."""
    backend = runtime.current().coordination.limiter_backend()
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


def _headers(row: Row, body: bytes, now: datetime) -> dict[str, str]:
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


def _attempt(row: Row, settings: WebhookSettings, now: datetime, number: int) -> AttemptResult:
    started = time.monotonic()
    where = {"server.address": urlsplit(row.url).hostname or "", "bgjobs.webhook.attempt": number,
             "bgjobs.webhook.endpoint": row.endpoint_id}  # fmt: skip
    with tracing.span("webhook.attempt", **where) as note:
        try:
            target = check_url(row.url, require_https=settings.require_https, allow=settings.allow)
        except (BlockedAddress, TransientError) as exc:
            note.fail(f"{type(exc).__name__}: {exc}")
            return AttemptResult(None, int((time.monotonic() - started) * 1000), None, str(exc)[:1000])
        body = row.body.encode()
        result = post(target, _headers(row, body, now), body, settings)
        if result.status_code is not None:
            note.set(**{"http.response.status_code": result.status_code})
        if not result.succeeded:
            note.fail(result.error or f"the endpoint answered {result.status_code}")
        return result


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
        conn.execute(statements.postpone, {"k": job.delivery_id, "next": due})
    deliver_webhook.send(job.model_copy(update={"deferrals": job.deferrals + 1}), delay=int(delay * 1000))
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
        row = read_row(conn, job.delivery_id)
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
            deliver_webhook.send(job, delay=int(wait * 1000) + 100)
            return "busy"
        job = job.model_copy(update={"attempt": row.attempts})  # that attempt died: make it again
    elif row.status in ("delivered", "failed"):
        _count("bgjobs_webhook_deliveries_total", "duplicate")
        return "duplicate"
    seen = {"k": row.delivery_id, "seen_attempts": row.attempts, "seen_status": row.status}
    if not row.enabled:
        with engine.begin() as conn:
            conn.execute(statements.fail_unsent, {**seen, "error": "endpoint disabled", "now": now})
        _count("bgjobs_webhook_deliveries_total", "failed")
        return "failed"


    time_limit = runtime.current().settings.limits_for(deliver_webhook.name, "webhooks").time_limit_ms
    with _limits(row, settings, time_limit) as acquired:
        if not acquired:
            return _defer(job, "concurrency or rate limit")
        with engine.begin() as conn:
            lease = now + timedelta(milliseconds=time_limit + 5_000)
            taken = conn.execute(
                statements.take, {**seen, "attempt": job.attempt, "lease": lease, "now": now}
            )
        if taken.rowcount != 1:
            _count("bgjobs_webhook_deliveries_total", "duplicate")
            return "duplicate"
        result = _attempt(row, settings, now, job.attempt)
    return _record(job, row, result, settings, requested_at=now)


def _record(
    job: DeliveryJob, row: Row, result: AttemptResult, settings: WebhookSettings, *, requested_at: datetime
) -> str:
    """Log the attempt and settle the delivery in one transaction, then say so and send what follows."""
    now = _now()
    error = None if result.succeeded else (result.error or f"HTTP {result.status_code}")
    delay = None if result.succeeded else _delay(job, result, settings)
    with db.get_engine().begin() as conn:
        _log(conn, job, row, result, error, requested_at)
        stop, disabled = _endpoint_health(conn, row, result, settings, now)
        if stop:  # the endpoint is to be disabled (by this attempt, or it already was): no retry
            delay = None
        _settle(conn, row, result, error, delay, now)
    _count("bgjobs_webhook_attempts_total", "succeeded" if result.succeeded else "failed")
    if disabled is not None:
        _announce_disabled(row, disabled, now)
    return _next(job, row, result.succeeded, error, delay, disabled is not None)


def _log(
    conn: Any, job: DeliveryJob, row: Row, result: AttemptResult, error: str | None, requested_at: datetime
) -> None:
    conn.execute(statements.log, {
        "delivery_id": row.delivery_id, "message_id": row.message_id, "endpoint_id": row.endpoint_id,
        "attempt": job.attempt, "trigger": job.trigger, "requested_at": requested_at,
        "status_code": result.status_code, "duration_ms": result.duration_ms,
        "response": result.response, "error": error, "succeeded": result.succeeded,
    })  # fmt: skip


def _endpoint_health(
    conn: Any, row: Row, result: AttemptResult, settings: WebhookSettings, now: datetime
) -> tuple[bool, tuple[str, str | None, str] | None]:
    """Count the failure (or clear the record on success); disable the endpoint when it is time.

    Returns whether the endpoint is to be disabled, and its (url, owner, reason) when this attempt
    is the one that disabled it.
    """
    if result.succeeded:
        if row.failures or row.failing_since is not None:
            conn.execute(statements.healthy, {"k": row.endpoint_id})
        return False, None
    failures, since = conn.execute(statements.failing, {"k": row.endpoint_id, "now": now}).one()
    reason = _disable_reason(result, failures, db.aware(since), settings, now)
    if reason is None:
        return False, None
    hit = conn.execute(statements.disable, {"k": row.endpoint_id, "reason": reason, "now": now}).first()
    return True, None if hit is None else (hit[0], hit[1], reason)


def _settle(
    conn: Any, row: Row, result: AttemptResult, error: str | None, delay: float | None, now: datetime
) -> None:
    status = "delivered" if result.succeeded else ("pending" if delay is not None else "failed")
    conn.execute(statements.record, {
        "k": row.delivery_id, "status": status, "code": result.status_code, "error": error,
        "next": now + timedelta(seconds=delay) if delay is not None else None,
        "delivered": now if result.succeeded else None, "now": now,
    })  # fmt: skip


def _announce_disabled(row: Row, disabled: tuple[str, str | None, str], now: datetime) -> None:
    url, owner, reason = disabled
    logger.warning("disabled webhook endpoint %s: %s", row.endpoint_id, reason)
    events.publish("webhook.endpoint.disabled", EndpointDisabled(
        endpoint_id=row.endpoint_id, url=url, owner=owner, reason=reason, disabled_at=now,
    ), key=f"{row.endpoint_id}:{now.isoformat()}")  # fmt: skip


def _next(
    job: DeliveryJob, row: Row, succeeded: bool, error: str | None, delay: float | None, disabled: bool
) -> str:
    """The outcome, after sending the next attempt, or announcing and raising the last failure."""
    if succeeded:
        _count("bgjobs_webhook_deliveries_total", "delivered")
        return "delivered"
    if delay is not None:
        deliver_webhook.send(job.model_copy(update={"attempt": job.attempt + 1, "deferrals": 0}),
                             delay=int(delay * 1000))  # fmt: skip
        _count("bgjobs_webhook_deliveries_total", "retrying")
        return "retrying"
    _count("bgjobs_webhook_deliveries_total", "failed")
    if not disabled and job.trigger == "scheduled":
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
