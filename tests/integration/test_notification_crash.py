"""A real worker SIGKILLed twice in the middle of a fan-out of 500 notifications (1,500 channel
messages) to a real SMTP server and a real HTTP vendor: afterwards every (key, channel) is
delivered exactly once, by the log and by the receiving servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from bgjobs import db
from bgjobs.adapters.smtp import message_id_for
from bgjobs.notifications import Recipient, send
from bgjobs.notifications._models import NotificationRecord
from tests.support.receivers import HttpVendor, SmtpReceiver, http_vendor
from tests.support.workers import WorkerProcess, use_environment, wait_for

N = 500
CHANNELS = ("email", "sms", "push")


@pytest.fixture
def servers() -> Iterator[tuple[SmtpReceiver, HttpVendor]]:
    with SmtpReceiver() as smtp, http_vendor() as vendor:
        yield smtp, vendor


def records() -> list[NotificationRecord]:
    with db.session() as s:
        return list(s.exec(select(NotificationRecord)))


def test_sigkilled_workers_deliver_each_channel_message_exactly_once(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, servers: tuple[SmtpReceiver, HttpVendor]
) -> None:
    smtp, vendor = servers
    env = {
        "BGJOBS_BROKER_URL": redis_url,
        "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'notifications.db'}",
        "BGJOBS_MAILER": "smtp",
        "BGJOBS_SMTP__HOST": "127.0.0.1",
        "BGJOBS_SMTP__PORT": str(smtp.port),
        "BGJOBS_SMS": "http",
        "BGJOBS_HTTP_SMS__URL": f"{vendor.url}/sms",
        "BGJOBS_PUSH": "http",
        "BGJOBS_HTTP_PUSH__URL": f"{vendor.url}/push",
        # A killed worker's messages come back after 2 s; its leases expire after 5 s.
        "BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS": "2000",
        "BGJOBS_WORKER__MAINTENANCE_INTERVAL_MS": "500",
        "BGJOBS_NOTIFICATIONS__TIME_LIMIT_MS": "5000",
        "BGJOBS_RETRIES__MIN_BACKOFF_MS": "100",
        "BGJOBS_METRICS__ENABLED": "false",
    }
    use_environment(monkeypatch, env)

    keys = [f"booking:{i}:confirmed" for i in range(N)]
    for i, key in enumerate(keys):
        who = Recipient(user_id=f"u{i}", email=f"user{i}@example.com", phone=f"+4477009{i:05d}",
                        push_tokens=(f"token-{i}",))  # fmt: skip
        booking = {
            "booking_id": str(i),
            "trip_date": "2025-06-15",
            "total": {"amount": "100.00", "currency": "USD"},
        }
        send("booking_confirmation", who, booking, key=key)

    kills = []
    for threshold in (0.2, 0.6):
        worker = WorkerProcess(env, processes=2, threads=4).start()
        try:
            wait_for(
                lambda t=threshold: len(smtp.messages) >= t * N,
                timeout=120,
                what=f"{threshold:.0%} of the mail",
            )
        finally:
            worker.kill()
        kills.append(len(smtp.messages))
    assert kills[-1] < N, "the fan-out finished before the second kill; nothing was interrupted"

    worker = WorkerProcess(env, processes=2, threads=4).start()
    try:
        wait_for(lambda: sum(r.status == "sent" for r in records()) == N * len(CHANNELS), timeout=180,
                 what="every channel message to be sent")  # fmt: skip
    finally:
        worker.stop()

    log = records()
    assert {(r.key, r.status) for r in log} == {(f"notif:{k}:{c}", "sent") for k in keys for c in CHANNELS}
    # The vendor honours idempotency keys: each SMS and push was accepted once, whatever was retried.
    assert set(vendor.delivered("/sms")) == {f"notif:{k}:sms" for k in keys}
    assert set(vendor.delivered("/push")) == {f"notif:{k}:push" for k in keys}
    assert not any(r.possible_duplicate for r in log if r.channel != "email")
    # Plain SMTP cannot deduplicate: every email arrived, with the Message-ID of its key; a copy
    # can only come from an attempt killed after the server took it, and its row says so.
    ids = smtp.message_ids()
    expected = {message_id_for(f"notif:{k}:email", "bgjobs.local"): k for k in keys}
    assert set(ids) == set(expected)
    flagged = {r.key for r in log if r.possible_duplicate}
    copies = {f"notif:{expected[m]}:email" for m, n in ids.items() if n > 1}
    assert copies <= flagged
    print(f"kills after {kills} emails; {len(copies)} email copies, {len(flagged)} flagged; "
          f"{vendor.replays} vendor replays")  # fmt: skip
