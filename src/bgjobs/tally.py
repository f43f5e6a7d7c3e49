"""One tally buffer for every bgjobs metric of a process: counters, gauges and histograms.

prometheus-client in multiprocess mode takes one lock shared by every value of the process on
each update, and calls ``getpid()``; with eight worker threads that lock convoys and costs about
90 µs of CPU per message (``benchmarks/overhead.py``). So an update here only appends an event
to a deque (atomic in CPython, no lock), and one thread per worker process aggregates the events
and applies them every :data:`FLUSH_S` seconds, and at shutdown. A scrape sees them at most that
late. Before a worker starts the flusher (in a host process), updates are applied at once.

prometheus-client chooses multiprocess mode when it is first imported, so the values behind a
metric are made on first use, never at import (see :mod:`bgjobs.metrics_files`).
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

__all__ = ["FLUSH_S", "Metric", "counter", "flush", "gauge", "histogram", "start", "stop"]

logger = logging.getLogger("bgjobs.metrics")

FLUSH_S = 1.0

_INC, _SET, _OBSERVE = "inc", "set", "observe"


class Metric:
    """A named metric whose updates go through the tally; ``metric.labels(...).inc()`` as usual."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._value: Any = None
        self._lock = threading.Lock()

    def value(self) -> Any:
        """The prometheus-client object, made on first use."""
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._make()
        return self._value

    def labels(self, *values: str) -> _Child:
        return _Child(self, tuple(values))


class _Child:
    __slots__ = ("labels", "metric")

    def __init__(self, metric: Metric, labels: tuple[str, ...]) -> None:
        self.metric, self.labels = metric, labels

    def inc(self, amount: float = 1) -> None:
        _add(self.metric, self.labels, _INC, amount)

    def dec(self, amount: float = 1) -> None:
        _add(self.metric, self.labels, _INC, -amount)

    def set(self, value: Any) -> None:
        _add(self.metric, self.labels, _SET, value)

    def observe(self, value: float) -> None:
        _add(self.metric, self.labels, _OBSERVE, value)


_events: deque[tuple[Metric, tuple[str, ...], str, Any]] = deque()
_flush_lock = threading.Lock()
_stop = threading.Event()
_flusher: threading.Thread | None = None


def _apply(metric: Metric, labels: tuple[str, ...], op: str, amount: Any) -> None:
    child = metric.value().labels(*labels)
    if op == _INC:
        if amount >= 0:
            child.inc(amount)
        else:
            child.dec(-amount)
    elif op == _SET:
        child.set(amount)
    else:
        child.observe(amount)


def _add(metric: Metric, labels: tuple[str, ...], op: str, amount: Any) -> None:
    if _flusher is None:
        _apply(metric, labels, op, amount)
    else:
        _events.append((metric, labels, op, amount))


def flush() -> None:
    """Apply the buffered events: sums for counters and gauge moves, the last value set, every observation."""
    sums: Counter[tuple[Metric, tuple[str, ...]]] = Counter()
    latest: dict[tuple[Metric, tuple[str, ...]], Any] = {}
    observed: dict[tuple[Metric, tuple[str, ...]], list[float]] = {}
    with _flush_lock:
        for _ in range(len(_events)):
            metric, labels, op, amount = _events.popleft()
            if op == _INC:
                sums[metric, labels] += amount
            elif op == _SET:
                latest[metric, labels] = amount
            else:
                observed.setdefault((metric, labels), []).append(amount)
    for (metric, labels), amount in sums.items():
        if amount:
            _apply(metric, labels, _INC, amount)
    for (metric, labels), value in latest.items():
        _apply(metric, labels, _SET, value)
    for (metric, labels), values in observed.items():
        _observe_all(metric.value().labels(*labels), values)


def _observe_all(child: Any, values: list[float]) -> None:
    """Every observation of one histogram's child, as ``observe`` would record them one by one, but
    with one update of its sum and one per bucket hit: a multiprocess value takes the process's
    lock and checks its pid on each update, and a worker observes one duration per job."""
    bounds, buckets, total = (getattr(child, n, None) for n in ("_upper_bounds", "_buckets", "_sum"))
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:  # not the histogram this was written for: one by one
            child.observe(value)
        return
    total.inc(sum(values))
    # observe() counts a value in the first bucket whose bound is not below it (NaN in none)
    for i, n in Counter(bisect_left(bounds, v) for v in values if v == v).items():
        buckets[i].inc(n)


def _loop() -> None:
    while not _stop.wait(FLUSH_S):
        try:
            flush()
        except Exception:
            logger.exception("could not update metrics")


def start() -> None:
    """Buffer from now on and flush every :data:`FLUSH_S` seconds (a worker process, once booted)."""
    global _flusher
    with _flush_lock:
        if _flusher is None:
            _stop.clear()
            _flusher = threading.Thread(target=_loop, name="bgjobs-metrics", daemon=True)
            _flusher.start()


def stop() -> None:
    """Stop the flusher and apply what is left (a worker's shutdown)."""
    global _flusher
    _stop.set()
    flush()
    _flusher = None


_metrics_lock = threading.Lock()
_metrics: dict[str, Metric] = {}


def _named(name: str, make: Callable[[], Any]) -> Metric:
    with _metrics_lock:
        found = _metrics.get(name)
        if found is None:
            found = _metrics[name] = Metric(make)
        return found


def counter(name: str, documentation: str, labels: tuple[str, ...]) -> Metric:
    """A ``bgjobs_*`` counter. In a worker its values go to the multiprocess files the exposition
    process reads; in a host process they stay in memory and are never exported."""

    def make() -> Any:
        import prometheus_client as prom

        return prom.Counter(name, documentation, list(labels), registry=prom.CollectorRegistry())

    return _named(name, make)


def gauge(name: str, documentation: str, labels: tuple[str, ...], *, mode: str = "mostrecent") -> Metric:
    """A ``bgjobs_*`` gauge; across worker processes ``mode`` combines them (the latest value wins)."""

    def make() -> Any:
        import prometheus_client as prom

        return prom.Gauge(name, documentation, list(labels), registry=prom.CollectorRegistry(),
                          multiprocess_mode=mode)  # type: ignore[arg-type]  # fmt: skip

    return _named(name, make)


def histogram(
    name: str, documentation: str, labels: tuple[str, ...], *, buckets: tuple[float, ...]
) -> Metric:
    """A histogram; every observation is kept and applied at the flush."""

    def make() -> Any:
        import prometheus_client as prom

        return prom.Histogram(name, documentation, list(labels), buckets=buckets,
                              registry=prom.CollectorRegistry())  # fmt: skip

    return _named(name, make)
