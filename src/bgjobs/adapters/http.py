"""SMS and push through a JSON-over-HTTP vendor API, with the idempotency key as a header.

Many vendors (and most in-house gateways) take one POST per message and honour an
``Idempotency-Key`` header: a second request with a key they have seen returns the first
result and sends nothing, flagged with ``Idempotent-Replayed: true``. These adapters speak
that shape; for a vendor with its own API, subclass the port instead (see docs/ports.md).

Responses map onto bgjobs's errors: 2xx is accepted; 408, 425, 429 and 5xx, timeouts and
connection errors are transient (retried); any other status is permanent (dead-lettered
with the status and the start of the body). Redirects are not followed.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..errors import ConfigurationError, PermanentError, TransientError
from ..ports import DeliveryReceipt, PushMessage, PushSender, SmsMessage, SmsSender
from ..settings import HttpVendorSettings

__all__ = ["HttpPushSender", "HttpSmsSender", "JsonVendor"]

_RETRYABLE = {408, 425, 429}
EXCERPT = 200


class JsonVendor:
    """One pooled HTTP client for one vendor endpoint."""

    def __init__(self, settings: HttpVendorSettings, *, what: str) -> None:
        if not settings.url:
            raise ConfigurationError(f"BGJOBS_{what.upper()}__URL is not set")
        self.url = settings.url
        headers = {"User-Agent": "bgjobs"}
        if settings.token is not None:
            headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
        self.client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            follow_redirects=False,
        )

    def post(self, body: dict[str, Any], *, key: str | None) -> DeliveryReceipt:
        headers = {"Idempotency-Key": key} if key else {}
        try:
            response = self.client.post(self.url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientError(f"vendor timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"vendor unreachable: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            try:
                provider_id = str(response.json().get("id") or "")
            except ValueError:
                provider_id = ""
            return DeliveryReceipt(
                provider_message_id=provider_id or response.headers.get("x-request-id", "") or "unknown",
                duplicate=response.headers.get("idempotent-replayed", "").lower() == "true",
            )
        excerpt = response.text[:EXCERPT]
        if status in _RETRYABLE or status >= 500:
            raise TransientError(f"vendor answered {status}: {excerpt}")
        raise PermanentError(f"vendor refused the message with {status}: {excerpt}")

    def close(self) -> None:
        self.client.close()


class HttpSmsSender(SmsSender):
    """POSTs ``{"to", "body", "sender_id"}`` to ``BGJOBS_HTTP_SMS__URL``."""

    honours_idempotency_key = True

    def __init__(self, settings: HttpVendorSettings) -> None:
        self.vendor = JsonVendor(settings, what="http_sms")

    @classmethod
    def from_settings(cls, settings: Any) -> HttpSmsSender:
        return cls(settings.http_sms)

    def close(self) -> None:
        self.vendor.close()

    def _send(self, *, message: SmsMessage) -> DeliveryReceipt:
        body = {"to": message.to, "body": message.body, "sender_id": message.sender_id}
        return self.vendor.post(body, key=message.idempotency_key)


class HttpPushSender(PushSender):
    """POSTs ``{"tokens", "title", "body", "data"}`` to ``BGJOBS_HTTP_PUSH__URL``."""

    honours_idempotency_key = True

    def __init__(self, settings: HttpVendorSettings) -> None:
        self.vendor = JsonVendor(settings, what="http_push")

    @classmethod
    def from_settings(cls, settings: Any) -> HttpPushSender:
        return cls(settings.http_push)

    def close(self) -> None:
        self.vendor.close()

    def _send(self, *, message: PushMessage) -> DeliveryReceipt:
        body = {"tokens": list(message.tokens), "title": message.title, "body": message.body,
                "data": message.data}  # fmt: skip
        return self.vendor.post(body, key=message.idempotency_key)
