"""Delivering webhooks, in the worker: which attempts to make, and making them.

One attempt of one delivery, with any worker killable at any line:

1. The delivery is read with its endpoint and message. An attempt number already started
   means this job is a copy (a redelivery, a sweep): it is dropped, unless that attempt's
   lease has run out, which means the worker making it died, so the attempt is made again.
2. The endpoint's gate (:mod:`._gates`) admits it: a concurrency slot, and its turn under the
   endpoint's rate limit and any pause its receiver asked for. One whose turn is far off, or
   whose endpoint has every slot taken, is sent again for later, without using an attempt.
3. A conditional UPDATE takes the attempt (number and lease); of two copies one wins.
4. The URL is checked by the SSRF guard again and the signed request is sent to the checked
   address, on the worker's event loop, outside any transaction.
5. One transaction logs the attempt and records the outcome (:mod:`._attempts`). Then the
   next attempt's job is sent. A crash between the two leaves the delivery ``pending`` and
   overdue: the health sweep sends it again.

The dispatcher (:mod:`._dispatch`) runs steps 2 to 5 for batches of first attempts; the
``webhooks.deliver`` job runs them for one delivery (retries, replays, resends).

Receivers see the same ``webhook-id`` on every attempt, so the copies at-least-once
delivery can bring are theirs to drop.
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import time
from collections import defaultdict
from datetime import datetime, timedelta

from .. import db, runtime
from ..clock import now as _now
from ..errors import PermanentError, TransientError
from ..settings import WebhookSettings
from . import _transport as transport
from ._attempts import Finished, Started, announce_exhausted, ask, attempt, count, lease_ms, record
from ._endpoints import current
from ._gates import Verdict, gates_for
from ._guard import BlockedAddress, Target, check_url
from ._models import DeliveryJob
from ._statements import Row, read_row, statements
from .tasks import deliver_webhook

__all__ = ["HOLD_MS", "LEASE_RECHECK", "DeliveryExhausted", "Launched", "deliver", "launch", "screen"]

logger = logging.getLogger("bgjobs.webhooks")

#: A copy that found the attempt in progress looks again this soon (or when the lease ends).
LEASE_RECHECK = timedelta(seconds=5)
#: A turn at most this far off is waited for on the event loop; a later one is sent for then.
HOLD_MS = 2_000

Launched = tuple[Started, "concurrent.futures.Future[Finished]"]


class DeliveryExhausted(PermanentError):
    """Raised when a delivery's last scheduled attempt fails; its message is dead-lettered."""


def screen(job: DeliveryJob, row: Row | None, now: datetime) -> str | DeliveryJob:
    """What to do with ``job``: an outcome (``duplicate``, ``busy``, ``failed``) or the job to attempt."""
    if row is None:
        logger.warning("delivery %s no longer exists (its endpoint was deleted)", job.delivery_id)
        return "duplicate"
    if job.attempt <= row.attempts:
        lease = db.aware(row.lease_until) if row.lease_until is not None else None
        if row.status != "delivering" or lease is None:
            count("bgjobs_webhook_deliveries_total", "duplicate")
            return "duplicate"
        if lease > now:
            wait = min(lease - now, LEASE_RECHECK).total_seconds()
            deliver_webhook.send(job, delay=int(wait * 1000) + 100)
            return "busy"
        return job.model_copy(update={"attempt": row.attempts})  # that attempt died: make it again
    if row.status in ("delivered", "failed"):
        count("bgjobs_webhook_deliveries_total", "duplicate")
        return "duplicate"
    if not row.enabled:
        seen = {"k": row.delivery_id, "seen_attempts": row.attempts, "seen_status": row.status}
        with db.get_engine().begin() as conn:
            conn.execute(statements.fail_unsent, {**seen, "error": "endpoint disabled", "now": now})
        count("bgjobs_webhook_deliveries_total", "failed")
        return "failed"
    return job


def defer(job: DeliveryJob, *, delay_s: float, turn_ms: int = 0, why: str) -> str:
    """Send the attempt again in ``delay_s`` without using it (its endpoint is busy or throttled)."""
    due = _now() + timedelta(seconds=delay_s)
    with db.get_engine().begin() as conn:  # so the health sweep does not take it for lost
        conn.execute(statements.postpone, {"k": job.delivery_id, "next": due})
    later = job.model_copy(update={"deferrals": job.deferrals + 1, "turn_ms": turn_ms})
    deliver_webhook.send(later, delay=max(0, int(delay_s * 1000)))
    count("bgjobs_webhook_deliveries_total", "deferred")
    logger.debug("delivery %s waits %.1fs for %s's %s", job.delivery_id, delay_s, job.endpoint_id, why)
    return "deferred"


def backoff(deferrals: int) -> float:
    """Seconds a delivery waits for a free slot: short at first, then spreading out."""
    return min(30.0, 0.25 * 2.0**deferrals) * random.uniform(0.5, 1.5)


def _target(row: Row, settings: WebhookSettings) -> Target | str:
    try:
        return check_url(row.url, require_https=settings.require_https, allow=settings.allow)
    except (BlockedAddress, TransientError) as exc:
        return str(exc)


def launch(
    items: list[tuple[DeliveryJob, Row]], settings: WebhookSettings, *, hold_ms: int
) -> list[Launched | str | DeliveryJob]:
    """Admit, take and start attempts; for each item, the attempt on its way, an outcome
    (``deferred``, ``duplicate``), or the job itself when its endpoint's slots are all taken."""
    gates = gates_for(runtime.current().coordination)
    lease = lease_ms()
    admissions = gates.admit([ask(job, row, settings) for job, row in items], lease_ms=lease, hold_ms=hold_ms)
    out: list[Launched | str | DeliveryJob] = []
    going: dict[tuple[int, int, str], list[int]] = defaultdict(list)
    for i, ((job, row), admission) in enumerate(zip(items, admissions, strict=True)):
        if admission.verdict is Verdict.FULL:
            out.append(job)
        elif admission.verdict is Verdict.LATER:
            turn = int(time.time() * 1000) + admission.wait_ms
            out.append(defer(job, delay_s=admission.wait_ms / 1000, turn_ms=turn, why="turn"))
        else:
            out.append("duplicate")
            going[(row.attempts, job.attempt, row.status)].append(i)
    if not going:
        return out
    now = _now()
    taken: set[str] = set()
    with db.get_engine().begin() as conn:
        for (seen, number, status), indexes in going.items():
            params = {"ids": [items[i][1].delivery_id for i in indexes], "seen_attempts": seen,
                      "seen_status": status, "attempt": number, "now": now,
                      "lease": now + timedelta(milliseconds=lease + 5_000)}  # fmt: skip
            taken.update(found for (found,) in conn.execute(statements.take_many, params))
    lost = []
    for indexes in going.values():
        for i in indexes:
            job, row = items[i]
            started = Started(job, row, now, f"{row.delivery_id}:{job.attempt}")
            if row.delivery_id not in taken:  # another copy took it first
                count("bgjobs_webhook_deliveries_total", "duplicate")
                lost.append((row.endpoint_id, started.holder))
                continue
            future = transport.run(attempt(started, _target(row, settings), settings, admissions[i].wait_ms))
            out[i] = (started, future)
    gates.release(lost)
    return out


def deliver(job: DeliveryJob) -> str:
    """Make one attempt of a delivery; returns what happened.

    Outcomes: ``delivered``; ``retrying`` (failed, next attempt scheduled); ``failed`` (a manual
    attempt failed, or the endpoint is disabled or was just disabled); ``duplicate`` (a copy of
    an attempt already made); ``busy`` (another worker is making it); ``deferred`` (the
    endpoint's slots are all taken, or its turn is later).

    Raises:
        DeliveryExhausted: the last scheduled attempt failed; the job is dead-lettered with the
            reason and ``webhook.delivery.exhausted`` is published.
    """
    settings = current()
    now = _now()
    with db.read() as conn:
        row = read_row(conn, job.delivery_id)
    if job.check and row is not None:
        return _check(job, row)
    screened = screen(job, row, now)
    if isinstance(screened, str):
        return screened
    assert row is not None
    (launched,) = launch([(screened, row)], settings, hold_ms=200)
    if isinstance(launched, DeliveryJob):
        return defer(launched, delay_s=backoff(launched.deferrals), why="concurrency cap")
    if isinstance(launched, str):
        return launched
    ((outcome, reason),) = record([launched[1].result()], settings)
    if outcome == "exhausted":
        raise DeliveryExhausted(reason)
    return outcome


def _check(job: DeliveryJob, row: Row) -> str:
    """The dispatcher's last attempt of this delivery failed: dead-letter this job with the reason."""
    if row.status == "failed" and row.attempts == job.attempt:
        raise DeliveryExhausted(announce_exhausted(job, row, row.last_error or ""))
    return "duplicate"
