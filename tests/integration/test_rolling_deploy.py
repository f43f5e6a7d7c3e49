"""A rolling deploy: a message for an actor a worker does not know (sent by a newer release, or for
a module missing from ``BGJOBS_JOBS``) waits for a worker that knows it, then is dead-lettered with
the fix; and the previous release's own worker, from its wheel, beside today's loses nothing. Real
workers on a real Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bgjobs import deadletters, runtime, webhooks
from tests.support import worker_jobs
from tests.support.receivers import webhook_receiver
from tests.support.workers import ROOT, WorkerProcess, broker_client, start_worker, wait_for

#: The previous release, built from its tag (see tests/fixtures/releases/README.md).
PREVIOUS = ROOT / "tests" / "fixtures" / "releases" / "bgjobs-0.1.0-py3-none-any.whl"


def test_a_message_for_an_actor_the_worker_lacks_is_given_back_for_a_worker_that_has_it(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    # Given a worker of the old release: it does not declare the actor
    old = start_worker(workers, {**worker_env, "BGJOBS_JOBS": "[]"}, processes=1)
    client = broker_client(worker_env)

    # When a message for the actor reaches it
    worker_jobs.record.send({"key": "from-the-new-release", "sleep_s": 0})
    said = f"no actor {worker_jobs.record.name!r} in this worker"
    wait_for(lambda: said in old.output(), timeout=30, what="the message to be given back")

    # Then it is given back, not dead-lettered, and the new release's worker runs it
    assert client.zcard("dramatiq:default.XQ") == 0
    assert "sent again in 5 s for a worker that has it (a rolling deploy?)" in old.output()
    old.stop()
    start_worker(workers, worker_env, processes=1)
    wait_for(lambda: worker_jobs.effect_count() == 1, timeout=60, what="the new worker to run it")
    assert client.zcard("dramatiq:default.XQ") == 0


def test_an_actor_still_unknown_after_the_grace_period_is_dead_lettered_then_adopted_by_a_worker_with_it(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    env = {**worker_env, "BGJOBS_JOBS": "[]", "BGJOBS_WORKER__UNKNOWN_ACTOR_GRACE_S": "1"}
    w = start_worker(workers, env, processes=1)
    client = broker_client(worker_env)
    worker_jobs.record.send({"key": "nobody-declares-it", "sleep_s": 0})
    wait_for(lambda: client.zcard("dramatiq:default.XQ") == 1, timeout=60, what="the dead letter")

    (letter,) = deadletters.dead_letters()
    assert letter.kind == "unknown_actor"
    name = worker_jobs.record.name
    assert letter.reason.startswith(f"UnknownActor: no worker declared actor {name!r} within ")
    assert letter.reason.endswith("add the module that declares it to BGJOBS_JOBS, or run workers of the "
                                  "release that has it; then requeue this")  # fmt: skip
    assert w.output().count("sent again in 5 s") == 1  # given back once, within the grace period
    assert worker_jobs.effect_count() == 0

    # A worker that has the actor, started within a grace period, requeues the letter by itself
    w.stop()
    start_worker(workers, worker_env, processes=1)
    wait_for(lambda: worker_jobs.effect_count() == 1, timeout=60, what="the letter requeued and run")
    assert client.zcard("dramatiq:default.XQ") == 0


@pytest.fixture
def previous_release(tmp_path: Path) -> Path:
    """The previous release's package, installed from its wheel into a directory of its own."""
    target = tmp_path / "bgjobs-0.1.0"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                    "--target", str(target), str(PREVIOUS)], check=True, timeout=120)  # fmt: skip
    return target


def test_the_previous_release_s_worker_beside_today_s_loses_nothing(
    worker_env: dict[str, str], workers: list[WorkerProcess], previous_release: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    webhook_env = {"BGJOBS_WEBHOOKS__REQUIRE_HTTPS": "false", "BGJOBS_WEBHOOKS__ALLOW": '["127.0.0.1/32"]'}
    for name, value in webhook_env.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    old_env = {**worker_env, **webhook_env, "PYTHONPATH": str(previous_release), "BGJOBS_JOBS": "[]",
               "BGJOBS_METRICS__ENABLED": "false"}  # fmt: skip
    client = broker_client(worker_env)
    with webhook_receiver() as receiver:
        # Given the database upgraded first (the worker_env fixture did) and a worker of 0.1 running
        old = start_worker(workers, old_env, processes=1)
        version = subprocess.run([sys.executable, "-c", "import bgjobs, importlib.metadata as m; "
                                  "print(m.version('bgjobs'), bgjobs.__file__)"], env=old.env,
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert version.startswith(f"0.1.0 {previous_release}"), version  # the wheel's code, not this tree's
        endpoint = webhooks.add_endpoint(receiver.url("/in"), event_types=["*"])

        # When today's code publishes: its dispatcher actor is one 0.1 does not have
        sent = webhooks.publish("booking.created", {"booking_id": "B1"})
        wait_for(lambda: client.zcard("dramatiq:webhooks.XQ") == 1, timeout=30, what="0.1 to dead-letter it")
        (left,) = deadletters.dead_letters()
        assert (left.actor, left.reason) == ("webhooks.dispatch", "retries exhausted after 1 attempt(s); "
                                             "last error ActorNotFound: webhooks.dispatch")  # fmt: skip

        # Then a worker of today's release, started beside it, adopts that letter and delivers. (0.1
        # takes the requeued letter as often as it wins the race for it, and dead-letters it again;
        # today's takes it on a later round. With one process of each, the consumers' 1-s polls
        # could keep 0.1 first for a minute; two of today's, as a deploy brings, make it seconds.)
        new = start_worker(workers, {**worker_env, **webhook_env}, processes=2)
        wait_for(lambda: [r.headers["webhook-id"] for r in receiver.received()] == [sent], timeout=60,
                 what="today's worker to deliver the message 0.1 dead-lettered")  # fmt: skip
        # (its log line reaches the file through the worker's main process, which may come later)
        said = "requeued 1 dead letter(s) that a worker without their actor left (webhooks.dispatch)"
        wait_for(lambda: said in new.output(), timeout=30, what="today's worker to say it requeued it")
        wait_for(lambda: client.zcard("dramatiq:webhooks.XQ") == 0, timeout=30, what="no letter left")

        # And what 0.1's code sends (its own delivery job, from a host not yet upgraded) today's reads
        old.terminate()
        published = subprocess.run(
            [sys.executable, "-c", "from bgjobs import webhooks; print(webhooks.publish('booking.cancelled', "
             "{'booking_id': 'B1'}))"], env=old.env, cwd=previous_release, capture_output=True, text=True,
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        from_old = published.stdout.strip().splitlines()[-1]
        wait_for(lambda: len(receiver.received()) == 2, timeout=60, what="today's worker to run 0.1's job")
        assert [r.headers["webhook-id"] for r in receiver.received()] == [sent, from_old]
        assert client.zcard("dramatiq:webhooks.XQ") == 0
        assert webhooks.get_endpoint(endpoint.id).enabled
