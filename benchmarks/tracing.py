"""What tracing costs: the no-op workload of ``overhead.py`` processed by ``dramatiq bgjobs.actors
-p 2 -t 8`` with tracing off (the OpenTelemetry packages installed, ``BGJOBS_TRACING__ENABLED``
unset) and on, exporting every span over OTLP/HTTP to a receiver on 127.0.0.1 (the tests' one,
which decodes each export as a collector would). Sending is measured too: tracing adds a
producer span and the context to each message. Rounds alternate, and the ratio is to tracing off.

    python benchmarks/tracing.py [--messages 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.overhead import process_rate  # noqa: E402
from benchmarks.overhead import send_rate as overhead_send_rate  # noqa: E402
from bgjobs.embedded import RedisServer  # noqa: E402
from tests.support.otlp import otlp_receiver  # noqa: E402


def send_rate(n: int, client: redis.Redis, traced: bool) -> float:
    from bgjobs import runtime

    os.environ["BGJOBS_TRACING__ENABLED"] = "true" if traced else "false"
    runtime.reset()
    return overhead_send_rate("typed", n, client)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args, _ = parser.parse_known_args()
    results: dict[str, dict[str, list[float]]] = {
        v: {"send": [], "process": [], "cpu": []} for v in ("off", "on")
    }
    with RedisServer() as server, otlp_receiver() as receiver:
        os.environ["BGJOBS_BROKER_URL"] = server.url
        client = redis.Redis.from_url(server.url)
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        trace.set_tracer_provider(TracerProvider())  # this process sends as a traced host would
        for _ in range(args.rounds):
            for variant in ("off", "on"):
                traced = variant == "on"
                env = {"BGJOBS_BROKER_URL": server.url, "BGJOBS_METRICS__ENABLED": "false",
                       "BGJOBS_TRACING__ENABLED": "true" if traced else "false",
                       "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}  # fmt: skip
                results[variant]["send"].append(send_rate(args.messages, client, traced))
                rate, cpu = process_rate("bgjobs", args.messages, env, client)
                results[variant]["process"].append(rate)
                results[variant]["cpu"].append(cpu)
        received = len(receiver.spans)
    med = {v: {k: statistics.median(x) for k, x in r.items()} for v, r in results.items()}
    print(f"tracing: {args.messages} no-op messages, median of {args.rounds} rounds, worker -p 2 -t 8")
    print(f"{'':20}{'off':>10}{'on':>10}{'ratio':>8}")
    for phase, unit in (("send", "msg/s"), ("process", "msg/s")):
        off, on = med["off"][phase], med["on"][phase]
        print(f"{phase + ' ' + unit:20}{off:10,.0f}{on:10,.0f}{on / off:8.2f}")
    off, on = med["off"]["cpu"], med["on"]["cpu"]
    print(f"{'worker CPU µs/msg':20}{off:10,.0f}{on:10,.0f}{off / on:8.2f}")
    print(f"spans received by the OTLP receiver: {received:,}")


if __name__ == "__main__":
    main()
