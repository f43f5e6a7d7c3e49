"""Real receiving servers on 127.0.0.1: an SMTP server (aiosmtpd) and an HTTP vendor API.

Both record what reaches them, so tests and benchmarks can count deliveries the way a
provider would, and both can be told to misbehave.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage as MimeMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bgjobs.embedded import free_port


class SmtpReceiver:
    """Accepts mail and keeps each parsed message; ``fail_next_data`` answers 451 to the next DATA."""

    def __init__(self) -> None:
        self.messages: list[MimeMessage] = []
        self.refused: list[MimeMessage] = []
        self._lock = threading.Lock()
        self._failures = 0
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())

    def fail_next_data(self, times: int = 1) -> None:
        with self._lock:
            self._failures += times

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        parsed: Any = email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[arg-type]
        with self._lock:
            if self._failures:
                self._failures -= 1
                self.refused.append(parsed)
                return "451 4.3.0 try again later"
            self.messages.append(parsed)
        return "250 Message accepted"

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def message_ids(self) -> Counter[str]:
        with self._lock:
            return Counter(str(m["Message-ID"]) for m in self.messages)

    def __enter__(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


@dataclass
class VendorRequest:
    path: str
    key: str | None
    body: dict[str, Any]
    authorization: str | None


@dataclass
class HttpVendor:
    """A JSON vendor API that honours ``Idempotency-Key`` like a real provider.

    ``script`` holds responses to give before behaving: ``500``, ``400``, ``(503, {...})`` (a status
    with the body to answer with), ``"sleep:<s>"`` (hang,
    then answer without having accepted anything), ``"accept-sleep:<s>"`` (accept the message,
    then hang: a provider that took it and whose answer never arrived) or ``"held-503"`` (hang until
    the test sets ``release``, then answer 503: a request the test knows to be in flight).
    """

    requests: list[VendorRequest] = field(default_factory=list)
    script: list[int | str | tuple[int, Any]] = field(default_factory=list)
    #: Idempotency key -> (path, body) of the request that was accepted as new.
    accepted: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    #: Requests answered from the idempotency store: copies a real provider would drop.
    replays: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def delivered(self, path: str) -> dict[str, dict[str, Any]]:
        """Messages the vendor accepted as new, by idempotency key: what would reach a phone."""
        with self.lock:
            return {k: body for k, (p, body) in self.accepted.items() if p == path}

    def handle(
        self, path: str, key: str | None, body: dict[str, Any], auth: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        request = VendorRequest(path, key, body, auth)
        with self.lock:
            self.requests.append(request)
            step = self.script.pop(0) if self.script else None
        if isinstance(step, str) and step.startswith("sleep:"):
            time.sleep(float(step.split(":", 1)[1]))
            return 200, {"id": "too-late"}, {}
        if step == "held-503":
            self.release.wait(timeout=120)
            return 503, {"error": "scripted 503 after a hold"}, {}
        if isinstance(step, str) and step.startswith("accept-sleep:"):
            with self.lock:
                if key is not None:
                    self.accepted.setdefault(key, (path, body))
            time.sleep(float(step.split(":", 1)[1]))
            return 200, {"id": "too-late"}, {}
        if isinstance(step, int):
            return step, {"error": f"scripted {step}"}, {}
        if isinstance(step, tuple):  # (status, the body to answer with)
            return step[0], step[1], {}
        message_id = f"{path}:{key}"
        with self.lock:
            if key is not None and key in self.accepted:
                self.replays += 1
                return 200, {"id": message_id}, {"Idempotent-Replayed": "true"}
            if key is not None:
                self.accepted[key] = (path, body)
        return 200, {"id": message_id}, {}


class _JsonHandler(BaseHTTPRequestHandler):
    """Answers each POST with ``answer(path, headers, body) -> (status, payload, extra headers)``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes; without it, 40 ms each

    def answer(self, body: bytes) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if len(body) < length:  # the sender died mid-request: like any server, never act on half a body
            self.close_connection = True
            return
        status, payload, headers = self.answer(body)
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a killed worker resets its connections; that is the test, not an error


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """Serve ``handler`` on 127.0.0.1 in a thread; yields the port."""
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def http_vendor() -> Iterator[HttpVendor]:
    vendor = HttpVendor()

    class Handler(_JsonHandler):
        def answer(self, body: bytes) -> tuple[int, Any, dict[str, str]]:
            return vendor.handle(self.path, self.headers.get("Idempotency-Key"), json.loads(body or b"{}"),
                                 self.headers.get("Authorization"))  # fmt: skip

    with _serving(Handler) as vendor.port:
        yield vendor


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class WebhookReceiver:
    """Subscriber endpoints on 127.0.0.1: every path answers 200 unless scripted.

    ``script(path, *steps)`` queues answers for a path: a status (``500``), a status with
    headers (``(503, {"Retry-After": "1"})``) and a body (``(500, {}, {...})``), or ``"sleep:<s>"``
    to hang before answering.
    ``always(path, step)`` repeats one answer for ever.
    """

    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, list[Any]] = field(default_factory=dict)
    forever: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    #: Requests being answered now, and the most ever at once, per path.
    active: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *steps: Any) -> None:
        with self.lock:
            self.scripts.setdefault(path, []).extend(steps)

    def always(self, path: str, step: Any) -> None:
        with self.lock:
            self.forever[path] = step

    def received(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]

    def answer(self, received: Received) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            self.active[received.path] += 1
            self.peak[received.path] = max(self.peak[received.path], self.active[received.path])
        try:
            return self._answer(received)
        finally:
            with self.lock:
                self.active[received.path] -= 1

    def _answer(self, received: Received) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            self.requests.append(received)
            queued = self.scripts.get(received.path)
            step = queued.pop(0) if queued else self.forever.get(received.path)
        ok = {"ok": True}
        if isinstance(step, str) and step.startswith("sleep:"):
            time.sleep(float(step.split(":", 1)[1]))
            return 200, {}, ok
        if isinstance(step, tuple):  # (status, headers) or (status, headers, body)
            return step[0], step[1], step[2] if len(step) > 2 else ok
        if isinstance(step, int):
            return step, {}, ok
        return 200, {}, ok


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(_JsonHandler):
        def answer(self, body: bytes) -> tuple[int, Any, dict[str, str]]:
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, payload = receiver.answer(Received(self.path, headers, body, time.monotonic()))
            return status, payload, extra

    with _serving(Handler) as receiver.port:
        yield receiver


@dataclass
class PaymentGatewayServer:
    """A payment provider's JSON API that stores idempotency keys as a real provider does.

    ``POST /payouts`` and ``POST /charges`` with an ``Idempotency-Key``: a key seen before gets the
    first answer again and moves no money; a key whose first request is still being answered gets
    409 ``idempotency_key_in_use``, as Stripe answers (counted in ``conflicts``). ``script`` holds
    answers to give first (``500``, ``"sleep:<s>"``); ``no_method`` customers are refused with 402.
    """

    payouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    balances: dict[str, str] = field(default_factory=dict)
    no_method: set[str] = field(default_factory=set)
    script: list[Any] = field(default_factory=list)
    requests: int = 0
    replays: int = 0
    conflicts: int = 0
    in_flight: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paid(self) -> Counter[str]:
        """How many payouts each payee received (money moved, replays excluded)."""
        with self.lock:
            return Counter(p["payee_id"] for p in self.payouts.values())

    def handle(self, method: str, path: str, key: str | None, body: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            self.requests += 1
            if key and key in self.in_flight:
                self.conflicts += 1
                return 409, {"error": {"code": "idempotency_key_in_use"}}
            if key:
                self.in_flight.add(key)
        try:
            return self._answer(method, path, key, body)
        finally:
            with self.lock:
                self.in_flight.discard(key or "")

    def _answer(self, method: str, path: str, key: str | None, body: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            step = self.script.pop(0) if self.script else None
        if isinstance(step, str) and step.startswith("sleep:"):
            time.sleep(float(step.split(":", 1)[1]))
        elif isinstance(step, int):
            return step, {"error": f"scripted {step}"}
        if method == "GET" and path.startswith("/balance"):
            currency = path.rsplit("=", 1)[1]
            return 200, {"available": self.balances.get(currency, "0"), "currency": currency}
        store = {"/payouts": self.payouts, "/charges": self.charges}.get(path)
        if store is None or not key:
            return 400, {"error": "unknown path or missing Idempotency-Key"}
        if path == "/charges" and body.get("customer_id") in self.no_method:
            return 402, {"error": "the customer has no payment method"}
        with self.lock:
            if key in store:
                self.replays += 1
                return 200, store[key]["answer"]
            answer = {"id": f"tx_{len(store) + 1}", "status": "succeeded", "amount": body["amount"],
                      "currency": body["currency"]}  # fmt: skip
            store[key] = {**body, "answer": answer}
        return 200, answer


@contextmanager
def payment_gateway() -> Iterator[PaymentGatewayServer]:
    gateway = PaymentGatewayServer()

    class Handler(_JsonHandler):
        def answer(self, body: bytes) -> tuple[int, Any, dict[str, str]]:
            status, payload = gateway.handle(
                self.command, self.path, self.headers.get("Idempotency-Key"), json.loads(body or b"{}")
            )
            return status, payload, {}

    with _serving(Handler) as gateway.port:
        yield gateway
