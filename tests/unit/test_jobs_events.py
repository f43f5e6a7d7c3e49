"""Batch jobs, events and schedules on the stub broker and a real SQLite."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import bgjobs
from bgjobs import events, runs
from bgjobs import settings as bgjobs_settings
from bgjobs.errors import ConfigurationError, InvalidPayload
from bgjobs.jobs import JobRun, UnknownArgument, trigger
from bgjobs.scheduling import cron_table, validate
from bgjobs.settings import RetrySettings, SchedulerSettings, Settings, WebhookSettings
from bgjobs.testing import JobsHarness, stub_jobs
from tests.support import batch_jobs
from tests.support.workers import wait_for

FAST_RETRIES = RetrySettings(max_retries=2, min_backoff_ms=10, max_backoff_ms=20)
NO_BRIDGE = WebhookSettings(from_events=False)


def fast(**overrides: object) -> Settings:
    """Stub-broker settings with quick retries, read after the test set its database.

    Events are not bridged to webhooks here, so each test sees only its own subscribers.
    """
    return Settings(broker_url="stub://", retries=FAST_RETRIES, webhooks=NO_BRIDGE, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BGJOBS_DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    bgjobs_settings.get_settings.cache_clear()
    batch_jobs.create_tables()


@pytest.fixture
def skipping(database: None) -> Iterator[JobsHarness]:
    """A stub worker with ``BGJOBS_SCHEDULER__OVERLAP=skip``."""
    with stub_jobs(settings=fast(scheduler=SchedulerSettings(overlap="skip"))) as harness:
        yield harness


@pytest.fixture
def jobs(database: None) -> Iterator[JobsHarness]:
    batch_jobs.seen.clear()
    with stub_jobs(settings=fast()) as harness:
        yield harness


def test_a_triggered_job_runs_and_records_its_counts(jobs: JobsHarness) -> None:
    message = trigger("tests.count_things", n="7")
    jobs.drain()
    (run,) = runs.recent(job="tests.count_things")
    assert message.message_id
    assert (run.trigger, run.outcome) == ("manual", "succeeded")
    assert run.figures == {"processed": 7, "remaining": 0, "seen": 7}
    assert run.duration_s is not None and run.duration_s >= 0


def test_a_failing_job_records_the_error_and_the_counts_so_far(jobs: JobsHarness) -> None:
    bgjobs.jobs.trigger("tests.count_things", n="2", fail="yes")
    jobs.drain()
    recorded = runs.recent(job="tests.count_things")
    assert [r.outcome for r in recorded] == ["failed"] * 3  # first attempt and max_retries=2
    assert recorded[0].error == "RuntimeError: the reconciliation source is down"
    assert recorded[0].figures == {"seen": 2}


def test_an_unknown_job_lists_the_known_ones(jobs: JobsHarness) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown job 'nope'; known jobs: .*tests\.count_things"):
        trigger("nope")


def test_an_overlapping_trigger_is_skipped_with_a_reason_when_set_to_skip(skipping: JobsHarness) -> None:
    trigger("tests.count_things", sleep="1")
    trigger("tests.count_things", sleep="1")
    skipping.drain()
    outcomes = sorted(r.outcome for r in runs.recent(job="tests.count_things"))
    assert outcomes == ["skipped", "succeeded"]
    (skipped,) = [r for r in runs.recent(job="tests.count_things") if r.outcome == "skipped"]
    assert skipped.error == "another run of this job was in progress"


def test_an_overlapping_trigger_waits_its_turn_by_default(jobs: JobsHarness) -> None:
    trigger("tests.count_things", sleep="0.5")
    trigger("tests.count_things", sleep="0.5")
    jobs.drain()
    outcomes = [r.outcome for r in runs.recent(job="tests.count_things")]
    assert outcomes == ["succeeded", "succeeded"]
    first, second = sorted(runs.recent(job="tests.count_things"), key=lambda r: r.started_at)
    assert first.finished_at is not None and second.started_at >= first.finished_at


def test_an_event_reaches_exact_and_pattern_subscribers_once_each(jobs: JobsHarness) -> None:
    sent = events.publish("order.placed", {"booking_id": 1, "email": "a@example.com"})
    jobs.drain()
    assert [m.actor_name for m in sent] == ["events.fanout"]  # the worker expands it to its subscribers
    assert sorted(batch_jobs.seen) == ["confirm:1", "webhook:1"]


def test_an_unsubscribed_actor_gets_no_more_events(jobs: JobsHarness) -> None:
    from tests.support.batch_jobs import confirm_booking

    assert events.unsubscribe("order.placed", confirm_booking)
    try:
        events.publish("order.placed", {"booking_id": 7, "email": "a@example.com"})
        jobs.drain()
        assert sorted(batch_jobs.seen) == ["webhook:7"]
        assert not events.unsubscribe("order.placed", confirm_booking)  # it was not subscribed any more
    finally:
        events.subscribe("order.placed", confirm_booking)


def test_an_event_key_deduplicates_within_the_window(jobs: JobsHarness) -> None:
    first = events.publish("order.placed", {"booking_id": 2, "email": "a@example.com"}, key="b2")
    again = events.publish("order.placed", {"booking_id": 2, "email": "a@example.com"}, key="b2")
    jobs.drain()
    assert (len(first), again) == (1, [])
    assert sorted(batch_jobs.seen) == ["confirm:2", "webhook:2"]


def test_an_event_payload_is_validated_against_its_declared_model(jobs: JobsHarness) -> None:
    with pytest.raises(InvalidPayload, match=r"event order\.placed: booking_id"):
        events.publish("order.placed", {"booking_id": "x", "email": "a@example.com"})
    jobs.drain()
    assert jobs.dead_letters == []


def test_an_event_nobody_subscribes_to_is_expanded_to_nothing_and_says_so(
    jobs: JobsHarness, caplog: pytest.LogCaptureFixture
) -> None:
    assert len(events.publish("nobody.listens", {"anything": 1})) == 1
    jobs.drain()
    assert jobs.dead_letters == []
    assert "event nobody.listens has no subscriber in this worker" in caplog.text


def test_schedules_come_from_the_job_then_settings_and_can_be_disabled() -> None:
    import bgjobs.outbox  # noqa: F401  (declares outbox.relay, the job this test disables)

    settings = Settings(schedule={"tests_tick": "*/5 * * * *", "outbox_relay": ""})
    names = {e.job.name: e.schedule for e in cron_table(settings)}
    assert names["tests.tick"] == "*/5 * * * *"
    assert "outbox.relay" not in names
    assert "tests.count_things" not in names  # manual only
    assert {e.job.name: e.schedule for e in cron_table(Settings())}["outbox.relay"] == "* * * * *"


@pytest.mark.parametrize(
    ("schedule", "fragment"),
    [("0 8 * * 1", "literal weekdays"), ("0 8 * *", "5 cron fields"), ("99 * * * *", "schedule of 'x'")],
)
def test_a_bad_schedule_names_the_job(schedule: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        validate("x", schedule)


def test_a_bad_schedule_in_settings_fails_the_table_naming_the_job() -> None:
    with pytest.raises(ConfigurationError, match=r"schedule of 'tests\.tick'"):
        cron_table(Settings(schedule={"tests_tick": "0 8 * * 1"}))


def test_a_job_stops_cleanly_when_its_time_budget_is_spent(jobs: JobsHarness) -> None:
    trigger("tests.sweep")
    jobs.drain()
    (run,) = runs.recent(job="tests.sweep")
    assert run.outcome == "stopped"
    assert 0 < run.figures["swept"] < 1_000
    assert run.figures["swept"] + run.figures["remaining"] == 1_000


def test_the_runs_command_lists_recent_runs(jobs: JobsHarness, capsys: pytest.CaptureFixture[str]) -> None:
    from bgjobs.cli import main

    assert main(["runs"]) == 0
    assert capsys.readouterr().out == "no runs yet\n"
    trigger("tests.count_things", n="5")
    trigger("outbox.relay")  # housekeeping: hidden unless asked for
    jobs.drain()
    assert main(["runs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["started", "(UTC)"]
    assert len(out) == 2 and "tests.count_things" in out[1] and "manual" in out[1] and "succeeded" in out[1]
    assert "processed=5" in out[1]  # the figures on one short line, not the JSON
    assert main(["runs", "--all"]) == 0
    assert any("outbox.relay" in line for line in capsys.readouterr().out.splitlines())


def test_a_waiting_trigger_backs_off_instead_of_resending_every_second(
    jobs: JobsHarness, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a run that takes 2.5 s, and a second trigger once it has started
    caplog.set_level(logging.INFO, logger="bgjobs.jobs")
    trigger("tests.count_things", sleep="2.5")
    wait_for(lambda: runs.recent(job="tests.count_things"), timeout=10, what="the first run to start")
    trigger("tests.count_things", sleep="0")
    jobs.drain()
    # Then the second looked again after 1 s, then 2 s (not once a second), and ran after the first
    found = (re.search(r"rechecks in (\d+) ms", r.getMessage()) for r in caplog.records)
    delays = [int(m.group(1)) for m in found if m]
    assert delays[:2] == [1_000, 2_000]
    assert [r.outcome for r in runs.recent(job="tests.count_things")] == ["succeeded", "succeeded"]


def test_a_run_that_asks_to_continue_is_stopped_and_its_follow_up_is_never_skipped(
    skipping: JobsHarness,
) -> None:
    # Given overlap=skip, and a job that stops part-way and asks to go on
    trigger("tests.in_parts", parts="3")
    skipping.drain()
    # Then each part ran: the first two are recorded stopped, the last succeeded; none was skipped
    recorded = sorted(runs.recent(job="tests.in_parts"), key=lambda r: r.started_at)
    assert [(r.trigger, r.outcome) for r in recorded] == [
        ("manual", "stopped"), ("continuation", "stopped"), ("continuation", "succeeded"),
    ]  # fmt: skip


def test_a_cleanup_run_stopped_by_its_budget_is_recorded_stopped_and_its_continuation_runs_under_skip(
    skipping: JobsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bgjobs.cleanup import actors as cleanup_actors

    # Given a cleanup that runs out of time twice before it is done, and overlap=skip
    statuses = iter(["stopped", "stopped", "done"])
    monkeypatch.setattr(cleanup_actors, "run_cleanup", lambda **kw: {"status": next(statuses), "tasks": {}})
    trigger("cleanup.daily")
    skipping.drain()
    # Then each part is recorded as what it was, and no continuation was skipped
    recorded = sorted(runs.recent(job="cleanup.daily"), key=lambda r: r.started_at)
    assert [(r.trigger, r.outcome) for r in recorded] == [
        ("manual", "stopped"), ("continuation", "stopped"), ("continuation", "succeeded"),
    ]  # fmt: skip


def test_a_family_s_cron_entries_wait_until_what_they_need_is_wired() -> None:
    import bgjobs.notifications
    import bgjobs.payouts  # noqa: F401  (declare their jobs)
    from bgjobs import wiring
    from bgjobs.adapters.memory import MemoryPaymentGateway
    from bgjobs.scheduling import left_out

    def scheduled(settings: Settings) -> set[str]:
        return {e.job.name for e in cron_table(settings)}

    # Only a mailer: no payouts job and no reminder sweep fires (they would fail at every tick).
    mail_only = Settings(mailer="console")
    assert not {n for n in scheduled(mail_only) if n.startswith("payouts.")}
    assert "notifications.dunning" not in scheduled(mail_only)
    assert {"cleanup.daily", "outbox.relay"} <= scheduled(mail_only)
    assert ("payouts.charges is not scheduled: it needs a PaymentGateway (BGJOBS_PAYMENT or "
            "bgjobs.configure(payment=...)); BGJOBS_SCHEDULE__PAYOUTS_CHARGES schedules it anyway"
            ) in left_out(mail_only)  # fmt: skip
    # A gateway in settings, or in code, brings them in; a schedule in settings forces one in.
    assert {"payouts.charges", "payouts.weekly", "payouts.balance_check"} <= scheduled(
        Settings(mailer="console", payment="memory")
    )
    assert "payouts.charges" in scheduled(Settings(schedule={"payouts_charges": "*/10 * * * *"}))
    wiring.configure(payment=MemoryPaymentGateway(), past_due=lambda: [])
    assert {"payouts.charges", "notifications.dunning"} <= scheduled(mail_only)
    assert "payouts.settlement" not in scheduled(mail_only)  # it needs storage too


def test_an_argument_the_job_does_not_declare_is_refused_naming_the_likely_one(jobs: JobsHarness) -> None:
    with pytest.raises(UnknownArgument, match=r"tests\.count_things has no argument nn \(did you mean n\?\); "
                                              r"its arguments: fail, n, sleep"):  # fmt: skip
        trigger("tests.count_things", nn="7")
    with pytest.raises(UnknownArgument, match=r"tests\.sweep has no argument region; its arguments: none"):
        trigger("tests.sweep", region="west")
    with pytest.raises(InvalidPayload, match=r"tests\.count_things: n: Input should be a valid integer"):
        trigger("tests.count_things", n="seven")
    jobs.drain()
    assert runs.recent(job="tests.count_things") == []
    assert runs.recent(job="tests.sweep") == []


def test_a_message_with_an_undeclared_argument_is_refused_by_the_worker_too(jobs: JobsHarness) -> None:
    # Given a message sent without the sender's check (an older release, or by hand)
    spec = bgjobs.jobs.registered_jobs()["tests.count_things"]
    spec.typed.send(JobRun(args={"colour": "blue"}))

    # When a worker takes it, the run fails naming the argument, and the message is dead-lettered
    jobs.drain()
    (run,) = runs.recent(job="tests.count_things")
    assert run.outcome == "failed"
    assert run.error == "tests.count_things has no argument colour; its arguments: fail, n, sleep"
    (letter,) = jobs.dead_letters
    assert letter.actor_name == "tests.count_things"


def test_the_job_reads_its_arguments_typed(jobs: JobsHarness) -> None:
    trigger("tests.in_parts", parts="2")
    jobs.drain()
    assert [r.figures for r in runs.recent(job="tests.in_parts")] == [{"left": 0}, {"left": 1}]


def test_a_job_whose_lease_is_lost_is_out_of_time_at_its_next_safe_point() -> None:
    from bgjobs.jobs import JobContext

    ctx = JobContext(job="reports.nightly", run_id="r1", trigger="cron", args={})
    assert not ctx.out_of_time  # no budget, its lease its own
    ctx.lease_lost.set()  # what the lease's renewal does when another worker holds it now
    assert ctx.out_of_time
