"""Every cross-process guarantee, on each engine: real workers on the Redis broker, then on RabbitMQ
with its coordination store (``BGJOBS_COORDINATION_URL``). This is docs/operating.md's "What works
where" table as a test: a row that held on Redis and not on RabbitMQ fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

import pytest

from bgjobs import cli, pausing, runs, webhooks
from bgjobs.exposition import scrape
from bgjobs.families import trigger
from tests.support import batch_jobs, worker_jobs
from tests.support.pause_checks import pause_checks
from tests.support.processes import spawn
from tests.support.receivers import WebhookReceiver, webhook_receiver
from tests.support.scheduler import Scheduler
from tests.support.workers import ROOT, WorkerProcess, broker_client, start_worker, use_environment, wait_for


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


def metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_an_endpoint_s_concurrency_cap_holds_across_worker_processes(
    engine_env: dict[str, str], workers: list[WorkerProcess], receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # Given one slow endpoint capped at 4 deliveries at once, and 2 processes of 8 threads each
    env = {**engine_env, "BGJOBS_WEBHOOKS__REQUIRE_HTTPS": "false",
           "BGJOBS_WEBHOOKS__ALLOW": '["127.0.0.1/32"]', "BGJOBS_WEBHOOKS__ENDPOINT_CONCURRENCY": "4"}
    use_environment(monkeypatch, env)
    receiver.always("/slow", "sleep:0.4")
    webhooks.add_endpoint(receiver.url("/slow"), event_types=["*"])
    # When 24 events are published at once
    for n in range(24):
        webhooks.publish("order.placed", {"n": n})
    start_worker(workers, env, processes=2, threads=8)
    wait_for(lambda: len(receiver.received("/slow")) >= 24, timeout=90, what="24 deliveries")
    # Then the endpoint never saw more than 4 at once, and did see 4 (the cap, not one process's)
    assert receiver.peak["/slow"] == 4
    assert sorted(json.loads(r.body)["data"]["n"] for r in receiver.received("/slow")) == list(range(24))


_PUBLISH = """
import sys
from bgjobs import events
sys.stdin.readline()  # both processes start publishing at the same moment
print(sum(bool(events.publish("test.dedupe", {"n": i}, key=f"k{i}")) for i in range(40)))
"""


def test_an_event_key_is_published_once_across_processes(engine_env: dict[str, str]) -> None:
    # Given two host processes that publish the same 40 keyed events at the same time
    env = {**os.environ, **engine_env, "PYTHONPATH": str(ROOT)}
    procs = [spawn([sys.executable, "-c", _PUBLISH], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outputs = [p.communicate("go\n", timeout=60) for p in procs]
    # Then each key was sent once, by one process or the other
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    assert sum(int(out) for out, _ in outputs) == 40


def test_a_batch_job_triggered_twice_at_once_runs_one_at_a_time(
    engine_env: dict[str, str], workers: list[WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**engine_env, "BGJOBS_JOBS": '["tests.support.worker_jobs", "tests.support.batch_jobs"]'}
    monkeypatch.setenv("BGJOBS_JOBS", env["BGJOBS_JOBS"])
    batch_jobs.create_tables()
    start_worker(workers, env, processes=2, threads=2)
    # When the same job is triggered twice at once
    trigger("tests.count_things", sleep="1")
    trigger("tests.count_things", sleep="1")
    wait_for(lambda: [r.outcome for r in runs.recent(job="tests.count_things")] == ["succeeded"] * 2,
             timeout=60, what="both runs to succeed")  # fmt: skip
    # Then the second started after the first finished
    first, second = sorted(runs.recent(job="tests.count_things"), key=lambda r: r.started_at)
    assert first.finished_at is not None and second.started_at >= first.finished_at


def test_queue_gauges_status_and_pausing_read_the_deployment(
    engine_env: dict[str, str], workers: list[WorkerProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    client = broker_client(engine_env)
    client.set("test:refusing", "1")
    # Given a worker of "default" only, three messages nobody consumes and one dead letter
    w = start_worker(workers, engine_env, processes=1, args=("-Q", "default"))
    for i in range(3):
        worker_jobs.mail.send({"key": f"m{i}"})
    worker_jobs.refused.send({"key": "r"})
    wait_for(lambda: client.zcard("dramatiq:default.XQ") == 1, timeout=30, what="the dead letter")

    # Then the gauges report them (the management API's counts lag by a second or two)
    def gauges() -> tuple[float | None, float | None]:
        text = scrape(w.metrics_port)
        return (metric(text, "bgjobs_queue_depth", queue="notifications"),
                metric(text, "bgjobs_dead_letters", queue="default"))  # fmt: skip

    wait_for(lambda: gauges() == (3, 1), timeout=20, what="the queue gauges")
    # And status lists the live worker and the same numbers
    code = cli.main(["status", "--json", "--max-dead-letters", "5"])
    report = json.loads(capsys.readouterr().out)
    # (unhealthy only for want of a scheduler, as /readyz would say)
    assert code == 1 and report["problems"] == [
        "the cron table has entries and no scheduler leads: start 'bgjobs scheduler'"]  # fmt: skip
    (worker,) = report["workers"]
    assert worker["queues"] == ["default"] and worker["pid"] > 0
    rows = {q["name"]: q for q in report["queues"]}
    assert rows["notifications"]["ready"] == 3
    assert (rows["default"]["dead_letters"], rows["default"]["workers"]) == (1, 1)

    # When "default" is paused, a message sent to it waits; resumed, it runs
    client.delete("test:refusing")
    with pause_checks(client, "default") as checks:
        pausing.pause("default")
        checks.wait_seen()  # a consumer read the pause
        worker_jobs.record.send({"key": "after-pause"})
        checks.wait_reads(4)  # four more reads, each of which would have handed it out if not paused
        assert worker_jobs.effect_count() == 0
    pausing.resume("default")
    wait_for(lambda: "after-pause" in worker_jobs.effects(), timeout=15, what="the job after resume")


def test_one_scheduler_leads_each_tick_fires_once_and_the_follower_takes_over(
    engine_env: dict[str, str], workers: list[WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**engine_env, "BGJOBS_JOBS": '["tests.support.batch_jobs"]',
           "BGJOBS_SCHEDULER__LOCK_TIMEOUT_S": "2", "BGJOBS_SCHEDULER__LOCK_REFRESH_S": "1",
           "BGJOBS_SCHEDULE__OUTBOX_RELAY": "",
           "BGJOBS_LOG_LEVEL": "INFO"}  # fmt: skip
    monkeypatch.setenv("BGJOBS_JOBS", env["BGJOBS_JOBS"])
    client = broker_client(env)
    start_worker(workers, env, processes=1, threads=4)

    def ticks() -> list[str]:
        return [t.decode().split(":", 1)[1] for t in client.lrange("test:ticks", 0, -1)]

    leader, follower = Scheduler(env), None
    try:
        wait_for(lambda: len(ticks()) >= 1, timeout=30, what="the leader's first tick")
        follower = Scheduler(env)
        wait_for(lambda: "standing by" in follower.output(), timeout=30, what="the follower to stand by")
        seen = len(ticks())
        wait_for(lambda: len(ticks()) >= seen + 3, timeout=20, what="three more ticks")
        leader.kill()
        at_kill = len(ticks())
        wait_for(lambda: len(ticks()) >= at_kill + 3, timeout=30, what="the follower's ticks")
        fired, said = ticks(), follower.output()
    finally:
        leader.remove()
        if follower is not None:
            follower.remove()
    # Then every tick ran once, and the follower fired after the leader died
    assert max(Counter(fired).values()) == 1, fired
    assert said.index("standing by") < said.index("scheduler lock acquired")
    stamps = sorted(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() for t in fired)
    assert len(stamps) >= 7 and stamps == sorted(set(stamps))
