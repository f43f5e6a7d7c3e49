"""Batches under SIGKILL: every job counted once and every callback run once, through kills.

Each round sends a batch of ``--jobs`` jobs with an ``on_complete`` callback to a real
``dramatiq bgjobs.actors -p 2 -t 4`` on Redis, SIGKILLs the whole worker (every process) at a
random moment while the batch runs, starts a new one, and checks once everything has settled: the
batch counts exactly ``--jobs`` succeeded, every job ran at least once (some twice: the ones in
flight at the kill), and the callback ran exactly once.

    python benchmarks/batch_chaos.py [--rounds 20] [--jobs 2000]
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

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bgjobs.embedded import RedisServer, free_port  # noqa: E402


def start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT), "dramatiq_prom_port": str(free_port()),
            "dramatiq_prom_db": tempfile.mkdtemp(prefix="bgjobs-chaos-prom-")}  # fmt: skip
    argv = [sys.executable, "-m", "dramatiq", "bgjobs.actors", "-p", "2", "-t", "4"]
    return subprocess.Popen(argv, env=full, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def one_round(n: int, jobs: int, env: dict[str, str], client: redis.Redis) -> tuple[bool, int]:
    """One batch through one SIGKILL of the whole worker; whether it came out right, and how many
    jobs ran twice."""
    import bgjobs
    from benchmarks.apps import batched as app
    from bgjobs import batches

    name = f"round{n}"
    worker = start(env)
    with bgjobs.batch(on_complete=app.tally.message({"id": n, "name": name})) as b:
        app.counted.send_many([{"id": i, "name": name} for i in range(jobs)])
    at = random.uniform(0.1, 0.8) * jobs  # a random point of the batch
    wait(lambda: client.hlen(f"bench:runs:{name}") >= at, 120, "the batch to be under way")
    kill(worker)
    worker = start(env)
    try:
        wait(lambda: batches.status(b.id).state == "done", 120, f"{name} to complete")
        wait(lambda: client.get(f"bench:callbacks:{name}") is not None, 60, f"{name}'s callback")
        wait(lambda: client.hlen("dramatiq:default.msgs") == 0, 60, "the queue to empty")
        time.sleep(0.5)  # settled: nothing left on the queue; a last look after
    finally:
        kill(worker)
    s = batches.status(b.id)
    runs = {int(k): int(v) for k, v in client.hgetall(f"bench:runs:{name}").items()}
    callbacks = int(client.get(f"bench:callbacks:{name}") or 0)
    ok = (s.total, s.succeeded, s.failed, s.pending) == (jobs, jobs, 0, 0)
    ok = ok and sorted(runs) == list(range(jobs)) and callbacks == 1
    twice = sum(1 for v in runs.values() if v > 1)
    print(f"{name}: killed at {int(at)} jobs; counted {s.succeeded}/{s.total}; {twice} job(s) ran twice; "
          f"callback ran {callbacks} time(s){'' if ok else '  <- WRONG'}", flush=True)  # fmt: skip
    return ok, twice


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    random.seed(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="bgjobs-chaos-"))
    with RedisServer() as server:
        env = {
            "BGJOBS_BROKER_URL": server.url, "BENCH_REDIS_URL": server.url,
            "BGJOBS_DATABASE_URL": f"sqlite:///{workdir / 'chaos.db'}", "BGJOBS_METRICS__ENABLED": "false",
            "BGJOBS_JOBS": '["benchmarks.apps.batched"]', "BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS": "2000",
            "BGJOBS_WORKER__MAINTENANCE_INTERVAL_MS": "500",
        }  # fmt: skip
        os.environ.update(env)
        from bgjobs import db

        db.upgrade()
        client = redis.Redis.from_url(server.url)
        twice = 0
        for n in range(args.rounds):
            ok, repeated = one_round(n, args.jobs, env, client)
            twice += repeated
            if not ok:
                raise SystemExit(1)
    print(f"batch chaos: {args.rounds} rounds of {args.jobs} jobs, {args.rounds} SIGKILLs of the whole "
          f"worker: every job counted once, every callback run once ({twice} job runs repeated after kills)")


if __name__ == "__main__":
    main()
