"""Fixtures for tests that run real workers on the session's Redis, and the browser tests' page."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bgjobs import runtime
from tests.support import worker_jobs
from tests.support.rabbitmq import RabbitNode, rabbitmq_node
from tests.support.workers import HEARTBEAT_TIMEOUT_S, WorkerProcess, remove_all


@pytest.fixture
def worker_env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings for workers running ``tests.support.worker_jobs``, applied to this process too."""
    env = {
        "BGJOBS_BROKER_URL": redis_url,
        "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "BGJOBS_JOBS": '["tests.support.worker_jobs"]',
        "BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS": str(HEARTBEAT_TIMEOUT_S * 1000),
        "BGJOBS_WORKER__MAINTENANCE_INTERVAL_MS": "500",
        "BGJOBS_WORKER__MAX_DELIVERIES": "3",
        "BGJOBS_RETRIES__MIN_BACKOFF_MS": "100",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    worker_jobs.create_tables()
    return env


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Workers started by the test (``start_worker``), killed at its end."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.kill()


@pytest.fixture(autouse=True)
def _remove_worker_processes() -> Iterator[None]:
    """Whatever a test did with the worker commands it made, none outlives it, nor do their logs."""
    yield
    remove_all()


@pytest.fixture(scope="session")
def rabbit() -> Iterator[RabbitNode]:
    """A RabbitMQ node for the session (Debian's rabbitmq-server; it fails loudly when missing)."""
    with rabbitmq_node() as node:
        yield node


@pytest.fixture
def rabbit_vhost(rabbit: RabbitNode) -> Iterator[RabbitNode]:
    """The session's RabbitMQ through a virtual host of this test's own."""
    with rabbit.fresh_vhost() as node:
        yield node


#: The engines every cross-process guarantee is tested on (docs/operating.md, "What works where").
ENGINES = ["redis", "rabbitmq"]


@pytest.fixture(params=ENGINES)
def engine_env(
    request: pytest.FixtureRequest, worker_env: dict[str, str], redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:  # fmt: skip
    """``worker_env`` on each engine: the Redis broker, then RabbitMQ with its coordination Redis."""
    if request.param == "redis":
        return worker_env
    node: RabbitNode = request.getfixturevalue("rabbit_vhost")
    env = {
        **worker_env,
        "BGJOBS_BROKER_URL": node.url(),
        "BGJOBS_COORDINATION_URL": redis_url,
        "BGJOBS_RABBITMQ__MANAGEMENT_URL": node.management_url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    return env


@pytest.fixture
def batch_env(engine_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``engine_env`` for workers running ``tests.support.batch_actors``, each run a line in
    ``TEST_RUNS_FILE``; applied to this process too."""
    from tests.support.workers import use_environment

    env = {**engine_env, "BGJOBS_JOBS": '["tests.support.batch_actors"]', "BGJOBS_METRICS__ENABLED": "false",
           "TEST_RUNS_FILE": str(tmp_path / "runs.txt")}  # fmt: skip
    use_environment(monkeypatch, env)
    return env


@pytest.fixture
def stub(harness: Any) -> Iterator[Any]:
    """The stub harness, with ``tests.support.batch_actors``'s in-process runs cleared around it."""
    from tests.support import batch_actors

    batch_actors.RUNS.clear()
    yield harness()
    batch_actors.RUNS.clear()


#: Flags that keep chromium off the network this machine does not have (see the tool library's notes).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is not installed (apt-get install chromium; .ci/run does)"
    return found


@pytest.fixture
def page(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser page; fails the test on any console error or failed request it saw, but those
    its ``expected_console_error`` marker names."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        tab = context.new_page()
        tab.on(
            "console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        tab.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        tab.on("dialog", lambda d: d.accept())  # confirmations are accepted, as a person would
        yield tab
        context.close()
        browser.close()
    expected = [m.args[0] for m in request.node.iter_markers("expected_console_error")]
    assert [e for e in errors if not any(text in e for text in expected)] == []
