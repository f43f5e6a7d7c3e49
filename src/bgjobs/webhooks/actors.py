"""Webhooks' actors: the delivery attempt, the bridge from domain events, the health sweep,
and telling an owner their endpoint was disabled."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dramatiq.middleware import CurrentMessage
from pydantic import BaseModel, ConfigDict

from .. import events, wiring
from ..clock import now as _now
from ..jobs import JobContext, job
from ..recovery import recovery_sweep
from ..typed import actor, delivery_key
from . import _delivery as delivery
from . import _dispatch as dispatcher
from . import _operations as operations
from . import _publishing as publishing
from . import _templates  # noqa: F401  (registers the webhooks family's notification templates)
from ._endpoints import current
from ._models import DeliveryJob, EndpointDisabled, Wake, WebhookDeliveryExhausted
from .tasks import QUEUE, deliver_webhook, dispatch_webhooks

__all__ = ["deliver_webhook", "dispatch_webhooks", "endpoint_health"]

logger = logging.getLogger("bgjobs.webhooks")

events.declare("webhook.delivery.exhausted", WebhookDeliveryExhausted)
events.declare("webhook.endpoint.disabled", EndpointDisabled)


def _holder() -> str:
    message = CurrentMessage.get_current_message()
    return message.message_id if message is not None else "local"


@deliver_webhook.handler
def _deliver(job: DeliveryJob) -> None:
    if delivery.deliver(job) == "queued":
        dispatcher.dispatch(_holder())


@dispatch_webhooks.handler
def _dispatch(wake: Wake) -> None:
    dispatcher.dispatch(_holder())


class AnyEvent(BaseModel):
    """Whatever an event carries: webhooks forward its payload as the message's data."""

    model_config = ConfigDict(extra="allow", frozen=True)


def _bridged(name: str) -> bool:
    # bgjobs's own webhook.* events are not sent as webhooks: a failing endpoint subscribed to
    # them would feed itself.
    return not name.startswith("webhook.") and current().from_events


@events.on("*", when=_bridged)
@actor(name="webhooks.from_event", queue=QUEUE)
def from_event(event: AnyEvent) -> None:
    """Publish a domain event to the endpoints subscribed to it."""
    message = CurrentMessage.get_current_message()
    name = None if message is None else message.options.get("bgjobs_event")
    settings = current()
    if not name or not _bridged(name):
        return
    data = event.model_dump(mode="json")
    field = settings.event_owner_field
    owner = None if field is None or data.get(field) is None else str(data[field])
    key = delivery_key() or (message.message_id if message is not None else None)
    publishing.publish(name, data, owner=owner, key=key)


@job("webhooks.endpoint_health", schedule="*/5 * * * *", queue=QUEUE, time_budget=240)
def endpoint_health(ctx: JobContext) -> dict[str, int]:
    """Resend deliveries whose job was lost in a crash (a worker killed before it sent them)."""
    resent = 0
    while not ctx.out_of_time:
        n = operations.resend_overdue()
        resent += n
        if n < 1_000:
            break
    return {"resent": resent}


@recovery_sweep("webhooks")
def _resend_due() -> int:
    """After the store lost its data: every delivery that was due, at once (a retry not yet due is
    resent by the health sweep once it is overdue)."""
    cutoff, resent = _now(), 0
    for _ in range(100):  # resent ones are due after the cutoff, so each round finds new ones
        n = operations.resend_overdue(before=cutoff)
        resent += n
        if n < 1_000:
            break
    return resent


# Telling the owner.


def _contact() -> Callable[..., Any] | None:
    return wiring.hook("owner_contact", current().owner_contact)


@events.on("webhook.endpoint.disabled")
@actor(name="webhooks.notify_owner", queue=QUEUE)
def notify_owner(event: EndpointDisabled) -> None:
    """Email the endpoint's owner through the notifications family, once per disabling."""
    from .. import notifications

    lookup = _contact()
    recipient = None if lookup is None or event.owner is None else lookup(owner=event.owner)
    if recipient is None:
        logger.warning("endpoint %s was disabled and its owner %r has no contact (%s)", event.endpoint_id,
                       event.owner, "BGJOBS_WEBHOOKS__OWNER_CONTACT")  # fmt: skip
        return
    notifications.send(
        "webhook_endpoint_disabled", recipient, event.model_dump(), channels=["email"],
        key=f"webhook:{event.endpoint_id}:disabled:{event.disabled_at:%Y%m%dT%H%M%S}",
    )  # fmt: skip
