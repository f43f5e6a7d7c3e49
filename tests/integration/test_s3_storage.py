"""The S3 storage adapter against a local S3-compatible server (moto's server mode on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Callable, Iterator

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from bgjobs import exports, wiring
from bgjobs.adapters.s3 import PART, S3Storage
from bgjobs.embedded import free_port
from bgjobs.errors import PermanentError
from bgjobs.testing import JobsHarness
from tests.support import export_datasets

_buckets = itertools.count()
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def storage(s3_url: str) -> S3Storage:
    bucket = f"bgjobs-{next(_buckets)}"
    boto3.client("s3", endpoint_url=s3_url, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=bucket)  # fmt: skip
    return S3Storage(bucket=bucket, prefix="tenant-a", endpoint_url=s3_url, **CREDENTIALS)


def test_a_large_object_is_uploaded_in_parts_and_read_back(storage: S3Storage) -> None:
    # Given 20 MiB in 1 MiB chunks: three parts of at most 8 MiB
    chunk = bytes(range(256)) * 4096
    stored = storage.put(
        key="exports/big.bin", chunks=(chunk for _ in range(20)), content_type="application/x"
    )

    data = b"".join(storage.open(key="exports/big.bin"))
    assert stored.size == len(data) == 20 * len(chunk)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    # it lives under the adapter's prefix, and a presigned URL serves it
    head = storage.client.head_object(Bucket=storage.bucket, Key="tenant-a/exports/big.bin")
    assert head["ContentLength"] == len(data) and head["ContentType"] == "application/x"
    assert len(data) > PART
    url = storage.url(key="exports/big.bin", expires_in=600)
    assert "Signature" in url or "X-Amz-Signature" in url
    assert httpx.get(url).content == data


def test_a_failed_upload_leaves_no_object(storage: S3Storage) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"x" * (PART + 10)  # one part is sent
        raise RuntimeError("the export died")

    with pytest.raises(RuntimeError, match="the export died"):
        storage.put(key="exports/half.csv", chunks=chunks(), content_type="text/csv")
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix="tenant-a/")
    assert listed.get("KeyCount", 0) == 0
    assert storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", []) == []


def test_an_empty_object_and_delete(storage: S3Storage) -> None:
    stored = storage.put(key="empty.csv", chunks=[], content_type="text/csv")
    assert stored.size == 0 and b"".join(storage.open(key="empty.csv")) == b""
    storage.delete(key="empty.csv")
    with pytest.raises(PermanentError, match="NoSuchKey"):
        b"".join(storage.open(key="empty.csv"))


def test_an_export_streams_to_s3(harness: Callable[..., JobsHarness], storage: S3Storage) -> None:
    jobs = harness()
    wiring.configure(storage=storage)
    assert "counted" in exports.registered_datasets(), export_datasets.__name__
    export_id = exports.request("counted", fmt="jsonl", filters={"rows": 50_000}, gzip=True)
    jobs.drain()

    info = exports.get(export_id)
    assert info.status == "done" and info.rows == 50_000
    data = b"".join(storage.open(key=info.storage_key))
    assert hashlib.sha256(data).hexdigest() == info.sha256
    import gzip

    lines = io.BytesIO(gzip.decompress(data)).read().splitlines()
    assert len(lines) == 50_000 and lines[-1] == b'{"n": 49999, "label": "row 49999", "amount": "499.99"}'
    assert httpx.get(info.url or "").content == data
