"""A storage adapter for an S3-style object store over plain HTTP (PUT/GET/DELETE on bucket/key).

Real S3 and S3-compatible services have a bundled adapter (``BGJOBS_STORAGE=s3``); this one shows
the port for any object store with an HTTP API. Chunks are spooled (in memory up to 8 MiB, then
to a temp file) so a PUT can be resent after a blip: a PUT of the same key is idempotent. URLs are
signed here with an HMAC the store checks, so handing one out needs no call.
"""

from __future__ import annotations

import hashlib
import hmac
import tempfile
import time
from collections.abc import Iterable, Iterator
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from bgjobs.errors import PermanentError, TransientError
from bgjobs.ports import Storage, StoredObject

from .transport import RETRYABLE, HttpAdapter, VendorError, call

__all__ = ["HttpObjectStorage", "signature"]

SPOOL_BYTES = 8 * 1024 * 1024


def signature(secret: str, path: str, expires: int) -> str:
    return hmac.new(secret.encode(), f"{path}:{expires}".encode(), hashlib.sha256).hexdigest()


class HttpObjectStorage(Storage, HttpAdapter):
    def __init__(
        self, *, base_url: str, bucket: str, token: SecretStr, url_secret: SecretStr, timeout_s: float = 60.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.bucket = bucket
        self.url_secret = url_secret
        self.client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {token.get_secret_value()}"},
        )

    def _path(self, key: str) -> str:
        return f"/{self.bucket}/{quote(key)}"

    def _put(self, *, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        digest = hashlib.sha256()
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            for chunk in chunks:
                spool.write(chunk)
                digest.update(chunk)
            size = spool.tell()
            headers = {"Content-Type": content_type, "Content-Length": str(size),
                       "x-content-sha256": digest.hexdigest()}  # fmt: skip
            call(self.client, "PUT", self._path(key), content=_Rewound(spool), headers=headers,
                 safe_to_resend=True, before_each=lambda: spool.seek(0))  # fmt: skip
        return StoredObject(key=key, size=size, sha256=digest.hexdigest(), content_type=content_type)

    def _open(self, *, key: str) -> Iterator[bytes]:
        response = self.client.send(self.client.build_request("GET", self._path(key)), stream=True)
        if response.status_code >= 400:
            response.close()
            if response.status_code == 404:
                raise PermanentError(f"no object {key!r} in {self.bucket}")
            if response.status_code in RETRYABLE:
                raise TransientError(f"object store answered {response.status_code}")
            raise VendorError(response.status_code, "")

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.iter_bytes(64 * 1024)
            finally:
                response.close()

        return chunks()

    def _delete(self, *, key: str) -> None:
        try:
            call(self.client, "DELETE", self._path(key), safe_to_resend=True)
        except VendorError as exc:
            if exc.status != 404:  # already gone is what was asked
                raise

    def _url(self, *, key: str, expires_in: int) -> str:
        expires = int(time.time()) + expires_in
        path = self._path(key)
        signed = signature(self.url_secret.get_secret_value(), path, expires)
        return f"{self.base_url}{path}?expires={expires}&signature={signed}"


class _Rewound:
    """The spooled body, read again from the start (``before_each`` seeks) by each attempt."""

    def __init__(self, spool: tempfile.SpooledTemporaryFile[bytes]) -> None:
        self.spool = spool

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.spool.read(64 * 1024):
            yield chunk
