"""Masking for logs: recipients are shown enough to debug, never in full; URLs without their password."""

from __future__ import annotations

import re

__all__ = ["mask_email", "mask_phone", "mask_text", "mask_token", "mask_url"]

_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@]*):[^/]*@", re.IGNORECASE)
_EMAILS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONES = re.compile(r"\+[1-9]\d{6,14}")
_URL_PASSWORDS = re.compile(r"\b([a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s/]*@", re.IGNORECASE)


def mask_email(address: str) -> str:
    """``jane.doe@example.com`` -> ``j***@example.com``."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def mask_phone(number: str) -> str:
    """``+447700900123`` -> ``+44*******23``."""
    return number[:3] + "*" * max(len(number) - 5, 0) + number[-2:] if len(number) > 5 else "***"


def mask_token(token: str) -> str:
    """Device tokens and keys: the first four characters only."""
    return token[:4] + "…" if len(token) > 4 else "…"


def mask_url(url: str) -> str:
    """``redis://:s3cret@host:6379/0`` -> ``redis://:***@host:6379/0``: the password never shows."""
    return _USERINFO.sub(r"\1:***@", url)


def mask_text(text: str) -> str:
    """Free text (an error message) with every email address, phone number and URL password in
    it masked as above: what a span or a log may show of a vendor's answer."""
    text = _URL_PASSWORDS.sub(r"\1:***@", text)
    text = _EMAILS.sub(lambda m: mask_email(m.group()), text)
    return _PHONES.sub(lambda m: mask_phone(m.group()), text)
