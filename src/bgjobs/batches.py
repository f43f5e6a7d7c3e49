"""Batches: send many jobs as one, know once when they are all done, cancel them (docs/batches.md).

::

    with bgjobs.batch(on_complete=report.message({"run": 7}), description="payout run") as b:
        for vendor in vendors:
            pay.send({"vendor": vendor})        # every send inside the block joins the batch
    bgjobs.batches.status(b.id)

Each job carries its batch and an index; the worker counts its outcome once (succeeded, failed
when dead-lettered, cancelled when skipped after :func:`cancel`), and the count that completes
the batch enqueues its callbacks in the same step (:mod:`bgjobs.batch_store`). A job of a batch
can add jobs to it (``bgjobs.current_batch().send(message)``), and a batch made inside a job of
another is one job of that one, which completes only after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

import dramatiq

from .batch_store import BatchStatus, BatchStore, store_for
from .batching import CALLBACK_OF, INDEX, Batch, building, is_cancelled, running

__all__ = [
    "INDEX", "Batch", "BatchStatus", "batch", "cancel", "cancelled", "current_batch", "recent", "status",
    "store_for",
]  # fmt: skip


def _store() -> tuple[dramatiq.Broker, BatchStore]:
    from . import runtime

    broker = runtime.current().broker
    return broker, store_for(broker)


@contextmanager
def batch(
    *, on_success: dramatiq.Message[Any] | None = None, on_complete: dramatiq.Message[Any] | None = None,
    description: str = "",
) -> Iterator[Batch]:  # fmt: skip
    """Every job sent in the block (``send``, ``send_many``, delayed ones too) joins a new batch.

    ``on_complete`` is enqueued once every job has succeeded or been dead-lettered (or skipped
    after :func:`cancel`); ``on_success`` once every job has succeeded, later too when a
    dead-lettered job is requeued and succeeds. Each is enqueued once. In a callback,
    :func:`current_batch` is the batch it completes. Made inside a job of another batch, the new
    batch is one job of that one.

    Raises:
        ConfigurationError: the broker is RabbitMQ (not supported yet).
    """
    broker, store = _store()
    parent = running.get()
    link = None if parent is None else (parent.id, store.reserve(parent.id, 1, counted=True))
    made = Batch(f"b_{uuid4().hex[:24]}", store, broker)
    on_complete = _tagged(on_complete, made.id)
    on_success = _tagged(on_success, made.id)
    store.create(made.id, description=description[:200], parent=link, on_success=on_success,
                 on_complete=on_complete)  # fmt: skip
    token = building.set(made)
    try:
        yield made
    finally:
        building.reset(token)
        store.close(made.id, made.sent)


def _tagged(message: dramatiq.Message[Any] | None, id: str) -> dramatiq.Message[Any] | None:
    return None if message is None else message.copy(options={**message.options, CALLBACK_OF: id})


def current_batch() -> Batch | None:
    """The batch of the job running in this thread (in a callback, the batch it completes)."""
    return running.get()


def status(id: str) -> BatchStatus:
    """Raises: InvalidPayload: no batch has that id (or it finished more than 7 days ago)."""
    from .errors import InvalidPayload

    found = _store()[1].status(id)
    if found is None:
        raise InvalidPayload(f"batch: no batch {id!r} (finished batches are kept 7 days)")
    return found


def recent(limit: int = 50) -> list[BatchStatus]:
    """The newest batches first, up to ``limit`` (finished ones are kept 7 days)."""
    return _store()[1].recent(limit)


def cancel(id: str) -> BatchStatus:
    """Skip the batch's jobs not started yet (counted as cancelled, never run); a running job sees
    :func:`cancelled` turn true. Its callbacks still run once every job is counted.

    Raises:
        InvalidPayload: no batch has that id.
    """
    status(id)
    _store()[1].set_cancel(id)
    _forget(id)
    return status(id)


def _forget(id: str) -> None:
    from . import batching

    batching._seen.pop(id, None)


def cancelled() -> bool:
    """True once the running job, or its batch, is cancelled (:func:`bgjobs.cancel`,
    :func:`cancel`): stop at the next safe point. A cancel is seen within half a second."""
    from dramatiq.middleware import CurrentMessage

    from .cancelling import is_cancelled as job_cancelled

    found = running.get()
    if found is not None and is_cancelled(found._store, found.id):
        return True
    message = CurrentMessage.get_current_message()
    return message is not None and job_cancelled(found._broker if found else _store()[0], message.message_id)


