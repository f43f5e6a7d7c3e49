"""Development tasks: ``nox`` runs lint, typecheck and tests; ``nox -s bench`` the benchmarks."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite against real Redis, SQLite, PostgreSQL, SMTP and HTTP servers on loopback."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", "--durations=15", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "docs/hooks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict", "src")


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark, each comparing bgjobs with the obvious alternative in the same run."""
    session.install("-e", ".[dev]")
    scripts = ("overhead", "tracing", "latency", "fanout", "outbox", "notifications", "failover", "webhooks",
               "webhook_fairness", "payouts", "exports", "cleanup", "deadletters", "imports",
               "console")  # fmt: skip
    for script in scripts:
        session.run("python", f"benchmarks/{script}.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The docs site in build/site; fails on broken links or anchors and on undocumented settings."""
    session.install("-e", ".[dev]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """A worker on an embedded Redis and SQLite doing real jobs, then a summary."""
    session.install("-e", ".[embedded,console]")
    session.run("bgjobs", "dev", *session.posargs)
