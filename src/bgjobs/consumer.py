"""A Redis consumer that blocks on a wake list instead of sleeping when its queue is empty.

Stock Dramatiq polls an empty queue with exponential backoff up to the worker
timeout (1 s), so a job sent to an idle worker can wait most of a second. Here an
idle consumer waits in ``BLPOP <queue>.wake`` (up to the same timeout), and every
enqueue pushes a token there, so it fetches within a round trip. Tokens are only
hints: when none arrives the consumer fetches again after the timeout, exactly as
Dramatiq would, so nothing depends on a wake-up being delivered.

Relies on ``dramatiq.brokers.redis._RedisConsumer``'s attributes (``message_cache``,
``queued_message_ids``, ``misses``, ``prefetch``, ``timeout``); the Dramatiq range is pinned in
pyproject.toml and ``tests/integration/test_dramatiq_internals.py`` fails if they change.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import _RedisConsumer
from dramatiq.common import compute_backoff, current_millis
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message

from .letter_index import LIBRARY
from .outage import is_connection_error, report, store_outage
from .releasing import ON_ACK

__all__ = ["PAUSED_KEY", "PAUSE_SEEN_KEY", "STOPPING", "PauseWatch", "WakingConsumer"]

logger = logging.getLogger("bgjobs.consumer")
_UNDECODABLE = LIBRARY + resources.files("bgjobs").joinpath("undecodable.lua").read_text()
#: Dramatiq's fetch (heartbeat, pop up to ARGV[4] ids into this worker's ack set, their messages),
#: which also tells which of them were put back after they may have run (``<queue>.redelivered``),
#: and first acks the jobs done since the last call.
_FETCH = """
local ns, queue, worker = KEYS[1], ARGV[2], ARGV[3]
local key = ns .. ':' .. queue
redis.call('ZADD', ns .. ':__heartbeats__', ARGV[1], worker)
-- Dramatiq's ack of each id after ARGV[4]: out of the ack set, and its message deleted (only if it
-- was still there: one put back meanwhile is another worker's now)
local acks = ns .. ':__acks__.' .. worker .. '.' .. queue
for i = 5, #ARGV do
  if redis.call('SREM', acks, ARGV[i]) > 0 then redis.call('HDEL', key .. '.msgs', ARGV[i]) end
end
local ids = {}
for i = 1, tonumber(ARGV[4]) do
  local id = redis.call('LPOP', key)
  if not id then break end
  ids[i] = id
end
if #ids == 0 then return {{}, {}} end
redis.call('SADD', ns .. ':__acks__.' .. worker .. '.' .. queue, unpack(ids))
local again = {}
if redis.call('SCARD', key .. '.redelivered') > 0 then
  for i, id in ipairs(ids) do again[i] = redis.call('SREM', key .. '.redelivered', id) end
end
return {redis.call('HMGET', key .. '.msgs', unpack(ids)), again}
"""

#: The longest one BLPOP may block; the worker timeout (1 s by default) is usually shorter.
MAX_BLOCK_S = 2.0
#: A Redis set of paused queue names (``bgjobs.pausing``); consumers read it this often.
PAUSED_KEY = "__bgjobs_paused__"
#: A Redis hash, ``<worker id>:<queue>`` -> ``1`` or ``0``: whether that consumer honours a pause
#: now, written when it changes, so a pause can be seen to have reached every consumer.
PAUSE_SEEN_KEY = "__bgjobs_pause_seen__"
PAUSE_CHECK_S = 0.5
#: Set when this worker process begins to stop: its consumers take nothing more, as if every queue
#: were paused. Dramatiq stops its worker threads first and its consumers last, and a consumer that
#: still fetches meanwhile hands a job to a thread that is about to stop.
STOPPING = threading.Event()


class PauseWatch:
    """Whether an operator paused a queue (its delay queue pauses with it), read at most every
    ``PAUSE_CHECK_S``: a pause takes effect within a second and survives restarts. A change is
    noted under ``PAUSE_SEEN_KEY`` (kept a day after the last one), one write per pause or resume.

    While the store does not answer, the last answer holds (nobody can pause or resume then
    either) and the outage is reported once: on RabbitMQ the store is not the broker, and a
    consumer that raised here lost its channel, and RabbitMQ gave back the jobs it was running."""

    def __init__(self, client: Any, key: Callable[[str], str], worker_id: str, queue_name: str) -> None:
        self.client, self.worker_id, self.queue_name = client, worker_id, queue_name
        self.paused_key, self.seen_key = key(PAUSED_KEY), key(PAUSE_SEEN_KEY)
        self.queue = queue_name.removesuffix(".DQ")
        self.checked, self.paused = -PAUSE_CHECK_S, False

    def __call__(self) -> bool:
        if STOPPING.is_set():
            return True
        now = time.monotonic()
        if now - self.checked >= PAUSE_CHECK_S:
            self.checked = now
            try:
                paused = bool(self.client.sismember(self.paused_key, self.queue))
                if paused != self.paused:
                    field = f"{self.worker_id}:{self.queue_name}"
                    self.client.pipeline(transaction=False).hset(self.seen_key, field, int(paused)).expire(
                        self.seen_key, 86_400).execute()  # fmt: skip
            except redis.RedisError as exc:
                if not is_connection_error(exc):
                    raise
                report(exc)
                return self.paused
            self.paused = paused
            store_outage().recover()
        return self.paused


class Delivered(MessageProxy):
    """A message as a Redis consumer hands it out; ``redelivered`` as on RabbitMQ: it was put back
    after a worker took it (a dead worker's, or this one's after a lost connection), so it may
    have run, even to its end, before."""

    def __init__(self, message: Message[Any], redelivered: bool) -> None:
        super().__init__(message)
        self.redelivered = redelivered


class WakingConsumer(_RedisConsumer):
    def __init__(self, broker: Any, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        # Delay queues keep polling: their consumer thread releases due messages between polls.
        self.wake_key = None if queue_name.endswith(".DQ") else f"{broker.namespace}:{queue_name}.wake"
        self._undecodable = broker.client.register_script(_UNDECODABLE)
        self._is_paused = PauseWatch(broker.client, broker.key, broker.broker_id, queue_name)
        self.in_flight: set[str] = broker.in_flight.setdefault(queue_name, set())
        self.acks: list[str] = broker.acks.setdefault(queue_name, [])
        self._fetch = broker.client.register_script(_FETCH)

    def close(self) -> None:
        """Dramatiq restarts a consumer after a connection error. What it had fetched may then sit
        in this process's ack set with nobody to run it: the batch it had not handed out yet (here
        dropped), a fetch whose reply the broken connection lost, a delayed message Dramatiq
        drops from its memory on a connection error, an ack a failover lost. Only a dead process's
        recovery empties an ack set, so a live worker would hold them for good (seen in Sentinel
        failovers). The next consumer of the queue puts them back first (:meth:`reconcile`)."""
        self.message_cache = []
        self.broker.restarted.add(self.queue_name)
        with contextlib.suppress(redis.RedisError):  # else the next consumer of the queue sends them
            self.send_acks()
        super().close()

    def reconcile(self) -> None:
        """After a restart, put back every id in this process's ack set for the queue that no
        worker thread holds. A delay queue's consumer holds none: Dramatiq keeps delayed messages
        in a memory it empties on a connection error, and releases them on this very thread."""
        if self.queue_name not in self.broker.restarted:
            return
        # Read what is held before the set: an ack between the two leaves the id in neither.
        held = set(self.in_flight)
        acks = self.broker.key(f"__acks__.{self.broker.broker_id}.{self.queue_name}")
        ids = [i for i in (raw.decode() for raw in self.broker.client.smembers(acks)) if i not in held]
        if ids:
            self.broker.client.sadd(f"{self.broker.key(self.queue_name)}.redelivered", *ids)
            self.broker.do_requeue(self.queue_name, *ids)
            logger.warning("put %d message(s) this worker had taken before a lost connection back on %s",
                           len(ids), self.queue_name)  # fmt: skip
        self.broker.restarted.discard(self.queue_name)

    def ack(self, message: Any) -> None:
        """A job done: its ack goes with this consumer's next call to Redis (its next fetch, or
        before it waits), so a busy worker sends one for many jobs instead of one each. Until then
        the job stays in flight, so a restarted consumer does not put it back; a worker killed
        meanwhile leaves it to be run again after the heartbeat timeout (at least once, as a kill
        between the end of a job and its ack always did)."""
        redis_id = message.options["redis_message_id"]
        ack_and_release = getattr(message, ON_ACK, None)
        if ack_and_release is not None:  # the job's per-key slot goes back in the same call, at once
            try:
                ack_and_release(self.queue_name, self.broker.broker_id, redis_id)
            except redis.ConnectionError as e:
                raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]
            finally:
                self.queued_message_ids.discard(message.message_id)
            self.in_flight.discard(redis_id)
        elif self.wake_key is None:  # a delay queue's: its consumer thread is the one acking
            super().ack(message)  # type: ignore[no-untyped-call]
            self.in_flight.discard(redis_id)
        else:
            with self.broker.acks_lock:
                self.acks.append(redis_id)
            self.queued_message_ids.discard(message.message_id)

    def nack(self, message: Any) -> None:
        super().nack(message)  # type: ignore[no-untyped-call]
        self.in_flight.discard(message.options["redis_message_id"])

    def requeue(self, messages: Any) -> None:
        messages = list(messages)
        super().requeue(messages)  # type: ignore[no-untyped-call]
        self.in_flight.difference_update(m.options["redis_message_id"] for m in messages)

    def __next__(self) -> MessageProxy | None:
        try:
            self.reconcile()
            if self._is_paused():  # nothing starts, fetched or not; fetched ones wait in flight
                self.send_acks()
                time.sleep(min(self.timeout / 1000, PAUSE_CHECK_S))
                return None
            while True:
                if self.message_cache:
                    data, again = self.message_cache.pop(0)
                    if data is None:
                        continue
                    self.misses = 0
                    try:
                        message = Message.decode(data)
                    except DecodeError as exc:
                        # Dramatiq would restart the consumer and drop the rest of the fetched
                        # batch while it is still marked in flight: set this one aside instead.
                        self._dead_letter(data, exc)
                        continue
                    self.queued_message_ids.add(message.message_id)
                    if self.wake_key is not None:  # not a delay queue's (see reconcile)
                        self.in_flight.add(message.options["redis_message_id"])
                    return Delivered(message, bool(again))

                free = self.prefetch - self.outstanding_message_count
                if free > 0:
                    self.message_cache = self.fetch(free)
                    if self.message_cache:
                        continue
                    if self.wake_key is not None:
                        # Idle with room for work: sleep in Redis until an enqueue wakes us.
                        # Capped below redis-py's default 5 s socket timeout.
                        with contextlib.suppress(redis.TimeoutError):
                            self.broker.client.blpop(
                                [self.wake_key], timeout=min(self.timeout / 1000, MAX_BLOCK_S)
                            )
                        return None
                # Full (every prefetched message still in flight) or a delay queue: back off like
                # Dramatiq, without taking wake tokens an idle consumer elsewhere should get.
                self.send_acks()
                self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                time.sleep(backoff_ms / 1000)
                return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    def fetch(self, count: int) -> list[tuple[bytes | None, int]]:
        """Up to ``count`` messages, each with whether it was put back after it may have run; the
        jobs done since the last call are acked first, in the same call."""
        with self.broker.acks_lock:
            done = self.acks[:]
            del self.acks[:]
        args = [current_millis(), self.queue_name, self.broker.broker_id, count, *done]
        try:
            bodies, again = self._fetch(keys=[self.broker.namespace], args=args)
        except BaseException:
            with self.broker.acks_lock:  # not sent: with the next call
                self.acks[:0] = done
            raise
        self.in_flight.difference_update(done)
        return list(zip(bodies, again or [0] * len(bodies), strict=True))

    def send_acks(self) -> None:
        """Ack the jobs done since the last call, now (before this consumer waits)."""
        if self.acks:
            self.fetch(0)

    def _dead_letter(self, data: bytes, exc: DecodeError) -> None:
        """Move a message that does not decode to the dead letters, raw bytes kept, with its reason."""
        cause = exc.__cause__ or exc
        reason = {
            "kind": "undecodable", "failed_at": current_millis(),
            "reason": f"undecodable: {type(cause).__name__}: {cause}"[:500],
        }  # fmt: skip
        args = [self.queue_name, self.broker.broker_id, data, current_millis(), json.dumps(reason),
                self.broker.worker_settings.max_dead_letters]
        redis_id = self._undecodable(keys=[self.broker.namespace], args=args)
        logger.error(
            "dead-lettered an undecodable message on %s (%s): %s", self.queue_name,
            redis_id.decode() if redis_id else "already gone", reason["reason"],
        )  # fmt: skip
