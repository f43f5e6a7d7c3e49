"""A payment adapter for a Stripe-style API: form-encoded, amounts in minor units, Idempotency-Key.

The idempotency key bgjobs gives each payout and charge goes in the ``Idempotency-Key`` header;
the vendor answers a repeat with the first result and moves no money. That makes every call
safe to resend, so transport blips are retried in place (tenacity) before the job itself is.
"""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from bgjobs.errors import PermanentError, TransientError
from bgjobs.money import Money
from bgjobs.ports import Balance, ChargeRequest, NoPaymentMethod, PaymentGateway, PaymentResult, PayoutRequest

from .transport import HttpAdapter, VendorError, call

__all__ = ["StripeStylePayments"]


def _form(amount: Money, description: str, metadata: dict[str, str]) -> dict[str, str]:
    form = {
        "amount": str(amount.minor_units),
        "currency": amount.currency.lower(),
        "description": description,
    }
    form.update({f"metadata[{k}]": v for k, v in metadata.items()})
    return form


class StripeStylePayments(PaymentGateway, HttpAdapter):
    def __init__(self, *, base_url: str, secret_key: SecretStr, timeout_s: float = 20.0) -> None:
        self.client = httpx.Client(
            base_url=base_url, timeout=timeout_s,
            headers={"Authorization": f"Bearer {secret_key.get_secret_value()}"},
        )  # fmt: skip

    def _post(self, path: str, form: dict[str, str], key: str) -> PaymentResult:
        try:
            response = call(
                self.client, "POST", path, data=form, headers={"Idempotency-Key": key}, safe_to_resend=True
            )
        except VendorError as exc:
            if exc.status == 409 and "idempotency_key_in_use" in exc.body:
                # Another request with this key is still being processed: its outcome decides.
                raise TransientError(f"request {key} is still in flight at the gateway") from exc
            raise
        body = response.json()
        status = "pending" if body.get("status") in ("pending", "processing") else "succeeded"
        amount = Money.from_minor(int(body["amount"]), body["currency"].upper())
        return PaymentResult(transaction_id=body["id"], status=status, amount=amount)

    def _payout(self, *, request: PayoutRequest) -> PaymentResult:
        form = {
            **_form(request.amount, request.description, request.metadata),
            "destination": request.payee_id,
        }
        return self._post("/v1/transfers", form, request.idempotency_key)

    def _charge(self, *, request: ChargeRequest) -> PaymentResult:
        form = _form(request.amount, request.description, request.metadata)
        form.update(customer=request.customer_id, confirm="true", off_session="true")
        try:
            return self._post("/v1/payment_intents", form, request.idempotency_key)
        except VendorError as exc:
            if "payment_method" in exc.body and ("missing" in exc.body or "required" in exc.body):
                raise NoPaymentMethod(f"customer {request.customer_id} has no payment method") from exc
            if exc.status == 402:
                raise PermanentError(f"charge declined: {exc.body[:200]}") from exc
            raise

    def _balance(self, *, currency: str) -> Balance:
        response = call(self.client, "GET", "/v1/balance", safe_to_resend=True)
        for entry in response.json()["available"]:
            if entry["currency"].upper() == currency:
                return Balance(available=Money.from_minor(int(entry["amount"]), currency))
        return Balance(available=Money.from_minor(0, currency))
