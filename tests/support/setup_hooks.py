"""A ``BGJOBS_SETUP`` hook, as a host app writes one."""

from __future__ import annotations

import bgjobs
from bgjobs.adapters.memory import MemoryMailer

calls: list[str] = []
mailer = MemoryMailer()


def setup() -> None:
    calls.append("setup")
    bgjobs.configure(mailer=mailer)
