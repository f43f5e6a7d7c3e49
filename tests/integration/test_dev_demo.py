"""README's first command runs `bgjobs dev`: it starts everything, does real work of every family, stops."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.workers import ROOT


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BGJOBS_")}


def test_bgjobs_dev_does_real_work_of_every_family_and_exits_cleanly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bgjobs.cli", "dev"], env=_env(), cwd=ROOT, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "NOT" not in out, out
    assert "ok  notifications: booking.created -> booking_confirmation by email, push, sms" in out
    assert re.search(r"ok  webhooks: booking.created -> http://127\.0\.0\.1:\d+/hooks: booking.created "
                     r"\(msg_\w+, signature verified\)\n", out), out  # fmt: skip
    assert "ok  outbox: 3 earnings recorded in one transaction" in out
    assert re.search(r"ok  payouts: payouts.weekly weekly:\d{4}-W\d\d: 2 vendors paid \{'USD': '720.00'\}, "
                     r"1 carried forward", out), out  # fmt: skip
    assert re.search(r"ok  payouts: receipts emailed to v1 \(rcpt_\w+, 480.00 USD\), "
                     r"v2 \(rcpt_\w+, 240.00 USD\)", out), out  # fmt: skip
    exported = re.search(r"ok  exports: payouts.settlement -> (\S+\.csv) \(1 rows, \d+ bytes\); ops@", out)
    assert exported, out
    assert not Path(exported.group(1)).exists()  # its temp dir is removed at exit
    assert "ok  cleanup: cleanup.daily deleted 3 bgjobs_runs rows older than 90 days" in out
    assert "ok  scheduler + events: demo.report (cron, @every 5s) counts 5 welcome emails" in out
    assert 'bgjobs_jobs_total{actor="payouts.pay",family="payouts",outcome="succeeded"} 2.0' in out
    assert 'bgjobs_jobs_total{actor="demo_welcome",family="notifications",outcome="succeeded"} 6.0' in out
    assert re.search(r"metrics: http://127\.0\.0\.1:\d+/metrics", out)
    assert _nothing_left_running()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_everything_bgjobs_dev_started(stop: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgjobs.cli", "dev", "--keep"], env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip().startswith("export BGJOBS_BROKER_URL="):  # the line --keep prints to paste
                break
        port = int(re.search(r"redis://127\.0\.0\.1:(\d+)/", lines[0]).group(1))  # type: ignore[union-attr]
        started = _descendants(proc.pid)
        assert len(started) >= 5, started  # redis, the worker command, its 2 processes, the scheduler
        workdir = Path(re.search(r"sqlite (\S+)/bgjobs\.db", lines[0]).group(1))  # type: ignore[union-attr]
        assert workdir.is_dir()
        proc.send_signal(stop)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
    deadline = time.monotonic() + 10
    while [p for p in started if _alive(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in started if _alive(p)] == []
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # its Redis is gone
    assert not workdir.exists()  # and its temp directory


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descendants(root: int) -> list[int]:
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    found, frontier = [], {root}
    while frontier:
        children = [p for p in pids if _parent(p) in frontier and p not in found]
        found += children
        frontier = set(children)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _nothing_left_running() -> bool:
    """No worker command or scheduler is alive (the suite runs one test at a time)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        running = "dramatiq bgjobs.actors" in text or "bgjobs.cli scheduler" in text
        if running and _alive(int(cmdline.parent.name)):
            return False
    return True
