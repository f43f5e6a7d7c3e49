"""The coordination store down while jobs run, on both engines: nothing runs twice, and the
outage is told once when it starts and once when it ends, naming the store that is down.

On the Redis broker the coordination store is the broker itself; on RabbitMQ it is the Redis of
``BGJOBS_COORDINATION_URL`` (the pause set, dead letters, heartbeats), and RabbitMQ stays up.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from bgjobs import runtime
from tests.support import worker_jobs
from tests.support.redis_servers import durable_redis
from tests.support.workers import WorkerProcess, start_worker, use_environment, wait_for

JOBS = 160


def _runs(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(line.split()[0] for line in path.read_text().splitlines() if line.strip())


@pytest.mark.parametrize("engine", ["redis", "rabbitmq"])
def test_a_coordination_store_outage_runs_no_job_twice_and_is_told_once_naming_the_store(
    engine: str, worker_env: dict[str, str], workers: list[WorkerProcess], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    from bgjobs.status import status

    runs = tmp_path / "runs.txt"
    with durable_redis() as store:
        # Given a worker of two processes and four threads each, on a store that keeps its data
        env = {**worker_env, "BGJOBS_BROKER_URL": store.url, "TEST_RUNS_FILE": str(runs)}
        if engine == "rabbitmq":
            node = request.getfixturevalue("rabbit_vhost")
            env |= {"BGJOBS_BROKER_URL": node.url(), "BGJOBS_COORDINATION_URL": store.url,
                    "BGJOBS_RABBITMQ__MANAGEMENT_URL": node.management_url}  # fmt: skip
        use_environment(monkeypatch, env)
        runtime.reset()
        w = start_worker(workers, env, processes=2, threads=4)
        for i in range(JOBS):
            worker_jobs.logged.send(worker_jobs.Work(key=f"job-{i}", sleep_s=0.25))
        # When the store is SIGKILLed while jobs run, and comes back with its data 6 s later
        wait_for(lambda: len(_runs(runs)) >= 16, timeout=60, what="the first jobs to run")
        store.kill()
        killed_at = len(_runs(runs))
        time.sleep(6)  # the outage
        store.start()
        # Then every job runs, and none twice
        def missing() -> str:
            ran = _runs(runs)
            gone = [f"job-{i}" for i in range(JOBS) if f"job-{i}" not in ran]
            return f"every job to run; {len(gone)} never ran ({', '.join(gone[:10])}), {killed_at} ran before"

        wait_for(lambda: len(_runs(runs)) == JOBS, timeout=120, what=missing)
        runtime.reset()

        def drained() -> bool:
            (queue,) = [q for q in status().queues if q.name == "default"]
            return queue.ready == 0 and queue.delayed == 0 and queue.in_flight == 0

        wait_for(drained, timeout=60, what="the queue to drain")
        doubled = {key: n for key, n in _runs(runs).items() if n > 1}
        assert doubled == {}, f"{len(doubled)} job(s) ran twice; {killed_at} had run when the store died"
        # And the worker said the store went away and came back, naming it, in a few lines
        what, setting = (
            ("the broker", "BGJOBS_BROKER_URL") if engine == "redis"
            else ("the coordination store", "BGJOBS_COORDINATION_URL")
        )  # fmt: skip

        def pids(text: str) -> set[str]:
            return {line.split("[PID ")[1].split("]")[0] for line in w.output().splitlines() if text in line}

        down = [line for line in w.output().splitlines() if f"cannot reach {what} at {store.url}" in line]
        assert down and all(f"check {setting}" in line for line in down), w.output()[-3000:]
        # (each process that said so says when it answers, at its next pass)
        wait_for(lambda: pids(f"cannot reach {what}") <= pids(f"{what} at {store.url} answers again after"),
                 timeout=30, what="each process to say the store answers again")  # fmt: skip
        out = w.output()
        assert "RabbitMQ" not in out and "Traceback" not in out, out[-3000:]
        assert len(out.splitlines()) < 60, out[-3000:]


@pytest.mark.parametrize("engine", ["redis", "rabbitmq"])
def test_a_send_whose_store_is_down_raises_broker_unavailable_naming_that_store(
    engine: str, worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    from bgjobs import events, webhooks
    from bgjobs.embedded import free_port
    from bgjobs.errors import BrokerUnavailable

    # Given a store nothing answers on (the broker's Redis, or RabbitMQ's coordination store)
    gone = f"redis://127.0.0.1:{free_port()}/0"
    env = {**worker_env, "BGJOBS_BROKER_URL": gone, "BGJOBS_WEBHOOKS__REQUIRE_HTTPS": "false",
           "BGJOBS_WEBHOOKS__ALLOW": '["127.0.0.1/32"]'}  # fmt: skip
    if engine == "rabbitmq":
        node = request.getfixturevalue("rabbit_vhost")
        env |= {"BGJOBS_BROKER_URL": node.url(), "BGJOBS_COORDINATION_URL": gone}
    use_environment(monkeypatch, env)
    runtime.reset()
    webhooks.add_endpoint("http://127.0.0.1:9/hook", event_types=["*"])
    what, setting = (
        ("the broker", "BGJOBS_BROKER_URL") if engine == "redis"
        else ("the coordination store", "BGJOBS_COORDINATION_URL")
    )  # fmt: skip
    # Then a deduplicated event and a webhook raise the one error a host catches, naming the store
    for send in (lambda: events.publish("order.paid", {"n": 1}, key="k1"),
                 lambda: webhooks.publish("order.paid", {"n": 1}, key="k1")):  # fmt: skip
        with pytest.raises(BrokerUnavailable) as raised:
            send()
        assert f"cannot reach {what} at {gone}" in str(raised.value) and setting in str(raised.value)


@pytest.mark.parametrize("engine", ["redis", "rabbitmq"])
def test_a_store_back_without_its_data_has_the_work_it_lost_sent_again_at_once(
    engine: str, worker_env: dict[str, str], workers: list[WorkerProcess], monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    import redis

    from bgjobs import pausing, webhooks
    from tests.support.pause_checks import pause_checks
    from tests.support.receivers import webhook_receiver

    with durable_redis() as store, webhook_receiver() as receiver:
        env = {**worker_env, "BGJOBS_BROKER_URL": store.url, "BGJOBS_WEBHOOKS__REQUIRE_HTTPS": "false",
               "BGJOBS_WEBHOOKS__ALLOW": '["127.0.0.1/32"]'}  # fmt: skip
        if engine == "rabbitmq":  # the messages live in RabbitMQ; the lanes and the pause in the store
            node = request.getfixturevalue("rabbit_vhost")
            env |= {"BGJOBS_BROKER_URL": node.url(), "BGJOBS_COORDINATION_URL": store.url}
        use_environment(monkeypatch, env)
        runtime.reset()
        webhooks.add_endpoint(receiver.url("/hook"), event_types=["*"])
        # Given a worker that has seen the store, and 40 webhooks waiting behind a paused queue
        w = start_worker(workers, env, processes=1)
        client = redis.Redis.from_url(store.url)
        wait_for(lambda: client.exists("dramatiq:__bgjobs_store__"), timeout=30, what="the store's marker")
        with pause_checks(client, "webhooks") as checks:
            pausing.pause("webhooks")
            checks.wait_seen()
        client.close()
        for n in range(40):
            webhooks.publish("order.placed", {"n": n})
        # When the store restarts without its data (the messages, the lanes and the pause with it)
        store.kill()
        store.start(empty=True)
        # Then the worker sees it at its next pass and sends every delivery again, at once: the
        # health sweep would have waited for them to be 5 minutes overdue
        wait_for(lambda: len({r.body for r in receiver.received("/hook")}) == 40, timeout=60,
                 what="every webhook delivered")  # fmt: skip
        assert "the store came back without its data" in w.output()
        assert "recovery sweeps: exports=0 payouts=0 webhooks=40" in w.output(), w.output()[-2000:]
