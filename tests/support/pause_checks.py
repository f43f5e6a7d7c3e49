"""Watch the consumers take a queue's pause in, and read it again.

Consumers read the paused set every half second or so, and note when they start or stop honouring
a pause (``bgjobs.consumer.PAUSE_SEEN_KEY``). A test that pauses a queue waits for that note from
the queue's consumer, instead of sleeping past the interval and hoping a busy machine kept up; a
test of absence waits for further reads (seen through Redis MONITOR), each of which would have
handed the message out if the queue were not paused.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import redis

from bgjobs.consumer import PAUSE_SEEN_KEY, PAUSED_KEY
from tests.support.workers import wait_for


class PauseChecks:
    """Which consumers honour a queue's pause, and how often the consumers read it."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.queue = queue
        self.client = client
        #: Consumers' reads (SISMEMBER) of the queue's pause.
        self.reads = 0
        #: The consumers (``<worker id>:<queue>``) whose honouring of the pause was waited for.
        self.known: set[str] = set()
        self._monitor = client.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        with contextlib.suppress(Exception):  # the connection closed by close()
            for command in self._monitor.listen():
                words = str(command.get("command", "")).split()
                if words[:1] == ["SISMEMBER"] and words[1:] == [words[1], self.queue] and \
                        words[1].endswith(PAUSED_KEY):  # fmt: skip
                    self.reads += 1

    def _honouring(self) -> set[str]:
        seen = self.client.hgetall(f"dramatiq:{PAUSE_SEEN_KEY}")
        return {k.decode() for k, v in seen.items() if k.decode().endswith(f":{self.queue}") and v == b"1"}

    def wait_seen(self, timeout: float = 30) -> None:
        """Until a consumer of the queue (one not waited for before: a new worker's) honours the pause."""
        wait_for(lambda: self._honouring() - self.known, timeout=timeout, what="a consumer to honour it")
        self.known |= self._honouring()

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
