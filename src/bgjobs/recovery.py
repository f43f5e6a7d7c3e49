"""Work lost with the store's data, sent again as soon as a worker sees the store come back empty.

A Redis that restarts without its data (no persistence, a lost volume, a replica promoted before
it had anything) forgets every message it held, and on RabbitMQ the coordination store forgets
the webhook lanes. The database still knows what was under way: deliveries ``pending``, payouts
``pending``, exports not started. The families' periodic sweeps would find them, but minutes later
(``webhooks.endpoint_health`` every 5 minutes, for deliveries overdue by 5 more).

So the store carries a marker key with a value of its own. Each worker's maintenance pass sets
it if it is missing (``SET NX``) and reads it: a process that sees the value change under it knows
the store lost its data, and one such process per new value (a claim) runs every family's
recovery sweep at once, with no grace, and says so. A process that never saw the marker (a new
store, a new deployment, an upgrade from a release without it) only sets it: the jobs a new
process cannot know to be lost may still be queued. Resending is safe for what the sweeps send:
each family drops copies of a job already done or under way (docs/operating.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import uuid4

__all__ = ["MARKER", "recovery_sweep", "run_sweeps", "watcher"]

logger = logging.getLogger("bgjobs.recovery")

#: The key whose absence says the store is new or came back without its data.
MARKER = "__bgjobs_store__"

_sweeps: dict[str, Callable[[], int]] = {}


def recovery_sweep(name: str) -> Callable[[Callable[[], int]], Callable[[], int]]:
    """Register a family's sweep: it sends again the jobs of work the database shows under way,
    and returns how many it sent."""

    def register(fn: Callable[[], int]) -> Callable[[], int]:
        _sweeps[name] = fn
        return fn

    return register


def run_sweeps() -> dict[str, int | str]:
    """Every registered sweep; a failing one is reported in the result and the others still run."""
    found: dict[str, int | str] = {}
    for name, sweep in sorted(_sweeps.items()):
        try:
            found[name] = sweep()
        except Exception as exc:
            found[name] = f"failed ({type(exc).__name__}: {exc})"
    return found


def watcher(broker: Any) -> Callable[[], None]:
    """What the maintenance thread runs after each pass: set the marker if it is gone, and start
    the sweeps (in a thread of their own: the pass is also this process's heartbeat) when it
    changed under this process."""
    key = broker.key(MARKER)
    seen: list[bytes | None] = [None]

    def check() -> None:
        pipe = broker.client.pipeline(transaction=False)
        pipe.set(key, f"{int(time.time() * 1000)}-{uuid4().hex[:8]}", nx=True).get(key)
        _, now = pipe.execute()
        before, seen[0] = seen[0], now
        if before is None or before == now:
            return
        if not broker.client.set(f"{key}:swept:{now.decode()}", 1, nx=True, ex=86_400):
            return  # another process sweeps for this loss
        logger.warning("the store came back without its data (its bgjobs marker changed); sending again "
                       "what the database shows under way")  # fmt: skip
        threading.Thread(target=_sweep_and_say, name="bgjobs-recovery", daemon=True).start()

    return check


def _sweep_and_say() -> None:
    found = run_sweeps()
    logger.warning("recovery sweeps: %s", " ".join(f"{k}={v}" for k, v in found.items()))
