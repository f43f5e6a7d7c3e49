"""``bgjobs status``, ``bgjobs dead-letters`` and ``bgjobs worker`` against real workers on a real Redis,
and the same dead-letter and status commands on RabbitMQ with its coordination store."""

from __future__ import annotations

import io
import json
import sys
import time

import dramatiq
import pytest
import redis

from bgjobs import cli, deadletters, runtime
from bgjobs.progress import Progress
from bgjobs.scheduling import LOCK_NAME
from tests.support import worker_jobs
from tests.support.workers import WorkerProcess, broker_client, start_worker, wait_for


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def ready(queue: str) -> int:
    """Messages waiting on ``queue``, as the deployment's broker counts them."""
    return deadletters.operated_broker().queue_sizes([queue])[queue].ready


def test_dead_letters_are_listed_with_reasons_shown_requeued_fresh_and_purged(
    engine_env: dict[str, str], workers: list[WorkerProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    worker_env = engine_env
    client = broker_client(worker_env)
    client.set("test:refusing", "1")
    w = start_worker(workers, worker_env, processes=1)
    sent = [worker_jobs.refused.send({"key": f"r{i}"}).message_id for i in range(3)]
    bad = worker_jobs.record.actor.send({"key": "x", "colour": "red"}).message_id
    wait_for(lambda: client.zcard("dramatiq:default.XQ") == 4, timeout=30, what="four dead letters")
    w.stop()

    code, out = run(capsys, "dead-letters", "list")
    assert code == 0
    for message_id in [*sent, bad]:
        assert message_id in out
    assert out.count("permanent: PermanentError: vendor refused r") == 3
    assert "invalid:" in out and "colour: Extra inputs are not permitted" in out
    code, out = run(capsys, "dead-letters", "list", "--actor", "record", "--json")
    listed = json.loads(out)
    assert [(d["message_id"], d["actor"], d["kind"], d["attempts"]) for d in listed] == [
        (bad, "record", "invalid", 1)
    ]
    assert run(capsys, "dead-letters", "list", "--queue", "notifications")[1].strip() == "no dead letters"
    assert len(json.loads(run(capsys, "dead-letters", "list", "--limit", "2", "--json")[1])) == 2

    code, out = run(capsys, "dead-letters", "show", sent[0])
    shown = json.loads(out)
    assert code == 0
    assert (
        shown["message"]["args"] == [{"key": "r0", "sleep_s": 0.0}]
        and shown["reason"] == "PermanentError: vendor refused r0"
    )
    assert cli.main(["dead-letters", "show", "no-such-id"]) == 2
    assert "no dead letter no-such-id" in capsys.readouterr().err

    # Requeue two by id: they leave the dead-letter set and wait on the queue, as new.
    stale = deadletters.find(sent[:2])
    code, out = run(capsys, "dead-letters", "requeue", *sent[:2])
    assert out.strip() == "requeued 2 message(s)"
    assert deadletters.requeue(stale) == 0  # a second operator with the same list moves nothing
    assert client.zcard("dramatiq:default.XQ") == 2 and client.hlen("dramatiq:default.XQ.reasons") == 2
    wait_for(lambda: ready("default") == 2, timeout=15, what="the requeued messages on their queue")
    if "BGJOBS_COORDINATION_URL" not in worker_env:  # Redis: the queued messages are readable
        queued = [json.loads(m) for m in client.hvals("dramatiq:default.msgs")]
        assert sorted(m["message_id"] for m in queued) == sorted(sent[:2])
        for m in queued:
            assert m["options"]["retries"] == 0 and "traceback" not in m["options"]
            assert m["options"]["redis_message_id"] not in {d.redis_id for d in stale}

    client.delete("test:refusing")  # the vendor is fixed: requeued work now takes effect, once
    start_worker(workers, worker_env, processes=1)
    wait_for(lambda: set(worker_jobs.effects()) == {"r0", "r1"}, timeout=30, what="requeued work")
    code, out = run(capsys, "dead-letters", "requeue", "--all", "--queue", "default")
    assert out.strip() == "requeued 2 message(s)"
    wait_for(lambda: set(worker_jobs.effects()) == {"r0", "r1", "r2"}, timeout=30, what="requeue --all")
    # The invalid message fails again, as it must, and is back with its reason.
    wait_for(lambda: client.zcard("dramatiq:default.XQ") == 1, timeout=30, what="the invalid message")
    (again,) = deadletters.dead_letters()
    assert again.message_id == bad and again.kind == "invalid"

    assert run(capsys, "dead-letters", "purge", "--older-than", "1d")[1].strip() == "purged 0 dead letter(s)"
    assert run(capsys, "dead-letters", "purge")[1].strip() == "purged 1 dead letter(s)"
    assert deadletters.dead_letters() == []
    assert not client.exists("dramatiq:default.XQ.msgs", "dramatiq:default.XQ.reasons")


def test_requeue_needs_ids_or_all_and_purge_a_readable_age(
    worker_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["dead-letters", "requeue"]) == 2  # bad input exits 2, as docs/cli.md says
    assert "give message ids or --all" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["dead-letters", "purge", "--older-than", "a week"])
    assert "expected an age like 30m, 12h, 7d or 2w, got 'a week'" in capsys.readouterr().err


def test_status_reports_queues_workers_and_crossed_thresholds(
    worker_env: dict[str, str], workers: list[WorkerProcess], capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    client = redis.Redis.from_url(worker_env["BGJOBS_BROKER_URL"])
    # `bgjobs worker` wraps the dramatiq command, passing dramatiq's own flags through (-Q).
    w = WorkerProcess(worker_env, processes=1)
    w.argv = [sys.executable, "-m", "bgjobs.cli", "worker", "-p", "1", "-t", "2", "-Q", "default"]
    workers.append(w)
    w.start()

    # No scheduler leads while the cron table has entries: unhealthy, as /readyz says (one rule)
    code, out = run(capsys, "status", "--json")
    report = json.loads(out)
    assert code == 1 and report["scheduler"] is False
    leaderless = "the cron table has entries and no scheduler leads: start 'bgjobs scheduler'"
    assert report["problems"] == [leaderless]
    leading = runtime.current().coordination.lease(LOCK_NAME, ttl_ms=600_000)  # as a scheduler would
    assert leading.acquire()
    request.addfinalizer(leading.release)

    code, out = run(capsys, "status", "--json")
    report = json.loads(out)
    assert code == 0 and report["healthy"] and report["problems"] == []
    (worker,) = report["workers"]
    assert worker["queues"] == ["default"] and worker["threads"] == 2 and worker["pid"] > 0
    assert worker["seen_s"] < 2
    names = {q["name"]: q["workers"] for q in report["queues"]}
    assert {"default", "notifications", "webhooks", "payouts"} <= set(names)
    assert names["default"] == 1 and names["notifications"] == 0  # -Q default: one consumer of one queue

    # A message nobody consumes (the worker only takes `default`), enqueued an hour ago.
    broker = runtime.get_broker()
    hour_ago = int(time.time() * 1000) - 3_600_000
    broker.enqueue(dramatiq.Message(queue_name="notifications", actor_name="mail", args=({"key": "m"},),
                                    kwargs={}, options={}, message_timestamp=hour_ago))  # fmt: skip
    code, out = run(capsys, "status")
    assert code == 1
    row = next(line.split() for line in out.splitlines() if line.startswith("notifications "))
    assert row[1] == "1" and 3590 <= float(row[5]) <= 3700 and row[6] == "0"
    assert "UNHEALTHY: queue notifications: oldest message waited 36" in out
    assert "scheduler: running" in out
    assert run(capsys, "status", "--max-age", "7200")[0] == 0

    # Dead letters above the threshold
    client.zadd("dramatiq:default.XQ", {"x1": time.time() * 1000, "x2": time.time() * 1000})
    client.hset("dramatiq:default.XQ.msgs", mapping={"x1": "{}", "x2": "{}"})
    code, out = run(capsys, "status", "--max-age", "7200", "--max-dead-letters", "1", "--json")
    assert code == 1 and json.loads(out)["problems"] == ["2 dead letters (more than 1)"]

    # No live worker once it stops cleanly (it marks itself stopped before its heartbeat expires).
    w.terminate()
    code, out = run(capsys, "status", "--max-age", "7200", "--json")
    report = json.loads(out)
    assert code == 1 and report["workers"] == []
    assert report["problems"] == ["0 live worker process(es) (fewer than 1)"]
    (described,) = client.hvals("dramatiq:__bgjobs_workers__")
    assert list(json.loads(described)) == ["stopped"]  # the next worker's maintenance forgets it


def test_a_killed_worker_leaves_status_after_its_heartbeat_timeout(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    from bgjobs.status import status

    survivor = start_worker(workers, worker_env, processes=1)
    doomed = start_worker(workers, worker_env, processes=1)
    assert len(status().workers) == 2
    doomed.kill()
    wait_for(lambda: len(status().workers) == 1, timeout=10, what="the dead worker to drop out")
    client = redis.Redis.from_url(worker_env["BGJOBS_BROKER_URL"])
    wait_for(
        lambda: client.hlen("dramatiq:__bgjobs_workers__") == 1, timeout=10, what="its description to go"
    )
    assert survivor.proc is not None and survivor.proc.poll() is None


def test_status_says_clearly_when_redis_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bgjobs.embedded import free_port

    monkeypatch.setenv("BGJOBS_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert cli.main(["status"]) == 2
    assert "cannot reach the broker at" in capsys.readouterr().err


def test_status_on_a_stub_broker_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BGJOBS_BROKER_URL", "stub://")
    assert cli.main(["status"]) == 2
    assert "set BGJOBS_BROKER_URL=redis://" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_and_stays_quiet_otherwise() -> None:
    terminal, pipe = _Terminal(), io.StringIO()
    with Progress("requeue", total=4, stream=terminal) as bar:
        bar.advance(2)
        bar.advance(2)
    with Progress("requeue", total=4, stream=pipe) as quiet:
        quiet.advance(4)
    assert terminal.getvalue().endswith("\rrequeue [##############################] 4/4\n")
    assert "requeue [###############---------------] 2/4" in terminal.getvalue()
    assert pipe.getvalue() == "" and quiet.done == 4


def test_status_into_a_pipe_whose_reader_left_exits_quietly(worker_env: dict[str, str]) -> None:
    import os
    import subprocess

    from tests.support.workers import ROOT

    # Given a pipe whose reader is gone (`bgjobs status | head` once head has its lines)
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "bgjobs.cli", "status"], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60,
                              env={**os.environ, **worker_env, "PYTHONPATH": str(ROOT)})  # fmt: skip
    finally:
        os.close(write)
    # Then it stops as a tool killed by SIGPIPE would, with nothing on stderr
    assert (done.returncode, done.stderr) == (141, "")
