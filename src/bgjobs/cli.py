"""The ``bgjobs`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dramatiq.errors import BrokerConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import SQLAlchemyError

from . import __version__
from .errors import BgjobsError, ConfigurationError, UsageError
from .jobs import UnknownArgument
from .settings import unknown_variables

__all__ = ["main"]


def _db_upgrade(args: argparse.Namespace) -> int:
    from . import db, migrations
    from .settings import get_settings

    if args.sql:
        migrations.upgrade_sql(get_settings().database_url, sys.stdout, start=args.start)
        return 0
    print(db.upgrade().describe())
    return 0


def _db_stamp(args: argparse.Namespace) -> int:
    from . import migrations

    print(f"recorded revision {migrations.stamp(args.revision)}; nothing else was changed")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    from . import migrations

    found, needed = migrations.current(), migrations.head()
    state = "head" if found == needed else f"behind: this bgjobs needs {needed}"
    print(f"{found or 'none'} ({state})")
    return 0


def _db_history(args: argparse.Namespace) -> int:
    from . import migrations

    for revision, follows, title in migrations.history():
        print(f"{follows or 'base'} -> {revision}  {title}")
    return 0


def _db_check(args: argparse.Namespace) -> int:
    from . import migrations

    problems = migrations.differences()
    for line in problems:
        print(line)
    if not problems:
        print(f"the database matches this bgjobs (revision {migrations.head()})")
    return 1 if problems else 0


#: Commands that read or write bgjobs's tables: they check the database's revision first.
NEEDS_TABLES = frozenset(
    {"scheduler", "runs", "outbox", "webhooks", "cleanup", "exports", "console", "portal"}
)
#: Commands that act on declared jobs, policies or datasets: they import the host's modules first.
LOADS_JOBS = frozenset({
    "scheduler", "trigger", "cleanup", "exports", "webhooks", "outbox", "status", "limits", "explain",
    "cancel",
})  # fmt: skip


def _load() -> None:
    from .settings import get_settings
    from .worker import load_modules

    load_modules(get_settings())


def _scheduler(args: argparse.Namespace) -> int:
    import logging

    from .scheduling import run_scheduler
    from .settings import get_settings

    if not logging.getLogger().handlers:  # say what it does: leading or waiting, each tick fired
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_scheduler(get_settings())


def _known_jobs() -> int:
    from .jobs import registered_jobs
    from .operator_cli import table

    found = sorted(registered_jobs().values(), key=lambda j: j.name)
    rows = [(j.name, j.schedule or "-", ((j.fn.__doc__ or "").strip().splitlines() or [""])[0])
            for j in found]  # fmt: skip
    print(table(("job", "default schedule", "what it does"), rows))
    print("\nbgjobs trigger JOB [--name value ...]   e.g. bgjobs trigger payouts.weekly --period 2025-W23")
    return 0


def _trigger(args: argparse.Namespace) -> int:
    from .families import trigger

    if args.job is None:
        return _known_jobs()
    pairs = dict(item.split("=", 1) for item in args.arg)
    print(trigger(args.job, **pairs).message_id)
    return 0


#: Jobs that run every few minutes to keep things moving; ``bgjobs runs`` hides them unless asked.
HOUSEKEEPING = frozenset({"outbox.relay", "webhooks.endpoint_health"})


def _summary(counts: dict[str, object], width: int = 60) -> str:
    """``sent=3 skipped=1 ...``: a run's figures on one short line (``bgjobs runs --job X`` for all)."""
    parts = [f"{k}={v}" for k, v in counts.items() if isinstance(v, int | float | str) and k != "duration_s"]
    nested = [k for k, v in counts.items() if isinstance(v, dict | list)]
    text = " ".join(parts + [f"{k}=..." for k in nested])
    return text if len(text) <= width else text[: width - 1] + "…"


def _runs(args: argparse.Namespace) -> int:
    from .operator_cli import table
    from .runs import recent

    found = recent(job=args.job, limit=args.limit if (args.job or args.all) else args.limit * 10)
    if not (args.job or args.all):
        found = [run for run in found if run.job not in HOUSEKEEPING][: args.limit]
    if not found:
        print(f"no runs of {args.job} yet" if args.job else "no runs yet")
        return 0
    rows = []
    for run in found:
        figures = run.figures
        seconds = figures.get("duration_s", run.duration_s)
        rows.append((f"{run.started_at:%Y-%m-%d %H:%M:%S}", run.job, run.trigger, run.outcome,
                     None if seconds is None else round(float(seconds), 1),
                     run.error or _summary(figures)))  # fmt: skip
    print(table(("started (UTC)", "job", "trigger", "outcome", "seconds", "counts / error"), rows))
    return 0


def _outbox_relay(args: argparse.Namespace) -> int:
    from .outbox import Relay
    from .settings import get_settings
    from .stopping import stop_on_signals

    _load()
    relay = Relay.from_settings(get_settings().outbox, batch_size=args.batch)
    with stop_on_signals():
        try:
            print(f"relayed {relay.run(until_empty=args.once)} row(s)")
        except KeyboardInterrupt:
            relay.stopped.set()
    return 0


def _arg(value: str) -> str:
    if "=" not in value:
        raise argparse.ArgumentTypeError(f"expected k=v, got {value!r}")
    return value


def _console(args: argparse.Namespace) -> int:
    try:
        from .console._serve import serve
    except ImportError as exc:
        raise ConfigurationError(
            f"the console needs the console extra ({exc.name} is missing): pip install 'bgjobs[console]'"
        ) from None
    return serve(host=args.host, port=args.port)


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
    upgrade = db_commands.add_parser(
        "upgrade", help="run bgjobs's migrations to head (adopting tables created before migrations)"
    )
    upgrade.add_argument("--sql", action="store_true", help="print the SQL for a DBA instead (PostgreSQL)")
    upgrade.add_argument("--start", metavar="REVISION", help="with --sql: the revision the database is at")
    upgrade.set_defaults(func=_db_upgrade)
    db_commands.add_parser("current", help="the database's bgjobs revision").set_defaults(func=_db_current)
    stamp = db_commands.add_parser(
        "stamp", help="record a revision without running anything (after applying 'upgrade --sql' by hand)"
    )
    stamp.add_argument("revision", help="the revision the database now has, e.g. 0005, or head")
    stamp.set_defaults(func=_db_stamp)
    history = db_commands.add_parser("history", help="every bgjobs revision, oldest first")
    history.set_defaults(func=_db_history)
    db_commands.add_parser(
        "check", help="exit 1, one line per difference, when the database is behind or differs from the code"
    ).set_defaults(func=_db_check)

    commands.add_parser(
        "scheduler", help="run the cron table (one per deployment; others wait)"
    ).set_defaults(func=_scheduler)
    trigger = commands.add_parser(
        "trigger", help="enqueue a batch job now and print its message id (job arguments as --name value)"
    )
    trigger.add_argument(
        "job", nargs="?",
        help="the job's name; 'bgjobs trigger' alone lists the known jobs (bgjobs's and BGJOBS_JOBS's). "
        "Job arguments follow it as --name value, e.g. payouts.weekly --period 2025-W23",
    )  # fmt: skip
    trigger.add_argument(
        "--arg", action="append", default=[], type=_arg, metavar="K=V", help="a job argument (as --K V)"
    )
    trigger.set_defaults(func=_trigger)
    runs = commands.add_parser("runs", help="recent batch runs with their counts")
    runs.add_argument("--job", help="only this job's runs (housekeeping jobs included)")
    runs.add_argument("--limit", type=int, default=20, help="at most this many, newest first (20)")
    runs.add_argument(
        "--all", action="store_true", help=f"include housekeeping runs ({', '.join(sorted(HOUSEKEEPING))})"
    )
    runs.set_defaults(func=_runs)
    outbox = commands.add_parser("outbox", help="the transactional outbox")
    outbox_commands = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    relay = outbox_commands.add_parser("relay", help="relay committed rows to the broker (until Ctrl-C)")
    relay.add_argument("--once", action="store_true", help="stop when no row is left")
    relay.add_argument("--batch", type=int, default=0, help="rows per transaction")
    relay.set_defaults(func=_outbox_relay)

    from .batch_cli import register as register_batches
    from .cleanup._cli import register as register_cleanup
    from .exports._cli import register as register_exports
    from .limits_cli import register as register_limits
    from .operator_cli import register as register_operator
    from .portal._serve import register as register_portal
    from .webhooks._cli import register as register_webhooks

    register_operator(commands)
    register_webhooks(commands)
    register_exports(commands)
    register_limits(commands)
    register_cleanup(commands)
    register_batches(commands)

    console = commands.add_parser("console", help="serve the operations console (web dashboard and JSON API)")
    console.add_argument("--host", help="address to listen on (BGJOBS_CONSOLE__HOST, 127.0.0.1); another "
                         "than loopback needs BGJOBS_CONSOLE__TOKEN or a user and password")  # fmt: skip
    console.add_argument("--port", type=int, help="port (BGJOBS_CONSOLE__PORT, 9181)")
    console.set_defaults(func=_console)
    register_portal(commands)

    dev = commands.add_parser("dev", help="run a worker on an embedded Redis and SQLite with sample jobs")
    dev.add_argument("--keep", action="store_true", help="keep running after the sample work (Ctrl-C stops)")
    dev.set_defaults(func=_dev)
    return parser


def _job_options(extra: list[str]) -> list[str]:
    """``bgjobs trigger JOB --period 2025-W23`` (or ``--period=2025-W23``): ``period=2025-W23``."""
    pairs, rest = [], list(extra)
    while rest:
        flag = rest.pop(0)
        if not flag.startswith("--") or len(flag) < 3:
            raise UsageError(f"trigger: unexpected {flag!r}; job arguments look like --name value")
        name, sep, value = flag[2:].partition("=")
        if not sep:
            if not rest:
                raise UsageError(f"trigger: {flag} needs a value")
            value = rest.pop(0)
        pairs.append(f"{name.replace('-', '_')}={value}")
    return pairs


#: Commands that send messages, so record their ``send`` spans with tracing on (the worker's
#: processes set theirs up themselves).
TRACED = ("scheduler", "trigger", "console", "dead-letters")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    for line in unknown_variables(os.environ):
        print(f"bgjobs: warning: {line}", file=sys.stderr)
    try:
        if extra:
            if args.command == "worker":
                args.dramatiq_args = [*extra, *args.dramatiq_args]
            elif args.command == "trigger":
                args.arg = [*args.arg, *_job_options(extra)]
            else:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command in NEEDS_TABLES:
            from .migrations import require_current

            require_current()
        if args.command in LOADS_JOBS:
            _load()  # the host's BGJOBS_JOBS and BGJOBS_SETUP, as the worker loads them
        if args.command in TRACED:
            from . import tracing
            from .settings import get_settings

            tracing.setup_process(get_settings())
        code = int(args.func(args))
        sys.stdout.flush()  # here, where a reader that left is caught, not at the interpreter's exit
        return code
    except UnknownArgument as exc:
        print(f"bgjobs: trigger: {exc.line(flags=True)}", file=sys.stderr)
        return 2
    except BgjobsError as exc:
        print(f"bgjobs: {exc}", file=sys.stderr)
        return 2
    except (RedisConnectionError, BrokerConnectionError) as exc:
        from .redis_connections import explain_for
        from .settings import get_settings

        settings = get_settings()
        print(f"bgjobs: {explain_for(exc, settings.broker_url, settings.coordination_url)}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        from .db import unreachable

        print(f"bgjobs: {unreachable(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader left (`bgjobs status | head`): nothing to say, and nothing more to write;
        # stdout points at /dev/null so the interpreter's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # as a process killed by SIGPIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
