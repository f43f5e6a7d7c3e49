"""The jobs in a queue, with their messages: waiting, delayed (a retry's backoff or a send with a
delay) and in progress; and deleting or running now a single one that no worker holds yet.

On Redis, Dramatiq keeps a queue's waiting messages as ids in the list ``<ns>:<queue>`` (taken
from its head) with the messages in ``<queue>.msgs``, delayed ones in ``<queue>.DQ`` and
``<queue>.DQ.msgs``, and the ids a worker has taken in ``__acks__.<worker>.<queue>`` until it
acknowledges them. Everything here reads one page at a time (``LRANGE`` and ``HMGET``), never a
whole queue, and each change is one Lua call that moves the id only if it is still where the
operator saw it: a job a worker took meanwhile is refused with one line, never run twice.

A worker fetches delayed messages early and holds them in memory until their time (Dramatiq's
delay prefetch); those are listed, but cannot be deleted or run now: the action says so, and
points to ``bgjobs cancel``, which skips such a job when its time comes.

On RabbitMQ nothing is read: AMQP cannot read a queue without taking its messages (the management
API's "get" takes and requeues them, out of order and marked redelivered). The sizes stay exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq

from .deadletters import operated_broker
from .errors import ConfigurationError, InvalidPayload
from .per_key import ADMITTED

__all__ = ["STATES", "QueuedJob", "delete", "jobs", "run_now"]

#: What ``jobs(state=...)`` lists.
STATES = ("waiting", "delayed", "in_progress")
#: A delayed page is sorted by time among at most this many delayed messages (read in pages).
DELAYED_SCAN = 5_000

#: Take ``id`` out of a list and its hash if it is still in the list; the message, or nil.
_TAKE = """
if redis.call("lrem", KEYS[1], 1, ARGV[1]) == 0 then return false end
local data = redis.call("hget", KEYS[2], ARGV[1])
redis.call("hdel", KEYS[2], ARGV[1])
return data
"""
#: Put ``id`` at the head of the queue (next to be taken) if it is still waiting or delayed,
#: moving a delayed message (rewritten without its eta) into the queue and waking a consumer (the
#: wake list kept to the broker's ``WAKE_CAP``, as ``enqueue.lua`` keeps it).
_FIRST = """
if redis.call("lrem", KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if KEYS[1] ~= KEYS[3] then
    redis.call("hdel", KEYS[2], ARGV[1])
    redis.call("hset", KEYS[4], ARGV[1], ARGV[2])
end
redis.call("lpush", KEYS[3], ARGV[1])
redis.call("lpush", KEYS[5], "1")
redis.call("ltrim", KEYS[5], 0, tonumber(ARGV[3]) - 1)
return 1
"""


@dataclass(frozen=True)
class QueuedJob:
    """One job of a queue. ``state`` is ``waiting``, ``delayed``, ``retrying`` (delayed after a
    failure) or ``in_progress`` (a worker took it)."""

    queue: str
    state: str
    #: The id the broker stores it under (what delete and run-now take).
    id: str
    message_id: str
    actor: str
    args: list[Any]
    kwargs: dict[str, Any]
    enqueued_at: datetime
    #: When a delayed job is due.
    eta: datetime | None
    retries: int
    #: The worker holding an in-progress job.
    worker: str | None = None


def _redis() -> Any:
    from .redis_broker import BgjobsRedisBroker

    broker = operated_broker()
    if not isinstance(broker, BgjobsRedisBroker):
        raise ConfigurationError(
            "jobs in a queue are read on Redis only: AMQP cannot read a queue without taking its "
            "messages; the queue's sizes are exact (bgjobs status)"
        )
    return broker


def _moment(ms: Any) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if isinstance(ms, int | float) else None


def _job(queue: str, state: str, redis_id: str, data: bytes, worker: str | None = None) -> QueuedJob:
    found = json.loads(data)
    options = found.get("options", {})
    retries = int(options.get("retries", 0) or 0)
    if state == "delayed" and retries:
        state = "retrying"
    return QueuedJob(
        queue=queue, state=state, id=redis_id, message_id=found.get("message_id", ""),
        actor=found.get("actor_name", ""), args=list(found.get("args", [])),
        kwargs=dict(found.get("kwargs", {})),
        enqueued_at=_moment(found.get("message_timestamp")) or datetime.fromtimestamp(0, UTC),
        eta=_moment(options.get("eta")), retries=retries, worker=worker,
    )  # fmt: skip


def _known(broker: Any, queue: str) -> None:
    from .deadletters import queues

    if queue not in queues(broker):
        raise InvalidPayload(f"queue: no queue {queue!r}")


def jobs(queue: str, *, state: str = "waiting", limit: int = 50, offset: int = 0) -> list[QueuedJob]:
    """A page of ``queue``'s jobs in ``state``: waiting ones in the order workers take them, delayed
    ones by when they are due, in-progress ones by worker.

    Raises:
        InvalidPayload: an unknown queue or state, naming it.
        ConfigurationError: the broker is RabbitMQ (see the module's docstring).
    """
    if state not in STATES:
        raise InvalidPayload(f"state: {state!r} is not a job state; use one of {', '.join(STATES)}")
    broker = _redis()
    _known(broker, queue)
    client, key = broker.client, broker.key(queue)
    if state == "waiting":
        ids = [i.decode() for i in client.lrange(key, offset, offset + limit - 1)]
        found = client.hmget(f"{key}.msgs", ids) if ids else []
        return [_job(queue, state, i, d) for i, d in zip(ids, found, strict=True) if d is not None]
    if state == "delayed":
        delayed = []
        for n, (i, d) in enumerate(client.hscan_iter(f"{key}.DQ.msgs", count=500)):
            if n >= DELAYED_SCAN:
                break
            delayed.append(_job(queue, state, i.decode(), d))
        delayed.sort(key=lambda j: (j.eta or j.enqueued_at, j.id))
        return delayed[offset : offset + limit]
    held = []
    for worker in sorted(w.decode() for w in client.zrange(broker.key("__heartbeats__"), 0, -1)):
        ids = sorted(i.decode() for i in client.smembers(broker.key(f"__acks__.{worker}.{queue}")))
        held += [(worker, i) for i in ids]
    page = held[offset : offset + limit]
    found = client.hmget(f"{key}.msgs", [i for _, i in page]) if page else []
    return [_job(queue, state, i, d, w) for (w, i), d in zip(page, found, strict=True) if d is not None]


def _gone(queue: str, job_id: str) -> InvalidPayload:
    return InvalidPayload(
        f"id: no job {job_id!r} waiting or delayed in {queue!r}: a worker took it (it runs, or holds "
        "it until its time: `bgjobs cancel MESSAGE_ID` skips it then) or it is done"
    )


def delete(queue: str, job_id: str) -> QueuedJob:
    """Delete one waiting or delayed job before any worker takes it; returns what was deleted.

    Raises:
        InvalidPayload: the job is not waiting or delayed any more (taken, held, or done).
    """
    broker = _redis()
    _known(broker, queue)
    key = broker.key(queue)
    for state, where in (("waiting", key), ("delayed", f"{key}.DQ")):
        data = broker.client.eval(_TAKE, 2, where, f"{where}.msgs", job_id)
        if data:
            _give_back(broker, data)
            return _job(queue, state, job_id, data)
    raise _gone(queue, job_id)


def _give_back(broker: Any, data: bytes) -> None:
    """A deleted job of an actor with per-key limits gives its slot back (the next of its key goes)."""
    from .keying import give_back

    message = dramatiq.Message.decode(data)
    if message.options.get(ADMITTED):
        give_back(broker, message, now=True)


def run_now(queue: str, job_id: str) -> QueuedJob:
    """Put one waiting or delayed job at the head of its queue, to be taken next; a delayed one
    loses its delay (its retry count is kept).

    Raises:
        InvalidPayload: the job is not waiting or delayed any more (taken, held, or done).
    """
    from .redis_broker import WAKE_CAP

    broker = _redis()
    _known(broker, queue)
    client, key = broker.client, broker.key(queue)
    for state, where in (("waiting", key), ("delayed", f"{key}.DQ")):
        data = client.hget(f"{where}.msgs", job_id)
        if data is None:
            continue
        message = dramatiq.get_encoder().decode(data)
        message["queue_name"] = queue
        message.get("options", {}).pop("eta", None)
        moved = dramatiq.get_encoder().encode(message)
        keys = (where, f"{where}.msgs", key, f"{key}.msgs", f"{key}.wake")
        if client.eval(_FIRST, 5, *keys, job_id, moved, WAKE_CAP):
            return _job(queue, state, job_id, data)
    raise _gone(queue, job_id)
