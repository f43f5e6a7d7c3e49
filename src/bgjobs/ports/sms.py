"""The SMS port."""

from __future__ import annotations

import abc
from typing import ClassVar

from pydantic import Field

from ._base import DeliveryReceipt, PortModel

#: E.164: a plus, a country code not starting with 0, at most 15 digits in all.
E164 = r"^\+[1-9]\d{1,14}$"


class SmsMessage(PortModel):
    to: str = Field(pattern=E164)
    body: str = Field(min_length=1)
    sender_id: str | None = None
    idempotency_key: str | None = None


class SmsSender(abc.ABC):
    """Sends text messages. Subclass it and implement :meth:`_send`."""

    #: True when the provider drops a second message with a key it has seen, so a retry after
    #: a crash mid-call cannot reach the person twice. bgjobs records a possible duplicate
    #: when it had to retry such a call through an adapter that cannot promise this.
    honours_idempotency_key: ClassVar[bool] = False

    def send(self, *, message: SmsMessage) -> DeliveryReceipt:
        """Send one SMS.

        Raises:
            TransientError: try again later.
            PermanentError: this message can never be delivered.
        """
        return self._send(message=message)

    @abc.abstractmethod
    def _send(self, *, message: SmsMessage) -> DeliveryReceipt:
        """Hand the message to the provider; map its errors to bgjobs errors."""
