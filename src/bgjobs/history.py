"""A short history in Redis, for the console: each queue per minute, each actor per minute and hour.

Each worker process counts the jobs it finishes, and each run's actor, time and outcome (an append
to a deque: no lock on the hot path). On its maintenance pass it adds them up into
``<ns>:bgjobs-history:done:<minute>`` (jobs per queue), writes each queue's ready length to
``<ns>:bgjobs-history:ready:<minute>``, and adds each actor's runs, failures and a histogram of run
times to ``<ns>:bgjobs-history:actors:<minute>`` and ``...:actors-h:<hour>``. Minutes are kept two
hours and hours a day and a bit, so the history costs a few kilobytes per actor whatever the traffic;
nothing reads it but the console. Run-time percentiles are read from the histogram: each is the
upper bound of the bucket it falls in (10 ms, 25 ms, 50 ms, ...), as Prometheus's are.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

__all__ = ["BOUNDS_MS", "KEEP_HOURS_S", "KEEP_S", "actor_series", "finished", "ran", "record", "series"]

#: How long a minute's counts are kept.
KEEP_S = 2 * 3600
#: How long an hour's counts of each actor are kept.
KEEP_HOURS_S = 26 * 3600
#: The run-time histogram's bucket bounds, in ms (a last bucket holds the longer runs).
BOUNDS_MS = (10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000)

#: Bounded: a process without the maintenance pass (the stub broker's) never drains them.
_finished: deque[str] = deque(maxlen=100_000)
_ran: deque[tuple[str, float, bool]] = deque(maxlen=100_000)


def finished(queue: str) -> None:
    """Count one finished job of ``queue`` (called by the metrics middleware)."""
    _finished.append(queue)


def ran(actor: str, ms: float, *, failed: bool) -> None:
    """Note one run of ``actor``: how long it took and whether it raised (the metrics middleware)."""
    _ran.append((actor, ms, failed))


def _bucket(ms: float) -> int:
    return next((i for i, bound in enumerate(BOUNDS_MS) if ms <= bound), len(BOUNDS_MS))


def _drain_runs() -> Counter[str]:
    """This process's runs since the last pass, as the fields of an actor hash."""
    fields: Counter[str] = Counter()
    while True:
        try:
            actor, ms, failed = _ran.popleft()
        except IndexError:
            return fields
        fields[f"{actor}|done"] += 1
        fields[f"{actor}|b{_bucket(ms)}"] += 1
        if failed:
            fields[f"{actor}|failed"] += 1


def _key(namespace: str, kind: str, minute: int) -> str:
    return f"{namespace}:bgjobs-history:{kind}:{minute}"


def record(client: Any, namespace: str, ready: dict[str, int] | None, *, now: float | None = None) -> None:
    """Add this process's finished jobs to the current minute and note each queue's ``ready`` length
    (when given: the maintenance pass reads sizes every few seconds, not on every pass)."""
    minute = int((time.time() if now is None else now) // 60)
    done: Counter[str] = Counter()
    while True:
        try:
            done[_finished.popleft()] += 1
        except IndexError:
            break
    done_key, ready_key = _key(namespace, "done", minute), _key(namespace, "ready", minute)
    pipe = client.pipeline(transaction=False)
    for name, n in done.items():
        pipe.hincrby(done_key, name, n)
    runs = _drain_runs()
    if runs:
        for key, keep in ((_key(namespace, "actors", minute), KEEP_S),
                          (_key(namespace, "actors-h", minute // 60), KEEP_HOURS_S)):  # fmt: skip
            for field, n in runs.items():
                pipe.hincrby(key, field, n)
            pipe.expire(key, keep)
    if ready:
        pipe.hset(ready_key, mapping=ready)
    pipe.expire(done_key, KEEP_S)
    pipe.expire(ready_key, KEEP_S)
    pipe.execute()


def series(client: Any, namespace: str, queues: list[str], *, minutes: int = 30,
           now: float | None = None) -> dict[str, dict[str, list[int]]]:  # fmt: skip
    """Each queue's last ``minutes`` minutes, oldest first: ``done`` (jobs finished) and ``ready``."""
    last = int((time.time() if now is None else now) // 60)
    span = range(last - minutes + 1, last + 1)
    pipe = client.pipeline(transaction=False)
    for minute in span:
        pipe.hgetall(_key(namespace, "done", minute))
        pipe.hgetall(_key(namespace, "ready", minute))
    found = pipe.execute()
    result: dict[str, dict[str, list[int]]] = {q: {"done": [], "ready": []} for q in queues}
    for i in range(len(span)):
        done, ready = found[2 * i], found[2 * i + 1]
        for q in queues:
            result[q]["done"].append(int(done.get(q.encode(), 0)))
            result[q]["ready"].append(int(ready.get(q.encode(), 0)))
    return result


def _percentile(buckets: list[int], q: float) -> int | None:
    """The upper bound (ms) of the bucket the ``q`` quantile falls in; None without runs."""
    total = sum(buckets)
    if not total:
        return None
    seen = 0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= q * total:
            return BOUNDS_MS[i] if i < len(BOUNDS_MS) else BOUNDS_MS[-1] * 2
    return None


def _figures(fields: dict[str, int], actor: str) -> dict[str, Any]:
    buckets = [fields.get(f"{actor}|b{i}", 0) for i in range(len(BOUNDS_MS) + 1)]
    return {"done": fields.get(f"{actor}|done", 0), "failed": fields.get(f"{actor}|failed", 0),
            "p50_ms": _percentile(buckets, 0.5), "p95_ms": _percentile(buckets, 0.95),
            "buckets": buckets}  # fmt: skip


def actor_series(
    client: Any, namespace: str, *, span: str = "hour", now: float | None = None
) -> dict[str, Any]:
    """Each actor's runs over the last hour (60 minutes) or day (24 hours), oldest first: per point
    ``done`` (runs), ``failed`` (runs that raised), ``p50_ms`` and ``p95_ms``; and the span's totals.

    Raises:
        InvalidPayload: a span other than ``hour`` or ``day``, naming it.
    """
    if span not in ("hour", "day"):
        from .errors import InvalidPayload

        raise InvalidPayload(f"span: {span!r} is not a span; use hour or day")
    minute = int((time.time() if now is None else now) // 60)
    kind, last, points = ("actors", minute, 60) if span == "hour" else ("actors-h", minute // 60, 24)
    steps = list(range(last - points + 1, last + 1))
    seconds = 60 if span == "hour" else 3600
    pipe = client.pipeline(transaction=False)
    for step in steps:
        pipe.hgetall(_key(namespace, kind, step))
    found = [{k.decode(): int(v) for k, v in h.items()} for h in pipe.execute()]
    actors = sorted({field.split("|", 1)[0] for fields in found for field in fields})
    result: dict[str, Any] = {}
    for actor in actors:
        series_of = [_figures(fields, actor) for fields in found]
        total_buckets = [sum(p["buckets"][i] for p in series_of) for i in range(len(BOUNDS_MS) + 1)]
        result[actor] = {
            "points": [{"at": step * seconds, **{k: v for k, v in p.items() if k != "buckets"}}
                       for step, p in zip(steps, series_of, strict=True)],
            "done": sum(p["done"] for p in series_of), "failed": sum(p["failed"] for p in series_of),
            "p50_ms": _percentile(total_buckets, 0.5), "p95_ms": _percentile(total_buckets, 0.95),
        }  # fmt: skip
    return result
