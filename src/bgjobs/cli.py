"""The ``bgjobs`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import BgjobsError

__all__ = ["main"]


def _db_upgrade(args: argparse.Namespace) -> int:
    from .db import upgrade

    for name in upgrade():
        print(name)
    return 0


def _dev(args: argparse.Namespace) -> int:
    from .dev import run

    return run(keep=args.keep)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgjobs",
        description="Operate bgjobs. Run workers with: dramatiq bgjobs.actors",
    )
    parser.add_argument("--version", action="version", version=f"bgjobs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = commands.add_parser("db", help="manage bgjobs's tables")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="create missing bgjobs_* tables").set_defaults(func=_db_upgrade)

    dev = commands.add_parser("dev", help="run a worker on an embedded Redis and SQLite with sample jobs")
    dev.add_argument("--keep", action="store_true", help="keep running after the sample work (Ctrl-C stops)")
    dev.set_defaults(func=_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BgjobsError as exc:
        print(f"bgjobs: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
