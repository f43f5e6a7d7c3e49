"""bgjobs's Dramatiq middleware: maintenance on a timer, and reasons for dead letters."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware
from pydantic import ValidationError

from . import history
from .errors import ConfigurationError, InvalidPayload, PermanentError
from .operated import OperatedBroker
from .outage import broker_outage, is_connection_error, report, store_outage
from .redact import mask_text
from .unknown_actors import UnknownActor

__all__ = ["DeadLetterReasons", "Maintenance", "describe_failure"]

logger = logging.getLogger("bgjobs.worker")

#: How often a worker process notes each queue's ready length for the console's history.
HISTORY_SIZES_S = 10.0


class _Task:
    def __init__(self, every_s: float, run: Callable[[], object]) -> None:
        self.every_s, self.run, self.due = every_s, run, 0.0

    def run_if_due(self) -> None:
        if time.monotonic() >= self.due:
            self.run()
            self.due = time.monotonic() + self.every_s


class Maintenance(Middleware):
    """Runs the broker's maintenance every ``maintenance_interval_ms`` in each worker process.

    Besides recovering dead peers' messages, the pass is this process's
    heartbeat, so a process whose threads are all busy on long jobs is never
    mistaken for a dead one.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tasks: list[_Task] = []

    def also(self, every_s: float, task: Callable[[], object]) -> None:
        """Run ``task`` from the maintenance thread, after a pass, at most every ``every_s``; its
        failures are the pass's (an outage reported once, anything else logged and retried)."""
        self._tasks.append(_Task(every_s, task))

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        if not isinstance(broker, OperatedBroker):
            return
        from .consumer import STOPPING  # the worker's: a sending process never loads the consumer

        self._stop.clear()
        STOPPING.clear()
        # Everything that talks to Redis runs in the thread, which keeps trying: a worker that
        # boots while Redis is down starts its maintenance (and describes itself) once it answers.
        self._thread = threading.Thread(
            target=self._loop, args=(broker, worker), name="bgjobs-maintenance", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        from .consumer import STOPPING

        STOPPING.set()  # first: no consumer of this process takes another message
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if isinstance(broker, OperatedBroker):
            try:
                broker.retire()
            except Exception as exc:  # Redis gone at shutdown: the next maintenance pass forgets it
                traced = logger.isEnabledFor(logging.DEBUG)
                what = f"{type(exc).__name__}: {exc}"
                logger.warning("could not unregister this worker from Redis (%s)", what, exc_info=traced)

    def _loop(self, broker: OperatedBroker, worker: Any) -> None:
        interval = broker.worker_settings.maintenance_interval_ms / 1000
        timeout = broker.worker_settings.heartbeat_timeout_ms / 1000
        described = False
        next_sizes = 0.0
        #: Until then, no silent worker is taken for dead: after an outage of the store every
        #: heartbeat is stale, and a pass that recovered the "dead" ones' messages while they ran
        #: ran them twice. Each live worker beats again within the timeout; a dead one waits that
        #: much longer to be recovered.
        trusting_after = 0.0
        while not self._stop.is_set():
            try:
                if not described:  # again after any failure: a restarted Redis has forgotten us
                    broker.register_queues()
                    broker.announce(worker)
                    described = True
                done = broker.run_maintenance(recover=time.monotonic() >= trusting_after)
                store_outage().recover(log=logger)
                ready = None
                if time.monotonic() >= next_sizes:  # the console's sparklines: a point per 10 s is plenty
                    queues = sorted(q for q in broker.get_declared_queues() if not q.endswith((".DQ", ".XQ")))
                    ready = {q: s.ready for q, s in broker.queue_sizes(queues).items()}
                    broker_outage.recover(log=logger)  # on RabbitMQ, the sizes are the broker's
                    next_sizes = time.monotonic() + HISTORY_SIZES_S
                history.record(broker.client, broker.namespace, ready)
                for task in self._tasks:
                    task.run_if_due()
                if done.recovered or done.dead_lettered:
                    logger.warning(
                        "recovered %d message(s) from dead workers; dead-lettered %d poison message(s)",
                        done.recovered,
                        done.dead_lettered,
                    )
            except Exception as exc:
                described = False
                if is_connection_error(exc):
                    report(exc, log=logger)
                    trusting_after = time.monotonic() + timeout + interval
                    self._stop.wait(min(interval, 1.0))
                    continue
                logger.error("maintenance pass failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc,
                             interval)  # fmt: skip
            self._stop.wait(interval)


def describe_failure(message: Any, exception: BaseException | None) -> dict[str, Any]:
    """Why a message is being dead-lettered, as stored beside it."""
    # Retries counts the failed attempt before giving up, but not before a ``throws`` abort.
    retries = message.options.get("retries", 0)
    if isinstance(exception, UnknownActor):
        kind = "unknown_actor"
    elif isinstance(exception, InvalidPayload | ValidationError):
        kind = "invalid"
    elif isinstance(exception, ConfigurationError):
        kind = "configuration"
    elif isinstance(exception, PermanentError):
        kind = "permanent"
    else:
        kind = "exhausted"
    attempts = max(retries, 1) if kind == "exhausted" else retries + 1
    text = f"{type(exception).__name__}: {exception}" if exception is not None else "failed"
    if kind == "exhausted":
        text = f"retries exhausted after {attempts} attempt(s); last error {text}"
    text = mask_text(text)
    found = {"kind": kind, "reason": text, "failed_at": int(time.time() * 1000), "attempts": attempts}
    told = _traceback(exception)
    if told:
        found["traceback"] = told
    return found


#: A dead letter keeps at most this much of its last traceback (its end: where it failed).
TRACEBACK_CHARS = 4_000


def _traceback(exception: BaseException | None) -> str | None:
    """The failure's traceback, bounded and with addresses, numbers and URL passwords masked: the
    message the exception carries may quote a vendor's answer."""
    if exception is None or exception.__traceback__ is None:
        return None
    text = "".join(traceback.format_exception(exception, limit=30))
    return mask_text(text[-TRACEBACK_CHARS:])


class DeadLetterReasons(Middleware):
    """Keeps the reason next to every dead-lettered message.

    Dramatiq moves the stored message to ``<queue>.XQ`` unchanged, so the reason
    (validation error, permanent error, exhausted retries) would otherwise be lost.
    Brokers other than bgjobs's Redis broker keep reasons in :attr:`reasons`.
    """

    def __init__(self) -> None:
        self.reasons: dict[str, dict[str, Any]] = {}

    def before_nack(self, broker: Any, message: Any) -> None:
        reason = describe_failure(message, getattr(message, "_exception", None))
        if isinstance(broker, OperatedBroker):
            try:
                letter, queue = broker.dead_letter_id(message), message.queue_name
                broker.record_dead_letter_reason(queue, letter, reason, message_id=message.message_id,
                                                 actor=message.actor_name)  # fmt: skip
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                # The store is down: Dramatiq tries the nack (and this) again every few seconds,
                # the message held meanwhile; any other error would leave it unacked for good.
                report(exc, log=logger)
                raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        else:
            self.reasons[message.message_id] = reason
        logger.error("dead-lettering %s (%s): %s", message.message_id, message.actor_name, reason["reason"])
