"""What notifications are made of: recipients, channel messages, the delivery log, event payloads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator
from sqlmodel import Field as Column
from sqlmodel import SQLModel

from .. import retention
from ..clock import now as _now
from ..errors import InvalidPayload
from ..money import Money
from ..ports.sms import E164
from ..typed import Payload

__all__ = [
    "AppointmentDue",
    "BookingCancelled",
    "BookingCreated",
    "Category",
    "Channel",
    "ChannelMessage",
    "Digest",
    "DigestClose",
    "DigestItem",
    "NotificationRecord",
    "PastDueAccount",
    "PaymentSucceeded",
    "Recipient",
    "Status",
    "SweepMark",
    "TripDue",
]


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"


class Category(StrEnum):
    """Why a message is sent; consent is asked per category and channel."""

    #: The user's own action (a booking, a payment): sent without asking.
    TRANSACTIONAL = "transactional"
    #: Reminders and dunning: sent if the host's consent callback agrees.
    REMINDERS = "reminders"
    #: Promotions: sent only with the user's consent.
    MARKETING = "marketing"
    #: Alerts to the platform's own operators: never asked.
    OPERATIONAL = "operational"


Status = Literal["queued", "sent", "skipped", "failed", "dead"]


class Recipient(BaseModel):
    """One person, with whichever addresses the host has for them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str = Field(min_length=1, max_length=100)
    email: EmailStr | None = None
    #: E.164: ``+447700900123``.
    phone: str | None = None
    push_tokens: tuple[str, ...] = ()
    name: str | None = None
    #: ``pt-BR``; templates fall back to ``pt`` and then to the default locale.
    locale: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
    #: An IANA zone (``Europe/Lisbon``) for quiet hours and the times shown in messages.
    timezone: str | None = None

    @classmethod
    def of(cls, value: Recipient | Mapping[str, Any]) -> Recipient:
        """``value`` as a Recipient (a mapping is validated).

        Raises:
            InvalidPayload: a field does not validate; the message names it.
        """
        if isinstance(value, Recipient):
            return value
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            raise InvalidPayload.from_validation_error("recipient", exc) from None

    @field_validator("phone")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(E164, value):
            raise ValueError(
                "must be an E.164 number: a plus, the country code and the number, +447700900123"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}") from None
        return value

    def can_receive(self, channel: Channel) -> bool:
        return bool(
            {Channel.EMAIL: self.email, Channel.SMS: self.phone, Channel.PUSH: self.push_tokens}[channel]
        )


class ChannelMessage(Payload):
    """One rendered message for one channel: what the channel actors receive.

    Rendered at ``send()`` so a bad template or an oversize SMS fails in the caller, and
    every retry delivers exactly the same content under the same key.
    """

    key: str = Field(max_length=240)
    notification_id: str
    template: str
    category: Category
    urgent: bool
    recipient: Recipient
    subject: str = ""
    text: str = ""
    html: str | None = None
    sms_segments: int = 0


class NotificationRecord(SQLModel, table=True):
    """``bgjobs_notifications``: one row per channel message, keyed by its idempotency key."""

    __tablename__ = "bgjobs_notifications"

    key: str = Column(primary_key=True, max_length=255)
    notification_id: str = Column(index=True, max_length=64)
    template: str = Column(max_length=100)
    channel: str = Column(max_length=8)
    category: str = Column(max_length=16)
    user_id: str = Column(index=True, max_length=100)
    #: Masked (``j***@example.com``, ``+44*******23``): the log never holds a full address.
    recipient_ref: str = Column(max_length=200)
    status: str = Column(default="queued", max_length=8, index=True)
    reason: str | None = None
    provider_message_id: str | None = Column(default=None, max_length=255)
    #: The provider that took the message (with several wired for the channel, docs/notifications.md);
    #: while not sent, the one it is pinned to because that provider may have taken it already.
    provider: str | None = Column(default=None, max_length=64)
    attempts: int = 0
    #: Copies that arrived after this message was sent (a second ``send()``, a redelivery).
    duplicates: int = 0
    #: An earlier attempt died after calling the provider, so the provider may hold two copies;
    #: True unless the provider said it dropped the second on the idempotency key.
    possible_duplicate: bool = False
    #: While set and in the future, a worker is calling the provider; others wait for it.
    lease_until: datetime | None = None
    #: The worker calling the provider (:mod:`bgjobs.claims`).
    claimed_by: str | None = Column(default=None, max_length=32)
    created_at: datetime = Column(default_factory=_now, index=True)
    updated_at: datetime = Column(default_factory=_now)
    sent_at: datetime | None = None


class NotificationDelivery(BaseModel):
    """One channel message of the delivery log, as :func:`~bgjobs.notifications.deliveries` returns it."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    key: str
    notification_id: str
    template: str
    channel: str
    category: str
    user_id: str
    recipient_ref: str
    status: str
    reason: str | None
    provider_message_id: str | None
    provider: str | None = None
    attempts: int
    duplicates: int
    possible_duplicate: bool
    lease_until: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


class SweepMark(SQLModel, table=True):
    """``bgjobs_notification_marks``: how far a sweep got, and when an account was last dunned."""

    __tablename__ = "bgjobs_notification_marks"

    name: str = Column(primary_key=True, max_length=255)
    at: datetime
    #: The notification key sent at ``at``, so an interrupted sweep re-sends the same one.
    key: str | None = Column(default=None, max_length=240)


class Digest(SQLModel, table=True):
    """``bgjobs_notification_digests``: one window collecting a recipient's messages of one digest.

    ``open_slot`` is ``<digest name>:<user id>`` while the window is open and NULL once it closed:
    its unique constraint lets one window at a time be open per recipient and digest (NULLs do not
    collide), without a partial index.
    """

    __tablename__ = "bgjobs_notification_digests"

    id: str = Column(primary_key=True, max_length=32)
    #: The digest's name: the category or template it collects (a key of BGJOBS_NOTIFICATIONS__DIGESTS).
    name: str = Column(max_length=100)
    user_id: str = Column(index=True, max_length=100)
    open_slot: str | None = Column(default=None, unique=True, max_length=210)
    #: The template the digest is sent with, and the recipient (as JSON) it goes to.
    template: str = Column(max_length=100)
    recipient: str
    item_count: int = 0
    opened_at: datetime = Column(default_factory=_now, index=True)
    closes_at: datetime
    closed_at: datetime | None = None


class DigestClose(Payload):
    """The task that closes a digest window and sends its digest."""

    digest_id: str = Field(min_length=1, max_length=32)


class BroadcastDone(Payload):
    """A broadcast's batch callback: its key and template."""

    key: str = Field(min_length=1, max_length=200)
    template: str


class DigestItem(SQLModel, table=True):
    """``bgjobs_notification_digest_items``: one message collected into a digest instead of sent.

    Keyed by the message's business key, so sending it again (a rerun sweep, a second ``send()``)
    adds nothing, in this window or a later one.
    """

    __tablename__ = "bgjobs_notification_digest_items"

    key: str = Column(primary_key=True, max_length=240)
    digest_id: str = Column(index=True, max_length=32)
    template: str = Column(max_length=100)
    #: The item's own template rendered to one line (its SMS text, else its email subject).
    summary: str = Column(max_length=500)
    #: Its variables as JSON, for a host's digest template that wants more than the summary.
    context: str
    created_at: datetime = Column(default_factory=_now)


class _EventModel(BaseModel):
    """Event payloads accept the host's extra fields; bgjobs reads only its own."""

    model_config = ConfigDict(extra="allow")


class BookingCreated(_EventModel):
    """``booking.created`` -> the booking confirmation."""

    booking_id: str
    recipient: Recipient
    trip_date: date
    total: Money
    destination: str | None = None


class BookingCancelled(_EventModel):
    """``booking.cancelled`` -> the cancellation, with the refund and when it arrives."""

    booking_id: str
    recipient: Recipient
    trip_date: date
    refund: Money
    refund_days: int = Field(default=7, ge=0)
    reason: str | None = None


class PaymentSucceeded(_EventModel):
    """``payment.succeeded`` -> the payment confirmation."""

    payment_id: str
    booking_id: str | None = None
    recipient: Recipient
    amount: Money


class AppointmentDue(BaseModel):
    """An appointment the host's source reports as starting in the reminder window."""

    appointment_id: str
    recipient: Recipient
    starts_at: datetime
    service: str
    location: str | None = None


class TripDue(BaseModel):
    """An unpaid booking whose trip is on the date the sweep asked about."""

    booking_id: str
    recipient: Recipient
    trip_date: date
    amount_due: Money
    pay_url: str | None = None


class PastDueAccount(BaseModel):
    """An account (a team) whose payment method failed; its admins get the dunning email."""

    account_id: str
    account_name: str
    recipients: list[Recipient] = Field(min_length=1)
    update_url: str
    amount_due: Money | None = None


retention.keep("bgjobs.notifications", "bgjobs_notifications", "created_at",
               days=lambda s: s.cleanup.notifications_days,
               where=lambda t: t.c.status.in_(("sent", "skipped", "dead")))  # fmt: skip
retention.keep("bgjobs.notification_digests", "bgjobs_notification_digests", "opened_at",
               days=lambda s: s.cleanup.notifications_days,
               where=lambda t: t.c.closed_at.is_not(None))  # fmt: skip
retention.keep("bgjobs.notification_digest_items", "bgjobs_notification_digest_items", "created_at",
               days=lambda s: s.cleanup.notifications_days)  # fmt: skip
