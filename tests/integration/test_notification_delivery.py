"""Notification delivery on the stub broker with real SQLite and PostgreSQL: fan-out, exactly once,
retries per channel, consent, quiet hours, the sweeps and the event triggers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlmodel import Session, select

from bgjobs import db, events, outbox
from bgjobs.adapters.memory import MemoryMailer
from bgjobs.errors import MaybeDelivered, PermanentError, TransientError
from bgjobs.jobs import JobRun
from bgjobs.notifications import (
    AppointmentDue,
    Channel,
    PastDueAccount,
    Recipient,
    TripDue,
    actors,
    deliveries,
    send,
)
from bgjobs.notifications import _delivery as delivery
from bgjobs.notifications import _policy as policy
from bgjobs.notifications._models import ChannelMessage, NotificationRecord, SweepMark
from bgjobs.ports import DeliveryReceipt, EmailMessage, Mailer
from bgjobs.testing import JobsHarness
from bgjobs.wiring import configure
from bgjobs.wiring import configure as wire
from tests.support.workers import wait_for

ANN = Recipient(user_id="u1", email="ann@example.com", phone="+447700900123", push_tokens=("tok-ann-1",))
BOOKING = {"booking_id": "B1", "trip_date": "2025-06-15", "total": {"amount": "500.00", "currency": "USD"}}
REMINDER = {
    "booking_id": "B1", "trip_date": "2025-06-15", "amount_due": {"amount": "80.00", "currency": "USD"},
    "days_until": 3,
}  # fmt: skip

Harness = Callable[..., JobsHarness]


def rows(**filters: Any) -> dict[str, NotificationRecord]:
    return {r.channel: r for r in deliveries(**filters)}


def test_one_send_fans_out_to_each_channel_with_a_log_row_each(harness: Harness) -> None:
    jobs = harness()
    queued = send("booking_confirmation", ANN, BOOKING, key="booking:B1:confirmed")
    jobs.drain()
    assert set(queued.keys) == {Channel.EMAIL, Channel.SMS, Channel.PUSH}
    assert [m.to for m in jobs.mailer.sent] == [("ann@example.com",)]
    assert [m.to for m in jobs.sms.sent] == ["+447700900123"]
    assert [m.tokens for m in jobs.push.sent] == [("tok-ann-1",)]
    assert jobs.mailer.sent[0].idempotency_key == "notif:booking:B1:confirmed:email"
    log = rows(key="booking:B1:confirmed")
    expected = ("sent", 1, "booking_confirmation")
    assert {c: (r.status, r.attempts, r.template) for c, r in log.items()} == dict.fromkeys(log, expected)
    assert set(log) == {"email", "sms", "push"}
    assert log["email"].recipient_ref == "a***@example.com"
    assert log["sms"].recipient_ref == "+44********23"
    assert all(r.provider_message_id and r.sent_at for r in log.values())


def test_the_same_key_twice_and_a_redelivery_send_nothing_more(harness: Harness) -> None:
    jobs = harness()
    send("booking_confirmation", ANN, BOOKING, key="booking:B1:confirmed")
    send("booking_confirmation", ANN, BOOKING, key="booking:B1:confirmed")
    jobs.drain()
    # A redelivery: the same channel message processed again.
    (email,) = [m for m in deliveries(key="booking:B1:confirmed") if m.channel == "email"]
    payload = ChannelMessage(
        key=email.key, notification_id=email.notification_id, template="booking_confirmation",
        category="transactional", urgent=True, recipient=ANN, subject="s", text="t",
    )  # fmt: skip
    assert delivery.deliver(payload, Channel.EMAIL) == "duplicate"
    assert (len(jobs.mailer.sent), len(jobs.sms.sent), len(jobs.push.sent)) == (1, 1, 1)
    log = rows(key="booking:B1:confirmed")
    assert (log["email"].duplicates, log["sms"].duplicates, log["push"].duplicates) == (2, 1, 1)


def test_a_failing_sms_vendor_retries_the_sms_alone(harness: Harness) -> None:
    jobs = harness()
    jobs.sms.fail_next(TransientError("vendor answered 503"), times=2)
    send("booking_confirmation", ANN, BOOKING, key="booking:B2:confirmed")
    jobs.drain()
    assert (len(jobs.mailer.sent), len(jobs.sms.sent), len(jobs.push.sent)) == (1, 1, 1)
    log = rows(key="booking:B2:confirmed")
    assert (log["sms"].attempts, log["sms"].status) == (3, "sent")
    assert (log["email"].attempts, log["push"].attempts) == (1, 1)
    assert not jobs.dead_letters


def test_a_permanent_error_dead_letters_that_channel_with_its_reason(harness: Harness) -> None:
    jobs = harness()
    jobs.sms.fail_next(PermanentError("vendor refused the message with 400: invalid number"))
    send("booking_confirmation", ANN, BOOKING, key="booking:B3:confirmed")
    jobs.drain()
    (dead,) = jobs.dead_letters
    assert dead.actor_name == "notifications.sms"
    assert "400: invalid number" in jobs.reason(dead)
    log = rows(key="booking:B3:confirmed")
    assert (log["sms"].status, log["sms"].attempts) == ("dead", 1)
    assert "invalid number" in (log["sms"].reason or "")
    assert (log["email"].status, log["push"].status) == ("sent", "sent")


def test_exhausted_retries_mark_the_row_dead(harness: Harness) -> None:
    jobs = harness()
    jobs.push.fail_next(TransientError("timeout"), times=10)
    send("booking_confirmation", ANN, BOOKING, key="booking:B4:confirmed", channels=["push"])
    jobs.drain()
    (dead,) = jobs.dead_letters
    assert "retries exhausted after 4 attempt(s)" in jobs.reason(dead)
    log = rows(key="booking:B4:confirmed")
    assert (log["push"].status, log["push"].attempts) == ("dead", 4)


def test_consent_is_asked_for_reminders_and_a_refusal_is_recorded(harness: Harness) -> None:
    jobs = harness(quiet_hours_start=time(0, 0), quiet_hours_end=time(0, 0))
    asked: list[tuple[str, str, str]] = []

    def consent(*, user_id: str, category: str, channel: str) -> bool:
        asked.append((user_id, str(category), str(channel)))
        return channel != "sms"

    configure(consent=consent)
    send("payment_reminder", ANN, REMINDER, key="booking:B1:payment_reminder:3d")
    send("booking_confirmation", ANN, BOOKING, key="booking:B5:confirmed")  # transactional: not asked
    jobs.drain()
    assert sorted(asked) == [("u1", "reminders", c) for c in ("email", "push", "sms")]
    log = rows(key="booking:B1:payment_reminder:3d")
    assert log["sms"].status == "skipped"
    assert log["sms"].reason == "user u1 does not accept reminders by sms"
    assert (log["email"].status, log["push"].status) == ("sent", "sent")
    assert len(jobs.sms.sent) == 1  # the confirmation only


def test_marketing_goes_only_with_consent(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bgjobs.notifications import _templates as template_module
    from bgjobs.notifications._models import Category
    from bgjobs.notifications._templates import Template, register_template

    monkeypatch.setattr(template_module, "_templates", dict(template_module._templates))
    (tmp_path / "en" / "promo").mkdir(parents=True)
    (tmp_path / "en" / "promo" / "subject.txt").write_text("{{ discount }} off your next trip")
    (tmp_path / "en" / "promo" / "text.txt").write_text("Book before Friday for {{ discount }} off.")
    register_template(Template("promo", Category.MARKETING, (Channel.EMAIL,)))
    jobs = harness(templates_dir=str(tmp_path))
    send("promo", ANN, {"discount": "10%"}, key="promo:1:u1")
    jobs.drain()
    assert not jobs.mailer.sent
    assert (
        rows(key="promo:1:u1")["email"].reason == "marketing needs consent and no consent hook is configured"
    )
    configure(consent=lambda *, user_id, category, channel: True)
    send("promo", ANN, {"discount": "10%"}, key="promo:2:u1")
    jobs.drain()
    assert [m.subject for m in jobs.mailer.sent] == ["10% off your next trip"]


def test_quiet_hours_hold_sms_and_push_but_not_email(harness: Harness) -> None:
    now = datetime.now(UTC)
    start, end = (now - timedelta(hours=1)).time(), (now + timedelta(hours=1)).time()
    jobs = harness(quiet_hours_start=start, quiet_hours_end=end)
    who = ANN.model_copy(update={"timezone": "UTC"})
    queued = send("payment_reminder", who, REMINDER, key="r:quiet")
    assert set(queued.delayed_until) == {Channel.SMS, Channel.PUSH}
    held = queued.delayed_until[Channel.SMS]
    assert timedelta(minutes=55) < held - now <= timedelta(hours=1, minutes=1)
    wait_for(lambda: jobs.mailer.sent, timeout=10, what="the email")
    wait_for(lambda: len(jobs.held()) == 2, timeout=10, what="the SMS and the push held")
    assert [actor for actor, _ in jobs.held()] == ["notifications.push", "notifications.sms"]
    assert all(abs(eta - held) < timedelta(seconds=5) for _, eta in jobs.held())  # until quiet hours end
    assert not jobs.sms.sent and not jobs.push.sent
    # A message that reaches the worker in quiet hours (from the outbox, or a retry) is postponed.
    payload = ChannelMessage(
        key=queued.keys[Channel.SMS], notification_id=queued.notification_id, template="payment_reminder",
        category="reminders", urgent=False, recipient=who, text="Your trip is in 3 days",
    )  # fmt: skip
    assert delivery.deliver(payload, Channel.SMS) == "postponed"
    assert rows(key="r:quiet")["sms"].reason == f"quiet hours until {held.isoformat()}"
    assert not jobs.sms.sent
    # An urgent template (a confirmation) is never held.
    assert send("booking_confirmation", ANN, BOOKING, key="c:quiet").delayed_until == {}


def test_quiet_hours_follow_the_recipients_zone() -> None:
    start, end = time(21, 0), time(8, 0)
    at = datetime(2025, 6, 15, 22, 30, tzinfo=UTC)  # 23:30 in Lisbon (summer), 18:30 in New York
    assert policy.quiet_until(at, "Europe/Lisbon", start, end) == datetime(2025, 6, 16, 7, 0, tzinfo=UTC)
    assert policy.quiet_until(at, "America/New_York", start, end) is None
    early = datetime(2025, 6, 15, 5, 0, tzinfo=UTC)  # 06:00 in Lisbon: still quiet, ends today
    assert policy.quiet_until(early, "Europe/Lisbon", start, end) == datetime(2025, 6, 15, 7, 0, tzinfo=UTC)
    assert policy.quiet_until(at, "UTC", time(9, 0), time(9, 0)) is None  # equal bounds: off


class UncertainMailer(MemoryMailer):
    """A mail server that cannot deduplicate (like plain SMTP)."""

    honours_idempotency_key = False


def _in_flight_row(key: str, channel: str, *, lease_until: datetime) -> None:
    now = datetime.now(UTC)
    with db.session() as s:
        s.add(NotificationRecord(
            key=key, notification_id="n1", template="booking_confirmation", channel=channel,
            category="transactional", user_id="u1", recipient_ref="x", status="queued", attempts=1,
            lease_until=lease_until, created_at=now, updated_at=now,
        ))  # fmt: skip


def _payload(key: str) -> ChannelMessage:
    return ChannelMessage(
        key=key, notification_id="n1", template="booking_confirmation", category="transactional",
        urgent=True, recipient=ANN, subject="s", text="t",
    )  # fmt: skip


def test_a_live_lease_makes_a_second_copy_wait_and_send_nothing(harness: Harness) -> None:
    jobs = harness()
    _in_flight_row("notif:k1:email", "email", lease_until=datetime.now(UTC) + timedelta(seconds=30))
    assert delivery.deliver(_payload("notif:k1:email"), Channel.EMAIL) == "busy"
    assert not jobs.mailer.sent
    assert jobs.broker.queues["notifications.DQ"].qsize() == 1  # it looks again after the lease


@pytest.mark.parametrize(("mailer", "flagged"), [(UncertainMailer, True), (MemoryMailer, False)])
def test_an_attempt_that_died_mid_call_is_retried_and_flagged_when_the_provider_cannot_dedupe(
    harness: Harness, mailer: type[Mailer], flagged: bool
) -> None:
    harness()
    adapter = mailer()
    wire(mailer=adapter)
    _in_flight_row("notif:k2:email", "email", lease_until=datetime.now(UTC) - timedelta(seconds=1))
    assert delivery.deliver(_payload("notif:k2:email"), Channel.EMAIL) == "sent"
    row = rows(key="k2")["email"]
    assert (row.status, row.attempts, row.possible_duplicate) == ("sent", 2, flagged)


class CutOnceMailer(Mailer):
    """Like plain SMTP, it keeps no keys and takes every message it is given; the first call fails
    with ``error``, after taking the message (``took``: the answer was lost) or before."""

    honours_idempotency_key = False

    def __init__(self, error: BaseException, *, took: bool) -> None:
        self.error, self.took, self.calls = error, took, 0
        self.sent: list[EmailMessage] = []

    def _send(self, *, message: EmailMessage) -> DeliveryReceipt:
        self.calls += 1
        if self.calls == 1:
            if self.took:
                self.sent.append(message)
            raise self.error
        self.sent.append(message)
        return DeliveryReceipt(provider_message_id=f"m{self.calls}")


@pytest.mark.parametrize(("error", "took"), [
    (MaybeDelivered("no answer after the message was sent"), True),
    (TimeLimitExceeded(), True),  # the job's time limit cut the call: it may have gone out
    (TransientError("421 try again later"), False),
])  # fmt: skip
def test_a_retry_after_a_provider_that_keeps_no_keys_may_have_taken_the_message_is_flagged(
    harness: Harness, error: BaseException, took: bool
) -> None:
    jobs = harness()
    mailer = CutOnceMailer(error, took=took)
    wire(mailer=mailer)
    send("booking_confirmation", ANN, BOOKING, key="cut:1", channels=["email"])
    jobs.drain()
    # The retry sent it again; the row says a copy may have reached the person exactly when one may have
    row = rows(key="cut:1")["email"]
    assert (row.status, row.attempts, row.possible_duplicate) == ("sent", 2, took)
    assert len(mailer.sent) == (2 if took else 1)


def test_a_failed_attempt_after_one_that_died_mid_call_keeps_the_doubt_for_the_next(harness: Harness) -> None:
    jobs = harness()
    mailer = CutOnceMailer(TransientError("421 try again later"), took=False)
    wire(mailer=mailer)
    # Given an attempt that died mid-call (its lease ran out), whose retry the server refuses
    _in_flight_row("notif:k3:email", "email", lease_until=datetime.now(UTC) - timedelta(seconds=1))
    send("booking_confirmation", ANN, BOOKING, key="k3", channels=["email"])
    jobs.drain()
    # Then the attempt after that sends it, and the row still says the first may have reached the person
    row = rows(key="k3")["email"]
    assert (row.status, row.possible_duplicate) == ("sent", True)
    assert mailer.calls == 2


# Sweeps.


def _run(job: Any) -> None:
    job.typed(JobRun(trigger="manual"))


def test_appointment_reminders_go_once_even_when_the_sweep_runs_twice(harness: Harness) -> None:
    jobs = harness(quiet_hours_start=time(0, 0), quiet_hours_end=time(0, 0))  # any hour of the day
    now = datetime.now(UTC)
    book = {
        "A-in": now + timedelta(hours=23, minutes=30),
        "A-soon": now + timedelta(hours=2),
        "A-later": now + timedelta(hours=30),
    }
    windows: list[tuple[datetime, datetime]] = []

    def appointments(*, start: datetime, end: datetime) -> list[AppointmentDue]:
        windows.append((start, end))
        return [AppointmentDue(appointment_id=a, recipient=ANN, starts_at=t, service="Grooming")
                for a, t in book.items() if start <= t < end]  # fmt: skip

    configure(appointments=appointments)
    _run(actors.appointment_reminders)
    _run(actors.appointment_reminders)
    jobs.drain()
    assert len(jobs.mailer.sent) == 1 and "Grooming" in jobs.mailer.sent[0].subject
    assert {r.key for r in deliveries()} == {
        f"notif:appointment:A-in:reminder:{c}" for c in ("email", "sms", "push")
    }
    # The second window starts where the first ended: no gap, whatever the sweeps' timing.
    assert windows[1][0] <= windows[0][1]


def test_a_sweep_without_a_source_reports_it(harness: Harness) -> None:
    harness()
    from bgjobs import runs

    _run(actors.appointment_reminders)
    (run,) = runs.recent(job="notifications.appointment_reminders")
    assert run.outcome == "succeeded"
    assert "no appointments source" in run.figures["skipped"]


def test_payment_reminders_for_each_configured_day(harness: Harness) -> None:
    jobs = harness(payment_reminder_days=[7, 1], quiet_hours_start=time(0, 0), quiet_hours_end=time(0, 0))
    today = datetime.now(UTC).date()
    trips = {
        "B7": today + timedelta(days=7),
        "B1": today + timedelta(days=1),
        "B3": today + timedelta(days=3),
    }

    def unpaid_trips(*, trip_date: date) -> list[TripDue]:
        due = {"amount": "10.00", "currency": "USD"}
        return [TripDue(booking_id=b, recipient=ANN, trip_date=d, amount_due=due)
                for b, d in trips.items() if d == trip_date]  # fmt: skip

    configure(unpaid_trips=unpaid_trips)
    _run(actors.payment_reminders)
    _run(actors.payment_reminders)
    jobs.drain()
    subjects = sorted(m.subject for m in jobs.mailer.sent)
    assert subjects == ["Payment due: your trip is in 7 days", "Your trip is tomorrow: payment due"]


def test_a_sweep_counts_what_it_queued_what_an_earlier_run_did_and_what_consent_refused(
    harness: Harness,
) -> None:
    from bgjobs import runs

    jobs = harness(payment_reminder_days=[7], quiet_hours_start=time(0, 0), quiet_hours_end=time(0, 0))
    trip = datetime.now(UTC).date() + timedelta(days=7)
    bob = Recipient(user_id="u2", email="bob@example.com")
    due = {"amount": "10.00", "currency": "USD"}
    configure(
        unpaid_trips=lambda *, trip_date: [TripDue(booking_id=b, recipient=r, trip_date=trip, amount_due=due)
                                           for b, r in (("B1", ANN), ("B2", bob)) if trip_date == trip],
        consent=lambda *, user_id, category, channel: user_id != "u2",  # bob takes no reminders at all
    )  # fmt: skip

    def figures() -> dict[str, Any]:
        latest = max(runs.recent(job="notifications.payment_reminders"), key=lambda r: r.started_at)
        return {k: latest.figures[k] for k in ("queued", "already_done", "refused", "invalid")}

    # When the sweep runs, its messages are delivered, and it runs again
    _run(actors.payment_reminders)
    assert figures() == {"queued": 1, "already_done": 0, "refused": 1, "invalid": 0}
    jobs.drain()
    _run(actors.payment_reminders)
    # Then the rerun says the first was done already, and nobody was mailed twice or against consent
    assert figures() == {"queued": 0, "already_done": 1, "refused": 1, "invalid": 0}
    jobs.drain()
    assert [m.to for m in jobs.mailer.sent] == [(ANN.email,)]
    # And bob's refusal is in the delivery log, once, with its reason (it was only a count)
    (refused,) = deliveries(user_id="u2")
    assert (refused.channel, refused.status, refused.duplicates) == ("email", "skipped", 0)
    assert refused.reason == "user u2 does not accept reminders by email"


def test_a_sweep_item_whose_sms_is_too_long_still_gets_its_email_and_push(harness: Harness) -> None:
    from bgjobs import runs

    jobs = harness(sms_max_segments=1, quiet_hours_start=time(0, 0), quiet_hours_end=time(0, 0))
    now = datetime.now(UTC)
    long_name = "Full grooming with bath, nail trim, ear cleaning and a very long list of extras " * 2
    configure(appointments=lambda *, start, end: [
        AppointmentDue(appointment_id="A-long", recipient=ANN, starts_at=t, service=long_name)
        for t in (now + timedelta(hours=23, minutes=30),) if start <= t < end])  # fmt: skip
    _run(actors.appointment_reminders)
    jobs.drain()
    (run,) = runs.recent(job="notifications.appointment_reminders")
    assert {k: run.figures[k] for k in ("queued", "invalid", "sms_too_long")} == {
        "queued": 0, "invalid": 0, "sms_too_long": 1}  # fmt: skip
    assert len(jobs.mailer.sent) == 1 and long_name.strip() in jobs.mailer.sent[0].text
    assert sorted(r.channel for r in deliveries(key="appointment:A-long:reminder")) == ["email", "push"]


def test_dunning_waits_the_interval_and_resends_an_interrupted_one(harness: Harness) -> None:
    jobs = harness(dunning_interval_h=72)
    admin = Recipient(user_id="admin1", email="admin@acme.example.com")
    account = PastDueAccount(account_id="T1", account_name="Acme", recipients=[admin],
                             update_url="https://example.com/billing")  # fmt: skip
    configure(past_due=lambda: [account])
    _run(actors.dunning)
    _run(actors.dunning)
    jobs.drain()
    assert len(jobs.mailer.sent) == 1
    assert "Acme" in jobs.mailer.sent[0].subject
    with db.session() as s:
        mark = s.get(SweepMark, "dunning:T1")
        assert mark is not None
        mark.at = mark.at - timedelta(hours=73)
        s.add(mark)
    _run(actors.dunning)
    jobs.drain()
    assert len(jobs.mailer.sent) == 2
    # A sweep that recorded its mark and died before sending: the next one sends the same key.
    with db.session() as s:
        s.merge(SweepMark(name="dunning:T1", at=datetime.now(UTC), key="dunning:T1:lost"))
    _run(actors.dunning)
    _run(actors.dunning)
    jobs.drain()
    assert len(jobs.mailer.sent) == 3
    assert jobs.mailer.sent[2].idempotency_key == "notif:dunning:T1:lost:admin1:email"


# Triggers and the outbox.


def test_events_send_their_notifications_once(harness: Harness) -> None:
    jobs = harness()
    created = {**BOOKING, "recipient": ANN.model_dump(), "host_field": "kept"}
    events.publish("booking.created", created)
    events.publish("booking.created", created)  # no event key: the notification key still dedupes
    events.publish("booking.cancelled", {**BOOKING, "recipient": ANN.model_dump(), "refund_days": 5,
                                         "refund": {"amount": "500.00", "currency": "USD"}})  # fmt: skip
    events.publish("payment.succeeded", {"payment_id": "P1", "recipient": ANN.model_dump(),
                                         "amount": {"amount": "500.00", "currency": "USD"}})  # fmt: skip
    jobs.drain()
    assert sorted(m.subject for m in jobs.mailer.sent) == [
        "Booking B1 cancelled", "Booking B1 confirmed", "Payment received: $500.00",
    ]  # fmt: skip
    assert len(jobs.sms.sent) == 3


def test_a_bad_event_fails_at_publish(harness: Harness) -> None:
    harness()
    with pytest.raises(Exception, match=r"event booking.created: recipient: Field required"):
        events.publish("booking.created", BOOKING)


def test_send_in_a_session_goes_through_the_outbox(harness: Harness) -> None:
    jobs = harness()
    with Session(db.get_engine()) as s, s.begin():
        send("booking_confirmation", ANN, BOOKING, key="booking:B9:confirmed", session=s, channels=["email"])
        s.rollback()
    assert outbox.relay_once() == 0
    with db.session() as s:
        send("booking_confirmation", ANN, BOOKING, key="booking:B9:confirmed", session=s, channels=["email"])
    assert outbox.relay_once() == 1
    jobs.drain()
    assert [m.idempotency_key for m in jobs.mailer.sent] == ["notif:booking:B9:confirmed:email"]
    with db.session() as s:
        assert s.exec(select(NotificationRecord.status)).all() == ["sent"]
