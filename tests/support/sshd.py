"""A real OpenSSH server on 127.0.0.1 for the SFTP adapter's tests: Debian's ``sshd`` with its own
config (internal-sftp, key authentication only, its own host key), in a directory the test owns."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bgjobs.embedded import free_port
from tests.support.processes import leftovers, spawn


@dataclass
class SshServer:
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    root: Path
    process: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        """Settings for the ``sftp`` storage adapter pointed at this server."""
        return {
            "BGJOBS_STORAGE": "sftp",
            "BGJOBS_SFTP__HOST": "127.0.0.1",
            "BGJOBS_SFTP__PORT": str(self.port),
            "BGJOBS_SFTP__USERNAME": self.user,
            "BGJOBS_SFTP__KEY_FILE": str(self.key_file),
            "BGJOBS_SFTP__KNOWN_HOSTS": str(self.known_hosts),
            "BGJOBS_SFTP__ROOT": str(self.root),
        }


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, capture_output=True
    )


@contextmanager
def ssh_server() -> Iterator[SshServer]:
    sshd = Path("/usr/sbin/sshd")
    assert sshd.exists(), "sshd is not installed (apt-get install openssh-server; .ci/run does)"
    directory = Path(tempfile.mkdtemp(prefix="bgjobs-sshd-"))
    directory.chmod(0o755)
    _keygen(directory / "host_key")
    _keygen(directory / "client_key")
    (directory / "authorized_keys").write_text((directory / "client_key.pub").read_text())
    root = directory / "files"
    root.mkdir()
    port = free_port()
    host_key = (directory / "host_key.pub").read_text().split()
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {directory / 'host_key'}",
                f"PidFile {directory / 'sshd.pid'}",
                f"AuthorizedKeysFile {directory / 'authorized_keys'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    log = (directory / "sshd.log").open("wb")
    process = spawn(
        [str(sshd), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, (directory / "sshd.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                    if conn.recv(8).startswith(b"SSH-"):
                        break
            except OSError:
                assert time.monotonic() < deadline, "sshd did not answer"
                time.sleep(0.05)
        yield SshServer(
            port, getpass.getuser(), directory / "client_key", directory / "known_hosts", root, process
        )
    finally:
        process.kill()
        process.wait()
        # Each connection's session process left sshd's group; once sshd is gone it comes back to
        # this process (a subreaper), and may still be closing: stopped here, not by the next test.
        for line in leftovers():
            if line.split(": ", 1)[1].startswith("sshd"):
                pid = int(line.split(":", 1)[0])
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)
