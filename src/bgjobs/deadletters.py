"""Dead letters: list, show, requeue, purge, on Redis and on RabbitMQ alike.

On Redis, Dramatiq keeps a queue's dead letters in ``<queue>.XQ`` (a sorted set of Redis
message ids by the time they failed) and ``<queue>.XQ.msgs`` (the messages) for
``worker.dead_message_ttl_ms``, and has no API to read or revive them; bgjobs adds
``<queue>.XQ.reasons`` (why each one failed). On RabbitMQ, bgjobs's consumer writes the same
three keys in the coordination store (by message id) instead of nacking into an AMQP queue
nobody can read (:mod:`bgjobs.rabbitmq_broker`). This module works on those keys, so it sees
dead letters of every worker of the deployment, running or not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, cast
from uuid import uuid4

import dramatiq

from . import letter_index, runtime
from .errors import ConfigurationError, InvalidPayload
from .letter_index import LIBRARY
from .letter_queries import SCAN_BUDGET, each_matching, ensure_indexed, identify, index_key, newest
from .moments import as_utc
from .operated import LETTER_OPTION, OperatedBroker, registered_queues
from .per_key import ADMITTED
from .redis_broker import WAKE_CAP, BgjobsRedisBroker

__all__ = [
    "SCAN_BUDGET", "DeadLetter", "Letters", "count_matching", "dead_letters", "find", "matching",
    "operated_broker", "purge", "purge_letters", "queues", "reindex", "requeue",
]  # fmt: skip

_REQUEUE = LIBRARY + resources.files("bgjobs").joinpath("deadletters.lua").read_text()
#: Messages per Redis round trip when requeueing or purging.
BATCH = 500
#: On RabbitMQ, how long a requeuer holds a letter it is sending (longer than a confirmed publish).
REQUEUE_CLAIM_S = 60


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message and why it failed."""

    queue: str
    #: The id Redis stores it under (a new one each time the message is enqueued).
    redis_id: str
    #: Dramatiq's message id: the one ``send()`` returned and the logs show.
    message_id: str
    actor: str
    failed_at: datetime
    #: invalid, permanent, configuration, exhausted, poison, undecodable, or unknown
    #: (failed before bgjobs kept reasons).
    kind: str
    reason: str
    attempts: int
    message: dict[str, Any]
    #: The last failure's traceback (bounded, masked), where one was kept.
    traceback: str | None = None


def operated_broker(broker: dramatiq.Broker | None = None) -> OperatedBroker:
    """The deployment's broker, or a clear error for one that keeps no deployment state (the stub).

    Raises:
        ConfigurationError: the configured broker is not bgjobs's Redis or RabbitMQ broker.
    """

    found = broker or runtime.current().broker
    if not isinstance(found, OperatedBroker):
        raise ConfigurationError(
            f"dead letters and status read the deployment's Redis keys; the broker is {type(found).__name__} "
            "(set BGJOBS_BROKER_URL=redis://... or amqp://...)"
        )
    return found


def queues(broker: OperatedBroker) -> list[str]:
    """Every queue of the deployment: each worker records the queues it declared when it boots.

    (Not a SCAN for ``*.XQ`` keys: the namespace also holds a key per deduplicated event, so
    scanning would grow with traffic.)
    """
    return registered_queues(broker.client, broker.namespace, broker.get_declared_queues())


def _decoded(data: bytes | None) -> dict[str, Any]:
    """The message as a dict; one that does not decode (kept as it came) as ``{"undecodable": text}``."""
    if not data:
        return {}
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    if isinstance(message, dict):
        return message
    return {"undecodable": data.decode("utf-8", "backslashreplace")}


def _letter(queue: str, redis_id: str, score: float, data: bytes | None, why: bytes | None) -> DeadLetter:
    message = _decoded(data)
    options = message.get("options", {})
    reason: dict[str, Any] = json.loads(why) if why else {}
    if not reason:  # dead-lettered without bgjobs's middleware: the traceback's last line is the reason
        lines = str(options.get("traceback", "")).strip().splitlines()
        reason = {"kind": "unknown", "reason": lines[-1] if lines else "no reason recorded"}
    return DeadLetter(
        queue=queue,
        redis_id=redis_id,
        message_id=str(message.get("message_id", redis_id)),
        actor=str(message.get("actor_name", "?")),
        failed_at=datetime.fromtimestamp(score / 1000, UTC),
        kind=str(reason.get("kind", "unknown")),
        reason=str(reason.get("reason", "")),
        attempts=int(reason.get("attempts", options.get("retries", 0)) or 0),
        message=message,
        traceback=reason.get("traceback") or options.get("traceback"),
    )


def _scan(broker: OperatedBroker, queue: str, *, page: int = BATCH) -> Iterator[DeadLetter]:
    """A queue's dead letters, newest first, read a page at a time."""
    key = f"{broker.namespace}:{queue}.XQ"
    start = 0
    while True:
        ids = cast(Any, broker.client).zrevrange(key, start, start + page - 1, withscores=True)
        if not ids:
            return
        yield from _read(broker, queue, ids)
        start += page


def _read(broker: OperatedBroker, queue: str, ids: list[tuple[bytes, float]]) -> list[DeadLetter]:
    """The letters of ``(id, score)`` pairs of a queue's dead-letter set; one purged or requeued
    since the ids were read is left out."""
    key = f"{broker.namespace}:{queue}.XQ"
    pipe = broker.client.pipeline(transaction=False)
    pipe.hmget(f"{key}.msgs", [i for i, _ in ids])
    pipe.hmget(f"{key}.reasons", [i for i, _ in ids])
    datas, reasons = pipe.execute()
    found = zip(ids, datas, reasons, strict=True)
    return [_letter(queue, i.decode(), at, data, why) for (i, at), data, why in found if data is not None]


class Letters(list[DeadLetter]):
    """Dead letters, and where a reason search stopped at its budget (:data:`SCAN_BUDGET` letters
    read per queue): ``more_before``, to pass as ``before`` for the next page; None when it read all."""

    more_before: datetime | None = None


def dead_letters(
    *, queue: str | None = None, actor: str | None = None, kind: str | None = None,
    reason: str | None = None, since: datetime | None = None, before: datetime | None = None,
    limit: int | None = 50, offset: int = 0, broker: dramatiq.Broker | None = None,
) -> Letters:  # fmt: skip
    """Dead letters, newest first, of one queue or all, optionally of one actor and kind, whose
    reason contains ``reason`` (any case), failed at or after ``since`` and before ``before`` (UTC
    when they have no zone); ``offset`` skips the newest.

    A filter by actor or kind reads its index; a reason search reads at most :data:`SCAN_BUDGET`
    letters per queue and says where it stopped (:attr:`Letters.more_before`).
    """
    found = operated_broker(broker)
    wanted = None if limit is None else offset + limit
    chosen, stopped = Letters(), []
    for name in [queue] if queue else queues(found):
        letters, cursor = newest(found, name, _read, actor=actor, kind=kind,
                                 needle=reason.casefold() if reason else None, since_ms=_ms(since),
                                 before_ms=_ms(before), wanted=wanted)  # fmt: skip
        chosen += letters
        if cursor is not None:
            stopped.append(cursor)
    chosen.sort(key=lambda letter: letter.failed_at, reverse=True)
    if stopped:  # only what is newer than every queue's stop is complete
        edge = max(stopped)
        chosen[:] = [x for x in chosen if x.failed_at.timestamp() * 1000 >= edge]
        chosen.more_before = datetime.fromtimestamp(edge / 1000, UTC)
    chosen[:] = chosen[offset:] if wanted is None else chosen[offset:wanted]
    return chosen


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(as_utc(moment).timestamp() * 1000)


def failed_since(
    queue: str, *, after_ms: int, limit: int = BATCH, broker: dramatiq.Broker | None = None
) -> list[DeadLetter]:
    """A queue's dead letters that failed at or after ``after_ms`` (epoch ms), oldest first, at
    most ``limit``: one page of what is new since a cursor, read by score, not by a scan."""
    found = operated_broker(broker)
    key = f"{found.namespace}:{queue}.XQ"
    ids = cast(Any, found.client).zrangebyscore(key, after_ms, "+inf", start=0, num=limit, withscores=True)
    return _read(found, queue, ids) if ids else []


def find(ids: Iterable[str], *, broker: dramatiq.Broker | None = None) -> list[DeadLetter]:
    """Dead letters by message id or Redis id.

    Raises:
        InvalidPayload: an id that is not a dead letter (any more); the message names it.
    """
    found = operated_broker(broker)
    wanted = list(dict.fromkeys(ids))
    by_id: dict[str, DeadLetter] = {}
    names = queues(found)
    scanned = [name for name in names if not ensure_indexed(found, name)]
    for start in range(0, len(wanted), BATCH):  # one round trip per page of ids, every queue at once
        chunk = wanted[start : start + BATCH]
        pipe = found.client.pipeline(transaction=False)
        for name in names:
            xq = f"{found.namespace}:{name}.XQ"
            pipe.hmget(f"{xq}.ids", chunk)
            pipe.zmscore(xq, chunk)
        answers = iter(pipe.execute())
        for name in names:
            by_message, as_redis = next(answers), next(answers)
            hits = {i: (r.decode() if r else i) for i, r, s in zip(chunk, by_message, as_redis, strict=True)
                    if r or s is not None}  # fmt: skip
            if hits:
                letters = _read(found, name, [(r.encode(), 0.0) for r in set(hits.values())])
                by_redis = {x.redis_id: x for x in letters}
                by_id.update({i: by_redis[r] for i, r in hits.items() if r in by_redis})
    if scanned and any(i not in by_id for i in wanted):  # queues of old letters not indexed yet
        for name in scanned:
            for letter in _scan(found, name):
                by_id.setdefault(letter.message_id, letter)
                by_id.setdefault(letter.redis_id, letter)
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise InvalidPayload(f"id: no dead letter {', '.join(missing)} (requeued, purged or expired?)")
    return list({by_id[i].redis_id: by_id[i] for i in wanted}.values())


def matching(
    *, queue: str | None = None, actor: str | None = None, kind: str | None = None, reason: str | None = None,
    since: datetime | None = None, broker: dramatiq.Broker | None = None,
) -> Iterator[list[DeadLetter]]:  # fmt: skip
    """The dead letters matching the filters that failed before this call, in pages, oldest first:
    for a bulk requeue or purge in bounded memory. Requeue or purge each page before the next is
    read; letters dead-lettered meanwhile are not swept up. A process that dies halfway leaves the
    rest where it was: run the same command again to finish."""
    found = operated_broker(broker)
    until = int(time.time() * 1000)
    needle = reason.casefold() if reason else None
    for name in [queue] if queue else queues(found):
        yield from each_matching(found, name, _read, actor=actor, kind=kind, needle=needle,
                                 since_ms=_ms(since), until_ms=until)  # fmt: skip


def count_matching(
    *, queue: str | None = None, actor: str | None = None, kind: str | None = None,
    since: datetime | None = None, broker: dramatiq.Broker | None = None,
) -> int:  # fmt: skip
    """How many dead letters a filter without a reason search selects (for a progress bar)."""
    found = operated_broker(broker)
    low = _ms(since)
    return sum(int(found.client.zcount(index_key(found, name, actor=actor, kind=kind),
                                       "-inf" if low is None else low, "+inf"))
               for name in ([queue] if queue else queues(found)))  # fmt: skip


def reindex(
    *, queue: str | None = None, broker: dramatiq.Broker | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:  # fmt: skip
    """Index the dead letters stored before bgjobs indexed them (``bgjobs dead-letters reindex``);
    returns how many letters it read. Safe beside running workers, and to run again."""
    found = operated_broker(broker)
    return sum(letter_index.reindex(found.client, f"{found.namespace}:{name}.XQ", identify, progress)
               for name in ([queue] if queue else queues(found)))  # fmt: skip


def _fresh(letter: DeadLetter) -> tuple[str, str]:
    """The message as new: a new Redis id, no retries spent, no leftover traceback or eta."""
    message = dict(letter.message)
    # Without its admission: a job of an actor with per-key limits takes a slot again when taken
    options = {k: v for k, v in message.get("options", {}).items()
               if k not in ("traceback", "eta", ADMITTED)}  # fmt: skip
    options["retries"] = 0
    options["redis_message_id"] = new_id = str(uuid4())
    message["options"] = options
    message["queue_name"] = letter.queue
    return new_id, json.dumps(message, separators=(",", ":"))


def requeue(
    letters: Iterable[DeadLetter], *, broker: dramatiq.Broker | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:  # fmt: skip
    """Put dead letters back on their queues with a fresh retry count; returns how many moved.

    On Redis each message leaves the dead-letter set and joins its queue in one Redis script, so
    a crash mid-way loses none, and one requeued meanwhile by someone else is not doubled. On
    RabbitMQ each is published (confirmed) before it leaves the set: a crash between the two
    leaves it requeued and still listed, and a second requeue sends it again, which the
    idempotency ledger absorbs (at least once, never lost).
    Undecodable ones stay: no worker could run them (``show`` prints their bytes, ``purge`` drops them).
    """
    found = operated_broker(broker)
    if not isinstance(found, BgjobsRedisBroker):
        return _republish(found, letters, progress)
    script = found.client.register_script(_REQUEUE)
    by_queue: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        if "undecodable" not in letter.message:
            by_queue.setdefault(letter.queue, []).append(letter)
    moved = 0
    for queue, group in by_queue.items():
        for start in range(0, len(group), BATCH):
            args: list[str | int] = [queue, WAKE_CAP]
            for letter in group[start : start + BATCH]:
                args += [letter.redis_id, *_fresh(letter)]
            n = int(script(keys=[found.namespace], args=args))
            moved += n
            if progress:
                progress(len(group[start : start + BATCH]))
    return moved


def _republish(
    broker: OperatedBroker, letters: Iterable[DeadLetter], progress: Callable[[int], None] | None
) -> int:
    moved = 0
    for letter in letters:
        if "undecodable" in letter.message:
            continue
        # One requeuer per letter: another operator holding a stale list sends nothing.
        claim = f"{broker.namespace}:{letter.queue}.XQ.requeuing:{letter.redis_id}"
        if not broker.client.set(claim, "1", nx=True, ex=REQUEUE_CLAIM_S):
            continue
        if not broker.client.hexists(f"{broker.namespace}:{letter.queue}.XQ.msgs", letter.redis_id):
            continue  # requeued or purged since it was listed
        message = dict(letter.message)
        dropped = ("traceback", "eta", "redis_message_id", ADMITTED)
        message["options"] = {k: v for k, v in message.get("options", {}).items() if k not in dropped}
        message["options"]["retries"] = 0
        # A new id for its next failure: a worker may fail it again before this letter is removed.
        message["options"][LETTER_OPTION] = uuid4().hex
        message["queue_name"] = letter.queue
        broker.enqueue(dramatiq.Message(**message))
        moved += purge_letters([letter], broker=broker)
        if progress:
            progress(1)
    return moved


def purge(
    *, queue: str | None = None, older_than: timedelta | None = None, broker: dramatiq.Broker | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:  # fmt: skip
    """Delete dead letters (of one queue, or failed more than ``older_than`` ago); returns how many."""
    found = operated_broker(broker)
    cutoff = "+inf"
    if older_than is not None:
        cutoff = str(int((datetime.now(UTC) - older_than).timestamp() * 1000))
    removed = 0
    for name in [queue] if queue else queues(found):
        key = f"{found.namespace}:{name}.XQ"
        while ids := found.client.zrangebyscore(key, "-inf", cutoff, start=0, num=BATCH):
            removed += letter_index.forget(found.client, key, [i.decode() for i in ids])
            if progress:
                progress(len(ids))
    return removed


def purge_letters(letters: Iterable[DeadLetter], *, broker: dramatiq.Broker | None = None) -> int:
    """Delete these dead letters (by their Redis ids); returns how many were still there."""
    found = operated_broker(broker)
    removed = 0
    for queue, ids in letter_index.ids_of(letters).items():
        removed += letter_index.forget(found.client, f"{found.namespace}:{queue}.XQ", ids)
    return removed
