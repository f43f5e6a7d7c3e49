"""The storage port: stream objects in, read them back, delete them, link to them.

Keys are relative paths. The public methods refuse keys that could escape the
store (absolute, ``..``, backslashes, empty parts) before any adapter sees them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator

from pydantic import Field

from ..errors import PermanentError
from ._base import PortModel


class StoredObject(PortModel):
    key: str
    size: int = Field(ge=0)
    sha256: str
    content_type: str = "application/octet-stream"


def check_key(key: str) -> str:
    """Return ``key`` if it stays inside the store.

    Raises:
        PermanentError: the key is empty, absolute, or climbs out with ``..``.
    """
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise PermanentError(f"storage key {key!r} is not a clean relative path")
    return key


class Storage(abc.ABC):
    """Stores objects by key. Subclass it and implement the protected methods."""

    def put(
        self, *, key: str, chunks: Iterable[bytes], content_type: str = "application/octet-stream"
    ) -> StoredObject:
        """Write an object from an iterable of chunks, never holding it whole in memory.

        The object appears under ``key`` only once completely written.
        """
        return self._put(key=check_key(key), chunks=chunks, content_type=content_type)

    def open(self, *, key: str) -> Iterator[bytes]:
        """Read an object back in chunks.

        Raises:
            PermanentError: no object has that key.
        """
        return self._open(key=check_key(key))

    def delete(self, *, key: str) -> None:
        """Remove an object; removing a missing one is not an error."""
        self._delete(key=check_key(key))

    def url(self, *, key: str, expires_in: int = 3600) -> str:
        """A URL where the object can be fetched (signed where the backend supports it)."""
        return self._url(key=check_key(key), expires_in=expires_in)

    @abc.abstractmethod
    def _put(self, *, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject: ...

    @abc.abstractmethod
    def _open(self, *, key: str) -> Iterator[bytes]: ...

    @abc.abstractmethod
    def _delete(self, *, key: str) -> None: ...

    @abc.abstractmethod
    def _url(self, *, key: str, expires_in: int) -> str: ...
