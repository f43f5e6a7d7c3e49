"""``bgjobs exports list|show``."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _list(args: argparse.Namespace) -> int:
    from ._sender import exports

    print(f"{'id':29} {'created (UTC)':19} {'dataset':20} {'fmt':5} {'status':8} {'rows':>9}  key")
    for e in exports(dataset=args.dataset, limit=args.limit):
        rows = "-" if e.rows is None else str(e.rows)
        print(f"{e.id:29} {e.created_at:%Y-%m-%d %H:%M:%S} {e.dataset[:20]:20} {e.fmt:5} {e.status:8} "
              f"{rows:>9}  {e.storage_key}")  # fmt: skip
    return 0


def _show(args: argparse.Namespace) -> int:
    from ._sender import get

    info = get(args.export)
    for name, value in info.model_dump().items():
        print(f"{name}: {value}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``exports`` and its actions to the ``bgjobs`` parser."""
    parser = commands.add_parser("exports", help="exports: list them, show one")
    actions = parser.add_subparsers(dest="exports_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the latest exports")
    listing.add_argument("--dataset", help="only this dataset's exports")
    listing.add_argument("--limit", type=int, default=20, help="at most this many, newest first (20)")
    listing.set_defaults(func=_list)
    show = actions.add_parser("show", help="one export: status, rows, size, SHA-256, key, URL")
    show.add_argument("export", help="the export id (exp_...)")
    show.set_defaults(func=_show)
