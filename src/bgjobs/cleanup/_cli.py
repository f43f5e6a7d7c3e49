"""``bgjobs cleanup run [--policy NAME] [--dry-run]``."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from .actors import run_cleanup

    report = run_cleanup(policy=args.policy, dry_run=args.dry_run)
    verb = "would" if args.dry_run else "did"
    print(f"{'policy':28} {'action':19} {'status':8} {'rows':>9} {'batches':>7} {'max tx ms':>9}  cutoff")
    for name, task in report["tasks"].items():
        print(f"{name:28} {verb + ' ' + task['action']:19} {task['status']:8} {task['rows']:>9} "
              f"{task['batches']:>7} {task['longest_transaction_ms']:>9}  {task['cutoff'][:19]}")  # fmt: skip
    if "logs" in report:
        logs = report["logs"]
        saved = logs["bytes_saved"]
        print(f"logs: {verb} compress {logs['files']} file(s), {saved} bytes saved ({logs['status']})")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``cleanup`` to the ``bgjobs`` parser."""
    parser = commands.add_parser("cleanup", help="retention policies and log compression")
    actions = parser.add_subparsers(dest="cleanup_command", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="apply the policies now (or one), printing what was done")
    run.add_argument("--policy", help="only this policy")
    run.add_argument("--dry-run", action="store_true", help="count what would go; change nothing")
    run.set_defaults(func=_run)
