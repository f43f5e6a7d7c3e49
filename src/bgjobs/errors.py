"""The errors bgjobs raises, and how the worker treats each.

    BgjobsError
    ├── ConfigurationError   a setting or a wired adapter is missing or wrong; dead-lettered
    ├── PermanentError       retrying cannot help; dead-lettered at once
    │   └── InvalidPayload   a payload failed validation (names the field)
    └── TransientError       a vendor or network hiccup; retried with backoff

Anything else an actor raises is treated like a TransientError: it is retried
until the actor's retry limit, then dead-lettered with the exception as reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "BgjobsError",
    "BrokerUnavailable",
    "ConfigurationError",
    "InvalidPayload",
    "LeaseLost",
    "MaybeDelivered",
    "PermanentError",
    "TransientError",
    "UsageError",
]


class BgjobsError(Exception):
    """Raised by bgjobs; the root of every bgjobs error."""


class UsageError(BgjobsError):
    """Raised when a command is called wrong (a missing or conflicting argument): it exits 2."""


class ConfigurationError(BgjobsError):
    """Raised when a setting does not parse or a needed adapter is not wired.

    A worker never retries it: the message is dead-lettered with this error as
    its reason, so fixing the configuration and requeueing loses nothing.
    """


class PermanentError(BgjobsError):
    """Raised when an operation can never succeed as asked (a 4xx, a refused recipient).

    The message goes straight to the dead-letter queue with this error as its reason.
    """


class TransientError(BgjobsError):
    """Raised when an operation may succeed later (a timeout, a 5xx, a dropped connection).

    The message is retried with exponential backoff and jitter up to the actor's limit.
    """


class MaybeDelivered(TransientError):
    """Raised when a request may have reached the provider before the answer was lost (a timeout
    after it was sent, a connection dropped mid-answer).

    Retried like any transient error, with the same idempotency key, and with the same provider:
    notification failover moves it to a backup only where a duplicate is acceptable
    (``BGJOBS_NOTIFICATIONS__DUPLICABLE``).
    """


class LeaseLost(TransientError):
    """Raised by a lease's holder, before its next port call, when the lease is no longer its own
    (it expired while the holder was paused or cut off, and another worker may hold it now).

    Transient: the job's retry finds the work done by the new holder, or busy.
    """


class BrokerUnavailable(TransientError):
    """Raised when a send cannot reach the broker: one line naming the URL (masked) and the setting.

    Transient: in a worker the job that was sending is retried; in a host app the caller decides.
    """


class InvalidPayload(PermanentError):
    """Raised when a job payload does not validate, at the sender or in the worker.

    The message names every offending field, so the reason kept with a
    dead-lettered message says what to fix.
    """

    @classmethod
    def from_validation_error(cls, what: str, error: ValidationError) -> InvalidPayload:
        """Build one readable line from pydantic's error list."""
        parts = []
        for item in error.errors():
            field = ".".join(str(p) for p in item["loc"]) or "<payload>"
            parts.append(f"{field}: {item['msg']}")
        return cls(f"invalid payload for {what}: " + "; ".join(parts))


def check_size(what: str, size: int, limit: int) -> None:
    """Refuse a message of ``size`` bytes above ``limit`` (``BGJOBS_WORKER__MAX_MESSAGE_BYTES``).

    Raises:
        InvalidPayload: the message is too large; nothing is sent.
    """
    if size > limit:
        raise InvalidPayload(
            f"{what}: the message is {size} bytes, more than {limit} (BGJOBS_WORKER__MAX_MESSAGE_BYTES); "
            "send an id and let the job read the rest"
        )


#: Errors that dead-letter a message at once (Dramatiq's ``throws`` option).
PERMANENT: tuple[type[BaseException], ...] = (PermanentError, ConfigurationError)
