"""``bgjobs explain MESSAGE_ID``: why a job is not running yet, or what became of it.

It looks where a job can be: cancelled (and by whom), dead-lettered (and why), replaced by a
later send of its unique key, its batch cancelled, waiting for its key's slot or turn (per-key
limits, on every engine); on Redis also waiting in its queue (at which
position, and whether the queue is paused), delayed (until when), or taken by a worker (live or
not). Finished jobs are not kept, so a job found nowhere has finished, or the id is not one
``send()`` returned. On RabbitMQ a queued message cannot be read without taking it: the answer
says so, and the rest still holds.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

__all__ = ["explain"]


def _at(ms: Any) -> str:
    return datetime.fromtimestamp(float(ms) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def explain(message_id: str) -> list[str]:
    """One line per thing found about job ``message_id``."""
    from .cancelling import cancellation
    from .deadletters import find, operated_broker
    from .errors import InvalidPayload
    from .redis_broker import BgjobsRedisBroker

    broker = operated_broker()
    lines = []
    if (who := cancellation(broker, message_id)) is not None:
        lines.append(f"cancelled by {who['by']} at {_at(who['at'])}: skipped when a worker takes it; "
                     "a running one sees bgjobs.cancelled() turn true")  # fmt: skip
    try:
        (letter,) = find([message_id])
        lines.append(f"dead-lettered from {letter.queue} at {letter.failed_at:%Y-%m-%d %H:%M:%S} UTC "
                     f"after {letter.attempts} attempt(s): {letter.kind}: {letter.reason} "
                     f"(bgjobs dead-letters requeue {message_id})")  # fmt: skip
    except InvalidPayload:
        pass
    in_lane = _in_lane(broker, message_id)
    lines += in_lane
    if isinstance(broker, BgjobsRedisBroker):
        lines += _queued(broker, message_id)
    if not lines:
        lines.append(f"no trace of {message_id}: it finished (finished jobs are not kept), or it is not "
                     "an id send() returned")  # fmt: skip
    if not isinstance(broker, BgjobsRedisBroker) and not in_lane:
        lines.append("RabbitMQ cannot show a queued message without taking it: if it is waiting, "
                     "`bgjobs status` has its queue's size")  # fmt: skip
    return lines


def _in_lane(broker: Any, message_id: str) -> list[str]:
    """A job of an actor with per-key limits, waiting for its key's slot or turn."""
    from .keying import keyed_of, limits_of

    keyed = keyed_of(broker)
    found = keyed.where(message_id)
    if found is None:
        return []
    actor, key, state = found
    if state == "pumping":
        return [f"leaving key {key}'s lane of {actor} for its queue now"]
    here, limits, why = keyed.state(actor, key), limits_of(actor, broker), []
    if limits is not None and limits.limit >= 0:
        cap = here.limit if here.limit is not None else limits.limit
        why.append(f"key {key} of {actor} is at its cap: {here.running} of {cap} running")
    if limits is not None and limits.interval_ms:
        why.append(f"its rate allows a start every {limits.interval_ms / 1000:g} s, bursts of {limits.burst}")
    return [f"waiting in key {key}'s lane of {actor} ({here.waiting} waiting): " + "; ".join(why)]


def _queued(broker: Any, message_id: str) -> list[str]:
    """Where a job is on Redis: waiting, delayed, or taken by a worker."""
    from .deadletters import queues
    from .pausing import paused

    client, wanted = broker.client, message_id.encode()
    stopped = paused(broker=broker)
    since = time.time() * 1000 - broker.worker_settings.heartbeat_timeout_ms
    live = {w.decode() for w in client.zrangebyscore(broker.key("__heartbeats__"), since, "+inf")}
    for queue in queues(broker):
        key = broker.key(queue)
        for suffix, delayed in ((".msgs", False), (".DQ.msgs", True)):
            for redis_id, data in client.hscan_iter(f"{key}{suffix}", count=1000):
                if wanted in data and json.loads(data).get("message_id") == message_id:
                    return _where(broker, queue, redis_id.decode(), json.loads(data), delayed, stopped, live)
    return []


def _where(
    broker: Any, queue: str, redis_id: str, message: dict[str, Any], delayed: bool, stopped: set[str],
    live: set[str],
) -> list[str]:  # fmt: skip
    from .batches import store_for
    from .batching import BATCH
    from .controls import DONE, controls_of, holders_for

    client, key, options = broker.client, broker.key(queue), message.get("options", {})
    lines = []
    if delayed:
        lines.append(f"delayed in {queue} until {_at(options['eta'])}" if options.get("eta")
                     else f"delayed in {queue}")  # fmt: skip
        if options.get("retries"):
            lines.append(f"a retry: {options['retries']} attempt(s) failed so far")
    else:
        position = client.lpos(key, redis_id)
        holders = [w for w in (k.decode().split("__acks__.", 1)[1].rsplit(".", 1)[0]
                               for k in client.scan_iter(broker.key(f"__acks__.*.{queue}")))
                   if client.sismember(broker.key(f"__acks__.{w}.{queue}"), redis_id)]  # fmt: skip
        if position is not None:
            lines.append(f"waiting in {queue}: {position} ahead of it, {client.llen(key)} in the queue")
        for worker in holders:
            dead = "" if worker in live else ", whose heartbeat stopped: it is given back to the queue soon"
            lines.append(f"taken by worker {worker[:8]}{dead}")
    if queue in stopped:
        lines.append(f"queue {queue} is paused: nothing is taken from it until it is resumed (the console's "
                     "Queues page, or bgjobs.pausing.resume)")  # fmt: skip
    if (batch := options.get(BATCH)) and store_for(broker).is_cancelled(batch):
        lines.append(f"its batch {batch} was cancelled: it is skipped when taken")
    probe = _message(message)
    controls = controls_of(probe)
    if controls is not None and controls.unique.on_conflict == "replace":
        holder = holders_for(broker).holder(controls.name(probe.actor_name, probe))
        if holder is not None and holder != probe.message_id:
            by = holder.removeprefix(DONE) + (", which has run" if holder.startswith(DONE) else "")
            lines.append(f"replaced by a later send of its key ({by}): it is skipped when taken")
    return lines


def _message(message: dict[str, Any]) -> Any:
    import dramatiq

    fields = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")
    return dramatiq.Message(**{k: message[k] for k in fields if k in message})
