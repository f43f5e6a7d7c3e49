"""Fairness between owners: one owner's flood of webhooks against another owner's single messages.

Owner "bulk" publishes F messages at once to its endpoint; owner "quiet" then publishes one
message every 0.2 s to its own, while the flood is still queued. The quiet owner's
publish-to-receipt times are measured with the flood and, first, without it, through
``dramatiq bgjobs.actors -p 2 -t 8`` on Redis and SQLite. A first-in-first-out queue would hold
each quiet message behind the whole flood.

    python benchmarks/webhook_fairness.py [--flood 20000] [--quiet 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import percentile, webhook_env, worker  # noqa: E402
from bgjobs.embedded import RedisServer  # noqa: E402
from tests.support.receivers import WebhookReceiver, webhook_receiver  # noqa: E402


def quiet_messages(receiver: WebhookReceiver, webhooks: Any, count: int) -> list[float]:
    """``count`` messages from the quiet owner, 5 a second; their publish-to-receipt times."""
    sent = {}
    for i in range(count):
        sent[webhooks.publish("order.placed", {"n": i}, owner="quiet")] = time.monotonic()
        time.sleep(0.2)
    deadline = time.monotonic() + 300
    while len(receiver.received("/quiet")) < len(sent):
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the quiet owner's messages")
        time.sleep(0.01)
    return [
        r.at - sent[r.headers["webhook-id"]]
        for r in receiver.received("/quiet")
        if r.headers["webhook-id"] in sent
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flood", type=int, default=20_000)
    parser.add_argument("--quiet", type=int, default=50)
    args, _ = parser.parse_known_args()
    with RedisServer() as server, webhook_receiver() as receiver:
        env = webhook_env(server.url, "fairness")
        from bgjobs import db, webhooks

        db.upgrade()
        webhooks.add_endpoint(receiver.url("/bulk"), event_types=["*"], owner="bulk")
        webhooks.add_endpoint(receiver.url("/quiet"), event_types=["*"], owner="quiet")
        with worker("bgjobs.actors", env, processes=2, threads=8):
            time.sleep(3)  # boot
            alone = quiet_messages(receiver, webhooks, args.quiet)
            receiver.requests.clear()
            start = time.perf_counter()
            for i in range(args.flood):
                webhooks.publish("order.placed", {"n": i}, owner="bulk")
            publish_s = time.perf_counter() - start
            flooded = quiet_messages(receiver, webhooks, args.quiet)
            drained = len(receiver.received("/bulk"))

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.0f} ms"

    print(f"webhook fairness: owner 'bulk' publishes {args.flood} messages at once "
          f"({args.flood / publish_s:.0f}/s), then owner 'quiet' {args.quiet}, 5 a second")  # fmt: skip
    print(f"  quiet owner, no flood:     p50 {ms(alone, 0.5)}, p99 {ms(alone, 0.99)}")
    print(f"  quiet owner, during flood: p50 {ms(flooded, 0.5)}, p99 {ms(flooded, 0.99)} ({drained} of "
          f"the flood's {args.flood} delivered when the last quiet message arrived)")  # fmt: skip
    print(f"  p99 with the flood / without: {percentile(flooded, 0.99) / percentile(alone, 0.99):.2f}x")
    if drained >= args.flood:
        print("  (the flood had drained before the quiet messages were done: raise --flood)")


if __name__ == "__main__":
    main()
