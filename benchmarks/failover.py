"""What notification failover costs: SMS deliveries per second through bgjobs's delivery path with

1. one provider (no failover: the baseline),
2. a healthy primary and a backup (the circuit is read on every message),
3. a primary that refuses connections and a backup, the primary's circuit open after its first
   three failures (what a vendor outage costs once the breaker has tripped),

each against JSON vendor servers on 127.0.0.1, the delivery log on SQLite, a stub worker of
8 threads in this process (the broker is not what is measured here). Rates are compared with the
first, in the same run.

    python benchmarks/failover.py [--messages 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bgjobs.embedded import free_port  # noqa: E402
from tests.support.receivers import HttpVendor, http_vendor  # noqa: E402

BOOKING = {"booking_id": "B1", "trip_date": "2025-06-15", "total": {"amount": "500.00", "currency": "USD"}}


def run(n: int, urls: list[str], workdir: Path, label: str) -> float:
    """Messages per second delivering ``n`` booking confirmations by SMS through ``urls`` in order."""
    from bgjobs.adapters.http import HttpSmsSender
    from bgjobs.db import engine_for, upgrade
    from bgjobs.notifications import Recipient, deliveries, send
    from bgjobs.settings import HttpVendorSettings, NotificationSettings, RetrySettings, Settings
    from bgjobs.testing import stub_jobs
    from bgjobs.wiring import configure

    database = f"sqlite:///{workdir / f'{label}.db'}"
    upgrade(engine_for(database))
    settings = Settings(broker_url="stub://", database_url=database,
                        retries=RetrySettings(min_backoff_ms=10, max_backoff_ms=20),
                        notifications=NotificationSettings(failover_cooldown_s=600))  # fmt: skip
    with stub_jobs(settings=settings, worker_threads=8) as jobs:
        configure(sms=[HttpSmsSender(HttpVendorSettings(url=u, connect_timeout_s=1.0)) for u in urls])
        started = time.perf_counter()
        for i in range(n):
            send("booking_confirmation", Recipient(user_id=f"u{i}", phone="+447700900123"), BOOKING,
                 key=f"{label}:{i}", channels=["sms"])  # fmt: skip
        jobs.drain(timeout_ms=600_000)
        elapsed = time.perf_counter() - started
        sent = [d for d in deliveries(limit=n + 10) if d.status == "sent"]
        assert len(sent) == n, f"{label}: {len(sent)} of {n} sent"
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1000)
    args, _ = parser.parse_known_args()
    n = args.messages
    workdir = Path(tempfile.mkdtemp(prefix="bgjobs-bench-failover-"))
    refused = f"http://127.0.0.1:{free_port()}/sms"  # nothing listens there
    primary: HttpVendor
    backup: HttpVendor
    with http_vendor() as primary, http_vendor() as backup:
        one = run(n, [f"{primary.url}/sms"], workdir, "one")
        healthy = run(n, [f"{primary.url}/sms", f"{backup.url}/sms"], workdir, "healthy")
        down = run(n, [refused, f"{backup.url}/sms"], workdir, "down")
    print(f"notification failover, {n} SMS per run, stub worker of 8 threads, SQLite delivery log")
    print(f"  one provider                   {one:8.0f}/s  1.00x")
    print(f"  primary + backup, healthy      {healthy:8.0f}/s  {healthy / one:.2f}x")
    print(f"  primary down, circuit open     {down:8.0f}/s  {down / one:.2f}x")


if __name__ == "__main__":
    main()
