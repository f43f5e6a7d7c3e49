"""A push adapter for an FCM-style HTTP v1 API: one request per device token, OAuth bearer token."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx

from bgjobs.errors import PermanentError
from bgjobs.ports import DeliveryReceipt, PushMessage, PushSender

from .transport import HttpAdapter, VendorError, call

__all__ = ["FcmStylePush"]

logger = logging.getLogger(__name__)


class FcmStylePush(PushSender, HttpAdapter):
    honours_idempotency_key = False

    def __init__(
        self, *, base_url: str, project: str, access_token: Callable[[], str], timeout_s: float = 10.0
    ) -> None:
        #: Called per request: OAuth tokens expire, so the integrator's provider refreshes them.
        self.access_token = access_token
        self.path = f"/v1/projects/{project}/messages:send"
        self.client = httpx.Client(base_url=base_url, timeout=timeout_s)

    def _send(self, *, message: PushMessage) -> DeliveryReceipt:
        names, unregistered = [], []
        for token in message.tokens:
            notification = {"title": message.title, "body": message.body}
            body = {"message": {"token": token, "notification": notification, "data": dict(message.data)}}
            headers = {"Authorization": f"Bearer {self.access_token()}"}
            try:
                response = call(
                    self.client, "POST", self.path, json=body, headers=headers, safe_to_resend=False
                )
            except VendorError as exc:
                if exc.status in (400, 404) and "UNREGISTERED" in exc.body:
                    unregistered.append(token)  # an uninstalled app: drop the token, keep going
                    continue
                raise
            names.append(response.json()["name"])
        if unregistered:
            logger.warning("%d push token(s) are no longer registered", len(unregistered))
        if not names:
            raise PermanentError("no registered device among the push tokens")
        return DeliveryReceipt(provider_message_id=",".join(names))
