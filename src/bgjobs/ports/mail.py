"""The mail port: one email in, one receipt out."""

from __future__ import annotations

import abc
from typing import ClassVar

from pydantic import EmailStr, Field

from ._base import DeliveryReceipt, PortModel


class EmailMessage(PortModel):
    to: tuple[EmailStr, ...] = Field(min_length=1)
    subject: str
    text: str
    html: str | None = None
    sender: EmailStr | None = None
    reply_to: EmailStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    #: Stable across retries; adapters that can, deduplicate on it.
    idempotency_key: str | None = None


class Mailer(abc.ABC):
    """Sends email. Subclass it and implement :meth:`_send`."""

    #: True when the provider drops a second message with a key it has seen, so a retry after
    #: a crash mid-call cannot reach the person twice. bgjobs records a possible duplicate
    #: when it had to retry such a call through an adapter that cannot promise this.
    honours_idempotency_key: ClassVar[bool] = False

    def send(self, *, message: EmailMessage) -> DeliveryReceipt:
        """Send one email.

        Raises:
            TransientError: try again later.
            PermanentError: this message can never be delivered.
        """
        return self._send(message=message)

    @abc.abstractmethod
    def _send(self, *, message: EmailMessage) -> DeliveryReceipt:
        """Hand the message to the provider; map its errors to bgjobs errors."""
