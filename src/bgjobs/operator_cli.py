"""The operator's commands: ``bgjobs status``, ``bgjobs dead-letters ...`` and ``bgjobs worker``."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import timedelta

from . import runtime
from .errors import UsageError

__all__ = ["register", "table"]

_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(c) for c in headers], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(isinstance(r[i], int | float) or r[i] is None for r in rows) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _age(value: str) -> timedelta:
    match = _AGE.match(value)
    if not match:
        raise argparse.ArgumentTypeError(f"expected an age like 30m, 12h, 7d or 2w, got {value!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _status(args: argparse.Namespace) -> int:
    from .status import status

    health = runtime.current().settings.health
    overrides = {k: v for k in ("max_dead_letters", "max_age_s", "min_workers")
                 if (v := getattr(args, k)) is not None}  # fmt: skip
    if overrides:
        health = health.model_copy(update=overrides)
    found = status(health=health)
    if args.json:
        print(json.dumps(found.as_dict(), indent=2))
        return 0 if found.healthy else 1
    rows = [(q.name, q.ready, q.delayed, q.in_flight, q.dead_letters, q.oldest_age_s, q.workers)
            for q in found.queues]  # fmt: skip
    print(table(("queue", "ready", "delayed", "in flight", "dead letters", "oldest (s)", "workers"), rows))
    print()
    if found.workers:
        print(table(
            ("worker", "host", "pid", "queues", "threads", "seen (s ago)"),
            [(w.id[:8], w.host, w.pid, ",".join(w.queues), w.threads, w.seen_s) for w in found.workers],
        ))  # fmt: skip
    else:
        print("no live worker")
    print(f"scheduler: {'running' if found.scheduler else 'not running'}")
    print("healthy" if found.healthy else "UNHEALTHY: " + "; ".join(found.problems))
    return 0 if found.healthy else 1


def _list(args: argparse.Namespace) -> int:
    from .deadletters import dead_letters

    found = dead_letters(queue=args.queue, actor=args.actor, kind=args.kind, limit=args.limit)
    if args.json:
        keep = ("message_id", "queue", "actor", "kind", "reason", "attempts")
        print(json.dumps([{**{k: getattr(d, k) for k in keep}, "failed_at": d.failed_at.isoformat()}
                          for d in found], indent=2))  # fmt: skip
        return 0
    if not found:
        print("no dead letters")
        return 0
    rows = [(d.message_id, d.queue, d.actor, f"{d.failed_at:%Y-%m-%d %H:%M:%S}", d.attempts,
             f"{d.kind}: {d.reason}") for d in found]  # fmt: skip
    print(table(("id", "queue", "actor", "failed at (UTC)", "attempts", "reason"), rows))
    return 0


def _show(args: argparse.Namespace) -> int:
    from .deadletters import find

    (letter,) = find([args.id])
    shown = {
        "queue": letter.queue, "redis_id": letter.redis_id, "failed_at": letter.failed_at.isoformat(),
        "kind": letter.kind, "reason": letter.reason, "attempts": letter.attempts, "message": letter.message,
        "traceback": letter.traceback,
    }  # fmt: skip
    print(json.dumps(shown, indent=2, default=str))
    return 0


def _requeue(args: argparse.Namespace) -> int:
    from .deadletters import count_matching, find, matching, requeue
    from .progress import Progress

    if args.all == bool(args.ids):
        raise UsageError("dead-letters requeue: give message ids or --all (not both)")
    if args.queue and not args.all:
        raise UsageError("dead-letters requeue: --queue goes with --all")
    # --all streams a page at a time: a million letters in bounded memory, resumable by running it again
    pages = matching(queue=args.queue) if args.all else iter([find(args.ids)])
    total = count_matching(queue=args.queue) if args.all else len(args.ids)
    selected = moved = 0
    with Progress("requeue", total=total) as bar:
        for page in pages:
            selected += len(page)
            moved += requeue(page, progress=bar.advance)
    print(f"requeued {moved} message(s)" + (f"; {selected - moved} were gone meanwhile or cannot run"
                                            if moved < selected else ""))  # fmt: skip
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from .cancels import cancel

    cancelled = cancel(args.id, by=args.by)
    print(f"cancelled {cancelled}: skipped if it is waiting; a running one sees bgjobs.cancelled()")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from .explain import explain

    for line in explain(args.id):
        print(line)
    return 0


def _reindex(args: argparse.Namespace) -> int:
    from .deadletters import reindex
    from .progress import Progress

    with Progress("reindex") as bar:
        done = reindex(queue=args.queue, progress=bar.advance)
    print(f"indexed {done} dead letter(s)")
    return 0


def _purge(args: argparse.Namespace) -> int:
    from .deadletters import purge
    from .progress import Progress

    with Progress("purge") as bar:
        removed = purge(queue=args.queue, older_than=args.older_than, progress=bar.advance)
    print(f"purged {removed} dead letter(s)")
    return 0


def _worker(args: argparse.Namespace) -> int:
    """Replace this process with ``dramatiq bgjobs.actors`` and the given flags."""
    argv = [sys.executable, "-m", "dramatiq", "bgjobs.actors", "--processes", str(args.processes),
            "--threads", str(args.threads), *args.dramatiq_args]  # fmt: skip
    os.execv(sys.executable, argv)  # noqa: S606
    return 0  # pragma: no cover


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``status``, ``dead-letters`` and ``worker`` to the ``bgjobs`` parser."""
    status = commands.add_parser(
        "status", help="queues, dead letters and live workers; exits 1 when a health threshold is crossed"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--max-dead-letters", type=int, metavar="N", help="override BGJOBS_HEALTH__MAX_DEAD_LETTERS"
    )
    status.add_argument("--max-age", dest="max_age_s", type=int, metavar="SECONDS",
                        help="override BGJOBS_HEALTH__MAX_AGE_S")  # fmt: skip
    status.add_argument("--min-workers", type=int, metavar="N", help="override BGJOBS_HEALTH__MIN_WORKERS")
    status.set_defaults(func=_status)

    letters = commands.add_parser("dead-letters", help="list, show, requeue or purge dead-lettered messages")
    actions = letters.add_subparsers(dest="dead_letters_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="newest first, with the reason each one failed")
    listing.add_argument("--queue", help="only this queue's (default, notifications, webhooks, ...)")
    listing.add_argument("--actor", help="only this actor's")
    listing.add_argument("--kind", help="only this kind (invalid, permanent, exhausted, poison, ...)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many, newest first (50)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_list)
    show = actions.add_parser("show", help="the whole message and its failure")
    show.add_argument("id", help="message id (or Redis id)")
    show.set_defaults(func=_show)
    requeue = actions.add_parser("requeue", help="put messages back on their queue with a fresh retry count")
    requeue.add_argument("ids", nargs="*", metavar="ID", help="message ids (from dead-letters list)")
    requeue.add_argument("--all", action="store_true", help="every dead letter (of --queue)")
    requeue.add_argument("--queue", help="with --all: only this queue's")
    requeue.set_defaults(func=_requeue)
    reindex = actions.add_parser(
        "reindex", help="index dead letters stored before bgjobs indexed them (once, after upgrading)"
    )
    reindex.add_argument("--queue", help="only this queue's")
    reindex.set_defaults(func=_reindex)
    purge = actions.add_parser("purge", help="delete dead letters")
    purge.add_argument("--older-than", type=_age, metavar="AGE", help="only those failed before, e.g. 7d")
    purge.add_argument("--queue", help="only this queue's")
    purge.set_defaults(func=_purge)

    cancel = commands.add_parser("cancel", help="cancel a job by its message id (skipped if waiting)")
    cancel.add_argument("id", help="the message id send() returned")
    cancel.add_argument("--by", default=f"cli:{getpass.getuser()}", help="who cancels (cli:<user>)")
    cancel.set_defaults(func=_cancel)
    why = commands.add_parser("explain", help="why a job is not running yet, or what became of it")
    why.add_argument("id", help="the message id send() returned")
    why.set_defaults(func=_explain)
    worker = commands.add_parser(
        "worker", help="run `dramatiq bgjobs.actors` with bgjobs's defaults; extra flags go to dramatiq"
    )
    worker.add_argument("--processes", "-p", type=int, default=os.cpu_count() or 1,
                        help="worker processes (one per CPU by default)")  # fmt: skip
    worker.add_argument("--threads", "-t", type=int, default=8, help="threads per process (8)")
    worker.add_argument("dramatiq_args", nargs=argparse.REMAINDER, metavar="...",
                        help="passed to dramatiq as they are (-Q webhooks, --watch src, ...)")  # fmt: skip
    worker.set_defaults(func=_worker)
