"""Webhooks delivered by a stub worker to real HTTP endpoints on 127.0.0.1, on SQLite and PostgreSQL.

Every request is checked with the reference ``standardwebhooks`` package.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bgjobs import db, events, webhooks, wiring
from bgjobs.errors import InvalidPayload
from bgjobs.settings import WebhookSettings
from bgjobs.testing import JobsHarness
from bgjobs.typed import actor
from bgjobs.webhooks import _models as webhook_tables
from bgjobs.webhooks._models import EndpointRow
from tests.support.receivers import Received, WebhookReceiver, webhook_receiver
from tests.support.workers import wait_for

Start = Callable[..., JobsHarness]


def settings(**overrides: Any) -> WebhookSettings:
    values: dict[str, Any] = {
        "require_https": False, "allow": ["127.0.0.1/32"], "retry_schedule_s": [0.05, 0.05], "jitter": 0.0,
    }  # fmt: skip
    return WebhookSettings(**{**values, **overrides})


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


def verified(request: Received, secret: str) -> Any:
    return Webhook(secret).verify(request.body, request.headers)


def deliveries(message_id: str) -> list[webhook_tables.WebhookDelivery]:
    with db.session() as s:
        table = webhook_tables.WebhookDelivery
        return list(s.exec(select(table).where(table.message_id == message_id)))


def test_a_message_reaches_each_subscribed_endpoint_signed_by_the_standard(
    harness: Start, receiver: WebhookReceiver
) -> None:
    # Given endpoints subscribed exactly, by wildcard, to another type, and of another owner
    jobs = harness(webhooks=settings())
    exact = webhooks.add_endpoint(receiver.url("/exact"), event_types=["payment.succeeded"], owner="m1")
    wild = webhooks.add_endpoint(receiver.url("/wild"), event_types=["payment.*"], owner="m1")
    webhooks.add_endpoint(receiver.url("/other-type"), event_types=["refund.created"], owner="m1")
    webhooks.add_endpoint(receiver.url("/other-owner"), event_types=["*"], owner="m2")

    # When
    message_id = webhooks.publish("payment.succeeded", {"payment_id": "pay_456", "amount_vnd": "2300000"},
                                  owner="m1")  # fmt: skip
    jobs.drain()

    # Then exactly the two subscribers received it, and the reference verifier accepts both
    assert sorted(r.path for r in receiver.received()) == ["/exact", "/wild"]
    for path, endpoint in (("/exact", exact), ("/wild", wild)):
        (request,) = receiver.received(path)
        body = verified(request, endpoint.secret.get_secret_value())
        assert body["type"] == "payment.succeeded"
        assert body["data"] == {"payment_id": "pay_456", "amount_vnd": "2300000"}
        assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
        assert request.headers["webhook-id"] == message_id
        assert request.headers["content-type"] == "application/json"
    # and the other endpoint's secret does not verify it
    with pytest.raises(WebhookVerificationError):
        verified(receiver.received("/exact")[0], wild.secret.get_secret_value())
    log = webhooks.attempts(message_id)
    assert [(a.status_code, a.succeeded, a.trigger, a.attempt) for a in log] == [
        (200, True, "scheduled", 1)
    ] * 2
    assert all(d.status == "delivered" for d in deliveries(message_id))


def test_publishing_the_same_key_twice_stores_and_delivers_once(
    harness: Start, receiver: WebhookReceiver
) -> None:
    jobs = harness(webhooks=settings())
    webhooks.add_endpoint(receiver.url("/a"), event_types=["order.paid"])

    first = webhooks.publish("order.paid", {"order": 1}, key="order:1:paid")
    jobs.drain()
    second = webhooks.publish("order.paid", {"order": 1}, key="order:1:paid")
    jobs.drain()

    assert first == second
    assert len(receiver.received("/a")) == 1
    assert len(deliveries(first)) == 1
    # another type with the same key is another message
    assert webhooks.publish("order.refunded", {"order": 1}, key="order:1:paid") != first


def test_a_flapping_endpoint_is_delivered_on_the_third_attempt_with_two_failures_logged(
    harness: Start, receiver: WebhookReceiver
) -> None:
    jobs = harness(webhooks=settings(retry_schedule_s=[0.05, 0.05, 0.05]))
    endpoint = webhooks.add_endpoint(receiver.url("/flaky"), event_types=["*"])
    receiver.script("/flaky", 500, 500)

    message_id = webhooks.publish("invoice.paid", {"invoice": "in_1"})
    jobs.drain()

    requests = receiver.received("/flaky")
    assert len(requests) == 3
    assert {r.headers["webhook-id"] for r in requests} == {message_id}
    for request in requests:
        verified(request, endpoint.secret.get_secret_value())
    log = webhooks.attempts(message_id)
    assert [(a.attempt, a.status_code, a.succeeded) for a in log] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert all(a.duration_ms >= 0 and a.response == '{"ok": true}' for a in log)
    (delivery,) = deliveries(message_id)
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    # a success clears the endpoint's failure record
    assert webhooks.get_endpoint(endpoint.id).failures == 0


class Seen:
    events: list[tuple[str, dict[str, Any]]] = []


@actor(name="test_webhooks.watch", queue="default")
def watch_exhausted(event: webhooks.WebhookDeliveryExhausted) -> None:
    Seen.events.append(("webhook.delivery.exhausted", event.model_dump()))


@actor(name="test_webhooks.watch_disabled", queue="default")
def watch_disabled(event: webhooks.EndpointDisabled) -> None:
    Seen.events.append(("webhook.endpoint.disabled", event.model_dump()))


@pytest.fixture
def watched() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    Seen.events = []
    events.subscribe("webhook.delivery.exhausted", watch_exhausted)
    events.subscribe("webhook.endpoint.disabled", watch_disabled)
    yield Seen.events
    assert events.unsubscribe("webhook.delivery.exhausted", watch_exhausted)
    assert events.unsubscribe("webhook.endpoint.disabled", watch_disabled)


def test_exhausted_deliveries_are_dead_lettered_with_the_reason_and_announced(
    harness: Start, receiver: WebhookReceiver, watched: list[tuple[str, dict[str, Any]]]
) -> None:
    jobs = harness(webhooks=settings(retry_schedule_s=[0.02, 0.02]))
    endpoint = webhooks.add_endpoint(receiver.url("/down"), event_types=["*"])
    receiver.always("/down", 503)

    message_id = webhooks.publish("payment.failed", {"payment": "p1"})
    jobs.drain()

    assert len(receiver.received("/down")) == 3
    (delivery,) = deliveries(message_id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 3, 503)
    (dead,) = jobs.dead_letters
    assert dead.actor_name == "webhooks.deliver"
    assert "3 attempt(s), the last: HTTP 503" in jobs.reason(dead)
    assert watched == [("webhook.delivery.exhausted", {
        "delivery_id": delivery.id, "message_id": message_id, "endpoint_id": endpoint.id,
        "event_type": "payment.failed", "owner": None, "attempts": 3, "reason": "HTTP 503",
    })]  # fmt: skip


def test_410_gone_disables_the_endpoint_at_once_and_tells_its_owner(
    harness: Start, receiver: WebhookReceiver, watched: list[tuple[str, dict[str, Any]]]
) -> None:
    jobs = harness(webhooks=settings(retry_schedule_s=[0.02] * 5))
    wiring.configure(owner_contact=lambda owner: {"user_id": owner, "email": f"{owner}@example.com"})
    gone = webhooks.add_endpoint(receiver.url("/gone"), event_types=["*"], owner="m1")
    receiver.always("/gone", 410)

    first = webhooks.publish("a.b", {"n": 1}, owner="m1")
    jobs.drain()
    second = webhooks.publish("a.b", {"n": 2}, owner="m1")
    jobs.drain()

    # one request, no retry; the endpoint is disabled and the next message is kept for recovery
    assert len(receiver.received("/gone")) == 1
    assert deliveries(first)[0].status == "failed"
    assert [(d.status, d.attempts, d.last_error) for d in deliveries(second)] == [
        ("failed", 0, "endpoint disabled")
    ]
    endpoint = webhooks.get_endpoint(gone.id)
    assert not endpoint.enabled
    assert endpoint.disabled_reason == "the endpoint answered 410 Gone"
    assert [name for name, _ in watched] == ["webhook.endpoint.disabled"]
    assert jobs.dead_letters == []
    (mail,) = jobs.mailer.sent
    assert mail.to == ("m1@example.com",)
    assert receiver.url("/gone") in mail.subject


def test_an_endpoint_failing_for_days_is_disabled(
    harness: Start, receiver: WebhookReceiver, watched: list[tuple[str, dict[str, Any]]]
) -> None:
    jobs = harness(
        webhooks=settings(retry_schedule_s=[0.02] * 5, disable_min_failures=10, disable_after_h=120)
    )
    endpoint = webhooks.add_endpoint(receiver.url("/broken"), event_types=["*"])
    receiver.always("/broken", 500)
    # Given it has failed 9 times since 6 days ago
    with db.session() as s:
        s.execute(update(EndpointRow).where(EndpointRow.id == endpoint.id)  # type: ignore[arg-type]
                  .values(failures=9, failing_since=datetime.now(UTC) - timedelta(days=6)))  # fmt: skip

    webhooks.publish("a.b", {"n": 1})
    jobs.drain()

    after = webhooks.get_endpoint(endpoint.id)
    assert not after.enabled
    assert after.failures == 10
    assert "10 failed attempts" in (after.disabled_reason or "")
    assert len(receiver.received("/broken")) == 1  # the tenth failure disabled it; no retry
    assert [name for name, _ in watched] == ["webhook.endpoint.disabled"]


def test_retry_after_sets_the_next_attempt(harness: Start, receiver: WebhookReceiver) -> None:
    jobs = harness(webhooks=settings(retry_schedule_s=[0.01]))
    webhooks.add_endpoint(receiver.url("/busy"), event_types=["*"])
    receiver.script("/busy", (429, {"Retry-After": "1"}))

    webhooks.publish("a.b", {"n": 1})
    jobs.drain()

    first, second = receiver.received("/busy")
    # the schedule alone would have retried after 10 ms
    assert second.at - first.at >= 0.95


def test_retry_after_is_capped(harness: Start, receiver: WebhookReceiver) -> None:
    jobs = harness(webhooks=settings(retry_schedule_s=[0.01], retry_after_max_s=0))
    webhooks.add_endpoint(receiver.url("/busy"), event_types=["*"])
    receiver.script("/busy", (503, {"Retry-After": "3600"}))

    message_id = webhooks.publish("a.b", {"n": 1})
    jobs.drain()

    assert len(receiver.received("/busy")) == 2
    assert deliveries(message_id)[0].status == "delivered"


def test_during_a_rotation_requests_carry_both_signatures(harness: Start, receiver: WebhookReceiver) -> None:
    jobs = harness(webhooks=settings())
    endpoint = webhooks.add_endpoint(receiver.url("/r"), event_types=["*"])
    old = endpoint.secret.get_secret_value()

    new = webhooks.rotate_secret(endpoint.id, grace=timedelta(hours=24))
    webhooks.publish("a.b", {"n": 1})
    jobs.drain()
    webhooks.rotate_secret(endpoint.id, grace=timedelta(0))
    webhooks.publish("a.b", {"n": 2})
    jobs.drain()

    during, after = receiver.received("/r")
    assert len(during.headers["webhook-signature"].split()) == 2
    assert verified(during, old)["data"] == {"n": 1}
    assert verified(during, new)["data"] == {"n": 1}
    # after a rotation with no grace, only the newest secret signs
    assert len(after.headers["webhook-signature"].split()) == 1
    with pytest.raises(WebhookVerificationError):
        verified(after, new)
    assert webhooks.get_endpoint(endpoint.id).rotating is False


def test_replay_and_recover_resend_failed_deliveries_once_each(
    harness: Start, receiver: WebhookReceiver
) -> None:
    jobs = harness(webhooks=settings(retry_schedule_s=[]))
    endpoint = webhooks.add_endpoint(receiver.url("/x"), event_types=["*"])
    receiver.script("/x", 500)
    failed = webhooks.publish("a.b", {"n": 0})
    jobs.drain()
    assert deliveries(failed)[0].status == "failed"

    # replay: one manual attempt, logged as such, same webhook-id
    result = webhooks.replay(failed)
    jobs.drain()
    assert len(result.queued) == 1
    assert [(a.attempt, a.trigger, a.succeeded) for a in webhooks.attempts(failed)] == [
        (1, "scheduled", False), (2, "manual", True)]  # fmt: skip
    assert {r.headers["webhook-id"] for r in receiver.received("/x")} == {failed}

    # recover: messages published while disabled, and those that failed, are sent once each
    webhooks.disable_endpoint(endpoint.id)
    since = datetime.now(UTC)
    missed = [webhooks.publish("a.b", {"n": n}) for n in range(1, 4)]
    jobs.drain()
    assert len(receiver.received("/x")) == 2  # nothing was sent while disabled
    with pytest.raises(InvalidPayload, match="is disabled; enable it before recovering"):
        webhooks.recover(endpoint.id, since=since)
    webhooks.enable_endpoint(endpoint.id)
    receiver.always("/x", 500)
    failing = [webhooks.publish("a.b", {"n": n}) for n in range(4, 6)]
    jobs.drain()
    receiver.always("/x", 200)
    progress: list[int] = []
    recovered = webhooks.recover(endpoint.id, since=since, progress=progress.append)
    jobs.drain()
    assert sorted(recovered.queued) == sorted(deliveries(m)[0].id for m in missed + failing)
    assert progress == [5]
    assert all(deliveries(m)[0].status == "delivered" for m in missed + failing)
    sent = [json.loads(r.body)["data"]["n"] for r in receiver.received("/x")]
    assert sorted(sent[2:]) == [1, 2, 3, 4, 4, 5, 5]  # 4 and 5: a failed attempt, then the recovery


def test_replay_leaves_a_delivery_in_its_retry_schedule_alone(
    harness: Start, receiver: WebhookReceiver
) -> None:
    harness(webhooks=settings(retry_schedule_s=[3600]))
    webhooks.add_endpoint(receiver.url("/x"), event_types=["*"])
    receiver.script("/x", 500)
    message_id = webhooks.publish("a.b", {"n": 1})
    wait_for(lambda: webhooks.attempts(message_id), timeout=10, what="the first attempt")

    result = webhooks.replay(message_id)

    assert result.queued == []
    assert list(result.skipped.values()) == ["still pending (attempt 1)"]


def test_a_dispatcher_that_fails_holding_a_handed_over_batch_is_replaced_and_its_retry_sends_it(
    harness: Start, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bgjobs import runtime
    from bgjobs.webhooks import _dispatch as dispatching
    from bgjobs.webhooks import _publishing as publishing
    from bgjobs.webhooks._lanes import lanes_for

    harness(webhooks=settings())
    webhooks.add_endpoint(receiver.url("/hook"), event_types=["*"])
    monkeypatch.setattr(dispatching._here, "current", None)
    # Given a message's batch held by a wake-up whose dispatcher died ("H2"), redelivered...
    monkeypatch.setattr(publishing.dispatch_webhooks, "send", lambda payload: None)  # this test runs them
    message_id = webhooks.publish("order.placed", {"n": 1})
    lanes = lanes_for(runtime.current().coordination)
    assert lanes.take("H2", deliveries=10) != []
    real_run, probed = dispatching._Dispatcher.run, []

    def fails_once_handed_it(self: Any, held: list[str]) -> None:
        if probed:
            return real_run(self, held)
        probed.append(self)
        dispatching.dispatch("H2")  # ...to the running dispatcher ("H1"), which then fails
        raise RuntimeError("a probe: the dispatcher's loop failed")

    monkeypatch.setattr(dispatching._Dispatcher, "run", fails_once_handed_it)
    with pytest.raises(RuntimeError, match="a probe"):
        dispatching.dispatch("H1")
    # Then the failed dispatcher is no longer the process's (a later wake-up would only nudge it)
    assert dispatching._here.current is None
    # And the retry of its own wake-up takes the batch it was handed, and delivers it
    dispatching.dispatch("H1")
    (request,) = receiver.received("/hook")
    assert request.headers["webhook-id"] == message_id
    assert [d.status for d in deliveries(message_id)] == ["delivered"]
