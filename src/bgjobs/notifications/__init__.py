"""Notifications: email, SMS and push from one call, with templates, consent and exactly-once delivery.

``bgjobs.notifications.send("booking_confirmation", recipient, context, key="booking:123:confirmed")``
renders the template for each channel the recipient can receive and enqueues one message per
channel on the ``notifications`` queue. See docs/notifications.md.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ..lazy import exports as _exports

if _TYPE_CHECKING:
    from ..errors import SmsOverBudget
    from . import actors, tasks
    from ._broadcast import Broadcast, BroadcastSummary, broadcast, broadcast_summary
    from ._catalogue import get_template, registered_templates
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
    from ._sender import Queued, deliveries, send
    from ._templates import Template, TemplateVariables, register_template

#: Where each public name lives (docs/architecture.md: sending never imports handling).
_EXPORTS: dict[str, str] = {
    "actors": "actors", "tasks": "tasks", "AppointmentDue": "_models", "BookingCancelled": "_models",
    "BookingCreated": "_models", "Category": "_models", "Channel": "_models",
    "ChannelMessage": "_models", "NotificationDelivery": "_models", "PastDueAccount": "_models",
    "PaymentSucceeded": "_models", "Recipient": "_models", "TripDue": "_models", "Segments": "_segments",
    "count_segments": "_segments", "Queued": "_sender", "SmsOverBudget": "bgjobs.errors",
    "deliveries": "_sender", "send": "_sender", "Template": "_templates",
    "TemplateVariables": "_templates", "get_template": "_catalogue", "register_template": "_templates",
    "registered_templates": "_catalogue", "Broadcast": "_broadcast", "BroadcastSummary": "_broadcast",
    "broadcast": "_broadcast", "broadcast_summary": "_broadcast",
}  # fmt: skip

__getattr__, __dir__ = _exports(__name__, _EXPORTS)

__all__ = [
    "AppointmentDue",
    "BookingCancelled",
    "BookingCreated",
    "Broadcast",
    "BroadcastSummary",
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
    "broadcast",
    "broadcast_summary",
    "count_segments",
    "deliveries",
    "get_template",
    "register_template",
    "registered_templates",
    "send",
    "tasks",
]
