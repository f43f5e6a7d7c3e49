"""Webhooks through real ``dramatiq bgjobs.actors`` workers on a real Redis and SQLite, to real
endpoints on 127.0.0.1: a slow endpoint does not hold up the others, and SIGKILLed workers
lose no delivery and never change a ``webhook-id``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from bgjobs import db, webhooks
from bgjobs.webhooks import _models as webhook_tables
from tests.support.receivers import WebhookReceiver, webhook_receiver
from tests.support.workers import WorkerProcess, use_environment, wait_for


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


def environment(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: str
) -> dict[str, str]:
    env = {
        "BGJOBS_BROKER_URL": redis_url,
        "BGJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'webhooks.db'}",
        "BGJOBS_WEBHOOKS__REQUIRE_HTTPS": "false",
        "BGJOBS_WEBHOOKS__ALLOW": '["127.0.0.1/32"]',
        "BGJOBS_METRICS__ENABLED": "false",
        **extra,
    }
    use_environment(monkeypatch, env)
    return env


def test_a_slow_endpoint_never_delays_deliveries_to_healthy_ones(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver
) -> None:
    # Given one endpoint that hangs past the 2 s timeout, and five healthy ones, on 4 worker threads
    env = environment(redis_url, tmp_path, monkeypatch, BGJOBS_WEBHOOKS__TIMEOUT_S="2",
                      BGJOBS_WEBHOOKS__ENDPOINT_CONCURRENCY="1")  # fmt: skip
    receiver.always("/slow", "sleep:6")
    webhooks.add_endpoint(receiver.url("/slow"), event_types=["*"])
    healthy = [f"/ok{i}" for i in range(5)]
    for path in healthy:
        webhooks.add_endpoint(receiver.url(path), event_types=["*"])

    # When ten events go to all six
    for n in range(10):
        webhooks.publish("order.placed", {"n": n})
    worker = WorkerProcess(env, processes=1, threads=4).start()
    try:
        wait_for(lambda: sum(len(receiver.received(p)) for p in healthy) == 50, timeout=60,
                 what="the healthy deliveries")  # fmt: skip
        done = max(r.at for p in healthy for r in receiver.received(p))
        slow = receiver.received("/slow")
    finally:
        worker.stop()

    # Then the healthy deliveries did not wait for the slow endpoint: the slow one held one thread
    # (its concurrency cap), never the four. Uncapped, ten slow attempts of 2 s on four threads
    # hold every thread for 5 s and more; 4 s leaves a loaded machine room for the 50 healthy ones
    # (a CI run took 2.2 s).
    first_slow = min(r.at for r in slow)
    assert done < first_slow + 4, (
        f"healthy deliveries finished {done - first_slow:.1f}s after the first slow one"
    )
    assert len([r for r in slow if r.at < first_slow + 1.9]) == 1


def test_sigkilled_workers_lose_no_delivery_and_never_change_a_webhook_id(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver
) -> None:
    env = environment(
        redis_url, tmp_path, monkeypatch,
        # A killed worker's messages come back after 2 s; its attempts' leases end after 8 s.
        BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS="2000", BGJOBS_WORKER__MAINTENANCE_INTERVAL_MS="500",
        BGJOBS_WEBHOOKS__TIME_LIMIT_MS="3000", BGJOBS_WEBHOOKS__ENDPOINT_CONCURRENCY="8",
    )  # fmt: skip
    paths = [f"/e{i}" for i in range(10)]
    for path in paths:
        webhooks.add_endpoint(receiver.url(path), event_types=["order.*"])
    # A fan-out of 1,000 deliveries: 100 messages to 10 endpoints
    ids = {n: webhooks.publish("order.placed", {"n": n}) for n in range(100)}
    expected = {(message_id, path) for message_id in ids.values() for path in paths}

    def pairs() -> set[tuple[str, str]]:
        return {(r.headers["webhook-id"], r.path) for r in receiver.received()}

    kills = []
    for threshold in (0.25, 0.6):
        worker = WorkerProcess(env, processes=2, threads=4).start()
        try:
            wait_for(lambda t=threshold: len(pairs()) >= t * len(expected), timeout=120,
                     what=f"{threshold:.0%} of the deliveries", interval=0.01)  # fmt: skip
        finally:
            worker.kill()
        kills.append(len(pairs()))
    assert kills[-1] < len(expected), "the fan-out finished before the second kill; nothing was interrupted"

    worker = WorkerProcess(env, processes=2, threads=4).start()
    try:
        wait_for(lambda: pairs() == expected, timeout=180, what="every delivery")
        wait_for(lambda: all(d.status == "delivered" for d in all_deliveries()), timeout=60,
                 what="every delivery to be recorded")  # fmt: skip
    finally:
        worker.stop()

    # Each request carried the id of the message whose body it carried, on every copy
    for request in receiver.received():
        assert request.headers["webhook-id"] == ids[json.loads(request.body)["data"]["n"]]
    # The log is consistent: one success per delivery, no attempt number logged twice, and
    # never more attempts logged than started
    log = all_attempts()
    successes = Counter(a.delivery_id for a in log if a.succeeded)
    deliveries = all_deliveries()
    assert len(deliveries) == 1000
    assert set(successes.values()) == {1}
    assert set(successes) == {d.id for d in deliveries}
    assert len({(a.delivery_id, a.attempt) for a in log}) == len(log)
    logged = Counter(a.delivery_id for a in log)
    assert all(logged[d.id] <= d.attempts for d in deliveries)
    copies = sum(Counter((r.headers["webhook-id"], r.path) for r in receiver.received()).values()) - 1000
    print(f"kills after {kills} deliveries; {copies} copies received, each with its original webhook-id")


def all_deliveries() -> list[webhook_tables.WebhookDelivery]:
    with db.session() as s:
        return list(s.exec(select(webhook_tables.WebhookDelivery)))


def all_attempts() -> list[webhook_tables.WebhookAttempt]:
    with db.session() as s:
        return list(s.exec(select(webhook_tables.WebhookAttempt)))
