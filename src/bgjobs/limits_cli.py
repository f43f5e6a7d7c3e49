"""``bgjobs limits show [ACTOR]``, ``bgjobs limits set ACTOR ...``, ``bgjobs limits reset ACTOR``: per-key
limits as they are now, and changed at run time without a restart (docs/controls.md). A change
is written to the console's audit log with the operating-system user who made it."""

from __future__ import annotations

import argparse
import getpass
import json

__all__ = ["register"]


def _show(args: argparse.Namespace) -> int:
    from .key_limits import keys, overview
    from .operator_cli import table

    if args.actor:
        found = keys(args.actor)
        if args.json:
            print(json.dumps(found, indent=2))
        elif not found:
            print(f"no key of {args.actor} holds a slot or has jobs waiting")
        else:
            busy = [(k["key"], k["running"], k["waiting"], "" if k["limit"] is None else k["limit"],
                     "" if not k["interval_ms"] else f"{60_000 / k['interval_ms']:g}/m",
                     "" if k["burst"] is None else k["burst"]) for k in found]  # fmt: skip
            print(table(("key", "running", "waiting", "own limit", "own rate", "own burst"), busy))
        return 0
    actors = overview()
    if args.json:
        print(json.dumps(actors, indent=2))
        return 0
    if not actors:
        print("no actor declares concurrency= or rate= (docs/controls.md)")
        return 0
    rows = [(a["actor"], ",".join(a["key"]), a["current"]["limit"] or "-", a["current"]["rate"] or "-",
             a["current"]["burst"], a["busy_keys"], a["waiting"], " ".join(a["changed"]) or "-")
            for a in actors]  # fmt: skip
    print(table(("actor", "key", "limit", "rate", "burst", "busy keys", "waiting", "changed"), rows))
    return 0


def _change(args: argparse.Namespace) -> int:
    from .audit import record
    from .key_limits import change

    reset = args.limits_command == "reset"
    given = {} if reset else {"limit": args.limit, "rate": args.rate, "burst": args.burst}
    done = change(args.actor, key=args.key, reset=reset, **given)
    detail = ", ".join(f"{k}={'none' if v is None else v}" for k, v in done.items() if k != "actor")
    resource = f"limits:{args.actor}" + (f"/{args.key}" if args.key else "")
    record(who=f"cli:{getpass.getuser()}", action="reset-limit" if reset else "set-limit", resource=resource,
           result="ok", detail=detail)  # fmt: skip
    print(f"{args.actor}: {detail}; workers use it from their next admission")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``limits`` to the ``bgjobs`` parser."""
    limits = commands.add_parser("limits", help="per-key limits: show them, or change them at run time")
    actions = limits.add_subparsers(dest="limits_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="each limited actor, or one actor's busy keys")
    show.add_argument("actor", nargs="?", help="one actor: its keys holding slots or with jobs waiting")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_show)
    change = actions.add_parser("set", help="change an actor's cap, rate or burst, or one key's own")
    change.add_argument("actor", help="the actor's name")
    change.add_argument("--key", help="one key's own limits (the key as `bgjobs limits show ACTOR` lists it)")
    change.add_argument("--limit", type=int, help="jobs at once per key; 0 holds every job in its lane")
    change.add_argument("--rate", help="starts per key, like 100/m or 5/s")
    change.add_argument("--burst", type=int, help="starts a key may take at once before its rate applies")
    change.set_defaults(func=_change)
    reset = actions.add_parser("reset", help="back to what the code declares")
    reset.add_argument("actor", help="the actor's name")
    reset.add_argument("--key", help="only this key's own limits (it takes the actor's again)")
    reset.set_defaults(func=_change)
