"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a real worker,
Redis and SQLite. Each page is saved as a screenshot under build/test-artifacts/console/."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bgjobs import runtime, webhooks
from bgjobs.console import create_app
from bgjobs.embedded import RedisServer
from bgjobs.settings import Settings, get_settings
from tests.support import worker_jobs
from tests.support.console import ConsoleServer
from tests.support.pause_checks import pause_checks
from tests.support.workers import ROOT, WorkerProcess, start_worker, wait_for

ARTIFACTS = ROOT / "build" / "test-artifacts" / "console"
PAGES = ("/", "/queues", "/queues/default", "/actors", "/dead-letters", "/runs", "/batches", "/workflows",
         "/limits", "/schedule", "/webhooks", "/notifications", "/payouts", "/exports", "/audit")  # fmt: skip
@pytest.fixture
def console(
    worker_env: dict[str, str], workers: list[WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch.setenv("BGJOBS_WEBHOOKS__REQUIRE_HTTPS", "false")
    monkeypatch.setenv("BGJOBS_WEBHOOKS__ALLOW", '["127.0.0.1/32"]')
    runtime.reset()
    client = redis.Redis.from_url(worker_env["BGJOBS_BROKER_URL"])
    client.set("test:refusing", "1")
    start_worker(workers, worker_env, processes=1)
    worker_jobs.refused.send({"key": "refused-in-browser", "sleep_s": 0})
    wait_for(lambda: client.zcard("dramatiq:default.XQ") == 1, timeout=30, what="a dead letter")
    client.delete("test:refusing")
    webhooks.add_endpoint("http://127.0.0.1:9/hooks", event_types=["booking.*"], owner="merchant-1",
                          description="a merchant's endpoint")  # fmt: skip
    with ConsoleServer(create_app(get_settings())) as server:
        yield server.url


def _shot(tab: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_every_page_renders_without_errors_on_a_laptop_and_a_phone(console: str, page: Any) -> None:
    for path in PAGES:
        answer = page.goto(console + path)
        assert answer is not None and answer.status == 200, path
        assert page.locator("h1").inner_text(), path
        _shot(page, "laptop" + (path.replace("/", "-") if path != "/" else "-overview"))
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/", "/dead-letters", "/audit", "/queues/default", "/webhooks"):
        page.goto(console + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width}px wide on a phone"  # tables scroll inside their box
        # A long reason keeps a readable column (the table scrolls) rather than a row a screen tall
        tallest = page.evaluate("Math.max(0, ...[...document.querySelectorAll('tbody tr')]"
                                ".map(r => r.getBoundingClientRect().height))")  # fmt: skip
        assert tallest <= 160, f"{path} has a row {tallest}px tall on a phone"
        _shot(page, "phone" + (path.replace("/", "-") if path != "/" else "-overview"))


def test_the_overview_shows_the_live_worker_and_the_dead_letter(console: str, page: Any) -> None:
    page.goto(console + "/")
    assert page.locator("text=Live worker processes").is_visible()
    rows = page.locator("table").first.locator("tbody tr")
    assert "default" in rows.all_inner_texts()[1] or any("default" in r for r in rows.all_inner_texts())
    dead = page.locator("a.card", has_text="Dead letters").inner_text()
    assert dead.split()[-1] == "1"
    sparklines = page.locator("svg.spark")
    assert sparklines.count() == 2 * rows.count()  # depth and jobs done, per queue
    assert "jobs done per minute" in (sparklines.nth(1).get_attribute("aria-label") or "")


def test_requeueing_a_dead_letter_from_its_page_runs_it(console: str, page: Any) -> None:
    page.goto(console + "/dead-letters")
    row = page.locator("tr[data-letter]")
    assert row.count() == 1 and "vendor refused refused-in-browser" in row.inner_text()
    row.locator("button", has_text="Requeue").click()
    page.locator("#toast", has_text="requeued 1").wait_for()
    wait_for(lambda: worker_jobs.effect_count() == 1, timeout=30, what="the requeued job's effect")
    page.locator("td.empty", has_text="no dead letters").wait_for(timeout=10_000)  # the page refreshed itself


def test_purging_every_dead_letter_says_how_many_and_needs_no_hidden_filter(console: str, page: Any) -> None:
    asked: list[str] = []
    page.on("dialog", lambda d: asked.append(d.message))  # the fixture's handler accepts it
    page.goto(console + "/dead-letters")
    assert page.locator("tr[data-letter]").count() == 1
    page.locator("button", has_text="Purge all matching").click()
    page.locator("td.empty", has_text="no dead letters").wait_for(timeout=10_000)
    assert asked == ["Delete every dead letter (all 1, no filter) for good?"]


def test_the_dead_letter_filter_reads_an_empty_or_a_zone_less_since(console: str, page: Any) -> None:
    page.goto(console + "/dead-letters")
    form = page.locator("form.filters")
    form.locator("button", has_text="Filter").click()  # every field empty, "since" included
    page.wait_for_url("**/dead-letters?*")
    assert page.locator("tr[data-letter]").count() == 1
    form.locator("input[name=since]").fill("2000-01-01T00:00")  # what a datetime-local input sends
    form.locator("button", has_text="Filter").click()
    page.wait_for_url("**since=2000-01-01T00%3A00*")
    assert page.locator("tr[data-letter]").count() == 1
    form.locator("input[name=since]").fill("2999-01-01T00:00")
    form.locator("button", has_text="Filter").click()
    page.locator("td.empty", has_text="no dead letters match").wait_for()
    _shot(page, "laptop-dead-letters-filtered")


def test_a_live_refresh_keeps_what_the_operator_entered_and_run_asks_naming_the_job_and_arguments(
    console: str, page: Any
) -> None:
    asked: list[str] = []
    page.on("dialog", lambda d: asked.append(d.message))  # the fixture's handler accepts it
    page.goto(console + "/schedule")
    form = page.locator("#trigger-form")
    form.locator("select[name=job]").select_option("payouts.monthly")
    form.locator("textarea[name=args]").fill("period=2026-10")
    page.locator("h1").click()  # looking away: the page may refresh now

    # When the page has refreshed twice since
    before = int(page.evaluate("document.body.dataset.refreshed || '0'"))
    page.locator(f"body[data-refreshed='{before + 2}']").wait_for(state="attached")

    # Then the form still holds what was entered, and the marker says the data is fresh
    assert form.locator("select[name=job]").input_value() == "payouts.monthly"
    assert form.locator("textarea[name=args]").input_value() == "period=2026-10"
    assert page.locator("#freshness").inner_text().startswith("live · updated ")

    # And Run asks first, naming the job and its arguments
    form.locator("select[name=job]").select_option("cleanup.daily")
    form.locator("textarea[name=args]").fill("dry_run=true")
    form.locator("button", has_text="Run").click()
    page.locator("#toast", has_text="message_id").wait_for()
    assert asked == ["Run cleanup.daily with dry_run=true?"]


@pytest.mark.expected_console_error("the server responded with a status of 503")
def test_a_failed_refresh_marks_the_page_stale(console: str, page: Any) -> None:
    page.goto(console + "/")
    page.locator("body[data-refreshed='1']").wait_for(state="attached")
    page.route("**/*", lambda route: route.fulfill(status=503, body='{"error": "Redis does not answer"}')
               if route.request.headers.get("x-bgjobs-fragment") == "1" else route.continue_())  # fmt: skip
    page.locator("#freshness.bad").wait_for()
    assert page.locator("#freshness").inner_text().startswith("stale: not updated for ")


@pytest.mark.expected_console_error("the server responded with a status of 503")
def test_with_redis_down_a_page_says_which_check_failed_instead_of_raw_json(
    worker_env: dict[str, str], page: Any
) -> None:
    with RedisServer() as server:
        settings = Settings(broker_url=server.url, database_url=worker_env["BGJOBS_DATABASE_URL"])
        with ConsoleServer(create_app(settings)) as console:
            page.goto(console.url + "/queues")
            assert page.locator("h1").inner_text() == "Queues"
            server.stop()  # Redis goes away
            for path in ("/", "/queues", "/dead-letters"):
                answer = page.goto(console.url + path)
                assert answer is not None and answer.status == 503, path
                problem = page.locator("ul.problems[role=alert]").inner_text()
                assert problem.startswith("the broker does not answer"), (path, problem)
                assert "check BGJOBS_BROKER_URL" in problem
                assert page.locator("#freshness").inner_text().startswith("stale"), path
            _shot(page, "laptop-redis-down")


def test_an_endpoint_action_s_toast_says_the_outcome_not_the_whole_endpoint(console: str, page: Any) -> None:
    page.goto(console + "/webhooks")
    page.locator("button", has_text="Disable").first.click()
    toast = page.locator("#toast", has_text="Disable: ")
    toast.wait_for()
    assert toast.inner_text() == "Disable: disabled_reason disabled by an operator, health disabled"
    assert "127.0.0.1:9" not in toast.inner_text()  # the endpoint's URL and the rest stay out of it


def test_pausing_and_resuming_a_queue_from_the_queues_page(
    console: str, page: Any, worker_env: dict[str, str]
) -> None:
    page.goto(console + "/queues")
    row = page.locator('tr[data-queue="default"]')
    with pause_checks(redis.Redis.from_url(worker_env["BGJOBS_BROKER_URL"]), "default") as checks:
        row.locator("button", has_text="Pause").click()
        row.locator(".badge", has_text="paused").wait_for(timeout=10_000)
        checks.wait_seen()  # a consumer read the pause
        worker_jobs.record.send({"key": "paused-in-browser", "sleep_s": 0})
        checks.wait_reads(4)  # absence: four more reads, each of which would have handed it out
        assert worker_jobs.effect_count() == 0
    row.locator("button", has_text="Resume").click()
    row.locator(".badge", has_text="running").wait_for(timeout=10_000)
    wait_for(lambda: worker_jobs.effect_count() == 1, timeout=10, what="the job after resume")


def test_triggering_a_batch_job_from_the_schedule_and_seeing_its_run(console: str, page: Any) -> None:
    page.goto(console + "/schedule")
    page.select_option("#trigger-form select[name=job]", "cleanup.daily")
    page.fill("#trigger-form textarea[name=args]", "dry_run=true")
    page.locator("#trigger-form button", has_text="Run").click()
    page.locator("#toast", has_text="message_id").wait_for()
    page.goto(console + "/runs")
    page.locator("tr[data-run]", has_text="cleanup.daily").locator(".badge", has_text="succeeded").wait_for(
        timeout=30_000)  # fmt: skip
    _shot(page, "laptop-runs-after-trigger")


def test_a_queue_s_waiting_jobs_are_browsed_with_their_arguments_run_now_and_deleted(
    console: str, page: Any, worker_env: dict[str, str]
) -> None:
    from bgjobs.pausing import pause, resume

    asked: list[str] = []
    page.on("dialog", lambda d: asked.append(d.message))  # the fixture's handler accepts it
    with pause_checks(redis.Redis.from_url(worker_env["BGJOBS_BROKER_URL"]), "default") as checks:
        pause("default")
        checks.wait_seen()  # the worker's consumer honours the pause: what is sent now waits
    for key in ("first-sent", "second-sent"):
        worker_jobs.record.send({"key": key, "sleep_s": 0})
    page.goto(console + "/queues")
    page.locator('tr[data-queue="default"] a', has_text="default").click()
    page.wait_for_url("**/queues/default")
    rows = page.locator("tr[data-job]")
    assert rows.count() == 2
    assert "first-sent" in rows.nth(0).inner_text() and '"sleep_s": "***"' in rows.nth(0).inner_text()

    # Run now puts the second first; Delete asks, naming the job, and takes the other away
    rows.nth(1).locator("button", has_text="Run now").click()
    page.locator("#toast", has_text="Run now").wait_for()
    page.locator("tr[data-job]").first.filter(has_text="second-sent").wait_for(timeout=10_000)  # refreshed
    page.locator("tr[data-job]", has_text="first-sent").locator("button", has_text="Delete").click()
    page.locator("#toast", has_text="Delete").wait_for()
    page.locator("tr[data-job]", has_text="first-sent").wait_for(state="detached", timeout=10_000)
    assert asked[0].startswith(f"Run {worker_jobs.record.name} (") and asked[0].endswith(") next?")
    assert asked[1].startswith(f"Delete {worker_jobs.record.name} (") and "It will not run." in asked[1]
    _shot(page, "laptop-queue-waiting")

    # Once resumed, the worker runs the job that is left and never the deleted one
    resume("default")
    wait_for(lambda: worker_jobs.effect_count() == 1, timeout=30, what="the job left in the queue")
    assert set(worker_jobs.effects()) == {"second-sent"}
    page.locator("td.empty", has_text="no waiting jobs").wait_for(timeout=10_000)


def test_the_actors_page_charts_what_the_worker_ran(console: str, page: Any) -> None:
    worker_jobs.record.send({"key": "charted", "sleep_s": 0})
    wait_for(lambda: worker_jobs.effect_count() == 1, timeout=30, what="the job to run")
    page.goto(console + "/actors")
    row = page.locator(f'tr[data-actor="{worker_jobs.record.name}"]')
    row.wait_for(timeout=10_000)  # the worker adds its runs on its next pass; the page refreshes itself
    refused = page.locator(f'tr[data-actor="{worker_jobs.refused.name}"]')
    assert "1 (100%)" in refused.inner_text()  # the fixture's dead letter: one run, failed
    assert "runs, 1 failed" in (refused.locator("svg.chart").first.get_attribute("aria-label") or "")
    page.locator("nav.tabs a", has_text="last day").click()
    page.wait_for_url("**/actors?span=day")
    assert page.locator(f'tr[data-actor="{worker_jobs.refused.name}"]').is_visible()
    _shot(page, "laptop-actors-day")


def test_webhook_messages_are_filtered_and_a_message_s_attempts_open_from_the_list(
    console: str, page: Any
) -> None:
    booked = webhooks.publish("booking.created", {"booking_id": "B7"}, owner="merchant-1")
    page.goto(console + "/webhooks")
    page.locator(f'tr[data-message="{booked}"]').wait_for()
    form = page.locator("#message-filters")
    form.locator("input[name=event_type]").fill("booking.cancelled")
    form.locator("button", has_text="Filter").click()
    page.locator("td.empty", has_text="no messages match").wait_for()
    form = page.locator("#message-filters")
    form.locator("input[name=event_type]").fill("booking.created")
    form.locator("button", has_text="Filter").click()
    page.wait_for_url("**event_type=booking.created*")
    _shot(page, "laptop-webhook-messages")
    page.locator(f'tr[data-message="{booked}"] a').click()
    page.wait_for_url(f"**message={booked}*")
    assert page.locator("#attempts").is_visible()
    assert page.locator("button", has_text="Replay to every endpoint").is_visible()


def test_the_audit_page_filters_by_who_action_resource_and_time(console: str, page: Any) -> None:
    page.goto(console + "/queues")
    page.locator('tr[data-queue="default"] button', has_text="Pause").click()
    page.locator('tr[data-queue="default"] .badge', has_text="paused").wait_for(timeout=10_000)
    page.goto(console + "/audit")
    form = page.locator("form.filters")
    form.locator("input[name=action]").fill("pause")
    form.locator("input[name=resource]").fill("queue:default")
    form.locator("input[name=since]").fill("2000-01-01T00:00")
    form.locator("button", has_text="Filter").click()
    page.wait_for_url("**action=pause*")
    assert page.locator("tbody tr").count() == 1 and "queue:default" in page.locator("tbody tr").inner_text()
    _shot(page, "laptop-audit-filtered")
    form = page.locator("form.filters")
    form.locator("input[name=who]").fill("somebody-else")
    form.locator("button", has_text="Filter").click()
    page.locator("td.empty", has_text="no actions match").wait_for()


def test_a_batch_s_progress_and_its_cancel_from_its_page(console: str, page: Any) -> None:
    import bgjobs
    from bgjobs import batches, pausing

    with pause_checks(redis.Redis.from_url(get_settings().broker_url), "default") as checks:
        pausing.pause("default")  # the batch's jobs wait until the cancel
        checks.wait_seen()  # the worker's consumer honours the pause before the batch is sent
    with bgjobs.batch(description="a batch in the browser") as b:
        worker_jobs.record.send_many([{"key": f"batch-{n}"} for n in range(4)])
    page.goto(console + "/batches")
    row = page.locator(f"tr[data-batch='{b.id}']")
    assert "a batch in the browser" in row.inner_text() and "running" in row.inner_text()
    _shot(page, "laptop-batches-running")
    row.locator("a").click()
    page.wait_for_url(f"**/batches/{b.id}")
    assert "0 of 4 counted" in page.locator("main").inner_text()
    page.locator("button", has_text="Cancel").click()  # the confirmation is accepted
    wait_for(lambda: batches.status(b.id).cancel_requested, timeout=10, what="the cancel")
    pausing.resume("default")
    wait_for(lambda: batches.status(b.id).state == "done", timeout=30, what="the batch to complete")
    page.reload()
    shown = page.locator("main").inner_text()
    assert "4 of 4 counted" in shown and "done" in shown and "cancelled" in shown
    assert page.locator("button", has_text="Cancel").count() == 0
    _shot(page, "laptop-batch-cancelled")


def test_a_workflow_s_graph_its_failed_step_and_the_requeue_that_resumes_it(console: str, page: Any) -> None:
    import bgjobs
    from bgjobs import workflows

    client = redis.Redis.from_url(get_settings().broker_url)
    client.set("test:refusing", "1")  # the third stage's vendor refuses until it is cleared
    record, refused = worker_jobs.record, worker_jobs.refused
    run = bgjobs.workflow(
        record.message({"key": "wf-fetch"}),
        bgjobs.group(record.message({"key": f"wf-resize-{n}"}) for n in range(3)),
        refused.message({"key": "wf-publish"}),
        record.message({"key": "wf-announce"}),
        description="thumbnails in the browser",
    ).start()
    wait_for(lambda: workflows.status(run.id).state == "failed", timeout=60, what="the refused step")
    page.goto(console + "/workflows")
    row = page.locator(f"tr[data-workflow='{run.id}']")
    assert "thumbnails in the browser" in row.inner_text() and "failed" in row.inner_text()
    _shot(page, "laptop-workflows")
    row.locator("a").click()
    page.wait_for_url(f"**/workflows/{run.id}")
    assert page.locator(".flow .stage").count() == 4
    assert page.locator(".flow .step.succeeded").count() == 4
    failed = page.locator(".flow .step.failed")
    assert "vendor refused wf-publish" in failed.inner_text()
    assert "waiting" in page.locator(".flow .step[data-step='3.0']").inner_text()
    _shot(page, "laptop-workflow-failed")
    client.delete("test:refusing")
    page.locator("a", has_text="its dead letter").click()
    page.locator("button", has_text="Requeue").click()
    page.wait_for_url("**/dead-letters")  # the letter is gone: its page leads back to the list
    page.locator("#toast", has_text="requeued 1").wait_for()
    wait_for(lambda: workflows.status(run.id).state == "succeeded", timeout=60, what="the run to resume")
    page.goto(console + f"/workflows/{run.id}")
    assert page.locator(".flow .step.succeeded").count() == 6
    assert page.locator("button", has_text="Cancel").count() == 0
    _shot(page, "laptop-workflow-succeeded")


def test_a_waiting_job_is_explained_and_cancelled_from_its_queue(console: str, page: Any) -> None:
    from bgjobs import pausing
    from bgjobs.cancelling import cancellation

    with pause_checks(redis.Redis.from_url(get_settings().broker_url), "default") as checks:
        pausing.pause("default")  # the job waits
        checks.wait_seen()
    sent = worker_jobs.record.send({"key": "explained"})
    page.goto(console + "/queues/default")
    row = page.locator("tr", has_text="record")
    row.locator("a", has_text="Why?").click()
    page.wait_for_url(f"**/jobs/{sent.message_id}")
    shown = page.locator("ul.explanation").inner_text()
    assert "waiting in default: 0 ahead of it" in shown and "queue default is paused" in shown
    page.locator("button", has_text="Cancel").click()  # the confirmation is accepted
    wait_for(lambda: cancellation(runtime.current().broker, sent.message_id) is not None, timeout=10,
             what="the cancel")  # fmt: skip
    page.reload()
    assert "cancelled by console:" in page.locator("ul.explanation").inner_text()
    assert page.locator("button", has_text="Cancel").count() == 0
    _shot(page, "laptop-job-cancelled")
    pausing.resume("default")
    wait_for(lambda: "waiting in default" not in " ".join(_explained(sent.message_id)), timeout=30,
             what="the worker to take and skip it")  # fmt: skip
    assert worker_jobs.starts("explained") == 0  # skipped, never run


def _explained(message_id: str) -> list[str]:
    from bgjobs.explain import explain

    return explain(message_id)


def test_a_key_is_held_from_the_limits_page_its_jobs_wait_explained_and_run_once_it_is_reset(
    console: str, page: Any
) -> None:
    from bgjobs.audit import entries
    from tests.support.worker_jobs import per_tenant

    page.goto(console + "/limits")
    section = page.locator("section[data-actor='per_tenant']")
    assert "Cap per key1" in section.locator("dl").inner_text().replace("\n", "").replace("\t", "")
    section.locator("input[name='key']").fill("t7")
    section.locator("input[name='limit']").fill("0")
    section.locator("button", has_text="Change").click()  # the confirmation is accepted
    wait_for(lambda: any(e.resource == "limits:per_tenant/t7" for e in entries()), timeout=10,
             what="the change, audited")  # fmt: skip
    sent = [per_tenant.send({"key": "t7"}) for _ in range(2)]
    page.reload()
    row = page.locator("section[data-actor='per_tenant'] tr[data-key='t7']")
    assert row.locator("td").nth(2).inner_text() == "2"  # waiting
    assert row.locator("td").nth(3).inner_text().startswith("cap 0")  # its own cap, with Reset
    _shot(page, "laptop-limits-held")
    # Webhook endpoints are on the same page, without the bursts their turns do not take
    endpoints = page.locator("section[data-actor='webhooks.endpoint']")
    assert "in the dispatcher" in endpoints.locator("dl").inner_text()
    assert endpoints.locator("input[name='limit']").count() == 1
    assert endpoints.locator("input[name='burst']").count() == 0
    page.goto(console + f"/jobs/{sent[1].message_id}")
    assert "key t7 of per_tenant is at its cap: 0 of 0 running" in page.locator("ul.explanation").inner_text()
    page.goto(console + "/limits")
    page.locator("section[data-actor='per_tenant'] tr[data-key='t7'] button", has_text="Reset").click()
    wait_for(lambda: worker_jobs.starts("t7") == 2, timeout=30, what="the two held jobs to run")
    page.reload()
    assert page.locator("section[data-actor='per_tenant'] tr[data-key='t7']").count() == 0
