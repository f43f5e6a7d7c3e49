"""A throwaway PostgreSQL cluster from the machine's initdb/postgres binaries.

The server refuses to run as root, so when the tests run as root the cluster is
created and started as the ``postgres`` user, on a private port and socket directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bgjobs.embedded import free_port
from tests.support.processes import spawn


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")


def _demote() -> tuple[Callable[[], None] | None, int | None]:
    if os.geteuid() != 0:
        return None, None
    user = pwd.getpwnam("postgres")

    def run_as_postgres() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return run_as_postgres, user.pw_uid


class PostgresCluster:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bgjobs-pg-"))
        self.data = self.dir / "data"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresCluster:
        preexec, uid = _demote()
        if uid is not None:
            os.chown(self.dir, uid, -1)
        subprocess.run(
            [_binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-sync"],
            check=True, capture_output=True, preexec_fn=preexec,
        )  # fmt: skip
        self.process = spawn(
            [_binary("postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
             "-h", "127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=preexec, for_session=True,
        )  # fmt: skip
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres").close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("PostgreSQL did not start") from None
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: do not wait for pooled clients
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
