"""Dead letters written straight into Redis as a worker's dead-lettering stores them (the reason and
its index, then the letter), many at a time: for tests of the dead-letter tools at scale."""

from __future__ import annotations

import json
import uuid
from typing import Any

import dramatiq

from bgjobs import letter_index


def fill(
    client: Any, queue: str, n: int, *, at_ms: int, actor: str = "sync", namespace: str = "dramatiq"
) -> list[str]:
    """``n`` dead letters of ``actor`` in ``queue``, failed a millisecond apart from ``at_ms``; their
    message ids."""
    xq = f"{namespace}:{queue}.XQ"
    reason = json.dumps({"kind": "permanent", "reason": "no", "failed_at": at_ms, "attempts": 1})
    pipe = client.pipeline(transaction=False)
    sent = []
    for i in range(n):
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue, actor_name=actor, args=({"n": i},), kwargs={},
            options={"redis_message_id": str(uuid.uuid4())},
        )  # fmt: skip
        letter = message.options["redis_message_id"]
        args = ["record", letter, message.message_id, actor, "permanent", at_ms + i, reason, 0]
        letter_index.script(client)(keys=[xq], args=args, client=pipe)
        pipe.zadd(xq, {letter: at_ms + i}).hset(f"{xq}.msgs", letter, message.encode())
        sent.append(message.message_id)
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    return sent
