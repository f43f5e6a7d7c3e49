"""Fan-out: 20,000 messages via send_many vs a send loop, same typed actor, same Redis, same run.

python benchmarks/fanout.py [--messages 20000] [--rounds 3]
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

from bgjobs.embedded import RedisServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with RedisServer() as server:
        os.environ["BGJOBS_BROKER_URL"] = server.url
        from benchmarks.apps.typed import noop

        client = redis.Redis.from_url(server.url)
        payloads = [{"id": i, "name": f"job-{i}"} for i in range(args.messages)]
        loop, many = [], []
        for _ in range(args.rounds):
            client.flushall()
            start = time.perf_counter()
            for p in payloads:
                noop.send(p)
            loop.append(args.messages / (time.perf_counter() - start))
            assert client.llen("dramatiq:default") == args.messages
            client.flushall()
            start = time.perf_counter()
            noop.send_many(payloads)
            many.append(args.messages / (time.perf_counter() - start))
            assert client.llen("dramatiq:default") == args.messages
    a, b = statistics.median(loop), statistics.median(many)
    print(f"fanout: {args.messages} messages, median of {args.rounds} rounds")
    print(f"send loop:  {a:10,.0f} msg/s")
    print(f"send_many:  {b:10,.0f} msg/s")
    print(f"ratio:      {b / a:10.1f}x  (goal >= 3x)")


if __name__ == "__main__":
    main()
