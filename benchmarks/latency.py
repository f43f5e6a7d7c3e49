"""Send-to-start latency: bare Dramatiq vs bgjobs (wake-on-enqueue), same Redis, same run.

For each: a real ``dramatiq <app> -p 2 -t 8`` worker; jobs sent at a steady 50/s and 500/s;
then, after 5 s of idling, 10 jobs at 50/s ("after idle"). Each job records
time.time() at start minus the sender's time.time() at send.

    python benchmarks/latency.py [--seconds 4]
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import percentile, worker  # noqa: E402
from bgjobs.embedded import RedisServer  # noqa: E402

APPS = {"bare dramatiq": ("benchmarks.apps.latency_bare", "benchmarks.apps.latency_bare"),
        "bgjobs": ("bgjobs.actors", "benchmarks.apps.latency_typed")}  # fmt: skip


def pace(send: object, run: str, rate: float, count: int) -> None:
    interval, start = 1 / rate, time.perf_counter()
    for i in range(count):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send({"run": run, "sent_at": time.time()})  # type: ignore[operator]


def measure(variant: str, seconds: float, url: str, client: redis.Redis) -> dict[str, list[float]]:
    worker_module, app_module = APPS[variant]
    app = importlib.import_module(app_module)
    send = app.probe.send
    with worker(worker_module, {"BGJOBS_BROKER_URL": url, "BGJOBS_JOBS": f'["{app_module}"]'}):
        time.sleep(3)  # boot
        pace(send, f"{variant}:warmup", 50, 20)
        results: dict[str, list[float]] = {}
        for label, rate in (("50/s", 50), ("500/s", 500)):
            count = int(rate * seconds)
            pace(send, f"{variant}:{label}", rate, count)
            time.sleep(1.5)
            results[label] = [float(x) for x in client.lrange(f"latency:{variant}:{label}", 0, -1)]
        time.sleep(5)
        pace(send, f"{variant}:idle", 50, 10)
        time.sleep(1.5)
        results["after 5 s idle"] = [float(x) for x in client.lrange(f"latency:{variant}:idle", 0, -1)]
        return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    with RedisServer() as server:
        os.environ["BGJOBS_BROKER_URL"] = server.url
        client = redis.Redis.from_url(server.url)
        all_results = {variant: measure(variant, args.seconds, server.url, client) for variant in APPS}
    print("latency: send to start, milliseconds (worker -p 2 -t 8)")
    print(f"{'':16}{'':16}{'n':>6}{'p50':>9}{'p99':>9}{'max':>9}")
    for label in ("50/s", "500/s", "after 5 s idle"):
        for variant, results in all_results.items():
            values = [v * 1000 for v in results[label]]
            print(f"{label:16}{variant:16}{len(values):6d}{statistics.median(values):9.1f}"
                  f"{percentile(values, 0.99):9.1f}{max(values):9.1f}")  # fmt: skip
        print()
    idle = [v * 1000 for v in all_results["bgjobs"]["after 5 s idle"]]
    steady = percentile([v * 1000 for v in all_results["bgjobs"]["50/s"]], 0.99)
    print(
        f"bgjobs first job after idle: {idle[0]:.1f} ms (goal <= 20); "
        f"p99 at 50/s: {steady:.1f} ms (goal <= 10)"
    )


if __name__ == "__main__":
    main()
