"""``bgjobs batches|workflows list|show|cancel``: the batches and workflows operators can see and stop
(docs/batches.md)."""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def _list(args: argparse.Namespace) -> int:
    from .batches import recent
    from .operator_cli import table

    found = recent(args.limit)
    if args.json:
        print(json.dumps([s.as_dict() for s in found], indent=2))
        return 0
    if not found:
        print("no batches (finished ones are kept 7 days)")
        return 0
    rows = [(s.id, s.state + (" (cancelled)" if s.cancel_requested else ""), s.total, s.pending,
             s.succeeded, s.failed, s.cancelled, f"{s.created_at:%Y-%m-%d %H:%M:%S}", s.description)
            for s in found]  # fmt: skip
    print(table(("id", "state", "total", "pending", "succeeded", "failed", "cancelled", "created (UTC)",
                 "description"), rows))  # fmt: skip
    return 0


def _show(args: argparse.Namespace) -> int:
    from .batches import status

    print(json.dumps(status(args.id).as_dict(), indent=2))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from .batches import cancel

    s = cancel(args.id)
    print(f"cancelled {s.id}: {s.pending} job(s) not started yet will be skipped; its callbacks run once "
          "every job is counted")  # fmt: skip
    return 0


def _list_workflows(args: argparse.Namespace) -> int:
    from .operator_cli import table
    from .workflows import recent

    found = recent(args.limit)
    if args.json:
        print(json.dumps([s.as_dict() for s in found], indent=2))
        return 0
    if not found:
        print("no workflows (runs are kept 7 days)")
        return 0
    rows = []
    for s in found:
        failed = s.failed_step
        why = "" if failed is None else f"{failed.actor}: {failed.reason}"
        rows.append((s.id, s.state, f"{s.stage + 1} of {len(s.stages)}", f"{s.created_at:%Y-%m-%d %H:%M:%S}",
                     s.description, why))  # fmt: skip
    print(table(("id", "state", "stage", "created (UTC)", "description", "failed step"), rows))
    return 0


def _show_workflow(args: argparse.Namespace) -> int:
    from .workflows import status

    print(json.dumps(status(args.id).as_dict(), indent=2))
    return 0


def _cancel_workflow(args: argparse.Namespace) -> int:
    from .workflows import cancel

    s = cancel(args.id)
    print(f"{s.id} is {s.state}: steps not started yet are skipped and no later stage starts")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``batches`` and ``workflows`` to the ``bgjobs`` parser."""
    batches = commands.add_parser("batches", help="list, show or cancel batches of jobs")
    actions = batches.add_subparsers(dest="batches_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the newest batches first, with their counts")
    listing.add_argument("--limit", type=int, default=50, help="at most this many, newest first (50)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_list)
    show = actions.add_parser("show", help="one batch's state and counts, as JSON")
    show.add_argument("id", help="the batch id (b_...)")
    show.set_defaults(func=_show)
    cancel = actions.add_parser(
        "cancel", help="skip the batch's jobs not started yet; its callbacks still run"
    )
    cancel.add_argument("id", help="the batch id (b_...)")
    cancel.set_defaults(func=_cancel)
    runs = commands.add_parser("workflows", help="list, show or cancel workflow runs")
    actions = runs.add_subparsers(dest="workflows_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the newest runs first, with their state")
    listing.add_argument("--limit", type=int, default=50, help="at most this many, newest first (50)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_list_workflows)
    show = actions.add_parser("show", help="one run's stages and each step's state, as JSON")
    show.add_argument("id", help="the workflow id (w_...)")
    show.set_defaults(func=_show_workflow)
    cancel = actions.add_parser("cancel", help="skip the steps not started yet; no later stage starts")
    cancel.add_argument("id", help="the workflow id (w_...)")
    cancel.set_defaults(func=_cancel_workflow)
