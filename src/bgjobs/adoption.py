"""Adopting dead letters that a worker without their actor left, in every worker that has it.

Workers of 0.1 dead-letter a message for an actor they lack at once ("ActorNotFound"); later ones
give it back for a grace period, then dead-letter it as ``unknown_actor``. In a rolling deploy
either can leave a letter that a worker of the new release could run. Each worker process looks,
from its maintenance thread every :data:`EVERY_S`, at the dead letters of its queues that failed
since it last looked (from a grace period before it started), and requeues those. Reading by score
from a cursor, it reads only what is new, whatever the size of the set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .deadletters import DeadLetter, failed_since, requeue

__all__ = ["EVERY_S", "adopt", "adopter"]

logger = logging.getLogger("bgjobs.worker")

#: How often each worker process looks.
EVERY_S = 5.0
#: How a worker of an earlier release named the cause, when it dead-lettered a message at once.
NOT_FOUND = "ActorNotFound: "


def _lacked(letter: DeadLetter) -> bool:
    """Whether a dead letter failed only because the worker that took it lacked its actor."""
    return letter.kind == "unknown_actor" or f"{NOT_FOUND}{letter.actor}" in letter.reason


def adopt(broker: Any, cursors: dict[str, int]) -> None:
    """Requeue the dead letters of this worker's queues, failed at or after each queue's cursor
    (epoch ms; its default under ``""``), that failed only because the worker that took them lacked
    an actor this one declares; move each cursor to the latest failure read, so the next call
    reads only what is new.

    Safe in every process at once: a letter is requeued by one of them (see
    :func:`bgjobs.deadletters.requeue`).
    """
    queues = sorted({q.removesuffix(".DQ") for q in broker.get_declared_queues() if not q.endswith(".XQ")})
    adopted: list[DeadLetter] = []
    for queue in queues:
        read = failed_since(queue, after_ms=cursors.get(queue, cursors[""]), broker=broker)
        adopted += [letter for letter in read if letter.actor in broker.actors and _lacked(letter)]
        if read:
            cursors[queue] = int(read[-1].failed_at.timestamp() * 1000)
    if adopted:
        moved = requeue(adopted, broker=broker)
        if moved:
            names = ", ".join(sorted({letter.actor for letter in adopted}))
            logger.warning("requeued %d dead letter(s) that a worker without their actor left (%s): a "
                           "rolling deploy; this worker has it", moved, names)  # fmt: skip


def adopter(broker: Any, *, grace_s: float) -> Callable[[], None]:
    """What the maintenance thread runs: :func:`adopt` from where the last call ended, starting a
    grace period before now (letters an old worker left before this one started)."""
    cursors = {"": int((time.time() - grace_s) * 1000)}
    return lambda: adopt(broker, cursors)
