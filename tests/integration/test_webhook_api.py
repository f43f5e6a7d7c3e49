"""The webhooks API and CLI around delivery: bad input, domain events, rate limits, the health
sweep, and what the ``bgjobs webhooks`` commands print (secrets stay hidden)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import select

from bgjobs import cli, db, events, webhooks
from bgjobs.errors import InvalidPayload
from bgjobs.settings import WebhookSettings
from bgjobs.testing import JobsHarness
from bgjobs.webhooks import _models as webhook_tables
from bgjobs.webhooks._operations import resend_overdue
from tests.support.receivers import WebhookReceiver, webhook_receiver

Start = Callable[..., JobsHarness]


def settings(**overrides: Any) -> WebhookSettings:
    values: dict[str, Any] = {"require_https": False, "allow": ["127.0.0.1/32"], "jitter": 0.0,
                              "retry_schedule_s": [0.02]}  # fmt: skip
    return WebhookSettings(**{**values, **overrides})


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


def test_bad_input_is_refused_naming_the_field(harness: Start, receiver: WebhookReceiver) -> None:
    harness(webhooks=settings(max_payload_bytes=1024))
    url = receiver.url("/in")
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: webhooks.add_endpoint(url, event_types=[]), "event_types: a non-empty list"),
        (lambda: webhooks.add_endpoint(url, event_types=["pay ment"]), "event_types: 'pay ment'"),
        (lambda: webhooks.add_endpoint(url, event_types=["*"], secret="whsec_c2hvcnQ="), "secret: "),
        (lambda: webhooks.add_endpoint(url, event_types=["*"], rate_limit=0), "rate_limit: "),
        (lambda: webhooks.publish("a.*", {}), "event_type: 'a.*'"),
        (lambda: webhooks.publish("a.b", {"blob": "x" * 2000}), "data: the webhook body is 2"),
        (lambda: webhooks.publish("a.b", {}, key=""), "key: must be 1 to 200"),
        (lambda: webhooks.publish("a.b", {"when": object()}), "data: not JSON-serialisable"),
        (lambda: webhooks.get_endpoint("ep_missing"), "endpoint: no webhook endpoint 'ep_missing'"),
        (lambda: webhooks.add_endpoint(url + "x" * 2000, event_types=["*"]), "url: at most 2000 characters"),
        (lambda: webhooks.add_endpoint(url, event_types=["*"], description="d" * 1001),
         "description: at most 1000"),
    ]
    for call, message in cases:
        with pytest.raises(InvalidPayload, match=message.replace("*", r"\*")):
            call()
    with pytest.raises(webhooks.BlockedAddress, match=r"url: 10\.0\.0\.1 is a private address"):
        webhooks.add_endpoint("http://10.0.0.1/in", event_types=["*"])
    assert webhooks.list_endpoints() == []


def test_the_secret_never_shows_in_a_repr_and_a_given_secret_is_kept(
    harness: Start, receiver: WebhookReceiver
) -> None:
    harness(webhooks=settings())
    mine = webhooks.generate_secret()
    endpoint = webhooks.add_endpoint(receiver.url("/in"), event_types=["*"], secret=mine)
    assert endpoint.secret.get_secret_value() == mine
    assert mine not in repr(endpoint) and mine not in str(webhooks.list_endpoints())


def test_domain_events_reach_subscribed_endpoints_with_their_owner(
    harness: Start, receiver: WebhookReceiver
) -> None:
    jobs = harness(webhooks=settings(event_owner_field="merchant_id"))
    webhooks.add_endpoint(receiver.url("/m1"), event_types=["payment.*"], owner="m1")
    webhooks.add_endpoint(receiver.url("/m2"), event_types=["payment.*"], owner="m2")

    key = f"pay_1:{uuid.uuid4().hex}"  # the stub broker remembers event keys for the whole session
    events.publish("payment.completed", {"payment_id": "pay_1", "merchant_id": "m1"}, key=key)
    events.publish("payment.completed", {"payment_id": "pay_1", "merchant_id": "m1"}, key=key)
    events.publish("shipment.sent", {"shipment": 1, "merchant_id": "m1"})
    jobs.drain()

    (request,) = receiver.received()
    assert request.path == "/m1"
    # bgjobs's own webhook.* events are not bridged (a failing endpoint would feed itself)
    assert webhooks.actors.from_event not in events.subscribers("webhook.endpoint.disabled")
    assert webhooks.actors.from_event in events.subscribers("shipment.sent")
    body = json.loads(request.body)
    assert (body["type"], body["data"]) == ("payment.completed", {"payment_id": "pay_1", "merchant_id": "m1"})


def test_an_endpoint_rate_limit_spreads_requests_over_seconds(
    harness: Start, receiver: WebhookReceiver
) -> None:
    jobs = harness(webhooks=settings())
    webhooks.add_endpoint(receiver.url("/limited"), event_types=["*"], rate_limit=2)
    for n in range(6):
        webhooks.publish("a.b", {"n": n})
    jobs.drain(timeout_ms=30_000)

    times = sorted(r.at for r in receiver.received("/limited"))
    assert len(times) == 6
    # two per one-second window: six requests need three windows, so they span more than a second
    # (unlimited, they arrive within milliseconds)
    assert times[-1] - times[0] > 1.0


def test_the_health_sweep_resends_a_delivery_whose_job_was_lost(
    harness: Start, receiver: WebhookReceiver
) -> None:
    jobs = harness(webhooks=settings(sweep_grace_s=60))
    endpoint = webhooks.add_endpoint(receiver.url("/in"), event_types=["*"])
    # Given a delivery recorded as pending and overdue, with no job (the publisher died after commit)
    message_id = webhooks.publish("a.b", {"n": 1})
    jobs.drain()
    with db.session() as s:
        s.execute(update(webhook_tables.WebhookDelivery).values(
            status="pending", next_attempt_at=datetime.now(UTC) - timedelta(minutes=5)))  # fmt: skip

    # When the sweep runs twice
    first, second = resend_overdue(), resend_overdue()
    jobs.drain()

    # Then it was resent once (the second sweep found it no longer overdue) and delivered
    assert (first, second) == (1, 0)
    assert len(receiver.received("/in")) == 2
    assert [a.attempt for a in webhooks.attempts(message_id)] == [1, 2]
    assert webhooks.get_endpoint(endpoint.id).enabled


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


def test_the_cli_manages_endpoints_and_shows_attempts_replays_and_recovers(
    harness: Start, receiver: WebhookReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = harness(webhooks=settings(retry_schedule_s=[]))
    added = run_cli(
        capsys, "webhooks", "endpoints", "add", receiver.url("/in"), "--event", "a.*", "--owner", "m1"
    )
    endpoint_id = added.split()[1]
    secret = added.splitlines()[1].split()[1]
    assert secret.startswith("whsec_")
    assert webhooks.get_endpoint(endpoint_id).secret.get_secret_value() == secret

    listed = run_cli(capsys, "webhooks", "endpoints", "list")
    assert endpoint_id in listed and secret not in listed and "whsec_********" in listed
    assert secret in run_cli(capsys, "webhooks", "endpoints", "list", "--show-secret")

    new = run_cli(capsys, "webhooks", "endpoints", "rotate-secret", endpoint_id).split()[1]
    assert new != secret and "+previous" in run_cli(capsys, "webhooks", "endpoints", "list")

    receiver.script("/in", 500)
    message_id = webhooks.publish("a.b", {"n": 1}, owner="m1")
    jobs.drain()
    log = run_cli(capsys, "webhooks", "attempts", message_id)
    assert endpoint_id in log and " 500 " in log

    assert "queued 1" in run_cli(capsys, "webhooks", "replay", message_id)
    jobs.drain()
    log = run_cli(capsys, "webhooks", "attempts", message_id)
    assert "manual" in log and " 200 " in log

    assert run_cli(capsys, "webhooks", "endpoints", "disable", endpoint_id).startswith("disabled")
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    missed = webhooks.publish("a.c", {"n": 2}, owner="m1")
    assert run_cli(capsys, "webhooks", "endpoints", "enable", endpoint_id).startswith("enabled")
    recovered = run_cli(capsys, "webhooks", "recover", "--endpoint", endpoint_id, "--since", since)
    assert recovered.strip() == "queued 1 delivery(ies)"  # no progress line when not on a terminal
    jobs.drain()
    assert missed in {r.headers["webhook-id"] for r in receiver.received("/in")}

    assert cli.main(["webhooks", "replay", "msg_nope"]) == 2
    assert "no delivery of 'msg_nope'" in capsys.readouterr().err


def test_deleting_an_endpoint_removes_its_deliveries_and_log(
    harness: Start, receiver: WebhookReceiver
) -> None:
    jobs = harness(webhooks=settings())
    endpoint = webhooks.add_endpoint(receiver.url("/in"), event_types=["*"])
    webhooks.publish("a.b", {})
    jobs.drain()

    webhooks.delete_endpoint(endpoint.id)

    with db.session() as s:
        assert list(s.exec(select(webhook_tables.WebhookDelivery))) == []
        assert list(s.exec(select(webhook_tables.WebhookAttempt))) == []
    assert webhooks.list_endpoints() == []
