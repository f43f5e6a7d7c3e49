"""``bgjobs.cancel``: cancel one job by its message id, or by its unique key (docs/controls.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["cancel"]


def cancel(
    message_id: str | None = None, *, actor: Any = None, key: Sequence[Any] | None = None, by: str = "api"
) -> str:
    """Cancel a job: a queued one is skipped when a worker takes it (acked, never run); a running
    one sees :func:`bgjobs.cancelled` turn true within half a second and can stop early. Returns
    the cancelled message id. By key (``actor=build_report, key=(7, 42)``, an actor declared with
    ``unique=``): the job holding that key, whose key is given up for the next send.

    Raises:
        InvalidPayload: neither a message id nor an actor and key, or no job holds that key.
        ConfigurationError: the actor was declared without ``unique=``.
    """
    from . import runtime
    from .cancelling import cancel as record
    from .controls import holder_of
    from .errors import InvalidPayload

    broker = runtime.current().broker
    if (message_id is None) == (actor is None or key is None):
        raise InvalidPayload("cancel: give a message id, or an actor and its unique key (not both)")
    if message_id is not None:
        return str(record(broker, message_id, by=by)["message_id"])
    values, name = tuple(key or ()), getattr(actor, "name", str(actor))
    found = holder_of(broker, actor, values)
    if found is None:
        raise InvalidPayload(f"cancel: no {name} job holds the key {values!r}")
    return str(record(broker, found, by=by, actor=name)["message_id"])
