"""An HTTP server on 127.0.0.1 that records every request and answers from a script.

For adapter tests: they check the exact request a vendor would get (method, path, headers,
body) and how the adapter takes each kind of answer (success, 4xx, 5xx, a dropped connection).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.receivers import _serving


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: Close the connection without answering (a network failure after the request was sent).
    drop: bool = False


class RecordingServer:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.requests: list[Recorded] = []
        self._script: list[Answer] = []
        self.default = Answer()
        self._lock = threading.Lock()

    def answer(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order; then with ``default``."""
        with self._lock:
            self._script.extend(answers)

    def next_answer(self, recorded: Recorded) -> Answer:
        with self._lock:
            self.requests.append(recorded)
            return self._script.pop(0) if self._script else self.default


@contextmanager
def recording_server() -> Iterator[RecordingServer]:
    holder: dict[str, RecordingServer] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self._read_chunked()
            else:
                body = self.rfile.read(length) if length else b""
            recorded = Recorded(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
            )
            answer = holder["server"].next_answer(recorded)
            if answer.drop:
                self.close_connection = True
                return
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def _read_chunked(self) -> bytes:
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()

        do_GET = do_POST = do_PUT = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with _serving(Handler) as port:
        holder["server"] = RecordingServer(port)
        yield holder["server"]
