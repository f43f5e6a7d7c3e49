"""The S3 storage adapter against a local S3-compatible server (moto's server mode on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from bgjobs import exports, wiring
from bgjobs.adapters.s3 import PART, S3Storage
from bgjobs.embedded import free_port
from bgjobs.errors import PermanentError, TransientError
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


@contextlib.contextmanager
def s3_answering(status: int, code: str) -> Iterator[str]:
    """An endpoint on 127.0.0.1 that answers every request as S3 answers with that error."""
    body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>scripted</Message></Error>".encode()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


#: Each of S3's answers and what it must become: (status, code) -> (error, what the line names).
ANSWERS = {
    (403, "InvalidAccessKeyId"): (PermanentError, "check BGJOBS_S3__ACCESS_KEY_ID"),
    (403, "SignatureDoesNotMatch"): (PermanentError, "check BGJOBS_S3__SECRET_ACCESS_KEY"),
    (403, "AccessDenied"): (PermanentError, "and the bucket's policy"),
    (400, "AuthorizationHeaderMalformed"): (PermanentError, "check BGJOBS_S3__REGION"),
    (400, "InvalidArgument"): (PermanentError, "InvalidArgument"),
    (400, "ExpiredToken"): (PermanentError, "BGJOBS_S3__ACCESS_KEY_ID and BGJOBS_S3__SECRET_ACCESS_KEY"),
    (503, "SlowDown"): (TransientError, "SlowDown"),
    (500, "InternalError"): (TransientError, "InternalError"),
    (503, "ServiceUnavailable"): (TransientError, "ServiceUnavailable"),
    (400, "Throttling"): (TransientError, "Throttling"),
    (400, "ThrottlingException"): (TransientError, "ThrottlingException"),
    (400, "RequestTimeout"): (TransientError, "RequestTimeout"),
}


@pytest.mark.parametrize("answer", list(ANSWERS), ids=[code for _, code in ANSWERS])
def test_each_s3_answer_is_a_lasting_or_a_passing_failure_as_the_table_says(answer: tuple[int, str]) -> None:
    error, named = ANSWERS[answer]
    with s3_answering(*answer) as endpoint:
        storage = S3Storage(bucket="reports", endpoint_url=endpoint, **CREDENTIALS)
        with pytest.raises(error) as raised:
            storage.put(key="x.csv", chunks=[b"x"])
    assert named in str(raised.value)


def test_a_missing_bucket_a_missing_object_and_a_gone_endpoint_on_a_real_server(s3_url: str) -> None:
    with pytest.raises(PermanentError, match=r"NoSuchBucket; check BGJOBS_S3__BUCKET"):
        S3Storage(bucket="no-such-bucket", endpoint_url=s3_url, **CREDENTIALS).put(key="x.csv", chunks=[b"x"])
    bucket = f"bgjobs-{next(_buckets)}"
    boto3.client("s3", endpoint_url=s3_url, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=bucket)  # fmt: skip
    with pytest.raises(PermanentError, match=r"NoSuchKey"):
        list(S3Storage(bucket=bucket, endpoint_url=s3_url, **CREDENTIALS).open(key="missing.csv"))
    gone = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TransientError, match=r"the endpoint did not answer .*BGJOBS_S3__ENDPOINT_URL"):
        S3Storage(bucket=bucket, endpoint_url=gone, **CREDENTIALS).put(key="x.csv", chunks=[b"x"])


def test_no_credentials_at_all_fail_once_naming_the_settings(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup off this host
    storage = S3Storage(bucket="reports", endpoint_url=s3_url, region="us-east-1")
    with pytest.raises(PermanentError, match=r"no credentials .*BGJOBS_S3__ACCESS_KEY_ID"):
        storage.put(key="x.csv", chunks=[b"x"])
