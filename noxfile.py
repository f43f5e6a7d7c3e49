"""Development tasks: ``nox`` runs lint, typecheck and tests; ``nox -s bench`` the benchmarks.

Every session but ``tests-latest`` installs exactly what ``uv.lock`` pins (``uv sync --locked``), so
a fresh machine tests what was developed against, and a lock that no longer matches pyproject.toml
fails at once instead of resolving something new. ``tests-latest`` installs the newest releases
the ranges in pyproject.toml allow: it is how the lock is refreshed (docs/development.md).
"""

from __future__ import annotations

import os

import nox

# uv installs without compiling bytecode, and with PYTHONDONTWRITEBYTECODE set (as on CI's machines)
# nothing would ever be cached: every worker, command and server the suite starts would compile its
# imports from source again. Compiled at install, a process imports bgjobs in half the time.
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")
#: The suite's own processes may cache this checkout's bytecode too (an empty value means unset).
SUITE_ENV = {"PYTHONDONTWRITEBYTECODE": ""}

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "uv"

LINTED = ("src", "tests", "benchmarks", "examples", "docs/hooks", "noxfile.py", "conftest.py")


def _locked(session: nox.Session, *extras: str) -> None:
    """This checkout (editable) and exactly the versions uv.lock pins for ``extras``, nothing else."""
    session.run_install(
        "uv", "sync", "--locked", *(f"--extra={extra}" for extra in extras),
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location, "UV_PYTHON_DOWNLOADS": "never"},
    )  # fmt: skip


def _pytest(session: nox.Session) -> None:
    """The suite in two worker processes (each starts its own servers on its own ports), with the
    slowest tests in the log and a JUnit report in the session's folder."""
    report = os.path.join(session.virtualenv.location, "junit.xml")
    args = session.posargs or ["-n", "2"]
    session.run("python", "-m", "pytest", "--durations=25", f"--junitxml={report}", *args, env=SUITE_ENV)
    if not session.posargs:  # every Python block of the docs, in order, one page at a time (conftest.py)
        session.run("python", "-m", "pytest", "-p", "no:xdist", "docs", "README.md", env=SUITE_ENV)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite against real Redis, SQLite, PostgreSQL, SMTP and HTTP servers on loopback."""
    _locked(session, "dev")
    _pytest(session)


@nox.session
def lint(session: nox.Session) -> None:
    _locked(session, "dev")
    session.run("ruff", "check", *LINTED)


@nox.session
def typecheck(session: nox.Session) -> None:
    _locked(session, "dev")
    session.run("mypy", "--strict", "src")


@nox.session(name="tests-latest")
def tests_latest(session: nox.Session) -> None:
    """Lint, typecheck and the suite on the newest releases pyproject.toml allows, ignoring the lock:
    green here, ``uv lock --upgrade`` refreshes the lock to them (docs/development.md)."""
    session.install("--upgrade", "--resolution=highest", "-e", ".[dev]")
    session.run("ruff", "check", *LINTED)
    session.run("mypy", "--strict", "src")
    _pytest(session)


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark, each comparing bgjobs with the obvious alternative in the same run."""
    _locked(session, "dev")
    scripts = ("overhead", "tracing", "latency", "fanout", "outbox", "notifications", "failover", "webhooks",
               "webhook_fairness", "payouts", "exports", "cleanup", "deadletters", "imports",
               "console", "replicas", "batches", "batch_chaos", "controls", "key_limits")  # fmt: skip
    for script in scripts:
        session.run("python", f"benchmarks/{script}.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The docs site in build/site; fails on broken links or anchors and on undocumented settings."""
    _locked(session, "dev")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """A worker on an embedded Redis and SQLite doing real jobs, then a summary."""
    _locked(session, "embedded", "console")
    session.run("bgjobs", "dev", *session.posargs)
