"""Masking for what leaves the process: recipients are shown enough to debug, never in full; URLs
without their password; credentials, card numbers and IBANs never."""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["mask_email", "mask_logs", "mask_phone", "mask_text", "mask_token", "mask_url"]

_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@]*):[^/]*@", re.IGNORECASE)
_EMAILS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL_PASSWORDS = re.compile(r"\b([a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s/]*@", re.IGNORECASE)
#: Credentials in a header or a sentence: ``Bearer sk_...``, ``Basic dXNlcjpw...``.
_SCHEMES = re.compile(r"\b(bearer|basic|token|apikey)(\s+)[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
#: A secret by its name: ``?token=abc``, ``api_key: abc``, ``"password": "abc"`` (also as escaped
#: JSON inside JSON, as a vendor's error body is when it is stored).
_NAMED = re.compile(
    r"""(["']?\b[\w-]*(?:token|secret|passw(?:or)?d|api[_-]?key|signature|credential|authorization|sig)"""
    r"""\\?["']?\s*[=:]\s*\\?["']?)(?!\*\*\*)[^\s&"',;}\\]+""",
    re.IGNORECASE,
)
#: Vendors' key formats: ``sk_live_...``, ``whsec_...``, ``xoxb-...``, ``AKIA...``.
_KEYS = re.compile(r"\b(?:(?:sk|pk|rk)_(?:live|test)_|whsec_|xox[abp]-|AKIA)[A-Za-z0-9_-]{4,}")
#: 13 to 19 digits, spaced or dashed in groups (a card number if the Luhn check passes).
_CARDS = re.compile(r"(?<![\w.])\d(?:[ -]?\d){12,18}(?![\w.])")
#: An IBAN: country, check digits, then 11 to 30 letters and digits, in groups of four or not.
_IBANS = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
#: Phone numbers: international (``+44 7700 900123``, ``0044...``), bare digits (``447700900123``),
#: national (``07700 900123``, ``(415) 555-2671``).
_PHONES = re.compile(
    r"(?<![\w.])(?:(?:\+|00)[1-9][\d ().-]{6,18}\d|\d{10,15}|0\d{2,4}[ .-]?\d{3,4}[ .-]?\d{3,4}"
    r"|\(\d{3}\) ?\d{3}[ .-]\d{4})(?![\w.])"
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return f"****{digits[-4:]}" if _luhn(digits) else match.group()


def _phone(match: re.Match[str]) -> str:
    found = match.group()
    digits = re.sub(r"\D", "", found)
    return mask_phone(("+" if found.startswith("+") else "") + digits) if 8 <= len(digits) <= 15 else found


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
    """Free text (an error message, a vendor's answer, a log line) with every secret and personal
    detail in it masked: URL passwords, credentials (``Bearer ...``, ``token=...``, ``"api_key":
    "..."``, vendors' key formats), card numbers (Luhn-checked; the last four kept), IBANs (the
    country kept), email addresses and phone numbers as above. The one function for everything that
    leaves the process: logs, spans, dead-letter reasons, the attempt and delivery logs."""
    text = _URL_PASSWORDS.sub(r"\1:***@", text)
    text = _SCHEMES.sub(r"\1\2***", text)
    text = _KEYS.sub(lambda m: m.group()[:8] + "***", text)
    text = _NAMED.sub(r"\1***", text)
    text = _EMAILS.sub(lambda m: mask_email(m.group()), text)
    text = _IBANS.sub(lambda m: m.group()[:2] + "***", text)
    text = _CARDS.sub(_card, text)
    return _PHONES.sub(_phone, text)


#: The loggers whose records are masked: bgjobs's, and Dramatiq's (its retry warning quotes the
#: exception). A host's own loggers are left as the host set them.
MASKED_LOGGERS = ("bgjobs", "dramatiq")


class _MaskedRecord(logging.LogRecord):
    """A record whose message and traceback are masked when a formatter reads them: the filters
    that read a record's template and arguments (bgjobs's outage and retry lines) see them as made."""

    def getMessage(self) -> str:
        return mask_text(super().getMessage())

    @property
    def exc_text(self) -> str | None:
        found: str | None = self.__dict__.get("_masked_exc_text")
        return found

    @exc_text.setter
    def exc_text(self, value: str | None) -> None:
        self.__dict__["_masked_exc_text"] = mask_text(value) if value else value


def mask_logs() -> None:
    """Mask every record of bgjobs's and Dramatiq's loggers in this process: its message (with its
    arguments) and its traceback, when a formatter writes them, whatever handler it is. Idempotent;
    a record factory, so it holds for loggers and handlers made later."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_bgjobs_masking", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name.startswith(MASKED_LOGGERS) and type(record) is logging.LogRecord:
            record.__class__ = _MaskedRecord
        return record

    factory._bgjobs_masking = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
