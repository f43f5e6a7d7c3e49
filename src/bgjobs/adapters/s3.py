"""Storage on S3 or any S3-compatible service (MinIO, R2, Ceph), with the ``bgjobs[s3]`` extra.

Objects are written with a multipart upload of 8 MiB parts, so an export of any size streams in
bounded memory; the object appears under its key only when the upload completes, and a failed or
killed upload is aborted (or left for the bucket's lifecycle rule), never half-visible. Links are
presigned URLs.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import ConfigurationError, PermanentError, TransientError
from ..ports import Storage, StoredObject

__all__ = ["S3Storage"]

PART = 8 * 1024 * 1024


def _boto3() -> Any:
    try:
        import boto3
        import botocore.config
    except ImportError:
        raise ConfigurationError(
            "the S3 storage adapter needs the s3 extra: pip install 'bgjobs[s3]'"
        ) from None
    return boto3, botocore.config


#: S3 error codes a setting must fix, and the setting: each fails once, naming it.
SETTINGS = {
    "NoSuchBucket": "BGJOBS_S3__BUCKET",
    "InvalidAccessKeyId": "BGJOBS_S3__ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "BGJOBS_S3__SECRET_ACCESS_KEY",
    "AccessDenied": "BGJOBS_S3__ACCESS_KEY_ID and BGJOBS_S3__SECRET_ACCESS_KEY (and the bucket's policy)",
    "ExpiredToken": "BGJOBS_S3__ACCESS_KEY_ID and BGJOBS_S3__SECRET_ACCESS_KEY",
    "AuthorizationHeaderMalformed": "BGJOBS_S3__REGION",
}
#: S3 error codes that pass: retried with backoff (so are 5xx answers).
PASSING = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                     "ServiceUnavailable"})  # fmt: skip


def _mapped(exc: Exception, what: str) -> Exception:
    """One table from botocore's errors to bgjobs's: what a setting must fix (a missing bucket,
    refused or missing credentials, the wrong region) fails once, naming the setting; throttling,
    5xx answers and an endpoint that does not answer are transient; any other 4xx is permanent.
    docs/exports.md shows the table."""
    from botocore import exceptions as boto

    if isinstance(exc, boto.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in SETTINGS:
            return PermanentError(f"S3 {what}: {code}; check {SETTINGS[code]}")
        if status >= 500 or code in PASSING:
            return TransientError(f"S3 {what}: {code or status}")
        return PermanentError(f"S3 {what}: {code or status}: {exc}")
    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
        return PermanentError(f"S3 {what}: no credentials ({exc}); set BGJOBS_S3__ACCESS_KEY_ID and "
                              "BGJOBS_S3__SECRET_ACCESS_KEY, or give the process an AWS role")  # fmt: skip
    if isinstance(exc, boto.EndpointConnectionError | boto.ConnectTimeoutError | boto.ReadTimeoutError):
        return TransientError(f"S3 {what}: the endpoint did not answer ({type(exc).__name__}); check "
                              "BGJOBS_S3__ENDPOINT_URL if this lasts")  # fmt: skip
    if isinstance(exc, boto.ParamValidationError):
        return PermanentError(f"S3 {what}: {exc}")
    if isinstance(exc, boto.BotoCoreError):
        return TransientError(f"S3 {what}: {type(exc).__name__}: {exc}")
    return exc


class S3Storage(Storage):
    """Objects in one bucket, under an optional key prefix."""

    def __init__(
        self, *, bucket: str, prefix: str = "", region: str | None = None, endpoint_url: str | None = None,
        access_key_id: str | None = None, secret_access_key: str | None = None,
    ) -> None:  # fmt: skip
        boto3, config = _boto3()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = boto3.client(
            "s3", region_name=region, endpoint_url=endpoint_url, aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config.Config(retries={"max_attempts": 3, "mode": "standard"}),
        )  # fmt: skip

    @classmethod
    def from_settings(cls, settings: Any) -> S3Storage:
        s = settings.s3
        if not s.bucket:
            raise ConfigurationError("BGJOBS_S3__BUCKET is not set")
        return cls(
            bucket=s.bucket, prefix=s.prefix, region=s.region, endpoint_url=s.endpoint_url,
            access_key_id=s.access_key_id,
            secret_access_key=s.secret_access_key.get_secret_value() if s.secret_access_key else None,
        )  # fmt: skip

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _put(self, *, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        name = self._key(key)
        digest, size = hashlib.sha256(), 0
        try:
            upload = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=name, ContentType=content_type
            )
        except Exception as exc:
            raise _mapped(exc, f"starting the upload of {name}") from exc
        upload_id, buffer = upload["UploadId"], bytearray()
        parts: list[dict[str, Any]] = []

        def send(data: bytes) -> None:
            number = len(parts) + 1
            answer = self.client.upload_part(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                             PartNumber=number, Body=data)  # fmt: skip
            parts.append({"ETag": answer["ETag"], "PartNumber": number})

        try:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                if len(buffer) >= PART:
                    send(bytes(buffer))
                    buffer.clear()
            if buffer or not parts:
                send(bytes(buffer))
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException as exc:
            with contextlib.suppress(Exception):  # else the bucket's lifecycle rule removes the parts
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            raise _mapped(exc, f"uploading {name}") if isinstance(exc, Exception) else exc from exc
        return StoredObject(key=key, size=size, sha256=digest.hexdigest(), content_type=content_type)

    def _open(self, *, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except Exception as exc:
            raise _mapped(exc, f"reading {key}") from exc
        return iter(body.iter_chunks(1 << 16))

    def _delete(self, *, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise _mapped(exc, f"deleting {key}") from exc

    def _url(self, *, key: str, expires_in: int) -> str:
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_in
        ))  # fmt: skip
