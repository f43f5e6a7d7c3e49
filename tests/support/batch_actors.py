"""Actors the batch tests run, in the test process (stub broker) and in real workers
(``BGJOBS_JOBS=["tests.support.batch_actors"]``). Each run is a line in ``TEST_RUNS_FILE`` (or,
without it, an entry in :data:`RUNS`): a job that ran twice shows twice."""

from __future__ import annotations

import os
import threading
import time

import bgjobs

RUNS: list[str] = []
_lock = threading.Lock()


class Item(bgjobs.Payload):
    key: str
    sleep_s: float = 0.0
    children: int = 0
    #: Sent again for later, handing its place in the batch to the copy (``bgjobs.batching.carry``).
    again: bool = False


def _note(line: str) -> None:
    where = os.environ.get("TEST_RUNS_FILE")
    if where:
        with open(where, "a") as runs:
            runs.write(line + "\n")
    else:
        with _lock:
            RUNS.append(line)


@bgjobs.actor(queue="default", max_retries=0)
def item(payload: Item) -> None:
    """Runs once per delivery; ``fail*`` keys fail for good; ``children`` adds that many jobs to
    its own batch, or, as a nested batch, with ``nested`` in its key."""
    if payload.key.startswith("fail"):
        raise bgjobs.PermanentError(f"{payload.key} fails")
    if payload.again:
        from bgjobs.batching import carry

        item.send(payload.model_copy(update={"again": False}), delay=60_000, **carry())
        _note(f"{payload.key} postponed")
        return
    if payload.key.startswith("nested") and payload.children:
        with bgjobs.batch(on_complete=done.message(Item(key=f"{payload.key}:inner-complete"))):
            for n in range(payload.children):
                item.send(Item(key=f"{payload.key}.{n}"))
    elif payload.children:
        running = bgjobs.current_batch()
        assert running is not None
        for n in range(payload.children):
            running.send(item.message(Item(key=f"{payload.key}.{n}")))
    time.sleep(payload.sleep_s)
    if bgjobs.cancelled():
        _note(f"{payload.key} stopped")
        return
    _note(payload.key)


@bgjobs.actor(queue="default", max_retries=0)
def done(payload: Item) -> None:
    """A callback: notes its key with the batch's counts."""
    running = bgjobs.current_batch()
    assert running is not None
    s = running.status()
    _note(f"{payload.key} total={s.total} succeeded={s.succeeded} failed={s.failed} cancelled={s.cancelled}")
