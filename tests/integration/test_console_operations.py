"""What operators do beyond the queues' sizes, over real HTTP: a queue's jobs with their arguments
(deleted or run now one by one), the webhook messages by endpoint, type, status and time, each
actor's throughput and run times, and the audit log by who, action, resource and time. Real Redis
and SQLite, real workers where a job has to run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import redis

from bgjobs import audit, history, runtime, webhooks
from bgjobs.console import create_app
from bgjobs.settings import Settings, WebhookSettings, get_settings
from tests.support import worker_jobs
from tests.support.console import ConsoleServer
from tests.support.workers import WorkerProcess, broker_client, start_worker, wait_for


@pytest.fixture
def browser(worker_env: dict[str, str]) -> Iterator[httpx.Client]:
    """A client of a console on this test's Redis and database that has loaded a page (the CSRF cookie)."""
    with ConsoleServer(create_app(get_settings())) as console, \
            httpx.Client(base_url=console.url, timeout=10) as client:  # fmt: skip
        assert client.get("/").status_code == 200
        yield client


def _post(client: httpx.Client, path: str, **kwargs: Any) -> httpx.Response:
    return client.post(path, headers={"X-CSRF-Token": client.cookies["bgjobs_csrf"]}, **kwargs)


def _keys(client: httpx.Client, state: str) -> list[str]:
    found = client.get("/api/v1/queues/default/jobs", params={"state": state})
    assert found.status_code == 200, found.text
    return [j["args"][0]["key"] for j in found.json()["items"]]


def test_waiting_and_delayed_jobs_are_listed_with_masked_arguments_deleted_and_run_now(
    browser: httpx.Client, worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    client = broker_client(worker_env)
    for key in ("a", "b", "c"):
        worker_jobs.record.send({"key": key, "sleep_s": 0})
    worker_jobs.record.send({"key": "later", "sleep_s": 0}, delay=timedelta(hours=1))

    # The waiting ones, in the order workers take them, their arguments masked as the logs mask them
    listed = browser.get("/api/v1/queues/default/jobs").json()
    assert [j["args"] for j in listed["items"]] == [[{"key": k, "sleep_s": "***"}] for k in "abc"]
    assert {j["state"] for j in listed["items"]} == {"waiting"} and listed["more"] is False
    assert browser.get("/api/v1/queues/default/jobs", params={"limit": 2}).json()["more"] is True
    (delayed,) = browser.get("/api/v1/queues/default/jobs", params={"state": "delayed"}).json()["items"]
    assert delayed["args"][0]["key"] == "later" and delayed["state"] == "delayed" and delayed["eta"]
    ids = {j["args"][0]["key"]: j["id"] for j in listed["items"]} | {"later": delayed["id"]}

    # Run now: c goes to the head; the delayed one leaves its delay and goes before it
    moved = _post(browser, f"/api/v1/queues/default/jobs/{ids['c']}/run-now")
    assert moved.status_code == 200 and moved.json()["moved"]["actor"] == worker_jobs.record.name
    assert _keys(browser, "waiting") == ["c", "a", "b"]
    assert _post(browser, f"/api/v1/queues/default/jobs/{ids['later']}/run-now").status_code == 200
    assert _keys(browser, "waiting") == ["later", "c", "a", "b"] and _keys(browser, "delayed") == []

    # Delete: a is gone for good, message and all; a second delete says it is not there any more
    deleted = _post(browser, f"/api/v1/queues/default/jobs/{ids['a']}/delete")
    assert deleted.json()["deleted"]["id"] == ids["a"]
    assert not client.hexists("dramatiq:default.msgs", ids["a"])
    again = _post(browser, f"/api/v1/queues/default/jobs/{ids['a']}/delete")
    assert again.status_code == 404 and "a worker took it" in again.json()["error"]
    assert _keys(browser, "waiting") == ["later", "c", "b"]

    # A worker then runs what is left, the delayed one now, and never the deleted one
    start_worker(workers, worker_env, processes=1)
    wait_for(lambda: worker_jobs.effect_count() == 3, timeout=30, what="the three jobs left")
    assert set(worker_jobs.effects()) == {"later", "c", "b"}
    # Each action is audited with the job it touched
    actions = [(e.action, e.resource) for e in reversed(audit.entries())]
    assert actions[0] == ("run-job-now", f"job:default/{ids['c']}")
    assert [a for a, _ in actions] == ["run-job-now", "run-job-now", "delete-job", "delete-job"]


def test_a_retrying_job_held_by_a_worker_is_shown_and_refused_then_run_now_once_given_back(
    browser: httpx.Client, worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    # Given a job whose first attempt failed, waiting an hour for its retry, held by the worker
    hour = {"BGJOBS_RETRIES__MIN_BACKOFF_MS": "3600000", "BGJOBS_RETRIES__MAX_BACKOFF_MS": "3600000"}
    first = start_worker(workers, {**worker_env, **hour}, processes=1)
    worker_jobs.flaky_once.send({"key": "flaky", "sleep_s": 0})
    client = broker_client(worker_env)
    wait_for(lambda: client.hlen("dramatiq:default.DQ.msgs") == 1, timeout=30, what="the retry")
    (job,) = browser.get("/api/v1/queues/default/jobs", params={"state": "delayed"}).json()["items"]
    assert (job["state"], job["retries"]) == ("retrying", 1)
    assert job["args"] == [{"key": "flaky", "sleep_s": "***"}]

    # The worker holds it until its time: deleting or running it now is refused, not done twice
    wait_for(lambda: client.llen("dramatiq:default.DQ") == 0, timeout=30, what="the worker to hold it")
    held = _post(browser, f"/api/v1/queues/default/jobs/{job['id']}/run-now")
    assert held.status_code == 404 and "holds it until its time" in held.json()["error"]

    # When that worker stops it gives the job back; run now then puts it first, its retry count kept
    first.terminate()  # a clean shutdown, as a supervisor's SIGTERM
    wait_for(lambda: client.llen("dramatiq:default.DQ") == 1, timeout=30, what="the job given back")
    moved = _post(browser, f"/api/v1/queues/default/jobs/{job['id']}/run-now").json()["moved"]
    assert moved["state"] == "retrying"
    (waiting,) = browser.get("/api/v1/queues/default/jobs").json()["items"]
    assert waiting["retries"] == 1 and waiting["eta"] is None
    start_worker(workers, worker_env, processes=1)
    wait_for(lambda: client.get("test:flaky:flaky") == b"2", timeout=30, what="the second attempt")


def test_a_running_job_is_listed_in_progress_with_its_worker(
    browser: httpx.Client, worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    start_worker(workers, worker_env, processes=1)
    worker_jobs.record.send({"key": "slow", "sleep_s": 60})
    wait_for(lambda: worker_jobs.starts("slow") == 1, timeout=30, what="the job to start")
    (running,) = browser.get("/api/v1/queues/default/jobs", params={"state": "in_progress"}).json()["items"]
    assert running["state"] == "in_progress" and running["worker"] and running["args"][0]["key"] == "slow"
    refused = _post(browser, f"/api/v1/queues/default/jobs/{running['id']}/delete")
    assert refused.status_code == 404 and "a worker took it" in refused.json()["error"]
    page = browser.get("/queues/default", params={"state": "in_progress"})
    assert page.status_code == 200 and running["id"][:8] in page.text
    assert "/run-now" not in page.text  # no action offered on a job a worker runs


def test_unknown_queue_state_or_parameter_is_refused_naming_it(browser: httpx.Client) -> None:
    cases = [
        (browser.get("/api/v1/queues/nope/jobs"), 404, "queue"),
        (browser.get("/api/v1/queues/default/jobs", params={"state": "stuck"}), 422, "state"),
        (browser.get("/api/v1/dead-letters", params={"colour": "red"}), 422, "colour"),
        (browser.get("/api/v1/audit", params={"actoin": "purge"}), 422, "actoin"),
        (browser.get("/api/v1/webhooks/messages", params={"status": "lost"}), 422, "status"),
        (browser.get("/api/v1/actors", params={"span": "week"}), 422, "span"),
    ]
    for answer, status, field in cases:
        assert answer.status_code == status, answer.text
        assert answer.json()["field"] == field, answer.text
    colour = browser.get("/api/v1/dead-letters", params={"colour": "red"}).json()["error"]
    assert colour.startswith("colour: /api/v1/dead-letters has no parameter 'colour'; it takes actor, ")
    # A page says it in the page, not as JSON
    page = browser.get("/dead-letters", params={"colour": "red"}, headers={"Accept": "text/html"})
    assert page.status_code == 422 and "<h1>" in page.text
    assert "has no parameter &#39;colour&#39;" in page.text


def test_on_rabbitmq_the_jobs_of_a_queue_are_not_read_and_it_says_why(redis_url: str) -> None:
    from bgjobs import queued
    from bgjobs.errors import ConfigurationError

    runtime.install(runtime.Runtime(Settings(broker_url="amqp://guest:guest@127.0.0.1:1/",
                                             coordination_url=redis_url)))  # fmt: skip
    try:
        with pytest.raises(ConfigurationError, match="AMQP cannot read a queue without taking its messages"):
            queued.jobs("default")
    finally:
        runtime.reset()


def test_webhook_messages_are_found_by_endpoint_type_status_and_time(harness: Any) -> None:
    from tests.support.receivers import webhook_receiver

    jobs = harness(webhooks=WebhookSettings(require_https=False, allow=["127.0.0.1/32"], jitter=0.0,
                                            retry_schedule_s=[]))  # fmt: skip
    with webhook_receiver() as receiver:
        good = webhooks.add_endpoint(receiver.url("/good"), event_types=["*"])
        bad = webhooks.add_endpoint(receiver.url("/bad"), event_types=["payment.*"])
        receiver.script("/bad", 500)
        booked = webhooks.publish("booking.created", {"booking_id": "B1"})
        paid = webhooks.publish("payment.succeeded", {"payment_id": "P1"})
        jobs.drain()
        with ConsoleServer(create_app(runtime.current().settings)) as console, httpx.Client(
                base_url=console.url, timeout=10) as api:  # fmt: skip

            def ids(**params: str) -> list[str]:
                found = api.get("/api/v1/webhooks/messages", params=params)
                assert found.status_code == 200, found.text
                return [m["id"] for m in found.json()["items"]]

            assert ids() == [paid, booked]  # newest first
            assert ids(event_type="booking.created") == [booked]
            assert ids(endpoint_id=bad.id) == [paid]
            assert ids(status="failed") == [paid] and ids(status="delivered") == [paid, booked]
            assert ids(endpoint_id=good.id, status="failed") == []  # one delivery both, not one each
            assert ids(since="2999-01-01") == [] and ids(since="2000-01-01T00:00") == [paid, booked]
            (shown,) = api.get("/api/v1/webhooks/messages", params={"status": "failed"}).json()["items"]
            by_endpoint = {d["endpoint_id"]: (d["status"], d["last_status_code"])
                           for d in shown["deliveries"]}  # fmt: skip
            assert by_endpoint == {good.id: ("delivered", 200), bad.id: ("failed", 500)}
            page = api.get("/webhooks", params={"status": "failed"}).text
            assert f'data-message="{paid}"' in page and f'data-message="{booked}"' not in page


def test_the_audit_log_is_found_by_who_action_resource_and_time(harness: Any) -> None:
    harness()
    audit.record(who="ann", action="purge", resource="dead-letters:match {'queue': 'mail'}", result="ok")
    audit.record(who="bob", action="pause", resource="queue:webhooks", result="ok")
    audit.record(who="Ann Lee", action="requeue", resource="dead-letters:1-0", result="refused")
    newest_first = audit.entries()
    with ConsoleServer(create_app(runtime.current().settings)) as console, httpx.Client(
            base_url=console.url, timeout=10) as api:  # fmt: skip

        def actions(**params: str) -> list[str]:
            found = api.get("/api/v1/audit", params=params)
            assert found.status_code == 200, found.text
            return [e["action"] for e in found.json()["items"]]

        assert actions() == ["requeue", "pause", "purge"]
        assert actions(who="ann") == ["requeue", "purge"]  # text it contains, any case
        assert actions(action="pause") == ["pause"]
        assert actions(resource="dead-letters") == ["requeue", "purge"]
        assert actions(who="ann", resource="MAIL") == ["purge"]
        middle = newest_first[1].at.isoformat()
        assert actions(until=middle) == ["purge"]  # before, not at
        assert actions(since=middle) == ["requeue", "pause"]
        later = (newest_first[0].at + timedelta(days=1)).date().isoformat()
        assert actions(since=later) == []
        bad = api.get("/api/v1/audit", params={"until": "yesterday"})
        assert bad.status_code == 422 and bad.json()["field"] == "until"
        page = api.get("/audit", params={"who": "bob"}).text
        assert "queue:webhooks" in page and "dead-letters:1-0" not in page


def test_each_actor_s_runs_failures_and_run_times_by_minute_and_by_hour(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    hour = 480_000 * 3600.0  # the start of an hour
    for ms in (5, 8, 20, 40, 90, 200, 400, 900, 2_000, 7_000):
        history.ran("mail.send", ms, failed=False)
    history.ran("mail.send", 70_000, failed=True)
    history.record(client, "dramatiq", None, now=hour + 30)  # minute 0
    history.ran("mail.send", 30, failed=True)
    history.ran("export.run", 3, failed=False)
    history.record(client, "dramatiq", None, now=hour + 150)  # minute 2

    by_minute = history.actor_series(client, "dramatiq", span="hour", now=hour + 59 * 60)
    mail = by_minute["mail.send"]
    assert len(mail["points"]) == 60 and mail["points"][0]["at"] == hour
    assert [(p["done"], p["failed"]) for p in mail["points"][:3]] == [(11, 1), (0, 0), (1, 1)]
    # 12 runs: the 6th (90 ms) is in the 100 ms bucket (p50), the 12th beyond 60 s (p95, shown as 120 s)
    assert (mail["done"], mail["failed"], mail["p50_ms"], mail["p95_ms"]) == (12, 2, 100, 120_000)
    assert mail["points"][1]["p50_ms"] is None and mail["points"][2]["p50_ms"] == 50
    assert by_minute["export.run"]["p95_ms"] == 10
    by_hour = history.actor_series(client, "dramatiq", span="day", now=hour + 60)
    assert len(by_hour["mail.send"]["points"]) == 24
    assert by_hour["mail.send"]["points"][-1]["done"] == 12 and by_hour["mail.send"]["p50_ms"] == 100
    assert 0 < client.ttl(f"dramatiq:bgjobs-history:actors-h:{int(hour // 3600)}") <= history.KEEP_HOURS_S
    assert history.actor_series(client, "dramatiq", span="hour", now=hour + 3 * 3600) == {}  # gone by then


def test_the_actors_page_shows_what_a_real_worker_ran(
    browser: httpx.Client, worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    start_worker(workers, worker_env, processes=1)
    worker_jobs.record.send({"key": "counted", "sleep_s": 0})
    worker_jobs.flaky_once.send({"key": "counted-flaky", "sleep_s": 0})
    name = worker_jobs.record.name

    def figures() -> dict[str, Any]:
        return {a["actor"]: a for a in browser.get("/api/v1/actors").json()["items"]}

    wait_for(lambda: figures().get(worker_jobs.flaky_once.name, {}).get("done") == 2, timeout=30,
             what="both runs of the flaky job in the history")  # fmt: skip
    flaky = figures()[worker_jobs.flaky_once.name]
    assert flaky["failed"] == 1 and flaky["p50_ms"] is not None
    wait_for(lambda: figures().get(name, {}).get("done") == 1, timeout=30, what="the record run")
    page = browser.get("/actors").text
    assert f'data-actor="{name}"' in page and 'class="chart"' in page
