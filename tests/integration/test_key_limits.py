"""Per-key concurrency caps and rate limits on any actor: the cap holds (measured by the jobs),
keys are served side by side, a rate spaces starts, and limits change at run time; on the stub,
then on Redis and RabbitMQ with worker processes SIGKILLed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import bgjobs
from bgjobs import runtime
from bgjobs.errors import ConfigurationError
from bgjobs.keyed_redis import RedisKeyed
from bgjobs.keying import keyed_of
from bgjobs.testing import JobsHarness
from tests.support import batch_actors
from tests.support.batch_actors import Item, capped_item, rated_item
from tests.support.peaks import peak_per_key
from tests.support.processes import alive, children
from tests.support.workers import WorkerProcess, start_worker, wait_for


def _runs(prefix: str) -> list[str]:
    return [line for line in list(batch_actors.RUNS) if line.startswith(prefix)]


def test_a_key_never_runs_more_than_its_cap_and_another_key_is_not_kept_behind_it(stub: JobsHarness) -> None:
    stub.worker.pause()
    capped_item.send_many([Item(key="flood", sleep_s=0.02, children=n) for n in range(40)])
    small = [capped_item.send(Item(key="small", sleep_s=0.02, children=n)) for n in range(3)]
    assert len({m.message_id for m in small}) == 3
    states = {s.key: s for s in keyed_of(stub.broker).states("capped_item")}
    assert (states["flood"].running, states["flood"].waiting) == (2, 38)
    assert (states["small"].running, states["small"].waiting) == (2, 1)
    stub.worker.resume()
    wait_for(lambda: len(_runs("capped")) == 86, timeout=30, what="all 43 jobs to start and end")
    assert peak_per_key(_runs("capped")) == {"flood": 2, "small": 2}
    starts = [line.split()[1] for line in _runs("capped") if " start " in line]
    assert starts.index("small") < 4 and max(i for i, k in enumerate(starts) if k == "small") < 12, starts
    assert keyed_of(stub.broker).states("capped_item") == []


def test_a_rate_per_key_spaces_the_starts_and_keys_do_not_share_it(stub: JobsHarness) -> None:
    sent_at = time.time()
    rated_item.send_many([Item(key="a", children=n) for n in range(6)] + [Item(key="b", children=0)])
    wait_for(lambda: len(_runs("rated")) == 7, timeout=30, what="seven starts")
    a = sorted(float(line.split()[2]) for line in _runs("rated a"))
    b = float(_runs("rated b")[0].split()[2])
    assert a[-1] - sent_at >= 0.5  # 10/s: the sixth of one key starts at least 0.5 s after the send
    assert b < a[2]  # key b has its own turns


def test_drain_waits_for_jobs_waiting_for_their_turns_but_not_for_a_held_key(stub: JobsHarness) -> None:
    keyed_of(stub.broker).override("capped_item", "limit", "0", key="held")
    rated_item.send_many([Item(key="d", children=n) for n in range(5)])  # 10/s: half a second
    capped_item.send(Item(key="held"))
    stub.drain()
    assert len(_runs("rated d")) == 5 and _runs("capped held") == []


def test_one_key_s_own_rate_spaces_that_key_only(stub: JobsHarness) -> None:
    keyed = keyed_of(stub.broker)
    keyed.override("rated_item", "interval", "500", key="slow")  # 2/s for this key, 10/s for the others
    sent_at = time.time()
    rated_item.send_many([Item(key="slow", children=n) for n in range(3)] + [Item(key="a", children=0)])
    wait_for(lambda: len(_runs("rated")) == 4, timeout=30, what="four starts")
    slow = sorted(float(line.split()[2]) for line in _runs("rated slow"))
    assert slow[-1] - sent_at >= 1.0  # the third of "slow" waited two of its own turns
    assert keyed.state("rated_item", "slow").interval_ms == 500.0


def test_a_limit_changed_at_run_time_holds_a_key_and_then_lets_it_go(stub: JobsHarness) -> None:
    keyed = keyed_of(stub.broker)
    keyed.override("capped_item", "limit", "0", key="held")
    capped_item.send_many([Item(key="held", children=n) for n in range(3)] + [Item(key="free", children=0)])
    wait_for(lambda: len(_runs("capped free")) == 2, timeout=10, what="the free key's job")
    assert _runs("capped held") == []
    assert {s.key: (s.waiting, s.limit) for s in keyed.states("capped_item")} == {"held": (3, 0)}
    keyed.override("capped_item", "limit", None, key="held")
    wait_for(lambda: len(_runs("capped held")) == 6, timeout=10, what="the held key's three jobs")
    assert peak_per_key(_runs("capped"))["held"] <= 2


def test_a_delayed_send_is_admitted_when_it_is_due(stub: JobsHarness) -> None:
    stub.worker.pause()
    capped_item.send_many([Item(key="k", children=n) for n in range(2)])
    capped_item.send(Item(key="k", children=9), delay=10)
    stub.worker.resume()
    wait_for(lambda: len(_runs("capped k")) == 6, timeout=10, what="three jobs")
    assert peak_per_key(_runs("capped"))["k"] <= 2


def test_limits_from_settings_replace_the_declared_ones_and_a_run_time_change_still_wins(
    harness: Any,
) -> None:
    from bgjobs import key_limits
    from bgjobs.settings import KeyLimitSettings

    batch_actors.RUNS.clear()
    given = {"capped_item": KeyLimitSettings(limit=1), "rated_item": KeyLimitSettings(burst=3)}
    stub = harness(key_limits=given)
    (capped,) = [a for a in key_limits.overview() if a["actor"] == "capped_item"]
    assert capped["declared"]["limit"] == 1 and capped["current"]["limit"] == 1  # the code says 2
    (rated,) = [a for a in key_limits.overview() if a["actor"] == "rated_item"]
    assert rated["declared"]["burst"] == 3 and rated["declared"]["rate"] == "600/m"  # 10/s, as declared
    capped_item.send_many([Item(key="k", sleep_s=0.03, children=n) for n in range(6)])
    wait_for(lambda: len(_runs("capped k")) == 12, timeout=30, what="six jobs to start and end")
    assert peak_per_key(_runs("capped")) == {"k": 1}
    keyed_of(stub.broker).override("capped_item", "limit", "0")  # at run time: held
    capped_item.send(Item(key="k", children=9))
    stub.drain()
    assert len(_runs("capped k")) == 12
    batch_actors.RUNS.clear()


def test_limits_in_settings_for_an_actor_without_them_or_a_bad_rate_stop_the_worker_at_boot(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    said = {
        '{"record": {"limit": 1}}': "BGJOBS_KEY_LIMITS: 'record' is not an actor with per-key limits; those "
                                    "with them: exports.run, per_tenant",
        '{"per_tenant": {"rate": "lots"}}':
            "BGJOBS_KEY_LIMITS.per_tenant.rate='lots': give a rate like 100/m, 5/s, 1000/h or 3/10s",
        '{"per_tenant": {"limt": 1}}': "BGJOBS_KEY_LIMITS__PER_TENANT__LIMT is not a bgjobs setting",
    }  # fmt: skip
    for value, line in said.items():
        w = WorkerProcess({**worker_env, "BGJOBS_KEY_LIMITS": value}, processes=1)
        workers.append(w)
        w.start(wait=False)
        assert w.wait_exit(timeout=60) == 2
        shown = [s for s in w.output().splitlines() if s.startswith("bgjobs: ")]
        assert len(shown) == 1 and shown[0].startswith(f"bgjobs: configuration error: {line}"), shown
        assert "Traceback" not in w.output()


def test_mistakes_in_the_limits_are_refused_naming_them() -> None:
    with pytest.raises(ConfigurationError, match=r"key tenant is not a field of Item"):
        bgjobs.actor(concurrency=bgjobs.PerKey("tenant", limit=2))(_item_job)
    with pytest.raises(ConfigurationError, match=r"rate='lots': give a rate like 100/m"):
        bgjobs.PerKey("key", rate="lots")
    with pytest.raises(ConfigurationError, match=r"limit=0; give a whole number of at least 1"):
        bgjobs.PerKey("key", limit=0)
    with pytest.raises(ConfigurationError, match=r"concurrency=PerKey\(...\) needs limit="):
        bgjobs.actor(concurrency=bgjobs.PerKey("key", rate="1/s"))(_item_job)
    with pytest.raises(ConfigurationError, match=r"give both the same key"):
        bgjobs.actor(concurrency=bgjobs.PerKey("key", limit=1), rate=bgjobs.PerKey("sleep_s", rate="1/s"))(
            _item_job
        )
    with pytest.raises(ConfigurationError, match=r"debounce= and per-key limits do not combine"):
        bgjobs.actor(debounce="1s", concurrency=bgjobs.PerKey("key", limit=1))(_item_job)


def _item_job(payload: Item) -> None: ...


def test_caps_hold_across_processes_through_a_sigkill_on_every_engine(batch_env: dict[str, str]) -> None:
    env = batch_env
    runs = Path(env["TEST_RUNS_FILE"])

    def lines() -> list[str]:
        return runs.read_text().splitlines() if runs.exists() else []

    first = WorkerProcess(env, processes=1, threads=4).start()
    second = WorkerProcess(env, processes=1, threads=4).start()
    again = WorkerProcess(env, processes=1, threads=4)
    try:
        capped_item.send_many([Item(key=f"k{k}", sleep_s=0.03, children=n)
                               for n in range(30) for k in range(3)])  # fmt: skip
        wait_for(lambda: sum(" start " in k for k in lines()) >= 30, timeout=60, what="30 starts")
        assert first.proc is not None
        gone = children(first.proc.pid)
        first.kill()
        # A job they never ended ran until the kill: its copy (at once on RabbitMQ) starts after
        killed = dict.fromkeys(gone, first.killed_at)
        wait_for(lambda: not any(alive(pid) for pid in gone), timeout=10, what="the killed processes")
        again.start()

        def ended() -> set[str]:
            return {f"{k.split()[1]}/{k.split()[5]}" for k in lines() if " end " in k}

        wait_for(lambda: len(ended()) == 90, timeout=120, what="all 90 jobs to end at least once")
    finally:
        first.kill()
        second.terminate()
        again.terminate()
    assert peak_per_key(lines(), killed) == {"k0": 2, "k1": 2, "k2": 2}


def test_a_copy_of_a_job_that_gave_its_slot_back_before_its_worker_died_waits_for_a_slot(
    batch_env: dict[str, str], tmp_path: Path
) -> None:
    """The job ran to its end; its worker died before the ack. On RabbitMQ the slot was given back
    already (its ack is the broker's, a call of its own), the broker hands the message out again at
    once, and that copy must take a slot again rather than run as the admitted job it was. On the
    Redis broker the ack gives the slot back in the same call: the killed job still holds it, no
    other job takes it, and the copy runs in it after the heartbeat timeout."""
    from bgjobs.keyed_store import entry
    from bgjobs.keying import enqueue_pumped
    from tests.support.dying import KEY

    died = tmp_path / "died"
    env = {**batch_env, "BGJOBS_SETUP": "tests.support.dying:install", "TEST_DIED_FILE": str(died)}
    runs = Path(env["TEST_RUNS_FILE"])

    def starts() -> int:
        lines = runs.read_text().splitlines() if runs.exists() else []
        return sum(line.startswith(f"capped {KEY} start") for line in lines)

    dying = WorkerProcess(env, processes=1, threads=1).start()
    again = WorkerProcess(env, processes=1, threads=1)
    broker = runtime.current().broker
    keyed = keyed_of(broker)
    holders = [("capped_item", KEY, f"holder-{n}") for n in range(2)]
    try:
        capped_item.send(Item(key=KEY))
        assert dying.proc is not None
        wait_for(lambda: dying.proc is not None and dying.proc.poll() is not None, timeout=60,
                 what="the worker to die after the job gave its slot back")  # fmt: skip
        assert starts() == 1 and died.exists()
        if isinstance(keyed, RedisKeyed) and keyed.direct:

            def running() -> list[int]:
                return [s.running for s in keyed.states("capped_item") if s.key == KEY]

            assert keyed.admit([(*holders[0], entry(*holders[0][:2], "default", "h", b"{}"))])[0] == [True]
            assert running() == [2], "the killed job gave its slot back without its ack"
            again.start()
            wait_for(lambda: starts() == 2, timeout=60, what="the copy to run in the slot its job held")
            wait_for(lambda: running() == [1], timeout=30, what="the copy's ack to give the slot back")
            return
        # Both slots of the key are taken by others meanwhile
        verdicts, _ = keyed.admit([(*h, entry(*h[:2], "default", h[2], b"{}")) for h in holders])
        assert verdicts == [True, True]
        again.start()

        def settled() -> bool:
            waiting = sum(s.waiting for s in keyed.states("capped_item") if s.key == KEY)
            return waiting == 1 or starts() > 1

        wait_for(settled, timeout=60, what="the copy to wait in its lane or run")
        assert starts() == 1, "the copy ran with both slots of its key held by others"
        # A slot comes free: the copy takes it and runs, once (published here, as a worker would)
        enqueue_pumped(broker, keyed, keyed.release(holders[:1]), now=True)
        wait_for(lambda: starts() == 2, timeout=30, what="the copy to run once a slot came free")
    finally:
        dying.kill()
        again.terminate()
        enqueue_pumped(broker, keyed, keyed.release(holders), now=True)
    assert starts() == 2


def test_a_job_deleted_from_its_queue_gives_its_slot_to_the_next_of_its_key(
    worker_env: dict[str, str],
) -> None:
    from bgjobs import pausing, queued
    from tests.support.worker_jobs import per_tenant

    pausing.pause("default")
    first, second = (per_tenant.send({"key": "d"}) for _ in range(2))  # a cap of 1: the second waits
    broker = runtime.current().broker
    assert [(s.running, s.waiting) for s in keyed_of(broker).states("per_tenant")] == [(1, 1)]
    (job,) = [j for j in queued.jobs("default") if j.message_id == first.message_id]
    queued.delete("default", job.id)
    assert [(s.running, s.waiting) for s in keyed_of(broker).states("per_tenant")] == [(1, 0)]
    assert [j.message_id for j in queued.jobs("default")] == [second.message_id]


def test_jobs_waiting_for_their_key_belong_to_the_batch_they_were_sent_in(stub: JobsHarness) -> None:
    from bgjobs import batches

    stub.worker.pause()
    with bgjobs.batch(description="capped") as b:
        capped_item.send_many([Item(key="b", children=n) for n in range(5)])  # 2 queued, 3 in the lane
    s = batches.status(b.id)
    assert (s.total, s.pending) == (5, 5)
    stub.worker.resume()
    wait_for(lambda: batches.status(b.id).state == "done", timeout=30, what="the batch to complete")
    assert batches.status(b.id).succeeded == 5 and len(_runs("capped b start")) == 5


def test_a_delayed_job_admitted_by_the_worker_runs_once_and_leaves_nothing_behind(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    from tests.support.worker_jobs import per_tenant, starts

    client = runtime.current().broker.client
    start_worker(workers, worker_env, processes=1)
    for _ in range(3):
        per_tenant.send({"key": "later", "sleep_s": 0.1}, delay=50)  # admitted when due, one at a time
    wait_for(lambda: starts("later") == 3, timeout=30, what="three delayed jobs")
    wait_for(lambda: client.hlen("dramatiq:default.msgs") == 0, timeout=10, what="every job acked")
    assert not [k for k in client.keys("dramatiq:__acks__.*") if client.scard(k)]
    assert keyed_of(runtime.current().broker).states("per_tenant") == []


def test_on_the_redis_broker_the_ack_gives_the_slot_back_after_a_run_a_dead_letter_or_a_cancel(
    worker_env: dict[str, str], workers: list[WorkerProcess]
) -> None:
    """There a finished job's ack and its slot's release are one script call (consumer.py); a
    dead-lettered job's nack and a cancelled job's skip give the slot back as well, each letting
    the next job of its key (cap 1) start."""
    from bgjobs.typed import send_messages
    from tests.support.worker_jobs import per_tenant, starts

    broker = runtime.current().broker
    client = broker.client
    cancelled = per_tenant.message({"key": "acks"})
    bgjobs.cancel(cancelled.message_id)
    per_tenant.send({"key": "acks"})  # runs; the others wait in the key's lane
    per_tenant.send({"key": "acks", "sleep_s": -1}, max_retries=0)  # fails: dead-lettered
    send_messages(broker, [cancelled])  # skipped
    per_tenant.send({"key": "acks"})
    assert [(s.running, s.waiting) for s in keyed_of(broker).states("per_tenant")] == [(1, 3)]
    start_worker(workers, worker_env, processes=1)
    wait_for(lambda: keyed_of(broker).states("per_tenant") == [], timeout=30, what="every slot given back")
    assert starts("acks") == 3, "the cancelled job ran, or a job after it never did"
    assert client.zcard("dramatiq:default.XQ") == 1
    wait_for(lambda: client.hlen("dramatiq:default.msgs") == 0, timeout=10, what="every job acked")
    assert not [k for k in client.keys("dramatiq:__acks__.*") if client.scard(k)]


def test_bgjobs_limits_shows_sets_and_resets_from_the_command_line_and_audits_it(
    worker_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from bgjobs import cli
    from bgjobs.audit import entries
    from tests.support.worker_jobs import per_tenant

    assert cli.main(["limits", "set", "per_tenant", "--key", "t1", "--limit", "0"]) == 0
    assert capsys.readouterr().out.startswith("per_tenant: key=t1, limit=0, rate=none, burst=1;")
    per_tenant.send({"key": "t1"})
    assert cli.main(["limits", "show"]) == 0
    shown = capsys.readouterr().out.splitlines()
    (row,) = [line for line in shown if line.startswith("per_tenant ")]
    assert row.split()[1:3] == ["key", "1"] and "t1 limit" in row  # its cap, and what was changed
    assert cli.main(["limits", "show", "per_tenant"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[:4] == ["t1", "0", "1", "0"]
    assert cli.main(["limits", "set", "nobody", "--limit", "1"]) == 2
    assert "no actor 'nobody' with per-key limits" in capsys.readouterr().err
    assert cli.main(["limits", "reset", "per_tenant", "--key", "t1"]) == 0
    done = [(e.who.split(":")[0], e.action, e.resource) for e in entries()
            if e.resource.startswith("limits:")]  # fmt: skip
    assert done == [("cli", "reset-limit", "limits:per_tenant/t1"),
                    ("cli", "set-limit", "limits:per_tenant/t1")]  # fmt: skip


def test_the_busy_keys_and_the_waiting_jobs_are_gauges_read_at_scrape_time(
    worker_env: dict[str, str],
) -> None:
    from bgjobs.exposition import KeyCollector
    from tests.support.worker_jobs import per_tenant

    broker = runtime.current().broker
    keyed_of(broker).override("per_tenant", "limit", "0", key="t9")
    for key in ("t8", "t9", "t9"):  # t8 takes its slot; t9 is held: both of its jobs wait
        per_tenant.send({"key": key})
    busy, waiting = KeyCollector(broker).collect()
    assert [(s.name, s.labels, s.value) for s in busy.samples] == [
        ("bgjobs_keys_busy", {"actor": "per_tenant"}, 1)
    ]
    assert [(s.labels, s.value) for s in waiting.samples] == [({"actor": "per_tenant"}, 2)]


def test_the_busiest_keys_come_first_whatever_their_names(stub: JobsHarness) -> None:
    keyed = keyed_of(stub.broker)
    stub.worker.pause()
    keyed.override("capped_item", "limit", "0", key="zz")
    capped_item.send_many([Item(key="aa", children=0)] + [Item(key="zz", children=n) for n in range(4)])
    busiest = [(s.key, s.running, s.waiting) for s in keyed.states("capped_item")]
    assert busiest == [("zz", 0, 4), ("aa", 1, 0)]
    assert [s.key for s in keyed.states("capped_item", limit=1)] == ["zz"]
    assert keyed.totals()["capped_item"] == (1, 4)
    keyed.override("capped_item", "limit", None, key="zz")
    stub.worker.resume()
