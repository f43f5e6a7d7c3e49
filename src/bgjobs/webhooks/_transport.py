"""HTTP attempts: POST the signed body to the checked address and classify the answer.

Requests run on one asyncio event loop per worker process, in a thread of its own, with one
pooled ``aiohttp`` session. A request that waits (a slow endpoint, a throttled turn) holds a
coroutine, not a worker thread, so a worker keeps delivering to other endpoints while some
hang. aiohttp rather than httpx's async client: at 50 requests in flight on 127.0.0.1, httpx's
took 2.7 ms of CPU per request and aiohttp 0.13 ms (docs/performance.md).

Redirects are not followed (a redirect could lead past the SSRF guard), the environment's
proxies are ignored (one would connect past it), and only the first bytes of a response are
read, so a receiver cannot make the worker download a large body.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import os
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from ..redact import mask_text
from ..settings import WebhookSettings
from ._guard import Target

__all__ = ["AttemptResult", "close", "post", "retry_after", "run"]

#: Statuses whose ``Retry-After`` is honoured.
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})


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


class _Loop:
    """This process's event loop thread and its sessions (one per timeout pair)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.sessions: dict[tuple[float, float], aiohttp.ClientSession] = {}
        self.thread = threading.Thread(target=self.loop.run_forever, name="bgjobs-webhooks-io", daemon=True)
        self.thread.start()

    def session(self, settings: WebhookSettings) -> aiohttp.ClientSession:
        """Called on the loop: sessions belong to the loop they were made on."""
        key = (settings.connect_timeout_s, settings.timeout_s)
        found = self.sessions.get(key)
        if found is None or found.closed:
            connector = aiohttp.TCPConnector(limit=0, use_dns_cache=False, enable_cleanup_closed=True)
            timeout = aiohttp.ClientTimeout(
                sock_connect=settings.connect_timeout_s, sock_read=settings.timeout_s
            )
            found = aiohttp.ClientSession(
                connector=connector, timeout=timeout, trust_env=False, auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )  # fmt: skip
            self.sessions[key] = found
        return found

    async def aclose(self) -> None:
        for session in self.sessions.values():
            await session.close()
        self.sessions.clear()


_lock = threading.Lock()
_current: _Loop | None = None


def _loop() -> _Loop:
    global _current
    with _lock:
        if _current is None or _current.pid != os.getpid():  # a forked child starts its own
            _current = _Loop()
        return _current


def run(coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
    """Run ``coroutine`` on this process's loop; the caller's context (its trace) goes with it."""
    return asyncio.run_coroutine_threadsafe(coroutine, _loop().loop)


def session(settings: WebhookSettings) -> aiohttp.ClientSession:
    """This process's session for ``settings`` (call it on the loop)."""
    return _loop().session(settings)


def close() -> None:
    """Close the sessions and stop the loop (tests, and workers shutting down)."""
    global _current
    with _lock:
        found, _current = _current, None
    if found is None or found.pid != os.getpid():
        return
    asyncio.run_coroutine_threadsafe(found.aclose(), found.loop).result(timeout=10)
    found.loop.call_soon_threadsafe(found.loop.stop)
    found.thread.join(timeout=10)
    found.loop.close()


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


async def post(
    target: Target, headers: dict[str, str], body: bytes, settings: WebhookSettings
) -> AttemptResult:
    """Send one attempt (on the loop); never raises for network trouble, an ordinary failed attempt."""
    started = time.monotonic()
    cap = settings.response_excerpt_bytes

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    extra: dict[str, Any] = {"server_hostname": target.host} if target.scheme == "https" else {}
    try:
        async with asyncio.timeout(settings.connect_timeout_s + settings.timeout_s):
            async with session(settings).post(
                target.url, data=body, headers={**headers, "Host": target.host_header},
                allow_redirects=False, **extra,
            ) as response:  # fmt: skip
                excerpt = bytearray()
                while len(excerpt) < cap:
                    chunk = await response.content.read(cap - len(excerpt))
                    if not chunk:
                        break
                    excerpt += chunk
                # The attempt log keeps the receiver's answer, masked as everything that leaves
                text = mask_text(bytes(excerpt).decode("utf-8", "replace")) if cap else None
                wait = None
                if response.status in RETRY_AFTER_STATUSES:
                    wait = retry_after(response.headers.get("retry-after"))
                return AttemptResult(response.status, elapsed(), text, None, wait)
    except TimeoutError as exc:
        return AttemptResult(None, elapsed(), None, f"timed out ({type(exc).__name__})")
    except (aiohttp.ClientError, OSError) as exc:
        return AttemptResult(None, elapsed(), None, mask_text(f"{type(exc).__name__}: {exc}")[:1000])
