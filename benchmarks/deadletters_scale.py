"""Dead letters at the scale of a bad day: part 4 of ``benchmarks/deadletters.py`` (see there)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

QUEUES = ("default", "notifications", "webhooks", "exports", "payouts")
RARE = "rare_actor"

_REQUEUE = """
import json, time
from bgjobs import deadletters
def rss_mb(field="VmRSS"):  # VmHWM is the peak (ru_maxrss would count the parent's, from before exec)
    with open("/proc/self/status") as f:
        return int(f.read().split(field + ":")[1].split()[0]) / 1024
deadletters.operated_broker()
base = rss_mb()
started = time.perf_counter()
selected = moved = 0
for page in deadletters.matching(kind="invalid"):
    selected += len(page)
    moved += deadletters.requeue(page)
print(json.dumps({"selected": selected, "moved": moved, "s": time.perf_counter() - started, "base_mb": base,
                  "peak_mb": rss_mb("VmHWM")}))
"""


def _fill(client: object, n: int) -> list[str]:
    """``n`` letters as bgjobs stored them before the index (message, reason); their message ids.
    One in five is of kind ``invalid`` (the bulk requeue's 200,000 at a million); 50 are the rare
    actor's, spread through the set."""
    pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
    now = int(time.time() * 1000) - n - 60_000
    rare = set(random.Random(5).sample(range(n), 50))
    ids = []
    for i in range(n):
        queue, rid, mid = QUEUES[i % 5], str(uuid.uuid4()), str(uuid.uuid4())
        kind = "invalid" if i % 5 == 2 else ("permanent" if i % 2 else "exhausted")
        actor = RARE if i in rare else f"actor{i % 50}"
        message = {"queue_name": queue, "actor_name": actor, "args": [{"i": i}], "kwargs": {},
                   "options": {"redis_message_id": rid, "retries": 3, "traceback": "x" * 200},
                   "message_id": mid, "message_timestamp": now}  # fmt: skip
        xq = f"dramatiq:{queue}.XQ"
        pipe.zadd(xq, {rid: now + i})
        pipe.hset(f"{xq}.msgs", rid, json.dumps(message))
        why = {"kind": kind, "reason": f"bench {kind}", "failed_at": now + i, "attempts": 3}
        pipe.hset(f"{xq}.reasons", rid, json.dumps(why))
        ids.append(mid)
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    return ids


def _ms(call: object, rounds: int) -> tuple[float, float]:
    """Median and p99 of ``rounds`` calls, in ms."""
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return timings[len(timings) // 2], timings[max(0, int(len(timings) * 0.99) - 1)]


def scale(n: int) -> None:
    from benchmarks.common import served
    from bgjobs.embedded import RedisServer

    workdir = Path(tempfile.mkdtemp(prefix="bgjobs-bench-letters-"))
    with RedisServer() as server:
        env = {"BGJOBS_BROKER_URL": server.url, "BGJOBS_DATABASE_URL": f"sqlite:///{workdir / 'c.db'}"}
        os.environ.update(env)
        import httpx
        import redis

        from bgjobs import db, deadletters, runtime
        from bgjobs.console import create_app
        from bgjobs.redis_broker import QUEUES_KEY

        runtime.reset()
        db.upgrade()
        client = redis.Redis.from_url(server.url)
        client.sadd(f"dramatiq:{QUEUES_KEY}", *QUEUES)
        empty = int(client.info("memory")["used_memory"])
        started = time.perf_counter()
        ids = _fill(client, n)
        fill_s = time.perf_counter() - started
        before = (int(client.info("memory")["used_memory"]) - empty) / n
        sample = random.Random(9).sample(ids, 200)
        # Before the index: what every lookup and filter cost (a scan of every letter)
        scan_find, _ = _ms(lambda: deadletters.find([sample[0]]), 1)
        scan_rare, _ = _ms(lambda: deadletters.dead_letters(actor=RARE, limit=50), 1)
        started = time.perf_counter()
        indexed = deadletters.reindex()
        reindex_s = time.perf_counter() - started
        assert indexed == n, indexed
        after = (int(client.info("memory")["used_memory"]) - empty) / n
        it = iter(sample * 5)
        find_p50, find_p99 = _ms(lambda: deadletters.find([next(it)]), 1000)
        found = deadletters.dead_letters(actor=RARE, limit=50)
        assert len(found) == 50, len(found)
        rare_p50, rare_p99 = _ms(lambda: deadletters.dead_letters(actor=RARE, limit=50), 200)
        with served(create_app()) as url, httpx.Client(base_url=url, timeout=60) as http:
            for path in ("/dead-letters", f"/dead-letters/{sample[1]}"):
                assert http.get(path).status_code == 200
            page_p50, page_p99 = _ms(lambda: http.get("/dead-letters").raise_for_status(), 100)
            one_p50, one_p99 = _ms(lambda: http.get(f"/dead-letters/{sample[2]}").raise_for_status(), 100)
            rare_page, _ = _ms(lambda: http.get(f"/dead-letters?actor={RARE}").raise_for_status(), 20)
        child = subprocess.run([sys.executable, "-c", _REQUEUE], capture_output=True, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)  # fmt: skip
        assert child.returncode == 0, child.stderr
        bulk = json.loads(child.stdout)
        assert bulk["moved"] == bulk["selected"] == n // 5, bulk
        queued = sum(client.llen(f"dramatiq:{q}") for q in QUEUES)
        assert queued == n // 5, queued
    print(f"dead letters at scale: {n:,} letters in 5 queues, 50 actors and a rare one (50 letters); "
          f"filled in {fill_s:.0f} s, reindexed in {reindex_s:.0f} s ({n / reindex_s:,.0f} letters/s)")
    print(f"  Redis memory per letter: {before:,.0f} B as stored before the index, {after:,.0f} B with it "
          f"(+{after - before:,.0f} B)")
    print(f"  lookup by message id: scanning {scan_find:,.0f} ms; indexed p50 {find_p50:.2f} ms, "
          f"p99 {find_p99:.2f} ms (1,000 lookups)")
    print(f"  filter by the rare actor (50 letters): scanning {scan_rare:,.0f} ms; indexed p50 "
          f"{rare_p50:.1f} ms, p99 {rare_p99:.1f} ms; its console page {rare_page:.1f} ms")
    print(f"  console over HTTP: the list page p50 {page_p50:.1f} ms, p99 {page_p99:.1f} ms; a letter's page "
          f"p50 {one_p50:.1f} ms, p99 {one_p99:.1f} ms")
    print(f"  requeue of the {bulk['moved']:,} letters of one kind (a child process, streaming): "
          f"{bulk['s']:.1f} s ({bulk['moved'] / bulk['s']:,.0f}/s), RSS {bulk['base_mb']:.0f} MB at start, "
          f"peak {bulk['peak_mb']:.0f} MB (+{bulk['peak_mb'] - bulk['base_mb']:.0f} MB)")
