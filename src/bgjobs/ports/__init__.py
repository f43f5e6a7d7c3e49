"""The interfaces integrators implement to reach their vendors."""

from ..errors import NoPaymentMethod
from ..money import Money
from ._base import DeliveryReceipt, PortModel
from .mail import EmailMessage, Mailer
from .payment import Balance, ChargeRequest, PaymentGateway, PaymentResult, PayoutRequest
from .push import PushMessage, PushSender
from .sms import SmsMessage, SmsSender
from .storage import Storage, StoredObject, check_key

__all__ = [
    "Balance",
    "ChargeRequest",
    "DeliveryReceipt",
    "EmailMessage",
    "Mailer",
    "Money",
    "NoPaymentMethod",
    "PaymentGateway",
    "PaymentResult",
    "PayoutRequest",
    "PortModel",
    "PushMessage",
    "PushSender",
    "SmsMessage",
    "SmsSender",
    "Storage",
    "StoredObject",
    "check_key",
]
