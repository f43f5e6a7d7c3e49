"""The transactional outbox on real SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bgjobs import db, outbox
from bgjobs import settings as bgjobs_settings
from bgjobs.broker import build_broker
from bgjobs.errors import InvalidPayload
from bgjobs.runtime import set_broker
from bgjobs.settings import Settings
from bgjobs.testing import JobsHarness, stub_jobs
from tests.support import batch_jobs
from tests.support.processes import spawn


@pytest.fixture
def database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("BGJOBS_DATABASE_URL", database_url)
    bgjobs_settings.get_settings.cache_clear()
    batch_jobs.create_tables()
    return database_url


@pytest.fixture
def jobs(database: str) -> Iterator[JobsHarness]:
    batch_jobs.seen.clear()
    with stub_jobs(settings=Settings(broker_url="stub://")) as harness:
        yield harness


def test_a_rolled_back_transaction_enqueues_nothing(jobs: JobsHarness) -> None:
    with pytest.raises(RuntimeError), db.session() as s:
        outbox.defer(s, batch_jobs.record_note, {"text": "never"})
        raise RuntimeError("the host's request failed")
    assert outbox.relay_once() == 0
    jobs.drain()
    assert batch_jobs.delivery_count() == 0


def test_a_committed_job_and_event_are_delivered_once_each(jobs: JobsHarness) -> None:
    with db.session() as s:
        outbox.defer(s, batch_jobs.record_note, {"text": "hello"})
        outbox.defer(s, "order.placed", {"booking_id": 9, "email": "a@example.com"})
    assert outbox.pending() == 2
    assert outbox.relay_once() == 2
    assert outbox.relay_once() == 0
    jobs.drain()
    (delivery,) = batch_jobs.deliveries()
    assert delivery.what == "hello"
    assert delivery.key is not None and delivery.key.startswith("outbox:")
    assert sorted(batch_jobs.seen) == ["confirm:9", "webhook:9"]


def test_a_job_deferred_in_a_batch_block_joins_the_batch_and_a_rolled_back_one_holds_no_place(
    jobs: JobsHarness,
) -> None:
    import bgjobs
    from bgjobs import batches

    with bgjobs.batch(description="with the outbox") as b:
        batch_jobs.record_note.send({"text": "sent"})
        with db.session() as s:
            outbox.defer(s, batch_jobs.record_note, {"text": "deferred"})
            outbox.defer(s, "order.placed", {"booking_id": 1, "email": "a@example.com"})  # events join none
        with pytest.raises(RuntimeError), db.session() as s:
            outbox.defer(s, batch_jobs.record_note, {"text": "never"})
            raise RuntimeError("the host's request failed")
    jobs.drain()
    # The committed row holds its place until it is relayed and run; the rolled-back one gave it back
    s = batches.status(b.id)
    assert (s.state, s.total, s.succeeded, s.cancelled, s.pending) == ("running", 3, 1, 1, 1)
    assert outbox.relay_once() == 2
    jobs.drain()
    s = batches.status(b.id)
    assert (s.state, s.total, s.succeeded, s.cancelled, s.pending) == ("done", 3, 2, 1, 0)
    assert sorted(d.what for d in batch_jobs.deliveries()) == ["deferred", "sent"]


def test_a_row_relayed_twice_takes_effect_once(jobs: JobsHarness) -> None:
    # Given a relay that sent a batch and died before marking it sent
    with db.session() as s:
        row = outbox.defer(s, batch_jobs.record_note, {"text": "once"})
    messages = outbox._messages(row)
    jobs.broker.enqueue(messages[0])
    # When the next relay sends it again
    assert outbox.relay_once() == 1
    jobs.drain()
    # Then the receiving actor's idempotency check dropped the duplicate
    assert [d.what for d in batch_jobs.deliveries()] == ["once"]


def test_defer_validates_the_payload_in_the_host_request(jobs: JobsHarness) -> None:
    with pytest.raises(InvalidPayload, match="text"), db.session() as s:
        outbox.defer(s, batch_jobs.record_note, {"text": 5})
    assert outbox.pending() == 0


def test_two_relays_in_parallel_never_send_a_row_twice_on_postgresql(
    postgres: object, monkeypatch: pytest.MonkeyPatch, redis_url: str, tmp_path: Path
) -> None:
    from tests.support.postgres import PostgresCluster

    assert isinstance(postgres, PostgresCluster)
    url = postgres.create_database(f"bgjobs_relay_{id(tmp_path)}")
    monkeypatch.setenv("BGJOBS_DATABASE_URL", url)
    bgjobs_settings.get_settings.cache_clear()
    batch_jobs.create_tables()
    set_broker(build_broker(Settings(broker_url=redis_url)))
    with db.session() as s:
        for i in range(2_000):
            outbox.defer(s, batch_jobs.record_note, {"text": f"n{i}"})
    barrier = threading.Barrier(2)

    def relay() -> None:
        barrier.wait()
        while outbox.relay_once(batch_size=50):
            pass

    threads = [threading.Thread(target=relay) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client = redis.Redis.from_url(redis_url)
    assert outbox.pending() == 0
    assert client.llen("dramatiq:default") == 2_000
    assert client.hlen("dramatiq:default.msgs") == 2_000


def test_a_relay_killed_mid_batch_loses_nothing_and_duplicates_take_no_effect(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import random
    import signal
    import subprocess
    import sys

    from tests.support.workers import ROOT, WorkerProcess, wait_for

    env = {
        "BGJOBS_BROKER_URL": redis_url,
        "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'outbox.db'}",
        "BGJOBS_JOBS": '["tests.support.batch_jobs"]',
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bgjobs_settings.get_settings.cache_clear()
    batch_jobs.create_tables()
    rows = 1_000
    with db.session() as s:
        for i in range(rows):
            outbox.defer(s, batch_jobs.record_note, {"text": f"row{i}"})
    client = redis.Redis.from_url(redis_url)
    # Given relays SIGKILLed at random points, again and again
    rng = random.Random(7)
    for _ in range(4):
        relay = spawn(
            [sys.executable, "-m", "bgjobs.cli", "outbox", "relay", "--batch", "1"],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # Kill it while it is sending: once its first messages reach Redis, at a random moment.
        already = client.hlen("dramatiq:default.msgs")
        wait_for(lambda: client.hlen("dramatiq:default.msgs") > already, timeout=60, what="the relay to send")  # noqa: B023
        time.sleep(rng.random() * 0.2)
        relay.send_signal(signal.SIGKILL)
        relay.wait()
    sent_while_killing = client.hlen("dramatiq:default.msgs")
    # When a worker (which relays too) finishes the job
    worker = WorkerProcess(env, processes=2).start()
    try:
        wait_for(lambda: outbox.pending() == 0 and client.hlen("dramatiq:default.msgs") == 0, timeout=120,
                 what="the outbox and queue to drain")  # fmt: skip
    finally:
        worker.kill()
    # Then every row took effect exactly once
    texts = [d.what for d in batch_jobs.deliveries()]
    assert len(texts) == rows
    assert sorted(texts) == sorted(f"row{i}" for i in range(rows))
    assert sent_while_killing > 0


def test_a_commit_that_deferred_work_wakes_the_relay_and_a_rollback_does_not(
    database: str, redis_url: str
) -> None:
    set_broker(build_broker(Settings(broker_url=redis_url)))
    client = redis.Redis.from_url(redis_url)
    with pytest.raises(RuntimeError), db.session() as s:
        outbox.defer(s, batch_jobs.record_note, {"text": "rolled back"})
        raise RuntimeError("abort")
    assert client.llen("dramatiq:__bgjobs_outbox_wake__") == 0
    with db.session() as s:
        outbox.defer(s, batch_jobs.record_note, {"text": "a"})
        outbox.defer(s, batch_jobs.record_note, {"text": "b"})
    assert client.llen("dramatiq:__bgjobs_outbox_wake__") == 1
    relay = outbox.Relay(interval_s=5, batch_size=10)
    assert relay.run(until_empty=True) == 2


def test_defer_checks_an_event_against_its_declared_model(jobs: JobsHarness) -> None:
    with pytest.raises(InvalidPayload, match=r"event order\.placed: booking_id"), db.session() as s:
        outbox.defer(s, "order.placed", {"booking_id": "nine", "email": "a@example.com"})
    assert outbox.pending() == 0
