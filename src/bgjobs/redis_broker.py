"""Dramatiq's Redis broker with timed maintenance, dead-letter reasons, wake-on-enqueue and batches.

Stock Dramatiq recovers a dead worker's unacked messages only during a
maintenance pass that runs on a random 1-in-1000 command, and counts nothing
about messages that kill their worker. This subclass turns the random pass off
and runs ``maintenance.lua`` on a timer instead (see :mod:`bgjobs.middleware`),
which also heartbeats, counts deliveries, and dead-letters poison messages.

Enqueueing goes through ``enqueue.lua``, which writes Dramatiq's own layout and pushes a
wake token for idle consumers (:mod:`bgjobs.consumer`); :meth:`enqueue_many` sends a
whole fan-out in one round trip.

Relies on Dramatiq's Redis key layout (``__heartbeats__``, ``__acks__.<id>.<queue>``,
``<queue>.msgs``, ``<queue>.XQ``); ``tests/integration/test_dramatiq_internals.py``
fails if a Dramatiq release changes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from importlib import resources
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.message import Message

from .errors import BrokerUnavailable, check_size
from .letter_index import LIBRARY
from .outage import patiently

if TYPE_CHECKING:
    from .consumer import WakingConsumer
from .operated import (
    QUEUES_KEY,
    WORKERS_KEY,
    MaintenanceReport,
    OperatedBroker,
    QueueSizes,
    registered_queues,
)
from .settings import WorkerSettings

__all__ = [
    "QUEUES_KEY", "WORKERS_KEY", "BgjobsRedisBroker", "MaintenanceReport", "QueueSizes", "queue_sizes",
    "registered_queues",
]  # fmt: skip

_SCRIPT = LIBRARY + resources.files("bgjobs").joinpath("maintenance.lua").read_text()
_ENQUEUE = resources.files("bgjobs").joinpath("enqueue.lua").read_text()

#: At most this many wake tokens wait per queue: enough for every idle consumer of a deployment.
WAKE_CAP = 64
#: Messages per script call in :meth:`BgjobsRedisBroker.enqueue_many`.
BATCH = 500

def queue_sizes(client: Any, namespace: str, queues: list[str]) -> dict[str, QueueSizes]:
    """Each queue's sizes from Dramatiq's keys, all queues in one round trip."""
    pipe = client.pipeline(transaction=False)
    for q in queues:
        key = f"{namespace}:{q}"
        pipe.llen(key).hlen(f"{key}.msgs").hlen(f"{key}.DQ.msgs").zcard(f"{key}.XQ")
    values = pipe.execute()
    sizes = {}
    for i, q in enumerate(queues):
        ready, stored, delayed, dead = values[4 * i : 4 * i + 4]
        sizes[q] = QueueSizes(ready, delayed, max(stored - ready, 0), dead)
    return sizes


logger = logging.getLogger("bgjobs.broker")


class BgjobsRedisBroker(OperatedBroker, RedisBroker):
    #: It refuses messages above ``max_message_bytes`` itself, on the bytes it encodes anyway.
    checks_message_size = True

    def __init__(
        self, *, worker: WorkerSettings, url: str | None = None, client: Any = None,
        middleware: list[Any] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(  # type: ignore[no-untyped-call]
            url=url,
            client=client,
            middleware=middleware,
            namespace=worker.namespace,
            maintenance_chance=0,
            heartbeat_timeout=worker.heartbeat_timeout_ms,
            dead_message_ttl=worker.dead_message_ttl_ms,
        )
        self.worker_settings = worker
        #: Seconds an enqueue waits out a Redis outage (a worker's broker; 0 in a host process).
        self.patience_s = 0.0
        #: Replicas each enqueue waits for (``BGJOBS_REDIS__WAIT_REPLICAS``), and for how long.
        self.wait_replicas, self.wait_timeout_ms = 0, 1000
        self._replicas_said = 0.0
        #: Per queue, the Redis ids this process's consumer handed to Dramatiq and that are not
        #: acked, nacked or requeued yet; and the queues whose consumer restarted since it last
        #: put back what its ack set holds beyond them (see ``WakingConsumer.reconcile``).
        self.in_flight: dict[str, set[str]] = {}
        self.restarted: set[str] = set()
        #: Per queue, the Redis ids of jobs done (acked to Dramatiq) whose ack the queue's consumer
        #: sends with its next call (``WakingConsumer.ack``); still in flight until then.
        self.acks: dict[str, list[str]] = {}
        self.acks_lock = threading.Lock()
        self._maintenance = self.client.register_script(_SCRIPT)
        self._enqueue = self.client.register_script(_ENQUEUE)

    @property
    def consumer_class(self) -> type[WakingConsumer]:
        from .consumer import WakingConsumer  # a worker's: a sending process never loads it

        return WakingConsumer

    def _prepare(self, message: Message[Any], delay: int | None) -> Message[Any]:
        # As Dramatiq's enqueue: a fresh Redis id per enqueue (retries re-enqueue the same message),
        # and delayed messages go to the delay queue with their eta.
        message = message.copy(options={"redis_message_id": str(uuid4())})
        if delay is not None:
            message = message.copy(
                queue_name=dq_name(message.queue_name), options={"eta": current_millis() + delay}
            )
        self.emit_before("enqueue", message, delay)
        return message

    def _encode(self, message: Message[Any]) -> bytes:
        data = message.encode()
        check_size(message.actor_name, len(data), self.worker_settings.max_message_bytes)
        return data

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Enqueue one message and wake an idle consumer of its queue.

        Raises:
            InvalidPayload: the message is larger than ``BGJOBS_WORKER__MAX_MESSAGE_BYTES``.
        """
        message = self._prepare(message, delay)
        args = [message.queue_name, WAKE_CAP, 0, message.options["redis_message_id"], self._encode(message)]
        if self.wait_replicas:
            self._patiently(lambda: self._replicated([([self.namespace], args)], [message]))
        else:
            self._patiently(lambda: self._enqueue(keys=[self.namespace], args=args))
        self.emit_after("enqueue", message, delay)
        return message

    def _replicated(self, calls: list[tuple[list[str], list[Any]]], messages: list[Any]) -> list[Any]:
        """The enqueue script's ``calls`` and ``WAIT`` in one pipeline: one connection, so ``WAIT``
        counts the replicas that have these writes. Fewer than ``wait_replicas`` in time is an
        error: the send is not acknowledged, since a failover now could lose it. (``EVALSHA`` by
        hand: a pipeline of Script objects asks ``SCRIPT EXISTS`` first, a round trip per send.)

        Raises:
            BrokerUnavailable: the replicas did not confirm the writes in ``wait_timeout_ms``.
        """
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.execute_command("EVALSHA", self._enqueue.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            *written, confirmed = pipe.execute(raise_on_error=False)
            if not any(isinstance(w, redis.exceptions.NoScriptError) for w in written):
                break
            self.client.script_load(self._enqueue.script)  # a restarted Redis: none of them ran
        for found in (*written, confirmed):
            if isinstance(found, Exception):
                raise found
        if int(confirmed) < self.wait_replicas:
            self._short_of_replicas(int(confirmed), messages)
        return list(written)

    def _short_of_replicas(self, confirmed: int, messages: list[Any]) -> None:
        ids = ", ".join(m.message_id for m in messages[:3]) + (" ..." if len(messages) > 3 else "")
        line = (f"{len(messages)} message(s) ({ids}) reached {confirmed} of {self.wait_replicas} "
                f"replica(s) in {self.wait_timeout_ms} ms (BGJOBS_REDIS__WAIT_REPLICAS): a failover now "
                "could lose them")  # fmt: skip
        if not self.patience_s:  # a host's send: not acknowledged
            raise BrokerUnavailable(f"{line}; send again (a keyed send is dropped at the effect if both "
                                    "arrive)")  # fmt: skip
        # A worker's enqueue (a retry, a follow-up job) is written; Dramatiq would drop an error here
        # and ack the job that sent it all the same, so raising would add a traceback and nothing else.
        now = time.monotonic()
        if now >= self._replicas_said:
            logger.warning("%s (said at most once a minute)", line)
            self._replicas_said = now + 60

    def _patiently(self, call: Any) -> Any:
        """``call()``, tried again for ``patience_s`` while Redis does not answer.

        In a worker, a failed job's retry is enqueued from Dramatiq's Retries middleware, whose
        errors are logged and dropped before the job's message is acked: a Redis blip or a Sentinel
        failover at that moment lost the job. A worker's broker therefore waits out an outage of
        up to ``patience_s`` (30 s) before giving up; a host's send fails at once
        (``BrokerUnavailable``) so a request is not held.
        """
        return patiently(call, patience_s=self.patience_s, errors=(redis.ConnectionError, redis.TimeoutError))

    def enqueue_once(self, message: Message[Any], *, key: str, ttl_s: int) -> Message[Any] | None:
        """Enqueue ``message`` only if ``key`` was not set yet, setting it in the same script.

        The claim and the message are written together or not at all, so a caller killed
        mid-way leaves no claimed-but-unsent work. Returns None when the key was already set.
        """
        message = self._prepare(message, None)
        data = self._encode(message)
        args = [message.queue_name, WAKE_CAP, ttl_s, message.options["redis_message_id"], data]
        if self.wait_replicas:
            (sent,) = self._replicated([([self.namespace, key], args)], [message])
        else:
            sent = self._enqueue(keys=[self.namespace, key], args=args)
        if not sent:
            return None
        self.emit_after("enqueue", message, None)
        return message

    def enqueue_many(
        self, messages: Iterable[Message[Any]], *, delay: int | None = None
    ) -> list[Message[Any]]:
        """Enqueue many messages in one round trip: one script call per queue and batch of 500.

        Middleware sees ``before_enqueue`` for every message before anything is written and
        ``after_enqueue`` for each once all are written, as if they were sent one by one.
        """
        prepared = [self._prepare(m, delay) for m in messages]
        encoded = [self._encode(m) for m in prepared]  # all checked before anything is written
        by_queue: dict[str, list[tuple[Message[Any], bytes]]] = {}
        for message, data in zip(prepared, encoded, strict=True):
            by_queue.setdefault(message.queue_name, []).append((message, data))
        calls: list[tuple[list[str], list[Any]]] = []
        for queue, group in by_queue.items():
            for start in range(0, len(group), BATCH):
                args: list[Any] = [queue, WAKE_CAP, 0]
                for message, data in group[start : start + BATCH]:
                    args += [message.options["redis_message_id"], data]
                calls.append(([self.namespace], args))
        if self.wait_replicas:
            self._replicated(calls, prepared)
        else:
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                self._enqueue(keys=keys, args=args, client=pipe)
            pipe.execute()
        for message in prepared:
            self.emit_after("enqueue", message, delay)
        return prepared

    def all_queue_names(self) -> list[str]:
        """Declared queues and their delay queues, as the maintenance script wants them."""
        return sorted(self.get_declared_queues() | self.delay_queues)

    def run_maintenance(
        self, *, heartbeat: bool = True, now_ms: int | None = None, recover: bool = True
    ) -> MaintenanceReport:
        """Heartbeat for this process, recover dead workers' messages, expire old dead letters.

        Args:
            now_ms: the time the pass judges by (the clock's by default); a test passes a later
                one instead of waiting for a heartbeat to time out.
            recover: False: no worker is taken for dead in this pass (see the Maintenance middleware).
        """
        ws = self.worker_settings
        now = int(time.time() * 1000) if now_ms is None else now_ms
        args: list[str | int] = [
            now,
            ws.heartbeat_timeout_ms if recover else now,  # a timeout of all time: nobody is silent that long
            ws.dead_message_ttl_ms,
            ws.max_deliveries,
            self.broker_id if heartbeat else "",
            WAKE_CAP,
            ws.max_dead_letters,
            *self.all_queue_names(),
        ]
        return MaintenanceReport(self._maintenance(keys=[self.namespace], args=args))

    def queue_sizes(self, queues: list[str]) -> dict[str, QueueSizes]:
        return queue_sizes(self.client, self.namespace, queues)

    def dead_letter_id(self, message: Any) -> str:
        return str(message.options["redis_message_id"])
