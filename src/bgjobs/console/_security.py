"""Who may use the console, and the checks every state-changing call passes.

- A bearer token (``BGJOBS_CONSOLE__TOKEN``) for the API and external cron callers; compared in
  constant time. It is not sent by a browser on its own, so calls made with it need no CSRF token.
- HTTP Basic (``BGJOBS_CONSOLE__USERNAME``/``__PASSWORD``, or any user with the token as password)
  for the dashboard. A browser resends it by itself, so every POST made with it carries the CSRF
  token from the ``bgjobs_csrf`` cookie in an ``X-CSRF-Token`` header (double submit).
- Mounted in a host app, an ``authorize(request, action, resource) -> bool`` hook decides instead,
  with the host's own login; its sessions are ambient too, so CSRF applies.
- With none of these, loopback clients only (a developer's machine); CSRF applies.

Two checks stand in front of all of it. The ``Host`` a request names must be a loopback name
(``localhost``, ``127.0.0.1``, ``[::1]``) or one of ``BGJOBS_CONSOLE__ALLOWED_HOSTS``: without it, a
page on ``evil.example`` whose name is made to resolve to 127.0.0.1 (DNS rebinding) would be the
console's own origin to the browser. With authentication and no list, any name is accepted (the
console cannot know its public name). And a state-changing request made with ambient credentials
must come from the console's own origin: a browser's ``Origin`` and ``Sec-Fetch-Site`` headers say
where a request comes from, and a cross-site one is refused whatever cookies it carries.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

from ..sections import ConsoleSettings

__all__ = ["CSRF_COOKIE", "CSRF_HEADER", "Access", "Authorize", "Guard", "cross_site"]

#: ``authorize(request, action, resource)``: action is ``read`` or the action's name
#: (``requeue``, ``pause``, ``trigger``, ...); resource names what it acts on (``queue:webhooks``).
#: It returns False to refuse, True to allow, or the user's name to allow and name them in the audit log.
Authorize = Callable[[Any, str, str], "bool | str"]

CSRF_COOKIE = "bgjobs_csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Access:
    """Who is calling, and whether their credentials travel with every browser request."""

    who: str
    ambient: bool
    #: ``token``, ``basic``, ``host`` (the authorize hook) or ``loopback``.
    via: str


def _same(given: str, expected: str) -> bool:
    """Equal in constant time; an empty secret matches nothing."""
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _host_name(value: str) -> str:
    """``[::1]:9181`` -> ``::1``, ``Example.com:80`` -> ``example.com``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Guard:
    """Authenticates each request and checks actions: read-only, the host's hook, CSRF."""

    def __init__(self, settings: ConsoleSettings, authorize: Authorize | None) -> None:
        self.settings = settings
        self.authorize = authorize
        #: BGJOBS_CONSOLE__ALLOWED_HOSTS as host names, read once.
        self.allowed_hosts = frozenset(_host_name(h) for h in settings.allowed_hosts)

    @property
    def configured(self) -> bool:
        s = self.settings
        return s.token is not None or (s.username is not None and s.password is not None)

    def _challenge(self, why: str) -> HTTPException:
        return HTTPException(401, why, headers={"WWW-Authenticate": 'Basic realm="bgjobs console"'})

    def _basic(self, encoded: str) -> Access:
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise self._challenge("malformed Basic credentials") from None
        s = self.settings
        if s.username is not None and s.password is not None and _same(user, s.username) \
                and _same(password, s.password.get_secret_value()):  # fmt: skip
            return Access(user, ambient=True, via="basic")
        if s.token is not None and _same(password, s.token.get_secret_value()):
            return Access(user or "token", ambient=True, via="basic")
        raise self._challenge("wrong user name or password")

    def _check_host(self, request: Request) -> None:
        name = _host_name(request.headers.get("host", ""))
        allowed = self.allowed_hosts
        if name in allowed or (not allowed and (self.configured or self.authorize is not None)):
            return
        if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
            return
        raise HTTPException(403, f"this console does not answer to the host name {name!r}: add it to "
                                 "BGJOBS_CONSOLE__ALLOWED_HOSTS if it is this console's")  # fmt: skip

    def access(self, request: Request) -> Access:
        """Who this is; raises 401/403 if nobody the console serves, or for a host name not its own."""
        self._check_host(request)
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value:
            token = self.settings.token
            if token is None or not _same(value.strip(), token.get_secret_value()):
                raise HTTPException(401, "wrong bearer token (BGJOBS_CONSOLE__TOKEN)")
            return Access("token", ambient=False, via="token")
        if scheme.lower() == "basic" and value and self.configured:
            return self._basic(value.strip())
        if self.authorize is not None:
            allowed = self.authorize(request, "read", "console")
            if not allowed:
                raise HTTPException(403, "the host's authorize hook refused")
            user = request.scope.get("user")
            named = getattr(user, "username", None) or user or "host user"
            who = allowed if isinstance(allowed, str) else str(named)
            return Access(who, ambient=True, via="host")
        if self.configured:
            raise self._challenge("sign in: a bearer token or HTTP Basic credentials")
        if _loopback(request):
            return Access("loopback", ambient=True, via="loopback")
        raise HTTPException(403, "the console answers loopback clients only until BGJOBS_CONSOLE__TOKEN "
                                 "or BGJOBS_CONSOLE__USERNAME/__PASSWORD is set")  # fmt: skip

    def allow(self, request: Request, access: Access, action: str, resource: str) -> str | None:
        """Why ``action`` is refused (None: allowed)."""
        if self.settings.read_only:
            return "the console is read-only (BGJOBS_CONSOLE__READ_ONLY=true)"
        if access.ambient:
            crossed = cross_site(request, self.allowed_hosts)
            if crossed:
                return crossed
            cookie = request.cookies.get(CSRF_COOKIE, "")
            header = request.headers.get(CSRF_HEADER, "")
            if not cookie or not header or not _same(cookie, header):
                return f"missing or wrong CSRF token: send the {CSRF_COOKIE} cookie's value as X-CSRF-Token"
        if (
            access.via == "host"
            and self.authorize is not None
            and not self.authorize(request, action, resource)
        ):
            return "the host's authorize hook refused"
        return None


def cross_site(request: Request, allowed_hosts: frozenset[str]) -> str | None:
    """Why a request is not from the console's own origin, by what the browser says (None: it is,
    or it came from no browser). Behind a proxy the origin may be the forwarded host or a listed one."""
    fetched = request.headers.get("sec-fetch-site", "")
    if fetched and fetched not in ("same-origin", "none"):
        return f"a {fetched} request may not change anything here (Sec-Fetch-Site)"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    came_from = origin.partition("://")[2].lower()
    ours = {request.headers.get(h, "").lower() for h in ("host", "x-forwarded-host")} - {""}
    if origin != "null" and (came_from in ours or _host_name(came_from) in allowed_hosts):
        return None
    return f"a request from {origin} may not change anything here (Origin)"


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)
