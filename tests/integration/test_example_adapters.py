"""examples/adapters: each custom adapter against a real HTTP server on 127.0.0.1, request shape first."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from bgjobs.errors import PermanentError, TransientError
from bgjobs.money import Money
from bgjobs.ports import ChargeRequest, EmailMessage, NoPaymentMethod, PayoutRequest, PushMessage, SmsMessage
from examples.adapters.fcm_push import FcmStylePush
from examples.adapters.mail_api import HttpMailApi
from examples.adapters.object_storage import HttpObjectStorage, signature
from examples.adapters.stripe_payment import StripeStylePayments
from examples.adapters.transport import HttpAdapter
from examples.adapters.twilio_sms import TwilioStyleSms
from tests.support.recording_server import Answer, RecordingServer, recording_server

A = TypeVar("A", bound=HttpAdapter)


@pytest.fixture
def vendor() -> Iterator[RecordingServer]:
    with recording_server() as server:
        yield server
    for adapter in _opened:
        adapter.close()
    _opened.clear()


_opened: list[HttpAdapter] = []


def opened(adapter: A) -> A:
    _opened.append(adapter)
    return adapter


def _form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode()).items()}


def test_mail_api_posts_the_message_as_json_with_the_key_and_never_resends_after_a_5xx(
    vendor: RecordingServer,
) -> None:
    mailer = opened(HttpMailApi(base_url=vendor.url, api_key=SecretStr("SG.key"), sender="shop@example.com"))
    vendor.answer(Answer(202, headers={"X-Message-Id": "m-1"}))
    message = EmailMessage(
        to=("ann@example.com",), subject="Booked", text="See you", html="<p>See you</p>",
        idempotency_key="booking:B1",
    )  # fmt: skip
    receipt = mailer.send(message=message)
    (sent,) = vendor.requests
    assert (sent.method, sent.path, sent.headers["authorization"]) == (
        "POST",
        "/v3/mail/send",
        "Bearer SG.key",
    )
    body = json.loads(sent.body)
    assert body["personalizations"] == [{"to": [{"email": "ann@example.com"}]}]
    assert body["from"] == {"email": "shop@example.com"} and body["subject"] == "Booked"
    assert body["content"] == [
        {"type": "text/plain", "value": "See you"},
        {"type": "text/html", "value": "<p>See you</p>"},
    ]
    assert body["custom_args"] == {"idempotency_key": "booking:B1"}
    assert receipt.provider_message_id == "m-1"

    vendor.answer(Answer(503))
    with pytest.raises(TransientError, match="503"):
        mailer.send(message=EmailMessage(to=("ann@example.com",), subject="s", text="t"))
    assert len(vendor.requests) == 2  # no key the API honours: one try, the job's retry decides


def test_twilio_style_sms_is_form_encoded_with_basic_auth_and_a_bad_number_is_permanent(
    vendor: RecordingServer,
) -> None:
    sms = opened(
        TwilioStyleSms(
            base_url=vendor.url, account_sid="AC123", auth_token=SecretStr("tok"), sender="+15005550006"
        )
    )
    vendor.answer(Answer(201, json.dumps({"sid": "SM42"}).encode()))
    assert sms.send(message=SmsMessage(to="+447700900123", body="Booked!")).provider_message_id == "SM42"
    (sent,) = vendor.requests
    assert sent.path == "/2010-04-01/Accounts/AC123/Messages.json"
    assert sent.headers["authorization"] == "Basic " + base64.b64encode(b"AC123:tok").decode()
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert _form(sent.body) == {"To": "+447700900123", "From": "+15005550006", "Body": "Booked!"}

    vendor.answer(Answer(400, b'{"code": 21211, "message": "The To number is not valid"}'))
    with pytest.raises(PermanentError, match="21211"):
        sms.send(message=SmsMessage(to="+447700900124", body="x"))


def test_fcm_style_push_sends_one_request_per_token_and_drops_unregistered_ones(
    vendor: RecordingServer,
) -> None:
    tokens = iter(["t-1", "t-2"])
    push = opened(FcmStylePush(base_url=vendor.url, project="shop", access_token=lambda: next(tokens)))
    gone = b'{"error": {"status": "NOT_FOUND", "details": [{"errorCode": "UNREGISTERED"}]}}'
    vendor.answer(Answer(200, b'{"name": "projects/shop/messages/1"}'), Answer(404, gone))
    receipt = push.send(
        message=PushMessage(tokens=("dev-a", "dev-b"), title="Booked", body="B1", data={"id": "B1"})
    )
    assert receipt.provider_message_id == "projects/shop/messages/1"
    first, second = vendor.requests
    assert first.path == "/v1/projects/shop/messages:send"
    assert [r.headers["authorization"] for r in (first, second)] == [
        "Bearer t-1",
        "Bearer t-2",
    ]  # refreshed per call
    notification = {"title": "Booked", "body": "B1"}
    assert json.loads(first.body) == {
        "message": {"token": "dev-a", "notification": notification, "data": {"id": "B1"}}
    }
    assert json.loads(second.body)["message"]["token"] == "dev-b"

    push.access_token = lambda: "t"
    vendor.answer(Answer(404, b'{"error": {"details": [{"errorCode": "UNREGISTERED"}]}}'))
    with pytest.raises(PermanentError, match="no registered device"):
        push.send(message=PushMessage(tokens=("gone",), title="x", body="y"))


def test_stripe_style_payout_sends_minor_units_with_the_key_and_retries_a_blip_with_the_same_key(
    vendor: RecordingServer,
) -> None:
    gateway = opened(StripeStylePayments(base_url=vendor.url, secret_key=SecretStr("sk_test")))
    transfer = json.dumps({"id": "tr_1", "amount": 48000, "currency": "usd", "status": "paid"}).encode()
    vendor.answer(Answer(drop=True), Answer(502), Answer(200, transfer))
    request = PayoutRequest(
        payee_id="acct_v1", amount=Money(amount=Decimal("480.00"), currency="USD"),
        idempotency_key="payout:w23:v1:USD", description="week 23", metadata={"run": "w23"},
    )  # fmt: skip
    result = gateway.payout(request=request)
    assert (result.transaction_id, result.status, result.amount) == (
        "tr_1",
        "succeeded",
        Money.from_minor(48000, "USD"),
    )
    assert len(vendor.requests) == 3
    assert {r.headers["idempotency-key"] for r in vendor.requests} == {"payout:w23:v1:USD"}
    assert {r.body for r in vendor.requests} == {vendor.requests[0].body}  # resent exactly
    form = _form(vendor.requests[0].body)
    assert form == {"amount": "48000", "currency": "usd", "description": "week 23", "metadata[run]": "w23",
                    "destination": "acct_v1"}  # fmt: skip
    assert (
        vendor.requests[0].path == "/v1/transfers"
        and vendor.requests[0].headers["authorization"] == "Bearer sk_test"
    )

    vendor.answer(Answer(503), Answer(503), Answer(503))
    with pytest.raises(TransientError, match="3 attempts"):
        gateway.payout(
            request=PayoutRequest(payee_id="a", amount=Money.from_minor(100, "USD"), idempotency_key="k2")
        )


def test_stripe_style_charges_map_declines_and_missing_payment_methods(vendor: RecordingServer) -> None:
    gateway = opened(StripeStylePayments(base_url=vendor.url, secret_key=SecretStr("sk_test")))
    charge = ChargeRequest(
        customer_id="cus_1", amount=Money.from_minor(2500, "EUR"), idempotency_key="charge:c1"
    )
    vendor.answer(Answer(402, b'{"error": {"code": "card_declined"}}'))
    with pytest.raises(PermanentError, match="declined"):
        gateway.charge(request=charge)
    vendor.answer(Answer(400, b'{"error": {"code": "parameter_missing", "param": "payment_method"}}'))
    with pytest.raises(NoPaymentMethod):
        gateway.charge(request=charge)
    assert (
        _form(vendor.requests[0].body)["customer"] == "cus_1"
        and vendor.requests[0].path == "/v1/payment_intents"
    )
    vendor.answer(Answer(200, b'{"available": [{"amount": 123456, "currency": "eur"}]}'))
    assert gateway.balance(currency="EUR").available == Money(amount=Decimal("1234.56"), currency="EUR")


def test_object_storage_spools_resends_a_put_after_a_blip_streams_back_and_signs_urls(
    vendor: RecordingServer,
) -> None:
    storage = opened(HttpObjectStorage(base_url=vendor.url, bucket="exports", token=SecretStr("t0k"),
                                url_secret=SecretStr("url-secret")))  # fmt: skip
    chunks = [b"id,total\n", b"1,10.00\n" * 1000]
    vendor.answer(Answer(503), Answer(200))
    stored = storage.put(key="2025-06/report.csv", chunks=iter(chunks), content_type="text/csv")
    first, second = vendor.requests
    assert first.method == second.method == "PUT" and first.path == "/exports/2025-06/report.csv"
    assert first.body == second.body == b"".join(chunks)  # the spooled body, whole, both times
    assert second.headers["content-type"] == "text/csv" and second.headers["authorization"] == "Bearer t0k"
    assert stored.size == len(b"".join(chunks)) and stored.sha256 == second.headers["x-content-sha256"]

    vendor.answer(Answer(200, b"id,total\n1,10.00\n"))
    assert b"".join(storage.open(key="2025-06/report.csv")) == b"id,total\n1,10.00\n"
    vendor.answer(Answer(404))
    with pytest.raises(PermanentError, match="no object"):
        storage.open(key="missing.csv")
    vendor.answer(Answer(404))
    storage.delete(key="missing.csv")  # already gone is fine
    assert vendor.requests[-1].method == "DELETE"

    url = urlsplit(storage.url(key="2025-06/report.csv", expires_in=600))
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert url.path == "/exports/2025-06/report.csv" and 590 <= int(query["expires"]) - time.time() <= 600
    assert query["signature"] == signature("url-secret", url.path, int(query["expires"]))
