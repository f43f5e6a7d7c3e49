"""Per-key concurrency caps and rate limits: their cost, their fairness, and caps through SIGKILLs.

1. Cost: ``--jobs`` no-op jobs over ``--keys`` tenants drained by ``dramatiq bgjobs.actors -p 2 -t 8``,
   the same actor without limits and with ``concurrency=PerKey(limit=2)`` and ``rate=PerKey("100/s",
   burst=20)``, alternating in one run: jobs/s from the first taken to the last finished, the ratio.
2. Fairness: one tenant floods ``--flood`` jobs; during the flood another sends 50, one every 20 ms.
   Each of those records how long it waited from its send to its start: without limits it stands
   behind the flood (FIFO), with a cap per tenant it does not. p50/p99 side by side.
3. Caps through SIGKILLs: 3 worker commands run 4 tenants' jobs (cap 2, 20 ms each) while one at
   random is SIGKILLed and restarted ``--kills`` times. The jobs write their own start and end
   times: the peak running per tenant, and how long after a kill the killed jobs started again
   (the heartbeat timeout is 3 s here).

    python benchmarks/key_limits.py [--jobs 200000] [--keys 10000] [--flood 100000] [--kills 8]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import percentile, worker  # noqa: E402
from bgjobs.embedded import RedisServer  # noqa: E402

HEARTBEAT_MS = 3000


def _left(client: object) -> int:
    """Jobs not finished: in the queue, or waiting in a key's lane."""
    return int(client.hlen("dramatiq:default.msgs") + client.hlen("dramatiq:bgjobs-keyed:msgs"))  # type: ignore[attr-defined]


def cost(env: dict[str, str], jobs: int, keys: int, variant: str) -> float:
    """Jobs processed per second by one worker command, from the first taken to the last finished."""
    from benchmarks.apps import keyed
    from bgjobs import runtime

    runtime.reset()
    client = runtime.current().broker.client
    client.flushdb()
    actor = keyed.limited if variant == "limited" else keyed.plain
    for start in range(0, jobs, 10_000):
        actor.send_many([{"tenant": f"t{i % keys}"} for i in range(start, min(jobs, start + 10_000))])
    assert _left(client) == jobs
    with worker("bgjobs.actors", env):
        while _left(client) >= jobs:
            time.sleep(0.001)
        began = time.perf_counter()
        while _left(client):
            time.sleep(0.01)
        return jobs / (time.perf_counter() - began)


def fairness(env: dict[str, str], flood: int, variant: str) -> list[float]:
    """Milliseconds each of the small tenant's 50 jobs waited to start, sent during the flood."""
    from benchmarks.apps import keyed
    from bgjobs import runtime

    runtime.reset()
    client = runtime.current().broker.client
    client.flushdb()
    actor = keyed.limited if variant == "limited" else keyed.plain
    with worker("bgjobs.actors", env):
        while client.zcard("dramatiq:__heartbeats__") < 2:  # both worker processes are taking jobs
            time.sleep(0.01)
        for start in range(0, flood, 10_000):
            actor.send_many([{"tenant": "big"}] * min(10_000, flood - start))
        for _ in range(50):
            actor.send({"tenant": "small", "sent_at": time.time()})
            time.sleep(0.02)
        deadline = time.monotonic() + 600
        while client.llen(f"bench:waited:{variant}") < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        return [float(v) for v in client.lrange(f"bench:waited:{variant}", 0, -1)]


def _spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "dramatiq", "bgjobs.actors", "-p", "1", "-t", "4"]
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, env=full, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip


def chaos(env: dict[str, str], kills: int) -> tuple[dict[str, int], list[float], int]:
    """Peak running per tenant, seconds from each kill to its killed jobs' next starts, jobs run."""
    from bgjobs import runtime
    from tests.support.batch_actors import Item, capped_item
    from tests.support.peaks import peak_per_key
    from tests.support.processes import alive, children

    runtime.reset()
    runtime.current().broker.client.flushdb()
    runs = Path(env["TEST_RUNS_FILE"])
    total = 4 * 150

    def lines() -> list[str]:
        return runs.read_text().splitlines() if runs.exists() else []

    def ended() -> set[str]:
        return {f"{k.split()[1]}/{k.split()[5]}" for k in lines() if " end " in k}

    capped_item.send_many([Item(key=f"t{k}", sleep_s=0.02, children=n) for n in range(150) for k in range(4)])
    procs = [_spawn(env) for _ in range(3)]
    killed: dict[int, float] = {}
    orphans: list[tuple[float, set[str]]] = []
    try:
        for _ in range(kills):
            time.sleep(random.uniform(0.5, 1.5))
            victim = random.randrange(3)
            gone = children(procs[victim].pid)
            os.killpg(procs[victim].pid, signal.SIGKILL)
            at = time.time()  # a job its process never ended ran until the kill, not until it was seen gone
            procs[victim].wait()
            while any(alive(pid) for pid in gone):
                time.sleep(0.001)
            seen = lines()
            killed.update(dict.fromkeys(gone, at))
            started = {(k.split()[1], k.split()[5]) for k in seen
                       if " start " in k and int(k.split()[4]) in gone}  # fmt: skip
            finished = {(k.split()[1], k.split()[5]) for k in seen if " end " in k}
            orphans.append((at, {f"{key}/{n}" for key, n in started - finished}))
            procs[victim] = _spawn(env)
        deadline = time.monotonic() + 300
        while len(ended()) < total and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    seen = lines()
    back = []
    for at, jobs in orphans:
        for job in jobs:
            key, n = job.split("/")
            again = [float(k.split()[3]) for k in seen if k.startswith(f"capped {key} start ")
                     and k.split()[5] == n and float(k.split()[3]) > at]  # fmt: skip
            back.append(min(again) - at if again else float("inf"))
    return peak_per_key(seen, killed), back, len(ended())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--flood", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bgjobs-bench-limits-"))
    with RedisServer() as server:
        env = {"BGJOBS_BROKER_URL": server.url, "BGJOBS_DATABASE_URL": f"sqlite:///{workdir / 'k.db'}",
               "BGJOBS_JOBS": '["benchmarks.apps.keyed", "tests.support.batch_actors"]',
               "BGJOBS_METRICS__ENABLED": "false", "TEST_RUNS_FILE": str(workdir / "runs.txt"),
               "BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS": str(HEARTBEAT_MS),
               "BGJOBS_WORKER__MAINTENANCE_INTERVAL_MS": "500"}  # fmt: skip
        os.environ.update(env)
        rates: dict[str, list[float]] = {"plain": [], "limited": []}
        for _ in range(args.rounds):
            for variant in rates:
                rates[variant].append(cost(env, args.jobs, args.keys, variant))
        plain, limited = max(rates["plain"]), max(rates["limited"])
        print(f"cost: {args.jobs:,} no-op jobs over {args.keys:,} tenants, -p 2 -t 8: without limits "
              f"{plain:,.0f} jobs/s, with a cap of 2 and 100/s per tenant {limited:,.0f} jobs/s, "
              f"ratio {limited / plain:.2f}x (best of {args.rounds})")
        for variant in ("plain", "limited"):
            waited = fairness(env, args.flood, variant)
            print(f"fairness ({variant}): a {args.flood:,}-job flood from one tenant; another tenant's "
                  f"{len(waited)} jobs waited p50 {percentile(waited, 0.5):,.0f} ms, "
                  f"p99 {percentile(waited, 0.99):,.0f} ms from send to start")
        peaks, back, ran = chaos(env, args.kills)
        wrong = any(p > 2 for p in peaks.values()) or ran < 600
        print(f"caps through {args.kills} SIGKILLs of 3 worker commands: peak running per tenant "
              f"{peaks} (cap 2), {ran} of 600 jobs ran; the {len(back)} jobs killed mid-run started again "
              f"{max(back, default=0):.1f} s after the kill at most (heartbeat timeout "
              f"{HEARTBEAT_MS / 1000:g} s){'  <- WRONG' if wrong else ''}")
        if wrong:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
