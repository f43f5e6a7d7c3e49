"""What bgjobs keeps in Redis beside any broker's queues, so operators see every engine alike.

Both of bgjobs's brokers (:class:`~bgjobs.redis_broker.BgjobsRedisBroker` and
:class:`~bgjobs.rabbitmq_broker.BgjobsRabbitmqBroker`) are :class:`OperatedBroker`\\ s: they have a
Redis ``client`` and a ``namespace`` (the broker's own Redis, or on RabbitMQ the coordination
store of ``BGJOBS_COORDINATION_URL``) where every worker records the queues it declared, describes
itself and heartbeats, and where dead letters and their reasons are kept. ``bgjobs status``,
``bgjobs dead-letters``, pausing, the metrics collector and the console read those keys, so they
work the same whatever carries the messages.
"""

from __future__ import annotations

import abc
import json
import os
import socket
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

import dramatiq

from .settings import WorkerSettings
from .unknown_actors import StandIn

__all__ = [
    "LETTER_OPTION", "QUEUES_KEY", "WORKERS_KEY", "MaintenanceReport", "OperatedBroker", "QueueSizes",
    "registered_queues",
]  # fmt: skip

#: The option a dead letter requeued on RabbitMQ carries: the id its next failure is stored under
#: (there a letter's id is otherwise its message id, which a requeue keeps).
LETTER_OPTION = "bgjobs_letter_id"
#: A Redis set of every queue a bgjobs worker has declared; the metrics collector reads it.
QUEUES_KEY = "__bgjobs_queues__"
#: A Redis hash: worker id -> what ``bgjobs status`` shows about the process (host, pid, queues).
WORKERS_KEY = "__bgjobs_workers__"


class QueueSizes(NamedTuple):
    ready: int
    delayed: int
    #: Fetched by a worker (in its ack set, or prefetched) and not finished yet; None where the
    #: engine cannot say (RabbitMQ without its management API).
    in_flight: int | None
    dead: int


class MaintenanceReport(tuple[int, int, int]):
    """(recovered, dead_lettered, expired) from one maintenance pass."""

    @property
    def recovered(self) -> int:
        return self[0]

    @property
    def dead_lettered(self) -> int:
        return self[1]


def registered_queues(client: Any, namespace: str, declared: Iterable[str] = ()) -> list[str]:
    """Every queue a bgjobs worker of the deployment declared (recorded at boot), plus ``declared``."""
    found = {q.decode() for q in client.smembers(f"{namespace}:{QUEUES_KEY}")}
    return sorted(found | {q.removesuffix(".DQ") for q in declared})


class OperatedBroker(dramatiq.Broker):
    """A broker whose deployment state bgjobs keeps in ``client`` under ``namespace``."""

    client: Any
    namespace: str
    worker_settings: WorkerSettings
    #: This process's id among the deployment's workers (its heartbeat and description).
    broker_id: str
    #: Seconds an enqueue waits out an outage (a worker's broker; 0 in a host process).
    patience_s: float

    def key(self, *parts: str) -> str:
        """A key in this broker's namespace."""
        return ":".join((self.namespace, *parts))

    def get_actor(self, actor_name: str) -> Any:
        """The actor, or for one this process does not declare a stand-in: Dramatiq's worker would
        dead-letter the message the moment it is fetched, before any middleware sees it; the
        :class:`~bgjobs.unknown_actors.UnknownActors` middleware gives it back instead."""
        found = self.actors.get(actor_name)
        return found if found is not None else StandIn(actor_name)

    @abc.abstractmethod
    def queue_sizes(self, queues: list[str]) -> dict[str, QueueSizes]:
        """Each queue's sizes now."""

    @abc.abstractmethod
    def run_maintenance(
        self, *, heartbeat: bool = True, now_ms: int | None = None, recover: bool = True
    ) -> MaintenanceReport:
        """One maintenance pass: this process's heartbeat, and whatever the engine needs swept.

        Args:
            recover: take silent workers for dead (False just after an outage of the store, when
                every worker's heartbeat is stale and the others have yet to beat again).
        """

    @abc.abstractmethod
    def enqueue_once(self, message: Any, *, key: str, ttl_s: int) -> Any:
        """Enqueue ``message`` unless ``key`` was claimed within ``ttl_s``; None when it was."""

    def dead_letter_id(self, message: Any) -> str:
        """The id a dead letter of ``message`` is stored under."""
        return str(message.message_id)

    def register_queues(self) -> None:
        """Record declared queues so the metrics process and the console can report every one."""
        queues = {q for q in self.get_declared_queues() if not q.endswith((".DQ", ".XQ"))}
        if queues:
            self.client.sadd(self.key(QUEUES_KEY), *queues)

    def announce(self, worker: Any) -> None:
        """Describe this worker process for ``bgjobs status``; the maintenance pass forgets dead ones."""
        consumed = sorted({name.removesuffix(".DQ") for name in worker.consumers})
        info = {
            "host": socket.gethostname(), "pid": os.getpid(), "queues": consumed,
            "threads": worker.worker_threads, "started": int(time.time() * 1000),
        }  # fmt: skip
        self.client.hset(self.key(WORKERS_KEY), self.broker_id, json.dumps(info))

    def retire(self) -> None:
        """Mark this process as stopping: its heartbeat lingers until the timeout, but it is not live."""
        self.client.hset(
            self.key(WORKERS_KEY), self.broker_id, json.dumps({"stopped": int(time.time() * 1000)})
        )

    def record_dead_letter_reason(
        self, queue_name: str, letter_id: str, reason: dict[str, Any], *, message_id: str | None = None,
        actor: str = "?",
    ) -> None:  # fmt: skip
        """Keep why a message is being dead-lettered, and index it (by ``message_id``, the id
        ``send()`` returned, by actor and by kind); drop the queue's oldest letters past
        ``BGJOBS_WORKER__MAX_DEAD_LETTERS``."""
        from . import tally
        from .letter_index import record

        canonical = queue_name.removesuffix(".DQ")
        at = int(reason.get("failed_at") or time.time() * 1000)
        cap, xq = self.worker_settings.max_dead_letters, self.key(f"{canonical}.XQ")
        dropped = record(self.client, xq, letter_id, message_id=message_id or letter_id, actor=actor,
                         reason=reason, at_ms=at, cap=cap)  # fmt: skip
        if dropped:
            tally.counter(
                "bgjobs_dead_letters_dropped_total", "Dead letters dropped, the oldest first, past "
                "BGJOBS_WORKER__MAX_DEAD_LETTERS.", ("queue",),
            ).labels(canonical).inc(dropped)
