"""The index beside each queue's dead letters: by message id, by actor, by kind (``letters.lua``).

Every script that adds or removes a dead letter (the worker's nack through
:meth:`bgjobs.operated.OperatedBroker.record_dead_letter_reason`, the poison guard, an
undecodable message, RabbitMQ's redelivery count, expiry, requeue, purge) has ``letters.lua``
prepended and keeps the index in the same step, so a lookup by id is one hash read and a filter by
actor or kind reads only the letters it returns, at a million letters as at ten. Letters stored
before the index existed are indexed by :func:`reindex` (``bgjobs dead-letters reindex``), or on
first use for a queue of up to :data:`INLINE_REINDEX` letters; until then a queue is scanned.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

__all__ = ["INLINE_REINDEX", "LIBRARY", "forget", "indexed", "record", "reindex", "script"]

LIBRARY = resources.files("bgjobs").joinpath("letters.lua").read_text()
#: A queue of at most this many letters not yet indexed is indexed when first read.
INLINE_REINDEX = 10_000
#: Letters per round trip when reindexing or forgetting.
PAGE = 500

_OPS = LIBRARY + """
local xq, op = KEYS[1], ARGV[1]
if op == "record" then
    -- ARGV: op, id, message_id, actor, kind, at, reason_json, cap
    redis.call("hset", xq .. ".reasons", ARGV[2], ARGV[7])
    letter_index(xq, ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
    local cap, dropped = tonumber(ARGV[8]), 0
    if cap > 0 then
        local present = redis.call("zcard", xq)
        if not redis.call("zscore", xq, ARGV[2]) then
            present = present + 1 -- the nack that follows adds it
        end
        if present > cap then
            for _, id in ipairs(redis.call("zrange", xq, 0, present - cap - 1)) do
                dropped = dropped + letter_forget(xq, id)
            end
        end
    end
    return dropped
elseif op == "forget" then
    local n = 0
    for i = 2, #ARGV do
        n = n + letter_forget(xq, ARGV[i])
    end
    return n
elseif op == "reindex" then
    -- ARGV: op, complete, then id, message_id, actor, kind, at per letter
    for i = 3, #ARGV, 5 do
        if redis.call("zscore", xq, ARGV[i]) then
            letter_index(xq, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
        end
    end
    if ARGV[2] == "1" then
        redis.call("set", xq .. ".indexed", "1")
    end
    return 1
end
return redis.error_reply("letters: unknown op " .. op)
"""

_scripts: dict[int, tuple[Any, Any]] = {}


def script(client: Any) -> Any:
    """The index's script on ``client`` (registered once per client)."""
    found = _scripts.get(id(client))
    if found is None or found[0] is not client:
        found = _scripts[id(client)] = (client, client.register_script(_OPS))
    return found[1]


def record(
    client: Any, xq: str, letter_id: str, *, message_id: str, actor: str, reason: dict[str, Any], at_ms: int,
    cap: int = 0,
) -> int:  # fmt: skip
    """Keep a new dead letter's reason and index it; returns how many of the oldest letters the
    queue's ``cap`` dropped (0 without a cap)."""
    args = ["record", letter_id, message_id, actor, str(reason.get("kind", "unknown")), at_ms,
            json.dumps(reason), cap]  # fmt: skip
    return int(script(client)(keys=[xq], args=args))


def forget(client: Any, xq: str, ids: list[str]) -> int:
    """Remove these letters of a queue and their index entries; how many were letters."""
    removed = 0
    for start in range(0, len(ids), PAGE):
        removed += int(script(client)(keys=[xq], args=["forget", *ids[start : start + PAGE]]))
    return removed


def indexed(client: Any, xq: str) -> bool:
    return bool(client.exists(f"{xq}.indexed"))


def reindex(
    client: Any, xq: str, identify: Callable[[bytes | None, bytes | None], tuple[str, str, str]],
    progress: Callable[[int], None] | None = None,
) -> int:  # fmt: skip
    """Index every letter of a queue (those stored before the index existed), a page at a time;
    ``identify(data, reason)`` gives a letter's message id, actor and kind. Returns how many.
    Safe beside workers adding and removing letters: a letter gone meanwhile is not indexed."""
    # By score, not by rank: letters expiring meanwhile would shift ranks and skip others
    cursor: float | str = "-inf"
    at_cursor: set[bytes] = set()
    done = 0
    while True:
        found = client.zrangebyscore(xq, cursor, "+inf", start=0, num=PAGE + len(at_cursor), withscores=True)
        page: list[tuple[bytes, float]] = [(i, at) for i, at in found if i not in at_cursor]
        last = len(found) < PAGE + len(at_cursor)
        datas: list[Any] = []
        reasons: list[Any] = []
        if page:
            pipe = client.pipeline(transaction=False)
            pipe.hmget(f"{xq}.msgs", [i for i, _ in page])
            pipe.hmget(f"{xq}.reasons", [i for i, _ in page])
            datas, reasons = pipe.execute()
        args: list[Any] = ["reindex", "1" if last else "0"]
        for (letter_id, at), data, why in zip(page, datas, reasons, strict=True):
            message_id, actor, kind = identify(data, why)
            args += [letter_id, message_id or letter_id.decode(), actor, kind, int(at)]
        script(client)(keys=[xq], args=args)
        done += len(page)
        if progress and page:
            progress(len(page))
        if last or not page:
            return done
        top = page[-1][1]
        at_cursor = {i for i, at in found if at == top}
        cursor = top


def ids_of(letters: Iterable[Any]) -> dict[str, list[str]]:
    """Redis ids of letters, by queue."""
    by_queue: dict[str, list[str]] = {}
    for letter in letters:
        by_queue.setdefault(letter.queue, []).append(letter.redis_id)
    return by_queue
