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
import shutil
import tempfile
import threading
from collections import Counter, deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dramatiq.common import current_millis
from dramatiq.middleware import prometheus as dramatiq_prometheus

__all__ = ["Metrics", "QueueCollector", "clear_stale_files", "counter", "gauge", "scrape", "serve_metrics"]

logger = logging.getLogger("bgjobs.metrics")

_counters_lock = threading.Lock()
_counters: dict[str, Any] = {}


def counter(name: str, documentation: str, labels: tuple[str, ...]) -> Any:
    """A family's ``bgjobs_*`` counter, made on first use (after the worker chose multiprocess mode).

    In a worker its values go to the multiprocess files the exposition process reads; in a host
    process they stay in memory and are never exported.
    """
    with _counters_lock:
        found = _counters.get(name)
        if found is None:
            import prometheus_client as prom

            found = prom.Counter(name, documentation, list(labels), registry=prom.CollectorRegistry())
            _counters[name] = found
        return found


def gauge(name: str, documentation: str, labels: tuple[str, ...]) -> Any:
    """A family's ``bgjobs_*`` gauge, made on first use; across worker processes the latest value wins."""
    with _counters_lock:
        found = _counters.get(name)
        if found is None:
            import prometheus_client as prom

            found = prom.Gauge(
                name,
                documentation,
                list(labels),
                registry=prom.CollectorRegistry(),
                multiprocess_mode="mostrecent",
            )
            _counters[name] = found
        return found


_PID_FILE = re.compile(r"_(\d+)\.db$")
_COMMAND_DIR = re.compile(r"^bgjobs-prometheus-(\d+)$")


def metrics_dir() -> str:
    """Where this worker command's processes keep their metric files.

    ``dramatiq_prom_db`` when set; otherwise a directory of this command's own, named for its
    main process (the parent of every worker and fork process it starts). Dramatiq's default,
    one directory per machine, made two worker commands on a host report each other's series.
    """
    return os.getenv("dramatiq_prom_db") or os.path.join(
        tempfile.gettempdir(), f"bgjobs-prometheus-{os.getppid()}"
    )


def _use_multiprocess_dir() -> str:
    path = metrics_dir()
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ["prometheus_multiproc_dir"] = path
    # Dramatiq's middleware reads its module's DB_PATH when its hooks run.
    dramatiq_prometheus.DB_PATH = path
    return path


def clear_dead_commands(parent: str | None = None) -> int:
    """Remove the metric directories of worker commands that no longer run; returns how many."""
    removed = 0
    for path in Path(parent or tempfile.gettempdir()).glob("bgjobs-prometheus-*"):
        match = _COMMAND_DIR.match(path.name)
        if match and path.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale_files(directory: str | None = None) -> int:
    """Remove metric files left by processes that no longer run; returns how many."""
    removed = 0
    for path in Path(directory or metrics_dir()).glob("*.db"):
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
    """Dramatiq's Prometheus series plus bgjobs's, buffered on the hot path.

    In multiprocess mode every update to a prometheus-client value takes one lock shared by
    all values of the process and calls ``getpid()``; with eight worker threads that lock
    convoys and cost about 90 µs of CPU per message here (``benchmarks/overhead.py``). So the
    per-message hooks only append an event to a deque (atomic in CPython, no lock), and one
    thread aggregates and applies them every ``FLUSH_S`` seconds, and at shutdown. Series
    names, labels and meanings are Dramatiq's; a scrape sees them at most ``FLUSH_S`` late.
    """

    FLUSH_S = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.jobs_total: Any = None
        self._events: deque[tuple[Any, ...]] = deque()
        self._in_progress: Counter[tuple[str, str]] = Counter()  # the flusher's own
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    @property
    def forks(self) -> list[Any]:
        return [serve_metrics]

    def after_process_boot(self, broker: Any) -> None:
        path = _use_multiprocess_dir()
        clear_stale_files(path)
        if not os.getenv("dramatiq_prom_db"):
            clear_dead_commands()
        super().after_process_boot(broker)  # type: ignore[no-untyped-call]
        import prometheus_client as prom

        self.jobs_total = prom.Counter(
            "bgjobs_jobs_total",
            "Messages finished by bgjobs actors, by family (queue), actor and outcome.",
            ["family", "actor", "outcome"],
            registry=prom.CollectorRegistry(),
        )
        self._flusher = threading.Thread(target=self._flush_loop, name="bgjobs-metrics", daemon=True)
        self._flusher.start()

    def before_process_message(self, broker: Any, message: Any) -> None:
        labels = (message.queue_name, message.actor_name)
        if message.message_id in self.delayed_messages:
            self.delayed_messages.remove(message.message_id)
            self.inprogress_delayed_messages.labels(*labels).dec()
        self._events.append((_STARTED, labels))
        self.message_start_times[message.message_id] = current_millis()

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        labels = (message.queue_name, message.actor_name)
        started = self.message_start_times.pop(message.message_id, None)
        duration = None if started is None else current_millis() - started
        self._events.append((_FINISHED, labels, duration, exception is not None))

    after_skip_message = after_process_message

    def _count(self, message: Any, *, acked: bool) -> None:
        key = (message.queue_name.removesuffix(".DQ"), message.actor_name, outcome(message, acked=acked))
        self._events.append((_JOB, key))

    def after_ack(self, broker: Any, message: Any) -> None:
        # A delayed message (a retry, or sent with a delay) is acked once on its delay queue when
        # it moves to its queue, and again when it is processed: only the second is a job's outcome.
        if not message.queue_name.endswith(".DQ"):
            self._count(message, acked=True)

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        # Dramatiq counts a retry when it is enqueued on the delay queue (with its backoff) and
        # again when it moves from there to its queue (no delay): count only the first.
        if delay is not None:
            super().after_enqueue(broker, message, delay)  # type: ignore[no-untyped-call]

    def after_nack(self, broker: Any, message: Any) -> None:
        super().after_nack(broker, message)  # type: ignore[no-untyped-call]
        self._count(message, acked=False)

    def flush(self) -> None:
        """Apply the tallies to the prometheus-client values (and so to the multiprocess files)."""
        if self.jobs_total is None:
            return
        totals: Counter[tuple[str, str]] = Counter()
        errors: Counter[tuple[str, str]] = Counter()
        jobs: Counter[tuple[str, str, str]] = Counter()
        durations: list[tuple[tuple[str, str], int]] = []
        with self._flush_lock:
            for _ in range(len(self._events)):
                event = self._events.popleft()
                if event[0] is _STARTED:
                    self._in_progress[event[1]] += 1
                elif event[0] is _FINISHED:
                    _, labels, duration, failed = event
                    totals[labels] += 1
                    errors[labels] += failed
                    if duration is not None:
                        durations.append((labels, duration))
                        self._in_progress[labels] -= 1
                else:
                    jobs[event[1]] += 1
            in_progress = dict(self._in_progress)
        for labels, n in totals.items():
            self.total_messages.labels(*labels).inc(n)
        for labels, n in errors.items():
            if n:
                self.total_errored_messages.labels(*labels).inc(n)
        for key, n in jobs.items():
            self.jobs_total.labels(*key).inc(n)
        for labels, ms in durations:
            self.message_durations.labels(*labels).observe(ms)
        for labels, n in in_progress.items():
            self.inprogress_messages.labels(*labels).set(n)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.FLUSH_S):
            try:
                self.flush()
            except Exception:
                logger.exception("could not update metrics")

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._stop.set()
        self.flush()
        super().after_worker_shutdown(broker, worker)  # type: ignore[no-untyped-call]


_STARTED, _FINISHED, _JOB = "started", "finished", "job"


class QueueCollector:
    """Reads queue depth and dead letters from Redis at scrape time."""

    def __init__(self, client: Any, namespace: str, queues: list[str]) -> None:
        self.client = client
        self.namespace = namespace
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
        from .redis_broker import queue_sizes, registered_queues

        try:
            sizes = queue_sizes(
                self.client, self.namespace, registered_queues(self.client, self.namespace, self.queues)
            )
        except Exception:
            logger.exception("could not read queue sizes from Redis")
            return
        for q, size in sizes.items():
            families["ready"].add_metric([q], size.ready)
            families["delayed"].add_metric([q], size.delayed)
            families["in_flight"].add_metric([q], size.in_flight)
            families["dead"].add_metric([q], size.dead)
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
    path = _use_multiprocess_dir()
    import prometheus_client as prom
    from prometheus_client import multiprocess

    from .registry import QUEUES
    from .settings import get_settings

    settings = get_settings()
    registry = prom.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
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
