"""What waiting for a replica costs a send: ``send()`` latency on a master with one replica
(two redis-servers on 127.0.0.1), with ``BGJOBS_REDIS__WAIT_REPLICAS`` unset and set to 1, in
alternating rounds of the same run. The goal is a p50 at most 1.5x the plain send's.

    python benchmarks/replicas.py [--messages 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.redis_servers import sentinel_deployment  # noqa: E402


def latencies(n: int, wait: int) -> list[float]:
    """Microseconds of each of ``n`` sends, after a warm-up; the queue is emptied first."""
    from benchmarks.apps import typed as app
    from bgjobs import runtime

    os.environ["BGJOBS_REDIS__WAIT_REPLICAS"] = str(wait)
    runtime.reset()
    for i in range(300):
        app.noop.send({"id": i, "name": f"job-{i}"})
    runtime.current().broker.client.flushdb()  # type: ignore[attr-defined]
    found = []
    for i in range(n):
        started = time.perf_counter()
        app.noop.send({"id": i, "name": f"job-{i}"})
        found.append((time.perf_counter() - started) * 1e6)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args, _ = parser.parse_known_args()
    found: dict[int, list[float]] = {0: [], 1: []}
    with sentinel_deployment() as (deployment, _):
        os.environ["BGJOBS_BROKER_URL"] = f"redis://127.0.0.1:{deployment.master_port}/0"
        os.environ["BGJOBS_METRICS__ENABLED"] = "false"
        for _ in range(args.rounds):
            for wait in (0, 1):
                found[wait] += latencies(args.messages, wait)
    plain, waited = (statistics.quantiles(found[w], n=100) for w in (0, 1))
    print(f"send latency, {args.messages} sends x {args.rounds} rounds, master + 1 replica on 127.0.0.1")
    print(f"{'':28}{'p50 µs':>10}{'p99 µs':>10}")
    print(f"{'plain send':28}{plain[49]:10.0f}{plain[98]:10.0f}")
    print(f"{'WAIT_REPLICAS=1':28}{waited[49]:10.0f}{waited[98]:10.0f}")
    print(f"ratio at p50: {waited[49] / plain[49]:.2f}x (goal: at most 1.5x)")


if __name__ == "__main__":
    main()
