"""Real parts for the suite: a redis-server, SQLite files, a PostgreSQL cluster.

A missing server makes its tests fail loudly, never skip.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bgjobs import cleanup, db, runtime
from bgjobs.embedded import RedisServer
from bgjobs.settings import (
    ActorSettings,
    KeyLimitSettings,
    NotificationSettings,
    PayoutSettings,
    PortalSettings,
    RetrySettings,
    Settings,
    TracingSettings,
    WebhookSettings,
)
from bgjobs.testing import JobsHarness, stub_jobs
from bgjobs.webhooks import _transport as webhook_transport
from tests.support import processes
from tests.support.postgres import PostgresCluster

_db_counter = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    """Each process that runs tests adopts what its children orphan (not the xdist controller,
    whose children are the workers)."""
    controller = not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", 0))
    if not controller:
        processes.become_subreaper()


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_behind() -> Iterator[None]:
    """The run fails, naming them, if any process the suite started is alive at its end (they are
    killed first, so none outlives it either way)."""
    yield
    processes.stop_session_processes()
    left = processes.leftovers()
    processes.kill_leftovers()
    assert left == [], f"processes the tests started were still running at the end: {left}"


@pytest.fixture(autouse=True)
def _stop_what_the_test_started() -> Iterator[None]:
    """Every process group the test spawned is killed and waited for, whatever the test did."""
    yield
    processes.stop_test_processes()


@pytest.fixture(autouse=True)
def _clean_bgjobs_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test starts with no BGJOBS_* variables and no runtime (settings, broker, adapters)."""
    for name in list(os.environ):
        if name.startswith("BGJOBS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # so no stray .env or bgjobs.db is read or written
    runtime.reset()
    cleanup.reset()
    yield
    runtime.reset()


@pytest.fixture(scope="session")
def host_spans() -> Any:
    """This test process as a traced host app: an SDK tracer provider (set once per process, as
    OpenTelemetry allows) whose spans (a request's, bgjobs's ``send``) are kept in memory."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A Redis URL with an empty database."""
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bgjobs.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database(f"bgjobs_test_{os.getpid()}_{next(_db_counter)}")


@pytest.fixture
def harness(database_url: str) -> Iterator[Callable[..., JobsHarness]]:
    """Start a stub worker with memory adapters on a fresh database; notification settings by keyword,
    webhook and payout settings as ``webhooks=`` and ``payouts=``."""
    stack: list[Any] = []

    def start(
        *, webhooks: WebhookSettings | None = None, payouts: PayoutSettings | None = None,
        actors: dict[str, ActorSettings] | None = None, tracing: bool = False,
        portal: PortalSettings | None = None, key_limits: dict[str, KeyLimitSettings] | None = None,
        **notification_settings: Any,
    ) -> JobsHarness:  # fmt: skip
        settings = Settings(
            broker_url="stub://", database_url=database_url,
            retries=RetrySettings(max_retries=3, min_backoff_ms=10, max_backoff_ms=20, time_limit_ms=60_000),
            notifications=NotificationSettings(**notification_settings),
            webhooks=webhooks or WebhookSettings(), payouts=payouts or PayoutSettings(), actors=actors or {},
            tracing=TracingSettings(enabled=tracing), portal=portal or PortalSettings(),
            key_limits=key_limits or {},
        )  # fmt: skip
        db.upgrade(db.engine_for(database_url))
        context = stub_jobs(settings=settings)
        stack.append(context)
        return context.__enter__()

    yield start
    webhook_transport.close()
    for context in reversed(stack):
        context.__exit__(None, None, None)
