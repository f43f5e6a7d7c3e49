"""The transactional outbox: relay throughput, and commit-to-start latency beside a direct send.

1. Relay: N rows committed to SQLite, then relayed in batches by ``relay_once`` (rows/s).
2. Latency at idle: a real worker (``dramatiq bgjobs.actors -p 2``, relaying in-process, woken
   by each commit); jobs committed through the outbox one at a time, and the same jobs sent directly
   with ``.send()``; each records start time minus commit (or send) time.

    python benchmarks/outbox.py [--rows 20000] [--jobs 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import percentile, worker  # noqa: E402
from bgjobs.embedded import RedisServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bgjobs-bench-outbox-"))
    with RedisServer() as server:
        env = {
            "BGJOBS_BROKER_URL": server.url,
            "BGJOBS_DATABASE_URL": f"sqlite:///{workdir / 'outbox.db'}",
            "BGJOBS_JOBS": '["benchmarks.apps.latency_typed"]',
        }
        os.environ.update(env)
        from benchmarks.apps.latency_typed import probe
        from bgjobs import db, outbox

        db.upgrade()
        client = redis.Redis.from_url(server.url)

        # 1. Relay throughput
        with db.session() as s:
            for i in range(args.rows):
                outbox.defer(s, probe, {"run": "relay", "sent_at": float(i)})
        start = time.perf_counter()
        relayed = 0
        while n := outbox.relay_once(batch_size=500):
            relayed += n
        relay_rate = relayed / (time.perf_counter() - start)
        assert client.llen("dramatiq:default") == args.rows
        client.flushall()

        # 2. Latency at idle, through a real worker
        with worker("bgjobs.actors", env):
            time.sleep(3)
            for i in range(args.jobs):
                probe.send({"run": "direct", "sent_at": time.time()})
                time.sleep(0.05)
                with db.session() as s:
                    outbox.defer(s, probe, {"run": "outbox", "sent_at": time.time()})
                time.sleep(0.05 + (i % 7) * 0.01)
            time.sleep(2)
            direct = [float(x) * 1000 for x in client.lrange("latency:direct", 0, -1)]
            via_outbox = [float(x) * 1000 for x in client.lrange("latency:outbox", 0, -1)]

    print(f"outbox relay: {relayed:,} rows in batches of 500 from SQLite: {relay_rate:,.0f} rows/s")
    print(
        f"latency at idle, milliseconds ({args.jobs} jobs each; worker -p 2 -t 8; "
        "relay woken on commit, polling every 1 s)"
    )
    print(f"{'':22}{'n':>5}{'p50':>9}{'p99':>9}")
    for label, values in (("direct .send()", direct), ("outbox commit", via_outbox)):
        print(f"{label:22}{len(values):5d}{statistics.median(values):9.1f}{percentile(values, 0.99):9.1f}")


if __name__ == "__main__":
    main()
