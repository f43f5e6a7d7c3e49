"""Watch the consumers read a queue's pause, through Redis MONITOR.

Consumers read the paused set every half second or so. A test that pauses a queue waits until a
consumer has read the set *after* the pause was written, instead of sleeping past the interval and
hoping a busy machine kept up; a test of absence waits for further reads, each of which would have
handed the message out if the queue were not paused.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import redis

from bgjobs.consumer import PAUSED_KEY
from tests.support.workers import wait_for


class PauseChecks:
    """The order in which Redis executed pause writes and consumers' pause reads of one queue."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.queue = queue
        #: Consumers' reads (SISMEMBER) of the queue's pause, in all and since the last write of it.
        self.reads = self.reads_since_write = 0
        self._monitor = client.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        with contextlib.suppress(Exception):  # the connection closed by close()
            for command in self._monitor.listen():
                words = str(command.get("command", "")).split()
                if len(words) == 3 and words[1].endswith(PAUSED_KEY) and words[2] == self.queue:
                    if words[0].upper() == "SISMEMBER":
                        self.reads, self.reads_since_write = self.reads + 1, self.reads_since_write + 1
                    else:  # SADD or SREM: a pause or a resume
                        self.reads_since_write = 0

    def wait_seen(self, timeout: float = 30) -> None:
        """Until a consumer has read the pause state after the last pause or resume was written."""
        wait_for(lambda: self.reads_since_write >= 1, timeout=timeout, what="a consumer to read the pause")

    def wait_reads(self, n: int, timeout: float = 30) -> None:
        """Until the consumers have read the pause state ``n`` more times."""
        target = self.reads + n
        wait_for(lambda: self.reads >= target, timeout=timeout, what=f"{n} more reads of the pause")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._monitor.connection.disconnect()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def pause_checks(client: redis.Redis, queue: str) -> Iterator[PauseChecks]:
    checks = PauseChecks(client, queue)
    try:
        yield checks
    finally:
        checks.close()
