"""A short per-minute history of each queue in Redis, for the console's sparklines.

Each worker process counts the jobs it finishes (an append to a deque: no lock on the hot path)
and, on its maintenance pass, adds them to ``<ns>:bgjobs-history:done:<minute>`` and writes each
queue's ready length to ``<ns>:bgjobs-history:ready:<minute>``. Keys expire after two hours, so
the history costs a few kilobytes whatever the traffic, and nothing reads it but the console.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

__all__ = ["KEEP_S", "finished", "record", "series"]

#: How long a minute's counts are kept.
KEEP_S = 2 * 3600

#: Bounded: a process without the maintenance pass (the stub broker's) never drains it.
_finished: deque[str] = deque(maxlen=100_000)


def finished(queue: str) -> None:
    """Count one finished job of ``queue`` (called by the metrics middleware)."""
    _finished.append(queue)


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
