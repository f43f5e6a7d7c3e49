"""What the benchmarks share: a real worker process and percentiles."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from bgjobs.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(parent: int) -> float:
    """User + system CPU of ``parent``'s child processes (the Dramatiq worker processes), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:  # ppid
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


@contextmanager
def worker(
    module: str, env: dict[str, str], *, processes: int = 2, threads: int = 8
) -> Iterator[subprocess.Popen[bytes]]:
    """``dramatiq <module> -p 2 -t 8`` with its own metrics port and a migrated database (a throwaway
    SQLite file unless ``env`` names one), stopped on exit."""
    full_env = {
        **os.environ, **env, "PYTHONPATH": str(ROOT), "dramatiq_prom_port": str(free_port()),
        "dramatiq_prom_db": tempfile.mkdtemp(prefix="bgjobs-bench-prom-"),
    }  # fmt: skip
    if not full_env.get("BGJOBS_DATABASE_URL"):  # never the repository's own bgjobs.db
        workdir = tempfile.mkdtemp(prefix="bgjobs-bench-db-")
        full_env["BGJOBS_DATABASE_URL"] = f"sqlite:///{workdir}/bench.db"
    from bgjobs import db

    db.upgrade(db.engine_for(full_env["BGJOBS_DATABASE_URL"]))  # the worker checks the revision at boot
    argv = [sys.executable, "-m", "dramatiq", module, "-p", str(processes), "-t", str(threads)]
    proc = subprocess.Popen(
        argv, env=full_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def database(kind: str, name: str) -> Iterator[str]:
    """A fresh database URL: a SQLite file in a temp dir, or a throwaway PostgreSQL cluster."""
    if kind == "sqlite":
        yield f"sqlite:///{Path(tempfile.mkdtemp(prefix=f'bgjobs-bench-{name}-')) / f'{name}.db'}"
        return
    from tests.support.postgres import PostgresCluster

    cluster = PostgresCluster().start()
    try:
        yield cluster.create_database(f"bgjobs_bench_{name}")
    finally:
        cluster.stop()


def timed_calls(one: Callable[[int], object], n: int, threads: int) -> float:
    """Seconds to call ``one(0)`` ... ``one(n - 1)``, in a loop or on a pool of ``threads``."""
    start = time.perf_counter()
    if threads == 1:
        for i in range(n):
            one(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(n)))
    return time.perf_counter() - start


def phased_parser(doc: str | None) -> argparse.ArgumentParser:
    """The arguments of a benchmark on both databases: ``--db``, and the hidden ``--phase``/``--url``
    with which :func:`child` runs one measurement in a fresh process."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    return parser


def child(script: str, *args: str) -> dict[str, float]:
    """Run ``script --phase ...`` in a fresh process (so its peak RSS is its own); its last line is JSON."""
    import json

    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def webhook_env(broker_url: str, name: str) -> dict[str, str]:
    """The environment of a webhook benchmark: its broker, a throwaway SQLite file, and endpoints on
    127.0.0.1 let through the SSRF guard; also set in this process, which publishes."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bgjobs-bench-{name}-"))
    env = {
        "BGJOBS_BROKER_URL": broker_url,
        "BGJOBS_DATABASE_URL": f"sqlite:///{workdir / f'{name}.db'}",
        "BGJOBS_WEBHOOKS__REQUIRE_HTTPS": "false",
        "BGJOBS_WEBHOOKS__ALLOW": '["127.0.0.1/32"]',
    }
    os.environ.update(env)
    return env


@contextmanager
def served(app: object) -> Iterator[str]:
    """An ASGI app served by uvicorn in a thread on 127.0.0.1; its base URL."""
    import threading

    import uvicorn

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",  # type: ignore[arg-type]
                                       access_log=False, lifespan="off"))  # fmt: skip
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
