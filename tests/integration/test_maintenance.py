"""The maintenance script on a real Redis: recovery, the poison guard, heartbeats, expiry."""

from __future__ import annotations

import json
import time

import dramatiq
import pytest
import redis

from bgjobs.redis_broker import BgjobsRedisBroker
from bgjobs.settings import WorkerSettings
from tests.support.workers import WorkerProcess, wait_for

SETTINGS = WorkerSettings(heartbeat_timeout_ms=1_000, max_deliveries=2, dead_message_ttl_ms=60_000)


def _broker(url: str) -> BgjobsRedisBroker:
    broker = BgjobsRedisBroker(url=url, worker=SETTINGS)
    broker.declare_queue("q")
    return broker


def _later() -> int:
    """A moment past the heartbeat timeout (1 s) of a worker that beat just now."""
    return int(time.time() * 1000) + 1_100


def _fetch_and_die(url: str, *, redelivered: bool | None = None) -> str:
    """A worker that takes the message (handed out as ``redelivered``, when given) and then goes
    silent."""
    dying = _broker(url)
    message = next(dying.consume("q", prefetch=1, timeout=100))
    assert redelivered is None or message.redelivered is redelivered
    return str(message.options["redis_message_id"])


def test_a_dead_workers_message_is_recovered_then_dead_lettered_after_max_deliveries(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    survivor = _broker(redis_url)
    survivor.enqueue(dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))

    # First delivery dies: after the heartbeat timeout, the message is back on the queue.
    rid = _fetch_and_die(redis_url, redelivered=False)
    assert survivor.run_maintenance().recovered == 0  # the dead worker is not yet timed out
    assert survivor.run_maintenance(now_ms=_later()).recovered == 1
    assert client.lrange("dramatiq:q", 0, -1) == [rid.encode()]

    # Second delivery (marked as one that may have run: a per-key slot is checked again) dies too:
    # max_deliveries=2, so it is dead-lettered with the reason.
    assert _fetch_and_die(redis_url, redelivered=True) == rid
    assert client.scard("dramatiq:q.redelivered") == 0  # the mark went with the fetch
    report = survivor.run_maintenance(now_ms=_later())
    assert (report.recovered, report.dead_lettered) == (0, 1)
    assert client.llen("dramatiq:q") == 0
    assert client.zrange("dramatiq:q.XQ", 0, -1) == [rid.encode()]
    assert b"ran 2 times without finishing" in client.hget("dramatiq:q.XQ.reasons", rid)
    assert client.hlen("dramatiq:__bgjobs_deliveries__") == 0
    # And indexed in the same script: found by its message id, by its actor and by its kind
    message_id, actor, kind = client.hget("dramatiq:q.XQ.meta", rid).decode().split("\t")
    assert (actor, kind) == ("a", "poison") and client.hget("dramatiq:q.XQ.ids", message_id) == rid.encode()
    assert client.zrange("dramatiq:q.XQ.by:kind:poison", 0, -1) == [rid.encode()]


def test_a_poison_letter_past_the_cap_drops_the_oldest(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    capped = BgjobsRedisBroker(url=redis_url, worker=SETTINGS.model_copy(update={"max_dead_letters": 1}))
    capped.declare_queue("q")
    client.zadd("dramatiq:q.XQ", {"old-letter": 1})
    client.hset("dramatiq:q.XQ.msgs", "old-letter", "{}")
    capped.enqueue(dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    rid = _fetch_and_die(redis_url)
    capped.run_maintenance(now_ms=_later())
    assert _fetch_and_die(redis_url) == rid
    assert capped.run_maintenance(now_ms=_later()).dead_lettered == 1
    assert client.zrange("dramatiq:q.XQ", 0, -1) == [rid.encode()]  # the older one made room
    assert not client.hexists("dramatiq:q.XQ.msgs", "old-letter")


def test_maintenance_heartbeats_so_a_busy_worker_is_not_declared_dead(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    busy = _broker(redis_url)
    busy.enqueue(dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    next(busy.consume("q", prefetch=1, timeout=100))
    for _ in range(3):  # a long job: no fetches, but the maintenance thread keeps beating
        time.sleep(0.5)
        busy.run_maintenance()
    other = _broker(redis_url)
    assert other.run_maintenance().recovered == 0
    assert client.scard(f"dramatiq:__acks__.{busy.broker_id}.q") == 1


def test_delivery_counts_of_finished_messages_are_forgotten(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    survivor = _broker(redis_url)
    survivor.enqueue(dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    _fetch_and_die(redis_url)
    time.sleep(1.1)
    survivor.run_maintenance()
    assert client.hlen("dramatiq:__bgjobs_deliveries__") == 1
    consumer = survivor.consume("q", prefetch=1, timeout=100)
    consumer.ack(next(consumer))
    consumer.send_acks()
    survivor.run_maintenance()
    assert client.hlen("dramatiq:__bgjobs_deliveries__") == 0


def test_old_dead_letters_expire_with_their_reasons(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    broker = _broker(redis_url)
    client.zadd("dramatiq:q.XQ", {"old": 1, "new": int(time.time() * 1000)})
    client.hset("dramatiq:q.XQ.msgs", mapping={"old": "{}", "new": "{}"})
    client.hset("dramatiq:q.XQ.reasons", mapping={"old": "{}", "new": "{}"})
    broker.run_maintenance()
    assert client.zrange("dramatiq:q.XQ", 0, -1) == [b"new"]
    assert client.hkeys("dramatiq:q.XQ.reasons") == [b"new"]


def test_a_worker_that_boots_while_redis_is_down_says_so_at_a_bounded_rate_and_starts_once_it_answers(
    worker_env: dict[str, str], workers: list[WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bgjobs import runtime
    from bgjobs.embedded import RedisServer, free_port
    from bgjobs.redis_broker import WORKERS_KEY
    from bgjobs.status import status

    # Given a worker started while nothing answers on its Redis port
    server = RedisServer(port=free_port())
    env = {**worker_env, "BGJOBS_BROKER_URL": server.url}
    monkeypatch.setenv("BGJOBS_BROKER_URL", server.url)
    runtime.reset()
    w = WorkerProcess(env, processes=1)
    workers.append(w)
    w.start(wait=False)
    time.sleep(7)
    assert w.proc is not None and w.proc.poll() is None
    # Then it says so once per backoff step (at 0 s and 5 s), not once a consumer thread every 3 s
    said = [line for line in w.output().splitlines() if "cannot reach the broker" in line]
    assert 1 <= len(said) <= 2, w.output()
    assert f"at {server.url} (" in said[0] and "check BGJOBS_BROKER_URL" in said[0]
    assert "Traceback" not in w.output() and "Restarting consumer" not in w.output()
    # When Redis comes up
    with server:
        client = redis.Redis.from_url(server.url)
        # Then the worker describes itself and heartbeats from its maintenance thread
        wait_for(lambda: client.hlen(f"dramatiq:{WORKERS_KEY}") == 1, timeout=30, what="its description")
        (info,) = client.hvals(f"dramatiq:{WORKERS_KEY}")
        assert "default" in json.loads(info)["queues"]
        def healthy_but_for_the_scheduler() -> bool:  # no scheduler runs in this test
            return [p for p in status().problems if "no scheduler leads" not in p] == []

        wait_for(healthy_but_for_the_scheduler, timeout=10, what="a healthy status")
        (live,) = status().workers
        assert "default" in live.queues
        client.close()
        wait_for(lambda: f"the broker at {server.url} answers again after" in w.output(), timeout=10,
                 what="the line saying the broker answers again")  # fmt: skip


def test_status_calls_a_worker_that_never_described_itself_unhealthy(redis_url: str) -> None:
    from bgjobs.status import status

    # Given a process that heartbeats (it fetches) but whose maintenance never ran
    broker = _broker(redis_url)
    broker.do_fetch("q", 1)
    # Then status names it as a problem
    found = status(broker=broker)
    assert not found.healthy
    problem = f"worker {broker.broker_id} has not described itself: its maintenance is not running"
    assert problem in found.problems


def test_the_redis_broker_refuses_a_message_above_the_size_limit_and_writes_nothing(redis_url: str) -> None:
    from bgjobs.errors import InvalidPayload

    client = redis.Redis.from_url(redis_url)
    broker = BgjobsRedisBroker(url=redis_url, worker=WorkerSettings(max_message_bytes=2048))
    broker.declare_queue("q")

    def message(size: int) -> dramatiq.Message[object]:
        return dramatiq.Message(queue_name="q", actor_name="a", args=("x" * size,), kwargs={}, options={})

    with pytest.raises(InvalidPayload, match=r"a: the message is \d+ bytes, more than 2048"):
        broker.enqueue(message(10_000))
    with pytest.raises(InvalidPayload, match="more than 2048"):
        broker.enqueue_many([message(10), message(10_000), message(10)])
    assert (client.llen("dramatiq:q"), client.hlen("dramatiq:q.msgs")) == (0, 0)
    broker.enqueue(message(1_000))
    assert client.llen("dramatiq:q") == 1


def test_the_sweeps_run_once_per_loss_and_never_for_a_process_that_did_not_see_the_store_before(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    from types import SimpleNamespace

    from bgjobs import recovery

    client = redis.Redis.from_url(redis_url)
    broker = SimpleNamespace(client=client, key=lambda *parts: ":".join(("recovery-test", *parts)))
    swept = threading.Semaphore(0)
    calls: list[int] = []

    def sweep() -> int:
        calls.append(1)
        swept.release()
        return 3

    monkeypatch.setattr(recovery, "_sweeps", {"test": sweep})
    first, second = recovery.watcher(broker), recovery.watcher(broker)
    # A new store, and a process new to it (an upgrade, a new deployment): the marker, no sweep
    first()
    second()
    assert client.exists("recovery-test:__bgjobs_store__") and calls == []
    # When the store loses its data, the processes that had seen it notice; one of them sweeps
    client.delete("recovery-test:__bgjobs_store__")
    second()
    first()
    assert swept.acquire(timeout=10)
    first()
    second()
    for running in [t for t in threading.enumerate() if t.name == "bgjobs-recovery"]:
        running.join(timeout=10)
    assert calls == [1]  # no second sweep started, nor running
    client.delete(*client.keys("recovery-test:*"))
