"""The portal in a real browser (Debian's chromium driven by Playwright) against a real worker, Redis,
SQLite and a receiver on 127.0.0.1: a merchant follows their link, adds an endpoint, receives a test
event, sees the attempt, replays it, rotates the secret and verifies the new signature, then turns a
notification off and it is not sent. Each page is saved under build/test-artifacts/portal/."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel
from standardwebhooks.webhooks import Webhook

from bgjobs import portal, runtime, webhooks
from bgjobs.notifications import Recipient, deliveries, send
from bgjobs.webhooks import _catalog
from tests.support.portal import SECRET, serving
from tests.support.receivers import WebhookReceiver, webhook_receiver
from tests.support.workers import ROOT, WorkerProcess, start_worker, use_environment, wait_for

ARTIFACTS = ROOT / "build" / "test-artifacts" / "portal"
ANN = Recipient(user_id="u1", email="ann@example.com", phone="+447700900123")
REMINDER = {
    "booking_id": "B1", "trip_date": "2025-06-15", "amount_due": {"amount": "80.00", "currency": "USD"},
    "days_until": 3,
}  # fmt: skip


class PaymentCompleted(BaseModel):
    payment_id: str
    amount_minor: int


@pytest.fixture
def merchant(
    worker_env: dict[str, str], workers: list[WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, WebhookReceiver]]:
    monkeypatch.setattr(_catalog, "_TYPES", {})
    webhooks.event_type("payment.completed", schema=PaymentCompleted, description="A payment went through",
                        example={"payment_id": "pay_1", "amount_minor": 1250})  # fmt: skip
    env = {
        **worker_env, "BGJOBS_WEBHOOKS__REQUIRE_HTTPS": "false", "BGJOBS_WEBHOOKS__ALLOW": '["127.0.0.1/32"]',
        "BGJOBS_NOTIFICATIONS__QUIET_HOURS_START": "00:00", "BGJOBS_NOTIFICATIONS__QUIET_HOURS_END": "00:00",
        "BGJOBS_PORTAL__SECRET": SECRET, "BGJOBS_PORTAL__BRAND_NAME": "Acme Travel",
        "BGJOBS_MAILER": "console",
    }  # fmt: skip
    with webhook_receiver() as receiver:

        def configure(port: int) -> None:
            use_environment(monkeypatch, {**env, "BGJOBS_PORTAL__BASE_URL": f"http://127.0.0.1:{port}/portal"})
            start_worker(workers, {**env, "BGJOBS_PORTAL__BASE_URL": f"http://127.0.0.1:{port}/portal"},
                         processes=1)  # fmt: skip

        with serving(configure) as base:
            yield base, receiver
    runtime.reset()


def _shot(tab: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _reload_until(tab: Any, text: str, what: str) -> None:
    def shown() -> bool:
        tab.reload()
        return text in tab.locator("main").inner_text()

    wait_for(shown, timeout=30, what=what)


def test_a_merchant_manages_an_endpoint_and_a_recipient_turns_a_notification_off(
    merchant: tuple[str, WebhookReceiver], page: Any
) -> None:
    base, receiver = merchant
    link = portal.link("merchant-1", scopes=("webhooks", "preferences"), recipient="u1", ttl="15m")
    # Log in through the link: the token leaves the address
    page.goto(link)
    assert page.url == f"{base}/webhooks" and "Acme Travel" in page.locator("header").inner_text()
    # Add an endpoint for one event of the catalog
    page.fill("input[name=url]", receiver.url("/merchant"))
    page.check("input[value='payment.completed']")
    page.fill("input[name=description]", "Payments to our books")
    page.click("text=Add endpoint")
    secret = page.locator("#secret").inner_text()
    assert secret.startswith("whsec_")
    _shot(page, "secret")
    page.click("text=Continue to the endpoint")
    # Send a test event: it reaches the receiver, signed with the secret shown once
    page.click("text=Send a test event")
    assert "A test event is on its way" in page.locator(".notice").inner_text()
    wait_for(lambda: receiver.received("/merchant"), timeout=30, what="the test event")
    first = receiver.received("/merchant")[0]
    assert Webhook(secret).verify(first.body, first.headers)["type"] == "webhook.test"
    # The attempt appears with its request and response; replay it
    _reload_until(page, "200", "the attempt in the log")
    page.locator("details").first.click()
    assert "webhook-signature: v1,••••••••" in page.locator("details pre").first.inner_text()
    _shot(page, "endpoint")
    page.locator("form[action$='/replay'] button").first.click()
    assert "being sent again" in page.locator(".notice").inner_text()
    wait_for(lambda: len(receiver.received("/merchant")) == 2, timeout=30, what="the replay")
    # Rotate the secret: the next event verifies with the new one
    page.click("text=Rotate secret")
    rotated = page.locator("#secret").inner_text()
    assert rotated.startswith("whsec_") and rotated != secret
    page.click("text=Continue to the endpoint")
    page.click("text=Send a test event")
    wait_for(lambda: len(receiver.received("/merchant")) == 3, timeout=30, what="an event after rotation")
    third = receiver.received("/merchant")[2]
    assert Webhook(rotated).verify(third.body, third.headers)["type"] == "webhook.test"
    page.click("nav >> text=Webhooks")
    assert "Payments to our books" in page.locator("main").inner_text()
    _shot(page, "webhooks")
    # Turn reminders by text message off: the next reminder's SMS is not sent, its email is
    page.click("nav >> text=Notifications")
    page.uncheck("input[value='reminders:sms']")
    assert page.locator("input[value='transactional:sms']").is_disabled()
    page.click("text=Save preferences")
    assert "Your preferences are saved." in page.locator(".notice").inner_text()
    _shot(page, "preferences")
    send("payment_reminder", ANN, REMINDER, key="browser:reminder")
    wanted = {"email": "sent", "sms": "skipped"}
    wait_for(lambda: {r.channel: r.status for r in deliveries(key="browser:reminder")} == wanted, timeout=30,
             what="the reminder's email sent, its SMS not")  # fmt: skip
    (sms,) = [r for r in deliveries(key="browser:reminder") if r.channel == "sms"]
    assert sms.reason == "user u1 turned off reminders by sms (their preferences)"
