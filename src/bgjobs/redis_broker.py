"""Dramatiq's Redis broker with deterministic maintenance and dead-letter reasons.

Stock Dramatiq recovers a dead worker's unacked messages only during a
maintenance pass that runs on a random 1-in-1000 command, and counts nothing
about messages that kill their worker. This subclass turns the random pass off
and runs ``maintenance.lua`` on a timer instead (see :mod:`bgjobs.middleware`),
which also heartbeats, counts deliveries, and dead-letters poison messages.

Relies on Dramatiq's Redis key layout (``__heartbeats__``, ``__acks__.<id>.<queue>``,
``<queue>.msgs``, ``<queue>.XQ``); ``tests/integration/test_dramatiq_internals.py``
fails if a Dramatiq release changes it.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

from dramatiq.brokers.redis import RedisBroker

from .settings import WorkerSettings

__all__ = ["BgjobsRedisBroker", "MaintenanceReport"]

_SCRIPT = resources.files("bgjobs").joinpath("maintenance.lua").read_text()

#: A Redis set of every queue a bgjobs worker has declared; the metrics collector reads it.
QUEUES_KEY = "__bgjobs_queues__"


class MaintenanceReport(tuple[int, int, int]):
    """(recovered, dead_lettered, expired) from one maintenance pass."""

    @property
    def recovered(self) -> int:
        return self[0]

    @property
    def dead_lettered(self) -> int:
        return self[1]


class BgjobsRedisBroker(RedisBroker):
    def __init__(self, *, url: str, worker: WorkerSettings, middleware: list[Any] | None = None) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            url=url,
            middleware=middleware,
            namespace=worker.namespace,
            maintenance_chance=0,
            heartbeat_timeout=worker.heartbeat_timeout_ms,
            dead_message_ttl=worker.dead_message_ttl_ms,
        )
        self.worker_settings = worker
        self._maintenance = self.client.register_script(_SCRIPT)

    def key(self, *parts: str) -> str:
        """A key in this broker's namespace."""
        return ":".join((self.namespace, *parts))

    def all_queue_names(self) -> list[str]:
        """Declared queues and their delay queues, as the maintenance script wants them."""
        return sorted(self.get_declared_queues() | self.delay_queues)

    def run_maintenance(self, *, heartbeat: bool = True) -> MaintenanceReport:
        """Heartbeat for this process, recover dead workers' messages, expire old dead letters."""
        ws = self.worker_settings
        args: list[str | int] = [
            int(time.time() * 1000),
            ws.heartbeat_timeout_ms,
            ws.dead_message_ttl_ms,
            ws.max_deliveries,
            self.broker_id if heartbeat else "",
            *self.all_queue_names(),
        ]
        return MaintenanceReport(self._maintenance(keys=[self.namespace], args=args))

    def register_queues(self) -> None:
        """Record declared queues so the metrics process can report every one."""
        queues = self.get_declared_queues()
        if queues:
            self.client.sadd(self.key(QUEUES_KEY), *queues)

    def record_dead_letter_reason(
        self, queue_name: str, redis_message_id: str, reason: dict[str, Any]
    ) -> None:
        canonical = queue_name.removesuffix(".DQ")
        self.client.hset(self.key(f"{canonical}.XQ.reasons"), redis_message_id, json.dumps(reason))
