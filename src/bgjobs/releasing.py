"""What a job holds until it is done with it (a unique key, a per-key slot), given back at the
right moments by one middleware shape: :class:`ReleasedWhenDone`."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

__all__ = ["ON_ACK", "PARKED", "ReleasedWhenDone"]

#: Set on a job skipped into its key's lane (:mod:`bgjobs.keying`): it still waits, and keeps
#: what it holds.
PARKED = "bgjobs_parked"
#: An attribute of a job's message proxy: a call that acks it and gives back what it holds at once,
#: made by the Redis broker's consumer (:class:`bgjobs.consumer.WakingConsumer`) in place of its ack.
ON_ACK = "bgjobs_on_ack"


class ReleasedWhenDone(Middleware):
    """Calls :meth:`release` when a job is done: succeeded, dead-lettered, or skipped (cancelled,
    replaced, its batch cancelled), but not skipped into its key's lane. A failure that will be
    retried keeps what it holds: the retry is the same job."""

    def release(self, broker: dramatiq.Broker, message: Any) -> None:
        raise NotImplementedError

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:  # fmt: skip
        if exception is None:
            self.release(broker, message)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        if not message.options.get(PARKED):
            self.release(broker, message)

    def before_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        self.release(broker, message)
