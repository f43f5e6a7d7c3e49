"""Batches: each job counted once, each callback enqueued once, cancel, nesting, run-time fan-out.

The stub broker's tests pin the semantics (the same rules as the Redis script, under a lock);
the worker tests run them on Redis in real ``dramatiq bgjobs.actors`` processes, one of them
SIGKILLed mid-batch.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path

import pytest

import bgjobs
from bgjobs import batches
from bgjobs.errors import InvalidPayload
from bgjobs.testing import JobsHarness
from tests.support import batch_actors
from tests.support.batch_actors import Item, done, item
from tests.support.workers import WorkerProcess, wait_for

Start = Callable[..., JobsHarness]
COMPLETE, OK = Item(key="complete"), Item(key="ok")


def _runs() -> collections.Counter[str]:
    return collections.Counter(batch_actors.RUNS)


def test_on_complete_and_on_success_run_once_every_job_is_counted(stub: JobsHarness) -> None:
    with bgjobs.batch(on_complete=done.message(Item(key="complete")), on_success=done.message(Item(key="ok")),
                      description="ten") as b:  # fmt: skip
        item.send_many([Item(key=f"k{n}") for n in range(8)])
        item.send(Item(key="k8"))
        item.send(Item(key="k9"), delay=50)
        assert batches.status(b.id).state == "open"
    stub.drain()
    stub.release()
    stub.drain()
    s = batches.status(b.id)
    assert (s.state, s.total, s.succeeded, s.failed, s.pending) == ("done", 10, 10, 0, 0)
    assert s.description == "ten"
    assert s.finished_at is not None and s.finished_at >= s.created_at
    runs = _runs()
    assert all(runs[f"k{n}"] == 1 for n in range(10))
    assert runs["complete total=10 succeeded=10 failed=0 cancelled=0"] == 1
    assert runs["ok total=10 succeeded=10 failed=0 cancelled=0"] == 1


def test_a_dead_lettered_job_completes_the_batch_without_success_until_it_is_requeued_and_succeeds(
    stub: JobsHarness,
) -> None:
    with bgjobs.batch(on_complete=done.message(COMPLETE), on_success=done.message(OK)) as b:
        item.send(Item(key="k1"))
        failing = item.send(Item(key="fail-1"))
    stub.drain()
    s = batches.status(b.id)
    assert (s.state, s.succeeded, s.failed) == ("done", 1, 1)
    assert [r for r in batch_actors.RUNS if r.startswith(("complete", "ok"))] == [
        "complete total=2 succeeded=1 failed=1 cancelled=0"
    ]
    # Counting the same job again (a redelivery) changes nothing; its success after a requeue does
    store = batches.store_for(stub.broker)
    index = failing.options[batches.INDEX]
    assert not store.settle(b.id, index, "failed")
    assert store.settle(b.id, index, "succeeded")
    assert not store.settle(b.id, index, "succeeded")
    stub.drain()
    assert (batches.status(b.id).succeeded, batches.status(b.id).failed) == (2, 0)
    assert _runs()["ok total=2 succeeded=2 failed=0 cancelled=0"] == 1
    assert sum(1 for r in batch_actors.RUNS if r.startswith("complete")) == 1


def test_a_job_adds_jobs_to_its_batch_and_a_nested_batch_completes_its_parent_after_itself(
    stub: JobsHarness,
) -> None:
    with bgjobs.batch(on_complete=done.message(Item(key="outer"))) as b:
        item.send(Item(key="fan", children=3))
        item.send(Item(key="nested", children=2))
    stub.drain()
    s = batches.status(b.id)
    # fan, its 3 children, and the nested batch (one job of the outer one) besides its own job
    assert (s.state, s.total, s.succeeded) == ("done", 6, 6)
    runs = batch_actors.RUNS
    assert {"fan.0", "fan.1", "fan.2", "nested.0", "nested.1"} <= set(runs)
    inner = next(i for i, r in enumerate(runs) if r.startswith("nested:inner-complete"))
    outer = next(i for i, r in enumerate(runs) if r.startswith("outer"))
    assert runs[inner] == "nested:inner-complete total=2 succeeded=2 failed=0 cancelled=0"
    assert inner < outer and runs[outer] == "outer total=6 succeeded=6 failed=0 cancelled=0"


def test_a_cancelled_batch_skips_its_jobs_not_started_and_still_completes(stub: JobsHarness) -> None:
    stub.worker.pause()  # nothing starts before the cancel
    with bgjobs.batch(on_complete=done.message(COMPLETE), on_success=done.message(OK)) as b:
        item.send_many([Item(key=f"k{n}") for n in range(5)])
    assert batches.cancel(b.id).cancel_requested
    stub.worker.resume()
    stub.drain()
    s = batches.status(b.id)
    assert (s.state, s.cancelled, s.succeeded) == ("done", 5, 0)
    assert not any(r.startswith("k") for r in batch_actors.RUNS)
    assert batch_actors.RUNS == ["complete total=5 succeeded=0 failed=0 cancelled=5"]


def test_a_job_sent_again_for_later_keeps_its_batch_open_until_the_copy_finishes(stub: JobsHarness) -> None:
    with bgjobs.batch(on_complete=done.message(COMPLETE)) as b:
        item.send(Item(key="k1"))
        item.send(Item(key="later", again=True))
    wait_for(lambda: "later postponed" in batch_actors.RUNS and len(stub.held()) == 1
             and batches.status(b.id).succeeded == 1, timeout=10,
             what="k1 counted, the copy held for later")  # fmt: skip
    s = batches.status(b.id)
    assert (s.state, s.succeeded, s.pending) == ("running", 1, 1)  # the copy holds the place
    assert not any(r.startswith("complete") for r in batch_actors.RUNS)
    stub.release()
    stub.drain()
    s = batches.status(b.id)
    assert (s.state, s.succeeded, s.total) == ("done", 2, 2)
    assert _runs()["complete total=2 succeeded=2 failed=0 cancelled=0"] == 1


def test_a_send_that_fails_inside_the_block_holds_no_place_in_the_batch(
    stub: JobsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bgjobs.errors import BrokerUnavailable

    enqueue = stub.broker.enqueue

    def refusing(message: object, *, delay: int | None = None) -> object:
        if "refused" in str(message.args):  # type: ignore[attr-defined]
            stub.broker.emit_before("enqueue", message, delay)  # tagged, then the write fails
            raise BrokerUnavailable("the broker did not answer")
        return enqueue(message, delay=delay)  # type: ignore[arg-type]

    monkeypatch.setattr(stub.broker, "enqueue", refusing)
    with bgjobs.batch(on_complete=done.message(COMPLETE)) as b:
        item.send(Item(key="k1"))
        with pytest.raises(BrokerUnavailable):
            item.send(Item(key="refused"))
    stub.drain()
    s = batches.status(b.id)
    assert (s.state, s.total, s.succeeded) == ("done", 1, 1)
    assert _runs()["complete total=1 succeeded=1 failed=0 cancelled=0"] == 1


def test_an_unknown_batch_is_refused_naming_it(stub: JobsHarness) -> None:
    with pytest.raises(InvalidPayload, match="no batch 'b_nope'"):
        batches.status("b_nope")
    with pytest.raises(InvalidPayload, match="no batch 'b_nope'"):
        batches.cancel("b_nope")


def _lines(path: Path) -> collections.Counter[str]:
    return collections.Counter(path.read_text().splitlines()) if path.exists() else collections.Counter()


def _batch_env(batch_env: dict[str, str]) -> dict[str, str]:
    from bgjobs import db

    db.upgrade()
    return batch_env


def test_a_batch_counts_every_job_once_and_calls_back_once_through_a_sigkill(
    batch_env: dict[str, str],
) -> None:
    env = _batch_env(batch_env)
    runs = Path(env["TEST_RUNS_FILE"])
    jobs = 400
    with bgjobs.batch(on_complete=done.message(COMPLETE), on_success=done.message(OK)) as b:
        item.send_many([Item(key=f"k{n}", sleep_s=0.01) for n in range(jobs - 1)])
        item.send(Item(key="fan", children=1))
    first = WorkerProcess(env, processes=2, threads=4).start()
    again = WorkerProcess(env, processes=2, threads=4)
    try:
        wait_for(lambda: sum(_lines(runs).values()) >= jobs // 4, timeout=60, what="a quarter of the jobs")
        first.kill()  # mid-batch: jobs in flight run again, and are counted once
        again.start()
        wait_for(lambda: batches.status(b.id).state == "done", timeout=120, what="the batch to complete")
        success = f"ok total={jobs + 1} succeeded={jobs + 1} failed=0 cancelled=0"
        wait_for(lambda: _lines(runs)[success], timeout=60, what="on_success")
    finally:
        first.kill()
        again.terminate()  # a clean stop: whatever it held is done before the counts below
    s = batches.status(b.id)
    assert (s.total, s.succeeded, s.failed, s.cancelled, s.pending) == (jobs + 1, jobs + 1, 0, 0, 0)
    counts = _lines(runs)
    assert all(counts[f"k{n}"] >= 1 for n in range(jobs - 1)) and counts["fan.0"] >= 1
    callbacks = {line: n for line, n in counts.items() if line.startswith(("complete", "ok"))}
    assert callbacks == {
        f"complete total={jobs + 1} succeeded={jobs + 1} failed=0 cancelled=0": 1,
        f"ok total={jobs + 1} succeeded={jobs + 1} failed=0 cancelled=0": 1,
    }


class _RedisBroker:
    """What the Redis store reads of a broker: its client and namespace."""

    def __init__(self, url: str) -> None:
        import redis

        self.client, self.namespace = redis.Redis.from_url(url), "dramatiq"


def test_the_redis_script_counts_each_job_once_and_enqueues_each_callback_once(redis_url: str) -> None:
    import dramatiq

    from bgjobs.batch_store import RedisBatches

    broker = _RedisBroker(redis_url)
    store = RedisBatches(broker)

    def callback(key: str) -> dramatiq.Message[object]:
        return dramatiq.Message(queue_name="default", actor_name="done", args=({"key": key},), kwargs={},
                                options={})  # fmt: skip

    def enqueued() -> list[str]:
        ids = broker.client.lrange("dramatiq:default", 0, -1)
        data = [broker.client.hget("dramatiq:default.msgs", i) for i in ids]
        return [dramatiq.Message.decode(d).args[0]["key"] for d in data if d is not None]

    # A parent with two jobs, the second a child batch of three jobs
    store.create("p", description="parent", parent=None, on_success=callback("p-ok"),
                 on_complete=callback("p-complete"))  # fmt: skip
    first = store.reserve("p", 2, counted=False)
    store.create("c", description="child", parent=("p", first + 1), on_success=callback("c-ok"),
                 on_complete=callback("c-complete"))  # fmt: skip
    assert store.reserve("c", 3, counted=False) == 0
    assert store.settle("p", first, "succeeded") and not store.settle("p", first, "succeeded")
    assert store.settle("c", 0, "succeeded") and store.settle("c", 1, "failed")
    store.close("p", 2)
    assert enqueued() == []  # the child is still open
    assert store.settle("c", 2, "succeeded")
    assert enqueued() == []
    store.close("c", 3)  # the child completes (one job failed), and with it its parent
    assert enqueued() == ["c-complete", "p-complete"]
    assert (store.status("c").state, store.status("p").state) == ("done", "done")  # type: ignore[union-attr]
    assert (store.status("p").succeeded, store.status("p").failed) == (1, 1)  # type: ignore[union-attr]
    # The failed job, requeued, succeeds: both batches now succeed, once
    assert not store.settle("c", 1, "failed")
    assert store.settle("c", 1, "succeeded")
    assert not store.settle("c", 1, "succeeded")
    assert enqueued() == ["c-complete", "p-complete", "c-ok", "p-ok"]
    assert (store.status("p").succeeded, store.status("p").failed) == (2, 0)  # type: ignore[union-attr]
    assert broker.client.ttl("dramatiq:bgjobs-batch:p") > 0
    assert store.status("nope") is None


def test_a_cancel_skips_what_has_not_started_and_the_callback_still_runs_once(
    batch_env: dict[str, str],
) -> None:
    env = _batch_env(batch_env)
    runs = Path(env["TEST_RUNS_FILE"])
    with bgjobs.batch(on_complete=done.message(COMPLETE), on_success=done.message(OK)) as b:
        item.send_many([Item(key=f"k{n}", sleep_s=0.05) for n in range(200)])
    running = WorkerProcess(env, processes=1, threads=2).start()
    try:
        wait_for(lambda: sum(_lines(runs).values()) >= 10, timeout=60, what="ten jobs run")
        batches.cancel(b.id)
        wait_for(lambda: batches.status(b.id).state == "done", timeout=60, what="the batch to complete")
        s = batches.status(b.id)
        line = f"complete total=200 succeeded={s.succeeded} failed=0 cancelled={s.cancelled}"
        wait_for(lambda: _lines(runs)[line], timeout=30, what="on_complete")
    finally:
        running.terminate()
    assert s.cancelled > 100 and s.succeeded + s.cancelled == 200 and s.cancel_requested
    counts = _lines(runs)
    ran = [k for k in counts if k.startswith("k")]
    assert len(ran) <= s.succeeded  # a skipped job never ran (one running at the cancel may stop early)
    assert [k for k in counts if k.startswith(("complete", "ok"))] == [line] and counts[line] == 1


def test_a_broker_without_a_batch_store_is_refused_in_one_line() -> None:
    from types import SimpleNamespace

    from bgjobs.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="batches need bgjobs's Redis or RabbitMQ broker"):
        batches.store_for(SimpleNamespace())  # type: ignore[arg-type]


def test_bgjobs_batches_lists_shows_and_cancels(
    stub: JobsHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from bgjobs import cli

    stub.worker.pause()
    with bgjobs.batch(description="nightly") as b:
        item.send_many([Item(key=f"k{n}") for n in range(3)])
    assert cli.main(["batches", "list"]) == 0
    listed = capsys.readouterr().out
    assert b.id in listed and "nightly" in listed and "running" in listed
    assert cli.main(["batches", "show", b.id]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["id"], shown["total"], shown["pending"]) == (b.id, 3, 3)
    assert cli.main(["batches", "cancel", b.id]) == 0
    assert capsys.readouterr().out.startswith(f"cancelled {b.id}: 3 job(s) not started yet will be skipped")
    stub.worker.resume()
    stub.drain()
    assert cli.main(["batches", "list", "--json"]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out) if r["id"] == b.id]
    assert (row["state"], row["cancelled"], row["cancel_requested"]) == ("done", 3, True)
    assert cli.main(["batches", "show", "b_nope"]) != 0
    refused = capsys.readouterr().err.strip()
    assert refused.endswith("batch: no batch 'b_nope' (finished batches are kept 7 days)")
