"""Webhooks: signed delivery to subscriber endpoints, with retries, an attempt log and replay.

``bgjobs.webhooks.publish("payment.succeeded", data, owner="merchant_123")`` stores the message
once and delivers it, signed as the Standard Webhooks specification says, to every enabled
endpoint of that owner subscribed to the type. See docs/webhooks.md.
"""

from . import actors
from .delivery import DeliveryExhausted
from .endpoints import (
    add_endpoint,
    delete_endpoint,
    disable_endpoint,
    enable_endpoint,
    get_endpoint,
    list_endpoints,
    rotate_secret,
    update_endpoint,
)
from .guard import BlockedAddress
from .models import (
    DeliveryJob,
    Endpoint,
    EndpointDisabled,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryExhausted,
    WebhookMessage,
)
from .operations import Replayed, attempts, recover, replay
from .publishing import publish
from .signing import InvalidSignature, generate_secret, verify

__all__ = [
    "BlockedAddress",
    "DeliveryExhausted",
    "DeliveryJob",
    "Endpoint",
    "EndpointDisabled",
    "InvalidSignature",
    "Replayed",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookDeliveryExhausted",
    "WebhookMessage",
    "actors",
    "add_endpoint",
    "attempts",
    "delete_endpoint",
    "disable_endpoint",
    "enable_endpoint",
    "generate_secret",
    "get_endpoint",
    "list_endpoints",
    "publish",
    "recover",
    "replay",
    "rotate_secret",
    "update_endpoint",
    "verify",
]
