"""How a batch travels with its jobs: the block a send joins, the batch of the running job, and
the middleware that tags sends and counts each job's outcome once (:mod:`bgjobs.batches` is the
public side; :mod:`bgjobs.batch_store` keeps the counts).
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage

from .batch_store import CHUNK, BatchStatus, BatchStore, store_for
from .outage import CONNECTION_ERRORS, patiently, report

__all__ = [
    "BATCH", "CALLBACK_OF", "INDEX", "Batch", "Batches", "building", "carry", "is_cancelled", "running",
]  # fmt: skip

BATCH, INDEX, CALLBACK_OF = "bgjobs_batch", "bgjobs_batch_index", "bgjobs_batch_callback"
#: How long a worker trusts what it last read of a batch's cancellation.
CANCEL_CHECK_S = 0.5
#: How long counting a job's outcome waits out a Redis outage or failover before it gives up.
SETTLE_PATIENCE_S = 30.0

#: The batch whose block is open in this context: what a send joins.
building: contextvars.ContextVar[Batch | None] = contextvars.ContextVar("bgjobs_batch", default=None)
#: The batch of the job running in this thread (or the batch a callback completes).
running: contextvars.ContextVar[Batch | None] = contextvars.ContextVar("bgjobs_running_batch", default=None)
#: Set when the running job handed its place in its batch to a copy of itself (:func:`carry`).
_handed: contextvars.ContextVar[bool] = contextvars.ContextVar("bgjobs_batch_handed", default=False)


def carry() -> dict[str, Any]:
    """Options that hand the running job's place in its batch to a copy of it sent for later
    (a notification postponed to the end of quiet hours, a job that found its row busy), so the
    batch completes when the copy finishes, not when this run returns; ``{}`` outside a batch."""
    found = running.get()
    if found is None or found.index is None:
        return {}
    _handed.set(True)
    return {BATCH: found.id, INDEX: found.index}


class Batch:
    """A batch being sent, or the batch of the job running now."""

    def __init__(self, id: str, store: BatchStore, broker: dramatiq.Broker, index: int | None = None) -> None:
        self.id, self._store, self._broker = id, store, broker
        #: The running job's index in this batch (when the batch is the running job's).
        self.index = index
        self.sent = 0
        self._next = self._end = 0

    def _index(self) -> int:
        if self._next == self._end:
            self._next = self._store.reserve(self.id, CHUNK, counted=False)
            self._end = self._next + CHUNK
        self._next += 1
        return self._next - 1

    def send(self, message: Any, *, delay: int | None = None) -> dramatiq.Message[Any]:
        """Add ``message`` (``actor.message(payload)``) to this batch and enqueue it: for a job that
        decides at run time how many jobs its batch has."""
        index = self._store.reserve(self.id, 1, counted=True)
        joined = message.copy(options={**message.options, BATCH: self.id, INDEX: index})
        try:
            return self._broker.enqueue(joined, delay=delay)
        except BaseException:
            self._store.settle(self.id, index, "cancelled")  # never sent: it must not hold the batch open
            raise

    def status(self) -> BatchStatus:
        found = self._store.status(self.id)
        assert found is not None, self.id
        return found


#: What this process last read of each batch's cancellation: id -> (cancelled, read at).
_seen: dict[str, tuple[bool, float]] = {}


def is_cancelled(store: BatchStore, id: str) -> bool:
    """Whether batch ``id`` is cancelled, as read at most :data:`CANCEL_CHECK_S` ago. A store that
    does not answer (an outage, a failover) keeps the last answer, and the job goes on: a job must
    not fail because it asked."""
    now = time.monotonic()
    found = _seen.get(id)
    if found is None or now - found[1] >= CANCEL_CHECK_S:
        if len(_seen) > 10_000:
            _seen.clear()
        try:
            answer = store.is_cancelled(id)
        except CONNECTION_ERRORS as exc:
            report(exc)
            answer = False if found is None else found[0]
        found = _seen[id] = (answer, now)
    return found[0]


class Batches(Middleware):
    """Joins sends to the open batch; in the worker, counts each job's outcome once."""

    def before_enqueue(self, broker: dramatiq.Broker, message: Any, delay: Any) -> None:
        open_batch = building.get()
        if open_batch is not None and BATCH not in message.options and CALLBACK_OF not in message.options:
            message.options[BATCH] = open_batch.id
            message.options[INDEX] = open_batch._index()

    def after_enqueue(self, broker: dramatiq.Broker, message: Any, delay: Any) -> None:
        # Counted once written: a send that failed (too large, the broker down) holds no place
        open_batch = building.get()
        if open_batch is not None and message.options.get(BATCH) == open_batch.id:
            open_batch.sent += 1

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        id = message.options.get(BATCH) or message.options.get(CALLBACK_OF)
        if id is None:
            return
        store = store_for(broker)
        index = message.options.get(INDEX)
        running.set(Batch(id, store, broker, None if index is None else int(index)))
        _handed.set(False)
        if BATCH in message.options and is_cancelled(store, id):
            raise SkipMessage(f"batch {id} was cancelled")
        if CALLBACK_OF in message.options and store.has_run(message.message_id):
            raise SkipMessage(f"callback {message.message_id} of batch {id} has run already")

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:  # fmt: skip
        if exception is None and not _handed.get():
            self._settle(broker, message, "succeeded")
            if CALLBACK_OF in message.options:
                store_for(broker).ran(message.message_id)
        running.set(None)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._settle(broker, message, "cancelled")
        running.set(None)

    def before_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        self._settle(broker, message, "failed")

    @staticmethod
    def _settle(broker: dramatiq.Broker, message: Any, outcome: str) -> None:
        id, index = message.options.get(BATCH), message.options.get(INDEX)
        if id is None or index is None:
            return
        store = store_for(broker)
        patiently(lambda: store.settle(id, int(index), outcome), patience_s=SETTLE_PATIENCE_S)
