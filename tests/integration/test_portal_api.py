"""The tenant portal's webhooks side over real HTTP (uvicorn on 127.0.0.1, mounted at /portal), on
SQLite and PostgreSQL, with a receiver on 127.0.0.1: links, the JSON API, the event catalog, and
the security tests (every route with another owner's ids, an expired, a wrong-scope, a tampered and
a revoked token; CSRF, origin and rate on the pages)."""

from __future__ import annotations

import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, SecretStr
from standardwebhooks.webhooks import Webhook

from bgjobs import audit, portal, webhooks
from bgjobs.errors import InvalidPayload
from bgjobs.portal import _tokens as tokens
from bgjobs.settings import WebhookSettings
from bgjobs.testing import JobsHarness
from bgjobs.webhooks import _catalog
from tests.support.portal import SECRET, portal_settings, serving
from tests.support.receivers import WebhookReceiver, webhook_receiver
from tests.support.workers import wait_for

Harness = Callable[..., JobsHarness]


class PaymentCompleted(BaseModel):
    payment_id: str
    amount_minor: int
    currency: str


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


@pytest.fixture
def catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    """A catalog of one event type, for this test only."""
    monkeypatch.setattr(_catalog, "_TYPES", {})
    webhooks.event_type(
        "payment.completed",
        schema=PaymentCompleted,
        description="A payment went through",
        example={"payment_id": "pay_1", "amount_minor": 1250, "currency": "EUR"},
    )


@pytest.fixture
def base(harness: Harness, catalogue: None) -> Iterator[str]:
    hooks = WebhookSettings(require_https=False, allow=["127.0.0.1/32"], jitter=0.0, retry_schedule_s=[0.02])
    with serving(
        lambda port: harness(webhooks=hooks, portal=portal_settings(port, changes_per_minute=1000))
    ) as url:
        yield url


def bearer(link: str) -> dict[str, str]:
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["token"][0]
    return {"Authorization": f"Bearer {token}"}


def api(base: str, link: str) -> httpx.Client:
    return httpx.Client(base_url=f"{base}/api/v1", headers=bearer(link), timeout=10)


def test_an_owner_manages_endpoints_through_the_api_and_each_request_is_signed_as_shown(
    base: str, receiver: WebhookReceiver
) -> None:
    link = portal.link("merchant-1", scopes=("webhooks",), ttl="1h")
    assert link.startswith(f"{base}/?token=")
    with api(base, link) as client:
        # Added with the API's validation and the SSRF guard; the secret shown once, here
        created = client.post(
            "/endpoints",
            json={"url": receiver.url("/hooks"), "event_types": ["payment.*"], "description": "payments"},
        )
        assert created.status_code == 201, created.text
        endpoint_id, secret = created.json()["id"], created.json()["secret"]
        assert secret.startswith("whsec_")
        listed = client.get("/endpoints").json()["items"]
        assert [e["id"] for e in listed] == [endpoint_id] and "secret" not in listed[0]
        assert secret not in client.get(f"/endpoints/{endpoint_id}").text
        blocked = client.post("/endpoints", json={"url": "http://10.0.0.1/in", "event_types": ["*"]})
        assert blocked.status_code == 422 and "10.0.0.1 is a private address" in blocked.json()["error"]
        unknown_type = client.post("/endpoints", json={"url": receiver.url("/x"), "event_types": ["order.*"]})
        assert (
            unknown_type.status_code == 422
            and "'order.*' is not in the catalog" in unknown_type.json()["error"]
        )
        # A test event reaches this endpoint only, signed with its secret
        sent = client.post(f"/endpoints/{endpoint_id}/test")
        assert sent.status_code == 200
        wait_for(lambda: len(receiver.received("/hooks")) == 1, timeout=20, what="the test event")
        first = receiver.received("/hooks")[0]
        assert Webhook(secret).verify(first.body, first.headers)["type"] == "webhook.test"
        # The attempt log: request (signature masked) and response, bounded
        wait_for(
            lambda: client.get(f"/endpoints/{endpoint_id}/attempts").json()["items"],
            timeout=20,
            what="the attempt logged",
        )
        (attempt,) = client.get(f"/endpoints/{endpoint_id}/attempts").json()["items"]
        assert attempt["message_id"] == sent.json()["message_id"] and attempt["succeeded"]
        assert attempt["request"]["headers"]["webhook-signature"] == "v1,••••••••"
        assert first.headers["webhook-signature"] not in str(attempt)
        assert '"type":"webhook.test"' in attempt["request"]["body"]
        assert attempt["response"]["status_code"] == 200
        # Replay it; rotate the secret: the new one verifies the next request
        replayed = client.post(f"/endpoints/{endpoint_id}/replay", json={"message_id": attempt["message_id"]})
        assert replayed.json() == {"queued": 1, "skipped": {}}
        wait_for(lambda: len(receiver.received("/hooks")) == 2, timeout=20, what="the replay")
        rotated = client.post(f"/endpoints/{endpoint_id}/rotate-secret").json()
        assert rotated["secret"] != secret and rotated["previous_valid_hours"] == 24
        webhooks.publish(
            "payment.completed",
            {"payment_id": "p1", "amount_minor": 100, "currency": "EUR"},
            owner="merchant-1",
        )
        wait_for(lambda: len(receiver.received("/hooks")) == 3, timeout=20, what="an event after rotation")
        third = receiver.received("/hooks")[2]
        assert Webhook(rotated["secret"]).verify(third.body, third.headers)["data"]["payment_id"] == "p1"
        assert Webhook(secret).verify(third.body, third.headers)  # the old one still signs, for the overlap
        # Disable, recover what failed meanwhile after enabling, delete
        assert client.post(f"/endpoints/{endpoint_id}/disable").json()["enabled"] is False
        webhooks.publish(
            "payment.completed",
            {"payment_id": "p2", "amount_minor": 5, "currency": "EUR"},
            owner="merchant-1",
        )
        assert client.post(f"/endpoints/{endpoint_id}/enable").json()["enabled"] is True
        since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        assert client.post(f"/endpoints/{endpoint_id}/recover", json={"since": since}).json()["queued"] == 1
        wait_for(lambda: len(receiver.received("/hooks")) == 4, timeout=20, what="the recovered delivery")
        changed = client.patch(f"/endpoints/{endpoint_id}", json={"event_types": ["payment.completed"]})
        assert changed.json()["event_types"] == ["payment.completed"]
        assert client.delete(f"/endpoints/{endpoint_id}").json() == {"deleted": endpoint_id}
        assert client.get("/endpoints").json()["items"] == []
    # Every change is audited with the owner and the token's id
    token_id = portal.read(bearer(link)["Authorization"].split()[1]).id
    done = [(e.action, e.result) for e in audit.entries(who="portal:merchant-1", limit=100)]
    assert (
        ("portal.add", "ok") in done and ("portal.rotate", "ok") in done and ("portal.delete", "ok") in done
    )
    assert all(f"(token {token_id})" in e.who for e in audit.entries(who="portal:merchant-1", limit=100))
    assert all(secret not in e.detail and rotated["secret"] not in e.detail for e in audit.entries(limit=100))


def test_the_catalog_is_served_as_json_schema_and_publish_checks_data_against_it(base: str) -> None:
    with api(base, portal.link("merchant-1", scopes=("webhooks",))) as client:
        served = client.get("/catalog").json()["event_types"]["payment.completed"]
        schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "bgjobs portal API"
    assert "/api/v1/endpoints/{endpoint_id}/replay" in schema["paths"]
    assert not [p for p in schema["paths"] if not p.startswith("/api/v1/")]  # pages are not in the API
    assert served["description"] == "A payment went through"
    assert served["schema"]["required"] == ["payment_id", "amount_minor", "currency"]
    assert served["example"] == {"payment_id": "pay_1", "amount_minor": 1250, "currency": "EUR"}
    with pytest.raises(InvalidPayload, match=r"data\.amount_minor: .*\(event type payment.completed\)"):
        webhooks.publish("payment.completed", {"payment_id": "p", "amount_minor": "lots", "currency": "EUR"})
    with pytest.raises(Exception, match="the example does not match the schema: currency"):
        webhooks.event_type(
            "payment.failed", schema=PaymentCompleted, example={"payment_id": "p", "amount_minor": 1}
        )


def _routes(endpoint_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every API route that names or changes something, with a valid body."""
    return [
        ("GET", "/endpoints", None),
        ("POST", "/endpoints", {"url": "http://127.0.0.1:9/x", "event_types": ["*"]}),
        ("GET", f"/endpoints/{endpoint_id}", None),
        ("PATCH", f"/endpoints/{endpoint_id}", {"description": "x"}),
        ("DELETE", f"/endpoints/{endpoint_id}", None),
        ("POST", f"/endpoints/{endpoint_id}/disable", None),
        ("POST", f"/endpoints/{endpoint_id}/enable", None),
        ("POST", f"/endpoints/{endpoint_id}/test", None),
        ("POST", f"/endpoints/{endpoint_id}/rotate-secret", None),
        ("POST", f"/endpoints/{endpoint_id}/replay", {"message_id": "msg_x"}),
        ("POST", f"/endpoints/{endpoint_id}/recover", {"since": "2026-01-01T00:00:00Z"}),
        ("GET", f"/endpoints/{endpoint_id}/attempts", None),
        ("GET", "/catalog", None),
        ("GET", "/preferences", None),
        ("PUT", "/preferences", {"digest": False}),
    ]


def test_every_route_refuses_other_owners_ids_and_bad_tokens_and_changes_nothing(
    base: str, receiver: WebhookReceiver
) -> None:
    theirs = webhooks.add_endpoint(receiver.url("/theirs"), event_types=["*"], owner="merchant-2")
    mine = portal.link("merchant-1", scopes=("webhooks",))
    now = int(time.time() * 1000)
    claims = {"o": "merchant-1", "s": ["webhooks"], "r": None, "j": "t1", "i": now - 7_200_000}
    expired = tokens.sign({**claims, "e": now - 3_600_000})
    foreign_key = tokens.sign(
        {**claims, "e": now + 3_600_000},
        settings=portal_settings(1, secret=SecretStr("another-key-nobody-configured")),
    )
    good = bearer(mine)["Authorization"].split()[1]
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    preferences_only = portal.link("merchant-1", scopes=("preferences",), recipient="u1")
    for method, path, body in _routes(theirs.id):
        with api(base, mine) as client:
            answer = client.request(method, path, json=body)
            if "/endpoints/" in path:  # another owner's endpoint: as if it did not exist
                assert answer.status_code == 404, (method, path, answer.text)
                assert answer.json()["error"] == f"endpoint: no webhook endpoint {theirs.id!r}"
        for token, status in ((expired, 401), (foreign_key, 401), (tampered, 401), ("", 401)):
            with httpx.Client(
                base_url=f"{base}/api/v1",
                timeout=10,
                headers={"Authorization": f"Bearer {token}"} if token else {},
            ) as client:
                assert client.request(method, path, json=body).status_code == status, (
                    method,
                    path,
                    token[:10],
                )
        if path.startswith("/endpoints") or path == "/catalog":
            with api(base, preferences_only) as client:
                refused = client.request(method, path, json=body)
                assert refused.status_code == 403 and "does not give access to webhooks" in refused.text
        else:
            with api(base, mine) as client:
                refused = client.request(method, path, json=body)
                assert refused.status_code == 403 and "does not give access to preferences" in refused.text
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {expired}"}) as client:
        assert client.get(f"{base}/api/v1/endpoints").json() == {
            "error": "this link has expired: ask for a new one"
        }
    # Nothing of merchant-2's changed; merchant-1 added only through its own valid calls
    assert webhooks.get_endpoint(theirs.id).enabled and webhooks.get_endpoint(theirs.id).description is None
    assert not receiver.received("/theirs")
    # No operator action is reachable from the portal
    with api(base, mine) as client:
        for method, path in (
            ("GET", "/dead-letters"),
            ("POST", "/queues/default/pause"),
            ("GET", "/payouts"),
            ("POST", "/dead-letters/purge"),
            ("GET", "/audit"),
        ):
            assert client.request(method, path).status_code in (404, 405)


def test_revoking_an_owner_refuses_their_links_issued_before_and_keys_rotate_with_overlap(
    base: str, harness: Harness
) -> None:
    before = portal.link("merchant-1", scopes=("webhooks",))
    other = portal.link("merchant-2", scopes=("webhooks",))
    portal.revoke("merchant-1")
    after = portal.link("merchant-1", scopes=("webhooks",))
    with api(base, before) as client:
        assert client.get("/endpoints").json() == {"error": "this link was revoked: ask for a new one"}
    for still in (after, other):
        with api(base, still) as client:
            assert client.get("/endpoints").status_code == 200
    # A new key signs; links signed with the old one work while it is listed as previous
    from bgjobs import runtime

    current = runtime.current()
    settings = current.settings.portal
    rotated = settings.model_copy(
        update={"secret": SecretStr(secrets.token_urlsafe(24)), "previous_secrets": [SecretStr(SECRET)]}
    )
    object.__setattr__(current.settings, "portal", rotated)
    try:
        with api(base, after) as client:
            assert client.get("/endpoints").status_code == 200
        fresh = portal.link("merchant-1", scopes=("webhooks",))
        object.__setattr__(current.settings, "portal", rotated.model_copy(update={"previous_secrets": []}))
        with api(base, after) as client:
            assert client.get("/endpoints").status_code == 401  # the old key is gone
        with api(base, fresh) as client:
            assert client.get("/endpoints").status_code == 200
    finally:
        object.__setattr__(current.settings, "portal", settings)


def test_links_refuse_what_they_do_not_understand() -> None:
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: portal.link("", scopes=("webhooks",)), "owner: 1 to 200 characters"),
        (lambda: portal.link("m", scopes=("payouts",)), "scopes: 'payouts' is not a scope"),
        (lambda: portal.link("m", scopes=("preferences",)), "recipient: the preferences scope needs"),
        (lambda: portal.link("m", ttl="30d"), "ttl: more than 0 and at most 604800 s"),
        (lambda: portal.link("m", ttl="soon"), "ttl"),
    ]
    from bgjobs import runtime
    from bgjobs.settings import Settings

    runtime.install(runtime.Runtime(Settings(broker_url="stub://", portal=portal_settings(1))))
    try:
        for call, message in cases:
            with pytest.raises(InvalidPayload, match=message):
                call()
    finally:
        runtime.reset()
