"""Cancel one job by its message id (or by its unique key): a queued one is skipped when a worker
takes it (acked, counted, never run); a running one sees :func:`bgjobs.cancelled` turn true and
can stop early (docs/controls.md).

A cancel is a record in the coordination store (the Redis broker's Redis, or RabbitMQ's
coordination store): a sorted set of cancelled message ids by time, and who cancelled each. Each
worker process reads what is new in it at most every :data:`REFRESH_S`, so taking a message costs
no round trip, and a cancel reaches every worker within that time; records are kept 7 days.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage

from .outage import CONNECTION_ERRORS, report

__all__ = ["REFRESH_S", "Cancels", "cancel", "cancellation", "is_cancelled"]

logger = logging.getLogger("bgjobs.worker")

#: How often a worker process reads the cancels made since it last looked.
REFRESH_S = 0.5
KEEP_MS = 7 * 86_400_000
_SET, _WHO = "bgjobs-cancelled", "bgjobs-cancelled:who"


class _Seen:
    """This process's view of the cancels: id -> when, refreshed incrementally."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: dict[str, float] = {}
        self.since = 0.0
        self.read_at = -1.0


_seen: dict[int, tuple[Any, _Seen]] = {}


def _coordination(broker: dramatiq.Broker) -> Any:
    from .coordination import coordination_for

    return coordination_for(broker)


def cancel(broker: dramatiq.Broker, message_id: str, *, by: str = "api", actor: str = "") -> dict[str, Any]:
    """Record that job ``message_id`` is cancelled, by ``by``; the record."""
    coordination = _coordination(broker)
    now = time.time() * 1000
    record = {"message_id": message_id, "by": by, "actor": actor, "at": int(now)}
    client = getattr(coordination, "client", None)
    if client is None:  # this process's store (the stub broker)
        with coordination.lock:
            coordination.values[f"{_SET}:{message_id}"] = json.dumps(record)
        return record
    pipe = client.pipeline(transaction=True)
    pipe.zadd(coordination.key(_SET), {message_id: now})
    pipe.hset(coordination.key(_WHO), message_id, json.dumps(record))
    pipe.zremrangebyscore(coordination.key(_SET), "-inf", now - KEEP_MS)
    pipe.execute()
    return record


def cancellation(broker: dramatiq.Broker, message_id: str) -> dict[str, Any] | None:
    """Who cancelled job ``message_id`` and when; None if nobody did."""
    coordination = _coordination(broker)
    client = getattr(coordination, "client", None)
    if client is None:
        with coordination.lock:
            found = coordination.values.get(f"{_SET}:{message_id}")
    else:
        found = client.hget(coordination.key(_WHO), message_id)
    return None if found is None else dict(json.loads(found))


def is_cancelled(broker: dramatiq.Broker, message_id: str) -> bool:
    """Whether job ``message_id`` is cancelled, as this process last read (at most
    :data:`REFRESH_S` ago)."""
    coordination = _coordination(broker)
    client = getattr(coordination, "client", None)
    if client is None:
        with coordination.lock:
            return f"{_SET}:{message_id}" in coordination.values
    found = _seen.get(id(coordination))
    if found is None or found[0] is not coordination:
        found = _seen[id(coordination)] = (coordination, _Seen())
    seen = found[1]
    now = time.monotonic()
    if now - seen.read_at >= REFRESH_S:
        with seen.lock:
            if now - seen.read_at >= REFRESH_S:
                try:
                    new = client.zrangebyscore(coordination.key(_SET), seen.since, "+inf", withscores=True)
                except CONNECTION_ERRORS as exc:
                    report(exc, log=logger)  # the outage is told once; the jobs go on, as last read
                    seen.read_at = now  # asked again in half a second, not before every job
                    return message_id in seen.ids
                for id_, at in new:
                    seen.ids[id_.decode()] = at
                    seen.since = max(seen.since, at)
                if len(seen.ids) > 100_000:  # a week of cancels at most; forget the oldest half
                    keep = sorted(seen.ids.items(), key=lambda kv: kv[1])[len(seen.ids) // 2 :]
                    seen.ids = dict(keep)
                # Only now: another thread that finds the view fresh must find these ids in it
                seen.read_at = now
    return message_id in seen.ids


class Cancels(Middleware):
    """Skips a cancelled job when a worker takes it (acked, counted in
    ``bgjobs_jobs_cancelled_total``, never run)."""

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        if is_cancelled(broker, message.message_id):
            try:
                who = cancellation(broker, message.message_id) or {}
            except CONNECTION_ERRORS:
                who = {}
            from . import tally

            tally.counter("bgjobs_jobs_cancelled_total", "Jobs skipped because they were cancelled.",
                          ("actor",)).labels(message.actor_name).inc()  # fmt: skip
            by = who.get("by", "?")
            logger.info("skipping %s (%s): cancelled by %s", message.message_id, message.actor_name, by)
            raise SkipMessage(f"{message.actor_name} {message.message_id} was cancelled by {by}")
