"""An SMS adapter for a Twilio-style REST API: form-encoded, HTTP basic auth, 201 with the message sid."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from bgjobs.errors import PermanentError
from bgjobs.ports import DeliveryReceipt, SmsMessage, SmsSender

from .transport import HttpAdapter, VendorError, call

__all__ = ["TwilioStyleSms"]


class TwilioStyleSms(SmsSender, HttpAdapter):
    honours_idempotency_key = False

    def __init__(
        self, *, base_url: str, account_sid: str, auth_token: SecretStr, sender: str, timeout_s: float = 10.0
    ) -> None:
        self.path = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.sender = sender
        self.client = httpx.Client(
            base_url=base_url, timeout=timeout_s, auth=(account_sid, auth_token.get_secret_value())
        )

    def _send(self, *, message: SmsMessage) -> DeliveryReceipt:
        form = {"To": message.to, "From": message.sender_id or self.sender, "Body": message.body}
        try:
            response = call(self.client, "POST", self.path, data=form, safe_to_resend=False)
        except VendorError as exc:
            # e.g. 21211: not a valid phone number. Retrying cannot fix the number.
            raise PermanentError(f"SMS to {message.to[:4]}*** refused: {exc.body[:200]}") from exc
        return DeliveryReceipt(provider_message_id=response.json()["sid"])
