"""Webhooks: signed delivery to subscriber endpoints, with retries, an attempt log and replay.

``bgjobs.webhooks.publish("payment.succeeded", data, owner="merchant_123")`` stores the message
once and delivers it, signed as the Standard Webhooks specification says, to every enabled
endpoint of that owner subscribed to the type. See docs/webhooks.md.
"""

from . import (
    _templates,  # noqa: F401  (registers the webhooks family's notification templates)
    actors,
    tasks,
)
from ._delivery import DeliveryExhausted
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
from ._guard import BlockedAddress
from ._models import (
    Attempt,
    DeliveryJob,
    Endpoint,
    EndpointDisabled,
    WebhookDeliveryExhausted,
)
from ._operations import MessageSummary, Replayed, attempts, messages, recover, replay
from ._publishing import publish
from ._signing import InvalidSignature, generate_secret, verify

__all__ = [
    "Attempt",
    "BlockedAddress",
    "DeliveryExhausted",
    "DeliveryJob",
    "Endpoint",
    "EndpointDisabled",
    "InvalidSignature",
    "MessageSummary",
    "Replayed",
    "WebhookDeliveryExhausted",
    "actors",
    "add_endpoint",
    "attempts",
    "delete_endpoint",
    "disable_endpoint",
    "enable_endpoint",
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
