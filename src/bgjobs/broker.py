"""Builds a broker from settings: bgjobs's middleware and the family queues, no actors.

:mod:`bgjobs.runtime` holds the process's broker and binds the declared actors to it.

``redis://``, ``rediss://``, ``unix://`` and ``redis+sentinel://`` URLs give :class:`BgjobsRedisBroker`
(its client from :func:`bgjobs.redis_connections.client_for`);
``amqp://`` gives :class:`BgjobsRabbitmqBroker` (``pip install 'bgjobs[rabbitmq]'``), with its
coordination store at ``BGJOBS_COORDINATION_URL`` (a Redis: required);
``stub://`` gives Dramatiq's in-memory StubBroker, for tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, default_middleware

from . import tracing
from .batching import Batches
from .broker_settings import remember, settings_for
from .cancelling import Cancels
from .controls import Uniqueness
from .errors import ConfigurationError
from .keying import KeyedLimits
from .middleware import DeadLetterReasons, Maintenance
from .redact import mask_url
from .redis_broker import BgjobsRedisBroker
from .redis_connections import client_for, is_redis_url
from .registry import QUEUES
from .settings import Settings
from .unknown_actors import UnknownActors
from .workflow_steps import Workflows

__all__ = ["ENQUEUE_PATIENCE_S", "build_broker", "settings_for"]

#: How long a worker's enqueue (a retry, a follow-up job) waits out a Redis outage or failover.
ENQUEUE_PATIENCE_S = 30.0


def _middleware(settings: Settings, *, worker: bool) -> list[Any]:
    # Tracing first: Dramatiq runs "after" hooks in reverse, so the job's span is still current
    # when Retries enqueues a retry, and ends after every other middleware is done.
    stack: list[Any] = [UnknownActors(settings.worker.unknown_actor_grace_s)] if worker else []
    stack += tracing.middleware(settings, worker=worker)
    stack += [m() for m in default_middleware]
    stack += [CurrentMessage(), DeadLetterReasons(), Cancels(), Batches(), Workflows(), Uniqueness(),
              KeyedLimits()]
    if worker and settings.metrics.enabled:
        from .observability import Metrics

        stack.append(Metrics())
    return stack


def _rabbitmq(settings: Settings, middleware: list[Any]) -> dramatiq.Broker:
    try:
        from .rabbitmq_broker import rabbitmq_broker
    except ImportError:
        raise ConfigurationError(
            "BGJOBS_BROKER_URL is amqp:// but pika is missing: pip install 'bgjobs[rabbitmq]'"
        ) from None
    return rabbitmq_broker(settings, middleware)


def build_broker(
    settings: Settings, *, worker: bool = False, middleware: Iterable[Any] = ()
) -> dramatiq.Broker:
    """A new broker for ``settings.broker_url`` with bgjobs's middleware and family queues.

    Args:
        worker: add what only a worker process needs (maintenance, metrics).
        middleware: more middleware, after bgjobs's own (the worker adds the outbox relay).

    Raises:
        ConfigurationError: the URL scheme is not supported, or its extra is missing.
    """
    url = settings.broker_url
    redis = is_redis_url(url)
    maintenance = [Maintenance()] if worker and not url.startswith("stub://") else []
    middleware = [*_middleware(settings, worker=worker), *maintenance, *middleware]
    broker: dramatiq.Broker
    if redis:
        client = client_for(url, settings.redis_tls)
        broker = BgjobsRedisBroker(client=client, worker=settings.worker, middleware=middleware)
        replication = settings.redis
        broker.wait_replicas, broker.wait_timeout_ms = replication.wait_replicas, replication.wait_timeout_ms
        if worker:
            broker.patience_s = ENQUEUE_PATIENCE_S
    elif url.startswith(("amqp://", "amqps://")):
        if settings.redis.wait_replicas:
            raise ConfigurationError(
                "BGJOBS_REDIS__WAIT_REPLICAS applies to the Redis broker: RabbitMQ confirms each publish "
                "itself (use quorum queues to replicate them); unset it"
            )
        broker = _rabbitmq(settings, middleware)
    elif url.startswith("stub://"):
        broker = StubBroker(middleware=middleware)
        broker.emit_after("process_boot")
    else:
        raise ConfigurationError(
            f"BGJOBS_BROKER_URL={mask_url(url)!r}: use redis://, rediss://, unix://, redis+sentinel://, "
            "amqp:// or stub://"
        )
    remember(broker, settings)
    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker
