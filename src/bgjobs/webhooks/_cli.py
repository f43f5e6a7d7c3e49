"""``bgjobs webhooks ...``: endpoints, the attempt log, replay and recovery.

Secrets are printed only when an endpoint is created or its secret rotated, or with an
explicit ``--show-secret``.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

__all__ = ["register"]


def _endpoint_line(e: object, show_secret: bool) -> str:
    from ._models import Endpoint

    assert isinstance(e, Endpoint)
    state = "enabled" if e.enabled else f"disabled ({e.disabled_reason})"
    if e.enabled and e.failing_since is not None:
        state = f"failing since {e.failing_since:%Y-%m-%d %H:%M} ({e.failures} failures)"
    secret = e.secret.get_secret_value() if show_secret else "whsec_********"
    rotating = " +previous" if e.rotating else ""
    return (f"{e.id}  {e.url}  owner={e.owner or '-'}  types={','.join(e.event_types)}  {state}  "
            f"secret={secret}{rotating}")  # fmt: skip


def _list(args: argparse.Namespace) -> int:
    from ._endpoints import list_endpoints

    found = list_endpoints(owner=args.owner)
    for endpoint in found:
        print(_endpoint_line(endpoint, args.show_secret))
    if not found:
        print("no webhook endpoints")
    return 0


def _add(args: argparse.Namespace) -> int:
    from ._endpoints import add_endpoint

    endpoint = add_endpoint(
        args.url, event_types=args.event, owner=args.owner, description=args.description,
        rate_limit=args.rate_limit,
    )  # fmt: skip
    print(f"added {endpoint.id}")
    print(f"secret {endpoint.secret.get_secret_value()}  (give it to the receiver; it is not shown again)")
    return 0


def _disable(args: argparse.Namespace) -> int:
    from ._endpoints import disable_endpoint

    print(f"disabled {disable_endpoint(args.endpoint, reason=args.reason).id}")
    return 0


def _enable(args: argparse.Namespace) -> int:
    from ._endpoints import enable_endpoint

    print(f"enabled {enable_endpoint(args.endpoint).id}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from ._endpoints import rotate_secret

    secret = rotate_secret(args.endpoint, grace=timedelta(hours=args.grace_hours))
    print(f"secret {secret}  (the old one also signs for {args.grace_hours:g} h)")
    return 0


def _attempts(args: argparse.Namespace) -> int:
    from ._operations import attempts

    found = attempts(args.message)
    print(f"{'requested (UTC)':23} {'endpoint':35} {'#':>2} {'trigger':9} {'status':>6} {'ms':>6}  detail")
    for a in found:
        code = str(a.status_code) if a.status_code is not None else "-"
        detail = a.error or (a.response or "").replace("\n", " ")[:60]
        print(f"{a.requested_at:%Y-%m-%d %H:%M:%S.%f}"[:23] + f" {a.endpoint_id:35} {a.attempt:>2} "
              f"{a.trigger:9} {code:>6} {a.duration_ms:>6}  {detail}")  # fmt: skip
    if not found:
        print(f"no attempts for {args.message}")
    return 0


def _report(result: object) -> None:
    from ._operations import Replayed

    assert isinstance(result, Replayed)
    print(f"queued {len(result.queued)} delivery(ies)")
    for delivery, why in result.skipped.items():
        print(f"skipped {delivery}: {why}")


def _replay(args: argparse.Namespace) -> int:
    from ._operations import replay

    _report(replay(args.message, endpoint_id=args.endpoint))
    return 0


def _since(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO time like 2025-06-01T00:00Z, got {value!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _recover(args: argparse.Namespace) -> int:
    from ..progress import Progress
    from ._operations import recover

    with Progress("recover") as bar:
        result = recover(args.endpoint, since=args.since, progress=lambda n: bar.advance(n - bar.done))
    _report(result)
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``webhooks`` and its actions to the ``bgjobs`` parser."""
    hooks = commands.add_parser("webhooks", help="webhook endpoints, attempts, replay and recovery")
    actions = hooks.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")

    endpoints = actions.add_parser("endpoints", help="manage endpoints")
    ep = endpoints.add_subparsers(dest="endpoints_command", required=True, metavar="ACTION")
    listing = ep.add_parser("list", help="every endpoint, with its state")
    listing.add_argument("--owner", help="only this owner's endpoints")
    listing.add_argument("--show-secret", action="store_true", help="print signing secrets")
    listing.set_defaults(func=_list)
    add = ep.add_parser("add", help="add an endpoint and print its secret")
    add.add_argument("url", help="where to POST (https:// unless BGJOBS_WEBHOOKS__REQUIRE_HTTPS=false)")
    add.add_argument("--event", action="append", required=True, help="an event type or prefix.* (repeat)")
    add.add_argument("--owner", help="the merchant or tenant it belongs to")
    add.add_argument("--description", help="a note for operators")
    add.add_argument("--rate-limit", type=int, help="requests per second")
    add.set_defaults(func=_add)
    disable = ep.add_parser("disable", help="stop delivering to an endpoint")
    disable.add_argument("endpoint", help="the endpoint id (ep_...)")
    disable.add_argument("--reason", default="disabled by an operator", help="kept with the endpoint")
    disable.set_defaults(func=_disable)
    enable = ep.add_parser("enable", help="deliver to an endpoint again")
    enable.add_argument("endpoint", help="the endpoint id (ep_...)")
    enable.set_defaults(func=_enable)
    rotate = ep.add_parser("rotate-secret", help="new secret; the old one keeps signing for a grace period")
    rotate.add_argument("endpoint", help="the endpoint id (ep_...)")
    rotate.add_argument("--grace-hours", type=float, default=24.0, help="hours the old one also signs (24)")
    rotate.set_defaults(func=_rotate)

    log = actions.add_parser("attempts", help="the attempt log of a message")
    log.add_argument("message", metavar="MSG_ID", help="the webhook-id (msg_...)")
    log.set_defaults(func=_attempts)
    replay = actions.add_parser("replay", help="send a message again to its endpoints")
    replay.add_argument("message", metavar="MSG_ID", help="the webhook-id (msg_...)")
    replay.add_argument("--endpoint", help="only to this endpoint (default: all it went to)")
    replay.set_defaults(func=_replay)
    recover = actions.add_parser("recover", help="resend an endpoint's failed deliveries since a time")
    recover.add_argument("--endpoint", required=True, help="the endpoint id (ep_...)")
    recover.add_argument("--since", required=True, type=_since, help="ISO time, e.g. 2025-06-01T00:00Z")
    recover.set_defaults(func=_recover)
