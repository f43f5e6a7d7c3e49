"""One process-wide account of each store that does not answer, logged at a bounded rate.

A worker with a wrong ``BGJOBS_BROKER_URL`` (or a Redis that restarts) has a dozen consumer
threads, the maintenance thread and the outbox relay all failing every few seconds: 973 lines in
40 s, tracebacks included. Every one of them reports here instead; the process logs the first
failure at once, then one line per backoff step (30 s, 60 s, 120 s ... at most 5 minutes) saying
how many failures it folded in, and one line when the store answers again.

The stores are two on RabbitMQ: the broker, and the coordination store of
``BGJOBS_COORDINATION_URL`` (a Redis). A Redis error there is the coordination store's, and its
lines name that store and that setting, not RabbitMQ (:func:`report`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .redact import mask_url

__all__ = [
    "CONNECTION_ERRORS", "BrokerOutageLog", "Outage", "broker_outage", "coordination_outage",
    "is_connection_error", "patiently", "report", "store_outage", "watch",
]  # fmt: skip

logger = logging.getLogger("bgjobs.broker")
T = TypeVar("T")

FIRST_STEP_S = 30.0
LAST_STEP_S = 300.0


def _connection_errors() -> tuple[type[BaseException], ...]:
    from dramatiq.errors import BrokerConnectionError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (BrokerConnectionError, RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)


CONNECTION_ERRORS = _connection_errors()


def is_connection_error(exc: BaseException) -> bool:
    """True for an error that says the broker did not answer (not for a bad command or a bug)."""
    return isinstance(exc, CONNECTION_ERRORS)


def patiently(
    call: Callable[[], T], *, patience_s: float, errors: tuple[type[BaseException], ...] = CONNECTION_ERRORS
) -> T:
    """``call()``, tried again every quarter second for ``patience_s`` while the store does not
    answer (``errors``); the last error once the time is up. A retried write may land twice (the
    first may have been applied before its answer was lost): at least once, as everywhere."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return call()
        except errors:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.25)


def _first_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Outage:
    """Whether a store answers, and when the next line about it may be logged."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, url: str = "its URL", what: str = "the broker",
        setting: str = "BGJOBS_BROKER_URL",
    ) -> None:  # fmt: skip
        self._clock = clock
        #: The store's URL as the lines show it (password masked); set with :meth:`watch`.
        self.url = url
        #: The store as the lines name it, and the setting that points at it.
        self.what, self.setting = what, setting
        self._lock = threading.Lock()
        self._since: float | None = None  # when the current outage began
        self._next_report = 0.0
        self._step = FIRST_STEP_S
        self._folded = 0

    def watch(self, url: str) -> None:
        """Name the store this process uses in the lines (its password masked)."""
        self.url = mask_url(url)

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, error: object) -> str | None:
        """Count one failure; the line to log now, or None while the current step lasts."""
        now = self._clock()
        with self._lock:
            if self._since is None:
                self._since, self._next_report, self._step, self._folded = now, now, FIRST_STEP_S, 0
            if now < self._next_report:
                self._folded += 1
                return None
            folded, self._folded = self._folded, 0
            step, self._step = self._step, min(self._step * 2, LAST_STEP_S)
            self._next_report = now + step
            down_for = now - self._since
        from .redis_connections import explain

        cause = error if isinstance(error, BaseException) else Exception(_first_line(error))
        line = explain(cause, self.url, setting=self.setting, what=self.what)
        line += "."
        if down_for >= 1:
            line += f" Down for {down_for:.0f} s, {folded} more failure(s) since the last report."
        return line + f" Retrying; next report in {step:.0f} s at most"

    def answered(self) -> str | None:
        """The store answered: the line to log if it had been down, else None."""
        with self._lock:
            if self._since is None:
                return None
            down_for, self._since = self._clock() - self._since, None
            folded, self._folded = self._folded, 0
        line = f"{self.what} at {self.url} answers again after {down_for:.0f} s"
        return line + (f"; {folded} more failure(s) since the last report" if folded else "")

    def report(self, error: object, *, log: logging.Logger = logger) -> None:
        """Log this failure if its step allows it (at ERROR), else fold it into the next line."""
        line = self.failed(error)
        if line is not None:
            log.error("%s", line)

    def recover(self, *, log: logging.Logger = logger) -> None:
        line = self.answered()
        if line is not None:
            log.warning("%s", line)


#: The process's one account of the broker's outages.
broker_outage = Outage()
#: And of the coordination store's, on RabbitMQ (on Redis, the broker is that store).
coordination_outage = Outage(what="the coordination store", setting="BGJOBS_COORDINATION_URL")
_apart = False


def watch(broker_url: str, coordination_url: str | None) -> None:
    """Name this process's stores in its lines; on RabbitMQ, the coordination store apart."""
    global _apart
    from .redis_connections import is_redis_url

    broker_outage.watch(broker_url)
    _apart = bool(coordination_url) and not is_redis_url(broker_url)
    if _apart and coordination_url:
        coordination_outage.watch(coordination_url)


def store_outage() -> Outage:
    """The account of the store that coordination (leases, pauses, dead letters) uses."""
    return coordination_outage if _apart else broker_outage


def report(error: BaseException, *, log: logging.Logger = logger) -> None:
    """Count a connection failure against the store it came from: on RabbitMQ, a Redis error is
    the coordination store's."""
    from redis.exceptions import RedisError

    found = coordination_outage if _apart and isinstance(error, RedisError) else broker_outage
    found.report(error, log=log)


class BrokerOutageLog(logging.Filter):
    """Folds Dramatiq's consumer threads' connection errors into :data:`broker_outage`'s lines.

    Each consumer thread logs a CRITICAL connection error and an INFO "Restarting consumer" every
    3 s; this filter lets one line per backoff step through and drops the rest. Installed at boot
    on each consumer thread's logger.
    """

    def __init__(self, outage: Outage = broker_outage) -> None:
        super().__init__()
        self.outage = outage

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if text == "Consumer encountered a connection error: %s":
            args: Any = record.args
            line = self.outage.failed(args[0] if isinstance(args, tuple) and args else record.getMessage())
            if line is None:
                return False
            record.msg, record.args = "%s", (line,)
            record.levelno, record.levelname = logging.ERROR, "ERROR"
            return True
        # Told by the outage's own lines: the restarts, and the acks Dramatiq tries again.
        repeats = ("Restarting consumer", "Failed to post_process_message")
        return not (text.startswith(repeats) and (self.outage.down or coordination_outage.down))
