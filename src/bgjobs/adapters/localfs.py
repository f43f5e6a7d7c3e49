"""Storage on the local filesystem, confined to one root, with atomic writes.

An object is written to a temporary file beside its target, fsynced, then
renamed into place: a reader never sees half an object, even after a crash.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

from ..errors import PermanentError
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
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
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
