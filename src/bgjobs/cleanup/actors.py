"""Cleanup's scheduled job: every policy, then log compression, in one audited run."""

from __future__ import annotations

import time
from typing import Any

from .. import runtime
from ..jobs import JobArguments, JobContext, job
from ._compress import compress_logs
from ._policies import policies
from ._service import run_policy

__all__ = ["cleanup_daily", "run_cleanup"]


def run_cleanup(
    *, policy: str | None = None, dry_run: bool = False, deadline: float | None = None
) -> dict[str, Any]:
    """Run the policies (or one) and the log compression; returns the report, task by task."""
    from ..errors import ConfigurationError

    settings = runtime.current().settings
    chosen = [p for p in policies(settings) if policy is None or p.name == policy]
    if policy is not None and not chosen:
        raise ConfigurationError(f"no cleanup policy named {policy!r}")
    tasks: dict[str, Any] = {}
    for p in chosen:
        tasks[p.name] = run_policy(
            p, dry_run=dry_run, batch_size=settings.cleanup.batch_size, deadline=deadline
        )
    report: dict[str, Any] = {"tasks": tasks, "dry_run": dry_run}
    if policy is None and settings.cleanup.log_dirs:
        c = settings.cleanup
        report["logs"] = compress_logs(c.log_dirs, pattern=c.log_glob, older_than_days=c.compress_after_days,
                                       dry_run=dry_run, deadline=deadline)  # fmt: skip
    if policy is None and not dry_run:
        report["stale_parts"] = _remove_stale_parts(deadline)
    statuses = [t["status"] for t in tasks.values()] + [report.get("logs", {}).get("status", "done")]
    report["status"] = "stopped" if "stopped" in statuses else "dry-run" if dry_run else "done"
    return report


#: A storage upload's temporary file older than this was left by a killed upload.
STALE_PART_S = 86_400


def _remove_stale_parts(deadline: float | None) -> int | str:
    """What killed uploads left on a storage that keeps temporary files (SFTP), never retried."""
    from .. import wiring

    try:
        remove = getattr(wiring.storage(), "remove_stale_parts", None)
        return 0 if remove is None else int(remove(older_than_s=STALE_PART_S, deadline=deadline))
    except Exception as exc:  # the policies' work stands; the next run tries again
        return f"failed ({exc})"


class CleanupArguments(JobArguments):
    #: One retention policy by name; every policy without it.
    policy: str | None = None
    #: Count what would go, delete nothing.
    dry_run: bool = False


@job("cleanup.daily", schedule="0 2 * * *", queue="cleanup", arguments=CleanupArguments)
def cleanup_daily(ctx: JobContext) -> dict[str, Any]:
    """Apply every retention policy (--policy NAME: one; --dry-run true: count only) until the budget.

    The budget is the job's time limit less 60 s (at least 1 s): a run stopped by it is recorded
    ``stopped`` and continues in a follow-up run, so a large backlog is deleted over several runs.
    """

    limit_ms = runtime.current().settings.limits_for("cleanup.daily", "cleanup").time_limit_ms
    deadline = ctx.deadline or time.monotonic() + max(1.0, limit_ms / 1000 - 60)
    args = ctx.arguments if isinstance(ctx.arguments, CleanupArguments) else CleanupArguments()
    report = run_cleanup(policy=args.policy, dry_run=args.dry_run, deadline=deadline)
    if report["status"] == "stopped":
        ctx.continue_later(**ctx.args)
    return report
