"""Digests against a real SMTP server on 127.0.0.1: a recipient's reminders within a window become
one email listing them, per recipient, once, with consent applied; and a worker SIGKILLed as the
windows close still sends each digest exactly once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bgjobs.adapters.smtp import SmtpMailer
from bgjobs.notifications import Recipient, deliveries, send
from bgjobs.notifications._digests import open_windows
from bgjobs.sections import DigestRule
from bgjobs.settings import SmtpSettings
from bgjobs.testing import JobsHarness
from bgjobs.wiring import configure
from tests.support.receivers import SmtpReceiver
from tests.support.workers import WorkerProcess, start_worker, use_environment, wait_for


def reminder(n: int) -> dict[str, object]:
    return {"booking_id": f"B{n}", "trip_date": "2025-06-15", "days_until": 3,
            "amount_due": {"amount": f"{n}.50", "currency": "USD"}}  # fmt: skip


def person(n: int) -> Recipient:
    return Recipient(user_id=f"u{n}", email=f"person{n}@example.com", phone="+447700900123")


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with SmtpReceiver() as receiver:
        yield receiver


def digested(harness: Callable[..., JobsHarness], smtp: SmtpReceiver, **rule: int) -> JobsHarness:
    jobs = harness(digests={"reminders": DigestRule(**rule)})
    configure(mailer=SmtpMailer(SmtpSettings(host="127.0.0.1", port=smtp.port)))
    return jobs


def body(message: object) -> str:
    part = message.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    return str(part.get_content())


def test_fifty_reminders_in_a_window_become_one_email_listing_them(
    harness: Callable[..., JobsHarness], smtp: SmtpReceiver
) -> None:
    jobs = digested(harness, smtp, window_s=600, max_items=100)  # the window closes it, not the count
    for n in range(50):
        queued = send("payment_reminder", person(1), reminder(n), key=f"booking:B{n}:payment_reminder:3d")
        assert queued.keys == {}  # collected, not sent
    send("payment_reminder", person(1), reminder(7), key="booking:B7:payment_reminder:3d")  # again: no item
    assert smtp.messages == [] and deliveries(user_id="u1") == []
    # When the window's time comes (released, not slept through: a busy machine keeps no window)
    assert jobs.release("notifications.digest_close") == 1
    jobs.drain()
    (email,) = smtp.messages
    assert email["Subject"] == "50 reminders for your account" and email["To"] == "person1@example.com"
    lines = [line for line in body(email).splitlines() if line.startswith("- ")]
    assert len(lines) == 50 and sorted(lines) == sorted(set(lines))
    assert any("B49" in line for line in lines)
    (row,) = deliveries(user_id="u1")
    assert (row.template, row.status, row.key) == ("reminder_digest", "sent", row.key)
    assert row.key.startswith("notif:digest:")


def test_two_recipients_get_a_digest_each_and_a_full_window_closes_at_once(
    harness: Callable[..., JobsHarness], smtp: SmtpReceiver
) -> None:
    jobs = digested(harness, smtp, window_s=600, max_items=3)  # no waiting: the count closes them
    for n in range(3):
        for who in (1, 2):
            send("payment_reminder", person(who), reminder(n), key=f"u{who}:B{n}")
    # (no drain: each window's own close, 600 s away, is still held)
    wait_for(lambda: len(smtp.messages) == 2, timeout=15, what="two digests")
    assert sorted(m["To"] for m in smtp.messages) == ["person1@example.com", "person2@example.com"]
    assert all(m["Subject"] == "3 reminders for your account" for m in smtp.messages)
    # A fourth reminder opens a new window, whose close waits for the window
    send("payment_reminder", person(1), reminder(3), key="u1:B3")
    closes = sorted(at.timestamp() for task, at in jobs.held() if task == "notifications.digest_close")
    assert len(closes) == 3 and closes[-1] > time.time() + 590  # the two spent windows' and the new one's
    assert len(smtp.messages) == 2


def test_consent_applies_to_the_digest(harness: Callable[..., JobsHarness], smtp: SmtpReceiver) -> None:
    jobs = digested(harness, smtp, window_s=600)
    configure(consent=lambda *, user_id, category, channel: user_id != "u2")
    for who in (1, 2):
        send("payment_reminder", person(who), reminder(who), key=f"c:{who}")
    assert jobs.release("notifications.digest_close") == 2
    jobs.drain()
    assert [m["To"] for m in smtp.messages] == ["person1@example.com"]
    statuses = {r.user_id: r.status for r in deliveries(template="reminder_digest")}
    assert statuses == {"u1": "sent", "u2": "skipped"}


def test_only_the_configured_category_is_digested(
    harness: Callable[..., JobsHarness], smtp: SmtpReceiver
) -> None:
    jobs = digested(harness, smtp, window_s=600)
    booking = {"booking_id": "B1", "trip_date": "2025-06-15",
               "total": {"amount": "500.00", "currency": "USD"}}  # fmt: skip
    send("booking_confirmation", person(1), booking, key="t:1")  # transactional: sent now
    jobs.drain()
    assert {(r.channel, r.status) for r in deliveries(key="t:1")} == {("email", "sent"), ("sms", "sent")}
    assert len(smtp.messages) == 1 and open_windows() == 0


def test_a_worker_killed_as_windows_close_still_sends_each_digest_once(
    worker_env: dict[str, str], workers: list[WorkerProcess], monkeypatch: pytest.MonkeyPatch,
    smtp: SmtpReceiver, tmp_path: Path,
) -> None:  # fmt: skip
    env = {**worker_env, "BGJOBS_MAILER": "smtp", "BGJOBS_SMTP__HOST": "127.0.0.1",
           "BGJOBS_SMTP__PORT": str(smtp.port),
           # A delivery killed mid-call is retried once its lease (the time limit) has passed.
           "BGJOBS_NOTIFICATIONS__TIME_LIMIT_MS": "5000",
           "BGJOBS_NOTIFICATIONS__DIGESTS": '{"reminders": {"window_s": 3}}'}  # fmt: skip
    use_environment(monkeypatch, env)
    # Given 20 recipients with 5 reminders each, their windows closing in 3 s
    for who in range(20):
        for n in range(5):
            send("payment_reminder", person(who), reminder(n), key=f"k:{who}:{n}")
    first = start_worker(workers, env, processes=2, threads=4)
    # When the worker is SIGKILLed as the first digests go out, and another takes over
    wait_for(lambda: len(smtp.messages) >= 1, timeout=60, what="the first digest")
    first.kill()
    at_kill = len(smtp.messages)
    start_worker(workers, env, processes=2, threads=4)
    wait_for(lambda: len({m["To"] for m in smtp.messages}) == 20, timeout=90, what="every digest")
    wait_for(lambda: len([r for r in deliveries(template="reminder_digest", limit=100) if r.status == "sent"])
             == 20, timeout=60, what="every digest recorded")  # fmt: skip
    # Then each recipient got one digest (one Message-ID) of its five reminders
    ids = {m["To"]: set() for m in smtp.messages}
    for email in smtp.messages:
        ids[email["To"]].add(email["Message-ID"])
        assert email["Subject"] == "5 reminders for your account"
    assert all(len(found) == 1 for found in ids.values()), (at_kill, ids)
    # And an email received twice (a worker killed between the SMTP call and recording it; SMTP
    # cannot drop the copy) is the same message, and the log says so, as for any email
    log = {r.user_id: r for r in deliveries(template="reminder_digest", limit=100)}
    for to, count in Counter(m["To"] for m in smtp.messages).items():
        if count > 1:
            assert log["u" + to.removeprefix("person").split("@")[0]].possible_duplicate
