"""Dramatiq's RabbitMQ broker with bgjobs's deployment state in a coordination Redis.

RabbitMQ carries the messages; what no AMQP queue can hold lives in the Redis named by
``BGJOBS_COORDINATION_URL`` (see :mod:`bgjobs.operated` and docs/architecture.md): leases and
mutexes, dedupe keys, rate-limit and concurrency counters, the scheduler's claims, heartbeats and
worker descriptions, paused queues, and the dead letters with their reasons.

Changes from Dramatiq's broker:

- publisher confirms are on, so ``send()`` returns only once RabbitMQ has the message;
- a failed message is stored as a dead letter in the coordination store and then acked (stock
  Dramatiq nacks it into ``<queue>.XQ``, where nothing can read its reason, list or requeue it);
  a worker killed between the two leaves it stored and unacked, and the redelivered copy is
  recognised and acked without running again. While the store does not answer, the message is
  held unacked and stored once it does; any other failure to store it falls back to RabbitMQ's
  ``<queue>.XQ`` and the log says so: nothing is lost;
- a consumer of a paused queue takes nothing until the queue is resumed; an outage of the store
  never costs a consumer its channel (which would give back the jobs it runs, to run again): the
  pause check keeps its last answer, and a redelivered message waits for the store to be checked;
- each redelivery of a message (its worker died, or lost its connection, before the ack) is
  counted, and at ``BGJOBS_WORKER__MAX_DELIVERIES`` the message is dead-lettered as poison, as
  the Redis broker's maintenance does; only redelivered messages cost the extra round trip;
- queue sizes come from the management API when ``BGJOBS_RABBITMQ__MANAGEMENT_URL`` is set
  (ready, delayed and in flight), otherwise from passive declarations (ready, and the delayed
  messages nobody took) and from the coordination store (the delayed messages each live worker
  holds until they are due, as of its last maintenance pass); in flight is then unknown.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import Counter
from typing import Any
from uuid import uuid4

import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer, _RabbitmqMessage
from dramatiq.common import xq_name
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message

from .consumer import PAUSE_CHECK_S, PauseWatch
from .errors import ConfigurationError
from .letter_index import LIBRARY
from .operated import LETTER_OPTION, MaintenanceReport, OperatedBroker, QueueSizes
from .outage import CONNECTION_ERRORS, report
from .rabbitmq_management import Management
from .redact import mask_url
from .redis_connections import client_for, is_redis_url
from .settings import Settings, WorkerSettings

__all__ = ["HELD_KEY", "BgjobsRabbitmqBroker", "rabbitmq_broker"]

#: A hash per worker process, queue -> the delayed messages it holds (RabbitMQ without its
#: management API cannot count them), written by each maintenance pass, gone with the heartbeat.
HELD_KEY = "__bgjobs_held_delayed__"

logger = logging.getLogger("bgjobs.worker")

#: Keeps a dead letter: its message and failure time (the reason is written by the middleware).
_KEEP = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
"""
#: Counts one more delivery of a redelivered message; at ``max_deliveries`` it becomes a dead letter
#: (a poison message that kills its worker each time), as the Redis broker's maintenance does.
_REDELIVERED = LIBRARY + """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if n < tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[2], cjson.encode({kind = 'poison', failed_at = tonumber(ARGV[1]),
  deliveries = n, reason = 'ran ' .. n .. ' times without finishing (its worker died each time); ' ..
  'not handed out again, as BGJOBS_WORKER__MAX_DELIVERIES is ' .. ARGV[4]}))
local message_id, actor = letter_identity(ARGV[3])
letter_index(KEYS[2], ARGV[2], message_id or ARGV[2], actor or '?', 'poison', ARGV[1])
letters_cap(KEYS[2], tonumber(ARGV[6]))
redis.call('DEL', KEYS[1])
return n
"""
#: Forgets workers whose heartbeat stopped and dead letters past their ttl; returns how many expired.
_SWEEP = LIBRARY + """
local ns, now, timeout, ttl = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local dead = redis.call('ZRANGEBYSCORE', ns .. ':__heartbeats__', '-inf', now - timeout)
for _, id in ipairs(dead) do
  redis.call('ZREM', ns .. ':__heartbeats__', id)
  redis.call('HDEL', ns .. ':__bgjobs_workers__', id)
end
local expired = 0
for i = 4, #ARGV do
  expired = expired + letters_expire(ns .. ':' .. ARGV[i] .. '.XQ', now - ttl + 1, 1000)
end
return expired
"""


class BgjobsRabbitmqBroker(OperatedBroker, RabbitmqBroker):
    """RabbitMQ for the messages, the coordination Redis ``client`` for everything else."""

    #: It does not check message sizes itself (``send()`` does, before publishing).
    checks_message_size = False

    def __init__(
        self, *, url: str, client: Any, worker: WorkerSettings, management_url: str | None = None,
        middleware: list[Any] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(url=url, middleware=middleware, confirm_delivery=True)
        self.client = client
        self.namespace = worker.namespace
        self.worker_settings = worker
        self.broker_id = str(uuid4())
        self.patience_s = 0.0
        vhost = getattr(self.parameters, "virtual_host", "/")
        self.management = Management(management_url, vhost) if management_url else None
        #: This process's delay-queue consumers: what each holds is counted (:meth:`held_delayed`).
        self.delay_consumers: weakref.WeakSet[_Consumer] = weakref.WeakSet()
        self._keep = client.register_script(_KEEP)
        self._sweep = client.register_script(_SWEEP)
        self._redelivered = client.register_script(_REDELIVERED)

    @property
    def consumer_class(self) -> type[_Consumer]:
        return _Consumer

    def keep_dead_letter(self, message: Any, data: bytes, *, failed_at_ms: int | None = None) -> None:
        """Store a dead letter (message bytes under its message id) in the coordination store."""
        queue = message.queue_name.removesuffix(".DQ")
        at = int(time.time() * 1000) if failed_at_ms is None else failed_at_ms
        key = self.key(f"{queue}.XQ")
        self._keep(keys=[key, f"{key}.msgs"], args=[at, self.dead_letter_id(message), data])

    def redelivered(self, message: Message[Any], data: bytes) -> bool:
        """Count a redelivery of ``message``; True when that made it a poison dead letter."""
        queue = message.queue_name.removesuffix(".DQ")
        xq = self.key(f"{queue}.XQ")
        ws = self.worker_settings
        letter = self.dead_letter_id(message)
        args = [int(time.time() * 1000), letter, data, ws.max_deliveries, ws.dead_message_ttl_ms,
                ws.max_dead_letters]
        keys = [self.key("bgjobs-deliveries", letter), xq, f"{xq}.msgs", f"{xq}.reasons"]
        return bool(self._redelivered(keys=keys, args=args))

    def dead_letter_id(self, message: Any) -> str:
        """The message id, or for a requeued dead letter the id its requeue gave it, so a new failure
        is a new letter and never collides with the old one being removed."""
        return str(message.options.get(LETTER_OPTION) or message.message_id)

    def is_dead_letter(self, queue_name: str, letter_id: str) -> bool:
        return bool(self.client.hexists(self.key(f"{queue_name.removesuffix('.DQ')}.XQ.msgs"), letter_id))

    def queue_sizes(self, queues: list[str]) -> dict[str, QueueSizes]:
        pipe = self.client.pipeline(transaction=False)
        for q in queues:
            pipe.zcard(self.key(f"{q}.XQ"))
        dead = dict(zip(queues, pipe.execute(), strict=True))
        if self.management is not None:
            counts = self.management.counts()
            sizes = {}
            for q in queues:
                ready, unacked = counts.get(q, (0, 0))
                delayed = sum(counts.get(f"{q}.DQ", (0, 0)))
                sizes[q] = QueueSizes(ready, delayed, unacked, int(dead[q]))
            return sizes
        found, held = {}, self._held_by_live_workers()
        try:
            for q in queues:
                ready, delayed, _ = self.get_queue_message_counts(q)
                found[q] = QueueSizes(ready, delayed + held[q], None, int(dead[q]))
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
            del self.connection  # the next call connects afresh
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]
        return found

    def run_maintenance(
        self, *, heartbeat: bool = True, now_ms: int | None = None, recover: bool = True
    ) -> MaintenanceReport:
        """Heartbeat, forget workers whose heartbeat stopped, expire old dead letters.

        (RabbitMQ itself gives a dead worker's unacked messages back when its connection closes.)
        """
        ws = self.worker_settings
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if heartbeat:
            held, key = self.held_delayed(), self.key(HELD_KEY, self.broker_id)
            pipe = self.client.pipeline(transaction=False).zadd(
                self.key("__heartbeats__"), {self.broker_id: now}
            )
            pipe.delete(key)
            if held:
                pipe.hset(key, mapping=held).pexpire(key, ws.heartbeat_timeout_ms)
            pipe.execute()
        queues = sorted(q for q in self.get_declared_queues() if not q.endswith((".DQ", ".XQ")))
        args = [now, ws.heartbeat_timeout_ms if recover else now, ws.dead_message_ttl_ms, *queues]
        expired = self._sweep(keys=[self.namespace], args=args)
        return MaintenanceReport((0, 0, int(expired)))

    def retire(self) -> None:
        super().retire()
        self.client.delete(self.key(HELD_KEY, self.broker_id))  # RabbitMQ has them back

    def held_delayed(self) -> dict[str, int]:
        """Queue -> delayed messages this process's workers hold until they are due. RabbitMQ counts
        them as unacknowledged, not as the delay queue's: without the management API, they are
        seen only here."""
        held: Counter[str] = Counter()
        for consumer in list(self.delay_consumers):
            held[consumer.queue_name.removesuffix(".DQ")] += len(consumer.holding)
        return {q: n for q, n in held.items() if n}

    def _held_by_live_workers(self) -> Counter[str]:
        """What every live worker process held at its last maintenance pass."""
        since = int(time.time() * 1000) - self.worker_settings.heartbeat_timeout_ms
        live = self.client.zrangebyscore(self.key("__heartbeats__"), since, "+inf")
        pipe = self.client.pipeline(transaction=False)
        for worker in live:
            pipe.hgetall(self.key(HELD_KEY, worker.decode() if isinstance(worker, bytes) else worker))
        held: Counter[str] = Counter()
        for found in pipe.execute():
            held.update({k.decode(): int(v) for k, v in found.items()})
        return held

    def enqueue_once(self, message: Message[Any], *, key: str, ttl_s: int) -> Message[Any] | None:
        """Enqueue ``message`` unless ``key`` is claimed; the claim is given back if the send fails.

        Unlike Redis, the claim and the message cannot be written together: a caller killed
        between the two leaves a claimed tick unsent (docs/guarantees.md).
        """
        if not self.client.set(key, message.message_id, nx=True, ex=ttl_s):
            return None
        try:
            return self.enqueue(message)
        except BaseException:
            self.client.delete(key)
            raise


class _Consumer(_RabbitmqConsumer):
    """Dramatiq's consumer, with dead letters kept in the coordination store and pausing."""

    def __init__(self, broker: BgjobsRabbitmqBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._queue = queue_name.removesuffix(".DQ")
        self._is_paused = PauseWatch(broker.client, broker.key, broker.broker_id, queue_name)
        #: Deliveries that arrived as the queue was paused, handed out (in order) once it resumes.
        self._held: list[tuple[Any, bytes]] = []
        #: On a delay queue: the delivery tags of the messages the worker holds until they are due.
        self.holding: set[int] = set()
        if queue_name.endswith(".DQ"):
            broker.delay_consumers.add(self)

    def ack(self, message: Any) -> None:
        self.holding.discard(message._tag)
        super().ack(message)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.holding.clear()  # a closed channel gives them back to RabbitMQ
        super().close()  # type: ignore[no-untyped-call]

    def nack(self, message: Any) -> None:
        self.holding.discard(message._tag)
        try:
            self.broker.keep_dead_letter(message, message.encode())
        except CONNECTION_ERRORS as exc:
            # The store is down: Dramatiq tries the nack again every few seconds, the message held
            # unacked meanwhile (never given back to run again while this worker lives).
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        except Exception as exc:
            logger.error("could not keep dead letter %s in the coordination store (%s: %s); it is in "
                         "RabbitMQ's %s instead", message.message_id, type(exc).__name__, exc,
                         xq_name(self._queue))  # fmt: skip
            super().nack(message)  # type: ignore[no-untyped-call]
            return
        self.ack(message)

    def __next__(self) -> Any:
        if self._is_paused():
            self._wait()
            return None
        if self._held:
            method, body = self._held.pop(0)
        else:
            try:
                method, _properties, body = next(self.iterator)
                if method is None:
                    return None
            except (AssertionError, pika.exceptions.AMQPConnectionError,
                    pika.exceptions.AMQPChannelError) as e:  # fmt: skip
                raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]
            if self._is_paused():  # paused while this consumer waited: kept unacked until resumed
                self._held.append((method, body))
                return None
        return self._delivered(method, body)

    def _wait(self) -> None:
        try:  # keeps the connection's heartbeats answered while nothing is taken
            self.connection.sleep(PAUSE_CHECK_S)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    def _delivered(self, method: Any, body: bytes) -> Any:
        try:
            message = Message.decode(body)
        except DecodeError:
            return self._undecodable(method.delivery_tag, body)
        try:
            if method.redelivered and (
                # Dead-lettered by a worker killed before its ack: stored already, not to run again;
                # or handed out max_deliveries times, each worker dying on it: a poison message.
                self.broker.is_dead_letter(self.queue_name, self.broker.dead_letter_id(message))
                or self.broker.redelivered(message, body)
            ):
                self.connection.add_callback_threadsafe(lambda: self.channel.basic_ack(method.delivery_tag))
                return None
        except CONNECTION_ERRORS as exc:  # the store is down: held till it answers
            report(exc)
            self._held.insert(0, (method, body))
            self._wait()
            return None
        self.known_tags.add(method.delivery_tag)
        if self.queue_name.endswith(".DQ"):
            self.holding.add(method.delivery_tag)
        return _RabbitmqMessage(method.redelivered, method.delivery_tag, message)  # type: ignore[no-untyped-call]

    def _undecodable(self, tag: int, body: bytes) -> None:
        """Kept as a dead letter as it came (``show`` prints it, ``purge`` drops it), then acked."""
        letter_id = f"undecodable-{uuid4()}"
        logger.error("dead-lettering an undecodable message on %s as %s", self._queue, letter_id)
        stub: Message[Any] = Message(queue_name=self._queue, actor_name="?", args=(), kwargs={}, options={},
                       message_id=letter_id)  # fmt: skip
        try:
            self.broker.keep_dead_letter(stub, body)
            reason = {"kind": "undecodable", "reason": "the message is not valid JSON of a Dramatiq message",
                      "failed_at": int(time.time() * 1000), "attempts": 0}  # fmt: skip
            self.broker.record_dead_letter_reason(self._queue, letter_id, reason)
        except Exception:
            logger.exception("could not keep the undecodable message; it is in RabbitMQ's %s instead",
                             xq_name(self._queue))  # fmt: skip
            self._nack(tag)  # type: ignore[no-untyped-call]
            return
        self.connection.add_callback_threadsafe(lambda: self.channel.basic_ack(tag))


def rabbitmq_broker(settings: Settings, middleware: list[Any] | None = None) -> BgjobsRabbitmqBroker:
    """The broker of an ``amqp://`` ``BGJOBS_BROKER_URL`` with its coordination store.

    Raises:
        ConfigurationError: ``BGJOBS_COORDINATION_URL`` is missing or not a Redis URL.
    """
    if not settings.coordination_url:
        raise ConfigurationError(
            "BGJOBS_BROKER_URL is RabbitMQ, which cannot hold bgjobs's locks, caps, dedupe keys and dead "
            "letters: set BGJOBS_COORDINATION_URL=redis://host:6379/0 (a Redis for them; docs/operating.md)"
        )
    if not is_redis_url(settings.coordination_url):
        raise ConfigurationError(
            f"BGJOBS_COORDINATION_URL={mask_url(settings.coordination_url)!r}: use redis://, rediss://, "
            "unix:// or redis+sentinel://"
        )
    return BgjobsRabbitmqBroker(
        url=settings.broker_url, client=client_for(settings.coordination_url, settings.redis_tls),
        worker=settings.worker, management_url=settings.rabbitmq.management_url, middleware=middleware,
    )  # fmt: skip
