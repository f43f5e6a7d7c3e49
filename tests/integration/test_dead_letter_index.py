"""The dead letters' index on real Redis and RabbitMQ's coordination store: found by id, filtered by
actor and kind, kept in step through requeue, purge, expiry and the cap, rebuilt for letters
stored before it, and a bulk requeue SIGKILLed halfway loses and doubles nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import dramatiq
import pytest

from bgjobs import deadletters, letter_index, letter_queries, runtime
from bgjobs.errors import InvalidPayload
from tests.support.dead_letters import fill
from tests.support.workers import ROOT, wait_for

KINDS = ("permanent", "exhausted")


def _broker() -> Any:
    runtime.reset()
    broker = deadletters.operated_broker()
    for name in ("default", "mail"):
        broker.declare_queue(name)
    return broker


def _xq(broker: Any, queue: str) -> str:
    return f"{broker.namespace}:{queue}.XQ"


def _dead_letter(
    broker: Any, queue: str, actor: str, kind: str, at_ms: int, why: str = "it failed", indexed: bool = True
) -> dramatiq.Message[Any]:
    """A letter stored as a worker stores it: the reason (and index) first, then the nack."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name=actor, args=({"n": at_ms},), kwargs={},
        options={"redis_message_id": str(uuid.uuid4())},
    )  # fmt: skip
    letter, data = broker.dead_letter_id(message), message.encode()
    reason = {"kind": kind, "reason": why, "failed_at": at_ms, "attempts": 1}
    xq = _xq(broker, queue)
    if indexed:
        broker.record_dead_letter_reason(queue, letter, reason, message_id=message.message_id, actor=actor)
    else:  # as bgjobs stored it before the index existed
        broker.client.hset(f"{xq}.reasons", letter, json.dumps(reason))
    if hasattr(broker, "keep_dead_letter"):
        broker.keep_dead_letter(message, data, failed_at_ms=at_ms)
    else:
        broker.client.zadd(xq, {letter: at_ms})
        broker.client.hset(f"{xq}.msgs", letter, data)
    return message


def _consistent(broker: Any, queue: str) -> set[bytes]:
    """Every letter is in the index once, and the index holds nothing else; the letters' ids."""
    client, xq = broker.client, _xq(broker, queue)
    letters = set(client.zrange(xq, 0, -1))
    meta = client.hgetall(f"{xq}.meta")
    assert set(meta) == letters
    ids = client.hgetall(f"{xq}.ids")
    assert set(ids.values()) == letters
    assert all(meta[redis_id].split(b"\t")[0] == message_id for message_id, redis_id in ids.items())
    for by in ("actor", "kind"):
        indexed: list[bytes] = []
        for key in client.scan_iter(f"{xq}.by:{by}:*"):
            indexed += client.zrange(key, 0, -1)
        assert sorted(indexed) == sorted(letters), by
    return letters


def test_letters_are_found_and_filtered_through_requeue_purge_expiry_and_the_cap(
    engine_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = _broker()
    now = int(time.time() * 1000)
    sent = [
        _dead_letter(broker, queue, f"actor{n % 3}", KINDS[n % 2], now - 10_000 + n)
        for n, queue in enumerate(["default", "mail"] * 60)
    ]  # fmt: skip
    assert letter_index.indexed(broker.client, _xq(broker, "default"))
    # By the id send() returned, and by the Redis id
    one = sent[7]
    (found,) = deadletters.find([one.message_id])
    assert (found.message_id, found.queue) == (one.message_id, "mail")
    assert (found.actor, found.kind) == ("actor1", "exhausted")
    assert deadletters.find([found.redis_id])[0].message_id == one.message_id
    # A filter reads its index and returns exactly what a scan would
    every = deadletters.dead_letters(limit=None)
    assert len(every) == 120
    mine = deadletters.dead_letters(actor="actor2", kind="permanent", limit=None)
    scanned = [x.redis_id for x in every if (x.actor, x.kind) == ("actor2", "permanent")]
    assert [x.redis_id for x in mine] == scanned and len(scanned) == 20
    assert len(deadletters.dead_letters(queue="mail", kind="exhausted", limit=5)) == 5
    # Requeue and purge by id take the letters out of the index too
    assert deadletters.requeue(deadletters.find([m.message_id for m in sent[:10]])) == 10
    assert deadletters.purge_letters(deadletters.find([m.message_id for m in sent[10:20]])) == 10
    with pytest.raises(InvalidPayload, match=sent[3].message_id):
        deadletters.find([sent[3].message_id])
    assert len(_consistent(broker, "default")) + len(_consistent(broker, "mail")) == 100
    # Purge by age, then expiry by the maintenance pass
    assert deadletters.purge(queue="mail", older_than=timedelta(seconds=9.97)) > 0
    _consistent(broker, "mail")
    ttl = broker.worker_settings.dead_message_ttl_ms
    broker.run_maintenance(heartbeat=False, now_ms=now + ttl, recover=False)
    assert _consistent(broker, "default") == set() and _consistent(broker, "mail") == set()
    # The cap drops the oldest as new letters come, and keeps the index with what is left
    monkeypatch.setenv("BGJOBS_WORKER__MAX_DEAD_LETTERS", "5")
    broker = _broker()
    capped = [_dead_letter(broker, "default", "actor0", "permanent", now + n) for n in range(8)]
    left = deadletters.dead_letters(queue="default", limit=None)
    assert [x.message_id for x in left] == [m.message_id for m in reversed(capped[3:])]
    assert len(_consistent(broker, "default")) == 5


def test_a_reason_search_reads_a_bounded_page_and_says_where_to_go_on(
    redis_url: str, worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = _broker()
    now = int(time.time() * 1000)
    for n in range(300):  # the three oldest mention the vendor
        _dead_letter(broker, "default", "sync", "permanent", now - 1000 + n, "vendor down" if n < 3 else "no")
    monkeypatch.setattr(letter_queries, "SCAN_BUDGET", 100)
    first = deadletters.dead_letters(reason="VENDOR", limit=50)
    assert list(first) == [] and first.more_before is not None
    pages = 1
    found = first
    while found.more_before is not None and not found:
        found = deadletters.dead_letters(reason="vendor", before=found.more_before, limit=50)
        pages += 1
    assert [x.reason for x in found] == ["vendor down"] * 3 and pages == 3


def test_letters_stored_before_the_index_are_read_by_scanning_then_indexed_by_reindex(
    redis_url: str, worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = _broker()
    now = int(time.time() * 1000)
    old = [_dead_letter(broker, "default", f"a{n % 2}", "permanent", now + n, indexed=False)
           for n in range(40)]  # fmt: skip
    monkeypatch.setattr(letter_index, "INLINE_REINDEX", 10)  # too many to index inline: scanned
    assert not letter_index.indexed(broker.client, _xq(broker, "default"))
    assert deadletters.find([old[5].message_id])[0].actor == "a1"
    assert len(deadletters.dead_letters(actor="a0", limit=None)) == 20
    cli = subprocess.run([sys.executable, "-m", "bgjobs.cli", "dead-letters", "reindex"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)  # fmt: skip
    assert cli.returncode == 0 and cli.stdout.strip() == "indexed 40 dead letter(s)", cli.stderr
    assert letter_index.indexed(broker.client, _xq(broker, "default"))
    assert len(_consistent(broker, "default")) == 40
    assert len(deadletters.dead_letters(actor="a0", limit=None)) == 20


def test_a_bulk_requeue_sigkilled_halfway_leaves_each_letter_queued_or_a_letter_never_both(
    redis_url: str, worker_env: dict[str, str]
) -> None:
    broker = _broker()
    client, xq, total = broker.client, _xq(broker, "default"), 30_000
    sent = fill(client, "default", total, at_ms=int(time.time() * 1000) - total - 1000)  # before the requeue
    argv = [sys.executable, "-m", "bgjobs.cli", "dead-letters", "requeue", "--all"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as cli:
        try:
            queue = f"{broker.namespace}:default"
            wait_for(lambda: client.llen(queue) >= total // 4 or cli.poll() is not None, timeout=60,
                     interval=0.005, what="a quarter requeued")  # fmt: skip
            cli.send_signal(signal.SIGKILL)
        finally:
            cli.kill()
        cli.wait()
    queued = [json.loads(d)["message_id"] for d in client.hvals(f"{broker.namespace}:default.msgs")]
    letters = _consistent(broker, "default")
    print(f"SIGKILLed after {len(queued)} of {total} requeued")
    assert 0 < len(queued) < total  # killed halfway
    still = [json.loads(d)["message_id"] for d in client.hmget(f"{xq}.msgs", list(letters))]
    assert Counter(queued + still) == Counter(sent)  # each one queued or a letter: never both, never neither
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.strip() == f"requeued {len(still)} message(s)", again.stderr
    assert _consistent(broker, "default") == set()
    assert client.hlen(f"{broker.namespace}:default.msgs") == total
