"""The console served by a real uvicorn on 127.0.0.1, in a thread of the test process."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from bgjobs.embedded import free_port


class ConsoleServer:
    """``with ConsoleServer(app) as console:`` serves ``app`` at ``console.url`` until the block ends."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
                                lifespan="off")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="console-server", daemon=True)

    def __enter__(self) -> ConsoleServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError(f"the console did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the console server did not stop"
