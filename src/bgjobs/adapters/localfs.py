"""Storage on the local filesystem, confined to one root, with atomic writes.

An object is written to a temporary file beside its target, fsynced, then
renamed into place: a reader never sees half an object, even after a crash.

Errors are classified in one table (:func:`_classified`, docs/exports.md): a root the process may
not write (or a read-only file system) and a name too long fail once, naming the setting or the
key; a full disk, and anything else, is retried.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

from ..errors import PermanentError, TransientError
from ..ports import Storage, StoredObject
from ..settings import LocalStorageSettings

__all__ = ["LocalFileStorage"]

CHUNK = 1 << 16


class LocalFileStorage(Storage):
    def __init__(self, root: str | os.PathLike[str], *, base_url: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.base_url = base_url

    @classmethod
    def from_settings(cls, settings: object) -> LocalFileStorage:
        section = getattr(settings, "localfs", None) or LocalStorageSettings()
        return cls(section.root, base_url=section.base_url)

    def path(self, key: str) -> Path:
        """Where ``key`` lives; refuses any key that resolves outside the root (symlinks included)."""
        target = (self.root / key).resolve()
        if not target.is_relative_to(self.root):
            raise PermanentError(f"storage key {key!r} escapes the storage root")
        return target

    def _put(self, *, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        with _classified(f"writing {key}", self.root):
            return self._write(key, chunks, content_type)

    def _write(self, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        # As short whatever the name: a name near the file system's limit plus a suffix was too long.
        tag = hashlib.sha256(target.name.encode()).hexdigest()[:12]
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{tag}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StoredObject(key=key, size=size, sha256=digest.hexdigest(), content_type=content_type)

    def _open(self, *, key: str) -> Iterator[bytes]:
        target = self.path(key)
        if not target.is_file():
            raise PermanentError(f"no object under {key!r}")

        def read() -> Iterator[bytes]:
            with target.open("rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk

        return read()

    def _delete(self, *, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def _url(self, *, key: str, expires_in: int) -> str:
        if self.base_url:
            return f"{self.base_url.rstrip('/')}/{quote(key)}"
        return self.path(key).as_uri()


@contextlib.contextmanager
def _classified(what: str, root: Path) -> Iterator[None]:
    """The local file system's errors as bgjobs's: what only a setting or the disk's owner fixes
    fails once; a full disk, and anything else, may pass."""
    try:
        yield
    except PermanentError:
        raise
    except OSError as exc:
        code = exc.errno
        if isinstance(exc, PermissionError) or code == errno.EROFS:
            raise PermanentError(f"storage: {what}: this process may not write under {root} "
                                 f"({exc.strerror}); check BGJOBS_LOCALFS__ROOT and its permissions"
                                 ) from None  # fmt: skip
        if code == errno.ENAMETOOLONG:
            raise PermanentError(f"storage: {what}: the name is too long for the file system "
                                 f"({exc.strerror}); shorten it") from None  # fmt: skip
        if code == errno.ENOSPC:
            raise TransientError(f"storage: {what}: the disk under {root} is full") from None
        raise TransientError(f"storage: {what}: {type(exc).__name__}: {exc}") from None
