"""The push-notification port."""

from __future__ import annotations

import abc
from typing import ClassVar

from pydantic import Field

from ._base import DeliveryReceipt, PortModel


class PushMessage(PortModel):
    tokens: tuple[str, ...] = Field(min_length=1)
    title: str
    body: str
    data: dict[str, str] = Field(default_factory=dict)
    idempotency_key: str | None = None


class PushSender(abc.ABC):
    """Sends push notifications to device tokens. Subclass it and implement :meth:`_send`."""

    #: True when the provider drops a second message with a key it has seen, so a retry after
    #: a crash mid-call cannot reach the person twice. bgjobs records a possible duplicate
    #: when it had to retry such a call through an adapter that cannot promise this.
    honours_idempotency_key: ClassVar[bool] = False

    def send(self, *, message: PushMessage) -> DeliveryReceipt:
        """Send one push notification to every token in it.

        Raises:
            TransientError: try again later.
            PermanentError: this message can never be delivered.
        """
        return self._send(message=message)

    @abc.abstractmethod
    def _send(self, *, message: PushMessage) -> DeliveryReceipt:
        """Hand the message to the provider; map its errors to bgjobs errors."""
