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

The dispatcher (:mod:`._dispatch`) runs steps 2 to 5, in batches, for published messages' first
attempts and for the attempts the ``webhooks.deliver`` job screens and queues (retries, replays,
resends, deliveries whose turn has come), so no attempt holds a worker thread while it waits.

Receivers see the same ``webhook-id`` on every attempt, so the copies at-least-once
delivery can bring are theirs to drop.
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .. import db, runtime, tracing
from ..claims import Answer, Claim, Seen, recheck_ms
from ..clock import now as _now
from ..errors import DeliveryExhausted, TransientError
from ..keying import limits_of
from ..settings import WebhookSettings
from . import _transport as transport
from ._attempts import Finished, Started, announce_exhausted, ask, attempt, count, follow, lease_ms, write
from ._gates import ENDPOINT, Verdict, gates_for
from ._guard import BlockedAddress, Target, check_url
from ._lanes import lanes_for
from ._models import DeliveryJob
from ._statements import CLAIMS, Row, read_row, statements
from .tasks import deliver_webhook

__all__ = [
    "HOLD_MS", "DeliveryExhausted", "Later", "Launched", "Round", "admit", "backoff",
    "deliver", "screen",
]  # fmt: skip

logger = logging.getLogger("bgjobs.webhooks")

#: A turn at most this far off is waited for on the event loop; a later one is sent for then.
HOLD_MS = 2_000

Launched = tuple[Started, "concurrent.futures.Future[Finished]"]


def screen(job: DeliveryJob, row: Row | None, now: datetime) -> str | DeliveryJob:
    """What to do with ``job``: an outcome (``duplicate``, ``busy``, ``failed``) or the job to attempt."""
    if row is None:
        logger.warning("delivery %s no longer exists (its endpoint was deleted)", job.delivery_id)
        return "duplicate"
    seen = Seen(row.status, row.attempts, row.lease_until)
    made = job.attempt <= row.attempts  # this attempt number was taken before
    answer = CLAIMS.answer(seen, now)
    if answer is Answer.DUPLICATE or (made and (row.status != "delivering" or row.lease_until is None)):
        count("bgjobs_webhook_deliveries_total", "duplicate")
        return "duplicate"
    if answer is Answer.BUSY:
        deliver_webhook.send(job, delay=recheck_ms(seen, now))
        return "busy"
    if made:
        return job.model_copy(update={"attempt": row.attempts})  # that attempt died: make it again
    if not row.enabled:
        same = {"k": row.delivery_id, "seen_attempts": row.attempts, "seen_status": row.status}
        with db.get_engine().begin() as conn:
            conn.execute(statements.fail_unsent, {**same, "error": "endpoint disabled", "now": now})
        count("bgjobs_webhook_deliveries_total", "failed")
        return "failed"
    return job


@dataclass(frozen=True)
class Later:
    """A delivery sent again for later without using its attempt: its turn is far off, or every
    slot of its endpoint stayed taken."""

    job: DeliveryJob
    delay_s: float
    turn_ms: int = 0


def backoff(deferrals: int) -> float:
    """Seconds a delivery waits for a free slot: short at first, then spreading out."""
    return min(30.0, 0.25 * 2.0**deferrals) * random.uniform(0.5, 1.5)


Admitted = tuple[
    list[tuple[DeliveryJob, Row, int]], list[tuple[DeliveryJob, Row]], list[tuple[Later, Row]], dict[str, int]
]


def admit(items: list[tuple[DeliveryJob, Row]], *, hold_ms: int) -> Admitted:
    """Pass items through their endpoints' gates: those to go (with their wait in milliseconds),
    those whose endpoint's slots are all taken, those whose turn is later, and each endpoint's cap
    as the gate has it now (an operator may have changed it)."""
    if not items:
        return [], [], [], {}
    current = runtime.current()
    limits = limits_of(ENDPOINT, current.broker)
    assert limits is not None
    asks = [ask(job, row) for job, row in items]
    go, full, later, caps = [], [], [], {}
    now_ms = int(time.time() * 1000)
    admissions = gates_for(current.coordination).admit(asks, limits, lease_ms=lease_ms(), hold_ms=hold_ms)
    for (job, row), admission in zip(items, admissions, strict=True):
        caps[row.endpoint_id] = admission.limit
        if admission.verdict is Verdict.GO:
            go.append((job, row, admission.wait_ms))
        elif admission.verdict is Verdict.FULL:
            full.append((job, row))
        else:
            later.append((Later(job, admission.wait_ms / 1000, now_ms + admission.wait_ms), row))
    return go, full, later, caps


@dataclass
class Round:
    """What one write transaction does: record finished attempts, take admitted ones, postpone
    deliveries sent for later. Few transactions matter: on SQLite they queue for one lock."""

    finished: list[Finished] = field(default_factory=list)
    go: list[tuple[DeliveryJob, Row, int]] = field(default_factory=list)
    later: list[Later] = field(default_factory=list)
    #: Filled in by :meth:`commit`: the finished attempts' outcomes, the attempts started, and the
    #: rows another copy of the job had taken first.
    outcomes: list[tuple[str, str | None]] = field(default_factory=list)
    started: list[Launched] = field(default_factory=list)
    lost: list[DeliveryJob] = field(default_factory=list)

    def commit(self, settings: WebhookSettings) -> Round:
        if not (self.finished or self.go or self.later):
            return self
        now = _now()
        with db.get_engine().begin() as conn:
            written = write(conn, self.finished, settings, now)
            taken = _take(conn, self.go, now)
            if self.later:
                conn.execute(statements.postpone, [
                    {"k": d.job.delivery_id, "next": now + timedelta(seconds=d.delay_s)} for d in self.later
                ])  # fmt: skip
        for f in self.finished:
            f.started.claim.let_go()
        self.outcomes = follow(written, settings, now)
        for d in self.later:
            job = d.job.model_copy(update={"deferrals": d.job.deferrals + 1, "turn_ms": d.turn_ms})
            with tracing.attached(job.trace):
                deliver_webhook.send(job, delay=max(0, int(d.delay_s * 1000)))
        count("bgjobs_webhook_deliveries_total", "deferred", len(self.later))
        released = []
        for job, row, wait_ms in self.go:
            holder = f"{row.delivery_id}:{job.attempt}"
            claim = taken.pop(row.delivery_id, None)
            if claim is None:  # another copy took it first (in this round, too)
                self.lost.append(job)
                released.append((row.endpoint_id, holder))
                continue
            claim.hold()
            started = Started(job, row, now, holder, claim)
            with tracing.within(job.trace):  # the loop runs it in the context it is given here
                future = transport.run(attempt(started, _target(row, settings), settings, wait_ms))
            self.started.append((started, future))
        count("bgjobs_webhook_deliveries_total", "duplicate", len(self.lost))
        going = {started.holder for started, _ in self.started}  # a copy in this round shares its slot
        gates_for(runtime.current().coordination).release([r for r in released if r[1] not in going])
        return self


def _take(conn: Any, go: list[tuple[DeliveryJob, Row, int]], now: datetime) -> dict[str, Claim]:
    """Claim the attempts' deliveries, one statement per state seen; returns the claims taken."""
    groups: dict[tuple[int, int, str], list[str]] = defaultdict(list)
    for job, row, _ in go:
        groups[(row.attempts, job.attempt, row.status)].append(row.delivery_id)
    taken: dict[str, Claim] = {}
    for (seen, number, status), ids in groups.items():
        taken.update(CLAIMS.take(conn, ids, Seen(status, seen, None), now, attempt=number,
                                 values={"status": "delivering", "updated_at": now}))  # fmt: skip
    return taken


def _target(row: Row, settings: WebhookSettings) -> Target | str:
    try:
        return check_url(row.url, require_https=settings.require_https, allow=settings.allow)
    except (BlockedAddress, TransientError) as exc:
        return str(exc)


def deliver(job: DeliveryJob) -> str:
    """Screen one attempt of a delivery and queue it for the dispatcher; returns what happened.

    Outcomes: ``queued`` (in its owner's lane: run the dispatcher); ``duplicate`` (a copy of an
    attempt already made); ``busy`` (another worker is making it; looked at again later);
    ``failed`` (the endpoint is disabled).

    Raises:
        DeliveryExhausted: a check job found the delivery's last scheduled attempt failed; the
            job is dead-lettered with the reason and ``webhook.delivery.exhausted`` is published.
    """
    with db.read() as conn:
        row = read_row(conn, job.delivery_id)
    if job.check and row is not None:
        return _check(job, row)
    screened = screen(job, row, _now())
    if isinstance(screened, str):
        return screened
    assert row is not None
    traced = screened.model_copy(update={"trace": tracing.deferred_context() or screened.trace})
    lanes_for(runtime.current().coordination).push(row.owner, traced.model_dump_json(), 1)
    return "queued"


def _check(job: DeliveryJob, row: Row) -> str:
    """The dispatcher's last attempt of this delivery failed: dead-letter this job with the reason."""
    if row.status == "failed" and row.attempts == job.attempt:
        raise DeliveryExhausted(announce_exhausted(job, row, row.last_error or ""))
    return "duplicate"
