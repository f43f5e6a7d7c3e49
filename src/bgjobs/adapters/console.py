"""Adapters that log what they would send: for development, never for production."""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal

from ..money import Money
from ..ports import (
    Balance,
    ChargeRequest,
    DeliveryReceipt,
    EmailMessage,
    Mailer,
    PaymentGateway,
    PaymentResult,
    PayoutRequest,
    PushMessage,
    PushSender,
    SmsMessage,
    SmsSender,
)
from ..redact import mask_email, mask_phone

logger = logging.getLogger("bgjobs.console")


def _receipt(prefix: str) -> DeliveryReceipt:
    return DeliveryReceipt(provider_message_id=f"{prefix}_{uuid.uuid4().hex[:16]}")


class ConsoleMailer(Mailer):
    def _send(self, *, message: EmailMessage) -> DeliveryReceipt:
        logger.info("email to %s: %s", ", ".join(mask_email(a) for a in message.to), message.subject)
        return _receipt("console")


class ConsoleSmsSender(SmsSender):
    def _send(self, *, message: SmsMessage) -> DeliveryReceipt:
        logger.info("sms to %s: %d characters", mask_phone(message.to), len(message.body))
        return _receipt("console")


class ConsolePushSender(PushSender):
    def _send(self, *, message: PushMessage) -> DeliveryReceipt:
        logger.info("push to %d device(s): %s", len(message.tokens), message.title)
        return _receipt("console")


class ConsolePaymentGateway(PaymentGateway):
    """Logs payouts and charges and pretends they succeeded; reports a fixed balance."""

    def __init__(self, *, balance: str = "100000") -> None:
        self._balance_amount = balance

    def _payout(self, *, request: PayoutRequest) -> PaymentResult:
        logger.info("payout %s %s to %s", request.amount.amount, request.amount.currency, request.payee_id)
        return PaymentResult(
            transaction_id=f"po_{request.idempotency_key}", status="succeeded", amount=request.amount
        )

    def _charge(self, *, request: ChargeRequest) -> PaymentResult:
        logger.info("charge %s %s to %s", request.amount.amount, request.amount.currency, request.customer_id)
        return PaymentResult(
            transaction_id=f"ch_{request.idempotency_key}", status="succeeded", amount=request.amount
        )

    def _balance(self, *, currency: str) -> Balance:
        return Balance(available=Money(amount=Decimal(self._balance_amount), currency=currency))
