"""The tenant portal: the host's own customers manage their webhook endpoints and notification
preferences behind a signed link.

``bgjobs.portal.link(owner="merchant_123", scopes=("webhooks",), ttl="1h")`` returns the URL the
host puts in its own dashboard; :func:`create_app` serves the pages and ``/api/v1`` (mount it, or
run ``bgjobs portal``). See docs/portal.md.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ..lazy import exports as _exports

if _TYPE_CHECKING:
    from ..errors import LinkRefused
    from ._app import create_app
    from ._tokens import SCOPES, Token, link, read, revoke, unsubscribe_url
    from ._wsgi import wsgi_app

_EXPORTS: dict[str, str] = {
    "create_app": "_app",
    "SCOPES": "_tokens",
    "LinkRefused": "bgjobs.errors",
    "Token": "_tokens",
    "link": "_tokens",
    "read": "_tokens",
    "revoke": "_tokens",
    "unsubscribe_url": "_tokens",
    "wsgi_app": "_wsgi",
}

__getattr__, __dir__ = _exports(__name__, _EXPORTS)

__all__ = [
    "SCOPES", "LinkRefused", "Token", "create_app", "link", "read", "revoke", "unsubscribe_url", "wsgi_app",
]
