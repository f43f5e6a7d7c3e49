"""The errors bgjobs raises, and how the worker treats each: every one of them, in one tree.

    BgjobsError
    ├── ConfigurationError   a setting or a wired adapter is missing or wrong; dead-lettered
    │   ├── DatabaseBehind, SchemaMismatch       the database is not at bgjobs's revision
    │   └── UnknownActor                         no worker declared the message's actor in time
    ├── PermanentError       retrying cannot help; dead-lettered at once
    │   ├── InvalidPayload   a payload failed validation (names the field)
    │   │   ├── UnknownArgument, SmsOverBudget, NotFound
    │   ├── BlockedAddress, DeliveryExhausted    webhooks
    │   ├── NoPaymentMethod, VendorRefused       vendors
    ├── TransientError       a vendor or network hiccup; retried with backoff
    │   ├── BrokerUnavailable, LeaseLost, MaybeDelivered
    ├── InvalidSignature     a webhook request that does not verify
    ├── ConsoleError         a console answer other than 2xx
    └── UsageError           a command called wrong

They are defined here, and exported where they are used too (``bgjobs.webhooks.BlockedAddress``
is this module's). Anything else an actor raises is treated like a TransientError: it is retried
until the actor's retry limit, then dead-lettered with the exception as reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "BgjobsError",
    "BlockedAddress",
    "BrokerUnavailable",
    "ConfigurationError",
    "ConsoleError",
    "DatabaseBehind",
    "DeliveryExhausted",
    "InvalidPayload",
    "InvalidSignature",
    "LeaseLost",
    "LinkRefused",
    "MaybeDelivered",
    "NoPaymentMethod",
    "NotFound",
    "PermanentError",
    "SchemaMismatch",
    "SmsOverBudget",
    "TransientError",
    "UnknownActor",
    "UnknownArgument",
    "UsageError",
    "VendorRefused",
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


class LinkRefused(BgjobsError):
    """A portal link the portal does not accept: tampered, signed with an unknown key, expired or
    revoked. Its message says which, for the person holding it, and nothing more."""


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


class DatabaseBehind(ConfigurationError):
    """Raised when the database is not at the revision this bgjobs needs (``bgjobs db upgrade`` fixes it)."""


class SchemaMismatch(ConfigurationError):
    """Raised when existing bgjobs tables without a revision do not match the baseline; nothing is changed."""


class UnknownActor(ConfigurationError):
    """Raised (as a dead letter's reason) for a message whose actor no worker declared in time."""


class UnknownArgument(InvalidPayload):
    """Raised when a trigger names an argument its job does not declare; nothing is sent."""

    def __init__(self, job: str, name: str, known: list[str]) -> None:
        self.job, self.name, self.known = job, name, known
        super().__init__(self.line())

    def line(self, *, flags: bool = False) -> str:
        """One line naming the argument, the likely intended one, and the job's arguments; as
        command-line flags (``--dry-run``) when ``flags``."""

        def shown(name: str) -> str:
            return "--" + name.replace("_", "-") if flags else name

        import difflib

        close = difflib.get_close_matches(self.name, self.known, n=1)
        hint = f" (did you mean {shown(close[0])}?)" if close else ""
        takes = ", ".join(shown(k) for k in self.known) if self.known else "none"
        return f"{self.job} has no argument {shown(self.name)}{hint}; its arguments: {takes}"


class SmsOverBudget(InvalidPayload):
    """The SMS version renders to more segments than ``BGJOBS_NOTIFICATIONS__SMS_MAX_SEGMENTS``."""


class NotFound(InvalidPayload):
    """The thing a path names does not exist: 404, naming the field."""


class BlockedAddress(PermanentError):
    """Raised when an endpoint URL is not allowed: not HTTPS, or its host reaches a blocked range."""


class DeliveryExhausted(PermanentError):
    """Raised when a delivery's last scheduled attempt fails; its message is dead-lettered."""


class NoPaymentMethod(PermanentError):
    """Raised by a gateway's ``charge`` when the customer has no payment method to charge.

    Deferred charges treat it as "skip this customer for now", not as a refusal.
    """


class VendorRefused(PermanentError):
    """Raised when a vendor answers a 4xx that retrying cannot change; ``status`` is that answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class InvalidSignature(BgjobsError):
    """Raised by ``bgjobs.webhooks.verify`` when a request is unsigned, stale, or signed with another
    secret."""


class ConsoleError(BgjobsError):
    """An answer other than 2xx, with its JSON body (``{"error": ..., "field": ...}``)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body["error"])
        self.status, self.body = status, body
