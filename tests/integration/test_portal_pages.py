"""The portal's pages and preferences over real HTTP (uvicorn on 127.0.0.1, mounted at /portal), on
SQLite and PostgreSQL: the link landing, headers, CSRF, origin, rate, strict forms; preferences
that stop notifications; one-click unsubscribe; the ``bgjobs portal`` commands."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from bgjobs import audit, portal, webhooks
from bgjobs.embedded import free_port
from bgjobs.notifications import Recipient, deliveries, send
from bgjobs.notifications._preferences import preferences
from bgjobs.portal import _tokens as tokens
from bgjobs.sections import DigestRule
from bgjobs.settings import WebhookSettings
from bgjobs.testing import JobsHarness
from tests.support.portal import SECRET, csrf_of, portal_settings, serving, session
from tests.support.processes import kill_group, spawn
from tests.support.workers import ROOT, wait_for

Harness = Callable[..., JobsHarness]
ANN = Recipient(user_id="u1", email="ann@example.com", phone="+447700900123", push_tokens=("tok-ann-1",))
REMINDER = {
    "booking_id": "B1",
    "trip_date": "2025-06-15",
    "amount_due": {"amount": "80.00", "currency": "USD"},
    "days_until": 3,
}
HOOKS = WebhookSettings(require_https=False, allow=["127.0.0.1/32"], jitter=0.0, retry_schedule_s=[0.02])


@pytest.fixture
def served(harness: Harness) -> Callable[..., tuple[str, JobsHarness]]:
    """Serve the portal with these portal settings (and notification settings) for this test."""
    stack: list[Iterator[str]] = []
    started: list[JobsHarness] = []

    def start(
        notifications: dict[str, object] | None = None, **portal_overrides: object
    ) -> tuple[str, JobsHarness]:
        def configure(port: int) -> None:
            quiet = {"quiet_hours_start": "00:00", "quiet_hours_end": "00:00"}
            started.append(
                harness(
                    webhooks=HOOKS,
                    portal=portal_settings(port, **portal_overrides),
                    **{**quiet, **(notifications or {})},
                )
            )

        context = serving(configure)
        base = context.__enter__()
        stack.append(context)  # type: ignore[arg-type]
        return base, started[-1]

    yield start  # type: ignore[misc]
    for context in stack:
        context.__exit__(None, None, None)  # type: ignore[attr-defined]


def test_a_link_lands_in_a_cookie_session_without_the_token_in_the_address(
    served: Callable[..., tuple[str, JobsHarness]],
) -> None:
    base, _ = served()
    link = portal.link("merchant-1", scopes=("webhooks",))
    with httpx.Client(timeout=10) as client:
        landed = client.get(link)
        assert landed.status_code == 303 and landed.headers["location"] == "/portal/webhooks"
        cookie = landed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "Path=/portal/" in cookie and "SameSite=lax" in cookie
        assert landed.headers["referrer-policy"] == "no-referrer"
        shown = client.get(f"{base}/webhooks")
        assert shown.status_code == 200 and "Acme Travel" in shown.text and "No endpoints yet" in shown.text
        csp = shown.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and shown.headers["x-frame-options"] == "DENY"
        assert shown.headers["cache-control"] == "no-store"
        assert client.get(f"{base}/brand.css").text == ":root { --accent: #2456a6; }\n"
        # What it does not understand is refused by name
        typo = client.get(f"{base}/webhooks", params={"notise": "saved"})
        assert typo.status_code == 422 and "notise" in typo.text
        assert client.get(f"{base}/webhooks", params={"notice": "<script>"}).status_code == 422
    with httpx.Client(timeout=10) as stranger:
        refused = stranger.get(f"{base}/webhooks")
        assert refused.status_code == 401 and "open the portal through the link" in refused.text
        assert stranger.get(f"{base}/?token=nonsense").status_code == 401


def test_forms_need_their_csrf_field_the_portal_s_origin_and_a_pace_and_refusals_are_audited(
    served: Callable[..., tuple[str, JobsHarness]],
) -> None:
    base, _ = served(changes_per_minute=3)
    with session(portal.link("merchant-1", scopes=("webhooks",))) as client:
        _forms(base, client)


def _forms(base: str, client: httpx.Client) -> None:
    csrf = csrf_of(client.get(f"{base}/webhooks").text)
    form = {"url": "http://127.0.0.1:9/in", "event_types": "booking.*, payment.*", "description": "d"}
    missing = client.post(f"{base}/webhooks", data=form)
    assert missing.status_code == 403 and "missing or wrong CSRF field" in missing.text
    crossed = client.post(
        f"{base}/webhooks", data={**form, "csrf": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert crossed.status_code == 403 and "https://evil.example may not change anything" in crossed.text
    unknown = client.post(f"{base}/webhooks", data={**form, "csrf": csrf, "owner": "merchant-2"})
    assert unknown.status_code == 422 and "owner: this form has no field &#39;owner&#39;" in unknown.text
    added = client.post(f"{base}/webhooks", data={**form, "csrf": csrf})
    assert (
        added.status_code == 200
        and "whsec_" in added.text
        and "shown <strong>only now</strong>" in added.text
    )
    (endpoint,) = portal_endpoints("merchant-1")
    assert endpoint.event_types == ("booking.*", "payment.*")
    assert "whsec_" not in client.get(f"{base}/webhooks/{endpoint.id}").text  # shown once only
    for _ in range(2):
        assert client.post(f"{base}/webhooks/{endpoint.id}/disable", data={"csrf": csrf}).status_code == 303
    slowed = client.post(f"{base}/webhooks/{endpoint.id}/enable", data={"csrf": csrf})
    assert slowed.status_code == 429 and int(slowed.headers["retry-after"]) <= 60
    refusals = [e.detail for e in audit.entries(who="portal:merchant-1", limit=50) if e.result == "refused"]
    assert len(refusals) == 3 and any("too many changes" in d for d in refusals)


def portal_endpoints(owner: str) -> list[object]:
    from bgjobs import webhooks

    return webhooks.list_endpoints(owner=owner)  # type: ignore[return-value]


def test_every_page_refuses_other_owners_ids_and_sessions_it_did_not_issue(
    served: Callable[..., tuple[str, JobsHarness]],
) -> None:
    base, _ = served()
    theirs = webhooks.add_endpoint("http://127.0.0.1:9/theirs", event_types=["*"], owner="merchant-2")
    fields = {"test": {}, "rotate": {}, "disable": {}, "enable": {}, "delete": {"confirm": "yes"},
              "replay": {"message_id": "msg_x"}, "recover": {"since": "2026-01-01T00:00"}}  # fmt: skip
    named = [("GET", f"/webhooks/{theirs.id}", {}),
             ("POST", f"/webhooks/{theirs.id}", {"url": "http://127.0.0.1:9/x", "event_types": "*"}),
             *[("POST", f"/webhooks/{theirs.id}/{act}", body) for act, body in fields.items()]]  # fmt: skip
    every = [*named, ("GET", "/webhooks", {}), ("POST", "/webhooks", {"url": "http://127.0.0.1:9/y"}),
             ("GET", "/preferences", {}), ("POST", "/preferences", {}),
             ("POST", "/preferences/unsubscribe", {"category": "marketing"})]  # fmt: skip
    with session(portal.link("merchant-1", scopes=("webhooks",))) as client:
        csrf = csrf_of(client.get(f"{base}/webhooks").text)
        for method, path, body in named:  # another owner's endpoint: as if it did not exist
            sent = {**body, "csrf": csrf} if method == "POST" else None
            answer = client.request(method, base + path, data=sent)
            assert answer.status_code == 404 and "no webhook endpoint" in answer.text, (method, path)
        for method, path in (("GET", "/preferences"), ("POST", "/preferences")):  # not this link's scope
            answer = client.request(method, base + path, data={"csrf": csrf} if method == "POST" else None)
            assert answer.status_code == 403 and "does not give access to preferences" in answer.text
    now = int(time.time() * 1000)
    claims = {"o": "merchant-1", "s": ["webhooks", "preferences"], "r": "u1", "j": "t1", "i": now - 60_000}
    good = urllib.parse.parse_qs(urllib.parse.urlsplit(portal.link("merchant-3")).query)["token"][0]
    revoked = urllib.parse.parse_qs(urllib.parse.urlsplit(portal.link("merchant-4")).query)["token"][0]
    portal.revoke("merchant-4")
    unknown_key = portal_settings(1, secret=SecretStr("a-key-this-portal-never-had"))
    refused = {
        "expired": tokens.sign({**claims, "e": now - 1}),
        "tampered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "signed with another key": tokens.sign({**claims, "e": now + 60_000}, settings=unknown_key),
        "revoked": revoked,
    }
    for why, raw in refused.items():
        with httpx.Client(timeout=10, cookies={"bgjobs_portal": raw}) as client:
            for method, path, body in every:
                answer = client.request(method, base + path, data=body if method == "POST" else None)
                assert answer.status_code == 401, (why, method, path, answer.status_code)
    assert webhooks.get_endpoint(theirs.id).enabled and not webhooks.get_endpoint(theirs.id).rotating


def test_framing_is_allowed_only_to_the_hosts_listed(served: Callable[..., tuple[str, JobsHarness]]) -> None:
    base, _ = served(frame_ancestors=["https://app.example.com"])
    with httpx.Client(timeout=10) as client:
        landed = client.get(portal.link("merchant-1", scopes=("webhooks",)))
        cookie = landed.headers["set-cookie"]
        assert "SameSite=none" in cookie and "Secure" in cookie and "Partitioned" in cookie
        raw = cookie.partition(";")[0]  # Secure: a browser sends it over HTTPS only; sent by hand here
        page = client.get(f"{base}/webhooks", headers={"Cookie": raw})
        assert "frame-ancestors https://app.example.com" in page.headers["content-security-policy"]
        assert "x-frame-options" not in page.headers


def test_preferences_stop_what_the_recipient_turned_off_and_keep_critical_categories(
    served: Callable[..., tuple[str, JobsHarness]],
) -> None:
    base, jobs = served()
    link = portal.link("merchant-1", scopes=("preferences",), recipient="u1")
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["token"][0]
    with httpx.Client(
        base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as api:
        critical = api.put("/preferences", json={"off": {"transactional": ["sms"]}})
        assert critical.status_code == 422 and "transactional messages cannot be turned off" in critical.text
        assert api.put("/preferences", json={"timezone": "Mars/Olympus"}).status_code == 422
        assert api.put("/preferences", json={"colour": "red"}).status_code == 422
        chosen = api.put("/preferences", json={"off": {"reminders": ["sms"]}, "timezone": "Europe/Lisbon"})
        assert chosen.json()["off"] == {"reminders": ["sms"]} and chosen.json()["timezone"] == "Europe/Lisbon"
        webhooks_refused = api.get("/endpoints")
        assert webhooks_refused.status_code == 403
    send("payment_reminder", ANN, REMINDER, key="pref:1")
    send(
        "booking_confirmation",
        ANN,
        {"booking_id": "B1", "trip_date": "2025-06-15", "total": {"amount": "500.00", "currency": "USD"}},
        key="pref:2",
    )
    jobs.drain()
    log = {r.channel: r for r in deliveries(key="pref:1")}
    assert log["sms"].status == "skipped"
    assert log["sms"].reason == "user u1 turned off reminders by sms (their preferences)"
    assert (log["email"].status, log["push"].status) == ("sent", "sent")
    assert {r.status for r in deliveries(key="pref:2")} == {"sent"}  # transactional: always
    # The email carries one-click unsubscribe for its category (not for the transactional one)
    reminder = next(m for m in jobs.mailer.sent if m.idempotency_key == "notif:pref:1:email")
    assert reminder.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = reminder.headers["List-Unsubscribe"].strip("<>")
    assert url.startswith(f"{base}/unsubscribe/")
    confirmation = next(m for m in jobs.mailer.sent if m.idempotency_key == "notif:pref:2:email")
    assert "List-Unsubscribe" not in confirmation.headers
    # A mail client's one-click POST turns reminders' email off; a person lands on the page
    with httpx.Client(timeout=10) as client:
        assert client.post(url, content=b"nonsense").status_code == 422
        done = client.post(
            url,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 200 and done.text == "Unsubscribed from reminders emails."
        landed = client.get(url)
        assert (
            landed.status_code == 303
            and landed.headers["location"] == "/portal/preferences?unsubscribe=reminders"
        )
        page = client.get(f"{base}/preferences?unsubscribe=reminders")
        assert 'class="highlight"' in page.text and "(always sent)" in page.text
        assert client.post(url[:-4] + "AAAA", content=b"List-Unsubscribe=One-Click").status_code == 401
    assert preferences("u1").off == {("reminders", "sms"), ("reminders", "email")}
    send("payment_reminder", ANN, REMINDER, key="pref:3")
    jobs.drain()
    assert {r.channel: r.status for r in deliveries(key="pref:3")} == {
        "email": "skipped",
        "sms": "skipped",
        "push": "sent",
    }
    assert any(e.action == "portal.unsubscribe" and e.resource == "recipient:u1" for e in audit.entries())


def test_the_preferences_page_saves_quiet_hours_and_the_digest_choice(
    served: Callable[..., tuple[str, JobsHarness]],
) -> None:
    base, jobs = served(notifications={"digests": {"reminders": DigestRule(window_s=3600)}})
    with session(portal.link("merchant-1", scopes=("preferences",), recipient="u1")) as client:
        _quiet_hours(base, client, jobs)


def _quiet_hours(base: str, client: httpx.Client, jobs: JobsHarness) -> None:
    page = client.get(f"{base}/preferences")
    assert "Collect Reminders into one summary" in page.text
    now = datetime.now(UTC)
    start, end = (now - timedelta(hours=1)).strftime("%H:%M"), (now + timedelta(hours=1)).strftime("%H:%M")
    on = [f"{c}:{ch}" for c in ("reminders", "marketing") for ch in ("email", "sms", "push")]
    form = {
        "csrf": csrf_of(page.text),
        "on": on,
        "quiet": "custom",
        "quiet_start": start,
        "quiet_end": end,
        "timezone": "UTC",
    }
    saved = client.post(f"{base}/preferences", data=form)  # digest unticked: each message at once
    assert saved.status_code == 303 and saved.headers["location"] == "/portal/preferences?saved=true"
    chosen = preferences("u1")
    assert chosen.digest is False and chosen.timezone == "UTC" and chosen.off == frozenset()
    queued = send("payment_reminder", ANN, REMINDER, key="quiet:1")
    assert queued.keys  # not collected into a digest: sent, and its SMS held by the recipient's hours
    wait_for(lambda: jobs.mailer.sent, timeout=10, what="the email, not held")
    wait_for(lambda: len(jobs.held()) == 2, timeout=10, what="the SMS and the push held by the worker")
    until = (now + timedelta(hours=1)).replace(second=0, microsecond=0)
    assert all(abs(eta - until) < timedelta(minutes=2) for _, eta in jobs.held())
    assert client.post(f"{base}/preferences", data={**form, "quiet": "loud"}).status_code == 422


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bgjobs.cli", *args],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_portal_commands_make_and_revoke_links_and_refuse_to_serve_without_a_key(
    tmp_path: Path, redis_url: str
) -> None:
    env = {
        "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "BGJOBS_BROKER_URL": redis_url,
        "BGJOBS_PORTAL__SECRET": SECRET,
        "BGJOBS_PORTAL__BASE_URL": "https://app.example.com/portal",
    }
    assert _cli("db", "upgrade", env=env).returncode == 0
    made = _cli("portal", "link", "merchant-9", "--ttl", "15m", env=env)
    assert made.returncode == 0 and made.stdout.startswith("https://app.example.com/portal/?token=")
    bad = _cli("portal", "link", "merchant-9", "--scopes", "payouts", env=env)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].endswith(
        "'payouts' is not a scope; use webhooks, preferences"
    )
    assert "Traceback" not in bad.stderr
    revoked = _cli("portal", "revoke", "merchant-9", env=env)
    assert revoked.returncode == 0 and "revoked every portal link of merchant-9" in revoked.stdout
    port = free_port()
    argv = [sys.executable, "-m", "bgjobs.cli", "portal", "--port", str(port)]
    server = spawn(argv, cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                   text=True)  # fmt: skip
    here = f"http://127.0.0.1:{port}/portal"
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith(f"bgjobs portal: {here}/")
        with httpx.Client(timeout=10) as client:
            assert client.get(f"http://127.0.0.1:{port}/").headers["location"] == "/portal/"
            old = made.stdout.strip().replace("https://app.example.com/portal", here)
            assert client.get(old).status_code == 401  # merchant-9's links were revoked above
            fresh = _cli("portal", "link", "merchant-9", env=env).stdout.strip()
            landed = client.get(fresh.replace("https://app.example.com/portal", here))
            assert landed.status_code == 303 and client.get(f"{here}/webhooks").status_code == 200
        taken = _cli("portal", "--port", str(port), env=env)  # a second one on the same port
        assert taken.returncode == 2 and "Traceback" not in taken.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in taken.stderr and "BGJOBS_PORTAL__PORT" in taken.stderr
    finally:
        kill_group(server)
    unkeyed = _cli(
        "portal", "--port", "0", env={k: v for k, v in env.items() if k != "BGJOBS_PORTAL__SECRET"}
    )
    assert unkeyed.returncode != 0 and "set BGJOBS_PORTAL__SECRET" in unkeyed.stderr
    assert "Traceback" not in unkeyed.stderr
