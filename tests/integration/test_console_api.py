"""The console's JSON API over real HTTP (uvicorn on 127.0.0.1), with a real worker, Redis and SQLite
(PostgreSQL where the test says so): every endpoint, each way in, read-only, CSRF and bad input."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from bgjobs import runtime, webhooks
from bgjobs.console import create_app
from bgjobs.embedded import RedisServer
from bgjobs.settings import ConsoleSettings, Settings, get_settings
from tests.support import worker_jobs
from tests.support.console import ConsoleServer
from tests.support.pause_checks import pause_checks
from tests.support.scheduler import Scheduler
from tests.support.workers import WorkerProcess, broker_client, start_worker, wait_for

TOKEN = "t0ken-for-the-console-tests"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def serve(worker_env: dict[str, str]) -> Iterator[Callable[..., ConsoleServer]]:
    """Serve a console with the given console settings (and authorize hook) for this test."""
    servers: list[ConsoleServer] = []

    def start(authorize: Any = None, **console: Any) -> ConsoleServer:
        settings = get_settings().model_copy(update={"console": ConsoleSettings(**console)})
        server = ConsoleServer(create_app(settings, authorize)).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def _client(server: ConsoleServer, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=10, **kwargs)


@contextlib.contextmanager
def _browser(server: ConsoleServer, first: str = "/", **kwargs: Any) -> Iterator[httpx.Client]:
    """A client that first loads a page, as a browser does, and so holds the CSRF cookie."""
    with _client(server, **kwargs) as client:
        assert client.get(first).status_code == 200
        yield client


def _csrf(client: httpx.Client) -> dict[str, str]:
    return {"X-CSRF-Token": client.cookies["bgjobs_csrf"]}


def first_key(shown: dict[str, Any]) -> str:
    key = shown["args"][0]["key"]
    assert key.startswith("refused-")
    return str(key)


def _dead_letters(worker_env: dict[str, str], workers: list[WorkerProcess], n: int) -> None:
    client = redis.Redis.from_url(worker_env["BGJOBS_BROKER_URL"])
    client.set("test:refusing", "1")
    start_worker(workers, worker_env, processes=1)
    for i in range(n):
        worker_jobs.refused.send({"key": f"refused-{i}", "sleep_s": 0})
    wait_for(lambda: client.zcard("dramatiq:default.XQ") == n, timeout=30, what=f"{n} dead letters")
    client.delete("test:refusing")


def test_probes_answer_without_authentication_and_name_each_failed_check(
    serve: Callable[..., ConsoleServer], worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    console = serve(token=SecretStr(TOKEN))
    with _client(console) as client:
        assert client.get("/api/v1/healthz").json() == {"status": "alive"}
        assert client.get("/healthz").json() == {"status": "alive"}  # where probes look first
        # The schema maps every operation: it is for those the console serves, as the API is
        assert client.get("/api/v1/openapi.json").status_code == 401
        schema = client.get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
        assert schema.status_code == 200 and schema.json()["info"]["title"] == "bgjobs console API"
        assert schema.headers["cache-control"] == "no-store"
        # An unknown path answers in the documented shape
        unknown = client.get("/api/v1/no-such-thing", headers={"Authorization": f"Bearer {TOKEN}"})
        assert unknown.status_code == 404
        assert unknown.json() == {"error": "no such page or endpoint: /api/v1/no-such-thing; "
                                           "/api/v1/openapi.json lists the API"}  # fmt: skip
        # Given work waiting, no worker and no scheduler
        worker_jobs.record.send({"key": "waiting", "sleep_s": 0})
        not_ready = client.get("/api/v1/readyz")
        assert not_ready.status_code == 503
        body = not_ready.json()
        assert body["failed"] == ["workers", "scheduler"]
        assert client.get("/readyz").json()["failed"] == ["workers", "scheduler"]
        # bgjobs status agrees about the scheduler (one rule decides both)
        from bgjobs.status import status

        leaderless = "the cron table has entries and no scheduler leads: start 'bgjobs scheduler'"
        assert leaderless in status().problems
        checks = {c["name"]: c for c in body["checks"]}
        assert checks["workers"]["detail"] == "no live worker for default (1 ready)"
        assert checks["broker"]["ok"] and checks["database"]["ok"]
        # When a worker and a scheduler run
        start_worker(workers, worker_env, processes=1)
        scheduler = Scheduler(worker_env)
        try:
            wait_for(lambda: client.get("/api/v1/readyz").status_code == 200, timeout=30, what="ready")
        finally:
            scheduler.remove()
        assert client.get("/api/v1/readyz").json()["failed"] == []
        assert not [p for p in status().problems if "scheduler" in p]


def test_readyz_answers_within_its_bound_when_redis_hangs(worker_env: dict[str, str], tmp_path: Any) -> None:
    # Given a console on a Redis of its own, which then hangs (stopped: its sockets stay open)
    with RedisServer() as hung:
        settings = Settings(broker_url=hung.url, database_url=worker_env["BGJOBS_DATABASE_URL"])
        with ConsoleServer(create_app(settings)) as console, _client(console) as client:
            first = client.get("/readyz").json()["checks"][0]
            assert (first["name"], first["ok"]) == ("broker", True)
            assert hung.process is not None
            os.kill(hung.process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                answer = client.get("/readyz")
                took = time.monotonic() - started
            finally:
                os.kill(hung.process.pid, signal.SIGCONT)
    # Then the probe answered, naming the check that hung, rather than waiting for the client's 10 s
    assert answer.status_code == 503
    broker = answer.json()["checks"][0]
    assert (broker["name"], broker["ok"]) == ("broker", False)
    assert broker["detail"] == "did not answer within 0.9 s"
    assert answer.json()["failed"] == ["broker", "workers", "scheduler"]
    assert took < 5, f"readyz took {took:.1f} s"


def test_readyz_names_a_database_behind_its_revision(serve: Callable[..., ConsoleServer]) -> None:
    from bgjobs import migrations

    console = serve()
    migrations.downgrade(runtime.current().engine, "0001")
    with _client(console) as client:
        found = client.get("/api/v1/readyz").json()
    database = next(c for c in found["checks"] if c["name"] == "database")
    assert not database["ok"]
    assert database["detail"].startswith(
        f"the database is at revision 0001, this bgjobs needs {migrations.head()}"
    )


def test_each_way_in_and_what_it_may_do(serve: Callable[..., ConsoleServer]) -> None:
    console = serve(token=SecretStr(TOKEN), username="ops", password=SecretStr("s3cret-pass"))
    with _client(console) as anonymous:
        refused = anonymous.get("/api/v1/queues")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert anonymous.get("/api/v1/queues", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert anonymous.get("/api/v1/queues", headers=_basic("ops", "wrong")).status_code == 401
        page = anonymous.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 401 and "sign in" in page.text.lower()
    # A bearer token (the API, an external cron): no CSRF token needed, it is not ambient
    with _client(console, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        assert api.get("/api/v1/queues").status_code == 200
        assert api.post("/api/v1/queues/default/pause").json() == {"queue": "default", "paused": True,
                                                                    "changed": True}  # fmt: skip
    # HTTP Basic (the dashboard): a POST without the CSRF token is refused, with it allowed
    with _browser(console, headers=_basic("ops", "s3cret-pass")) as browser:
        missing = browser.post("/api/v1/queues/default/resume")
        assert missing.status_code == 403 and "CSRF" in missing.json()["error"]
        wrong = browser.post("/api/v1/queues/default/resume", headers={"X-CSRF-Token": "forged"})
        assert wrong.status_code == 403
        assert browser.post("/api/v1/queues/default/resume", headers=_csrf(browser)).json()["paused"] is False
    from bgjobs.audit import entries

    assert [(e.who, e.action, e.result) for e in reversed(entries())] == [
        ("token", "pause", "ok"), ("ops", "resume", "refused"), ("ops", "resume", "refused"),
        ("ops", "resume", "ok"),
    ]  # fmt: skip


def test_without_credentials_only_loopback_clients_are_served() -> None:
    import asyncio

    settings = Settings(broker_url="stub://", database_url="sqlite:///console.db")
    app = create_app(settings)

    async def ask(client_address: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client_address, 50_000))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:9181") as client:
            return await client.get("/api/v1/jobs")

    assert asyncio.run(ask("127.0.0.1")).status_code == 200
    assert asyncio.run(ask("::1")).status_code == 200
    refused = asyncio.run(ask("203.0.113.9"))  # a documentation address: never dialled, only named
    assert refused.status_code == 403
    assert "loopback clients only until BGJOBS_CONSOLE__TOKEN" in refused.json()["error"]


def test_the_host_s_authorize_hook_decides_reads_and_each_action(serve: Callable[..., ConsoleServer]) -> None:
    asked: list[tuple[str, str]] = []

    def authorize(request: Any, action: str, resource: str) -> bool:
        asked.append((action, resource))
        return request.headers.get("x-user") == "admin" or (
            action == "read" and request.headers.get("x-user")
        )

    console = serve(authorize=authorize)
    with _browser(console, headers={"x-user": "admin"}) as admin:
        assert admin.post("/api/v1/queues/default/pause", headers=_csrf(admin)).status_code == 200
    with _browser(console, headers={"x-user": "viewer"}) as viewer:
        assert viewer.get("/api/v1/queues").status_code == 200
        refused = viewer.post("/api/v1/queues/default/resume", headers=_csrf(viewer))
        assert refused.status_code == 403 and refused.json() == {"error": "the host's authorize hook refused"}
    with _client(console) as nobody:
        assert nobody.get("/api/v1/queues").status_code == 403
    assert ("pause", "queue:default") in asked and ("resume", "queue:default") in asked


def test_read_only_mode_turns_every_action_off(serve: Callable[..., ConsoleServer]) -> None:
    console = serve(token=SecretStr(TOKEN), read_only=True)
    with _client(console, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        assert api.get("/api/v1/queues").status_code == 200
        for path, body in (("/api/v1/queues/default/pause", None), ("/api/v1/jobs/cleanup.daily/trigger", {}),
                           ("/api/v1/dead-letters/purge", {"match": {}})):  # fmt: skip
            refused = api.post(path, json=body)
            assert refused.status_code == 403, path
            assert refused.json()["error"] == "the console is read-only (BGJOBS_CONSOLE__READ_ONLY=true)"
        page = api.get("/dead-letters")
        assert page.status_code == 200 and "data-action" not in page.text  # no buttons


def test_dead_letters_are_listed_filtered_shown_masked_requeued_and_purged(
    serve: Callable[..., ConsoleServer], worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    _dead_letters(worker_env, workers, 3)
    console = serve()
    with _browser(console) as browser:
        listed = browser.get(
            "/api/v1/dead-letters", params={"actor": "refused", "reason": "VENDOR REFUSED"}
        ).json()
        assert len(listed["items"]) == 3 and not listed["more"]
        assert {d["kind"] for d in listed["items"]} == {"permanent"}
        assert browser.get("/api/v1/dead-letters", params={"reason": "no such text"}).json()["items"] == []
        # "since" takes a date, a time without a zone (UTC) or with one; empty fields filter nothing
        moments = (("", 3), ("2000-01-01", 3), ("2999-01-01T00:00", 0), ("2000-01-01T00:00+02:00", 3))
        for since, count in moments:
            found = browser.get("/api/v1/dead-letters", params={"since": since, "actor": "", "queue": ""})
            assert found.status_code == 200 and len(found.json()["items"]) == count, (since, found.text)
        unreadable = browser.get("/api/v1/dead-letters", params={"since": "yesterday"})
        assert unreadable.status_code == 422 and unreadable.json()["field"] == "since"
        assert "'yesterday' is not a date or a time" in unreadable.json()["error"]
        # and so does the page, which says a mistake on the page
        empty = {"since": "", "queue": "", "actor": "", "reason": ""}
        listed_page = browser.get("/dead-letters", params=empty)
        assert listed_page.status_code == 200 and listed_page.text.count("data-letter=") == 3
        mistaken = browser.get("/dead-letters", params={"since": "yesterday"})
        assert mistaken.status_code == 422 and "&#39;yesterday&#39; is not a date or a time" in mistaken.text
        future = {"match": {"since": "2999-01-01T00:00"}}
        assert browser.post("/api/v1/dead-letters/purge", json=future, headers=_csrf(browser)).json() == {
            "selected": 0, "purged": 0}  # fmt: skip
        bad_since = browser.post("/api/v1/dead-letters/purge", json={"match": {"since": "soon"}},
                                 headers=_csrf(browser))  # fmt: skip
        assert bad_since.status_code == 422 and bad_since.json()["field"] == "match.since"
        assert bad_since.json()["error"].startswith("match.since: 'soon' is not a date or a time")
        page = browser.get("/api/v1/dead-letters", params={"limit": 2}).json()
        assert len(page["items"]) == 2 and page["more"]
        first = page["items"][0]
        shown = browser.get(f"/api/v1/dead-letters/{first['id']}").json()
        assert shown["args"][0] == {
            "key": first_key(shown),
            "sleep_s": "***",
        }  # identifiers shown, the rest masked
        assert shown["reason"].startswith("PermanentError: vendor refused refused-")
        assert shown["traceback"].startswith("Traceback (most recent call last):")
        assert "in refused" in shown["traceback"] and "PermanentError: vendor refused" in shown["traceback"]
        assert "PermanentError: vendor refused" in browser.get(f"/dead-letters/{first['id']}").text
        # When one is requeued by id, it runs (the vendor now accepts)
        done = browser.post(
            "/api/v1/dead-letters/requeue", json={"ids": [first["id"]]}, headers=_csrf(browser)
        )
        assert done.json() == {"selected": 1, "requeued": 1}
        wait_for(lambda: worker_jobs.effect_count() == 1, timeout=30, what="the requeued job's effect")
        # A filter with a key nobody knows, or no criterion without "all", touches nothing
        unknown = ({"match": {"colour": "red"}}, {"match": {}}, {"match": {"actor": "refused"}, "colour": 1})
        for body in unknown:
            for action in ("purge", "requeue"):
                refused = browser.post(f"/api/v1/dead-letters/{action}", json=body, headers=_csrf(browser))
                assert refused.status_code == 422, (action, body, refused.text)
        assert browser.post("/api/v1/dead-letters/purge", json={"match": {"colour": "red"}},
                            headers=_csrf(browser)).json()["field"] == "match.colour"  # fmt: skip
        assert "all" in browser.post("/api/v1/dead-letters/purge", json={"match": {}},
                                     headers=_csrf(browser)).json()["error"]  # fmt: skip
        assert len(browser.get("/api/v1/dead-letters").json()["items"]) == 2
        # And the rest are purged by a filter
        purged = browser.post("/api/v1/dead-letters/purge", json={"match": {"actor": "refused"}},
                              headers=_csrf(browser))  # fmt: skip
        assert purged.json() == {"selected": 2, "purged": 2}
        assert browser.get("/api/v1/dead-letters").json()["items"] == []
        gone = browser.get(f"/api/v1/dead-letters/{first['id']}")
        assert gone.status_code == 404 and gone.json()["field"] == "id"


def test_a_paused_queue_is_not_taken_until_resumed_also_across_a_worker_restart(
    serve: Callable[..., ConsoleServer], engine_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    worker_env = engine_env
    console = serve()
    start_worker(workers, worker_env, processes=1)
    with _browser(console) as browser, pause_checks(broker_client(worker_env), "default") as checks:
        assert browser.post("/api/v1/queues/default/pause", headers=_csrf(browser)).status_code == 200
        checks.wait_seen()  # a consumer read the pause
        worker_jobs.record.send({"key": "while-paused", "sleep_s": 0})
        checks.wait_reads(4)  # absence: four more reads, each of which would have handed it out
        assert worker_jobs.effect_count() == 0

        def waiting() -> bool:  # RabbitMQ's management API counts lag by a second or two
            queue = next(q for q in browser.get("/api/v1/queues").json()["items"] if q["name"] == "default")
            return bool(queue["paused"] and queue["ready"] + queue["in_flight"] == 1)

        wait_for(waiting, timeout=15, what="the paused queue's one waiting message")
        # A new worker (a deploy) still honours the pause
        workers.pop().kill()
        start_worker(workers, worker_env, processes=1)
        checks.wait_seen()  # the new worker honours the pause
        checks.wait_reads(2)
        assert worker_jobs.effect_count() == 0
        assert browser.post("/api/v1/queues/default/resume", headers=_csrf(browser)).json()["paused"] is False
        wait_for(lambda: worker_jobs.effect_count() == 1, timeout=30, what="the job after resume")

        def default_queue() -> dict[str, Any]:
            return next(q for q in browser.get("/api/v1/queues").json()["items"] if q["name"] == "default")

        # The job shows in the queue's last 30 minutes once the worker's maintenance pass records it
        wait_for(lambda: sum(default_queue()["history"]["done"]) == 1, timeout=10, what="the history")
        assert len(default_queue()["history"]["ready"]) == 30
        unknown = browser.post("/api/v1/queues/nosuch/pause", headers=_csrf(browser))
        assert unknown.status_code == 404 and unknown.json()["field"] == "queue"


def test_a_trigger_checks_its_arguments_and_its_run_appears(
    serve: Callable[..., ConsoleServer], worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    console = serve(token=SecretStr(TOKEN))
    start_worker(workers, worker_env, processes=1)
    cron = {"Authorization": f"Bearer {TOKEN}"}  # how an external cron calls it
    with _client(console, headers=cron) as api:
        bad = api.post("/api/v1/jobs/payouts.weekly/trigger", json={"args": {"period": "2025-W99"}})
        assert bad.status_code == 422 and bad.json()["field"] == "period"
        for job, args in (("payouts.weekly", {"colour": "blue"}), ("cleanup.daily", {"region": "west"})):
            unknown = api.post(f"/api/v1/jobs/{job}/trigger", json={"args": args})
            (name,) = args
            assert unknown.status_code == 422 and unknown.json()["field"] == f"args.{name}"
            assert f"{job} has no argument {name}" in unknown.json()["error"]
        misnamed = api.post("/api/v1/jobs/cleanup.daily/trigger", json={"arg": {"dry_run": "true"}})
        assert misnamed.status_code == 422 and misnamed.json()["field"] == "arg"
        missing = api.post("/api/v1/jobs/no.such.job/trigger", json={})
        assert missing.status_code == 404 and missing.json()["field"] == "name"
        sent = api.post("/api/v1/jobs/cleanup.daily/trigger", json={"args": {"dry_run": "true"}})
        assert sent.status_code == 200 and sent.json()["args"] == {"dry_run": "true"}

        def ran() -> Any:
            items = api.get("/api/v1/runs", params={"job": "cleanup.daily", "outcome": "succeeded"}).json()[
                "items"
            ]
            return items[0] if items else None

        wait_for(ran, timeout=30, what="the triggered run")
        run = api.get(f"/api/v1/runs/{ran()['id']}").json()
        assert run["trigger"] == "manual" and run["counts"]["dry_run"] is True
        schedule = api.get("/api/v1/schedule").json()
        entry = next(e for e in schedule["entries"] if e["job"] == "cleanup.daily")
        assert entry["schedule"] == "0 2 * * *" and entry["last_run"]["id"] == run["id"]
        assert entry["next_at"] is not None and schedule["leader"] is False


def test_runs_and_the_audit_log_on_sqlite_and_postgresql(
    database_url: str,
    worker_env: dict[str, str],
    workers: list[WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bgjobs import db

    env = {**worker_env, "BGJOBS_DATABASE_URL": database_url}
    monkeypatch.setenv("BGJOBS_DATABASE_URL", database_url)
    runtime.reset()
    db.upgrade()
    start_worker(workers, env, processes=1)
    settings = get_settings().model_copy(update={"console": ConsoleSettings(token=SecretStr(TOKEN))})
    with ConsoleServer(create_app(settings)) as console, \
            _client(console, headers={"Authorization": f"Bearer {TOKEN}"}) as api:  # fmt: skip
        sent = api.post("/api/v1/jobs/cleanup.daily/trigger", json={"args": {"dry_run": "true"}}).json()

        def finished() -> list[Any]:
            return list(api.get("/api/v1/runs", params={"outcome": "succeeded"}).json()["items"])

        wait_for(finished, timeout=30, what="the run")
        assert finished()[0]["job"] == "cleanup.daily"
        (entry,) = api.get("/api/v1/audit").json()["items"]
        assert (entry["who"], entry["action"], entry["resource"], entry["result"]) == (
            "token", "trigger", "job:cleanup.daily", "ok")  # fmt: skip
        assert sent["message_id"] in entry["detail"]


def test_a_refused_payout_is_retried_from_the_console_and_audited(
    harness: Callable[..., Any],
) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from bgjobs import payouts, wiring
    from bgjobs.adapters.http import HttpPaymentGateway
    from bgjobs.families import trigger
    from bgjobs.settings import HttpVendorSettings, PayoutSettings
    from tests.support.receivers import payment_gateway

    jobs = harness(payouts=PayoutSettings(minimums={"USD": Decimal("10.00")}))
    with payment_gateway() as gateway:
        adapter = HttpPaymentGateway(HttpVendorSettings(url=gateway.url))
        wiring.configure(payment=adapter)
        payouts.record_earning("v1", Decimal("100.00"), "USD", source_id="b1",
                               occurred_at=datetime(2025, 6, 3, 12, tzinfo=UTC))  # fmt: skip
        gateway.script.append(403)
        trigger("payouts.weekly", period="2025-W23")
        jobs.drain()
        (refused,) = payouts.payouts(status="failed")
        # The stub broker's console: payouts read the tables; the retry sends the usual pay job
        app = create_app(runtime.current().settings)
        with ConsoleServer(app) as console, _browser(console, "/payouts") as browser:
            listed = browser.get("/api/v1/payouts", params={"status": "failed"}).json()["items"]
            assert [(p["id"], p["error"]) for p in listed] == [(refused.id, refused.error)]
            page = browser.get("/payouts", params={"status": "failed"}).text
            assert f'data-action="/api/v1/payouts/{refused.id}/retry"' in page
            done = browser.post(f"/api/v1/payouts/{refused.id}/retry", json={}, headers=_csrf(browser))
            assert done.json() == {"payout_id": "payout:weekly:2025-W23:r1:v1:USD", "amount": "80.00",
                                   "currency": "USD", "status": "pending"}  # fmt: skip
            again = browser.post(f"/api/v1/payouts/{refused.id}/retry", json={}, headers=_csrf(browser))
            assert again.status_code == 422 and again.json()["field"] == "payout_id"
            missing = browser.post("/api/v1/payouts/payout:nope/retry", json={}, headers=_csrf(browser))
            assert missing.status_code == 404 and missing.json()["field"] == "payout_id"
            jobs.drain()
            statuses = [p["status"] for p in browser.get("/api/v1/payouts").json()["items"]]
            assert statuses == ["paid", "failed"]
        adapter.close()
        from bgjobs.audit import entries

        audited = [(e.action, e.result) for e in reversed(entries())]
        assert audited == [("retry-payout", "ok"), ("retry-payout", "failed"), ("retry-payout", "failed")]


def test_webhook_attempts_replay_and_recover_notifications_and_an_export_s_link(
    harness: Callable[..., Any], tmp_path: Any
) -> None:
    from datetime import UTC, datetime

    from bgjobs import exports, notifications, wiring
    from bgjobs.adapters.localfs import LocalFileStorage
    from bgjobs.settings import WebhookSettings
    from tests.support import export_datasets
    from tests.support.receivers import webhook_receiver

    jobs = harness(webhooks=WebhookSettings(require_https=False, allow=["127.0.0.1/32"], jitter=0.0,
                                            retry_schedule_s=[]))  # fmt: skip
    wiring.configure(storage=LocalFileStorage(tmp_path / "files"))
    assert export_datasets.COLUMNS  # registers the test datasets
    with webhook_receiver() as receiver:
        endpoint = webhooks.add_endpoint(receiver.url("/x"), event_types=["*"])
        receiver.script("/x", 500)
        failed = webhooks.publish("booking.created", {"booking_id": "B1"})
        total = {"amount": "500.00", "currency": "USD"}
        booking = {"booking_id": "B1", "trip_date": "2025-06-15", "total": total}
        ann = {"user_id": "u1", "email": "ann@example.com"}
        notifications.send("booking_confirmation", ann, booking, key="booking:B1:confirmed")
        export_id = exports.request("tricky", fmt="csv")
        jobs.drain()
        app = create_app(runtime.current().settings)
        with ConsoleServer(app) as console, _browser(console, "/webhooks") as browser:
            attempts = browser.get(f"/api/v1/webhooks/messages/{failed}/attempts").json()["items"]
            assert [(a["attempt"], a["status_code"], a["succeeded"]) for a in attempts] == [(1, 500, False)]
            page = browser.get("/webhooks", params={"message": failed}).text
            assert f'data-action="/api/v1/webhooks/messages/{failed}/replay"' in page and "500" in page
            replayed = browser.post(
                f"/api/v1/webhooks/messages/{failed}/replay", json={}, headers=_csrf(browser)
            )
            assert replayed.json()["queued"] == 1
            # A message that does not exist is a 404, as docs/console.md says, for its log and a replay
            gone = browser.get("/api/v1/webhooks/messages/msg_nope/attempts")
            assert gone.status_code == 404 and gone.json()["field"] == "message_id"
            replay = "/api/v1/webhooks/messages/msg_nope/replay"
            nothing = browser.post(replay, json={}, headers=_csrf(browser))
            assert nothing.status_code == 404 and nothing.json()["field"] == "message"
            jobs.drain()
            attempts = browser.get(f"/api/v1/webhooks/messages/{failed}/attempts").json()["items"]
            assert [(a["trigger"], a["succeeded"]) for a in attempts] == [
                ("scheduled", False),
                ("manual", True),
            ]
            since = datetime(2000, 1, 1, tzinfo=UTC).isoformat()
            recover = f"/api/v1/webhooks/endpoints/{endpoint.id}/recover"
            recovered = browser.post(recover, json={"since": since}, headers=_csrf(browser))
            assert recovered.status_code == 200 and recovered.json()["queued"] == 0  # nothing left failed
            sent = browser.get("/api/v1/notifications", params={"key": "booking:B1:confirmed"}).json()[
                "items"
            ]
            assert [(d["channel"], d["status"]) for d in sent] == [("email", "sent")]
            assert "ann@example.com" not in str(sent)  # the log keeps a masked reference
            shown = browser.get(f"/api/v1/exports/{export_id}").json()
            assert shown["status"] == "done" and shown["url"] and shown["sha256"]
            assert browser.get("/api/v1/exports/exp_nope").status_code == 404
            # The page links the file through the console, not as a file:// link a browser cannot open
            page = browser.get("/exports").text
            assert f'href="/api/v1/exports/{export_id}/download"' in page and "file://" not in page
            got = browser.get(f"/api/v1/exports/{export_id}/download")
            assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
            assert hashlib.sha256(got.content).hexdigest() == shown["sha256"]
            assert "attachment;" in got.headers["content-disposition"]
            assert browser.get("/api/v1/exports/exp_nope/download").status_code == 404
            assert export_id in browser.get("/exports").text and "ann@example.com" not in browser.get(
                "/notifications").text  # fmt: skip


def test_bad_input_gets_a_4xx_naming_the_field(serve: Callable[..., ConsoleServer]) -> None:
    console = serve(token=SecretStr(TOKEN))
    with _client(console, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        cases = [
            (api.get("/api/v1/dead-letters", params={"since": "last tuesday"}), 422, "since"),
            (api.get("/api/v1/runs", params={"limit": 0}), 422, "limit"),
            (api.get("/api/v1/runs", params={"outcome": "exploded"}), 422, "outcome"),
            (api.get("/api/v1/runs/nope"), 404, "run_id"),
            (api.post("/api/v1/dead-letters/requeue", json={}), 422, "ids"),
            (api.post("/api/v1/dead-letters/requeue", json={"ids": "not-a-list"}), 422, "ids"),
            (api.post("/api/v1/jobs/cleanup.daily/trigger", json={"args": {"n": 1}}), 422, "args.n"),
            (api.post("/api/v1/webhooks/endpoints/ep_nope/disable", json={}), 404, None),
        ]  # fmt: skip
        for answer, status, field in cases:
            assert answer.status_code == status, answer.text
            assert answer.json()["error"], answer.text
            if field is not None:
                assert answer.json()["field"] == field, answer.text


def test_the_families_state_is_readable_and_secrets_never_show(
    serve: Callable[..., ConsoleServer], worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BGJOBS_WEBHOOKS__REQUIRE_HTTPS", "false")
    monkeypatch.setenv("BGJOBS_WEBHOOKS__ALLOW", '["127.0.0.1/32"]')
    runtime.reset()
    endpoint = webhooks.add_endpoint("http://127.0.0.1:9/in", event_types=["booking.*"], owner="m1")
    secret = endpoint.secret.get_secret_value()
    ep = f"/api/v1/webhooks/endpoints/{endpoint.id}"
    console = serve()
    with _browser(console) as browser:
        listed = browser.get("/api/v1/webhooks/endpoints").text
        assert endpoint.id in listed and secret not in listed and "secret" not in listed
        rotated = browser.post(f"{ep}/rotate-secret", json={"grace_hours": 1},
                               headers=_csrf(browser))  # fmt: skip
        assert rotated.status_code == 200 and rotated.json()["rotating"] is True
        assert webhooks.get_endpoint(endpoint.id).secret.get_secret_value() not in rotated.text
        disabled = browser.post(f"{ep}/disable", json={"reason": "maintenance"},
                                headers=_csrf(browser))  # fmt: skip
        assert disabled.json()["health"] == "disabled" and disabled.json()["disabled_reason"] == "maintenance"
        assert browser.post(f"{ep}/enable", headers=_csrf(browser)).json()[
            "health"] == "healthy"  # fmt: skip
        for path in ("/api/v1/notifications", "/api/v1/payouts", "/api/v1/outbox", "/api/v1/exports",
                     "/api/v1/workers", "/api/v1/jobs", "/api/v1/overview", "/api/v1/audit"):  # fmt: skip
            assert browser.get(path).status_code == 200, path
        assert browser.get("/api/v1/outbox").json() == {"pending": 0, "oldest_at": None, "oldest_age_s": None}
        audit = browser.get("/api/v1/audit").json()["items"]
        assert [a["action"] for a in audit] == ["enable", "disable", "rotate-secret"]
        assert all(secret not in str(a) for a in audit)


def test_a_foreign_host_name_or_a_cross_site_change_is_refused(
    serve: Callable[..., ConsoleServer], worker_env: dict[str, str]
) -> None:
    # Given a console without authentication (a developer's machine: loopback only)
    console = serve()
    with _browser(console) as browser:
        # A name that is not this console's is refused, even from 127.0.0.1 (DNS rebinding)
        rebound = browser.get("/api/v1/overview", headers={"Host": "evil.example:7212"})
        assert rebound.status_code == 403
        assert "does not answer to the host name 'evil.example'" in rebound.json()["error"]
        pause = "/api/v1/queues/default/pause"
        forged = browser.post(pause, headers={**_csrf(browser), "Host": "evil.example:7212",
                                              "Origin": "http://evil.example:7212"})  # fmt: skip
        assert forged.status_code == 403
        # A change from another site is refused though it carries the cookie and its CSRF pair
        foreign = ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"})
        for header in foreign:
            crossed = browser.post(pause, headers={**_csrf(browser), **header})
            assert crossed.status_code == 403, header
            assert "may not change anything here" in crossed.json()["error"]
        # The console's own pages may, and so may a client that is no browser
        same = {"Origin": console.url, "Sec-Fetch-Site": "same-origin"}
        own = browser.post(pause, headers={**_csrf(browser), **same})
        assert own.status_code == 200 and own.json()["paused"] is True
        assert browser.post("/api/v1/queues/default/resume", headers=_csrf(browser)).status_code == 200
    # A name listed in BGJOBS_CONSOLE__ALLOWED_HOSTS is answered
    listed = serve(allowed_hosts=["ops.example.com"])
    with _client(listed) as client:
        assert client.get("/api/v1/overview", headers={"Host": "ops.example.com"}).status_code == 200
        assert client.get("/api/v1/overview", headers={"Host": "other.example.com"}).status_code == 403


def test_mounted_under_a_prefix_in_a_starlette_app_its_links_follow_the_mount(
    worker_env: dict[str, str],
) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    host = Starlette(routes=[
        Route("/", lambda request: PlainTextResponse("the host app")),
        Mount("/ops/bgjobs", create_app(get_settings())),
    ])  # fmt: skip
    with ConsoleServer(host) as served, _client(served) as client:
        assert client.get("/").text == "the host app"
        page = client.get("/ops/bgjobs/queues")
        assert page.status_code == 200
        assert 'href="/ops/bgjobs/static/console.css"' in page.text and 'href="/ops/bgjobs/runs"' in page.text
        assert page.cookies["bgjobs_csrf"]
        assert client.get("/ops/bgjobs/static/console.js").status_code == 200
        assert client.get("/ops/bgjobs/api/v1/openapi.json").json()["info"]["title"] == "bgjobs console API"


def test_the_openapi_schema_lists_every_route() -> None:
    settings = Settings(broker_url="stub://", database_url="sqlite:///console.db")
    schema = create_app(settings).openapi()
    paths = set(schema["paths"])
    for path in ("/api/v1/readyz", "/api/v1/queues/{name}/pause", "/api/v1/dead-letters/requeue",
                 "/api/v1/jobs/{name}/trigger", "/api/v1/webhooks/endpoints/{endpoint_id}/recover",
                 "/api/v1/payouts", "/api/v1/audit"):  # fmt: skip
        assert path in paths, path
    assert not [p for p in paths if not p.startswith("/api/v1/")]  # pages are not in the API schema


def test_the_standalone_console_refuses_a_public_address_without_authentication(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("BGJOBS_")}
    env.update({"BGJOBS_BROKER_URL": "stub://", "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"})
    upgrade = [sys.executable, "-m", "bgjobs.cli", "db", "upgrade"]
    subprocess.run(upgrade, env=env, check=True, capture_output=True)
    done = subprocess.run([sys.executable, "-m", "bgjobs.cli", "console", "--host", "0.0.0.0"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "bgjobs: the console would listen on 0.0.0.0 with no authentication: set "
        "BGJOBS_CONSOLE__TOKEN (or BGJOBS_CONSOLE__USERNAME and __PASSWORD), or listen on 127.0.0.1"
    ]
    # An empty or short token is no token: refused with the minimum, never taken as a credential
    for token, length in (("", 0), ("short", 5)):
        done = subprocess.run([sys.executable, "-m", "bgjobs.cli", "console", "--host", "0.0.0.0"],
                              env={**env, "BGJOBS_CONSOLE__TOKEN": token}, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"bgjobs: BGJOBS_CONSOLE__TOKEN: at least 16 characters (it has {length}); for example "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        ]


def test_batches_are_listed_shown_and_cancelled_through_the_api_and_the_cancel_is_audited(
    serve: Callable[..., ConsoleServer],
) -> None:
    import bgjobs
    from bgjobs import batches, pausing
    from bgjobs.audit import entries
    from tests.support.worker_jobs import record

    pausing.pause("default")  # no worker here anyway: the jobs wait
    with bgjobs.batch(description="api batch") as b:
        record.send_many([{"key": f"k{n}"} for n in range(3)])
    server = serve()
    with _browser(server) as api:
        listed = api.get("/api/v1/batches").json()
        (row,) = [r for r in listed["items"] if r["id"] == b.id]
        assert (row["description"], row["state"], row["total"]) == ("api batch", "running", 3)
        assert row["pending"] == 3
        assert api.get(f"/api/v1/batches/{b.id}").json()["counted"] == 0
        missing = api.get("/api/v1/batches/b_nope")
        assert missing.status_code == 404 and "no batch 'b_nope'" in missing.json()["error"]
        assert api.get("/api/v1/batches?colour=red").status_code == 422
        cancelled = api.post(f"/api/v1/batches/{b.id}/cancel", headers=_csrf(api))
        assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"] is True
        assert api.get("/batches").status_code == 200 and api.get(f"/batches/{b.id}").status_code == 200
    assert batches.status(b.id).cancel_requested
    (entry,) = [e for e in entries() if e.resource == f"batch:{b.id}"]
    assert entry.action == "cancel"


def test_workflows_are_listed_shown_and_cancelled_through_the_api_and_the_cancel_is_audited(
    serve: Callable[..., ConsoleServer],
) -> None:
    import bgjobs
    from bgjobs import pausing, workflows
    from bgjobs.audit import entries
    from tests.support.worker_jobs import record

    pausing.pause("default")  # no worker here anyway: the steps wait
    run = bgjobs.workflow(record.message({"key": "a"}), bgjobs.group([record.message({"key": "b"})]),
                          description="api workflow").start()  # fmt: skip
    server = serve()
    with _browser(server) as api:
        listed = api.get("/api/v1/workflows").json()
        (row,) = [r for r in listed["items"] if r["id"] == run.id]
        assert (row["description"], row["state"], row["steps"]) == ("api workflow", "running", 2)
        shown = api.get(f"/api/v1/workflows/{run.id}").json()
        assert [[s["state"] for s in stage] for stage in shown["stages"]] == [["queued"], ["waiting"]]
        missing = api.get("/api/v1/workflows/w_nope")
        assert missing.status_code == 404 and "no workflow 'w_nope'" in missing.json()["error"]
        assert api.get("/api/v1/workflows?colour=red").status_code == 422
        cancelled = api.post(f"/api/v1/workflows/{run.id}/cancel", headers=_csrf(api))
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert api.get("/workflows").status_code == 200 and api.get(f"/workflows/{run.id}").status_code == 200
    assert workflows.status(run.id).state == "cancelled"
    (entry,) = [e for e in entries() if e.resource == f"workflow:{run.id}"]
    assert entry.action == "cancel"


def test_a_bulk_requeue_of_all_matching_shows_its_progress_while_it_runs(
    serve: Callable[..., ConsoleServer], worker_env: dict[str, str]
) -> None:
    import threading

    import redis

    from tests.support.dead_letters import fill

    client, total = redis.Redis.from_url(worker_env["BGJOBS_BROKER_URL"]), 30_000
    xq = "dramatiq:default.XQ"
    client.sadd("dramatiq:__bgjobs_queues__", "default")
    fill(client, "default", total, at_ms=int(time.time() * 1000) - 60_000)
    console = serve()
    answers: list[httpx.Response] = []
    with _browser(console, "/dead-letters") as browser:
        body, headers = {"match": {"actor": "sync"}}, _csrf(browser)
        running = threading.Thread(target=lambda: answers.append(browser.post(
            "/api/v1/dead-letters/requeue", json=body, headers=headers, timeout=120)))  # fmt: skip
        running.start()
        seen: list[dict[str, Any]] = []

        def under_way() -> bool:
            seen[:] = browser.get("/api/v1/dead-letters/progress").json()["operations"]
            return bool(seen) and 0 < seen[0]["done"] < total

        try:
            wait_for(under_way, timeout=60, interval=0.01, what="the requeue under way")
        finally:
            running.join(timeout=120)
        assert (seen[0]["action"], seen[0]["total"]) == ("requeue", total)
        assert answers[0].json() == {"selected": total, "requeued": total}
        assert browser.get("/api/v1/dead-letters/progress").json() == {"operations": []}
    assert client.zcard(xq) == 0 and client.llen("dramatiq:default") == total


def test_a_job_is_explained_and_cancelled_through_the_api_and_the_cancel_is_audited(
    serve: Callable[..., ConsoleServer],
) -> None:
    from bgjobs import pausing
    from bgjobs.audit import entries
    from bgjobs.cancelling import cancellation
    from tests.support.worker_jobs import record

    pausing.pause("default")
    sent = record.send({"key": "to-cancel"})
    server = serve()
    with _browser(server) as api:
        why = api.get(f"/api/v1/jobs/{sent.message_id}/explain").json()["explanation"]
        assert why[0] == "waiting in default: 0 ahead of it, 1 in the queue"
        done = api.post(f"/api/v1/jobs/{sent.message_id}/cancel", headers=_csrf(api))
        assert done.status_code == 200 and done.json() == {"cancelled": sent.message_id}
        why = api.get(f"/api/v1/jobs/{sent.message_id}/explain").json()["explanation"]
        assert why[0].startswith("cancelled by console:")
    from bgjobs import runtime

    who = cancellation(runtime.current().broker, sent.message_id)
    assert who is not None and who["by"].startswith("console:")
    (entry,) = [e for e in entries() if e.resource == f"job:{sent.message_id}"]
    assert entry.action == "cancel"


def test_per_key_limits_are_shown_changed_at_run_time_and_every_change_is_audited(
    serve: Callable[..., ConsoleServer], workers: list[WorkerProcess], worker_env: dict[str, str],
) -> None:  # fmt: skip
    from bgjobs.audit import entries
    from tests.support.worker_jobs import per_tenant, starts

    server = serve()
    with _browser(server) as api:
        (shown,) = [a for a in api.get("/api/v1/limits").json()["items"] if a["actor"] == "per_tenant"]
        assert shown["declared"] == shown["current"] == {"limit": 1, "rate": None, "burst": 1}
        held = api.post("/api/v1/limits/per_tenant", json={"key": "t7", "limit": 0}, headers=_csrf(api))
        assert held.status_code == 200
        assert held.json() == {"actor": "per_tenant", "key": "t7", "limit": 0, "rate": None, "burst": 1}
        sent = [per_tenant.send({"key": "t7"}) for _ in range(3)]
        assert api.get("/api/v1/limits/per_tenant").json()["items"] == [
            {"key": "t7", "running": 0, "waiting": 3, "limit": 0, "interval_ms": None, "burst": None}
        ]
        why = api.get(f"/api/v1/jobs/{sent[2].message_id}/explain").json()["explanation"]
        assert why[0] == ("waiting in key t7's lane of per_tenant (3 waiting): key t7 of per_tenant is at "
                          "its cap: 0 of 0 running")
        for body, error in (
            ({"limit": -1}, "limit: -1; give 0 (hold every job) or more"),
            ({"key": "t7", "burst": 0}, "burst: 0; give 1 or more"),
            ({"rate": "often"}, "rate='often': give a rate like 100/m, 5/s, 1000/h or 3/10s"),
            ({"limits": 3}, None),
            ({}, "limit: nothing to change; give limit, rate or burst, or reset"),
        ):  # fmt: skip
            refused = api.post("/api/v1/limits/per_tenant", json=body, headers=_csrf(api))
            assert refused.status_code == 422, body
            if error is not None:
                assert refused.json()["error"] == error
            else:
                assert "limits" in refused.text  # the unknown field is named
        missing = api.post("/api/v1/limits/nobody", json={"limit": 1}, headers=_csrf(api))
        assert missing.status_code == 404
        assert "no actor 'nobody' with per-key limits" in missing.json()["error"]
        start_worker(workers, worker_env, processes=1)
        freed = api.post("/api/v1/limits/per_tenant", json={"key": "t7", "reset": True}, headers=_csrf(api))
        assert freed.json() == {"actor": "per_tenant", "key": "t7", "limit": 1, "rate": None, "burst": 1}
        wait_for(lambda: starts("t7") == 3, timeout=30, what="the three held jobs to run, one at a time")
    done = [(e.action, e.resource, e.result) for e in entries() if e.resource.startswith("limits:")]
    assert ("set-limit", "limits:nobody", "failed") in done
    assert sum(1 for d in done if d == ("set-limit", "limits:per_tenant/t7", "ok")) == 2
