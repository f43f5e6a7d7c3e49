"""A vendor's error text full of secrets and personal details (tests/support/secrets_corpus.py)
goes through every exit of the process: the worker's log (bgjobs's lines and Dramatiq's retry
warning), the dead letter's reason and traceback, the console, the notification delivery log and
its spans, and the webhook attempt log. None of it shows unmasked. Real worker, Redis, HTTP vendor
and receiver on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from bgjobs import deadletters, runtime, webhooks
from bgjobs.adapters.http import HttpSmsSender
from bgjobs.console import create_app
from bgjobs.notifications import Recipient, deliveries, send
from bgjobs.settings import HttpVendorSettings, WebhookSettings, get_settings
from bgjobs.testing import JobsHarness
from bgjobs.wiring import configure as wire
from tests.support import worker_jobs
from tests.support.console import ConsoleServer
from tests.support.receivers import HttpVendor, http_vendor, webhook_receiver
from tests.support.secrets_corpus import TEXT, leaked
from tests.support.workers import WorkerProcess, broker_client, start_worker, wait_for


@pytest.fixture
def vendor() -> Iterator[HttpVendor]:
    with http_vendor() as v:
        yield v


def test_the_worker_log_the_dead_letter_and_the_console_show_no_secret(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    client = broker_client(worker_env)
    client.set("test:refusing", "1")
    w = start_worker(workers, worker_env, processes=1)
    worker_jobs.refused.send({"key": TEXT, "sleep_s": 0})  # refused for good: a dead letter
    worker_jobs.flaky_once.send({"key": TEXT, "sleep_s": 0})  # fails once: Dramatiq's retry warning
    wait_for(lambda: client.zcard("dramatiq:default.XQ") == 1, timeout=30, what="the dead letter")
    wait_for(lambda: client.get(f"test:flaky:{TEXT}") == b"2", timeout=30, what="the retry")
    wait_for(lambda: "Retrying message" in w.output() or "will retry" in w.output().lower(), timeout=30,
             what="Dramatiq's retry line")  # fmt: skip

    output = w.output()
    assert "dead-lettering" in output and "PermanentError: vendor refused vendor answered 503" in output
    assert leaked(output) == []
    (letter,) = deadletters.dead_letters()
    assert letter.reason.startswith("PermanentError: vendor refused vendor answered 503: ")
    assert letter.traceback and "PermanentError" in letter.traceback
    assert leaked(letter.reason) == [] and leaked(letter.traceback) == []
    with ConsoleServer(create_app(get_settings())) as console, httpx.Client(base_url=console.url) as api:
        shown = api.get(f"/api/v1/dead-letters/{letter.redis_id}").json()
        listed = api.get("/api/v1/dead-letters").text
        page = api.get(f"/dead-letters/{letter.redis_id}").text
    assert shown["reason"] == letter.reason
    assert leaked(str(shown)) == [] and leaked(listed) == [] and leaked(page) == []


def test_a_vendor_s_answer_reaches_neither_the_delivery_log_nor_a_span(
    harness: Callable[..., JobsHarness], vendor: HttpVendor, host_spans: Any
) -> None:
    jobs = harness(tracing=True)
    wire(sms=HttpSmsSender(HttpVendorSettings(url=vendor.url + "/sms", token="t0ken")))  # type: ignore[arg-type]
    vendor.script = [(503, {"error": TEXT})] * 4  # every attempt (3 retries)
    host_spans.clear()
    send("booking_confirmation", Recipient(user_id="u1", phone="+447700900123"),
         {"booking_id": "B1", "trip_date": "2025-06-15", "total": {"amount": "500.00", "currency": "USD"}},
         key="booking:B1:confirmed", channels=["sms"])  # fmt: skip
    jobs.drain()
    (row,) = deliveries(key="booking:B1:confirmed")
    assert row.status == "dead" and row.reason and "vendor answered 503" in row.reason
    assert leaked(row.reason) == []
    spans = host_spans.get_finished_spans()
    failed = [s for s in spans if s.status.description]
    assert {s.name for s in failed} >= {"sms.send"}
    shown = [s.status.description for s in spans]
    shown += [str(dict(e.attributes or {})) for s in spans for e in s.events]
    assert leaked(" ".join(x for x in shown if x)) == []


def test_a_receiver_s_answer_reaches_no_attempt_log_unmasked(harness: Callable[..., JobsHarness]) -> None:
    jobs = harness(webhooks=WebhookSettings(require_https=False, allow=["127.0.0.1/32"], jitter=0.0,
                                            retry_schedule_s=[]))  # fmt: skip
    with webhook_receiver() as receiver:
        receiver.script("/in", (500, {}, {"error": TEXT}))
        webhooks.add_endpoint(receiver.url("/in"), event_types=["*"])
        sent = webhooks.publish("booking.created", {"booking_id": "B1"})
        jobs.drain()
    (attempt,) = webhooks.attempts(sent)
    assert attempt.status_code == 500 and attempt.response and "vendor answered 503" in attempt.response
    assert leaked(attempt.response) == [] and leaked(attempt.error) == []
    with ConsoleServer(create_app(runtime.current().settings)) as console, httpx.Client(
            base_url=console.url) as api:  # fmt: skip
        assert leaked(api.get(f"/api/v1/webhooks/messages/{sent}/attempts").text) == []
        assert leaked(api.get("/api/v1/webhooks/messages").text) == []
