"""A rolling deploy: a message for an actor a worker does not know (sent by a newer release, or for
a module missing from ``BGJOBS_JOBS``) waits for a worker that knows it, then is dead-lettered with
the fix. Real workers on a real Redis."""

from __future__ import annotations

from bgjobs import deadletters
from tests.support import worker_jobs
from tests.support.workers import WorkerProcess, broker_client, start_worker, wait_for


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


def test_an_actor_still_unknown_after_the_grace_period_is_dead_lettered_with_the_fix(
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
