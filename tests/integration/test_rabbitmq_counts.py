"""RabbitMQ without its management API: the delayed messages workers hold are still counted.

RabbitMQ counts a delayed message a worker holds (until it is due) as unacknowledged, which a
passive declaration does not report; each worker writes what it holds to the coordination store.
"""

from __future__ import annotations

import pytest

from bgjobs import cli, runtime
from bgjobs.exposition import scrape
from tests.support import worker_jobs
from tests.support.rabbitmq import RabbitNode
from tests.support.workers import WorkerProcess, start_worker, use_environment, wait_for


def _delayed_gauge(text: str) -> float | None:
    for line in text.splitlines():
        if line.startswith('bgjobs_queue_delayed{queue="default"} '):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_delayed_messages_held_by_workers_are_counted_without_the_management_api(
    worker_env: dict[str, str], redis_url: str, rabbit_vhost: RabbitNode, workers: list[WorkerProcess],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from bgjobs.status import status

    env = {**worker_env, "BGJOBS_BROKER_URL": rabbit_vhost.url(), "BGJOBS_COORDINATION_URL": redis_url,
           # long enough that a stopped worker's count, left behind, would show twice
           "BGJOBS_WORKER__HEARTBEAT_TIMEOUT_MS": "60000"}  # fmt: skip
    use_environment(monkeypatch, env)
    runtime.reset()
    # Given five jobs due in two minutes, and a worker that takes (and holds) them
    w = start_worker(workers, env, processes=1)
    for i in range(5):
        worker_jobs.record.send({"key": f"later-{i}"}, delay=120_000)

    def delayed() -> int:
        runtime.reset()
        (queue,) = [q for q in status().queues if q.name == "default"]
        assert queue.in_flight is None  # unknown without the management API, never a guess
        return queue.delayed

    # Then status counts them, and so does the worker's gauge
    wait_for(lambda: delayed() == 5, timeout=30, what="status to count the held delayed messages")
    wait_for(lambda: _delayed_gauge(scrape(w.metrics_port)) == 5, timeout=30, what="the delayed gauge")
    assert cli.main(["status"]) in (0, 1)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["default"])
    assert " 5 " in f" {row} ", row
    # When the worker stops cleanly, RabbitMQ has them back, counted once
    w.terminate()
    wait_for(lambda: delayed() == 5, timeout=30, what="the delayed messages back in RabbitMQ")
    assert delayed() == 5
    assert worker_jobs.effect_count() == 0
