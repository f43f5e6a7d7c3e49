"""Uniqueness and debounce on any actor: a duplicate dropped (its send returns the holder's id),
replaced, or debounced to the last of a burst; across processes on Redis and RabbitMQ."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import bgjobs
from bgjobs.errors import ConfigurationError
from bgjobs.testing import JobsHarness
from tests.support import batch_actors
from tests.support.batch_actors import Item, cancellable, debounced_item, replaced_item, unique_item
from tests.support.workers import ROOT, WorkerProcess, use_environment, wait_for

Start = Callable[..., JobsHarness]


def test_a_duplicate_sent_while_its_key_is_held_is_dropped_and_returns_the_holder_s_id(
    stub: JobsHarness,
) -> None:
    stub.worker.pause()
    first = unique_item.send(Item(key="r1", children=1))
    again = unique_item.send(Item(key="r1", children=2))
    other = unique_item.send(Item(key="r2", children=3))
    many = unique_item.send_many([Item(key="r1", children=4), Item(key="r3", children=5),
                                  Item(key="r3", children=6)])  # fmt: skip
    assert again.message_id == first.message_id and other.message_id != first.message_id
    assert many[0].message_id == first.message_id and many[1].message_id == many[2].message_id
    stub.worker.resume()
    stub.drain()
    assert sorted(batch_actors.RUNS) == ["unique r1 1", "unique r2 3", "unique r3 5"]
    # The window ends when the job finishes: the key is free again
    assert unique_item.send(Item(key="r1", children=7)).message_id != first.message_id
    stub.drain()
    assert "unique r1 7" in batch_actors.RUNS


def test_replace_runs_the_last_one_sent_and_skips_those_it_replaced(stub: JobsHarness) -> None:
    stub.worker.pause()
    sent = [replaced_item.send(Item(key="k", children=n)) for n in range(3)]
    assert len({m.message_id for m in sent}) == 3
    stub.worker.resume()
    stub.drain()
    assert batch_actors.RUNS == ["replaced k 2"]


def test_a_replaced_message_taken_after_its_replacement_finished_is_still_skipped(stub: JobsHarness) -> None:
    import dramatiq

    # Given two sends of one key, the first taken out of its queue before any worker sees it
    stub.worker.pause()
    replaced_item.send(Item(key="k", children=1))
    replaced_item.send(Item(key="k", children=2))
    queue = stub.broker.queues["default"]
    first = dramatiq.Message.decode(queue.get_nowait())
    queue.task_done()
    assert first.args[0]["children"] == 1
    # When the second runs to its end, and only then is the first taken
    stub.worker.resume()
    stub.drain()
    assert batch_actors.RUNS == ["replaced k 2"]
    stub.broker.enqueue(first)
    stub.drain()
    # Then the first is still skipped: the finished job left its key marked, not free
    assert batch_actors.RUNS == ["replaced k 2"]
    # And a new send of the key runs as before
    replaced_item.send(Item(key="k", children=3))
    stub.drain()
    assert batch_actors.RUNS == ["replaced k 2", "replaced k 3"]


def test_debounce_runs_the_last_of_a_burst_once_after_the_burst(stub: JobsHarness) -> None:
    for n in range(5):
        debounced_item.send(Item(key="user-1", children=n))
    debounced_item.send(Item(key="user-2", children=9))
    wait_for(lambda: len(stub.held()) == 6, timeout=10, what="six sends held for 2 s")
    assert batch_actors.RUNS == []  # nothing runs before the burst has been quiet for 2 s
    stub.release()
    stub.drain()
    assert sorted(batch_actors.RUNS) == ["debounced user-1 4", "debounced user-2 9"]


def test_mistakes_in_the_controls_are_refused_naming_them() -> None:
    with pytest.raises(ConfigurationError, match=r"unique key tenant is not a field of Item"):
        bgjobs.actor(unique=bgjobs.Unique(key=("tenant",)))(_item_job)
    with pytest.raises(ConfigurationError, match=r"window='soon': give a span like 30s"):
        bgjobs.Unique(window="soon")
    with pytest.raises(ConfigurationError, match=r"on_conflict='keep'; it is drop or replace"):
        bgjobs.Unique(on_conflict="keep")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"debounce='-1s'"):
        bgjobs.actor(debounce="-1s")(_item_job)


def _item_job(payload: Item) -> None: ...


_SENDER = """
import sys
from tests.support.batch_actors import Item, unique_item
one = Item(key="the-one", children=int(sys.argv[1]))
print(" ".join(sorted({unique_item.send(one).message_id for _ in range(int(sys.argv[2]))})), flush=True)
"""


def test_ten_processes_sending_one_key_run_it_once_on_every_engine(batch_env: dict[str, str]) -> None:
    env = batch_env
    full = {**os.environ, "PYTHONPATH": str(ROOT)}
    senders = [subprocess.Popen([sys.executable, "-c", _SENDER, str(n), "1000"], env=full, cwd=ROOT,
                                stdout=subprocess.PIPE, text=True) for n in range(10)]  # fmt: skip
    try:
        answers = [s.communicate(timeout=120)[0].strip() for s in senders]
    finally:
        for s in senders:
            s.kill()
    assert len(set(answers)) == 1 and " " not in answers[0]  # 10,000 sends, one message id back
    runs = Path(env["TEST_RUNS_FILE"])
    worker = WorkerProcess(env, processes=1, threads=4).start()
    try:
        wait_for(lambda: runs.exists() and runs.read_text().strip(), timeout=60, what="the one run")
        from bgjobs import deadletters

        broker = deadletters.operated_broker()
        wait_for(lambda: broker.queue_sizes(["default"])["default"].ready == 0, timeout=30,
                 what="an empty queue")  # fmt: skip
    finally:
        worker.terminate()
    lines = runs.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unique the-one "), lines


def test_a_cancelled_job_is_skipped_if_queued_and_told_if_running(stub: JobsHarness) -> None:
    from bgjobs.cancelling import cancellation

    stub.worker.pause()
    queued = [cancellable.send(Item(key=f"q{n}", sleep_s=0)) for n in range(3)]
    assert bgjobs.cancel(queued[1].message_id, by="ops@example.com") == queued[1].message_id
    stub.worker.resume()
    stub.drain()
    assert sorted(batch_actors.RUNS) == ["q0 finished", "q0 started", "q2 finished", "q2 started"]
    who = cancellation(stub.broker, queued[1].message_id)
    assert who is not None and who["by"] == "ops@example.com"
    # A running job sees the cancel and stops at its next look
    running = cancellable.send(Item(key="long", sleep_s=30))
    wait_for(lambda: "long started" in batch_actors.RUNS, timeout=10, what="the long job to start")
    bgjobs.cancel(running.message_id)
    stub.drain()
    assert "long stopped" in batch_actors.RUNS and "long finished" not in batch_actors.RUNS


def test_a_job_is_cancelled_by_its_unique_key_and_the_key_is_free_again(stub: JobsHarness) -> None:
    stub.worker.pause()
    held = unique_item.send(Item(key="k1", children=1))
    assert bgjobs.cancel(actor=unique_item, key=("k1",)) == held.message_id
    again = unique_item.send(Item(key="k1", children=2))
    assert again.message_id != held.message_id  # the key was given up with the cancel
    stub.worker.resume()
    stub.drain()
    assert batch_actors.RUNS == ["unique k1 2"]
    with pytest.raises(bgjobs.InvalidPayload, match=r"no unique_item job holds the key \('k9',\)"):
        bgjobs.cancel(actor=unique_item, key=("k9",))
    with pytest.raises(ConfigurationError, match="cancellable was declared without unique="):
        bgjobs.cancel(actor=cancellable, key=("x",))
    with pytest.raises(bgjobs.InvalidPayload, match="give a message id, or an actor and its unique key"):
        bgjobs.cancel()


def test_cancels_reach_real_workers_on_every_engine(batch_env: dict[str, str]) -> None:
    env = batch_env
    runs = Path(env["TEST_RUNS_FILE"])
    sent = [cancellable.send(Item(key=f"j{n}", sleep_s=0)) for n in range(20)]
    for message in sent[::2]:
        bgjobs.cancel(message.message_id, by="test")
    long = cancellable.send(Item(key="long", sleep_s=60))
    worker = WorkerProcess(env, processes=1, threads=2).start()
    try:
        wait_for(lambda: runs.exists() and "long started" in runs.read_text(), timeout=60,
                 what="the long job")  # fmt: skip
        bgjobs.cancel(long.message_id)
        wait_for(lambda: "long stopped" in runs.read_text(), timeout=30, what="the running job to stop")
    finally:
        worker.terminate()
    lines = runs.read_text().splitlines()
    finished = sorted(k for k in lines if k.endswith("finished"))
    assert finished == sorted(f"j{n} finished" for n in range(1, 20, 2))
    assert not any(k.startswith(f"j{n} ") for n in range(0, 20, 2) for k in lines)


def test_explain_says_why_a_job_is_not_running_or_what_became_of_it(
    engine_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    from bgjobs import cli, deadletters, pausing
    from bgjobs.explain import explain
    from tests.support.dead_letters import fill

    use_environment(monkeypatch, engine_env)
    broker = deadletters.operated_broker()
    broker.declare_queue("default")
    pausing.pause("default")
    waiting = cancellable.send(Item(key="w", sleep_s=0))
    later = cancellable.send(Item(key="d", sleep_s=0), delay=600_000)
    stopped = cancellable.send(Item(key="c", sleep_s=0))
    bgjobs.cancel(stopped.message_id, by="ops")
    first, _ = (replaced_item.send(Item(key="r", children=n)) for n in range(2))
    assert any(line.startswith("cancelled by ops at ") for line in explain(stopped.message_id))
    assert explain("no-such-id")[0] == (
        "no trace of no-such-id: it finished (finished jobs are not kept), or it is not an id send() returned"
    )
    if engine_env["BGJOBS_BROKER_URL"].startswith("amqp"):
        assert any("RabbitMQ cannot show a queued message" in line for line in explain(waiting.message_id))
        return
    said = explain(waiting.message_id)
    assert said[0] == "waiting in default: 0 ahead of it, 4 in the queue", said
    assert any(line.startswith("queue default is paused") for line in said)
    assert explain(later.message_id)[0].startswith("delayed in default until ")
    assert any(line.startswith("replaced by a later send of its key") for line in explain(first.message_id))
    (letter,) = fill(broker.client, "default", 1, at_ms=int(time.time() * 1000))
    assert explain(letter)[0].startswith("dead-lettered from default at ")
    assert cli.main(["explain", waiting.message_id]) == 0
    assert capsys.readouterr().out.startswith("waiting in default: 0 ahead of it")
