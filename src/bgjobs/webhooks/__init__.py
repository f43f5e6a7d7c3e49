"""Webhooks: signed delivery to subscriber endpoints, with retries, an attempt log and replay.

``bgjobs.webhooks.publish("payment.succeeded", data, owner="merchant_123")`` stores the message
once and delivers it, signed as the Standard Webhooks specification says, to every enabled
endpoint of that owner subscribed to the type. See docs/webhooks.md.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ..lazy import exports as _exports

if _TYPE_CHECKING:
    from ..errors import BlockedAddress, DeliveryExhausted, InvalidSignature
    from . import actors, tasks
    from ._catalog import EventType, catalog, catalog_schema, event_type
    from ._endpoints import (
        add_endpoint,
        delete_endpoint,
        disable_endpoint,
        enable_endpoint,
        get_endpoint,
        list_endpoints,
        rotate_secret,
        update_endpoint,
    )
    from ._models import Attempt, DeliveryJob, Endpoint, EndpointDisabled, WebhookDeliveryExhausted
    from ._operations import MessageSummary, Replayed, attempts, messages, recover, replay
    from ._publishing import publish
    from ._signing import generate_secret, verify

#: Where each public name lives (docs/architecture.md: sending never imports handling).
_EXPORTS: dict[str, str] = {
    "actors": "actors", "tasks": "tasks", "DeliveryExhausted": "bgjobs.errors", "add_endpoint": "_endpoints",
    "delete_endpoint": "_endpoints", "disable_endpoint": "_endpoints", "enable_endpoint": "_endpoints",
    "get_endpoint": "_endpoints", "list_endpoints": "_endpoints", "rotate_secret": "_endpoints",
    "update_endpoint": "_endpoints", "BlockedAddress": "bgjobs.errors", "Attempt": "_models",
    "DeliveryJob": "_models", "Endpoint": "_models", "EndpointDisabled": "_models",
    "WebhookDeliveryExhausted": "_models", "MessageSummary": "_operations", "Replayed": "_operations",
    "attempts": "_operations", "messages": "_operations", "recover": "_operations",
    "replay": "_operations", "publish": "_publishing", "InvalidSignature": "bgjobs.errors",
    "generate_secret": "_signing", "verify": "_signing", "EventType": "_catalog", "catalog": "_catalog",
    "catalog_schema": "_catalog", "event_type": "_catalog",
}  # fmt: skip

__getattr__, __dir__ = _exports(__name__, _EXPORTS)

__all__ = [
    "Attempt",
    "BlockedAddress",
    "DeliveryExhausted",
    "DeliveryJob",
    "Endpoint",
    "EndpointDisabled",
    "EventType",
    "InvalidSignature",
    "MessageSummary",
    "Replayed",
    "WebhookDeliveryExhausted",
    "actors",
    "add_endpoint",
    "attempts",
    "catalog",
    "catalog_schema",
    "delete_endpoint",
    "disable_endpoint",
    "enable_endpoint",
    "event_type",
    "generate_secret",
    "get_endpoint",
    "list_endpoints",
    "messages",
    "publish",
    "recover",
    "replay",
    "rotate_secret",
    "tasks",
    "update_endpoint",
    "verify",
]
