"""Notifications through real servers on 127.0.0.1: SMTP (aiosmtpd) and a JSON vendor API for SMS and push."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from bgjobs.adapters.http import HttpPushSender, HttpSmsSender
from bgjobs.adapters.smtp import SmtpMailer, message_id_for
from bgjobs.notifications import Recipient, deliveries, send
from bgjobs.settings import HttpVendorSettings, SmtpSettings
from bgjobs.testing import JobsHarness
from bgjobs.wiring import configure as wire
from tests.support.receivers import HttpVendor, SmtpReceiver, http_vendor

ANN = Recipient(user_id="u1", email="ann@example.com", phone="+447700900123", push_tokens=("tok-ann-1",))
BOOKING = {"booking_id": "B1", "trip_date": "2025-06-15", "total": {"amount": "500.00", "currency": "USD"}}


@pytest.fixture
def database_url(tmp_path: object) -> str:  # these tests are about the channels: SQLite is enough
    return f"sqlite:///{tmp_path}/n.db"


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture
def vendor() -> Iterator[HttpVendor]:
    with http_vendor() as v:
        yield v


def wire_vendor(vendor: HttpVendor, *, timeout_s: float = 5.0) -> None:
    def settings(path: str) -> HttpVendorSettings:
        return HttpVendorSettings(url=vendor.url + path, token="t0ken", timeout_s=timeout_s)  # type: ignore[arg-type]

    wire(sms=HttpSmsSender(settings("/sms")), push=HttpPushSender(settings("/push")))


def test_email_over_smtp_has_headers_both_bodies_and_one_message_id_across_a_retry(
    harness: Callable[..., JobsHarness], smtp: SmtpReceiver
) -> None:
    jobs = harness()
    wire(mailer=SmtpMailer(SmtpSettings(host="127.0.0.1", port=smtp.port, sender="trips@example.com")))
    smtp.fail_next_data()
    send("booking_confirmation", ANN.model_copy(update={"name": "Ann"}), BOOKING, key="booking:B1:confirmed",
         channels=["email"])  # fmt: skip
    jobs.drain()
    (refused,) = smtp.refused
    (mail,) = smtp.messages
    expected_id = message_id_for("notif:booking:B1:confirmed:email", "bgjobs.local")
    assert refused["Message-ID"] == mail["Message-ID"] == expected_id
    assert (mail["From"], mail["To"], mail["Subject"]) == ("trips@example.com", "ann@example.com",
                                                           "Booking B1 confirmed")  # fmt: skip
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(preferencelist=("plain",))
    html = mail.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert "Hello Ann," in text.get_content() and "Total: $500.00" in text.get_content()
    assert "<strong>B1</strong>" in html.get_content()
    (row,) = deliveries(key="booking:B1:confirmed")
    assert (row.status, row.attempts, row.provider_message_id) == ("sent", 2, expected_id)


def test_sms_and_push_reach_the_vendor_with_key_token_and_body(
    harness: Callable[..., JobsHarness], vendor: HttpVendor
) -> None:
    jobs = harness()
    wire_vendor(vendor)
    send("booking_confirmation", ANN, BOOKING, key="booking:B1:confirmed", channels=["sms", "push"])
    jobs.drain()
    sms = vendor.delivered("/sms")
    push = vendor.delivered("/push")
    body = "Booking B1 confirmed for 2025-06-15. Total $500.00."
    assert sms == {"notif:booking:B1:confirmed:sms": {"to": "+447700900123", "body": body, "sender_id": None}}
    ((push_key, push_body),) = push.items()
    assert push_key == "notif:booking:B1:confirmed:push"
    assert push_body["tokens"] == ["tok-ann-1"] and push_body["title"] == "Booking confirmed"
    assert {r.authorization for r in vendor.requests} == {"Bearer t0ken"}
    log = {r.channel: r for r in deliveries(key="booking:B1:confirmed")}
    assert log["sms"].provider_message_id == "/sms:notif:booking:B1:confirmed:sms"


def test_a_vendor_5xx_retries_only_that_channel(
    harness: Callable[..., JobsHarness], vendor: HttpVendor, smtp: SmtpReceiver
) -> None:
    jobs = harness()
    wire_vendor(vendor)
    wire(mailer=SmtpMailer(SmtpSettings(host="127.0.0.1", port=smtp.port)))
    vendor.script = [500, 503]
    send("booking_confirmation", ANN, BOOKING, key="booking:B2:confirmed", channels=["email", "sms"])
    jobs.drain()
    assert len(smtp.messages) == 1
    assert list(vendor.delivered("/sms")) == ["notif:booking:B2:confirmed:sms"]
    log = {r.channel: r for r in deliveries(key="booking:B2:confirmed")}
    assert (log["sms"].status, log["sms"].attempts) == ("sent", 3)
    assert (log["email"].status, log["email"].attempts) == ("sent", 1)


def test_a_vendor_timeout_is_retried(harness: Callable[..., JobsHarness], vendor: HttpVendor) -> None:
    jobs = harness()
    wire_vendor(vendor, timeout_s=0.3)
    vendor.script = ["sleep:1"]
    send("booking_confirmation", ANN, BOOKING, key="booking:B3:confirmed", channels=["sms"])
    jobs.drain()
    (row,) = deliveries(key="booking:B3:confirmed")
    assert (row.status, row.attempts) == ("sent", 2)
    assert list(vendor.delivered("/sms")) == ["notif:booking:B3:confirmed:sms"]


def test_a_vendor_4xx_dead_letters_that_channel_with_the_reason(
    harness: Callable[..., JobsHarness], vendor: HttpVendor
) -> None:
    jobs = harness()
    wire_vendor(vendor)
    vendor.script = [400]
    send("booking_confirmation", ANN, BOOKING, key="booking:B4:confirmed", channels=["sms", "push"])
    jobs.drain()
    (dead,) = jobs.dead_letters
    assert dead.actor_name == "notifications.sms" or dead.actor_name == "notifications.push"
    assert "vendor refused the request with 400" in jobs.reason(dead)
    log = {r.channel: r for r in deliveries(key="booking:B4:confirmed")}
    failed = dead.actor_name.rsplit(".", 1)[1]
    other = "push" if failed == "sms" else "sms"
    assert (log[failed].status, log[failed].attempts) == ("dead", 1)
    assert "scripted 400" in (log[failed].reason or "")
    assert log[other].status == "sent"


def test_a_replayed_key_is_recorded_as_the_vendors_duplicate(
    harness: Callable[..., JobsHarness], vendor: HttpVendor
) -> None:
    jobs = harness()
    wire_vendor(vendor)
    vendor.accepted["notif:booking:B5:confirmed:sms"] = ("/sms", {"to": "+447700900123"})  # an earlier life
    send("booking_confirmation", ANN, BOOKING, key="booking:B5:confirmed", channels=["sms"])
    jobs.drain()
    assert vendor.replays == 1
    (row,) = deliveries(key="booking:B5:confirmed")
    assert (row.status, row.possible_duplicate) == ("sent", False)
