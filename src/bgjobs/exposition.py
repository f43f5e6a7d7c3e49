"""``/metrics``: the exposition process a worker command forks, and the queue collector it adds.

The queue gauges are read at scrape time (``QueueCollector``: Redis's keys, or RabbitMQ's counts and
the coordination store's dead letters); the rest is summed from
the worker processes' multiprocess files. The HTTP server is prometheus-client's own. It binds to
127.0.0.1 by default: exposing metrics is the operator's choice.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .metrics_files import use_multiprocess_dir
from .redis_connections import client_for, is_redis_url

if TYPE_CHECKING:
    from .operated import OperatedBroker

__all__ = ["CircuitCollector", "KeyCollector", "QueueCollector", "scrape", "serve_metrics"]

logger = logging.getLogger("bgjobs.metrics")


class QueueCollector:
    """Reads queue depth and dead letters from the deployment at scrape time."""

    def __init__(self, broker: OperatedBroker, queues: list[str]) -> None:
        self.broker = broker
        self.queues = queues

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        families = {
            "ready": GaugeMetricFamily(
                "bgjobs_queue_depth", "Messages waiting in the queue.", labels=["queue"]
            ),
            "delayed": GaugeMetricFamily(
                "bgjobs_queue_delayed", "Delayed messages (retries, ETAs) of the queue.", labels=["queue"]
            ),
            "in_flight": GaugeMetricFamily(
                "bgjobs_queue_in_flight",
                "Messages fetched by workers and not yet finished.",
                labels=["queue"],
            ),
            "dead": GaugeMetricFamily(
                "bgjobs_dead_letters", "Dead-lettered messages kept for the queue.", labels=["queue"]
            ),
        }
        from .operated import registered_queues

        broker = self.broker
        try:
            sizes = broker.queue_sizes(registered_queues(broker.client, broker.namespace, self.queues))
        except Exception as exc:
            logger.error("could not read queue sizes (%s: %s)", type(exc).__name__, exc)
            return
        for q, size in sizes.items():
            families["ready"].add_metric([q], size.ready)
            families["delayed"].add_metric([q], size.delayed)
            if size.in_flight is not None:
                families["in_flight"].add_metric([q], size.in_flight)
            families["dead"].add_metric([q], size.dead)
        yield from families.values()


class CircuitCollector:
    """Reads each notification provider's circuit (open or closed) from the coordination store."""

    def __init__(self, coordination: Any) -> None:
        self.coordination = coordination

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from .circuits import circuit_states

        family = GaugeMetricFamily(
            "bgjobs_notification_circuit_open",
            "1 while a notification provider is skipped after failing (its backup takes its messages).",
            labels=["channel", "provider"],
        )
        try:
            states = circuit_states(self.coordination)
        except Exception as exc:
            logger.error("could not read notification circuits (%s: %s)", type(exc).__name__, exc)
            return
        for (channel, provider), opened in sorted(states.items()):
            family.add_metric([channel, provider], 1.0 if opened else 0.0)
        yield family


class KeyCollector:
    """Per-key limits from the coordination store: each limited actor's busy keys and the jobs
    waiting in its keys' lanes (they are in no queue, so the queue gauges do not count them)."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from .keying import keyed_of

        busy = GaugeMetricFamily(
            "bgjobs_keys_busy", "Keys holding a slot of a per-key cap.", labels=["actor"]
        )
        waiting = GaugeMetricFamily(
            "bgjobs_key_waiting", "Jobs waiting in their keys' lanes for a slot or a turn.", labels=["actor"]
        )
        try:
            totals = keyed_of(self.broker).totals()
        except Exception as exc:
            logger.error("could not read per-key limits (%s: %s)", type(exc).__name__, exc)
            return
        for actor, (keys, jobs) in sorted(totals.items()):
            busy.add_metric([actor], keys)
            waiting.add_metric([actor], jobs)
        yield busy
        yield waiting


def scrape(port: int, *, host: str = "127.0.0.1", timeout: float = 15.0) -> str:
    """Fetch ``/metrics``, waiting for the exposition process (it starts just after the workers)."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
                return str(response.read().decode())
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _registry() -> Any:
    path = use_multiprocess_dir()
    import prometheus_client as prom
    from prometheus_client import multiprocess

    from .registry import QUEUES
    from .settings import get_settings

    settings = get_settings()
    registry = prom.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    broker: OperatedBroker | None = None
    if is_redis_url(settings.broker_url):
        from .redis_broker import BgjobsRedisBroker

        client = client_for(settings.broker_url, settings.redis_tls)
        broker = BgjobsRedisBroker(client=client, worker=settings.worker)
    elif settings.broker_url.startswith(("amqp://", "amqps://")):
        from .rabbitmq_broker import rabbitmq_broker

        broker = rabbitmq_broker(settings)
    if broker is not None:
        from .coordination import coordination_for

        registry.register(QueueCollector(broker, list(QUEUES)))
        registry.register(CircuitCollector(coordination_for(broker)))
        registry.register(KeyCollector(broker))
    return registry


def serve_metrics() -> int:
    """The exposition process Dramatiq forks: ``/metrics`` on the configured host and port."""
    import prometheus_client as prom

    from .settings import get_settings

    registry = _registry()
    metrics = get_settings().metrics
    host = os.getenv("dramatiq_prom_host", metrics.host)
    port = int(os.getenv("dramatiq_prom_port", str(metrics.port)))
    try:
        prom.start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        logger.error(
            "cannot serve metrics on %s:%d (%s): another process holds the port; move it with "
            "BGJOBS_METRICS__PORT (or dramatiq_prom_port), or turn metrics off with "
            "BGJOBS_METRICS__ENABLED=false",
            host, port, exc.strerror or exc,
        )  # fmt: skip
        return 1
    logger.info("serving metrics on http://%s:%d/metrics", host, port)
    threading.Event().wait()  # the server runs in its own thread until this process is stopped
    return 0
