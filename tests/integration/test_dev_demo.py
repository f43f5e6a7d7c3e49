"""README's first command runs `bgjobs dev`: it must start everything, do the sample work, and stop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.workers import ROOT


def test_bgjobs_dev_does_real_work_of_every_shipped_kind_and_exits_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGJOBS_")}
    done = subprocess.run(
        [sys.executable, "-m", "bgjobs.cli", "dev"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "receipts written: ['v1.csv', 'v2.csv', 'v3.csv']" in out
    assert "booking.created -> booking_confirmation sent by email, push, sms" in out
    assert re.search(r"booking.created -> webhook to http://127\.0\.0\.1:\d+/hooks: booking.created "
                     r"\(msg_\w+, signature verified\)\n", out), out  # fmt: skip
    assert 'bgjobs_jobs_total{actor="demo_welcome",family="notifications",outcome="succeeded"} 6.0' in out
    assert 'bgjobs_jobs_total{actor="demo_payout",family="payouts",outcome="succeeded"} 3.0' in out
    assert 'batch run demo.report: succeeded, counts {"welcome_emails": 5}' in out
    # Nothing it started is left running.
    assert [cmd for cmd in _command_lines() if "dramatiq bgjobs.actors" in cmd] == []


def _command_lines() -> list[str]:
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return lines
