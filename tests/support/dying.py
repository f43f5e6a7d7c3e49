"""A worker that dies in the one place a per-key cap is hardest to keep: after a job ran to its
end and gave its slot back, before its message was acked. Loaded with
``BGJOBS_SETUP=tests.support.dying:install``; the job is a ``capped_item`` of key ``dies``, and
only its first run dies (``TEST_DIED_FILE`` notes it), so its redelivered copy can run."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from bgjobs import runtime
from bgjobs.keying import KeyedLimits

KEY = "dies"


class DiesAfterRelease(Middleware):
    """Placed before :class:`KeyedLimits`, so Dramatiq (which runs "after" hooks in reverse) calls
    it once the slot is given back; SIGKILLs the whole worker command, as an OOM kill would."""

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:  # fmt: skip
        marker = Path(os.environ["TEST_DIED_FILE"])
        if message.actor_name == "capped_item" and message.args[0].get("key") == KEY and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.killpg(os.getpgrp(), signal.SIGKILL)


def install() -> None:
    runtime.current().broker.add_middleware(DiesAfterRelease(), before=KeyedLimits)
