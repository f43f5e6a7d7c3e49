"""examples/host_app: a Flask app on a real HTTP server on 127.0.0.1, its jobs through the outbox."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlmodel import SQLModel, func, select
from werkzeug.serving import make_server

from bgjobs import db, outbox, payouts
from bgjobs.testing import JobsHarness
from examples.host_app.app import Booking, create_app
from tests.support.otlp import job_of


@pytest.fixture(params=[False])
def served(
    harness: Callable[..., JobsHarness], request: pytest.FixtureRequest
) -> Iterator[tuple[httpx.Client, JobsHarness]]:
    from datetime import time

    from pydantic import SecretStr

    from bgjobs.settings import PortalSettings

    portal = PortalSettings(secret=SecretStr("a-portal-key-of-the-host-app"), brand_name="Trips")
    quiet = {"quiet_hours_start": time(0, 0), "quiet_hours_end": time(0, 0)}
    jobs = harness(**quiet, tracing=request.param, portal=portal)
    SQLModel.metadata.create_all(db.get_engine(), tables=[Booking.__table__])  # type: ignore[attr-defined]
    server = make_server("127.0.0.1", 0, create_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}", timeout=10) as client:
            yield client, jobs
    finally:
        server.shutdown()
        thread.join()


def _count(model: type[SQLModel]) -> int:
    with db.session() as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


BOOKING = {"vendor_id": "v1", "email": "ann@example.com", "phone": "+447700900123",
           "trip_date": "2025-06-15", "total": {"amount": "500.00", "currency": "USD"}}  # fmt: skip


def test_a_booking_commits_its_row_event_and_earning_together_and_the_relay_sends_them(
    served: tuple[httpx.Client, JobsHarness],
) -> None:
    client, jobs = served
    response = client.post("/bookings", json=BOOKING)
    assert response.status_code == 201
    booking_id = response.json()["booking_id"]
    assert _count(Booking) == 1 and _count(outbox.OutboxRow) == 2
    assert jobs.mailer.sent == []  # nothing left the transaction before the relay

    assert outbox.relay_once() == 2
    jobs.drain()
    (mail,) = jobs.mailer.sent
    assert mail.to == ("ann@example.com",) and booking_id in mail.text
    assert [m.to for m in jobs.sms.sent] == ["+447700900123"]
    balance = payouts.balances("v1")[("v1", "USD")]
    assert str(balance.amount) == "400.00"  # 500.00 less the default 20% commission


def test_bad_input_is_refused_with_the_field_named_and_writes_nothing(
    served: tuple[httpx.Client, JobsHarness],
) -> None:
    client, _ = served
    floated = client.post("/bookings", json={**BOOKING, "total": {"amount": 500.0, "currency": "USD"}})
    assert floated.status_code == 422 and "total.amount" in floated.json()["error"]
    assert "floats are not accepted" in floated.json()["error"]
    missing = client.post("/bookings", json={k: v for k, v in BOOKING.items() if k != "trip_date"})
    assert missing.status_code == 422 and missing.json()["error"].startswith("trip_date: Field required")
    assert _count(Booking) == 0 and _count(outbox.OutboxRow) == 0


def test_an_export_is_requested_from_a_handler_and_its_status_read_back(
    served: tuple[httpx.Client, JobsHarness],
) -> None:
    client, jobs = served
    for vendor in ("v1", "v2", "v1"):
        assert client.post("/bookings", json={**BOOKING, "vendor_id": vendor}).status_code == 201
    asked = client.post("/exports", json={"filters": {"vendor_id": "v1"}, "key": "v1-bookings"})
    assert asked.status_code == 202
    export_id = asked.json()["export_id"]
    again = client.post("/exports", json={"filters": {"vendor_id": "v1"}, "key": "v1-bookings"})
    assert again.json()["export_id"] == export_id  # the same key: the same export
    jobs.drain()
    info = client.get(f"/exports/{export_id}").json()
    assert info["status"] == "done" and info["rows"] == 2
    body = b"".join(jobs.storage.open(key=info["storage_key"])).decode()
    assert body.splitlines()[0] == "id,vendor_id,trip_date,total,currency"
    assert [line.split(",")[1] for line in body.splitlines()[1:]] == ["v1", "v1"]
    assert (
        client.post("/exports", json={"filters": {"city": "Oslo"}})
        .json()["error"]
        .startswith("filters: city")
    )
    assert client.get("/exports/exp_nope").status_code == 404


def test_the_console_is_mounted_behind_the_app_s_own_login(served: tuple[httpx.Client, JobsHarness]) -> None:
    client, _ = served
    assert client.get("/bgjobs/api/v1/healthz").json() == {"status": "alive"}
    assert client.get("/bgjobs/api/v1/jobs").status_code == 403  # nobody signed in
    staff, admin = {"X-Staff-User": "bob"}, {"X-Staff-User": "ana"}
    jobs = client.get("/bgjobs/api/v1/jobs", headers=staff).json()["items"]
    assert "cleanup.daily" in [j["name"] for j in jobs]
    page = client.get("/bgjobs/runs", headers=staff)
    assert page.status_code == 200 and 'href="/bgjobs/static/console.css"' in page.text
    assert client.get("/bgjobs/static/console.js", headers=staff).status_code == 200
    csrf = {"X-CSRF-Token": page.cookies["bgjobs_csrf"]}
    client.cookies.set("bgjobs_csrf", page.cookies["bgjobs_csrf"])
    refused = client.post("/bgjobs/api/v1/jobs/cleanup.daily/trigger", json={}, headers={**staff, **csrf})
    assert refused.status_code == 403
    sent = client.post("/bgjobs/api/v1/jobs/cleanup.daily/trigger", json={}, headers={**admin, **csrf})
    assert sent.status_code == 200 and sent.json()["job"] == "cleanup.daily"
    from bgjobs.audit import entries

    assert [(e.who, e.action, e.result) for e in reversed(entries())] == [
        ("bob", "trigger", "refused"), ("ana", "trigger", "ok")]  # fmt: skip


def test_a_merchant_s_account_page_links_to_the_portal_mounted_in_the_app(
    served: tuple[httpx.Client, JobsHarness],
) -> None:
    client, _ = served
    assert client.get("/account").status_code == 401
    page = client.get("/account", headers={"X-Merchant": "merchant-7", "X-User": "ann@example.com"})
    assert page.status_code == 200
    link = page.text.split('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert link.startswith(f"{client.base_url}/portal/?token=")
    landed = client.get(link)
    assert landed.status_code == 303 and landed.headers["location"] == "/portal/webhooks"
    shown = client.get("/portal/webhooks")
    assert shown.status_code == 200 and "Trips" in shown.text and "No endpoints yet" in shown.text
    assert client.get("/portal/preferences").status_code == 200
    assert client.get("/portal/static/portal.css").status_code == 200


@pytest.mark.parametrize("served", [True], indirect=True)
def test_with_tracing_on_a_request_is_traced_into_its_jobs(
    served: tuple[httpx.Client, JobsHarness], host_spans: Any
) -> None:
    client, jobs = served
    host_spans.clear()
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # a traced caller upstream
    assert client.post("/bookings", json=BOOKING, headers={"traceparent": caller}).status_code == 201
    assert outbox.relay_once() == 2
    jobs.drain()
    spans = host_spans.get_finished_spans()
    (request,) = [s for s in spans if s.name == "POST /bookings"]
    assert format(request.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    by_id = {s.context.span_id: s for s in spans}

    def ancestry(span: Any) -> list[str]:
        names = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            names.append(job_of(span.name, span.attributes))
        return names

    # The relay sent the outbox rows as children of the request that committed them, and the jobs
    # they started (the event's fan-out, the confirmation email and SMS, the ledger write) ran in its trace
    (mail,) = [s for s in spans if s.name == "mail.send"]
    assert format(mail.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert ancestry(mail)[-1] == "POST /bookings" and "process notifications.email" in ancestry(mail)
    (entry,) = [s for s in spans if job_of(s.name, s.attributes) == "process payouts.record"]
    assert ancestry(entry) == ["send payouts.record", "POST /bookings"]
    assert jobs.mailer.sent and jobs.sms.sent
