"""Storage on an SFTP server, with the ``bgjobs[sftp]`` extra (paramiko).

- **Authentication** by a private key file (with its passphrase, if any) or a password.
- **The host key is checked** against a known_hosts file. An unknown or changed host key is
  refused, naming the setting; accepting unknown hosts is a setting that is off by default.
- **Atomic publish**: an object is uploaded to a temporary name beside its key
  (``.<name>.<random>.part``), read back and compared (size and SHA-256), then renamed onto its key
  with ``posix-rename`` (one step on OpenSSH servers). A reader never sees a partial file under the
  key. A killed worker leaves only a ``.part`` file, which the next upload of that key removes.
- **A dropped connection** fails the attempt as transient. The job is retried from the start
  with a fresh connection and a fresh temporary name; nothing is resumed halfway, so a retried
  upload can never splice two attempts' bytes.
- **Links**: SFTP has no signed URLs. ``url()`` gives ``BGJOBS_SFTP__BASE_URL`` + key when an HTTP
  server publishes the directory, and otherwise an ``sftp://user@host:port/path`` address without
  credentials, for people who have their own access.

paramiko rather than asyncssh: the storage port is synchronous and runs in worker threads, and
paramiko is the long-standing synchronous SSH library (what Fabric and Ansible use), with SFTP's
``posix-rename`` and known_hosts handling built in.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, PermanentError, TransientError
from ..ports import Storage, StoredObject

__all__ = ["SftpStorage"]

CHUNK = 256 * 1024


def _paramiko() -> Any:
    try:
        import paramiko
    except ImportError:
        raise ConfigurationError(
            "the SFTP storage adapter needs the sftp extra: pip install 'bgjobs[sftp]'"
        ) from None
    return paramiko


class SftpStorage(Storage):
    """Objects as files under ``root`` on an SFTP server; one SSH connection per operation."""

    def __init__(
        self, *, host: str, username: str, port: int = 22, root: str = ".", password: str | None = None,
        key_file: str | None = None, key_passphrase: str | None = None, known_hosts: str | None = None,
        accept_unknown_host: bool = False, base_url: str | None = None, timeout_s: float = 30.0,
    ) -> None:  # fmt: skip
        if password is None and key_file is None:
            raise ConfigurationError("the SFTP adapter needs BGJOBS_SFTP__KEY_FILE or BGJOBS_SFTP__PASSWORD")
        self.host, self.port, self.username, self.root = host, port, username, root.rstrip("/") or "/"
        self.password, self.key_file, self.key_passphrase = password, key_file, key_passphrase
        self.known_hosts = known_hosts or str(Path("~/.ssh/known_hosts").expanduser())
        self.accept_unknown_host, self.base_url, self.timeout_s = accept_unknown_host, base_url, timeout_s

    @classmethod
    def from_settings(cls, settings: Any) -> SftpStorage:
        s = settings.sftp
        if not s.host or not s.username:
            raise ConfigurationError("BGJOBS_SFTP__HOST and BGJOBS_SFTP__USERNAME must be set")
        return cls(
            host=s.host, port=s.port, username=s.username, root=s.root,
            password=s.password.get_secret_value() if s.password else None, key_file=s.key_file,
            key_passphrase=s.key_passphrase.get_secret_value() if s.key_passphrase else None,
            known_hosts=s.known_hosts, accept_unknown_host=s.accept_unknown_host, base_url=s.base_url,
            timeout_s=s.timeout_s,
        )  # fmt: skip

    @contextlib.contextmanager
    def _session(self, what: str) -> Iterator[Any]:
        """An SFTP session for one operation, its errors as bgjobs's."""
        paramiko = _paramiko()
        client = paramiko.SSHClient()
        try:
            if Path(self.known_hosts).exists():
                client.load_host_keys(self.known_hosts)
            policy = paramiko.AutoAddPolicy() if self.accept_unknown_host else paramiko.RejectPolicy()
            client.set_missing_host_key_policy(policy)
            client.connect(
                self.host, port=self.port, username=self.username, password=self.password,
                key_filename=self.key_file, passphrase=self.key_passphrase, timeout=self.timeout_s,
                banner_timeout=self.timeout_s, auth_timeout=self.timeout_s, allow_agent=False,
                look_for_keys=False,
            )  # fmt: skip
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(self.timeout_s)
            yield sftp
        except paramiko.BadHostKeyException:
            raise PermanentError(
                f"SFTP {what}: the host key of {self.host}:{self.port} does not match "
                f"{self.known_hosts} (BGJOBS_SFTP__KNOWN_HOSTS): refusing to connect"
            ) from None
        except paramiko.AuthenticationException as exc:
            raise PermanentError(
                f"SFTP {what}: {self.username}@{self.host} was refused ({exc}); check "
                "BGJOBS_SFTP__KEY_FILE or BGJOBS_SFTP__PASSWORD"
            ) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise PermanentError(
                    f"SFTP {what}: {self.host}:{self.port} is not in {self.known_hosts}; add its host key "
                    "there (BGJOBS_SFTP__KNOWN_HOSTS), or set BGJOBS_SFTP__ACCEPT_UNKNOWN_HOST=true on a "
                    "trusted network"
                ) from None
            raise TransientError(f"SFTP {what}: {type(exc).__name__}: {exc}") from None
        except (TimeoutError, OSError, EOFError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise PermanentError(f"SFTP {what}: no such file") from None
            raise TransientError(f"SFTP {what}: {type(exc).__name__}: {exc}") from None
        finally:
            client.close()

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, key)

    @staticmethod
    def _makedirs(sftp: Any, directory: str) -> None:
        parts, current = [p for p in directory.split("/") if p], "/" if directory.startswith("/") else ""
        for part in parts:
            current = posixpath.join(current, part) if current else part
            try:
                sftp.stat(current)
            except FileNotFoundError:
                sftp.mkdir(current)

    def _put(self, *, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        final = self._path(key)
        directory, name = posixpath.split(final)
        temporary = posixpath.join(directory, f".{name}.{secrets.token_hex(6)}.part")
        digest, size = hashlib.sha256(), 0
        with self._session(f"upload of {key}") as sftp:
            self._makedirs(sftp, directory)
            for stale in sftp.listdir(directory):  # what a killed upload of this key left
                if stale.startswith(f".{name}.") and stale.endswith(".part"):
                    sftp.remove(posixpath.join(directory, stale))
            try:
                with sftp.open(temporary, "wb") as out:
                    out.set_pipelined(True)
                    for chunk in chunks:
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
                check, checked = hashlib.sha256(), 0
                with sftp.open(temporary, "rb") as back:
                    back.prefetch()
                    while block := back.read(CHUNK):
                        check.update(block)
                        checked += len(block)
                if (checked, check.hexdigest()) != (size, digest.hexdigest()):
                    raise TransientError(f"SFTP upload of {key}: read back {checked} bytes that do not match "
                                         f"the {size} written; uploading again")  # fmt: skip
                sftp.posix_rename(temporary, final)
            except BaseException:
                with contextlib.suppress(Exception):
                    sftp.remove(temporary)
                raise
        return StoredObject(key=key, size=size, sha256=digest.hexdigest(), content_type=content_type)

    def _open(self, *, key: str) -> Iterator[bytes]:
        with self._session(f"read of {key}") as sftp:
            try:
                handle = sftp.open(self._path(key), "rb")
            except FileNotFoundError:
                raise PermanentError(f"no object {key!r} on {self.host}") from None
            with handle:
                handle.prefetch()
                while block := handle.read(CHUNK):
                    yield block

    def _delete(self, *, key: str) -> None:
        with self._session(f"delete of {key}") as sftp, contextlib.suppress(FileNotFoundError):
            sftp.remove(self._path(key))

    def _url(self, *, key: str, expires_in: int) -> str:
        if self.base_url:
            return f"{self.base_url.rstrip('/')}/{key}"
        path = self._path(key)
        return f"sftp://{self.username}@{self.host}:{self.port}{'' if path.startswith('/') else '/'}{path}"
