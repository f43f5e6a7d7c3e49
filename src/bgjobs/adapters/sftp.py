"""Storage on an SFTP server, with the ``bgjobs[sftp]`` extra (paramiko).

- **Authentication** by a private key file (with its passphrase, if any) or a password.
- **The host key is checked** against a known_hosts file. An unknown or changed host key is
  refused, naming the setting; accepting unknown hosts is a setting that is off by default.
- **Atomic publish**: an object is uploaded to a temporary name beside its key
  (``.<hash of the name>.<random>.part``, 31 characters whatever the name), read back and compared
  (size and SHA-256), then renamed onto its key with ``posix-rename`` (one step on OpenSSH
  servers). A reader never sees a partial file under the key. A killed worker leaves only a
  ``.part`` file, which the next upload of that key removes once it is done (only parts last
  written before it began: two uploads of one key at once each finish), and ``cleanup.daily``
  removes any left longer than a day (:meth:`SftpStorage.remove_stale_parts`).
- **Errors** are classified in one table (:meth:`SftpStorage._classified`): what a setting or the
  server's files must fix (a refused key or host key, a wrong passphrase, a missing key file, a
  root that cannot be written, a name too long) fails once, naming the setting; a dropped
  connection or a server that does not answer within ``BGJOBS_SFTP__TIMEOUT_S`` (opening the
  session included) is retried.
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
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import BgjobsError, ConfigurationError, PermanentError, TransientError
from ..ports import Storage, StoredObject

__all__ = ["SftpStorage"]

CHUNK = 256 * 1024
#: An upload's temporary name (and the longer one of earlier releases, ``.<name>.<random>.part``).
PARTIAL = re.compile(r"\..+\.[0-9a-f]{12}\.part")
#: The longest file name (bytes) POSIX file systems, and so SFTP servers, take.
NAME_MAX = 255


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
        """An SFTP session for one operation, its errors as bgjobs's (:meth:`_classified`).

        Opening it takes at most ``timeout_s`` in all: a timer closes the connection at the
        deadline, where paramiko's own timeouts (connect, banner, authentication, channel) add
        up, and some of its waits have none. Each read or write after that waits at most
        ``timeout_s`` as well."""
        paramiko = _paramiko()
        if self.key_file and not Path(self.key_file).is_file():
            raise PermanentError(f"SFTP {what}: no key file at {self.key_file} (BGJOBS_SFTP__KEY_FILE)")
        client, fired = paramiko.SSHClient(), threading.Event()

        def expire() -> None:
            fired.set()
            client.close()

        deadline = threading.Timer(self.timeout_s, expire)
        try:
            self._trust(paramiko, client)
            deadline.start()
            client.connect(
                self.host, port=self.port, username=self.username, password=self.password,
                key_filename=self.key_file, passphrase=self.key_passphrase, timeout=self.timeout_s,
                banner_timeout=self.timeout_s, auth_timeout=self.timeout_s, allow_agent=False,
                look_for_keys=False,
            )  # fmt: skip
            sftp = client.open_sftp()
            deadline.cancel()
            if fired.is_set():
                raise TimeoutError("the connection was closed at the deadline")
            sftp.get_channel().settimeout(self.timeout_s)
            yield sftp
        except Exception as exc:
            raise self._classified(exc, what, timed_out=fired.is_set()) from None
        finally:
            deadline.cancel()
            client.close()

    def _trust(self, paramiko: Any, client: Any) -> None:
        """The known hosts, and what to do with an unknown one. Accepting unknown hosts pins the
        first key seen in the known_hosts file (made if missing), so a later change is refused."""
        known = Path(self.known_hosts)
        if self.accept_unknown_host and not known.exists():
            known.parent.mkdir(parents=True, exist_ok=True)
            known.touch(mode=0o600)
        if known.exists():
            client.load_host_keys(str(known))  # paramiko saves what AutoAddPolicy adds to this file
        client.set_missing_host_key_policy(
            paramiko.AutoAddPolicy() if self.accept_unknown_host else paramiko.RejectPolicy()
        )

    def _classified(self, exc: BaseException, what: str, *, timed_out: bool = False) -> Exception:
        """One table from paramiko's and the server's errors to bgjobs's: what a setting or the
        server's files must fix fails once, naming it; what may pass (a dropped connection, a
        server that does not answer) is transient. docs/exports.md shows the table."""
        paramiko = _paramiko()
        text = f"{type(exc).__name__}: {exc}"
        where = f"{self.host}:{self.port}"
        if isinstance(exc, BgjobsError):
            return exc
        if timed_out:
            return TransientError(f"SFTP {what}: {where} did not answer within {self.timeout_s:g} s "
                                  "(BGJOBS_SFTP__TIMEOUT_S)")  # fmt: skip
        if isinstance(exc, paramiko.BadHostKeyException):
            return PermanentError(f"SFTP {what}: the host key of {where} does not match {self.known_hosts} "
                                  "(BGJOBS_SFTP__KNOWN_HOSTS): refusing to connect")  # fmt: skip
        if isinstance(exc, paramiko.PasswordRequiredException):
            return PermanentError(f"SFTP {what}: the key {self.key_file} is encrypted; set its passphrase in "
                                  "BGJOBS_SFTP__KEY_PASSPHRASE")  # fmt: skip
        if isinstance(exc, paramiko.AuthenticationException):
            return PermanentError(f"SFTP {what}: {self.username}@{self.host} was refused ({exc}); check "
                                  "BGJOBS_SFTP__KEY_FILE or BGJOBS_SFTP__PASSWORD")  # fmt: skip
        if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
            return PermanentError(
                f"SFTP {what}: {where} is not in {self.known_hosts}; add its host key there "
                "(BGJOBS_SFTP__KNOWN_HOSTS), or set BGJOBS_SFTP__ACCEPT_UNKNOWN_HOST=true on a trusted "
                "network"
            )
        if isinstance(exc, paramiko.SSHException) and str(exc).startswith(("Invalid key", "not a valid")):
            return PermanentError(f"SFTP {what}: the key {self.key_file} cannot be read with the passphrase "
                                  "in BGJOBS_SFTP__KEY_PASSPHRASE (or is not a private key)")  # fmt: skip
        if isinstance(exc, PermissionError):
            return PermanentError(f"SFTP {what}: {self.username} may not write there ({exc}); check "
                                  f"BGJOBS_SFTP__ROOT ({self.root}) and the user's rights on "
                                  f"{where}")  # fmt: skip
        if isinstance(exc, FileNotFoundError):
            return PermanentError(f"SFTP {what}: no such directory on {where}, and it cannot be made; check "
                                  f"BGJOBS_SFTP__ROOT ({self.root})")  # fmt: skip
        return TransientError(f"SFTP {what}: {text}")

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
        if len(name.encode()) > NAME_MAX:
            raise PermanentError(f"SFTP upload of {key}: its file name is {len(name.encode())} bytes, and "
                                 f"SFTP servers take at most {NAME_MAX}; shorten its name")  # fmt: skip
        # As short whatever the name (a name near the limit plus a suffix would be too long), and
        # still tied to its key, so the next upload of the key removes what a killed one left.
        tag = hashlib.sha256(name.encode()).hexdigest()[:12]
        temporary = posixpath.join(directory, f".{tag}.{secrets.token_hex(6)}.part")
        digest, size = hashlib.sha256(), 0
        with self._session(f"upload of {key}") as sftp:
            self._makedirs(sftp, directory)
            try:
                with sftp.open(temporary, "wb") as out:
                    begun = out.stat().st_mtime or 0  # on the server's clock
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
            self._remove_left(sftp, directory, (f".{tag}.", f".{name}."), begun)
        return StoredObject(key=key, size=size, sha256=digest.hexdigest(), content_type=content_type)

    @staticmethod
    def _remove_left(sftp: Any, directory: str, prefixes: tuple[str, ...], begun: float) -> None:
        """Once uploaded: remove what killed uploads of the key left, the parts last written before
        this upload began. Not before it, and not a newer one: a second upload of the key (a
        worker that was paused past its claim, resumed) may be writing it now."""
        for entry in sftp.listdir_attr(directory):
            named = entry.filename
            if named.startswith(prefixes) and named.endswith(".part") and (entry.st_mtime or 0) < begun:
                with contextlib.suppress(FileNotFoundError):
                    sftp.remove(posixpath.join(directory, named))

    def remove_stale_parts(self, *, older_than_s: float, deadline: float | None = None) -> int:
        """Remove the temporary files of uploads killed longer ago than ``older_than_s`` (ones the
        same key was never uploaded again to remove) anywhere under the root; returns how many."""
        removed, before = 0, time.time() - older_than_s
        with self._session("removal of stale .part files") as sftp:
            directories = [self.root]
            while directories and (deadline is None or time.monotonic() < deadline):
                directory = directories.pop()
                for entry in sftp.listdir_attr(directory):
                    path = posixpath.join(directory, entry.filename)
                    if stat.S_ISDIR(entry.st_mode or 0):
                        directories.append(path)
                    elif PARTIAL.fullmatch(entry.filename) and (entry.st_mtime or 0) < before:
                        sftp.remove(path)
                        removed += 1
        return removed

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
        # A relative root is under the user's home directory: `/~/` in an sftp URL (curl, WinSCP).
        where = path if path.startswith("/") else f"/~/{path}"
        return f"sftp://{self.username}@{self.host}:{self.port}{where}"
