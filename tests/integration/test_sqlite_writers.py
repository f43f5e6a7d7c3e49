"""SQLite's writers: a process's threads queue on a lock of their own, and the one at the head asks
SQLite for the write lock until another process's writer is done (bgjobs.engines._Writers)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, exc, text

from bgjobs import engines

WRITER = """
import sys, threading
from sqlalchemy import text
from bgjobs.engines import engine_for
engine = engine_for(sys.argv[1])
def write(thread):
    for i in range(100):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t (who, n) VALUES (:w, :n)"), {"w": f"child-{thread}", "n": i})
threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print("done", flush=True)
"""

HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO t (who, n) VALUES ('holder', 0)")
print("holding", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("committed", flush=True)
"""


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'writers.db'}"
    with engines.engine_for(url).begin() as conn:
        conn.execute(text("CREATE TABLE t (who TEXT, n INTEGER)"))
    yield url
    engines.engine_for(url).dispose()


def child(script: str, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, url.removeprefix("sqlite:///")
                             if script is HOLDER else url],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM t")).scalar_one())


def test_eight_threads_in_each_of_two_processes_all_commit(url: str) -> None:
    engine = engines.engine_for(url)
    other = child(WRITER, url)
    errors: list[BaseException] = []

    def write(thread: int) -> None:
        try:
            for i in range(100):
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO t (who, n) VALUES (:w, :n)"), {"w": f"t{thread}", "n": i})
        except BaseException as e:
            errors.append(e)

    try:
        threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out, _ = other.communicate(timeout=120)
    finally:
        other.kill()
    assert errors == [] and out.strip() == "done" and other.returncode == 0
    assert count(engine) == 1_600


def test_a_writer_that_fails_or_closes_gives_the_lock_back(url: str) -> None:
    engine = engines.engine_for(url)
    with pytest.raises(ZeroDivisionError), engine.begin() as conn:
        conn.execute(text("INSERT INTO t (who, n) VALUES ('rolled back', 0)"))
        raise ZeroDivisionError
    conn = engine.connect()
    conn.begin()
    conn.execute(text("INSERT INTO t (who, n) VALUES ('closed', 0)"))
    conn.invalidate()  # the driver's connection is closed mid-transaction
    conn.close()

    done = threading.Event()

    def write() -> None:
        with engine.begin() as c:
            c.execute(text("INSERT INTO t (who, n) VALUES ('after', 1)"))
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert done.wait(timeout=10), "the next writer never got the lock"
    with engine.connect() as c:
        assert [tuple(r) for r in c.execute(text("SELECT who, n FROM t"))] == [("after", 1)]


def test_a_writer_waits_for_another_process_and_gives_up_after_the_busy_timeout(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engines.engine_for(url)
    holder = child(HOLDER, url)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "holding"
        monkeypatch.setattr(engines, "_BUSY_TIMEOUT_S", 1)
        with pytest.raises(exc.OperationalError, match="database is locked"), engine.begin() as conn:
            conn.execute(text("INSERT INTO t (who, n) VALUES ('too soon', 0)"))
        monkeypatch.undo()

        # Now the holder commits while this process's writer is asking for the lock
        waiting = threading.Thread(target=lambda: holder.communicate("go\n", timeout=60), daemon=True)
        waiting.start()
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t (who, n) VALUES ('after', 1)"))
            # SQLite's own wait is back for the statements that follow
            assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() == 30_000
        waiting.join(timeout=60)
    finally:
        holder.kill()
        holder.wait()
    with engine.connect() as c:
        found = sorted(tuple(r) for r in c.execute(text("SELECT who, n FROM t")))
    assert found == [("after", 1), ("holder", 0)]
