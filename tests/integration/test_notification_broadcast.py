"""``notifications.broadcast``: one template to many recipients as a batch, once per recipient,
with a summary when every channel message has been handled."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import time

import pytest

from bgjobs import batches, notifications
from bgjobs.errors import InvalidPayload
from bgjobs.testing import JobsHarness
from bgjobs.wiring import configure

Harness = Callable[..., JobsHarness]
REMINDER = {
    "booking_id": "B1", "trip_date": "2025-06-15", "amount_due": {"amount": "80.00", "currency": "USD"},
    "days_until": 3,
}  # fmt: skip
PEOPLE = [{"user_id": f"u{n}", "email": f"user{n}@example.com"} for n in range(4)]


def test_a_broadcast_reaches_each_recipient_once_and_sums_up_when_done(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = harness(quiet_hours_start=time(0, 0), quiet_hours_end=time(0, 0))
    configure(consent=lambda *, user_id, category, channel: user_id != "u3")  # u3 takes no reminders
    caplog.set_level(logging.INFO, logger="bgjobs.notifications")
    started = notifications.broadcast("payment_reminder", [*PEOPLE, PEOPLE[0]], REMINDER, key="dec-reminders")
    assert started.recipients == 4  # u0 twice is one recipient
    jobs.drain()
    s = batches.status(started.batch_id)
    assert (s.state, s.total, s.succeeded) == ("done", 4, 4)
    assert sorted(m.to[0] for m in jobs.mailer.sent) == [f"user{n}@example.com" for n in range(3)]
    summary = notifications.broadcast_summary("dec-reminders")
    assert (summary.sent, summary.failed, summary.pending) == (3, 0, 0)
    assert list(summary.skipped.values()) == [1]
    assert "broadcast dec-reminders (payment_reminder): 3 sent, 1 skipped, 0 failed, 0 pending" in caplog.text
    # The host, killed halfway, sends the broadcast again: nobody gets it twice
    again = notifications.broadcast("payment_reminder", PEOPLE, REMINDER, key="dec-reminders")
    jobs.drain()
    assert batches.status(again.batch_id).state == "done"
    assert len(jobs.mailer.sent) == 3
    assert notifications.broadcast_summary("dec-reminders") == summary
    assert notifications.broadcast_summary("another").sent == 0


def test_a_bad_recipient_refuses_the_whole_broadcast_naming_it(harness: Harness) -> None:
    jobs = harness()
    with pytest.raises(InvalidPayload, match=r"recipients\[2\]: .*email"):
        notifications.broadcast("payment_reminder", [*PEOPLE[:2], {"user_id": "x", "email": "nope"}],
                                REMINDER, key="bad")  # fmt: skip
    with pytest.raises(InvalidPayload, match="days_until"):
        notifications.broadcast("payment_reminder", PEOPLE, {**REMINDER, "days_until": "soon"}, key="bad")
    with pytest.raises(InvalidPayload, match="recipients: none given"):
        notifications.broadcast("payment_reminder", [], REMINDER, key="empty")
    jobs.drain()
    assert jobs.mailer.sent == [] and batches.recent(10) == []
