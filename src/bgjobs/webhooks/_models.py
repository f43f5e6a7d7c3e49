"""Webhooks' tables, job payload and operational events.

Four tables: endpoints (where to send, what they subscribe to, their secrets and health),
messages (each event stored once, with the exact body every attempt sends), deliveries
(one per message and endpoint, the state of its retry schedule) and attempts (the log).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr
from sqlalchemy import JSON, Column, Index, Table, Text, UniqueConstraint, exists, select
from sqlmodel import Field, SQLModel

from .. import db, retention
from ..clock import now as _now
from ..typed import Payload

__all__ = [
    "DeliveryJob",
    "Endpoint",
    "EndpointDisabled",
    "EndpointRow",
    "Wake",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookDeliveryExhausted",
    "WebhookMessage",
]


class EndpointRow(SQLModel, table=True):
    __tablename__ = "bgjobs_webhook_endpoints"

    id: str = Field(primary_key=True, max_length=40)
    url: str = Field(max_length=2000)
    owner: str | None = Field(default=None, index=True, max_length=200)
    event_types: list[str] = Field(sa_column=Column(JSON, nullable=False))
    secret: str = Field(max_length=200)
    #: During a rotation's grace period requests are signed with this secret too.
    previous_secret: str | None = Field(default=None, max_length=200)
    previous_secret_until: datetime | None = None
    description: str | None = Field(default=None, max_length=1000)
    #: Requests per second; None means no limit.
    rate_limit: int | None = None
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, max_length=1000)
    disabled_at: datetime | None = None
    #: The first failed attempt since the last success; None while healthy.
    failing_since: datetime | None = None
    failures: int = 0
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class WebhookMessage(SQLModel, table=True):
    __tablename__ = "bgjobs_webhook_messages"

    id: str = Field(primary_key=True, max_length=40)
    event_type: str = Field(max_length=100)
    owner: str | None = Field(default=None, max_length=200)
    #: The JSON body exactly as sent, so every attempt signs and sends the same bytes.
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=_now, index=True)


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "bgjobs_webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("message_id", "endpoint_id"),
        Index("ix_bgjobs_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    message_id: str = Field(max_length=40)
    endpoint_id: str = Field(index=True, max_length=40)
    #: ``pending`` (waiting for an attempt), ``delivering`` (an attempt holds the lease),
    #: ``delivered``, ``failed`` (attempts exhausted, endpoint disabled, or a manual attempt failed).
    status: str = Field(default="pending", max_length=16)
    #: Attempts started; an attempt message for a number already started is a duplicate.
    attempts: int = 0
    next_attempt_at: datetime | None = None
    lease_until: datetime | None = None
    #: The worker making the attempt (:mod:`bgjobs.claims`).
    claimed_by: str | None = Field(default=None, max_length=32)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)
    delivered_at: datetime | None = None


class WebhookAttempt(SQLModel, table=True):
    __tablename__ = "bgjobs_webhook_attempts"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(max_length=40)
    message_id: str = Field(index=True, max_length=40)
    endpoint_id: str = Field(index=True, max_length=40)
    attempt: int
    trigger: str = Field(max_length=16)
    requested_at: datetime
    status_code: int | None = None
    duration_ms: int
    response: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, max_length=1000)
    succeeded: bool


class Attempt(BaseModel):
    """One HTTP attempt of a delivery, as :func:`~bgjobs.webhooks.attempts` returns it."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int
    delivery_id: str
    message_id: str
    endpoint_id: str
    attempt: int
    trigger: str
    requested_at: datetime
    status_code: int | None
    duration_ms: int
    response: str | None
    error: str | None
    succeeded: bool


class DeliveryJob(Payload):
    """One attempt of one delivery; ``attempt`` numbers it so duplicates of it are dropped."""

    delivery_id: str
    endpoint_id: str
    attempt: int
    trigger: Literal["scheduled", "manual"] = "scheduled"
    #: Times this attempt waited for the endpoint's rate limit or concurrency cap.
    deferrals: int = 0
    #: The endpoint's turn this attempt keeps (epoch milliseconds; 0: take the next one).
    turn_ms: int = 0
    #: Set on the job that dead-letters a delivery whose last attempt the dispatcher made.
    check: bool = False
    #: The trace context it continues (with tracing on): the publish's, or the job's before it.
    trace: str | None = None


class Wake(Payload):
    """Wakes a worker's dispatcher: messages are waiting in the lanes."""


class Endpoint(BaseModel):
    """An endpoint as the API and CLI show it; the secret stays masked unless asked for."""

    model_config = ConfigDict(frozen=True)

    id: str
    url: str
    owner: str | None
    event_types: tuple[str, ...]
    secret: SecretStr
    description: str | None
    rate_limit: int | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    failures: int
    created_at: datetime
    #: True while a rotated-out secret still signs requests.
    rotating: bool

    @classmethod
    def from_row(cls, row: EndpointRow, now: datetime | None = None) -> Endpoint:
        until = row.previous_secret_until
        rotating = until is not None and db.aware(until) > (now or _now())
        return cls(
            id=row.id, url=row.url, owner=row.owner, event_types=tuple(row.event_types),
            secret=SecretStr(row.secret), description=row.description, rate_limit=row.rate_limit,
            enabled=row.enabled, disabled_reason=row.disabled_reason, failing_since=row.failing_since,
            failures=row.failures, created_at=row.created_at, rotating=rotating,
        )  # fmt: skip


class WebhookDeliveryExhausted(BaseModel):
    """``webhook.delivery.exhausted``: the last scheduled attempt failed; the delivery is dead-lettered."""

    delivery_id: str
    message_id: str
    endpoint_id: str
    event_type: str
    owner: str | None = None
    attempts: int
    reason: str


class EndpointDisabled(BaseModel):
    """``webhook.endpoint.disabled``: bgjobs stopped delivering to an endpoint."""

    endpoint_id: str
    url: str
    owner: str | None = None
    reason: str
    disabled_at: datetime


def _no_pending_delivery(messages: Table) -> Any:
    d: Any = WebhookDelivery.__table__  # type: ignore[attr-defined]
    return ~exists(
        select(d.c.id).where(d.c.message_id == messages.c.id, d.c.status.in_(("pending", "delivering")))
    )


def _webhooks_days(settings: Any) -> int:
    return int(settings.cleanup.webhooks_days)


retention.keep("bgjobs.webhook_attempts", "bgjobs_webhook_attempts", "requested_at", days=_webhooks_days,
               order=910)  # fmt: skip
retention.keep("bgjobs.webhook_deliveries", "bgjobs_webhook_deliveries", "created_at", days=_webhooks_days,
               where=lambda t: t.c.status.in_(("delivered", "failed")), order=920)  # fmt: skip
retention.keep("bgjobs.webhook_messages", "bgjobs_webhook_messages", "created_at", days=_webhooks_days,
               where=_no_pending_delivery, order=930)  # fmt: skip
