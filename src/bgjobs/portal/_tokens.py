"""Signed links: what a portal token says, how it is made, checked, and revoked.

A token is itsdangerous's URL-safe signed JSON (HMAC-SHA1 over a key derived from
``BGJOBS_PORTAL__SECRET`` and a salt per purpose), not encrypted: it holds an owner, scopes, a
recipient, its id and its times, nothing secret. It signs with the current key and is checked
against it and every ``BGJOBS_PORTAL__PREVIOUS_SECRETS`` key, so a key is rotated by moving it to
the previous list: links already out keep working until they expire, new ones use the new key.

Revocation is by owner: ``revoke(owner)`` stores the moment, and every token of that owner
issued before it is refused from then on (a token carries its issue time in milliseconds).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from itsdangerous import BadSignature, URLSafeSerializer

from .. import db, runtime
from ..clock import now as _now
from ..controls import parse_span
from ..errors import ConfigurationError, InvalidPayload, LinkRefused
from ..portal_sections import PortalSettings
from ._models import PortalRevocation

__all__ = [
    "NO_KEY", "SCOPES", "LinkRefused", "Token", "link", "read", "revoke", "sign", "unsubscribe_url",
]  # fmt: skip

SCOPES = ("webhooks", "preferences")
NO_KEY = "the portal has no signing key: set BGJOBS_PORTAL__SECRET (16 characters or more)"
_LINK, _UNSUBSCRIBE = "bgjobs.portal.link", "bgjobs.portal.unsubscribe"


@dataclass(frozen=True)
class Token:
    """What a checked token grants."""

    id: str
    owner: str
    scopes: tuple[str, ...]
    recipient: str | None
    issued_ms: int
    expires_ms: int
    #: ``link`` or ``unsubscribe`` (then ``category`` names what the link turns off).
    purpose: str = "link"
    category: str | None = None

    @property
    def who(self) -> str:
        """How the audit log names the caller: ``portal:<owner>`` and the token's id."""
        return f"portal:{self.owner} (token {self.id})"


def _settings() -> PortalSettings:
    return runtime.current().settings.portal


def _serializer(settings: PortalSettings, salt: str) -> URLSafeSerializer:
    if settings.secret is None:
        raise ConfigurationError(NO_KEY)
    keys = [k.get_secret_value() for k in settings.previous_secrets] + [settings.secret.get_secret_value()]
    return URLSafeSerializer(keys, salt=salt)  # signs with the last key, accepts any


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def sign(claims: dict[str, Any], *, purpose: str = _LINK, settings: PortalSettings | None = None) -> str:
    """Sign claims as a token (tests make expired and foreign tokens with it)."""
    return str(_serializer(settings or _settings(), purpose).dumps(claims))


def _base(base_url: str | None, settings: PortalSettings) -> str:
    base = base_url or settings.base_url
    if base is None:
        raise ConfigurationError(
            "the portal's address is unknown: set BGJOBS_PORTAL__BASE_URL or pass base_url="
        )
    return base.rstrip("/")


def link(
    owner: str,
    *,
    scopes: Sequence[str] | None = None,
    ttl: str | int | timedelta = "1h",
    recipient: str | None = None,
    base_url: str | None = None,
) -> str:
    """A URL that opens the portal for one owner (and, for preferences, one recipient).

    Put it in the host app's own page or an iframe; whoever follows it can do what ``scopes``
    allow for ``owner`` until it expires or the owner's links are revoked.

    Args:
        scopes: ``webhooks`` (the owner's endpoints and their deliveries) and/or ``preferences``
            (``recipient``'s notification preferences; needs ``recipient``); by default webhooks,
            and preferences too when a recipient is given.
        ttl: how long it works (``"1h"``, ``"15m"``, seconds or a timedelta), at most
            ``BGJOBS_PORTAL__MAX_LINK_TTL_S``.
        base_url: where the portal is served; ``BGJOBS_PORTAL__BASE_URL`` by default.

    Raises:
        InvalidPayload: an empty owner, an unknown scope, a ttl out of range, preferences
            without a recipient; naming it.
        ConfigurationError: no signing key or no base URL.
    """
    settings = _settings()
    if not isinstance(owner, str) or not 0 < len(owner) <= 200:
        raise InvalidPayload("owner: 1 to 200 characters")
    if scopes is None:
        scopes = ("webhooks", "preferences") if recipient else ("webhooks",)
    scopes = tuple(dict.fromkeys([scopes] if isinstance(scopes, str) else scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InvalidPayload(
            f"scopes: {unknown[0] if unknown else '()'!r} is not a scope; use webhooks, preferences"
        )
    if "preferences" in scopes and not recipient:
        raise InvalidPayload("recipient: the preferences scope needs the recipient's user id")
    if recipient is not None and not 0 < len(recipient) <= 100:
        raise InvalidPayload("recipient: 1 to 100 characters")
    try:
        life = parse_span(ttl, what="ttl")
    except ConfigurationError as exc:
        raise InvalidPayload(str(exc)) from None
    if not 0 < life <= settings.max_link_ttl_s * 1000:
        raise InvalidPayload(
            f"ttl: more than 0 and at most {settings.max_link_ttl_s} s (BGJOBS_PORTAL__MAX_LINK_TTL_S)"
        )
    now = _ms(_now())
    token = sign(
        {"o": owner, "s": list(scopes), "r": recipient, "j": secrets.token_hex(8), "i": now, "e": now + life},
        settings=settings,
    )
    return f"{_base(base_url, settings)}/?{urlencode({'token': token})}"


def unsubscribe_url(user_id: str, category: str, *, base_url: str | None = None) -> str | None:
    """The one-click unsubscribe URL of one category for one recipient (None without a portal)."""
    settings = _settings()
    if settings.secret is None or (base_url or settings.base_url) is None:
        return None
    now = _ms(_now())
    token = sign(
        {
            "o": user_id,
            "r": user_id,
            "c": category,
            "j": secrets.token_hex(8),
            "i": now,
            "e": now + settings.unsubscribe_ttl_s * 1000,
        },
        purpose=_UNSUBSCRIBE,
        settings=settings,
    )
    return f"{_base(base_url, settings)}/unsubscribe/{token}"


def _revoked_since(owner: str) -> int | None:
    with db.session() as s:
        row = s.get(PortalRevocation, owner)
        return None if row is None else _ms(db.aware(row.revoked_at))


def read(token: str, *, purpose: str = "link") -> Token:
    """The token's grant, checked: signature, expiry, revocation.

    Raises:
        LinkRefused: why it is not accepted (tampered or signed with an unknown key, expired, revoked).
    """
    settings = _settings()
    salt = _UNSUBSCRIBE if purpose == "unsubscribe" else _LINK
    try:
        claims = _serializer(settings, salt).loads(token)
        owner, issued, expires, token_id = claims["o"], int(claims["i"]), int(claims["e"]), str(claims["j"])
        scopes = tuple(str(s) for s in claims.get("s", ()))
    except (BadSignature, KeyError, TypeError, ValueError):
        raise LinkRefused("this link is not valid: ask for a new one") from None
    if expires <= _ms(_now()):
        raise LinkRefused("this link has expired: ask for a new one")
    revoked = _revoked_since(str(owner))
    if revoked is not None and issued <= revoked:
        raise LinkRefused("this link was revoked: ask for a new one")
    return Token(
        id=token_id,
        owner=str(owner),
        scopes=scopes,
        recipient=claims.get("r"),
        issued_ms=issued,
        expires_ms=expires,
        purpose=purpose,
        category=claims.get("c"),
    )


def revoke(owner: str) -> None:
    """Refuse every link of ``owner`` issued until now (new links work)."""
    with db.session() as s:
        row = s.get(PortalRevocation, owner) or PortalRevocation(owner=owner, revoked_at=_now())
        row.revoked_at = _now()
        s.add(row)
