"""The runtime: the one object holding what a process's jobs run with.

Settings, the broker, the database engine, the coordination backend, the clock and the adapters
the host configured (ports and hooks) live in one :class:`Runtime`. Three places build one:

- :func:`bgjobs.worker.boot` (``dramatiq bgjobs.actors``), with the worker's middleware;
- the CLI, for the commands that need the broker or the database;
- :func:`bgjobs.testing.stub_jobs`, with a StubBroker.

A host app that sends without building one gets one on first use, from its environment
(``BGJOBS_*``, ``.env``): the settings at once, the broker on the first send (logged once at INFO,
naming the URL with its password masked), the engine on the first query. That is the documented
first-use build; :func:`bgjobs.configure` is the place to say what to use instead.

Nothing below this module reads settings through the broker: code that needs a setting, the
broker or the engine asks :func:`current`, and tests reset everything with :func:`reset`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import dramatiq

from . import clock, outage, registry, tracing
from .broker import build_broker, settings_for
from .coordination import Coordination, coordination_for
from .engines import engine_for
from .redact import mask_logs, mask_url
from .settings import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["Runtime", "close_adapters", "current", "get_broker", "install", "peek", "reset", "set_broker"]

logger = logging.getLogger("bgjobs.runtime")


class Runtime:
    """Settings, broker, engine, coordination, clock and adapters, built once per process."""

    def __init__(
        self, settings: Settings, *, broker: dramatiq.Broker | None = None, worker: bool = False,
        middleware: Iterable[Any] = (), now: Callable[[], datetime] = clock.now,
        adapters: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        outage.watch(settings.broker_url, settings.coordination_url)  # how its outage lines name them
        self.worker = worker
        self.now = now
        #: What the host configured: ports (``mailer``, ...) and hooks (``recipient``, ...).
        self.adapters: dict[str, Any] = adapters if adapters is not None else {}
        self.lock = threading.RLock()
        self._middleware = list(middleware)
        self._broker: dramatiq.Broker | None = None
        mask_logs()
        if tracing.enabled(settings):
            # Now, not when the broker is built: work deferred before the first send (an outbox row,
            # a webhook published to the lanes) keeps the trace it was deferred in.
            tracing.switch_on()
        if broker is not None:
            self._attach(broker)

    def __repr__(self) -> str:
        built = "built" if self._broker is not None else "not built"
        return f"Runtime(broker={mask_url(self.settings.broker_url)} {built})"

    @property
    def broker(self) -> dramatiq.Broker:
        """The broker, built from settings on first use (a host app's first send)."""
        if self._broker is not None:
            return self._broker
        with self.lock:
            if self._broker is None:
                url = mask_url(self.settings.broker_url)
                logger.info("bgjobs: building the broker for %s on first use", url)
                self._attach(build_broker(self.settings, worker=self.worker, middleware=self._middleware))
            assert self._broker is not None
            return self._broker

    @property
    def built_broker(self) -> dramatiq.Broker | None:
        """The broker if it is built; never builds one."""
        return self._broker

    def _attach(self, broker: dramatiq.Broker) -> None:
        self._broker = broker
        dramatiq.set_broker(broker)
        for actor in registry.registered().values():
            actor.bind(broker, self.settings)

    @cached_property
    def engine(self) -> Engine:
        """The engine for ``settings.database_url`` (one per URL per process)."""
        return engine_for(self.settings.database_url)

    @cached_property
    def coordination(self) -> Coordination:
        """Leases, mutexes, first-time keys and wake-ups, on the broker's Redis or in this process."""
        return coordination_for(self.broker)


_lock = threading.RLock()
_current: Runtime | None = None


def current() -> Runtime:
    """The process's runtime; the first call without one builds it from the environment."""
    global _current
    found = _current  # the hot path: every send and every job asks; no lock once there is one
    if found is not None:
        return found
    with _lock:
        if _current is None:
            _current = Runtime(get_settings())
        return _current


def peek() -> Runtime | None:
    """The runtime if one exists; never builds one."""
    return _current


def install(runtime: Runtime | None) -> Runtime | None:
    """Make ``runtime`` the process's runtime (None: none until next used); returns the one it replaces."""
    global _current
    with _lock:
        previous, _current = _current, runtime
        return previous


def reset() -> None:
    """Forget the runtime and the cached environment, closing adapters that hold connections.

    For tests: the next :func:`current` reads the environment again.
    """
    global _current
    with _lock:
        previous, _current = _current, None
        get_settings.cache_clear()
    if previous is not None:
        close_adapters(list(previous.adapters.values()))
        built = previous.built_broker
        if built is not None and hasattr(built, "connections"):  # RabbitMQ's AMQP connections
            built.close()


def close_adapters(adapters: list[Any]) -> None:
    """Close each adapter that holds connections, once (a channel's providers are kept as a list too)."""
    seen: set[int] = set()
    for adapter in [a for item in adapters for a in (item if isinstance(item, list) else [item])]:
        close = getattr(adapter, "close", None)
        if callable(close) and not isinstance(adapter, type) and id(adapter) not in seen:
            seen.add(id(adapter))
            close()


def get_broker() -> dramatiq.Broker:
    """The current runtime's broker (built on first use; see the module's notes)."""
    return current().broker


def set_broker(broker: dramatiq.Broker) -> dramatiq.Broker:
    """Run on ``broker`` (and the settings it was built with), keeping the adapters configured so far."""
    with _lock:
        previous = _current
        adapters = previous.adapters if previous is not None else {}
        worker = previous.worker if previous is not None else False
        install(Runtime(settings_for(broker), broker=broker, worker=worker, adapters=adapters))
    return broker
