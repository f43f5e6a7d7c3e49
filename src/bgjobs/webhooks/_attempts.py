"""Attempts: make them on the event loop, and record a set of them in one transaction.

Both the dispatcher (first attempts, in batches) and the delivery job (retries, replays, and
deliveries sent again after waiting for their turn) use these. Recording is one transaction
for however many attempts finished together: the attempt log rows, each delivery's outcome
and the endpoints' failure records. What follows a commit (slots given back, pauses, retries
sent, events) is done after it, so a crash between the two leaves a delivery ``pending`` and
overdue, which the health sweep sends again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .. import db, events, runtime, tally, tracing
from ..claims import Claim
from ..clock import now as _now
from ..settings import WebhookSettings
from ._gates import Ask, Gates, gates_for
from ._guard import Target
from ._models import DeliveryJob, EndpointDisabled
from ._models import WebhookDeliveryExhausted as Exhausted
from ._signing import sign
from ._statements import CLAIMS, Row, statements
from ._transport import RETRY_AFTER_STATUSES, AttemptResult, post
from .tasks import deliver_webhook

__all__ = ["Finished", "Outcome", "Started", "ask", "attempt", "count", "follow", "free", "write"]

logger = logging.getLogger("bgjobs.webhooks")


def count(name: str, outcome: str, amount: int = 1) -> None:
    docs = {
        "bgjobs_webhook_attempts_total": "Webhook HTTP attempts, by outcome.",
        "bgjobs_webhook_deliveries_total": "Webhook delivery jobs, by what they did.",
    }
    tally.counter(name, docs[name], ("outcome",)).labels(outcome).inc(amount)


def lease_ms() -> int:
    """How long an attempt may hold its slot and its lease: the delivery job's time limit."""
    limit = runtime.current().settings.limits_for(deliver_webhook.name, "webhooks").time_limit_ms
    return int(limit or 60_000)


def ask(job: DeliveryJob, row: Row) -> Ask:
    own = 0 if row.rate_limit is None else max(1, round(1000 / row.rate_limit))
    return Ask(row.endpoint_id, f"{row.delivery_id}:{job.attempt}", own, job.turn_ms)


@dataclass(frozen=True)
class Started:
    """An attempt taken (its delivery claimed), about to go or on its way."""

    job: DeliveryJob
    row: Row
    requested_at: datetime
    holder: str
    claim: Claim


@dataclass(frozen=True)
class Finished:
    started: Started
    result: AttemptResult
    #: Not sent: its endpoint was paused while it waited for its turn; it goes again this much
    #: later, on the same attempt number.
    postponed_ms: int = 0
    #: The attempt's span (with tracing on): its retry is sent as its child.
    trace: str | None = None


#: Pauses asked for by answers this process received (endpoint id -> until, epoch milliseconds).
#: Read and written on the event loop only, so an attempt sees a pause the moment the answer
#: asking for it arrives, before the dispatcher stores it for every worker.
_asked: dict[str, int] = {}
_NOT_SENT = AttemptResult(None, 0, None, None)


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


def attempt(
    started: Started, target: Target | str, settings: WebhookSettings, wait_ms: int
) -> Coroutine[Any, Any, Finished]:
    """The attempt as a coroutine for the loop: wait for its turn, sign, POST. ``target`` is the
    address the SSRF guard checked, or why it refused."""
    return _attempt(started, target, settings, wait_ms, gates_for(runtime.current().coordination))


async def _attempt(
    started: Started, target: Target | str, settings: WebhookSettings, wait_ms: int, gates: Gates
) -> Finished:
    row, number = started.row, started.job.attempt
    stored = 0
    if wait_ms > 0:
        # The endpoint may have asked for a pause while this one waited for its turn: look again,
        # so a receiver that said "not now" hears nothing until then.
        await asyncio.sleep(wait_ms / 1000)
        stored = await asyncio.to_thread(gates.paused_until, row.endpoint_id)
    left = max(stored, _asked.get(row.endpoint_id, 0)) - int(time.time() * 1000)
    if left > 0:
        return Finished(started, _NOT_SENT, postponed_ms=left)
    url = urlsplit(row.url)
    where = {"http.request.method": "POST", "server.address": url.hostname or "",
             "server.port": url.port or (443 if url.scheme == "https" else 80),
             # Without its query and any user info: either may carry a secret
             "url.full": urlunsplit((url.scheme, url.netloc.rsplit("@", 1)[-1], url.path or "/", "", "")),
             "bgjobs.webhook.attempt": number, "bgjobs.webhook.endpoint": row.endpoint_id}  # fmt: skip
    with tracing.span("webhook.attempt", **where) as note:
        if isinstance(target, str):
            note.fail(target)
            refused = AttemptResult(None, 0, None, target[:1000])
            return Finished(started, refused, trace=tracing.deferred_context())
        body = row.body.encode()
        result = await post(target, _headers(row, body, _now()), body, settings)
        asked = _pause_asked(result, settings)
        if asked is not None:
            _ask_for_pause(row.endpoint_id, asked)
        if result.status_code is not None:
            note.set(**{"http.response.status_code": result.status_code})
        if not result.succeeded:
            kind = str(result.status_code) if result.status_code is not None else "_OTHER"
            note.fail(result.error or f"the endpoint answered {result.status_code}", error_type=kind)
        return Finished(started, result, trace=tracing.deferred_context())


def _pause_asked(result: AttemptResult, settings: WebhookSettings) -> float | None:
    """Seconds the receiver asked every delivery to wait (a 429 or 503 with ``Retry-After``, capped
    by ``retry_after_max_s``), or None."""
    if result.retry_after_s is None or result.status_code not in RETRY_AFTER_STATUSES:
        return None
    return min(result.retry_after_s, float(settings.retry_after_max_s))


def _ask_for_pause(endpoint_id: str, seconds: float) -> None:
    now_ms = int(time.time() * 1000)
    if len(_asked) > 1_000:
        for ended in [k for k, until in _asked.items() if until <= now_ms]:
            del _asked[ended]
    _asked[endpoint_id] = max(_asked.get(endpoint_id, 0), now_ms + int(seconds * 1000))


def _delay(job: DeliveryJob, result: AttemptResult, settings: WebhookSettings) -> float | None:
    """Seconds until the next attempt, or None when this was the last."""
    if job.trigger == "manual" or job.attempt > len(settings.retry_schedule_s):
        return None
    if result.retry_after_s is not None:
        return min(result.retry_after_s, float(settings.retry_after_max_s))
    base = settings.retry_schedule_s[job.attempt - 1]
    return base * random.uniform(1 - settings.jitter, 1 + settings.jitter)


@dataclass
class Outcome:
    finished: Finished
    error: str | None
    delay: float | None
    disabled: tuple[str, str | None, str] | None = None


def write(conn: Any, finished: list[Finished], settings: WebhookSettings, now: datetime) -> list[Outcome]:
    """In the caller's transaction: log the attempts, settle their deliveries, count endpoint failures.

    Pass what it returns to :func:`follow` once the transaction has committed.
    """
    postponed = [Outcome(f, None, f.postponed_ms / 1000) for f in finished if f.postponed_ms]
    # Not sent: the attempt is given back, and made when the pause is over
    CLAIMS.settle_many(conn, [(o.finished.started.claim, {
        "attempts": o.finished.started.job.attempt - 1, "status": "pending",
        "next_attempt_at": now + timedelta(seconds=o.delay or 0), "updated_at": now,
    }) for o in postponed])  # fmt: skip
    outcomes = []
    for f in finished:
        if f.postponed_ms:
            continue
        ok = f.result.succeeded
        error = None if ok else (f.result.error or f"HTTP {f.result.status_code}")
        outcomes.append(Outcome(f, error, None if ok else _delay(f.started.job, f.result, settings)))
    if not outcomes:
        return postponed
    conn.execute(statements.log, [_log(o) for o in outcomes])
    rows = [o.finished.started.row for o in outcomes if o.finished.result.succeeded]
    recovered = {row.endpoint_id for row in rows if row.failures or row.failing_since}
    if recovered:
        conn.execute(statements.healthy, [{"k": k} for k in sorted(recovered)])
    for o in outcomes:
        if not o.finished.result.succeeded and _endpoint_health(conn, o, settings, now):
            o.delay = None  # the endpoint is to be disabled (by this attempt, or it already was)
    CLAIMS.settle_many(conn, [(o.finished.started.claim, _settled(o, now)) for o in outcomes])
    return outcomes + postponed


def free(finished: list[Finished], settings: WebhookSettings) -> None:
    """As soon as the answers are in: give back the slots, and pause endpoints that asked for it
    (a 429 or 503 with ``Retry-After``), before the next deliveries are admitted."""
    if not finished:
        return
    gates = gates_for(runtime.current().coordination)
    gates.release([(f.started.row.endpoint_id, f.started.holder) for f in finished])
    for f in finished:
        seconds = _pause_asked(f.result, settings)
        if seconds is not None:
            gates.pause(f.started.row.endpoint_id, seconds=seconds)


def follow(outcomes: list[Outcome], settings: WebhookSettings, now: datetime) -> list[tuple[str, str | None]]:
    """After the commit: count, and send what follows (retries, events).

    Returns each attempt's outcome (``delivered``, ``retrying``, ``postponed``, ``failed`` or
    ``exhausted``) and, when exhausted, the reason; the caller dead-letters those.
    """
    if not outcomes:
        return []
    finished = [o.finished for o in outcomes if not o.finished.postponed_ms]
    succeeded = sum(1 for f in finished if f.result.succeeded)
    count("bgjobs_webhook_attempts_total", "succeeded", succeeded)
    count("bgjobs_webhook_attempts_total", "failed", len(finished) - succeeded)
    out: list[tuple[str, str | None]] = []
    for o in outcomes:
        if o.finished.started.claim.lost.is_set():
            # Not recorded: the delivery was taken over while this worker was held up. What
            # follows is the new holder's; the health sweep sends what an outcome left unsent.
            logger.warning("delivery %s: taken over by another worker; its outcome is that worker's",
                           o.finished.started.row.delivery_id)  # fmt: skip
            out.append(("duplicate", None))
            continue
        # Retries and events: children of the attempt they follow (of its publish, if not traced)
        with tracing.attached(o.finished.trace or o.finished.started.job.trace):
            out.append(_next(o, now))
    return out


def _log(o: Outcome) -> dict[str, Any]:
    s, r = o.finished.started, o.finished.result
    return {
        "delivery_id": s.row.delivery_id, "message_id": s.row.message_id, "endpoint_id": s.row.endpoint_id,
        "attempt": s.job.attempt, "trigger": s.job.trigger, "requested_at": s.requested_at,
        "status_code": r.status_code, "duration_ms": r.duration_ms, "response": r.response,
        "error": o.error, "succeeded": r.succeeded,
    }  # fmt: skip


def _endpoint_health(conn: Any, o: Outcome, settings: WebhookSettings, now: datetime) -> bool:
    """Count the failure; disable the endpoint when it is time. Returns whether it is to be disabled,
    and notes (url, owner, reason) on ``o`` when this attempt is the one that disabled it."""
    row, result = o.finished.started.row, o.finished.result
    failures, since = conn.execute(statements.failing, {"k": row.endpoint_id, "now": now}).one()
    reason = _disable_reason(result, failures, db.aware(since), settings, now)
    if reason is None:
        return False
    hit = conn.execute(statements.disable, {"k": row.endpoint_id, "reason": reason, "now": now}).first()
    if hit is not None:
        o.disabled = (hit[0], hit[1], reason)
    return True


def _settled(o: Outcome, now: datetime) -> dict[str, Any]:
    result = o.finished.result
    status = "delivered" if result.succeeded else ("pending" if o.delay is not None else "failed")
    return {
        "status": status, "last_status_code": result.status_code, "last_error": o.error,
        "next_attempt_at": now + timedelta(seconds=o.delay) if o.delay is not None else None,
        "delivered_at": now if result.succeeded else None, "updated_at": now,
    }  # fmt: skip


def _announce_disabled(row: Row, disabled: tuple[str, str | None, str], now: datetime) -> None:
    url, owner, reason = disabled
    logger.warning("disabled webhook endpoint %s: %s", row.endpoint_id, reason)
    events.publish("webhook.endpoint.disabled", EndpointDisabled(
        endpoint_id=row.endpoint_id, url=url, owner=owner, reason=reason, disabled_at=now,
    ), key=f"{row.endpoint_id}:{now.isoformat()}")  # fmt: skip


def _next(o: Outcome, now: datetime) -> tuple[str, str | None]:
    """The outcome, after sending the next attempt, or announcing the last failure."""
    job, row = o.finished.started.job, o.finished.started.row
    if o.finished.postponed_ms:
        again = job.model_copy(update={"deferrals": job.deferrals + 1, "turn_ms": 0})
        deliver_webhook.send(again, delay=o.finished.postponed_ms)
        count("bgjobs_webhook_deliveries_total", "deferred")
        return "postponed", None
    if o.disabled is not None:
        _announce_disabled(row, o.disabled, now)
    if o.finished.result.succeeded:
        count("bgjobs_webhook_deliveries_total", "delivered")
        return "delivered", None
    if o.delay is not None:
        following = job.model_copy(update={"attempt": job.attempt + 1, "deferrals": 0, "turn_ms": 0})
        deliver_webhook.send(following, delay=int(o.delay * 1000))
        count("bgjobs_webhook_deliveries_total", "retrying")
        return "retrying", None
    count("bgjobs_webhook_deliveries_total", "failed")
    if o.disabled is None and job.trigger == "scheduled":
        return "exhausted", announce_exhausted(job, row, o.error or "")
    return "failed", None


def announce_exhausted(job: DeliveryJob, row: Row, error: str) -> str:
    """Publish ``webhook.delivery.exhausted`` (once per delivery); returns the dead letter's reason."""
    events.publish("webhook.delivery.exhausted", Exhausted(
        delivery_id=row.delivery_id, message_id=row.message_id, endpoint_id=row.endpoint_id,
        event_type=row.event_type, owner=row.owner, attempts=job.attempt, reason=error,
    ), key=row.delivery_id)  # fmt: skip
    tried = f"{job.attempt} attempt(s), the last: {error}"
    return f"webhook {row.message_id} to endpoint {row.endpoint_id} failed; {tried}"


def _disable_reason(
    result: AttemptResult, failures: int, since: datetime, settings: WebhookSettings, now: datetime
) -> str | None:
    if result.status_code == 410:
        return "the endpoint answered 410 Gone"
    if failures >= settings.disable_min_failures and now - since >= timedelta(hours=settings.disable_after_h):
        return f"failing since {since:%Y-%m-%d %H:%M} UTC ({failures} failed attempts, none succeeded)"
    return None
