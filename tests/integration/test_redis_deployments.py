"""Redis Sentinel and Redis over TLS, on real servers on 127.0.0.1: every connection bgjobs makes
goes through ``bgjobs.redis_connections``, and a failover or a certificate problem is handled or
named in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from bgjobs import runtime
from tests.support import worker_jobs
from tests.support.redis_servers import make_certificates, sentinel_deployment, tls_redis
from tests.support.workers import ROOT, WorkerProcess, start_worker, wait_for


def _bgjobs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """A command as an operator runs it: where the host's job modules (BGJOBS_JOBS) import."""
    return subprocess.run(
        [sys.executable, "-m", "bgjobs.cli", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_sentinel_failover_mid_load_loses_nothing_and_doubles_no_effect(
    worker_env: dict[str, str], workers: list[WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    with sentinel_deployment() as (deployment, processes):
        env = {**worker_env, "BGJOBS_BROKER_URL": deployment.url}
        monkeypatch.setenv("BGJOBS_BROKER_URL", deployment.url)
        runtime.reset()
        start_worker(workers, env, processes=2, threads=2)
        keys = [f"failover-{i}" for i in range(300)]
        # Given a backlog being worked through
        worker_jobs.record.send_many({"key": k, "sleep_s": 0.02} for k in keys)
        wait_for(lambda: worker_jobs.effect_count() >= 60, timeout=60, what="the first effects")
        # When the master is killed mid-load
        processes["master"].kill()
        # Then the sentinel promotes the replica, and the workers carry on with it
        wait_for(
            lambda: deployment.master_address()[1] == deployment.replica_port,
            timeout=30,
            what="the replica's promotion",
        )
        try:
            wait_for(lambda: worker_jobs.effect_count() == len(keys), timeout=90, what="every effect")
        except AssertionError:  # say where the missing ones are, for whoever reads the failure
            missing = [k for k in keys if k not in worker_jobs.effects()]
            found = sorted(k.decode() for k in worker_jobs._redis().keys("dramatiq:*"))
            raise AssertionError(f"missing {missing[:5]} of {len(missing)}; keys {found}") from None
        effects = worker_jobs.effects()
        lost = [k for k in keys if k not in effects]
        redelivered = [k for k in keys if worker_jobs.starts(k) > 1]
        print(
            f"sentinel failover: {len(keys)} jobs, lost {len(lost)}, duplicated effects 0 "
            f"(one row per key), redelivered {len(redelivered)}"
        )
        assert lost == [] and len(effects) == len(keys)
        # The commands reach the new master through the sentinel too
        status = _bgjobs(env, "status", "--json")
        assert status.returncode in (0, 1), status.stderr
        assert '"queues"' in status.stdout


def test_a_batch_and_a_workflow_complete_once_through_a_sentinel_failover(
    worker_env: dict[str, str], workers: list[WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counts, the callbacks and the stages live in the broker's Redis: a failover mid-batch
    loses none of them (replication keeps their order: a count the new master lacks went with the
    ack after it, so the job is redelivered and counted there) and doubles none."""
    from collections import Counter

    import bgjobs
    from bgjobs import batches, workflows
    from tests.support.batch_actors import Item, Step, done, item, step

    runs = tmp_path / "runs.txt"
    with sentinel_deployment() as (deployment, processes):
        env = {**worker_env, "BGJOBS_BROKER_URL": deployment.url,
               "BGJOBS_JOBS": '["tests.support.batch_actors"]', "TEST_RUNS_FILE": str(runs)}  # fmt: skip
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        runtime.reset()
        jobs = 300
        with bgjobs.batch(on_complete=done.message(Item(key="complete"))) as b:
            item.send_many([Item(key=f"k{n}", sleep_s=0.02) for n in range(jobs)])
        run = bgjobs.workflow(
            step.message(Step(key="fetch")),
            bgjobs.group(step.message(Step(key=f"resize-{n}", sleep_s=0.05)) for n in range(40)),
            step.message(Step(key="publish")),
        ).start()
        start_worker(workers, env, processes=2, threads=2)

        def lines() -> Counter[str]:
            return Counter(runs.read_text().splitlines()) if runs.exists() else Counter()

        wait_for(lambda: sum(lines().values()) >= jobs // 4, timeout=60, what="a quarter of the jobs")
        processes["master"].kill()  # mid-batch, mid-workflow
        wait_for(lambda: deployment.master_address()[1] == deployment.replica_port, timeout=30,
                 what="the replica's promotion")  # fmt: skip
        def settled(read: Callable[[], object]) -> object:
            try:
                return read()
            except redis.RedisError:  # the host's own reads name a failover in progress and do not wait
                return None

        wait_for(lambda: settled(lambda: batches.status(b.id).state == "done"), timeout=120,
                 what="the batch to complete")  # fmt: skip
        wait_for(lambda: settled(lambda: workflows.status(run.id).state == "succeeded"), timeout=120,
                 what="the workflow")  # fmt: skip
        complete = f"complete total={jobs} succeeded={jobs} failed=0 cancelled=0"
        try:
            wait_for(lambda: lines()[complete] >= 1, timeout=60, what="on_complete")
        except AssertionError:  # say what the batch and its callback came to, for whoever reads it
            seen = [k for k in lines() if "complete" in k]
            raise AssertionError(f"{batches.status(b.id)}; callbacks {seen}; "
                                 f"worker output: {workers[-1].output()[-2000:]}") from None
        s = batches.status(b.id)
        assert (s.total, s.succeeded, s.failed, s.pending) == (jobs, jobs, 0, 0)
        stages = [batches.status(f"{run.id}.{k}") for k in range(3)]
        assert [(x.total, x.succeeded) for x in stages] == [(1, 1), (40, 40), (1, 1)]  # each opened once
        counted = lines()
        assert counted[complete] == 1 and sum(n for k, n in counted.items() if k.startswith("complete")) == 1
        published = [k for k in counted if k.startswith("publish after")]
        assert len(published) == 1 and published[0].count("resize-") == 40


def test_redis_over_tls_with_a_ca_and_a_client_certificate(
    worker_env: dict[str, str], workers: list[WorkerProcess], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    certs = make_certificates(tmp_path)
    with tls_redis(certs, mutual=True) as port:
        url = f"rediss://127.0.0.1:{port}/0"
        tls = {
            "BGJOBS_REDIS_TLS__CA_FILE": str(certs.ca),
            "BGJOBS_REDIS_TLS__CERT_FILE": str(certs.client_cert),
            "BGJOBS_REDIS_TLS__KEY_FILE": str(certs.client_key),
        }
        env = {**worker_env, "BGJOBS_BROKER_URL": url, **tls}
        for name, value in {"BGJOBS_BROKER_URL": url, **tls}.items():
            monkeypatch.setenv(name, value)
        runtime.reset()
        # A worker, the sender and the commands all speak TLS with the client certificate
        start_worker(workers, env, processes=1)
        worker_jobs.record.send({"key": "over-tls", "sleep_s": 0})
        wait_for(lambda: worker_jobs.effect_count() == 1, timeout=30, what="the job over TLS")
        assert _bgjobs(env, "status").returncode in (0, 1)
        # A CA that did not sign the server's certificate: one line naming the setting
        untrusted = _bgjobs({**env, "BGJOBS_REDIS_TLS__CA_FILE": str(certs.other_ca)}, "status")
        assert untrusted.returncode == 2
        (line,) = untrusted.stderr.strip().splitlines()
        assert line.startswith(
            f"bgjobs: the Redis server at {url} presented a certificate this process does not trust"
        )
        assert line.endswith("set BGJOBS_REDIS_TLS__CA_FILE to the CA that signed it")
        # No client certificate where the server asks for one: refused, in one line
        anonymous = _bgjobs(
            {**env, "BGJOBS_REDIS_TLS__CERT_FILE": "", "BGJOBS_REDIS_TLS__KEY_FILE": ""}, "status"
        )
        assert anonymous.returncode == 2 and len(anonymous.stderr.strip().splitlines()) == 1
        assert "Traceback" not in anonymous.stderr


def test_tls_settings_beside_a_url_without_tls_are_refused(worker_env: dict[str, str]) -> None:
    done = _bgjobs({**worker_env, "BGJOBS_REDIS_TLS__CA_FILE": "/etc/ssl/certs/ca.pem"}, "status")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"bgjobs: BGJOBS_REDIS_TLS__* is set but {worker_env['BGJOBS_BROKER_URL']} is not "
        "TLS: use rediss:// (or rediss+sentinel://), or unset the TLS settings"
    )


SECRET = "hunter2-never-print-me"


AMQP = f"amqp://app:{SECRET}@127.0.0.1:1/%2F"


@pytest.mark.parametrize(
    "given",
    [
        {"BGJOBS_BROKER_URL": f"redis://:{SECRET}@127.0.0.1:1/0"},
        {"BGJOBS_BROKER_URL": f"redis+sentinel://:{SECRET}@127.0.0.1:1/mymaster/0"},
        {"BGJOBS_BROKER_URL": f"redis+sentinel://:{SECRET}@127.0.0.1/not-a-port"},
        {"BGJOBS_BROKER_URL": f"nats://user:{SECRET}@127.0.0.1:4222"},
        {"BGJOBS_DATABASE_URL": f"postgresql+psycopg://app:{SECRET}@127.0.0.1:1/app"},
        {"BGJOBS_BROKER_URL": AMQP},
        {"BGJOBS_BROKER_URL": AMQP, "BGJOBS_COORDINATION_URL": f"memcached://:{SECRET}@127.0.0.1:1"},
        {"BGJOBS_BROKER_URL": AMQP, "BGJOBS_COORDINATION_URL": f"redis://:{SECRET}@127.0.0.1:1/0"},
        {"BGJOBS_BROKER_URL": AMQP, "BGJOBS_COORDINATION_URL": f"redis://:{SECRET}@127.0.0.1:1/0",
         "BGJOBS_RABBITMQ__MANAGEMENT_URL": f"http://monitor:{SECRET}@127.0.0.1:1"},
    ],
)
def test_no_error_path_prints_a_url_s_password(
    given: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    from bgjobs import cli
    from bgjobs.settings import get_settings

    database = f"sqlite:///{tmp_path / 'x.db'}"
    env = {"BGJOBS_BROKER_URL": "redis://127.0.0.1:1/0", "BGJOBS_DATABASE_URL": database, **given}
    commands = (["status"], ["runs"], ["trigger", "cleanup.daily"], ["dead-letters", "list"], ["db", "check"])
    # Every command in this process (the same code paths, without an interpreter's start each) ...
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for command in commands:
        runtime.reset()
        get_settings.cache_clear()
        caplog.clear()
        try:
            code = cli.main(command)
        except SystemExit as exc:
            code = exc.code  # type: ignore[assignment]
        out = capsys.readouterr()
        shown = out.out + out.err
        assert code != 0, (command, shown)
        assert SECRET not in shown + caplog.text, (command, shown)  # nor in any log record
        assert "Traceback" not in shown, (command, shown)
    runtime.reset()
    # ... and one as its own process, logging configured as a command's is
    done = _bgjobs(env, "status")
    shown = done.stdout + done.stderr
    assert done.returncode != 0 and SECRET not in shown and "Traceback" not in shown, shown


def test_a_worker_s_enqueue_waits_out_a_short_outage_and_a_host_s_fails_at_once() -> None:
    import threading

    import dramatiq

    from bgjobs.embedded import RedisServer, free_port
    from bgjobs.redis_broker import BgjobsRedisBroker
    from bgjobs.settings import WorkerSettings

    port = free_port()
    server = RedisServer(port=port).start()
    broker = BgjobsRedisBroker(url=server.url, worker=WorkerSettings())
    broker.declare_queue("q")
    message = dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    server.stop()
    # A host's broker (no patience): one failure, at once
    with pytest.raises(redis.ConnectionError):
        broker.enqueue(message)
    # A worker's broker: Redis comes back 1.5 s later (a failover, a restart) and the retry lands
    broker.patience_s = 30
    again = RedisServer(port=port)
    threading.Timer(1.5, again.start).start()
    try:
        started = time.monotonic()
        sent = broker.enqueue(message)
        assert 1.0 < time.monotonic() - started < 10
        assert broker.client.lrange("dramatiq:q", 0, -1) == [sent.options["redis_message_id"].encode()]
    finally:
        broker.client.close()
        again.stop()


def test_a_send_during_a_failover_says_one_is_in_progress_and_a_wrong_service_is_named(
    worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bgjobs.errors import BrokerUnavailable

    with sentinel_deployment() as (deployment, processes):
        wrong = deployment.url.replace(f"/{deployment.service}/", "/no-such-service/")
        monkeypatch.setenv("BGJOBS_BROKER_URL", wrong)
        runtime.reset()
        with pytest.raises(BrokerUnavailable) as raised:
            worker_jobs.record.send({"key": "wrong-service"})
        assert "knows that service; check the service name in BGJOBS_BROKER_URL" in str(raised.value)
        # Given a master whose replica can never be promoted, so the failover stays in progress
        replica = redis.Redis(host="127.0.0.1", port=deployment.replica_port, socket_timeout=2)
        replica.config_set("replica-priority", 0)
        replica.close()
        monkeypatch.setenv("BGJOBS_BROKER_URL", deployment.url)
        runtime.reset()
        worker_jobs.record.send({"key": "before"})
        # When the master dies
        processes["master"].kill()
        # Then once the sentinel sees it down, a send says a failover is in progress, not to
        # check the configuration
        said: list[str] = []

        def failover_said() -> bool:
            runtime.reset()
            try:
                worker_jobs.record.send({"key": "during"})
            except BrokerUnavailable as exc:
                said.append(str(exc))
            return bool(said) and "a failover is in progress" in said[-1]

        wait_for(failover_said, timeout=30, what="a send to say a failover is in progress")
        assert "the send may be retried" in said[-1] and "check the service name" not in said[-1]


def _failover_to_a_lagging_replica(wait: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int, int]:
    """(acknowledged sends, of them lost, sends refused) across a failover to a replica that had
    stopped taking the master's writes."""
    import json
    import os
    import signal

    from bgjobs.errors import BrokerUnavailable

    with sentinel_deployment() as (deployment, processes):
        monkeypatch.setenv("BGJOBS_BROKER_URL", deployment.url)
        monkeypatch.setenv("BGJOBS_REDIS__WAIT_REPLICAS", str(wait))
        monkeypatch.setenv("BGJOBS_REDIS__WAIT_TIMEOUT_MS", "10000")  # a busy machine's replica keeps up
        runtime.reset()
        acknowledged, refused = [], 0
        # Given sends while the replica keeps up, then while it lags (stopped: it takes nothing)
        for i in range(10):
            acknowledged.append(worker_jobs.record.send({"key": f"before-{i}"}).message_id)
        master = redis.Redis(host="127.0.0.1", port=deployment.master_port, socket_timeout=5)
        follower = redis.Redis(host="127.0.0.1", port=deployment.replica_port, socket_timeout=5)
        wait_for(lambda: follower.info("replication")["slave_repl_offset"]
                 == master.info("replication")["master_repl_offset"], timeout=20,
                 what="the replica to catch up")  # fmt: skip
        follower.close()
        replica = processes["replica"].proc
        os.kill(replica.pid, signal.SIGSTOP)
        # (and cut from the master, so nothing more reaches even its socket's buffer)
        master.client_kill_filter(_type="replica")
        master.close()
        monkeypatch.setenv("BGJOBS_REDIS__WAIT_TIMEOUT_MS", "300")  # it will not answer: no need to wait long
        runtime.reset()
        said = []
        try:
            for i in range(10):
                try:
                    acknowledged.append(worker_jobs.record.send({"key": f"lagging-{i}"}).message_id)
                except BrokerUnavailable as exc:
                    said.append(str(exc))
                    refused += 1
            # When the master dies, and the replica comes back and is promoted
            processes["master"].kill()
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        wait_for(lambda: deployment.master_address()[1] == deployment.replica_port, timeout=60,
                 what="the replica's promotion")  # fmt: skip
        assert all("reached 0 of 1 replica(s) in 300 ms" in line for line in said), said
        client = redis.Redis(host="127.0.0.1", port=deployment.replica_port, socket_timeout=5)
        stored = {json.loads(v)["message_id"] for v in client.hvals("dramatiq:default.msgs")}
        client.close()
        return len(acknowledged), len([m for m in acknowledged if m not in stored]), refused


def test_an_acknowledged_send_survives_a_failover_to_a_lagging_replica_with_wait_replicas(
    worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the setting: every send returns, and those the replica had not received are lost
    sent, lost, refused = _failover_to_a_lagging_replica(0, monkeypatch)
    print(f"lagging-replica failover, no WAIT_REPLICAS: {sent} acknowledged, {lost} lost, {refused} refused")
    assert (sent, lost, refused) == (20, 10, 0)
    # With BGJOBS_REDIS__WAIT_REPLICAS=1: a send the replica does not confirm is refused, not lost
    sent, lost, refused = _failover_to_a_lagging_replica(1, monkeypatch)
    print(f"lagging-replica failover, WAIT_REPLICAS=1: {sent} acknowledged, {lost} lost, {refused} refused")
    assert (sent, lost, refused) == (10, 0, 10)


def test_send_many_and_a_scheduler_tick_wait_for_the_replica_too(
    worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal

    from bgjobs.errors import BrokerUnavailable

    with sentinel_deployment() as (deployment, processes):
        monkeypatch.setenv("BGJOBS_BROKER_URL", deployment.url)
        monkeypatch.setenv("BGJOBS_REDIS__WAIT_REPLICAS", "1")
        monkeypatch.setenv("BGJOBS_REDIS__WAIT_TIMEOUT_MS", "10000")  # a busy machine's replica keeps up
        runtime.reset()
        replica = redis.Redis(host="127.0.0.1", port=deployment.replica_port, socket_timeout=5)
        # While the replica keeps up, each returns once the replica has what it wrote
        worker_jobs.record.send_many({"key": f"many-{i}"} for i in range(5))
        assert replica.hlen("dramatiq:default.msgs") == 5
        broker = runtime.current().broker
        tick = worker_jobs.record.message({"key": "tick"})
        assert broker.enqueue_once(tick, key="dramatiq:test-tick", ttl_s=60) is not None  # type: ignore[attr-defined]
        assert replica.hlen("dramatiq:default.msgs") == 6 and replica.exists("dramatiq:test-tick")
        replica.close()
        # When the replica is cut off, neither returns as if its writes were safe
        os.kill(processes["replica"].proc.pid, signal.SIGSTOP)
        try:
            master = redis.Redis(host="127.0.0.1", port=deployment.master_port, socket_timeout=5)
            master.client_kill_filter(_type="replica")
            master.close()
            monkeypatch.setenv("BGJOBS_REDIS__WAIT_TIMEOUT_MS", "300")
            runtime.reset()
            broker = runtime.current().broker
            with pytest.raises(BrokerUnavailable, match=r"5 message\(s\) .* reached 0 of 1 replica\(s\)"):
                worker_jobs.record.send_many({"key": f"cut-{i}"} for i in range(5))
            with pytest.raises(BrokerUnavailable, match=r"reached 0 of 1 replica\(s\) in 300 ms"):
                broker.enqueue_once(worker_jobs.record.message({"key": "tick-2"}), key="dramatiq:t2",  # type: ignore[attr-defined]
                                    ttl_s=60)  # fmt: skip
        finally:
            os.kill(processes["replica"].proc.pid, signal.SIGCONT)


def test_waiting_for_replicas_is_refused_with_rabbitmq() -> None:
    from bgjobs.broker import build_broker
    from bgjobs.errors import ConfigurationError
    from bgjobs.settings import RedisSettings, Settings

    settings = Settings(broker_url="amqp://guest:guest@127.0.0.1:5672/%2F", coordination_url="redis://127.0.0.1:1/0",
                        redis=RedisSettings(wait_replicas=1))  # fmt: skip
    with pytest.raises(ConfigurationError, match=r"BGJOBS_REDIS__WAIT_REPLICAS applies to the Redis broker"):
        build_broker(settings)
