"""Notifications: email, SMS and push from one call, with templates, consent and exactly-once delivery.

``bgjobs.notifications.send("booking_confirmation", recipient, context, key="booking:123:confirmed")``
renders the template for each channel the recipient can receive and enqueues one message per
channel on the ``notifications`` queue. See docs/notifications.md.
"""

from . import actors
from .models import (
    AppointmentDue,
    BookingCancelled,
    BookingCreated,
    Category,
    Channel,
    ChannelMessage,
    NotificationRecord,
    PastDueAccount,
    PaymentSucceeded,
    Recipient,
    TripDue,
)
from .segments import Segments, count_segments
from .sender import Queued, deliveries, send
from .templates import Template, get_template, register_template, registered_templates

__all__ = [
    "AppointmentDue",
    "BookingCancelled",
    "BookingCreated",
    "Category",
    "Channel",
    "ChannelMessage",
    "NotificationRecord",
    "PastDueAccount",
    "PaymentSucceeded",
    "Queued",
    "Recipient",
    "Segments",
    "Template",
    "TripDue",
    "actors",
    "count_segments",
    "deliveries",
    "get_template",
    "register_template",
    "registered_templates",
    "send",
]
