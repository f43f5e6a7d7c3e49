"""One vendor call with transport retries: where tenacity belongs, and where it must stop.

Quick in-process retries absorb blips (a reset connection, a 503 from a load balancer) inside one
job attempt. They are safe only when sending again cannot act twice: the request never left
(a refused connection), the vendor drops repeats of an idempotency key, or the call is
idempotent by nature (GET, PUT, DELETE). Anything else, and any longer outage, ends in
``TransientError``: Dramatiq retries the job later with backoff, and bgjobs's idempotency
records keep the effect single.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from bgjobs.errors import PermanentError, TransientError

__all__ = ["RETRYABLE", "HttpAdapter", "VendorError", "call"]

#: Statuses that mean "not now": retried (here when safe, else by Dramatiq).
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


class VendorError(PermanentError):
    """The vendor refused the request (a 4xx retrying cannot change); adapters map it further."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"vendor answered {status}: {body[:200]}")
        self.status = status
        self.body = body


class HttpAdapter:
    """An adapter holding one pooled client; ``close()`` it when the process stops using it."""

    client: httpx.Client

    def close(self) -> None:
        self.client.close()


class _Again(Exception):
    pass


def call(
    client: httpx.Client, method: str, url: str, *, safe_to_resend: bool, attempts: int = 3,
    before_each: Callable[[], object] | None = None, **kwargs: Any,
) -> httpx.Response:  # fmt: skip
    """Send one request; 2xx returns, 4xx raises :class:`VendorError`, the rest as the docstring says."""

    def once() -> httpx.Response:
        if before_each is not None:
            before_each()
        try:
            response = client.request(method, url, **kwargs)
        except httpx.ConnectError as exc:  # nothing was sent: always safe to try again
            raise _Again(f"cannot connect: {exc}") from exc
        except httpx.TransportError as exc:
            if safe_to_resend:
                raise _Again(f"{type(exc).__name__}: {exc}") from exc
            raise TransientError(f"{type(exc).__name__} after sending; not resent here: {exc}") from exc
        if response.status_code in RETRYABLE:
            if safe_to_resend:
                raise _Again(f"vendor answered {response.status_code}")
            raise TransientError(f"vendor answered {response.status_code}")
        if response.status_code >= 400:
            raise VendorError(response.status_code, response.text)
        return response

    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.05, max=1.0) + wait_random(0, 0.05),
        retry=retry_if_exception_type(_Again),
        reraise=True,
    )
    try:
        return retrying(once)
    except _Again as exc:
        raise TransientError(f"{exc} ({attempts} attempts)") from exc
