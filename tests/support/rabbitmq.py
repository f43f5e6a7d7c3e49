"""A private RabbitMQ node on 127.0.0.1 for tests: Debian's rabbitmq-server with its own node name,
ports and data directory, its management API on, and a user; each test gets a virtual host of its
own (made and deleted through the management API), so no test sees another's queues."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from bgjobs.embedded import free_port
from tests.support.processes import kill_group, spawn

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
EPMD = "/usr/bin/epmd"


@dataclass
class RabbitNode:
    port: int
    user: str
    password: str
    env: dict[str, str]
    management_port: int
    vhost: str = "/"

    def url(self, password: str | None = None) -> str:
        vhost = quote(self.vhost, safe="")
        return f"amqp://{self.user}:{password or self.password}@127.0.0.1:{self.port}/{vhost}"

    @property
    def management_url(self) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.management_port}"

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        answer = httpx.request(method, f"http://127.0.0.1:{self.management_port}/api/{path}",
                               auth=(self.user, self.password), timeout=30, **kwargs)  # type: ignore[arg-type]
        answer.raise_for_status()
        return answer

    @contextmanager
    def fresh_vhost(self) -> Iterator[RabbitNode]:
        """This node seen through a new, empty virtual host, deleted (with its queues) afterwards."""
        name = f"t-{uuid.uuid4().hex[:12]}"
        self.api("PUT", f"vhosts/{name}")
        everything = {"configure": ".*", "write": ".*", "read": ".*"}
        self.api("PUT", f"permissions/{name}/{self.user}", json=everything)
        try:
            yield RabbitNode(self.port, self.user, self.password, self.env, self.management_port, name)
        finally:
            self.api("DELETE", f"vhosts/{name}")


def _ctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CTL), *args], env=env, capture_output=True, text=True, timeout=60)


@contextmanager
def rabbitmq_node() -> Iterator[RabbitNode]:
    assert SERVER.exists(), "rabbitmq-server is not installed (apt-get install rabbitmq-server; .ci/run does)"
    directory = Path(tempfile.mkdtemp(prefix="bgjobs-rabbitmq-"))
    port, dist, management = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": f"bgjobs{port}@localhost",
        "ERL_EPMD_PORT": str(free_port()),
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
        "RABBITMQ_LOG_BASE": str(directory / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq"),
        "RABBITMQ_PID_FILE": str(directory / "pid"),
    }
    (directory / "enabled_plugins").write_text("[rabbitmq_management].\n")
    (directory / "rabbitmq.conf").write_text(
        f"loopback_users = none\nmanagement.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {management}\n"
        "collect_statistics_interval = 500\n"  # the management API's counts, every half second
    )
    log = (directory / "server.log").open("wb")
    # The node's own epmd on a port of its own, in the node's group: rabbitmq-server would otherwise
    # start (or join) a machine-wide `epmd -daemon` that outlives the test run.
    epmd = spawn([EPMD, "-port", env["ERL_EPMD_PORT"], "-address", "127.0.0.1"], for_session=True,
                 stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    process = spawn([str(SERVER)], env=env, stdout=log, stderr=subprocess.STDOUT, for_session=True)
    try:
        deadline = time.monotonic() + 90
        while _ctl(env, "await_startup", "--timeout", "5").returncode != 0:
            assert process.poll() is None, (directory / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "rabbitmq-server did not start"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        user, password = "bgjobs", "rabbit-pass-for-tests"
        assert _ctl(env, "add_user", user, password).returncode == 0
        assert _ctl(env, "set_permissions", "-p", "/", user, ".*", ".*", ".*").returncode == 0
        assert _ctl(env, "set_user_tags", user, "administrator").returncode == 0
        yield RabbitNode(port, user, password, env, management)
    finally:
        _ctl(env, "stop")
        try:
            process.wait(timeout=30)
        finally:
            kill_group(process)
            kill_group(epmd)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)
