"""Dead letters and status at scale: requeue, purge and ``bgjobs status`` on a big backlog.

1. Requeue: N dead letters on a real Redis, put back by ``deadletters.requeue`` (one Lua call per
   500 messages, atomic per message), beside the obvious alternative: a Python loop moving each
   message with its own MULTI/EXEC transaction (ZREM, HDEL x2, HSET, RPUSH), one round trip each.
2. Purge of N dead letters (batches of 500 ids per transaction).
3. ``status()`` with N ready messages and N dead letters in a queue: it reads counts and the head
   of each queue, so its time should not grow with N.

4. At the scale of a bad day (``--scale``, 1,000,000 by default; 0 skips it): letters across 5
   queues and 50 actors (and one rare actor with 50), stored as bgjobs stored them before the index
   and then reindexed: Redis memory per letter before and after the index; lookup by id and a
   filter by the rare actor, scanning (before) and through the index (after); the console's list
   page and a letter's page over HTTP; and a requeue of the 200,000 letters of one kind in a child
   process, timed, with its RSS growth.

    python benchmarks/deadletters.py [--letters 20000] [--scale 1000000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bgjobs.embedded import RedisServer  # noqa: E402


def _fill(client: object, n: int, queue: str = "default") -> None:
    """``n`` dead letters shaped as Dramatiq stores them, with bgjobs's reasons."""
    pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
    now = int(time.time() * 1000)
    for i in range(n):
        rid = str(uuid.uuid4())
        message = {"queue_name": queue, "actor_name": "bench", "args": [{"i": i}], "kwargs": {},
                   "options": {"redis_message_id": rid, "retries": 3, "traceback": "x" * 200},
                   "message_id": str(uuid.uuid4()), "message_timestamp": now}  # fmt: skip
        pipe.zadd(f"dramatiq:{queue}.XQ", {rid: now - i})
        pipe.hset(f"dramatiq:{queue}.XQ.msgs", rid, json.dumps(message))
        pipe.hset(f"dramatiq:{queue}.XQ.reasons", rid, json.dumps({"kind": "permanent", "reason": "bench"}))
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def _naive_requeue(client: object, queue: str = "default") -> int:
    """One transaction (one round trip) per message: what a script without Lua would do."""
    c: object = client
    moved = 0
    for rid, data in c.hscan_iter(f"dramatiq:{queue}.XQ.msgs"):  # type: ignore[attr-defined]
        message = json.loads(data)
        options = {k: v for k, v in message["options"].items() if k not in ("traceback", "eta")}
        options.update(retries=0, redis_message_id=(new := str(uuid.uuid4())))
        message["options"] = options
        pipe = c.pipeline(transaction=True)  # type: ignore[attr-defined]
        pipe.zrem(f"dramatiq:{queue}.XQ", rid)
        pipe.hdel(f"dramatiq:{queue}.XQ.msgs", rid)
        pipe.hdel(f"dramatiq:{queue}.XQ.reasons", rid)
        pipe.hset(f"dramatiq:{queue}.msgs", new, json.dumps(message))
        pipe.rpush(f"dramatiq:{queue}", new)
        pipe.execute()
        moved += 1
    return moved


def _median_ms(call: object) -> float:
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        timings.append((time.perf_counter() - started) * 1000)
    return sorted(timings)[10]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--letters", type=int, default=20_000)
    parser.add_argument("--scale", type=int, default=1_000_000, help="letters of the scale run (0: skip it)")
    args = parser.parse_args()
    n = args.letters
    with RedisServer() as server:
        import os

        os.environ["BGJOBS_BROKER_URL"] = server.url
        import redis

        from bgjobs import deadletters
        from bgjobs.status import status

        client = redis.Redis.from_url(server.url)

        _fill(client, n)
        started = time.perf_counter()
        moved = deadletters.requeue(deadletters.dead_letters(limit=None))
        bgjobs_s = time.perf_counter() - started
        assert (
            moved == n and client.zcard("dramatiq:default.XQ") == 0 and client.llen("dramatiq:default") == n
        )

        backlog = _median_ms(status)  # n ready messages in default
        client.flushall()
        empty = _median_ms(status)
        _fill(client, n)
        started = time.perf_counter()
        naive_moved = _naive_requeue(client)
        naive_s = time.perf_counter() - started
        assert naive_moved == n

        _fill(client, n, queue="webhooks")
        both = _median_ms(status)  # n ready in default and n dead letters in webhooks
        started = time.perf_counter()
        purged = deadletters.purge(queue="webhooks")
        purge_s = time.perf_counter() - started
        assert purged == n

    print(
        f"requeue {n} dead letters (list + move): bgjobs {bgjobs_s:.2f}s ({n / bgjobs_s:,.0f}/s); "
        f"one transaction per message {naive_s:.2f}s ({n / naive_s:,.0f}/s); ratio {naive_s / bgjobs_s:.1f}x"
    )
    print(f"purge {n} dead letters: {purge_s:.2f}s ({n / purge_s:,.0f}/s)")
    print(
        f"status(), median of 20: empty {empty:.1f} ms; {n} ready {backlog:.1f} ms; "
        f"{n} ready + {n} dead letters {both:.1f} ms (ratio to empty {both / empty:.1f}x)"
    )
    if args.scale:
        from benchmarks.deadletters_scale import scale

        scale(args.scale)


if __name__ == "__main__":
    main()
