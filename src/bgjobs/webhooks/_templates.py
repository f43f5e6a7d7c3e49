"""The webhooks family's notifications: their variables, registered with their files beside them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ..notifications import Category, Channel, Template, TemplateVariables, register_template

__all__ = ["WebhookEndpointDisabled"]

#: ``<locale>/<name>/<part>``, searched after the host's ``BGJOBS_NOTIFICATIONS__TEMPLATES_DIR``.
DIRECTORY = Path(__file__).with_name("templates")


class WebhookEndpointDisabled(TemplateVariables):
    endpoint_id: str
    url: str
    reason: str
    disabled_at: datetime


register_template(Template("webhook_endpoint_disabled", Category.OPERATIONAL, (Channel.EMAIL,),
                           WebhookEndpointDisabled, urgent=True, directory=DIRECTORY))  # fmt: skip
