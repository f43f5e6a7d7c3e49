"""The real worker command on a real Redis: processing, crash recovery, poison messages, bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import redis

from bgjobs import deadletters
from bgjobs.exposition import scrape
from tests.support import worker_jobs
from tests.support.processes import alive, children
from tests.support.workers import HEARTBEAT_TIMEOUT_S, WorkerProcess, broker_client, start_worker, wait_for


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, f"no {name}{labels} in scrape"
    return total


def test_two_worker_processes_process_messages_sent_from_the_test(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    # Given a worker with two processes
    w = start_worker(workers, worker_env, processes=2, threads=2)
    # When the test sends 40 jobs
    for i in range(40):
        worker_jobs.record.send({"key": f"k{i}", "sleep_s": 0.1})
    # Then every one is done once, by both processes
    wait_for(lambda: worker_jobs.effect_count() == 40, timeout=60, what="40 effects")
    effects = worker_jobs.effects()
    assert sorted(effects) == sorted(f"k{i}" for i in range(40))
    assert len(set(effects.values())) == 2, "both worker processes should have taken work"
    # Metrics are applied once a second: wait for the tallies to land, then check both families of series.
    wait_for(
        lambda: "bgjobs_jobs_total{" in (text := scrape(w.metrics_port))
        and metric(text, "bgjobs_jobs_total", family="default", actor="record", outcome="succeeded") == 40,
        timeout=10, interval=0.2, what="bgjobs_jobs_total to reach 40",
    )  # fmt: skip
    text = scrape(w.metrics_port)
    assert metric(text, "bgjobs_jobs_total", family="default", actor="record", outcome="succeeded") == 40
    assert metric(text, "dramatiq_messages_total", actor_name="record") == 40
    assert metric(text, "dramatiq_message_duration_milliseconds_count", actor_name="record") == 40
    assert metric(text, "dramatiq_messages_inprogress", actor_name="record") == 0


def test_delayed_and_retried_jobs_are_counted_once_per_outcome(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    # Given 10 jobs sent now, 5 sent with a delay, and 5 that fail once and then succeed
    w = start_worker(workers, worker_env, processes=1, threads=4)
    for i in range(10):
        worker_jobs.record.send({"key": f"now{i}"})
    for i in range(5):
        worker_jobs.record.send({"key": f"later{i}"}, delay=200)
        worker_jobs.flaky_once.send({"key": f"flaky{i}"})
    # When all have run (retries back off 100 ms at least)
    wait_for(lambda: worker_jobs.effect_count() == 15, timeout=60, what="15 effects")
    expected = {("record", "succeeded"): 15, ("flaky_once", "retried"): 5, ("flaky_once", "succeeded"): 5}

    def counted() -> dict[tuple[str, str], float]:
        text = scrape(w.metrics_port)
        if "bgjobs_jobs_total{" not in text:
            return {}
        return {(a, o): metric_or_0(text, "bgjobs_jobs_total", actor=a, outcome=o) for a, o in expected}

    wait_for(lambda: counted() == expected, timeout=20, interval=0.3, what=f"the counts to reach {expected}")
    time.sleep(1.5)  # a flush later, nothing more was counted (the delay queue's copies are not jobs)
    text = scrape(w.metrics_port)
    assert counted() == expected
    assert metric_or_0(text, "bgjobs_jobs_total", actor="record", outcome="retried") == 0
    # And Dramatiq's retry counter counts each retry once, not again when it leaves the delay queue
    assert metric(text, "dramatiq_message_retries_total", actor_name="flaky_once") == 5


def metric_or_0(text: str, name: str, **labels: str) -> float:
    try:
        return metric(text, name, **labels)
    except AssertionError:
        return 0.0


def test_a_fresh_worker_already_exposes_queue_gauges(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    # Given messages waiting in a queue no process consumes
    for i in range(3):
        worker_jobs.mail.send({"key": f"m{i}"})
    # When a worker that only consumes "default" boots
    w = start_worker(workers, worker_env, processes=1, args=("-Q", "default"))
    text = scrape(w.metrics_port)
    # Then the first scrape already reports every family's queue
    assert metric(text, "bgjobs_queue_depth", queue="notifications") == 3
    for queue in ("default", "webhooks", "payouts", "exports", "cleanup"):
        assert metric(text, "bgjobs_queue_depth", queue=queue) == 0
        assert metric(text, "bgjobs_dead_letters", queue=queue) == 0


def test_a_killed_worker_s_message_is_redelivered_within_the_bound_and_takes_effect_once(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    # Given a worker in the middle of a slow job
    first = start_worker(workers, worker_env, processes=2)
    worker_jobs.record.send({"key": "slow", "sleep_s": 3})
    wait_for(lambda: worker_jobs.starts("slow") == 1, timeout=30, what="the job to start")
    # When the whole worker is SIGKILLed mid-job and a new one starts
    first.kill()
    killed_at = time.monotonic()
    start_worker(workers, worker_env, processes=2)
    # Then the message is handed out again within heartbeat timeout + 15 s
    wait_for(lambda: worker_jobs.starts("slow") == 2, timeout=HEARTBEAT_TIMEOUT_S + 15, what="redelivery")
    redelivered_after = time.monotonic() - killed_at
    assert redelivered_after < HEARTBEAT_TIMEOUT_S + 15
    # And its effect happens exactly once
    wait_for(lambda: worker_jobs.effect_count() == 1, timeout=30, what="the effect")
    time.sleep(1)
    assert worker_jobs.effects().keys() == {"slow"}
    assert worker_jobs.starts("slow") == 2
    client = redis.Redis.from_url(worker_env["BGJOBS_BROKER_URL"])
    assert client.hlen("dramatiq:default.msgs") == 0


def test_a_message_that_kills_its_worker_every_time_is_dead_lettered_with_the_reason(
    engine_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    worker_env = engine_env
    client = broker_client(worker_env)
    message = worker_jobs.die.send({"key": "poison"})
    # Given a supervisor that restarts the worker whenever it dies (max_deliveries=3)
    deadline = time.monotonic() + 180  # four worker boots on a loaded 2-core machine can take a minute
    while client.zcard("dramatiq:default.XQ") == 0:
        assert time.monotonic() < deadline, "the poison message was never dead-lettered"
        # Not waiting for its heartbeat: the new worker may take the message and die at once.
        w = WorkerProcess(worker_env, processes=1)
        workers.append(w)
        w.start(wait=False)
        started = time.monotonic()
        while w.proc is not None and w.proc.poll() is None and client.zcard("dramatiq:default.XQ") == 0:
            assert time.monotonic() < deadline, f"the poison message was never dead-lettered: {w.output()}"
            if time.monotonic() - started > 20 and not any(alive(pid) for pid in children(w.proc.pid)):
                # Dramatiq's main process waits for a worker's boot event without a bound on the
                # event's lock; a worker killed (here by the message) inside Event.set() leaves it
                # waiting for good, with no child but the killed one, unreaped (a zombie). A
                # supervisor would see it hang, not exit.
                break
            time.sleep(0.1)
        if client.zcard("dramatiq:default.XQ") == 0:
            w.kill()
        # (the worker that dead-lettered it lives on to acknowledge it; killed before, as a poll
        # loop once did, it would leave the copy in RabbitMQ's queue for the next worker)
    # Then it was handed out exactly max_deliveries times, and dead-lettered with the reason
    assert worker_jobs.starts("poison") == 3
    (redis_id,) = client.zrange("dramatiq:default.XQ", 0, -1)
    stored = json.loads(client.hget("dramatiq:default.XQ.msgs", redis_id))
    assert stored["message_id"] == message.message_id
    reason = json.loads(client.hget("dramatiq:default.XQ.reasons", redis_id))
    assert reason["kind"] == "poison"
    # (it ran 3 times; on RabbitMQ it was delivered a 4th time, and dead-lettered then)
    assert reason["reason"] == ("ran 3 times without finishing (its worker died each time); not handed out "
                                "again, as BGJOBS_WORKER__MAX_DELIVERIES is 3")  # fmt: skip
    broker = deadletters.operated_broker()
    wait_for(lambda: broker.queue_sizes(["default"])["default"][::3] == (0, 1), timeout=60,
             what="an empty queue and one dead letter")  # fmt: skip
    assert worker_jobs.starts("poison") == 3


def test_bad_input_is_dead_lettered_on_redis_with_the_field_named_and_never_retried(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    client = redis.Redis.from_url(worker_env["BGJOBS_BROKER_URL"])
    start_worker(workers, worker_env, processes=1)
    # Messages built by hand, around the sender's validation
    worker_jobs.record.actor.send({"key": 1, "sleep_s": "slow"})
    worker_jobs.record.actor.send({"key": "x", "colour": "red"})
    # A job whose port is not wired
    worker_jobs.mail.send({"key": "unwired"})
    wait_for(
        lambda: client.zcard("dramatiq:default.XQ") == 2 and client.zcard("dramatiq:notifications.XQ") == 1,
        timeout=30,
        what="three dead letters",
    )
    reasons = " | ".join(json.loads(r)["reason"] for r in client.hvals("dramatiq:default.XQ.reasons"))
    assert "key: Input should be a valid string; sleep_s: Input should be a valid number" in reasons
    assert "colour: Extra inputs are not permitted" in reasons
    (unwired,) = [json.loads(r) for r in client.hvals("dramatiq:notifications.XQ.reasons")]
    assert unwired["kind"] == "configuration"
    assert "BGJOBS_MAILER" in unwired["reason"]
    assert {json.loads(r)["attempts"] for r in client.hvals("dramatiq:default.XQ.reasons")} == {1}
    assert worker_jobs.effect_count() == 0


def test_an_unparsable_setting_stops_the_worker_at_boot_naming_the_variable(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    w = WorkerProcess({**worker_env, "BGJOBS_WORKER__MAX_DELIVERIES": "many"}, processes=1)
    workers.append(w)
    w.start(wait=False)
    assert w.wait_exit(timeout=60) != 0
    lines = [line for line in w.output().splitlines() if "BGJOBS_WORKER__MAX_DELIVERIES" in line]
    assert lines == ["bgjobs: configuration error: BGJOBS_WORKER__MAX_DELIVERIES='many': "
                     "Input should be a valid integer, unable to parse string as an integer"]  # fmt: skip


def test_an_undecodable_message_is_dead_lettered_and_the_batch_fetched_with_it_runs(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    from bgjobs.deadletters import dead_letters, requeue

    client = redis.Redis.from_url(worker_env["BGJOBS_BROKER_URL"])
    # Given bytes that are no message ahead of 10 valid jobs in the same queue
    garbage = b"\xff{not a message"
    client.hset("dramatiq:default.msgs", "junk-1", garbage)
    client.rpush("dramatiq:default", "junk-1")
    for i in range(10):
        worker_jobs.record.send({"key": f"v{i}"})
    # When a worker consumes them
    start_worker(workers, worker_env, processes=1, threads=4)
    # Then every valid job runs, well before any heartbeat timeout could have recovered them
    wait_for(lambda: worker_jobs.effect_count() == 10, timeout=HEARTBEAT_TIMEOUT_S * 5, what="10 effects")
    # And the garbage is a dead letter with its reason and its raw bytes, not in flight any more
    assert client.zrange("dramatiq:default.XQ", 0, -1) == [b"junk-1"]
    assert client.hget("dramatiq:default.XQ.msgs", "junk-1") == garbage
    assert client.hexists("dramatiq:default.msgs", "junk-1") == 0
    (letter,) = dead_letters(queue="default")
    assert letter.kind == "undecodable"
    assert letter.reason.startswith("undecodable: ")
    assert letter.message == {"undecodable": "\\xff{not a message"}
    # A requeue cannot revive it (no worker could run it), and says so by moving nothing
    assert requeue([letter]) == 0
    assert client.zcard("dramatiq:default.XQ") == 1


def test_two_worker_commands_on_one_host_report_only_their_own_jobs(
    worker_env: dict[str, str], workers: list[WorkerProcess], tmp_path: Path
) -> None:
    # Given two worker commands on this host with no metrics directory configured (TMPDIR is the
    # test's own, so only directories it created are looked at)
    env = {**worker_env, "TMPDIR": str(tmp_path)}
    pools = []
    for _ in range(2):
        w = WorkerProcess(env, processes=1, threads=2)
        del w.env["dramatiq_prom_db"]
        workers.append(w)
        pools.append(w.start())
    # When 30 jobs are shared between them
    for i in range(30):
        worker_jobs.record.send({"key": f"k{i}"})
    wait_for(lambda: worker_jobs.effect_count() == 30, timeout=60, what="30 effects")
    by_pid: dict[int, int] = {}
    for pid in worker_jobs.effects().values():
        by_pid[pid] = by_pid.get(pid, 0) + 1

    # Then each command's /metrics counts exactly the jobs its own process ran: together 30, not 60
    def succeeded(w: WorkerProcess) -> float:
        text = scrape(w.metrics_port)
        return metric_or_0(text, "bgjobs_jobs_total", actor="record", outcome="succeeded")

    wait_for(lambda: sum(succeeded(w) for w in pools) >= 30, timeout=20, interval=0.3, what="30 counted")
    time.sleep(1.5)
    ran = [float(n) for n in by_pid.values()] + [0.0] * (len(pools) - len(by_pid))
    assert sorted(succeeded(w) for w in pools) == sorted(ran)
    assert sum(succeeded(w) for w in pools) == 30
    # And each command kept its files in a directory of its own
    assert len(list(tmp_path.glob("bgjobs-prometheus-*"))) == 2


def test_an_event_reaches_the_worker_s_subscribers_though_the_publisher_never_imported_them(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    import sys

    from bgjobs import events

    jobs = '["tests.support.worker_jobs", "tests.support.worker_only_subscribers"]'
    env = {**worker_env, "BGJOBS_JOBS": jobs}
    # Given a publisher that knows none of the event's subscribers (only the webhooks bridge)
    assert "tests.support.worker_only_subscribers" not in sys.modules
    assert [s.name for s in events.subscribers("invoice.paid")] == ["webhooks.from_event"]
    start_worker(workers, env, processes=1, threads=2)
    # When it publishes the event with a key, then again with the same key
    assert len(events.publish("invoice.paid", {"invoice_id": 7}, key="inv-7")) == 1
    assert events.publish("invoice.paid", {"invoice_id": 7}, key="inv-7") == []
    # Then both of the worker's subscribers ran, once each
    wait_for(lambda: worker_jobs.effect_count() == 2, timeout=30, what="both subscribers")
    time.sleep(0.5)
    assert sorted(worker_jobs.effects()) == ["audit-7", "invoice-7"]


def test_the_gauges_tell_the_truth_through_delays_retries_dead_letters_and_a_kill(
    worker_env: dict[str, str], workers: list[WorkerProcess], tmp_path: Path
) -> None:
    # Given two worker commands in turn sharing one metrics directory, as a restarted pod does
    env = {**worker_env, "dramatiq_prom_db": str(tmp_path / "prom")}
    (tmp_path / "prom").mkdir()
    client = broker_client(worker_env)
    client.set("test:refusing", "1")
    first = start_worker(workers, env, processes=2, threads=2)
    for i in range(10):
        worker_jobs.record.send({"key": f"later{i}"}, delay=60_000)  # held in memory by the worker
    for i in range(3):
        worker_jobs.flaky_once.send({"key": f"flaky{i}"})
        worker_jobs.refused.send({"key": f"refused{i}"})
    worker_jobs.record.send({"key": "slow", "sleep_s": 2})
    wait_for(lambda: client.hlen("dramatiq:default.DQ.msgs") == 10 and client.llen("dramatiq:default.DQ") == 0
             and client.zcard("dramatiq:default.XQ") == 3 and worker_jobs.starts("slow") == 1,
             timeout=60, what="the delayed jobs held, the dead letters, the slow job running")  # fmt: skip

    def gauges(w: WorkerProcess) -> dict[str, float]:
        text = scrape(w.metrics_port)
        held = [ln for ln in text.splitlines() if ln.startswith("dramatiq_delayed_messages_inprogress{")]
        assert not [line for line in held if 'queue_name="default.DQ"' in line], held
        return {"delayed": metric_or_0(text, "dramatiq_delayed_messages_inprogress", actor_name="record"),
                "running": metric_or_0(text, "dramatiq_messages_inprogress", actor_name="record"),
                "dead": metric_or_0(text, "bgjobs_dead_letters", queue="default")}  # fmt: skip

    # Then while they are held the gauge says 10, under the queue's own name, however the two
    # processes shared them
    wait_for(lambda: gauges(first) == {"delayed": 10, "running": 1, "dead": 3}, timeout=20, interval=0.3,
             what="the gauges to show 10 held, 1 running, 3 dead")  # fmt: skip

    # When the worker is killed, and a new one takes over what it held and ran
    first.kill()
    client.delete("test:refusing")
    second = start_worker(workers, env, processes=2, threads=2)
    wait_for(lambda: worker_jobs.starts("slow") == 2, timeout=60, what="the slow job recovered")

    # Then each gauge is the truth: what the new command holds and runs, nothing left by the dead one
    wait_for(lambda: client.hlen("dramatiq:default.DQ.msgs") == 10 and not client.llen("dramatiq:default.DQ"),
             timeout=60, what="the delayed jobs held by the new worker")  # fmt: skip
    wait_for(lambda: worker_jobs.effect_count() == 1, timeout=30, what="the slow job's effect")
    wait_for(lambda: gauges(second) == {"delayed": 10, "running": 0, "dead": 3}, timeout=20, interval=0.3,
             what="the gauges to show 10 held, none running, 3 dead")  # fmt: skip
    flaky = metric_or_0(scrape(second.metrics_port), "dramatiq_messages_inprogress", actor_name="flaky_once")
    assert flaky == 0
