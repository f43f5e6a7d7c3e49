"""Start and stop real ``dramatiq bgjobs.actors`` workers for tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bgjobs.embedded import free_port
from bgjobs.redis_broker import WORKERS_KEY
from tests.support.processes import spawn

ROOT = Path(__file__).resolve().parents[2]
#: Workers started with the ``worker_env`` fixture declare a silent peer dead after this long.
HEARTBEAT_TIMEOUT_S = 2


def wait_for(
    predicate: Callable[[], object], *, timeout: float, interval: float = 0.05,
    what: str | Callable[[], str] = "condition",
) -> float:  # fmt: skip
    """Poll until ``predicate()`` is truthy; returns the seconds it took. ``what`` may be a function,
    asked at the timeout, so the failure says what was missing then."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            waited = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {waited}")
        time.sleep(interval)
    return time.monotonic() - start


def use_environment(monkeypatch: Any, env: dict[str, str]) -> None:
    """Point this test process at ``env`` (the workers' settings), with fresh settings, broker and tables."""
    from bgjobs import db, runtime

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    db.upgrade()


def broker_client(env: dict[str, str]) -> redis.Redis:
    """A client for the deployment's Redis of ``env`` (the broker's, or RabbitMQ's coordination
    store), however it is reached (Sentinel, TLS)."""
    from bgjobs.redis_connections import client_for
    from bgjobs.redis_sections import RedisTlsSettings

    tls = RedisTlsSettings(**{field: env.get(f"BGJOBS_REDIS_TLS__{field.upper()}") or None
                              for field in ("ca_file", "cert_file", "key_file")})  # fmt: skip
    return client_for(env.get("BGJOBS_COORDINATION_URL") or env["BGJOBS_BROKER_URL"], tls)


#: Every worker command made by the test now running; :func:`remove_all` kills them and deletes their logs.
_made: list[WorkerProcess] = []


def remove_all() -> None:
    """Kill every worker command the test made (whatever it did itself) and delete their log files."""
    while _made:
        made = _made.pop()
        made.kill()
        Path(made.log.name).unlink(missing_ok=True)
        if made.own_prom_db is not None:
            shutil.rmtree(made.own_prom_db, ignore_errors=True)


class WorkerProcess:
    """One ``dramatiq bgjobs.actors`` command (its main process and children, in their own session)."""

    def __init__(
        self, env: dict[str, str], *, processes: int = 2, threads: int = 2, args: tuple[str, ...] = ()
    ):
        self.env = {
            **os.environ,
            **env,
            # The test's own first (another release's package), then this tree's tests
            "PYTHONPATH": os.pathsep.join(
                p for p in (env.get("PYTHONPATH"), str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
        }
        self.env.setdefault("dramatiq_prom_port", str(free_port()))
        #: The metrics directory this object made (and removes), unless the test named one.
        self.own_prom_db = None if "dramatiq_prom_db" in self.env else tempfile.mkdtemp(prefix="bgjobs-prom-")
        if self.own_prom_db is not None:
            self.env["dramatiq_prom_db"] = self.own_prom_db
        self.processes = processes
        self.metrics_port = int(self.env["dramatiq_prom_port"])
        self.log = tempfile.NamedTemporaryFile(prefix="bgjobs-worker-", suffix=".log", delete=False)  # noqa: SIM115
        self.argv = [
            sys.executable,
            "-m",
            "dramatiq",
            "bgjobs.actors",
            "-p",
            str(processes),
            "-t",
            str(threads),
            *args,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed_at = 0.0
        _made.append(self)

    def start(self, *, wait: bool = True) -> WorkerProcess:
        self.proc = spawn(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.log.close()  # the worker writes through its own descriptor; output() reads the file by name
        if wait:
            client = broker_client(self.env)
            before = set(client.zrange("dramatiq:__heartbeats__", 0, -1))

            def booted() -> bool:
                assert self.proc is not None and self.proc.poll() is None, self.output()
                new = set(client.zrange("dramatiq:__heartbeats__", 0, -1)) - before
                described = set(client.hkeys(f"dramatiq:{WORKERS_KEY}"))  # what `bgjobs status` reads
                return len(new) >= self.processes and new <= described

            wait_for(booted, timeout=60, what="worker processes to heartbeat and describe themselves")
        return self

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole command, as a crash or an OOM kill would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            # No process of the group runs a line after this: a job it never ended ran until here
            self.killed_at = time.time()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def terminate(self) -> None:
        """SIGTERM to the main process only, as a supervisor sends it: a clean shutdown.

        (SIGTERM to the whole group reaches each worker process twice, directly and forwarded by
        the main process, and Dramatiq takes the second as "stop now".)
        """
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)


def start_worker(workers: list[WorkerProcess], env: dict[str, str], **kwargs: Any) -> WorkerProcess:
    """Start a worker (waiting for its processes to heartbeat) and hand it to the ``workers`` fixture."""
    w = WorkerProcess(env, **kwargs)
    workers.append(w)
    return w.start()
