"""Notifications end to end: bgjobs's worker against a bare loop calling the same adapters.

Both deliver N booking confirmations, each an email to an SMTP server (aiosmtpd) and an SMS to
a JSON vendor API, both on 127.0.0.1 in this process.

1. bare loop: one thread calls ``SmtpMailer.send`` and ``HttpSmsSender.send`` per notification;
2. bare pool: the same calls from 16 threads (the worker's concurrency);
3. bgjobs: ``notifications.send()`` per notification (validates, renders, enqueues two channel
   messages), then ``dramatiq bgjobs.actors -p 2 -t 8`` delivers them with the delivery log on
   SQLite (or PostgreSQL); timed from the first ``send()`` until both servers hold every message.

    python benchmarks/notifications.py [--notifications 1000] [--db sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_seconds, database, timed_calls, worker  # noqa: E402
from bgjobs.embedded import RedisServer  # noqa: E402
from tests.support.receivers import HttpVendor, SmtpReceiver, http_vendor  # noqa: E402

BOOKING = {"trip_date": "2025-06-15", "total": {"amount": "500.00", "currency": "USD"}}


def wait_until(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for deliveries")
        time.sleep(0.01)


def bare(n: int, smtp: SmtpReceiver, vendor: HttpVendor, *, threads: int, run: str) -> float:
    from bgjobs.adapters.http import HttpSmsSender
    from bgjobs.adapters.smtp import SmtpMailer
    from bgjobs.ports import EmailMessage, SmsMessage
    from bgjobs.settings import HttpVendorSettings, SmtpSettings

    mailer = SmtpMailer(SmtpSettings(host="127.0.0.1", port=smtp.port))
    sms = HttpSmsSender(HttpVendorSettings(url=f"{vendor.url}/sms"))

    def one(i: int) -> None:
        key = f"{run}:{i}"
        mailer.send(message=EmailMessage(to=(f"user{i}@example.com",), subject=f"Booking {i} confirmed",
                                         text="Your booking is confirmed.", html="<p>Confirmed.</p>",
                                         idempotency_key=f"{key}:email"))  # fmt: skip
        sms.send(message=SmsMessage(to=f"+4477009{i:05d}", body=f"Booking {i} confirmed.",
                                    idempotency_key=f"{key}:sms"))  # fmt: skip

    elapsed = timed_calls(one, n, threads)
    sms.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notifications", type=int, default=1000)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args, _ = parser.parse_known_args()
    n = args.notifications
    with database(args.db, "notifications") as url, RedisServer() as server, SmtpReceiver() as smtp, \
            http_vendor() as vendor:  # fmt: skip
        env = {
            "BGJOBS_BROKER_URL": server.url,
            "BGJOBS_DATABASE_URL": url,
            "BGJOBS_MAILER": "smtp",
            "BGJOBS_SMTP__HOST": "127.0.0.1",
            "BGJOBS_SMTP__PORT": str(smtp.port),
            "BGJOBS_SMS": "http",
            "BGJOBS_HTTP_SMS__URL": f"{vendor.url}/sms",
        }
        os.environ.update(env)
        from bgjobs import db
        from bgjobs.notifications import Recipient, send

        db.upgrade()

        loop_s = bare(n, smtp, vendor, threads=1, run="loop")
        pool_s = bare(n, smtp, vendor, threads=16, run="pool")
        base_mail, base_sms = len(smtp.messages), len(vendor.delivered("/sms"))

        with worker("bgjobs.actors", env, processes=2, threads=8) as proc:
            time.sleep(3)  # boot
            cpu_before = cpu_seconds(proc.pid)
            start = time.perf_counter()
            for i in range(n):
                who = Recipient(user_id=f"u{i}", email=f"user{i}@example.com", phone=f"+4477009{i:05d}")
                send(
                    "booking_confirmation",
                    who,
                    {**BOOKING, "booking_id": str(i)},
                    key=f"booking:{i}:confirmed",
                )
            sent_s = time.perf_counter() - start
            wait_until(
                lambda: len(smtp.messages) - base_mail >= n and len(vendor.delivered("/sms")) - base_sms >= n,
                timeout=600,
            )
            bgjobs_s = time.perf_counter() - start
            worker_cpu = cpu_seconds(proc.pid) - cpu_before

    rate = {"loop": n / loop_s, "pool": n / pool_s, "bgjobs": n / bgjobs_s}
    print(f"notifications: {n} booking confirmations, each an email (SMTP) and an SMS (HTTP) on loopback, "
          f"the delivery log on {args.db}")  # fmt: skip
    print(f"  bare loop, 1 thread        {rate['loop']:8.0f} notifications/s")
    print(f"  bare pool, 16 threads      {rate['pool']:8.0f} notifications/s")
    print(f"  bgjobs worker -p 2 -t 8    {rate['bgjobs']:8.0f} notifications/s "
          f"(send() {n / sent_s:.0f}/s in the host)")  # fmt: skip
    print(f"  worker CPU per notification (two channel messages, four log transactions): "
          f"{worker_cpu / n * 1000:.1f} ms")  # fmt: skip
    print(f"  bgjobs / bare loop {rate['bgjobs'] / rate['loop']:.2f}x, "
          f"bgjobs / bare pool {rate['bgjobs'] / rate['pool']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
