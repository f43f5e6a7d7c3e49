"""What every port shares: frozen models and the receipt a delivery returns."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field


class PortModel(BaseModel):
    """Frozen and strict about unknown fields, so a typo never passes silently."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DeliveryReceipt(PortModel):
    """What a provider said when it accepted a message."""

    provider_message_id: str
    accepted_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    #: True when the provider recognised the idempotency key and did not send again.
    duplicate: bool = False
