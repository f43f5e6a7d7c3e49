"""Payloads as the console shows them: masked the way the logs mask recipients, secrets never.

A dead letter's arguments can hold anything a host sent. Its structure and identifiers stay
readable (that is what an operator needs to find the record), and so are a job's own counters
(attempt, deferrals, retries, a delay in ``..._ms``); contact details are masked as the logs mask
them, amounts and free text are hidden, and anything that looks like a secret is replaced whole.
"""

from __future__ import annotations

import re
from typing import Any

from ..redact import mask_email, mask_phone, mask_text

__all__ = ["masked"]

_SECRET = re.compile(r"secret|password|passwd|token|api_?key|authorization|signature|credential", re.I)
_SHOWN = re.compile(
    r"(^|_)(id|ids|key|kind|type|status|currency|channel|channels|template|category|"
    r"queue|actor|event|locale|timezone|period|day|date|trigger|dataset|fmt|at|"
    r"attempt|attempts|deferrals|retries|waits|count|priority|ms)$",
    re.I,
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def _leaf(key: str, value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if _SECRET.search(key):
        return "***"
    text = str(value)
    if "email" in key.lower() or (isinstance(value, str) and _EMAIL.match(text)):
        return mask_email(text)
    if "phone" in key.lower():
        return mask_phone(text)
    if _SHOWN.search(key):  # an identifier, unless it quotes a secret or a recipient
        return mask_text(value) if isinstance(value, str) else value
    return "***" if text else text


def masked(value: Any, key: str = "") -> Any:
    """``value`` with every leaf masked by its key (see the module's docstring)."""
    if isinstance(value, dict):
        return {k: masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v, key) for v in value]
    return _leaf(key, value)
