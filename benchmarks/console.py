"""The console's probe cost: ``/readyz`` and ``/api/v1/overview`` over real HTTP, with an empty
deployment, 20,000 ready messages, and 20,000 ready messages plus 20,000 dead letters.

Every check reads counters and the head of each queue, so the time per call should stay flat as
the backlog grows. The obvious alternative for a probe is an exec probe running
``bgjobs status --json`` (a process per probe); it is timed in the same run.

    python benchmarks/console.py [--messages 20000] [--calls 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import served  # noqa: E402
from benchmarks.deadletters import _fill  # noqa: E402
from bgjobs.embedded import RedisServer  # noqa: E402


def _ready(client: object, n: int, queue: str = "webhooks") -> None:
    """``n`` ready messages in ``queue``, shaped as Dramatiq stores them."""
    pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
    now = int(time.time() * 1000)
    for i in range(n):
        rid = str(uuid.uuid4())
        message = {"queue_name": queue, "actor_name": "bench", "args": [{"i": i}], "kwargs": {},
                   "options": {"redis_message_id": rid}, "message_id": str(uuid.uuid4()),
                   "message_timestamp": now}  # fmt: skip
        pipe.hset(f"dramatiq:{queue}.msgs", rid, json.dumps(message))
        pipe.rpush(f"dramatiq:{queue}", rid)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def _per_call_ms(client: object, path: str, calls: int) -> tuple[float, float]:
    """Median and p99 milliseconds of ``calls`` GETs of ``path``."""
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        answer = client.get(path)  # type: ignore[attr-defined]
        timings.append((time.perf_counter() - started) * 1000)
        assert answer.status_code in (200, 503), answer.text
    timings.sort()
    return timings[len(timings) // 2], timings[int(len(timings) * 0.99) - 1]


def _exec_probe_ms(env: dict[str, str], calls: int) -> float:
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bgjobs.cli", "status", "--json"], env=env, capture_output=True,
                       check=False)  # fmt: skip
        timings.append((time.perf_counter() - started) * 1000)
    return sorted(timings)[len(timings) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    n = args.messages
    workdir = Path(tempfile.mkdtemp(prefix="bgjobs-bench-console-"))
    with RedisServer() as server:
        env = {**os.environ, "BGJOBS_BROKER_URL": server.url,
               "BGJOBS_DATABASE_URL": f"sqlite:///{workdir / 'console.db'}"}  # fmt: skip
        os.environ.update(env)
        import httpx
        import redis

        from bgjobs import db, runtime
        from bgjobs.console import create_app
        from bgjobs.redis_broker import QUEUES_KEY

        runtime.reset()
        db.upgrade()
        client = redis.Redis.from_url(server.url)
        client.sadd(f"dramatiq:{QUEUES_KEY}", "default", "webhooks")
        rows = []
        with served(create_app()) as url, httpx.Client(base_url=url, timeout=30) as http:
            for label, fill in (("empty", None), (f"{n:,} ready", _ready),
                                (f"{n:,} ready + {n:,} dead letters", _fill)):  # fmt: skip
                if fill is not None:
                    fill(client, n)
                for path in ("/api/v1/readyz", "/api/v1/overview"):
                    _per_call_ms(http, path, 10)  # warm
                    rows.append((label, path, *_per_call_ms(http, path, args.calls)))
            probe = _exec_probe_ms(env, 10)
    empty = {path: median for label, path, median, _ in rows if label == "empty"}
    print(
        f"console probe cost, {args.calls} calls each over HTTP on 127.0.0.1 (median / p99 ms; to empty):"
    )
    for label, path, median, p99 in rows:
        print(f"  {path:<18} {label:<36} {median:6.2f} / {p99:6.2f} ms  {median / empty[path]:.2f}x")
    readyz = next(m for label, path, m, _ in rows if path == "/api/v1/readyz" and "dead" in label)
    print(
        f"exec probe `bgjobs status --json` (a process per probe), median of 10: {probe:.0f} ms; "
        f"/readyz with the full backlog is {probe / readyz:.0f}x cheaper"
    )


if __name__ == "__main__":
    main()
