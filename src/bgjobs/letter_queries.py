"""Reading dead letters through their index (:mod:`bgjobs.letter_index`): a filter by actor or kind
reads only what it returns, a reason search scans in pages with a bounded cost per call, and the
letters matching a bulk requeue or purge stream by, a page at a time, in bounded memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, cast

from . import letter_index

__all__ = ["SCAN_BUDGET", "Read", "each_matching", "ensure_indexed", "identify", "index_key", "newest"]

logger = logging.getLogger("bgjobs.deadletters")

#: Letters a reason search examines per queue and call before it stops and gives a cursor.
SCAN_BUDGET = 20_000
PAGE = 500

#: Reads the letters of ``(redis id, score)`` pairs of a queue (``deadletters._read``).
Read = Callable[[Any, str, list[tuple[bytes, float]]], list[Any]]


def identify(data: bytes | None, why: bytes | None) -> tuple[str, str, str]:
    """A stored letter's message id, actor and kind, for the index."""
    try:
        message = json.loads(data) if data else {}
    except ValueError:
        message = {}
    if not isinstance(message, dict):
        message = {}
    try:
        kind = str(json.loads(why).get("kind", "unknown")) if why else "unknown"
    except (ValueError, AttributeError):
        kind = "unknown"
    return str(message.get("message_id", "")), str(message.get("actor_name", "?")), kind


def ensure_indexed(broker: Any, queue: str) -> bool:
    """Whether the queue's letters are all in the index: a queue of letters stored before it
    existed is indexed now if small, else read by scanning until ``bgjobs dead-letters reindex``."""
    xq = f"{broker.namespace}:{queue}.XQ"
    if letter_index.indexed(broker.client, xq):
        return True
    size = int(broker.client.zcard(xq))
    if size <= letter_index.INLINE_REINDEX:
        letter_index.reindex(broker.client, xq, identify)
        return True
    if xq not in _warned:  # once per queue and process, not per read
        _warned.add(xq)
        logger.warning("the %d dead letters of %s are not indexed yet: reading them by scanning; run "
                       "`bgjobs dead-letters reindex` once", size, queue)  # fmt: skip
    return False


_warned: set[str] = set()


def index_key(broker: Any, queue: str, *, actor: str | None, kind: str | None) -> str:
    """The sorted set to read a queue's letters from: an actor's or a kind's index, or the whole set."""
    xq = f"{broker.namespace}:{queue}.XQ"
    if (actor is None and kind is None) or not ensure_indexed(broker, queue):
        return xq
    return f"{xq}.by:actor:{actor}" if actor is not None else f"{xq}.by:kind:{kind}"


def newest(
    broker: Any, queue: str, read: Read, *, actor: str | None, kind: str | None, needle: str | None,
    since_ms: int | None, before_ms: int | None, wanted: int | None,
) -> tuple[list[Any], int | None]:  # fmt: skip
    """A queue's letters newest first, matching the filters, up to ``wanted``; and, when a reason
    search stopped at its budget, the failure time (ms) to continue from (older than it)."""
    key = index_key(broker, queue, actor=actor, kind=kind)
    low = "-inf" if since_ms is None else since_ms
    high = "+inf" if before_ms is None else f"({before_ms}"
    # Exactly what is wanted when every letter read is returned (the overview's latest five read
    # five); whole pages when some are filtered out here (a scan, or the other filter's index)
    filtered = needle is not None or (key.endswith(".XQ") and (actor is not None or kind is not None))
    filtered = filtered or (actor is not None and kind is not None)
    page = PAGE if wanted is None or filtered else min(max(wanted, 1), PAGE)
    if needle is not None:
        page = min(PAGE, SCAN_BUDGET)
    chosen: list[Any] = []
    start = examined = 0
    while True:
        client = cast(Any, broker.client)
        ids = client.zrevrangebyscore(key, high, low, start=start, num=page, withscores=True)
        if not ids:
            return chosen, None
        for letter in read(broker, queue, ids):
            if (actor is not None and letter.actor != actor) or (kind is not None and letter.kind != kind):
                continue  # read from an index of the other filter, or by scanning
            if needle is not None and needle not in letter.reason.casefold():
                continue
            chosen.append(letter)
            if wanted is not None and len(chosen) >= wanted:
                return chosen, None
        start += len(ids)
        examined += len(ids)
        if needle is not None and examined >= SCAN_BUDGET:
            return chosen, int(ids[-1][1])


def each_matching(
    broker: Any, queue: str, read: Read, *, actor: str | None, kind: str | None, needle: str | None,
    since_ms: int | None, until_ms: int,
) -> Iterator[list[Any]]:  # fmt: skip
    """Pages of a queue's letters matching the filters, oldest first, failed before ``until_ms``
    (the request's time: letters arriving meanwhile are left alone). The caller requeues or purges
    each page before asking for the next: those leave the set, so the next page starts after them,
    and one that stays (requeued by nobody: it was gone, or undecodable) is stepped over."""
    key = index_key(broker, queue, actor=actor, kind=kind)
    low = "-inf" if since_ms is None else since_ms
    kept = 0  # letters read and left in place (not matching, or not moved): stepped over
    while True:
        ids = cast(Any, broker.client).zrangebyscore(key, low, f"({until_ms}", start=kept, num=PAGE,
                                                     withscores=True)  # fmt: skip
        if not ids:
            return
        letters = read(broker, queue, ids)
        matching = [
            x for x in letters
            if (actor is None or x.actor == actor) and (kind is None or x.kind == kind)
            and (needle is None or needle in x.reason.casefold())
        ]  # fmt: skip
        before = int(broker.client.zcount(key, low, f"({until_ms}"))
        yield matching
        after = int(broker.client.zcount(key, low, f"({until_ms}"))
        kept += len(ids) - (before - after)
