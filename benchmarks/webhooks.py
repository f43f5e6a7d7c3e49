"""Webhooks end to end: bgjobs's worker against a bare httpx loop posting the same signed requests.

M messages fanned out to 50 endpoints (10,000 deliveries by default), all paths of one HTTP
receiver on 127.0.0.1 in this process.

1. bare loop: one thread signs and POSTs every delivery with a pooled ``httpx.Client``;
2. bare pool: the same from 16 threads (the worker's concurrency);
3. bgjobs: ``webhooks.publish()`` per message (stores it and its 50 deliveries, puts it in
   its owner's lane, wakes a dispatcher), and ``dramatiq bgjobs.actors -p 2 -t 8`` delivers
   them: SSRF check, signature, POST, attempt log and delivery state on SQLite. Timed from the
   first ``publish()`` until the receiver holds every delivery; latency is each delivery's
   publish-to-receipt time, under that burst, then at a steady 100 deliveries/s, then at the
   same rate while half the endpoints take 2 s to answer.

    python benchmarks/webhooks.py [--messages 200]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_seconds, percentile, timed_calls, webhook_env, worker  # noqa: E402
from bgjobs.embedded import RedisServer  # noqa: E402
from tests.support.receivers import WebhookReceiver, webhook_receiver  # noqa: E402

ENDPOINTS = 50
PACED_MESSAGES = 20


def arrived(receiver: WebhookReceiver) -> int:
    return len(receiver.requests)  # not received(): copying the list 100 times a second slows the receiver


def paced(receiver: WebhookReceiver, webhooks: Any) -> dict[str, list[float]]:
    """PACED_MESSAGES messages at 2 a second; each path's publish-to-receipt times."""
    # The receiver keeps every request it got (tens of thousands by now): frozen, this process's
    # collector no longer walks them, a 100 ms pause that landed on whichever delivery was arriving.
    gc.collect()
    gc.freeze()
    base, sent = arrived(receiver), {}
    for i in range(PACED_MESSAGES):
        sent[webhooks.publish("order.placed", {"n": i})] = time.monotonic()
        time.sleep(0.5)
    wait_until(lambda: arrived(receiver) - base >= PACED_MESSAGES * ENDPOINTS, timeout=300)
    waits: dict[str, list[float]] = {}
    for r in receiver.received()[base:]:
        waits.setdefault(r.path, []).append(r.at - sent[r.headers["webhook-id"]])
    return waits


def wait_until(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for deliveries")
        time.sleep(0.01)


def bare(messages: int, receiver: WebhookReceiver, *, threads: int, run: str) -> float:
    import httpx

    from bgjobs.webhooks import generate_secret
    from bgjobs.webhooks._signing import sign

    secret = generate_secret()
    client = httpx.Client(timeout=httpx.Timeout(15, connect=5), follow_redirects=False,
                          limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))  # fmt: skip

    def one(i: int) -> None:
        message, endpoint = divmod(i, ENDPOINTS)
        body = b'{"type":"order.placed","timestamp":"2025-06-01T00:00:00.000Z","data":{"n":%d}}' % message
        stamp = int(time.time())
        message_id = f"msg_{run}_{message}"
        signature = sign(message_id, stamp, body, [secret])
        headers = {"content-type": "application/json", "webhook-id": message_id,
                   "webhook-timestamp": str(stamp), "webhook-signature": signature}  # fmt: skip
        response = client.post(receiver.url(f"/e{endpoint}"), content=body, headers=headers)
        assert response.status_code == 200

    elapsed = timed_calls(one, messages * ENDPOINTS, threads)
    client.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200)
    args, _ = parser.parse_known_args()
    m = args.messages
    n = m * ENDPOINTS
    with RedisServer() as server, webhook_receiver() as receiver:
        env = webhook_env(server.url, "webhooks")
        from bgjobs import db, webhooks

        db.upgrade()
        for e in range(ENDPOINTS):
            webhooks.add_endpoint(receiver.url(f"/e{e}"), event_types=["order.*"])

        loop_s = bare(m, receiver, threads=1, run="loop")
        pool_s = bare(m, receiver, threads=16, run="pool")
        base = len(receiver.received())

        with worker("bgjobs.actors", env, processes=2, threads=8) as proc:
            time.sleep(3)  # boot
            cpu_before = cpu_seconds(proc.pid)
            published: dict[str, float] = {}
            start = time.perf_counter()
            for i in range(m):
                at = time.monotonic()
                published[webhooks.publish("order.placed", {"n": i})] = at
            publish_s = time.perf_counter() - start
            wait_until(lambda: arrived(receiver) - base >= n, timeout=900)
            bgjobs_s = time.perf_counter() - start
            worker_cpu = cpu_seconds(proc.pid) - cpu_before
            burst = [r.at - published[r.headers["webhook-id"]] for r in receiver.received()[base:]]

            # Latency at a steady 100 deliveries/s (2 messages/s), well under capacity.
            steady = [w for waits in paced(receiver, webhooks).values() for w in waits]
            # The same while half the endpoints take 2 s to answer.
            slow = {f"/e{e}" for e in range(0, ENDPOINTS, 2)}
            for path in slow:
                receiver.always(path, "sleep:2")
            mixed = paced(receiver, webhooks)
            fast_half = [w for path, waits in mixed.items() if path not in slow for w in waits]
            slow_half = [w for path, waits in mixed.items() if path in slow for w in waits]

    rate = {"loop": n / loop_s, "pool": n / pool_s, "bgjobs": n / bgjobs_s}
    print(f"webhooks: {m} messages x {ENDPOINTS} endpoints = {n} signed deliveries to 127.0.0.1")
    print(f"  bare httpx loop, 1 thread   {rate['loop']:8.0f} deliveries/s")
    print(f"  bare httpx pool, 16 threads {rate['pool']:8.0f} deliveries/s")
    print(f"  bgjobs worker -p 2 -t 8     {rate['bgjobs']:8.0f} deliveries/s "
          f"(publish() {m / publish_s:.0f} messages/s in the host)")  # fmt: skip

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.0f} ms"

    print(f"  publish-to-receipt at a steady {2 * ENDPOINTS} deliveries/s: "
          f"p50 {ms(steady, 0.5)}, p99 {ms(steady, 0.99)}")  # fmt: skip
    print(f"  the same with half the endpoints answering after 2 s: the fast half p50 {ms(fast_half, 0.5)}, "
          f"p99 {ms(fast_half, 0.99)}; the slow half p50 {ms(slow_half, 0.5)}")  # fmt: skip
    print(f"  publish-to-receipt with all {n} published at once: p50 {ms(burst, 0.5)}, "
          f"p99 {ms(burst, 0.99)} (queueing)")  # fmt: skip
    print(f"  worker CPU per delivery (guard, signature, POST, attempt log, state): "
          f"{worker_cpu / n * 1000:.2f} ms")  # fmt: skip
    print(f"  bgjobs / bare loop {rate['bgjobs'] / rate['loop']:.2f}x, "
          f"bgjobs / bare pool {rate['bgjobs'] / rate['pool']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
