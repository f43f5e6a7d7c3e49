"""Standard Webhooks signatures: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``.

Written here rather than taken from a library: it is a dozen lines of ``hmac``, and the
timestamp is always an integer of Unix seconds, so no time-zone handling can misread it.
The test suite checks every request against the reference ``standardwebhooks`` package.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InvalidSignature

__all__ = ["InvalidSignature", "generate_secret", "sign", "verify"]

PREFIX = "whsec_"


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` and the base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for.

    Raises:
        ValueError: the secret is empty or not base64 after its prefix.
    """
    text = secret.removeprefix(PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if len(key) < 24:
        raise ValueError("a webhook secret needs at least 24 bytes of key")
    return key


def _signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(message_id: str, timestamp: int, body: bytes, secrets_: Iterable[str]) -> str:
    """The ``webhook-signature`` header: one ``v1,`` signature per active secret, space-separated."""
    return " ".join(
        "v1," + base64.b64encode(_signature(secret_key(s), message_id, timestamp, body)).decode()
        for s in secrets_
    )


def verify(body: bytes | str, headers: Mapping[str, str], secret: str, *, tolerance: int = 300) -> Any:
    """Check a received webhook and return its parsed JSON body.

    Args:
        body: the raw request body, before any JSON parsing.
        headers: the request headers (any case).
        tolerance: seconds the ``webhook-timestamp`` may be away from now, against replays.

    Raises:
        InvalidSignature: a header is missing, the timestamp is outside the tolerance, or no
            signature matches the secret.
    """
    raw = body.encode() if isinstance(body, str) else body
    lowered = {k.lower(): v for k, v in headers.items()}
    message_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (message_id and stamp and signatures):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not Unix seconds") from None
    if abs(time.time() - timestamp) > tolerance:
        raise InvalidSignature(f"webhook-timestamp is more than {tolerance} s from now")
    expected = _signature(secret_key(secret), message_id, timestamp, raw)
    for item in signatures.split():
        version, _, value = item.partition(",")
        if version != "v1":
            continue
        try:
            candidate = base64.b64decode(value, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(candidate, expected):
            return json.loads(raw)
    raise InvalidSignature("no signature matches the secret")
