"""One HTTP attempt: POST the signed body to the checked address and classify the answer.

One pooled ``httpx.Client`` per worker process, shared by its threads. Redirects are not
followed (a redirect could lead past the SSRF guard), and only the first bytes of a
response are read, so a receiver cannot make the worker download a large body.
"""

from __future__ import annotations

import email.utils
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from ..settings import WebhookSettings
from ._guard import Target

__all__ = ["AttemptResult", "post", "retry_after"]

#: Statuses whose ``Retry-After`` is honoured.
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})

_lock = threading.Lock()
_clients: dict[tuple[float, float], httpx.Client] = {}


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    duration_ms: int
    response: str | None
    error: str | None
    retry_after_s: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _client(settings: WebhookSettings) -> httpx.Client:
    key = (settings.connect_timeout_s, settings.timeout_s)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = httpx.Client(
                timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
                trust_env=False,  # a proxy from the environment would connect past the guard
            )
            _clients[key] = client
        return client


def close() -> None:
    """Close the pooled clients (tests, and workers shutting down)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def post(target: Target, headers: dict[str, str], body: bytes, settings: WebhookSettings) -> AttemptResult:
    """Send one attempt; never raises for network trouble, which is an ordinary failed attempt."""
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    request_headers = {**headers, "Host": target.host_header}
    started = time.monotonic()
    deadline = started + settings.timeout_s
    cap = settings.response_excerpt_bytes

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        with _client(settings).stream(
            "POST", target.url, content=body, headers=request_headers, extensions=extensions
        ) as response:
            excerpt = bytearray()
            for chunk in response.iter_bytes():
                excerpt += chunk
                if len(excerpt) >= cap or time.monotonic() > deadline:
                    break
            text = bytes(excerpt[:cap]).decode("utf-8", "replace") if cap else None
            wait = None
            if response.status_code in RETRY_AFTER_STATUSES:
                wait = retry_after(response.headers.get("retry-after"))
            return AttemptResult(response.status_code, elapsed(), text, None, wait)
    except httpx.TimeoutException as exc:
        return AttemptResult(None, elapsed(), None, f"timed out ({type(exc).__name__})")
    except httpx.HTTPError as exc:
        return AttemptResult(None, elapsed(), None, f"{type(exc).__name__}: {exc}"[:1000])
