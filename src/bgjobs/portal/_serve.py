"""``bgjobs portal``: the portal on its own under ``/portal`` (uvicorn); ``link`` and ``revoke``."""

from __future__ import annotations

import argparse
import getpass
import logging
from typing import Any

from .. import runtime
from ..errors import ConfigurationError
from ..listening import listen, run_server

__all__ = ["register", "serve"]


def serve(*, host: str | None = None, port: int | None = None) -> int:
    """Serve the portal at ``http://host:port/portal/`` until Ctrl-C (or SIGTERM).

    Raises:
        ConfigurationError: no signing key (nothing could be opened), or a missing extra.
        UsageError: the port is taken.
    """
    try:
        import uvicorn  # noqa: F401  (here for the one-line refusal; run_server uses it)
        from starlette.applications import Starlette
        from starlette.responses import RedirectResponse
        from starlette.routing import Mount, Route
    except ImportError as exc:
        raise ConfigurationError(
            f"the portal needs the console extra ({exc.name} is missing): pip install 'bgjobs[console]'"
        ) from None
    from ._app import create_app
    from ._tokens import NO_KEY

    settings = runtime.current().settings.portal
    if settings.secret is None:
        raise ConfigurationError(NO_KEY)
    host, port = host or settings.host, settings.port if port is None else port
    sock = listen(host, port, "BGJOBS_PORTAL__PORT")

    def home(request: Any) -> Any:
        return RedirectResponse("/portal/", status_code=307)

    app = Starlette(routes=[Route("/", home), Mount("/portal", app=create_app())])
    logging.getLogger("bgjobs.portal").info("portal on http://%s:%d/portal/", host, port)
    print(f"bgjobs portal: http://{host}:{port}/portal/ (links: bgjobs portal link OWNER)", flush=True)
    run_server(app, sock)
    return 0


def _run(args: argparse.Namespace) -> int:
    from ._tokens import link, revoke

    if args.portal_command == "link":
        scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
        print(link(args.owner, scopes=scopes, ttl=args.ttl, recipient=args.recipient, base_url=args.base_url))
        return 0
    if args.portal_command == "revoke":
        revoke(args.owner)
        from ..audit import record

        record(
            who=f"cli:{getpass.getuser()}",
            action="portal.revoke",
            resource=f"owner:{args.owner}",
            result="ok",
        )
        print(f"revoked every portal link of {args.owner} issued until now")
        return 0
    return serve(host=args.host, port=args.port)


def register(commands: Any) -> None:
    portal = commands.add_parser("portal", help="serve the tenant portal; make or revoke its links")
    portal.add_argument("--host", help="address to listen on (BGJOBS_PORTAL__HOST, 127.0.0.1)")
    portal.add_argument("--port", type=int, help="port (BGJOBS_PORTAL__PORT, 9182)")
    portal.set_defaults(func=_run, portal_command=None)
    sub = portal.add_subparsers(dest="portal_command")
    made = sub.add_parser("link", help="print a signed link to the portal for one owner")
    made.add_argument("owner", help="whose endpoints (and, with a recipient, preferences) the link opens")
    made.add_argument("--scopes", default="webhooks", help="webhooks and/or preferences, comma-separated")
    made.add_argument("--ttl", default="1h", help="how long it works: 15m, 1h, 1d (at most MAX_LINK_TTL_S)")
    made.add_argument("--recipient", help="the recipient's user id (the preferences scope needs it)")
    made.add_argument("--base-url", help="where the portal is served (BGJOBS_PORTAL__BASE_URL)")
    gone = sub.add_parser("revoke", help="refuse every link of an owner issued until now")
    gone.add_argument("owner", help="the owner whose links stop working")
