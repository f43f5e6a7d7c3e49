"""The worker's metrics middleware: Dramatiq's series and ``bgjobs_jobs_total``, through the tally.

It replaces Dramatiq's Prometheus middleware rather than subclassing it: the series keep
Dramatiq's names, labels and meanings (``dramatiq_messages_total``, ...), but every update goes
through :mod:`bgjobs.tally`'s buffer like every family counter, and no Dramatiq internals are
touched. Nothing here imports prometheus_client: the Dramatiq CLI imports ``bgjobs.actors``
before its process-boot hook runs, and the multiprocess directory must be chosen first
(:mod:`bgjobs.metrics_files`). The exposition process is :mod:`bgjobs.exposition`'s.
"""

from __future__ import annotations

import os
from typing import Any

from dramatiq.common import current_millis
from dramatiq.middleware import Middleware

from . import history, tally
from .exposition import serve_metrics
from .metrics_files import clear_dead_commands, clear_stale_files, use_multiprocess_dir

__all__ = ["Metrics", "outcome"]

_QUEUE_ACTOR = ("queue_name", "actor_name")
#: Dramatiq's buckets, in milliseconds.
BUCKETS = (5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000, 30000, 60000, 600000,
           900000, float("inf"))  # fmt: skip

_counter = tally.counter
messages = _counter("dramatiq_messages_total", "The total number of messages processed.", _QUEUE_ACTOR)
errored = _counter("dramatiq_message_errors_total", "The total number of errored messages.", _QUEUE_ACTOR)
retried = _counter("dramatiq_message_retries_total", "The total number of retried messages.", _QUEUE_ACTOR)
rejected = _counter(
    "dramatiq_message_rejects_total", "The total number of dead-lettered messages.", _QUEUE_ACTOR
)
in_progress = tally.gauge(
    "dramatiq_messages_inprogress", "The number of messages in progress.", _QUEUE_ACTOR, mode="livesum"
)
#: Up when a worker process takes a delayed message into memory, down when that same process moves
#: it to its queue (or gives it back): by its queue's name, summed over live processes, so it
#: returns to 0 (it went up under ``<queue>.DQ`` and down under ``<queue>``, in different processes).
delayed = tally.gauge(
    "dramatiq_delayed_messages_inprogress", "The number of delayed messages in memory.", _QUEUE_ACTOR,
    mode="livesum",
)  # fmt: skip
durations = tally.histogram(
    "dramatiq_message_duration_milliseconds", "The time spent processing messages.", _QUEUE_ACTOR,
    buckets=BUCKETS,
)  # fmt: skip
jobs = tally.counter(
    "bgjobs_jobs_total", "Messages finished by bgjobs actors, by family (queue), actor and outcome.",
    ("family", "actor", "outcome"),
)  # fmt: skip


def outcome(message: Any, *, acked: bool) -> str:
    """The bounded outcome label: succeeded, retried, or dead_lettered."""
    if not acked:
        return "dead_lettered"
    return "retried" if getattr(message, "_exception", None) is not None else "succeeded"


class Metrics(Middleware):
    """Counts every message a worker process handles; the exposition process serves the sums."""

    def __init__(self) -> None:
        self._delayed: set[str] = set()
        self._started: dict[str, int] = {}

    @property
    def forks(self) -> list[Any]:
        return [serve_metrics]

    def after_process_boot(self, broker: Any) -> None:
        path = use_multiprocess_dir()
        clear_stale_files(path)
        if not os.getenv("dramatiq_prom_db"):
            clear_dead_commands()
        tally.start()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        tally.stop()
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def before_delay_message(self, broker: Any, message: Any) -> None:
        self._delayed.add(message.message_id)
        delayed.labels(message.queue_name.removesuffix(".DQ"), message.actor_name).inc()

    def _released(self, message: Any) -> None:
        """A delayed message this process held left its memory (moved to its queue, or nacked)."""
        if message.queue_name.endswith(".DQ") and message.message_id in self._delayed:
            self._delayed.discard(message.message_id)
            delayed.labels(message.queue_name.removesuffix(".DQ"), message.actor_name).dec()

    def before_process_message(self, broker: Any, message: Any) -> None:
        labels = (message.queue_name, message.actor_name)
        in_progress.labels(*labels).inc()
        self._started[message.message_id] = current_millis()

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        labels = (message.queue_name, message.actor_name)
        started = self._started.pop(message.message_id, None)
        messages.labels(*labels).inc()
        if exception is not None:
            errored.labels(*labels).inc()
        if started is not None:
            took = current_millis() - started
            in_progress.labels(*labels).dec()
            durations.labels(*labels).observe(took)
            history.ran(message.actor_name, took, failed=exception is not None)

    after_skip_message = after_process_message

    def _count(self, message: Any, *, acked: bool) -> None:
        family = message.queue_name.removesuffix(".DQ")
        jobs.labels(family, message.actor_name, outcome(message, acked=acked)).inc()

    def after_ack(self, broker: Any, message: Any) -> None:
        # A delayed message (a retry, or sent with a delay) is acked once on its delay queue when
        # it moves to its queue, and again when it is processed: only the second is a job's outcome.
        if not message.queue_name.endswith(".DQ"):
            self._count(message, acked=True)
            history.finished(message.queue_name)
        self._released(message)

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        # A retry is enqueued on the delay queue (with its backoff) and again when it moves from
        # there to its queue (no delay): count only the first.
        if delay is not None and "retries" in message.options:
            retried.labels(message.queue_name, message.actor_name).inc()

    def after_nack(self, broker: Any, message: Any) -> None:
        self._released(message)
        rejected.labels(message.queue_name, message.actor_name).inc()
        self._count(message, acked=False)
