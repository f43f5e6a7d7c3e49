"""Notifications' own templates: bookings, payments, appointments and dunning.

Other families register theirs beside their code (``payouts/_templates.py``, ...), with their files.
The package's template functions are taken from here, so the bundled templates are registered
before anyone lists or looks one up.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import Field, field_validator

from ..money import Money
from ._models import Category, Channel
from ._templates import Template, TemplateVariables, get_template, register_template, registered_templates

__all__ = [
    "AppointmentReminder",
    "BookingCancellation",
    "BookingConfirmation",
    "DigestEntry",
    "DigestVariables",
    "Dunning",
    "PaymentConfirmation",
    "PaymentReminder",
    "get_template",
    "registered_templates",
]


_ALL = (Channel.EMAIL, Channel.SMS, Channel.PUSH)


class BookingConfirmation(TemplateVariables):
    booking_id: str
    trip_date: date
    total: Money
    destination: str | None = None


class BookingCancellation(TemplateVariables):
    booking_id: str
    trip_date: date
    refund: Money
    #: Business days until the refund reaches the customer.
    refund_days: int = Field(ge=0)
    reason: str | None = None


class PaymentReminder(TemplateVariables):
    booking_id: str
    trip_date: date
    amount_due: Money
    days_until: int = Field(ge=0)
    pay_url: str | None = None


class PaymentConfirmation(TemplateVariables):
    payment_id: str
    amount: Money
    booking_id: str | None = None


class AppointmentReminder(TemplateVariables):
    appointment_id: str
    starts_at: datetime
    service: str
    location: str | None = None

    @field_validator("starts_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a time zone")
        return value


class Dunning(TemplateVariables):
    account_name: str
    update_url: str
    amount_due: Money | None = None


class DigestEntry(TemplateVariables):
    """One message collected into a digest."""

    template: str
    key: str
    #: The message's own template rendered to one line (its SMS text, else its email subject).
    summary: str
    #: Its variables, as JSON values (amounts as ``{"amount", "currency"}``).
    context: dict[str, Any]


class DigestVariables(TemplateVariables):
    """What a digest template receives: the messages of the window, oldest first."""

    items: list[DigestEntry]
    count: int


for _t in (
    Template("booking_confirmation", Category.TRANSACTIONAL, _ALL, BookingConfirmation, urgent=True),
    Template("booking_cancellation", Category.TRANSACTIONAL, _ALL, BookingCancellation, urgent=True),
    Template("payment_reminder", Category.REMINDERS, _ALL, PaymentReminder),
    Template("payment_confirmation", Category.TRANSACTIONAL, _ALL, PaymentConfirmation, urgent=True),
    Template("appointment_reminder", Category.REMINDERS, _ALL, AppointmentReminder),
    Template("dunning", Category.REMINDERS, (Channel.EMAIL,), Dunning),
    Template("reminder_digest", Category.REMINDERS, (Channel.EMAIL,), DigestVariables),
):
    register_template(_t)
