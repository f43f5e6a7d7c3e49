"""SMS, push and payments through a JSON-over-HTTP vendor API, with the idempotency key as a header.

Many vendors (and most in-house gateways) take one POST per message and honour an
``Idempotency-Key`` header: a second request with a key they have seen returns the first
result and sends nothing, flagged with ``Idempotent-Replayed: true``. These adapters speak
that shape; for a vendor with its own API, subclass the port instead (see docs/ports.md).

Responses map onto bgjobs's errors: 2xx is accepted; 408, 425, 429 and 5xx, timeouts and
connection errors are transient (retried); any other status is permanent (dead-lettered
with the status and the start of the body). Redirects are not followed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from pydantic import ValidationError

from ..errors import ConfigurationError, MaybeDelivered, TransientError, VendorRefused
from ..money import Money
from ..ports import (
    Balance,
    ChargeRequest,
    DeliveryReceipt,
    NoPaymentMethod,
    PaymentGateway,
    PaymentResult,
    PayoutRequest,
    PushMessage,
    PushSender,
    SmsMessage,
    SmsSender,
)
from ..settings import HttpVendorSettings

__all__ = ["HttpPaymentGateway", "HttpPushSender", "HttpSmsSender", "JsonVendor", "VendorRefused"]

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

    def request(
        self, method: str, path: str = "", *, body: dict[str, Any] | None = None, key: str | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:  # fmt: skip
        """One call, its failures mapped: 2xx returns; 408/425/429/5xx and network errors are
        transient; any other status is permanent."""
        headers = {"Idempotency-Key": key} if key else {}
        try:
            response = self.client.request(method, self.url + path, json=body, headers=headers, params=params)
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            # The request was (or may have been) sent: the vendor may have acted on it.
            what = type(exc).__name__
            raise MaybeDelivered(f"vendor did not answer after the request was sent: {what}") from exc
        except httpx.TimeoutException as exc:
            raise TransientError(f"vendor timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"vendor unreachable: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return response
        excerpt = response.text[:EXCERPT]
        if status in _RETRYABLE or status >= 500:
            raise TransientError(f"vendor answered {status}: {excerpt}")
        if status == 409 and key:
            # A conflict on a keyed request: another request with the same key is still in flight
            # (Stripe's idempotency_key_in_use). Its outcome is not known yet: ask again later.
            raise TransientError(f"vendor answered 409 (a request with key {key} is in flight): {excerpt}")
        raise VendorRefused(status, f"vendor refused the request with {status}: {excerpt}")

    def post(self, body: dict[str, Any], *, key: str | None) -> DeliveryReceipt:
        response = self.request("POST", body=body, key=key)
        try:
            provider_id = str(response.json().get("id") or "")
        except ValueError:
            provider_id = ""
        return DeliveryReceipt(
            provider_message_id=provider_id or response.headers.get("x-request-id", "") or "unknown",
            duplicate=response.headers.get("idempotent-replayed", "").lower() == "true",
        )

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


class HttpPaymentGateway(PaymentGateway):
    """A JSON payment API at ``BGJOBS_HTTP_PAYMENT__URL`` that honours ``Idempotency-Key``.

    ``POST /payouts`` ``{"payee_id", "amount", "currency", "description", "metadata"}`` and
    ``POST /charges`` ``{"customer_id", ...}`` answer ``{"id", "status", "amount", "currency"}``,
    the first answer again for a key seen before (a charge answered 402 means the customer has
    no payment method); ``GET /balance?currency=USD`` answers
    ``{"available": "1234.56", "currency": "USD"}``. Amounts are decimal strings, never floats.
    """

    def __init__(self, settings: HttpVendorSettings) -> None:
        self.vendor = JsonVendor(settings, what="http_payment")

    @classmethod
    def from_settings(cls, settings: Any) -> HttpPaymentGateway:
        return cls(settings.http_payment)

    def close(self) -> None:
        self.vendor.close()

    def _move(self, path: str, body: dict[str, Any], request: PayoutRequest | ChargeRequest) -> PaymentResult:
        body = {**body, "amount": str(request.amount.amount), "currency": request.amount.currency,
                "description": request.description, "metadata": request.metadata}  # fmt: skip
        answer = self.vendor.request("POST", path, body=body, key=request.idempotency_key).json()
        try:
            amount = Money(amount=Decimal(str(answer["amount"])), currency=answer["currency"])
            return PaymentResult(transaction_id=str(answer["id"]), status=answer["status"], amount=amount)
        except (KeyError, ValueError, ValidationError) as exc:
            raise TransientError(f"the gateway's answer is not understood: {exc}") from None

    def _payout(self, *, request: PayoutRequest) -> PaymentResult:
        return self._move("/payouts", {"payee_id": request.payee_id}, request)

    def _charge(self, *, request: ChargeRequest) -> PaymentResult:
        try:
            return self._move("/charges", {"customer_id": request.customer_id}, request)
        except VendorRefused as exc:
            if exc.status == 402:  # Payment Required: nothing to charge
                raise NoPaymentMethod(f"customer {request.customer_id} has no payment method") from exc
            raise

    def _balance(self, *, currency: str) -> Balance:
        answer = self.vendor.request("GET", "/balance", params={"currency": currency}).json()
        return Balance(available=Money(amount=Decimal(str(answer["available"])), currency=currency))
