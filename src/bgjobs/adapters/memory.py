"""In-memory adapters that record everything: for users' unit tests and the stub broker.

Each instance has its own state and a switch to fail on demand, and each
honours idempotency keys the way a good provider does: a key seen before
returns the first result and sends nothing.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Generic, TypeVar

from ..errors import PermanentError
from ..money import Money
from ..ports import (
    Balance,
    ChargeRequest,
    DeliveryReceipt,
    EmailMessage,
    Mailer,
    NoPaymentMethod,
    PaymentGateway,
    PaymentResult,
    PayoutRequest,
    PushMessage,
    PushSender,
    SmsMessage,
    SmsSender,
    Storage,
    StoredObject,
)

__all__ = [
    "MemoryMailer",
    "MemoryPaymentGateway",
    "MemoryPushSender",
    "MemorySmsSender",
    "MemoryStorage",
]


class _Failing:
    """Fail the next ``times`` calls with ``error``: how tests make a vendor misbehave."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[BaseException] = []

    def fail_next(self, error: BaseException, *, times: int = 1) -> None:
        with self._lock:
            self._failures.extend([error] * times)

    def _maybe_fail(self) -> None:
        with self._lock:
            if self._failures:
                raise self._failures.pop(0)


M = TypeVar("M", EmailMessage, SmsMessage, PushMessage)


class _Outbox(_Failing, Generic[M]):
    honours_idempotency_key = True

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[M] = []
        self._by_key: dict[str, DeliveryReceipt] = {}

    def _record(self, message: M) -> DeliveryReceipt:
        self._maybe_fail()
        with self._lock:
            key = message.idempotency_key
            if key is not None and key in self._by_key:
                return self._by_key[key].model_copy(update={"duplicate": True})
            receipt = DeliveryReceipt(provider_message_id=f"mem_{uuid.uuid4().hex[:16]}")
            self.sent.append(message)
            if key is not None:
                self._by_key[key] = receipt
            return receipt


class MemoryMailer(_Outbox[EmailMessage], Mailer):
    def _send(self, *, message: EmailMessage) -> DeliveryReceipt:
        return self._record(message)


class MemorySmsSender(_Outbox[SmsMessage], SmsSender):
    def _send(self, *, message: SmsMessage) -> DeliveryReceipt:
        return self._record(message)


class MemoryPushSender(_Outbox[PushMessage], PushSender):
    def _send(self, *, message: PushMessage) -> DeliveryReceipt:
        return self._record(message)


class MemoryPaymentGateway(_Failing, PaymentGateway):
    """Keeps payouts and charges by idempotency key, and a balance per currency."""

    def __init__(self, *, balances: dict[str, Decimal] | None = None, no_method: Iterable[str] = ()) -> None:
        super().__init__()
        self.balances: dict[str, Decimal] = dict(balances or {})
        self.payouts: dict[str, PayoutRequest] = {}
        self.charges: dict[str, ChargeRequest] = {}
        self.customers_without_method = set(no_method)

    def _payout(self, *, request: PayoutRequest) -> PaymentResult:
        self._maybe_fail()
        with self._lock:
            first = self.payouts.setdefault(request.idempotency_key, request)
        return PaymentResult(
            transaction_id=f"po_{request.idempotency_key}", status="succeeded", amount=first.amount
        )

    def _charge(self, *, request: ChargeRequest) -> PaymentResult:
        self._maybe_fail()
        if request.customer_id in self.customers_without_method:
            raise NoPaymentMethod(f"customer {request.customer_id} has no payment method")
        with self._lock:
            first = self.charges.setdefault(request.idempotency_key, request)
        return PaymentResult(
            transaction_id=f"ch_{request.idempotency_key}", status="succeeded", amount=first.amount
        )

    def _balance(self, *, currency: str) -> Balance:
        self._maybe_fail()
        return Balance(available=Money(amount=self.balances.get(currency, Decimal(0)), currency=currency))


class MemoryStorage(_Failing, Storage):
    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[str, bytes] = {}

    def _put(self, *, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        self._maybe_fail()
        data = b"".join(chunks)
        with self._lock:
            self.objects[key] = data
        return StoredObject(
            key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest(), content_type=content_type
        )

    def _open(self, *, key: str) -> Iterator[bytes]:
        try:
            return iter([self.objects[key]])
        except KeyError:
            raise PermanentError(f"no object under {key!r}") from None

    def _delete(self, *, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)

    def _url(self, *, key: str, expires_in: int) -> str:
        return f"memory://{key}"
