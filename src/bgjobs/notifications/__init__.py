"""Notifications: email, SMS and push from one call, with templates, consent and exactly-once delivery.

``bgjobs.notifications.send("booking_confirmation", recipient, context, key="booking:123:confirmed")``
renders the template for each channel the recipient can receive and enqueues one message per
channel on the ``notifications`` queue. See docs/notifications.md.
"""

from . import (
    _catalogue,  # noqa: F401  (registers notifications' own templates)
    actors,
    tasks,
)
from ._models import (
    AppointmentDue,
    BookingCancelled,
    BookingCreated,
    Category,
    Channel,
    ChannelMessage,
    NotificationDelivery,
    PastDueAccount,
    PaymentSucceeded,
    Recipient,
    TripDue,
)
from ._segments import Segments, count_segments
from ._sender import Queued, SmsOverBudget, deliveries, send
from ._templates import Template, TemplateVariables, get_template, register_template, registered_templates

__all__ = [
    "AppointmentDue",
    "BookingCancelled",
    "BookingCreated",
    "Category",
    "Channel",
    "ChannelMessage",
    "NotificationDelivery",
    "PastDueAccount",
    "PaymentSucceeded",
    "Queued",
    "Recipient",
    "Segments",
    "SmsOverBudget",
    "Template",
    "TemplateVariables",
    "TripDue",
    "actors",
    "count_segments",
    "deliveries",
    "get_template",
    "register_template",
    "registered_templates",
    "send",
    "tasks",
]
