"""Builds the one broker bgjobs uses, from settings, before any actor is bound to it.

``redis://``, ``rediss://`` and ``unix://`` URLs give :class:`BgjobsRedisBroker`;
``amqp://`` gives Dramatiq's RabbitMQ broker (``pip install 'bgjobs[rabbitmq]'``);
``stub://`` gives Dramatiq's in-memory StubBroker, for tests.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, default_middleware

from .errors import ConfigurationError
from .middleware import DeadLetterReasons, Maintenance, OutboxRelay
from .redis_broker import BgjobsRedisBroker
from .settings import Settings, get_settings
from .typed import QUEUES, registered

__all__ = [
    "build_broker",
    "current",
    "current_settings",
    "forget",
    "get_broker",
    "set_broker",
    "settings_for",
]

_lock = threading.RLock()
_broker: dramatiq.Broker | None = None
_settings: weakref.WeakKeyDictionary[dramatiq.Broker, Settings] = weakref.WeakKeyDictionary()


def settings_for(broker: dramatiq.Broker) -> Settings:
    """The settings a broker was built from (the process's settings for a broker built elsewhere)."""
    return _settings.get(broker) or get_settings()


def _middleware(settings: Settings, *, worker: bool) -> list[Any]:
    stack: list[Any] = [m() for m in default_middleware]
    stack += [CurrentMessage(), DeadLetterReasons()]
    if worker and settings.metrics.enabled:
        from .observability import Metrics

        stack.append(Metrics())
    if worker and settings.outbox.relay_in_worker:
        stack.append(OutboxRelay())
    return stack


def build_broker(settings: Settings, *, worker: bool = False) -> dramatiq.Broker:
    """A new broker for ``settings.broker_url`` with bgjobs's middleware and family queues.

    Args:
        worker: add what only a worker process needs (maintenance, metrics).

    Raises:
        ConfigurationError: the URL scheme is not supported, or its extra is missing.
    """
    url = settings.broker_url
    middleware = _middleware(settings, worker=worker)
    broker: dramatiq.Broker
    if url.startswith(("redis://", "rediss://", "unix://")):
        if worker:
            middleware.append(Maintenance())
        broker = BgjobsRedisBroker(url=url, worker=settings.worker, middleware=middleware)
    elif url.startswith(("amqp://", "amqps://")):
        try:
            from dramatiq.brokers.rabbitmq import RabbitmqBroker
        except ImportError:
            raise ConfigurationError(
                "BGJOBS_BROKER_URL is amqp:// but pika is missing: pip install 'bgjobs[rabbitmq]'"
            ) from None
        broker = RabbitmqBroker(url=url, middleware=middleware)
    elif url.startswith("stub://"):
        broker = StubBroker(middleware=middleware)
        broker.emit_after("process_boot")
    else:
        raise ConfigurationError(
            f"BGJOBS_BROKER_URL={url!r}: use redis://, rediss://, unix://, amqp:// or stub://"
        )
    _settings[broker] = settings
    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker


def set_broker(broker: dramatiq.Broker) -> dramatiq.Broker:
    """Make ``broker`` the one bgjobs (and Dramatiq) use, and bind every typed actor to it."""
    global _broker
    with _lock:
        _broker = broker
        dramatiq.set_broker(broker)
        for typed in registered().values():
            typed.bind(broker)
    return broker


def forget() -> None:
    """Drop the broker, so the next send builds one from settings again (for tests)."""
    global _broker
    with _lock:
        _broker = None


def current() -> dramatiq.Broker | None:
    """The broker, if one was built or set; never builds one."""
    return _broker


def current_settings() -> Settings:
    """The settings of the current broker (a worker's, a test's), else the environment's.

    Every family reads its settings here, so a stub broker built with its own settings is
    honoured everywhere, not only where the broker is at hand.
    """
    broker = current()
    if broker is not None:
        return settings_for(broker)
    from .settings import get_settings

    return get_settings()


def get_broker() -> dramatiq.Broker:
    """The broker, built from settings on first use (in host apps, on the first send)."""
    with _lock:
        if _broker is None:
            return set_broker(build_broker(get_settings()))
        return _broker
