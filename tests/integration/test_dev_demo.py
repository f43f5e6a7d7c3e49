"""README's first command runs `bgjobs dev`: it starts everything, does real work of every family, stops."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import spawn
from tests.support.workers import ROOT, wait_for


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BGJOBS_")}


def test_bgjobs_dev_does_real_work_of_every_family_and_exits_cleanly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bgjobs.cli", "dev"], env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=240,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out
    assert "NOT" not in out, out
    # The summary reads on its own: the worker's and scheduler's logs went to their file
    summary = out.split("What happened:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(summary) == 8 and all(line.startswith("  ok  ") for line in summary), out
    assert " INFO " not in out and "[INFO]" not in out, out
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
    assert 'bgjobs_jobs_total{actor="payouts.pay_batch",family="payouts",outcome="succeeded"} 2.0' in out
    assert 'bgjobs_jobs_total{actor="demo_welcome",family="notifications",outcome="succeeded"} 6.0' in out
    assert re.search(r"metrics: http://127\.0\.0\.1:\d+/metrics", out)
    redis_url = re.search(r"bgjobs dev: redis (\S+),", out).group(1)  # type: ignore[union-attr]
    assert _started_by_it(redis_url) == []


def _as_a_background_job() -> None:
    """What a shell does for `cmd &` and a script's children inherit: SIGINT and SIGQUIT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_everything_bgjobs_dev_started(stop: signal.Signals) -> None:
    # Given `bgjobs dev --keep` started as a background job (SIGINT ignored), as CI and scripts do
    proc = spawn(
        [sys.executable, "-m", "bgjobs.cli", "dev", "--keep"], env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, preexec_fn=_as_a_background_job,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip().startswith("export BGJOBS_BROKER_URL="):  # the line --keep prints to paste
            break
    port = int(re.search(r"redis://127\.0\.0\.1:(\d+)/", lines[0]).group(1))  # type: ignore[union-attr]
    started = _descendants(proc.pid)
    # redis, the worker command, its 2 processes, the scheduler, the console
    assert len(started) >= 6, started
    console = re.search(r"console: (http://127\.0\.0\.1:\d+/)", "".join(lines)).group(1)  # type: ignore[union-attr]
    wait_for(lambda: _get_json(console + "api/v1/overview"), timeout=30, what="the console")
    overview = _get_json(console + "api/v1/overview")
    assert isinstance(overview, dict) and len(overview["workers"]) == 2  # the demo's two worker processes
    workdir = Path(re.search(r"sqlite (\S+)/bgjobs\.db", lines[0]).group(1))  # type: ignore[union-attr]
    assert workdir.is_dir()
    # When it is sent SIGINT (Ctrl-C) or SIGTERM
    proc.send_signal(stop)
    # Then it exits cleanly, and everything it started is gone (the fixture kills what is left)
    assert proc.wait(timeout=60) == 0
    wait_for(lambda: not [p for p in started if _alive(p)], timeout=30, what="what it started to exit")
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # its Redis is gone
    assert not workdir.exists()  # and its temp directory


def _get_json(url: str) -> object:
    import httpx

    try:
        answer = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None
    return answer.json() if answer.status_code == 200 else None


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


def _started_by_it(redis_url: str) -> list[int]:
    """Live processes that run with this demo's broker URL: only the ones that demo started."""
    mark = f"BGJOBS_BROKER_URL={redis_url}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark in environ.read_bytes().split(b"\0") and _alive(int(environ.parent.name)):
                found.append(int(environ.parent.name))
        except OSError:  # gone, or not ours to read
            continue
    return found
