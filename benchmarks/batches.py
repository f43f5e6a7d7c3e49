"""A batch of no-op jobs vs the same jobs without a batch, on one real Redis, in one run.

Enqueue: N jobs with ``send_many``, inside a ``bgjobs.batch()`` block and outside one.
Processing: the backlog drained by ``dramatiq bgjobs.actors -p 2 -t 8``, from the first message
taken to the last one finished (with the batch: to its ``on_complete`` callback run).
Callback latency: at idle, from the last job of a 20-job batch finishing to its ``on_complete``
starting. Memory: the batch's keys in Redis (``MEMORY USAGE``), per batch and per job.

    python benchmarks/batches.py [--jobs 100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import worker  # noqa: E402
from bgjobs.embedded import RedisServer  # noqa: E402


def enqueue_rate(n: int, batched: bool, client: redis.Redis) -> tuple[float, str | None]:
    import bgjobs
    from benchmarks.apps import batched as app

    payloads = [{"id": i, "name": f"job-{i}"} for i in range(n)]
    client.flushall()
    start = time.perf_counter()
    made = None
    if batched:
        with bgjobs.batch(on_complete=app.finished.message({"id": 0, "name": "done"})) as b:
            for at in range(0, n, 5000):
                app.noop.send_many(payloads[at : at + 5000])
        made = b.id
    else:
        for at in range(0, n, 5000):
            app.noop.send_many(payloads[at : at + 5000])
    return n / (time.perf_counter() - start), made


def process_rate(n: int, batch: str | None, env: dict[str, str], client: redis.Redis) -> float:
    with worker("bgjobs.actors", {**env, "BGJOBS_JOBS": '["benchmarks.apps.batched"]'}) as proc:
        key = "dramatiq:default.msgs"
        while client.hlen(key) >= n:
            time.sleep(0.001)
            if proc.poll() is not None:
                raise RuntimeError("worker exited before taking a message")
        start, remaining = time.perf_counter(), client.hlen(key)
        while client.hlen(key) > 0 or (batch is not None and not client.get("bench:finished")):
            time.sleep(0.005)
        return remaining / (time.perf_counter() - start)


def memory(n: int, client: redis.Redis) -> tuple[int, float]:
    """Bytes of one batch's keys once its n jobs are counted: the hash, and per job."""
    keys = client.keys("dramatiq:bgjobs-batch:*")
    hashes = [k for k in keys if not k.endswith((b":done", b":failed"))]
    bits = sum(int(client.memory_usage(k) or 0) for k in keys if k not in hashes)
    return sum(int(client.memory_usage(k) or 0) for k in hashes), bits / n


def callback_latency(env: dict[str, str], client: redis.Redis, rounds: int) -> list[float]:
    import bgjobs
    from benchmarks.apps import batched as app

    lags = []
    with worker("bgjobs.actors", {**env, "BGJOBS_JOBS": '["benchmarks.apps.batched"]'}):
        for _ in range(rounds):
            client.delete("bench:finished", "bench:last")
            with bgjobs.batch(on_complete=app.finished.message({"id": 0, "name": "done"})):
                app.stamped.send_many([{"id": i, "name": "x"} for i in range(20)])
            while not client.get("bench:finished"):
                time.sleep(0.001)
            last = max(float(x) for x in client.lrange("bench:last", 0, -1))
            lags.append((float(client.get("bench:finished") or 0) - last) * 1000)
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency-batches", type=int, default=200)
    args = parser.parse_args()
    with RedisServer() as server:
        env = {"BGJOBS_BROKER_URL": server.url, "BENCH_REDIS_URL": server.url}
        os.environ.update(env)
        client = redis.Redis.from_url(server.url)
        phases = ("enqueue", "enqueue+batch", "process", "process+batch")
        rates: dict[str, list[float]] = {k: [] for k in phases}
        per_batch = per_job = 0.0
        for _ in range(args.rounds):
            for batched in (False, True):
                sent, made = enqueue_rate(args.jobs, batched, client)
                rates["enqueue+batch" if batched else "enqueue"].append(sent)
                drained = process_rate(args.jobs, made, env, client)
                rates["process+batch" if batched else "process"].append(drained)
                if batched:
                    per_batch, per_job = memory(args.jobs, client)
        lags = sorted(callback_latency(env, client, args.latency_batches))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"batches: {args.jobs} no-op jobs, median of {args.rounds} rounds, worker -p 2 -t 8")
    for phase, goal in (("enqueue", 0.8), ("process", 0.9)):
        plain, batched = med[phase], med[phase + "+batch"]
        print(f"{phase:8} without a batch {plain:10,.0f}/s  in a batch {batched:10,.0f}/s  "
              f"ratio {batched / plain:.2f}  (goal >= {goal})")  # fmt: skip
    print(f"memory: the batch's hash {per_batch:,.0f} bytes; its bitmaps {per_job:.3f} bytes per job")
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    print(f"on_complete after the last job, at idle: p50 {statistics.median(lags):.1f} ms, "
          f"p99 {p99:.1f} ms over {len(lags)} batches (goal p99 <= 50 ms)")  # fmt: skip


if __name__ == "__main__":
    main()
