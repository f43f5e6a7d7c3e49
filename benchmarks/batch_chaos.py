"""Batches and workflows under SIGKILL: every job counted once, every callback run once, through kills.

Each round sends a batch of ``--jobs`` jobs with an ``on_complete`` callback, and starts a
3-stage workflow (one step, a group of ``--steps``, one step gathering every result), to a real
``dramatiq bgjobs.actors -p 2 -t 4`` on Redis, SIGKILLs the whole worker (every process) at a
random moment while the batch runs, starts a new one, and checks once everything has settled: the
batch counts exactly ``--jobs`` succeeded, every job ran at least once (some twice: the ones in
flight at the kill), the callback ran exactly once; the workflow succeeded, each of its stages was
opened once (its batch's total is its number of steps: a stage opened twice would double it), and
its last step read every result of the stages before it.

A last round runs on Redis Sentinel (a master, a replica, a sentinel) and SIGKILLs the master
instead of the worker.

    python benchmarks/batch_chaos.py [--rounds 20] [--jobs 2000] [--steps 100]
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
from typing import Any

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
    while not answered(predicate):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def answered(read):  # type: ignore[no-untyped-def]
    """``read()``, or None while a Sentinel failover is in progress (the host's reads say so and
    do not wait)."""
    try:
        return read()
    except redis.RedisError:
        return None


def one_round(
    n: int, jobs: int, steps: int, env: dict[str, str], client: redis.Redis, strike: Any = None
) -> tuple[bool, int]:
    """One batch and one workflow through one SIGKILL of the whole worker (or ``strike()``: a
    Sentinel master killed); whether they came out right, and how many jobs ran twice."""
    import bgjobs
    from benchmarks.apps import batched as app
    from bgjobs import batches, runtime, workflows

    name, flow = f"round{n}", f"flow{n}"
    worker = start(env)
    run = bgjobs.workflow(
        app.stepped.message({"id": 0, "name": flow}),
        bgjobs.group(app.stepped.message({"id": i, "name": flow}) for i in range(1, steps + 1)),
        app.gathered.message({"id": steps + 1, "name": flow}),
    ).start()
    with bgjobs.batch(on_complete=app.tally.message({"id": n, "name": name})) as b:
        app.counted.send_many([{"id": i, "name": name} for i in range(jobs)])
    # A random point of the workflow (its first step, its group, its last step), with the batch under way
    at = random.randint(0, steps + 1)
    wait(lambda: client.hlen(f"bench:runs:{flow}") >= at, 120, "the workflow to be under way")
    if strike is None:
        kill(worker)
        worker = start(env)
    else:
        strike()
    wait(lambda: workflows.status(run.id), 60, "the workflow's status")
    during = workflows.status(run.id)
    when = f"stage {during.stage + 1} {during.state}"
    try:
        wait(lambda: batches.status(b.id).state == "done", 120, f"{name} to complete")
        wait(lambda: client.get(f"bench:callbacks:{name}") is not None, 60, f"{name}'s callback")
        wait(lambda: workflows.status(run.id).state == "succeeded", 60, f"{flow} to succeed")
        broker = runtime.current().broker.client  # the broker's Redis (the Sentinel's master, there)
        wait(lambda: broker.hlen("dramatiq:default.msgs") + broker.hlen("dramatiq:flows.msgs") == 0, 60,
             "the queues to empty")  # fmt: skip
        time.sleep(0.5)  # settled: nothing left on the queue; a last look after
    finally:
        kill(worker)
    s = batches.status(b.id)
    runs = {int(k): int(v) for k, v in client.hgetall(f"bench:runs:{name}").items()}
    callbacks = int(client.get(f"bench:callbacks:{name}") or 0)
    ok = (s.total, s.succeeded, s.failed, s.pending) == (jobs, jobs, 0, 0)
    ok = ok and sorted(runs) == list(range(jobs)) and callbacks == 1
    twice = sum(1 for v in runs.values() if v > 1)
    stages = [batches.status(f"{run.id}.{k}") for k in range(3)]
    sizes = zip(stages, (1, steps, 1), strict=True)
    opened = all((x.total, x.succeeded, x.state) == (size, size, "done") for x, size in sizes)
    flow_runs = {int(k): int(v) for k, v in client.hgetall(f"bench:runs:{flow}").items()}
    ran, twice = set(flow_runs), twice + sum(1 for v in flow_runs.values() if v > 1)
    read = {g.decode() for g in client.lrange(f"bench:gathered:{flow}", 0, -1)}
    flowed = opened and ran == set(range(steps + 1)) and read == {",".join(map(str, range(steps + 1)))}
    ok = ok and flowed
    print(f"{name}: killed at {int(at)} workflow steps; counted {s.succeeded}/{s.total}; "
          f"{twice} job(s) or step(s) ran twice; "
          f"callback ran {callbacks} time(s); workflow ({when} at the kill) "
          f"{'each stage once, every result read' if flowed else 'WRONG'}"
          f"{'' if ok else '  <- WRONG'}", flush=True)  # fmt: skip
    return ok, twice


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=100, help="steps in the workflow's middle stage")
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
            ok, repeated = one_round(n, args.jobs, args.steps, env, client)
            twice += repeated
            if not ok:
                raise SystemExit(1)
        ok, repeated = sentinel_round(args.rounds, args.jobs, args.steps, env, client)
        twice += repeated
        if not ok:
            raise SystemExit(1)
    print(f"batch chaos: {args.rounds} rounds of {args.jobs} jobs and a 3-stage workflow, {args.rounds} "
          "SIGKILLs of the whole worker, and one round with the Sentinel master killed: every job counted "
          f"once, every callback run once, every stage opened once ({twice} job runs repeated)")


def sentinel_round(
    n: int, jobs: int, steps: int, env: dict[str, str], client: redis.Redis
) -> tuple[bool, int]:
    """One round on Redis Sentinel (a master, a replica, a sentinel), the master SIGKILLed mid-run."""
    from bgjobs import runtime
    from tests.support.redis_servers import sentinel_deployment

    with sentinel_deployment() as (deployment, processes):
        on_sentinel = {**env, "BGJOBS_BROKER_URL": deployment.url}
        os.environ.update(on_sentinel)
        runtime.reset()

        def strike() -> None:
            print(f"round{n}: on Redis Sentinel; its master is SIGKILLed, not the worker", flush=True)
            processes["master"].kill()
            wait(lambda: deployment.master_address()[1] == deployment.replica_port, 30, "the promotion")

        try:
            return one_round(n, jobs, steps, on_sentinel, client, strike)
        finally:
            os.environ.update(env)
            runtime.reset()


if __name__ == "__main__":
    main()
