"""A mail adapter for a JSON mail API (the shape of SendGrid's v3 ``/mail/send``)."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from bgjobs.ports import DeliveryReceipt, EmailMessage, Mailer

from .transport import HttpAdapter, call

__all__ = ["HttpMailApi"]


class HttpMailApi(Mailer, HttpAdapter):
    #: The API takes no idempotency key, so a send is never retried once the request left.
    honours_idempotency_key = False

    def __init__(self, *, base_url: str, api_key: SecretStr, sender: str, timeout_s: float = 10.0) -> None:
        self.sender = sender
        self.client = httpx.Client(
            base_url=base_url, timeout=timeout_s,
            headers={"Authorization": f"Bearer {api_key.get_secret_value()}"},
        )  # fmt: skip

    def _send(self, *, message: EmailMessage) -> DeliveryReceipt:
        content = [{"type": "text/plain", "value": message.text}]
        if message.html:
            content.append({"type": "text/html", "value": message.html})
        body = {
            "personalizations": [{"to": [{"email": to} for to in message.to]}],
            "from": {"email": message.sender or self.sender},
            "subject": message.subject,
            "content": content,
            "headers": dict(message.headers),
            # Kept by the provider with the message, so support can match it to bgjobs's log.
            "custom_args": {"idempotency_key": message.idempotency_key or ""},
        }
        if message.reply_to:
            body["reply_to"] = {"email": message.reply_to}
        response = call(self.client, "POST", "/v3/mail/send", json=body, safe_to_resend=False)
        return DeliveryReceipt(provider_message_id=response.headers.get("x-message-id", ""))
