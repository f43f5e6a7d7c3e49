"""Secrets and personal details in the forms vendors' errors carry them, for the masking tests:
each entry is the text as it might appear, and the part of it that must never leave the process."""

from __future__ import annotations

#: (text, what must not appear once masked)
CORPUS: list[tuple[str, str]] = [
    ("+447700900123", "7700900123"),
    ("447700900123", "7700900123"),
    ("+44 7700 900123", "7700 900123"),
    ("0044 7700 900123", "7700 900123"),
    ("07700 900123", "7700 900123"),
    ("(415) 555-2671", "555-2671"),
    ("ann.lee@example.com", "ann.lee"),
    ("Authorization: Bearer sk_live_51HxYzAbCdEf", "51HxYzAbCdEf"),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc", "eyJhbGciOiJIUzI1NiJ9"),
    ("Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
    ("https://api.example.com/v1/send?token=abc123xyz&to=x", "abc123xyz"),
    ('{"api_key": "k-9f8e7d6c"}', "k-9f8e7d6c"),
    ("password=hunter2hunter", "hunter2hunter"),
    ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ("redis://:s3cretpass@cache:6379/0", "s3cretpass"),
    ("card 4242 4242 4242 4242 declined", "4242 4242 4242"),
    ("card 4000-0566-5566-5556", "4000-0566-5566"),
    ("card 4242424242424242", "424242424242"),
    ("IBAN GB82WEST12345698765432", "WEST12345698765432"),
    ("IBAN DE89 3704 0044 0532 0130 00", "3704 0044 0532"),
]

#: Everything at once, as one vendor error text.
TEXT = "vendor answered 503: " + "; ".join(text for text, _ in CORPUS)
#: What must not appear in anything that leaves the process.
SECRETS = [secret for _, secret in CORPUS]


def leaked(text: str | None) -> list[str]:
    """The secrets of the corpus that ``text`` shows."""
    return [s for s in SECRETS if text and s in text]
