from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from bgjobs.adapters.localfs import LocalFileStorage
from bgjobs.adapters.memory import MemoryMailer, MemoryPaymentGateway, MemoryStorage
from bgjobs.errors import PermanentError, TransientError
from bgjobs.money import Money
from bgjobs.ports import EmailMessage, Mailer, PayoutRequest, SmsMessage, Storage


def test_ports_are_abstract() -> None:
    with pytest.raises(TypeError):
        Mailer()  # type: ignore[abstract]
    with pytest.raises(TypeError):
        Storage()  # type: ignore[abstract]


def test_port_methods_are_keyword_only() -> None:
    mailer = MemoryMailer()
    message = EmailMessage(to=("a@example.com",), subject="s", text="t")
    with pytest.raises(TypeError):
        mailer.send(message)  # type: ignore[misc]


def test_bad_addresses_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValidationError, match="to"):
        EmailMessage(to=("not-an-address",), subject="s", text="t")
    with pytest.raises(ValidationError, match="to"):
        SmsMessage(to="0044 7700", body="hi")


def test_memory_mailer_sends_once_per_idempotency_key() -> None:
    mailer = MemoryMailer()
    message = EmailMessage(to=("a@example.com",), subject="s", text="t", idempotency_key="k1")
    first = mailer.send(message=message)
    second = mailer.send(message=message)
    assert len(mailer.sent) == 1
    assert second.provider_message_id == first.provider_message_id
    assert second.duplicate and not first.duplicate


def test_memory_adapters_fail_on_demand() -> None:
    mailer = MemoryMailer()
    mailer.fail_next(TransientError("vendor down"), times=2)
    message = EmailMessage(to=("a@example.com",), subject="s", text="t")
    for _ in range(2):
        with pytest.raises(TransientError):
            mailer.send(message=message)
    mailer.send(message=message)
    assert len(mailer.sent) == 1


def test_memory_gateway_pays_once_per_key() -> None:
    gateway = MemoryPaymentGateway()
    request = PayoutRequest(
        payee_id="v1", amount=Money.from_minor(5000, "USD"), idempotency_key="payout:r1:v1:USD"
    )
    a = gateway.payout(request=request)
    b = gateway.payout(request=request)
    assert a.transaction_id == b.transaction_id
    assert len(gateway.payouts) == 1


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "", "a//b", "a\\b", "./a"])
@pytest.mark.parametrize("storage_kind", ["memory", "localfs"])
def test_storage_refuses_keys_that_escape(key: str, storage_kind: str, tmp_path: Path) -> None:
    storage: Storage = MemoryStorage() if storage_kind == "memory" else LocalFileStorage(tmp_path / "root")
    with pytest.raises(PermanentError):
        storage.put(key=key, chunks=[b"x"])
    assert not (tmp_path / "etc").exists()


def test_localfs_refuses_a_symlink_out_of_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "out").symlink_to(tmp_path)
    with pytest.raises(PermanentError, match="escapes"):
        LocalFileStorage(root).put(key="out/x.txt", chunks=[b"x"])


def test_localfs_streams_in_and_out_atomically(tmp_path: Path) -> None:
    storage = LocalFileStorage(tmp_path, base_url="https://files.example.com/exports")
    chunks = [bytes([i]) * 65536 for i in range(20)]
    stored = storage.put(key="exports/2025/report.csv", chunks=iter(chunks), content_type="text/csv")
    data = b"".join(chunks)
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert b"".join(storage.open(key="exports/2025/report.csv")) == data
    assert (
        storage.url(key="exports/2025/report.csv")
        == "https://files.example.com/exports/exports/2025/report.csv"
    )
    storage.delete(key="exports/2025/report.csv")
    with pytest.raises(PermanentError):
        storage.open(key="exports/2025/report.csv")


def test_localfs_leaves_nothing_under_the_key_when_the_writer_fails(tmp_path: Path) -> None:
    storage = LocalFileStorage(tmp_path)

    def chunks() -> object:
        yield b"half"
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError):
        storage.put(key="a/b.csv", chunks=chunks())  # type: ignore[arg-type]
    assert list((tmp_path / "a").iterdir()) == []


@pytest.mark.parametrize(
    ("root", "key", "error", "named"),
    [
        ("/sys/bgjobs-test", "x.csv", PermanentError, "check BGJOBS_LOCALFS__ROOT and its permissions"),
        (None, "n" * 252 + ".csv", PermanentError, "the name is too long for the file system"),
    ],
    ids=["a root it may not write", "a name past the limit"],
)
def test_localfs_fails_once_on_what_only_a_setting_or_the_key_fixes(
    tmp_path: Path, root: str | None, key: str, error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        LocalFileStorage(root or tmp_path).put(key=key, chunks=[b"x"])


def test_localfs_writes_a_name_at_the_file_system_s_limit(tmp_path: Path) -> None:
    key = "n" * 251 + ".csv"  # 255 bytes: the temporary name's suffix once made it too long
    LocalFileStorage(tmp_path).put(key=key, chunks=[b"a,b\n"])
    assert (tmp_path / key).read_bytes() == b"a,b\n"


@pytest.mark.parametrize(
    ("code", "error", "named"),
    [(errno.ENOSPC, TransientError, "the disk under .* is full"),
     (errno.EROFS, PermanentError, "BGJOBS_LOCALFS__ROOT")],
    ids=["a full disk passes", "a read-only file system lasts"],
)
def test_localfs_s_table_rows_no_test_machine_can_stage(
    tmp_path: Path, code: int, error: type[Exception], named: str
) -> None:
    from bgjobs.adapters.localfs import _classified

    with pytest.raises(error, match=named), _classified("writing x.csv", tmp_path):
        raise OSError(code, os.strerror(code))
