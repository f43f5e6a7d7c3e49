"""bgjobs_* metrics beside Dramatiq's own, correct across worker processes.

prometheus-client chooses multiprocess mode once, when it is first imported,
and the Dramatiq CLI imports ``bgjobs.actors`` before its process-boot hook sets
``PROMETHEUS_MULTIPROC_DIR``. So nothing here imports prometheus_client at module
level: metrics are created in ``after_process_boot``, and the exposition process
imports it after setting the directory itself.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dramatiq.middleware import prometheus as dramatiq_prometheus

__all__ = ["Metrics", "QueueCollector", "clear_stale_files", "scrape", "serve_metrics"]

logger = logging.getLogger("bgjobs.metrics")

DB_PATH = dramatiq_prometheus.DB_PATH
_PID_FILE = re.compile(r"_(\d+)\.db$")


def _use_multiprocess_dir() -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = DB_PATH
    os.environ["prometheus_multiproc_dir"] = DB_PATH


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale_files(directory: str = DB_PATH) -> int:
    """Remove metric files left by processes that no longer run; returns how many."""
    removed = 0
    for path in Path(directory).glob("*.db"):
        match = _PID_FILE.search(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def outcome(message: Any, *, acked: bool) -> str:
    """The bounded outcome label: succeeded, retried, or dead_lettered."""
    if not acked:
        return "dead_lettered"
    return "retried" if getattr(message, "_exception", None) is not None else "succeeded"


class Metrics(dramatiq_prometheus.Prometheus):
    """Dramatiq's Prometheus middleware plus bgjobs's series and its own exposition server."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs_total: Any = None

    @property
    def forks(self) -> list[Any]:
        return [serve_metrics]

    def after_process_boot(self, broker: Any) -> None:
        os.makedirs(DB_PATH, exist_ok=True)
        clear_stale_files()
        _use_multiprocess_dir()
        super().after_process_boot(broker)  # type: ignore[no-untyped-call]
        import prometheus_client as prom

        self.jobs_total = prom.Counter(
            "bgjobs_jobs_total",
            "Messages finished by bgjobs actors, by family (queue), actor and outcome.",
            ["family", "actor", "outcome"],
            registry=prom.CollectorRegistry(),
        )

    def _count(self, message: Any, *, acked: bool) -> None:
        if self.jobs_total is not None:
            family = message.queue_name.removesuffix(".DQ")
            self.jobs_total.labels(family, message.actor_name, outcome(message, acked=acked)).inc()

    def after_ack(self, broker: Any, message: Any) -> None:
        self._count(message, acked=True)

    def after_nack(self, broker: Any, message: Any) -> None:
        super().after_nack(broker, message)  # type: ignore[no-untyped-call]
        self._count(message, acked=False)


class QueueCollector:
    """Reads queue depth and dead letters from Redis at scrape time."""

    def __init__(self, client: Any, namespace: str, queues: list[str]) -> None:
        self.client = client
        self.namespace = namespace
        self.queues = queues

    def _queues(self) -> list[str]:
        from .redis_broker import QUEUES_KEY

        found = {q.decode() for q in self.client.smembers(f"{self.namespace}:{QUEUES_KEY}")}
        return sorted(found | set(self.queues))

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
        try:
            queues = self._queues()
            pipe = self.client.pipeline(transaction=False)
            for q in queues:
                key = f"{self.namespace}:{q}"
                pipe.llen(key).hlen(f"{key}.msgs").hlen(f"{key}.DQ.msgs").zcard(f"{key}.XQ")
            values = pipe.execute()
        except Exception:
            logger.exception("could not read queue sizes from Redis")
            return
        for i, q in enumerate(queues):
            ready, stored, delayed, dead = values[4 * i : 4 * i + 4]
            families["ready"].add_metric([q], ready)
            families["delayed"].add_metric([q], delayed)
            families["in_flight"].add_metric([q], max(stored - ready, 0))
            families["dead"].add_metric([q], dead)
        yield from families.values()


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
    _use_multiprocess_dir()
    import prometheus_client as prom
    from prometheus_client import multiprocess

    from .settings import get_settings
    from .typed import QUEUES

    settings = get_settings()
    registry = prom.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=DB_PATH)  # type: ignore[no-untyped-call]
    if settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        import redis

        client = redis.Redis.from_url(settings.broker_url)
        registry.register(QueueCollector(client, settings.worker.namespace, list(QUEUES)))
    return registry


def serve_metrics() -> int:
    """The exposition process Dramatiq forks: ``/metrics`` on the configured host and port."""
    import prometheus_client as prom

    from .settings import get_settings

    registry = _registry()
    metrics = get_settings().metrics
    host = os.getenv("dramatiq_prom_host", metrics.host)
    port = int(os.getenv("dramatiq_prom_port", str(metrics.port)))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            output = prom.generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", prom.CONTENT_TYPE_LATEST)
            self.end_headers()
            self.wfile.write(output)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug(format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    logger.info("serving metrics on http://%s:%d/metrics", host, port)
    server.serve_forever()
    return 0
