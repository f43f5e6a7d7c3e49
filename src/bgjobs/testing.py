"""Run bgjobs jobs in your own tests: a StubBroker, a worker thread pool, memory adapters.

Example::

    from bgjobs.testing import stub_jobs

    def test_welcome_email():
        with stub_jobs() as jobs:
            welcome.send({"user_id": 1, "email": "a@example.com"})
            jobs.drain()
            assert jobs.mailer.sent[0].to == ("a@example.com",)
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from dramatiq import Message, Worker
from dramatiq.brokers.stub import StubBroker

from . import runtime, wiring
from .adapters.memory import (
    MemoryMailer,
    MemoryPaymentGateway,
    MemoryPushSender,
    MemorySmsSender,
    MemoryStorage,
)
from .broker import build_broker
from .coordination import LocalCoordination
from .families import FAMILY_MODULES
from .middleware import DeadLetterReasons
from .settings import Settings

__all__ = [
    "JobsHarness",
    "MemoryMailer",
    "MemoryPaymentGateway",
    "MemoryPushSender",
    "MemorySmsSender",
    "MemoryStorage",
    "stub_jobs",
]


@dataclass
class JobsHarness:
    """What :func:`stub_jobs` gives a test: the broker, the worker and the memory adapters."""

    broker: StubBroker
    worker: Worker
    mailer: MemoryMailer = field(default_factory=MemoryMailer)
    sms: MemorySmsSender = field(default_factory=MemorySmsSender)
    push: MemoryPushSender = field(default_factory=MemoryPushSender)
    payment: MemoryPaymentGateway = field(default_factory=MemoryPaymentGateway)
    storage: MemoryStorage = field(default_factory=MemoryStorage)

    def drain(self, timeout_ms: int = 10_000) -> None:
        """Wait until every queue is empty and every worker thread idle (retries included), and no
        job waits for its key's turn (per-key limits; a key held at a cap of 0 stays held)."""
        from .keyed_local import LocalKeyed
        from .keying import keyed_of

        keyed = keyed_of(self.broker)
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            for queue in self.broker.get_declared_queues():
                self.broker.join(queue, timeout=timeout_ms, fail_fast=False)
            self.worker.join()
            if all(q.unfinished_tasks == 0 for q in self.broker.queues.values()):
                if not isinstance(keyed, LocalKeyed) or not keyed.movable():
                    return
                time.sleep(0.01)  # the worker's sweeper moves them as their turns come
            if time.monotonic() > deadline:
                raise TimeoutError(f"queues not drained within {timeout_ms} ms")

    def held(self) -> list[tuple[str, datetime]]:
        """Messages waiting for their time (a delay, a retry's backoff, quiet hours): actor and ETA.

        So a test proves a message is held, and until when, without waiting to see nothing happen.
        """
        found = []
        for name, queue in self.broker.queues.items():
            if name.endswith(".DQ"):
                for raw in list(queue.queue):
                    message = Message.decode(raw)
                    found.append((message.actor_name, int(message.options.get("eta", 0))))
        for consumer in self.worker.consumers.values():  # taken by the worker, held until due
            waiting = list(consumer.delay_queue.queue)
            found += [(item.message.actor_name, int(item.priority)) for item in waiting]
        return sorted((actor, datetime.fromtimestamp(eta / 1000, UTC)) for actor, eta in found)

    def release(self, actor: str | None = None, timeout_ms: int = 10_000) -> int:
        """Make held messages (of ``actor``, or all) due now, as if their time had come; returns how
        many were released. A test of a ten-minute window needs no ten-minute wait, and a test of a
        one-second one no race with a busy machine's clock; :meth:`drain` then runs them.

        Raises:
            TimeoutError: a delayed message was still not taken by the worker after ``timeout_ms``.
        """
        deadline = time.monotonic() + timeout_ms / 1000
        while any(q.qsize() for name, q in self.broker.queues.items() if name.endswith(".DQ")):
            if time.monotonic() > deadline:  # the worker takes them within its 50 ms poll
                raise TimeoutError(f"delayed messages not taken within {timeout_ms} ms")
            time.sleep(0.01)
        released = 0
        for consumer in self.worker.consumers.values():
            waiting = consumer.delay_queue
            items = []
            while not waiting.empty():
                items.append(waiting.get_nowait())
                waiting.task_done()
            for item in items:
                if actor is None or item.message.actor_name == actor:
                    item = replace(item, priority=0)  # due: its consumer enqueues it now
                    released += 1
                waiting.put(item)
        return released

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for what the harness's coordination store keeps (a circuit's
        cool-down, a lease, a counter's window), instead of sleeping through them."""
        coordination = runtime.current().coordination
        assert isinstance(coordination, LocalCoordination), "stub_jobs() keeps coordination in memory"
        coordination.advance(seconds)

    @property
    def dead_letters(self) -> list[Any]:
        return list(self.broker.dead_letters)

    def reason(self, message: Any) -> str:
        """Why a dead-lettered message failed."""
        middleware = next(m for m in self.broker.middleware if isinstance(m, DeadLetterReasons))
        return str(middleware.reasons[message.message_id]["reason"])


@contextmanager
def stub_jobs(*, settings: Settings | None = None, worker_threads: int = 2) -> Iterator[JobsHarness]:
    """Point bgjobs at a fresh StubBroker with memory adapters and a running worker, which has the
    families' handlers as a real worker does (a family's package does not load them itself).

    Retries keep their configured backoff; pass settings with small
    ``retries.min_backoff_ms`` to make retrying tests fast.
    """
    settings = settings or Settings(broker_url="stub://")
    for module in FAMILY_MODULES:
        importlib.import_module(module)
    broker = build_broker(settings)
    assert isinstance(broker, StubBroker)
    previous = runtime.install(runtime.Runtime(settings, broker=broker))
    worker = Worker(broker, worker_timeout=50, worker_threads=worker_threads)
    harness = JobsHarness(broker=broker, worker=worker)
    wiring.configure(
        mailer=harness.mailer,
        sms=harness.sms,
        push=harness.push,
        payment=harness.payment,
        storage=harness.storage,
    )
    worker.start()
    try:
        yield harness
    finally:
        worker.stop()
        broker.close()
        wiring.reset()
        runtime.install(previous)
