"""Typed actors for the stub-broker unit tests."""

from __future__ import annotations

import threading
from collections import Counter

import bgjobs
from bgjobs import wiring
from bgjobs.errors import PermanentError, TransientError
from bgjobs.ports import EmailMessage

calls: Counter[str] = Counter()
_lock = threading.Lock()


class Greeting(bgjobs.Payload):
    user_id: int
    email: str


class Attempt(bgjobs.Payload):
    key: str
    failures: int = 0
    error: str = "transient"


@bgjobs.actor(queue="notifications")
def greet(payload: Greeting) -> None:
    wiring.mailer().send(
        message=EmailMessage(
            to=(payload.email,),
            subject="Hello",
            text=f"user {payload.user_id}",
            idempotency_key=f"greet:{payload.user_id}",
        )
    )


@bgjobs.actor(queue="default")
def flaky(payload: Attempt) -> None:
    with _lock:
        calls[payload.key] += 1
        attempt = calls[payload.key]
    if attempt <= payload.failures:
        if payload.error == "permanent":
            raise PermanentError(f"refused on attempt {attempt}")
        if payload.error == "unknown":
            raise RuntimeError(f"boom on attempt {attempt}")
        raise TransientError(f"vendor busy on attempt {attempt}")
