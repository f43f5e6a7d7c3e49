"""The SFTP storage adapter against a real sshd on 127.0.0.1: key authentication, host-key
checking, atomic publish, and a worker SIGKILLed mid-upload."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgjobs import exports
from bgjobs.adapters.sftp import SftpStorage
from bgjobs.errors import PermanentError, TransientError
from tests.support.export_datasets import finish_after_kill
from tests.support.sshd import SshServer, ssh_server
from tests.support.workers import WorkerProcess, use_environment, wait_for


@pytest.fixture
def sshd() -> Iterator[SshServer]:
    with ssh_server() as server:
        yield server


def _storage(server: SshServer, **overrides: object) -> SftpStorage:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": server.user,
        "key_file": str(server.key_file),
        "known_hosts": str(server.known_hosts),
        "root": str(server.root),
    }
    return SftpStorage(**{**values, **overrides})  # type: ignore[arg-type]


def test_an_object_is_written_read_back_linked_and_deleted(sshd: SshServer) -> None:
    storage = _storage(sshd)
    body = [bytes([n % 256]) * 100_000 for n in range(30)]  # 3 MB in chunks
    stored = storage.put(key="reports/2025/06/settlement.csv", chunks=iter(body), content_type="text/csv")
    whole = b"".join(body)
    assert (stored.size, stored.sha256) == (len(whole), hashlib.sha256(whole).hexdigest())
    on_disk = sshd.root / "reports/2025/06/settlement.csv"
    assert on_disk.read_bytes() == whole
    assert [p.name for p in on_disk.parent.iterdir()] == ["settlement.csv"]  # no temporary file left
    assert b"".join(storage.open(key="reports/2025/06/settlement.csv")) == whole
    link = storage.url(key="reports/2025/06/settlement.csv")
    assert link == f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{sshd.root}/reports/2025/06/settlement.csv"
    assert _storage(sshd, base_url="https://files.example.com/exports/").url(key="a/b.csv") == (
        "https://files.example.com/exports/a/b.csv"
    )
    storage.delete(key="reports/2025/06/settlement.csv")
    storage.delete(key="reports/2025/06/settlement.csv")  # a missing object is not an error
    assert not on_disk.exists()
    with pytest.raises(PermanentError, match="no object"):
        list(storage.open(key="reports/missing.csv"))


def test_an_unknown_or_changed_host_key_is_refused_naming_the_setting(
    sshd: SshServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(
        PermanentError, match=r"is not in .*known_hosts; add its host key there \(BGJOBS_SFTP__KNOWN"
    ):
        _storage(sshd, known_hosts=str(empty)).put(key="x.csv", chunks=[b"x"])
    other = tmp_path / "other_key"
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    with pytest.raises(PermanentError, match="does not match"):
        _storage(sshd, known_hosts=str(changed)).put(key="x.csv", chunks=[b"x"])
    assert list(sshd.root.iterdir()) == []  # nothing was written to an unverified host


def test_a_wrong_key_is_a_clear_refusal_and_a_dead_server_is_transient(
    sshd: SshServer, tmp_path: Path
) -> None:
    import subprocess

    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(PermanentError, match=r"was refused .*check BGJOBS_SFTP__KEY_FILE"):
        _storage(sshd, key_file=str(stranger)).put(key="x.csv", chunks=[b"x"])
    sshd.process.kill()
    sshd.process.wait()
    with pytest.raises(TransientError, match=r"SFTP upload of x\.csv"):
        _storage(sshd).put(key="x.csv", chunks=[b"x"])


ROWS = 20_000


def test_a_worker_killed_mid_upload_leaves_nothing_under_the_final_name(
    sshd: SshServer, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "BGJOBS_BROKER_URL": redis_url,
        "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'exports.db'}",
        "BGJOBS_JOBS": '["tests.support.export_datasets"]',
        "BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS": "2000",
        "BGJOBS_WORKER__MAINTENANCE_INTERVAL_MS": "500",
        "BGJOBS_METRICS__ENABLED": "false",
        **sshd.env(),
    }
    use_environment(monkeypatch, env)
    # 20,000 rows, pausing 0.1 s every 1,000: about 2 s of uploading
    export_id = exports.request("counted", filters={"rows": ROWS, "pause": 0.1})
    final = sshd.root / exports.get(export_id).storage_key

    def partials() -> list[Path]:
        return list(final.parent.glob(".*.part")) if final.parent.exists() else []

    worker = WorkerProcess(env, processes=1, threads=2).start()
    try:
        wait_for(lambda: any(p.stat().st_size > 0 for p in partials()), timeout=60, what="bytes uploaded")
    finally:
        worker.kill()
    # Killed mid-upload: a temporary file on the server, never the final one
    assert not final.exists() and len(partials()) == 1
    assert exports.get(export_id).status == "running"

    info = finish_after_kill(env, export_id, final, ROWS)
    assert partials() == []  # the retry removed what the killed upload left
    assert info.url == f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{final}"


def test_a_worker_paused_past_its_claim_leaves_the_export_to_the_worker_that_took_it_over(
    sshd: SshServer, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal

    from bgjobs import notifications
    from bgjobs.exports._formats import encode
    from bgjobs.notifications import Recipient
    from tests.support.export_datasets import counted

    env = {
        "BGJOBS_BROKER_URL": redis_url,
        "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'exports.db'}",
        "BGJOBS_JOBS": '["tests.support.export_datasets"]',
        "BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS": "2000",
        "BGJOBS_WORKER__MAINTENANCE_INTERVAL_MS": "500",
        "BGJOBS_METRICS__ENABLED": "false",
        "BGJOBS_MAILER": "console",
        **sshd.env(),
    }
    use_environment(monkeypatch, env)
    asker = Recipient(user_id="u1", email="ops@example.com")
    export_id = exports.request("counted", filters={"rows": ROWS, "pause": 0.1}, requested_by=asker)
    final = sshd.root / exports.get(export_id).storage_key
    paused = WorkerProcess(env, processes=1, threads=2).start()
    other = WorkerProcess(env, processes=1, threads=2)
    try:
        wait_for(lambda: any(p.stat().st_size > 0 for p in final.parent.glob(".*.part")), timeout=60,
                 what="bytes uploaded")  # fmt: skip
        assert paused.proc is not None
        os.killpg(paused.proc.pid, signal.SIGSTOP)  # held up mid-upload, past its heartbeat and claim
        other.start()  # takes the export over once the paused worker's heartbeat and claim run out
        wait_for(lambda: exports.get(export_id).status == "done", timeout=120, what="the export to finish")
        os.killpg(paused.proc.pid, signal.SIGCONT)
        wait_for(lambda: "took it over while this one was held up" in paused.output(), timeout=60,
                 what="the resumed worker to find its export taken over")  # fmt: skip
        wait_for(lambda: notifications.deliveries(template="export_ready", status="sent"), timeout=60,
                 what="the export_ready email")  # fmt: skip
    finally:
        paused.kill()
        other.kill()
    # The export is the second worker's: done, whole, no error, one email, none saying it failed
    expected = b"".join(encode("csv", counted(period=None, filters={"rows": ROWS}), ("n", "label", "amount")))
    after = exports.get(export_id)
    assert final.read_bytes() == expected
    assert (after.status, after.error, after.sha256) == ("done", None, hashlib.sha256(expected).hexdigest())
    assert len(notifications.deliveries(template="export_ready")) == 1
    assert notifications.deliveries(template="export_failed") == []


def _encrypted_key(sshd: SshServer, tmp_path: Path) -> str:
    import subprocess

    key = tmp_path / "encrypted"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "right", "-f", str(key)], check=True)
    with (sshd.root.parent / "authorized_keys").open("a") as keys:
        keys.write((tmp_path / "encrypted.pub").read_text())
    return str(key)


#: Each lasting failure: the storage settings that cause it, and what its one line must name.
LASTING = {
    "a wrong key passphrase": ({"key_passphrase": "wrong"}, "BGJOBS_SFTP__KEY_PASSPHRASE"),
    "an encrypted key without its passphrase": (
        {}, "is encrypted; set its passphrase in BGJOBS_SFTP__KEY_PASSPHRASE"),
    "a missing key file": (
        {"key_file": "/nonexistent/key"}, "no key file at /nonexistent/key (BGJOBS_SFTP__KEY_FILE)"),
    "a root the user may not write": ({"root": "/sys/bgjobs-test"}, "may not write there"),
    "a root that cannot be made": (
        {"root": "/proc/1/bgjobs-test"}, "cannot be made; check BGJOBS_SFTP__ROOT (/proc/1/bgjobs-test)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(LASTING))
def test_a_lasting_failure_fails_once_naming_its_setting(sshd: SshServer, tmp_path: Path, case: str) -> None:
    overrides, named = LASTING[case]
    if "key" in case and "missing" not in case:
        overrides = {"key_file": _encrypted_key(sshd, tmp_path), **overrides}
    with pytest.raises(PermanentError) as raised:
        _storage(sshd, **overrides).put(key="reports/x.csv", chunks=[b"x"])
    assert named in str(raised.value)
    if "root" in case:
        assert "BGJOBS_SFTP__ROOT" in str(raised.value)


def test_a_name_near_the_limit_uploads_and_one_past_it_is_refused_once(sshd: SshServer) -> None:
    storage = _storage(sshd)
    near = "n" * 251 + ".csv"  # 255 bytes: the suffix of a temporary name would once have broken it
    storage.put(key=f"reports/{near}", chunks=[b"a,b\n"])
    assert (sshd.root / "reports" / near).read_bytes() == b"a,b\n"
    with pytest.raises(PermanentError, match=r"file name is 256 bytes, and SFTP servers take at most 255"):
        storage.put(key=f"reports/{'n' * 252}.csv", chunks=[b"a,b\n"])


def test_a_frozen_server_fails_the_attempt_within_the_timeout(sshd: SshServer) -> None:
    import os
    import signal
    import time

    # Given a server that accepts connections and never answers (its process stopped)
    os.kill(sshd.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(TransientError, match=r"did not answer within 2 s \(BGJOBS_SFTP__TIMEOUT_S\)"):
            _storage(sshd, timeout_s=2.0).put(key="x.csv", chunks=[b"x"])
        # Then the attempt fails at the timeout, not at the sum of paramiko's own (3 of them)
        assert time.monotonic() - started < 4.5
    finally:
        os.kill(sshd.process.pid, signal.SIGCONT)


def test_accepting_unknown_hosts_pins_the_first_key_in_a_known_hosts_file_it_makes(
    sshd: SshServer, tmp_path: Path
) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    _storage(sshd, known_hosts=str(known), accept_unknown_host=True).put(key="x.csv", chunks=[b"x"])
    # The key is pinned: a storage that accepts no unknown host now trusts this one
    assert f"[127.0.0.1]:{sshd.port}" in known.read_text()
    _storage(sshd, known_hosts=str(known)).put(key="y.csv", chunks=[b"y"])
    assert (sshd.root / "y.csv").read_bytes() == b"y"


def test_a_link_under_a_relative_root_is_under_the_home_directory(sshd: SshServer) -> None:
    storage = _storage(sshd, root="exports")
    assert storage.url(key="a/b.csv") == f"sftp://{sshd.user}@127.0.0.1:{sshd.port}/~/exports/a/b.csv"


def test_uploads_killed_long_ago_leave_no_part_files_after_the_daily_cleanup(sshd: SshServer) -> None:
    import os
    import time

    old = sshd.root / "reports" / "2025" / ".0123456789ab.0123456789ab.part"
    older_style = sshd.root / "reports" / ".settlement.csv.0123456789ab.part"
    fresh = sshd.root / "reports" / ".ba9876543210.ba9876543210.part"
    kept = sshd.root / "reports" / "settlement.csv"
    for path in (old, older_style, fresh, kept):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    day_ago = time.time() - 90_000
    for path in (old, older_style, kept):
        os.utime(path, (day_ago, day_ago))
    assert _storage(sshd).remove_stale_parts(older_than_s=86_400) == 2
    assert not old.exists() and not older_style.exists() and fresh.exists() and kept.exists()


def test_two_uploads_of_one_key_at_once_both_finish_and_leave_one_whole_file(sshd: SshServer) -> None:
    """A worker held up past its claim resumes its upload while the worker that took the export
    over uploads the same key: neither removes the other's temporary file."""
    import threading

    storage = _storage(sshd)
    other_done = threading.Event()
    first_body: list[bytes] = []

    def still_writing() -> Iterator[bytes]:
        while not other_done.is_set():  # writes on (its file stays fresh) while the other uploads
            chunk = bytes([len(first_body) % 256]) * 64_000
            first_body.append(chunk)
            yield chunk
            other_done.wait(0.05)

    errors: list[BaseException] = []

    def first() -> None:
        try:
            storage.put(key="exports/e1.csv", chunks=still_writing(), content_type="text/csv")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        wait_for(lambda: len(first_body) > 2, timeout=30, what="the first upload under way")
        second = [b"second upload\n"] * 1000
        storage.put(key="exports/e1.csv", chunks=iter(second), content_type="text/csv")
    finally:
        other_done.set()
        thread.join(timeout=60)
    assert errors == []
    final = sshd.root / "exports/e1.csv"
    assert final.read_bytes() == b"".join(first_body)  # renamed last, whole
    assert [p.name for p in final.parent.iterdir()] == ["e1.csv"]
