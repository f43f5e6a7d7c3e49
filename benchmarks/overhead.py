"""bgjobs typed actors vs bare Dramatiq: the same no-op workload on one real Redis, in one run.

Sending: N messages sent one by one from this process.
Processing: a backlog of N messages drained by ``dramatiq <app> -p 2 -t 8`` (the real CLI);
the rate is measured from the first message taken to the last one finished.

    python benchmarks/overhead.py [--messages 20000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_seconds, worker  # noqa: E402
from bgjobs.embedded import RedisServer  # noqa: E402


def app_for(variant: str) -> Any:
    return importlib.import_module("benchmarks.apps.bare" if variant == "bare" else "benchmarks.apps.typed")


def send_rate(variant: str, n: int, client: redis.Redis) -> float:
    """Messages sent per second, one by one, after a warm-up; leaves exactly ``n`` queued."""
    app = app_for(variant)
    for i in range(500):  # imports, script loading, connections
        app.noop.send({"id": i, "name": f"job-{i}"})
    client.flushall()
    start = time.perf_counter()
    for i in range(n):
        app.noop.send({"id": i, "name": f"job-{i}"})
    return n / (time.perf_counter() - start)


def process_rate(variant: str, n: int, env: dict[str, str], client: redis.Redis) -> tuple[float, float]:
    """Messages processed per second, and worker CPU microseconds per message."""
    module = "benchmarks.apps.bare" if variant == "bare" else "bgjobs.actors"
    with worker(module, {**env, "BGJOBS_JOBS": '["benchmarks.apps.typed"]'}) as proc:
        key = "dramatiq:default.msgs"
        while client.hlen(key) >= n:  # wait for the first message to be taken
            time.sleep(0.001)
            if proc.poll() is not None:
                raise RuntimeError("worker exited before taking a message")
        start, remaining_at_start = time.perf_counter(), client.hlen(key)
        cpu_start = cpu_seconds(proc.pid)
        while client.hlen(key) > 0:
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(proc.pid) - cpu_start
        return remaining_at_start / elapsed, cpu * 1e6 / remaining_at_start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with RedisServer() as server:
        env = {"BGJOBS_BROKER_URL": server.url}
        os.environ["BGJOBS_BROKER_URL"] = server.url
        client = redis.Redis.from_url(server.url)
        results: dict[str, dict[str, list[float]]] = {
            v: {"send": [], "process": [], "cpu": []} for v in ("bare", "bgjobs")
        }
        for _ in range(args.rounds):
            for variant in ("bare", "bgjobs"):
                results[variant]["send"].append(send_rate(variant, args.messages, client))
                rate, cpu = process_rate(variant, args.messages, env, client)
                results[variant]["process"].append(rate)
                results[variant]["cpu"].append(cpu)

    med = {v: {k: statistics.median(x) for k, x in r.items()} for v, r in results.items()}
    print(f"overhead: {args.messages} no-op messages, median of {args.rounds} rounds, worker -p 2 -t 8")
    print(f"{'':12}{'bare dramatiq':>16}{'bgjobs':>12}{'ratio':>8}   per-round ratios")
    for phase, goal in (("send", 0.85), ("process", 0.90)):
        b, g = med["bare"][phase], med["bgjobs"][phase]
        rounds = " ".join(
            f"{x / y:.2f}" for x, y in zip(results["bgjobs"][phase], results["bare"][phase], strict=True)
        )
        print(f"{phase + ' msg/s':12}{b:16,.0f}{g:12,.0f}{g / b:8.2f}   {rounds}  (goal >= {goal:.2f})")
    b, g = med["bare"]["cpu"], med["bgjobs"]["cpu"]
    print(
        f"{'worker CPU µs/msg':18}{b:10,.0f}{g:12,.0f}{b / g:8.2f}   "
        "(bare/bgjobs: the throughput ratio a CPU-bound host would see)"
    )


if __name__ == "__main__":
    main()
